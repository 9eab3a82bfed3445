"""The anatomy report: scores.json, per_frame.csv, PNG plots and one self-contained HTML page.

``write_report(out_dir, result, frames, ref_frames)`` works for any :class:`~bgfs_core.metrics.ScoreResult`: a
video alone, or a video against its reference (before/after: the reference is drawn dashed and labelled
"reference"). ``render_plots`` gives the same plots as PNG bytes, for hosts that show images themselves (the node).
Plots use matplotlib's Agg canvas directly, so no global backend is touched. Frames: ``scores.json``'s ``cuts``
and ``per_frame.csv``'s ``frame`` are indices from 0; what a person reads (the summary, the frame strip's labels,
the nodes' previews) counts frames from 1.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_path, write_json_atomic
from .detections import Detections
from .errors import BGFSError

if TYPE_CHECKING:
    from .metrics import ScoreResult

PLOTS = ("trajectories", "bone_lengths", "per_frame_score")
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_INSTANCE_BGR = ((60, 200, 60), (230, 120, 30), (200, 60, 200))


def _figure(rows: int, height: float = 2.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, height * rows), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _tracked_points(det: Detections) -> list[int]:
    """Keypoints worth following: the root and tip of each chain (at most 6)."""
    spec = det.spec
    pts: list[int] = []
    for chain in spec.chains or ((0, spec.num_keypoints - 1),):
        for k in (chain[0], chain[-1]):
            if k not in pts:
                pts.append(k)
    return pts[:6]


def _time(n: int, fps: float) -> np.ndarray:
    return np.arange(n) / max(fps, 1e-6)


def _mark_cuts(ax, result: ScoreResult) -> None:
    """A dotted line where another shot begins (the judge's `tracks.cuts`), before which nothing is compared."""
    for frame in result.anatomy.cuts:
        ax.axvline(frame / max(result.fps, 1e-6), color="grey", lw=0.8, ls=":")


def _plot_trajectories(result: ScoreResult) -> bytes:
    det, ref = result.detections, result.ref_detections
    spec = det.spec
    slots = [i for i in range(det.present.shape[1]) if det.present[:, i].any() or (ref is not None and ref.present[:, i].any())]
    slots = slots or [0]
    fig = _figure(2 * len(slots), 1.9)
    t = _time(det.num_frames, result.fps)
    points = _tracked_points(det)
    for row, slot in enumerate(slots):
        for axis, name in enumerate("xy"):
            ax = fig.add_subplot(2 * len(slots), 1, 2 * row + axis + 1)
            for c, k in enumerate(points):
                colour = _COLOURS[c % len(_COLOURS)]
                ax.plot(t, det.keypoints[:, slot, k, axis], color=colour, lw=1.2, label=spec.keypoint_names[k])
                if ref is not None:
                    ax.plot(t, ref.keypoints[:, slot, k, axis], color=colour, lw=1.0, ls="--", alpha=0.7)
            _mark_cuts(ax, result)
            ax.set_ylabel(f"{spec.instance_labels[slot]} {name} (px)", fontsize=8)
            ax.tick_params(labelsize=7)
            if axis == 1:
                ax.invert_yaxis()  # image y points down
            if row == 0 and axis == 0:
                title = "keypoint trajectories" + (" (dashed: reference)" if ref is not None else "")
                ax.set_title(title, fontsize=9)
                ax.legend(fontsize=6, ncol=3, loc="upper right")
    fig.axes[-1].set_xlabel("time (s)", fontsize=8)
    return _png(fig)


def _chain_lengths(det: Detections, slot: int, cuts: Sequence[int] = ()) -> tuple[list[str], np.ndarray]:
    """Each chain's length (sum of its rigid segments: a face's jaw opening is not a stretch) over time relative to
    its median between ``cuts`` (each shot's own: another shot's hand is another size): names, ``[T, C]``."""
    from .kinematics import bone_lengths
    from .tracks import pieces

    spec = det.spec
    chains = spec.chains or (tuple(range(spec.num_keypoints)),)
    kp = det.keypoints[:, slot].astype(np.float64)
    valid = det.present[:, slot, None] & np.isfinite(kp).all(-1) & (det.confidence[:, slot] > 0)
    cut = np.zeros(len(kp), bool)
    cut[list(cuts)] = True
    names, series = [], []
    for chain in chains:
        bones = [b for b in zip(chain[:-1], chain[1:]) if b not in spec.flexible_bones]
        if not bones:
            continue
        chain = tuple(dict.fromkeys(k for b in bones for k in b))  # the keypoints those segments join
        lengths = bone_lengths(kp, bones, valid).sum(-1)
        ok = valid[:, list(chain)].all(-1)
        lengths = np.where(ok, lengths, np.nan)
        rel = np.full(len(kp), np.nan)
        for span in pieces(cut):
            med = np.nanmedian(lengths[span]) if ok[span].any() else np.nan
            if np.isfinite(med) and med > 0:
                rel[span] = lengths[span] / med
        series.append(rel)
        names.append(f"{spec.keypoint_names[chain[0]]}->{spec.keypoint_names[chain[-1]]}")
    return names, np.stack(series, -1) if series else np.zeros((len(kp), 0))


def _plot_bone_lengths(result: ScoreResult) -> bytes:
    det, ref = result.detections, result.ref_detections
    slots = [i for i in range(det.present.shape[1]) if det.present[:, i].any()] or [0]
    fig = _figure(len(slots), 2.4)
    t = _time(det.num_frames, result.fps)
    for row, slot in enumerate(slots):
        ax = fig.add_subplot(len(slots), 1, row + 1)
        names, rel = _chain_lengths(det, slot, result.anatomy.cuts)
        ref_cuts = result.reference.cuts if result.reference is not None else []
        ref_rel = _chain_lengths(ref, slot, ref_cuts)[1] if ref is not None else None
        for c, name in enumerate(names):
            colour = _COLOURS[c % len(_COLOURS)]
            ax.plot(t, rel[:, c], color=colour, lw=1.2, label=name)
            if ref_rel is not None:
                ax.plot(t, ref_rel[:, c], color=colour, lw=1.0, ls="--", alpha=0.7)
        ax.axhline(1.0, color="grey", lw=0.6)
        _mark_cuts(ax, result)
        ax.set_ylabel(f"{det.spec.instance_labels[slot]}: length / median", fontsize=8)
        ax.tick_params(labelsize=7)
        if row == 0:
            ax.set_title("chain lengths over time" + (" (dashed: reference)" if ref is not None else ""), fontsize=9)
            ax.legend(fontsize=6, ncol=3, loc="upper right")
    fig.axes[-1].set_xlabel("time (s)", fontsize=8)
    return _png(fig)


def _plot_score(result: ScoreResult) -> bytes:
    fig = _figure(1, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    a = result.anatomy
    t = _time(a.num_frames, result.fps)
    label = "video" if result.reference is None else "video (after)"
    ax.plot(t, a.per_frame["score"], color=_COLOURS[0], lw=1.4, marker=".", ms=3, label=label)
    if result.reference is not None:
        ax.plot(t, result.reference.per_frame["score"], color=_COLOURS[1], lw=1.1, ls="--", label="reference (before)")
    missing = (a.per_frame["instances"] == 0) & (a.per_frame["expected"] > 0)
    if missing.any():
        ax.scatter(t[missing], np.zeros(missing.sum()), color="black", marker="x", s=18, label="not found", zorder=3)
    _mark_cuts(ax, result)
    title = "per-frame score" + ("" if a.score is None else f" (clip: {a.score:.1f})")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def render_plots(result: ScoreResult) -> dict[str, bytes]:
    """The report's plots as PNG bytes: ``trajectories``, ``bone_lengths``, ``per_frame_score``."""
    return {"trajectories": _plot_trajectories(result), "bone_lengths": _plot_bone_lengths(result),
            "per_frame_score": _plot_score(result)}  # fmt: skip


def png_to_rgb(png: bytes) -> np.ndarray:
    """Decode PNG bytes to RGB ``uint8 [H, W, 3]`` (e.g. to show a plot as an IMAGE)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def draw_keypoints(frame: np.ndarray, det: Detections, t: int) -> np.ndarray:
    """A copy of ``frame`` with frame ``t``'s skeleton drawn (one colour per instance)."""
    import cv2

    img = np.ascontiguousarray(frame[..., ::-1])  # cv2 draws in BGR
    spec = det.spec
    thick = max(1, round(min(frame.shape[:2]) / 240))
    for i in np.flatnonzero(det.present[t]):
        kp = det.keypoints[t, i]
        ok = np.isfinite(kp).all(-1) & (det.confidence[t, i] > 0)
        colour = _INSTANCE_BGR[i % len(_INSTANCE_BGR)]
        for a, b in spec.bones:
            if ok[a] and ok[b]:
                cv2.line(img, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]), colour, thick, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            cv2.circle(img, tuple(int(v) for v in kp[k]), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return img[..., ::-1].copy()


def frame_strip(frames: np.ndarray, det: Detections, count: int = 6, height: int = 160) -> np.ndarray:
    """``count`` evenly spaced frames side by side, keypoints drawn, ``height`` pixels tall: RGB ``uint8``."""
    import cv2

    idx = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    tiles = []
    for t in idx:
        img = draw_keypoints(frames[t], det, int(t))
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
        cv2.putText(img, str(int(t) + 1), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(img)
        tiles.append(np.full((height, 3, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], 1)


def _encode(img: np.ndarray, fmt: str = "png") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt.upper())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return html.escape(str(v))


def _parts_table(result: ScoreResult) -> str:
    a, r = result.anatomy, result.reference
    head = "<tr><th>part</th><th>raw</th><th>value</th><th>weight</th><th>scale</th>"
    head += "<th>reference raw</th><th>reference value</th></tr>" if r is not None else "</tr>"
    rows = [head]
    for name in dict.fromkeys([*a.parts, *(r.parts if r is not None else {})]):
        p = a.parts.get(name)
        cells = [name, p.raw if p else None, p.value if p else None, p.weight if p else None, p.scale if p else None]
        if r is not None:
            q = r.parts.get(name)
            cells += [q.raw if q else None, q.value if q else None]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _fidelity_table(result: ScoreResult) -> str:
    f = result.fidelity
    if f is None:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in vars(f).items())
    return f"<h2>Fidelity against the reference</h2><table>{rows}</table>"


def _html(result: ScoreResult, plots: dict[str, bytes], strips: list[tuple[str, np.ndarray]],
          note: str | None = None) -> str:
    a = result.anatomy
    score = "not found" if a.score is None else f"{a.score:.1f} / 100"
    imgs = "".join(f'<h2>{html.escape(name.replace("_", " "))}</h2><img alt="{name}" '
                   f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">' for name, png in plots.items())
    strip_html = "".join(f"<h3>{html.escape(label)}</h3><img alt=\"{html.escape(label)}\" "
                         f'src="data:image/jpeg;base64,{_encode(img, "jpeg")}">' for label, img in strips)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>BGFS anatomy score: {html.escape(result.region)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px}}
img{{max-width:100%}}pre{{background:#f4f4f4;padding:.5em;white-space:pre-wrap}}</style></head><body>
<h1>Anatomy score ({html.escape(result.region)}): {html.escape(score)}</h1>
{f'<p class="note" style="background:#fde8e8;border:1px solid #c33;padding:.5em">{html.escape(note)}</p>' if note else ""}
<pre>{html.escape(result.summary)}</pre>
<h2>Parts</h2>{_parts_table(result) if a.parts else "<p>" + html.escape(a.message) + "</p>"}
{_fidelity_table(result)}
<h2>Frames</h2>{strip_html}
{imgs}
<p style="font-size:12px;color:#666">Judged by MediaPipe ({result.detections.num_frames} frames, {result.fps:g} fps);
the score's formula is documented in bgfs_core/metrics.py.</p>
</body></html>
"""


def _write_csv(path: Path, result: ScoreResult) -> None:
    cols = result.anatomy.per_frame
    names = list(cols)
    extra = {}
    if result.reference is not None:
        extra = {"ref_instances": result.reference.per_frame["instances"], "ref_score": result.reference.per_frame["score"]}
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names + list(extra))
        for t in range(result.anatomy.num_frames):
            row = [cols[n][t] for n in names] + [v[t] for v in extra.values()]
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else (int(v) if float(v).is_integer() else
                        f"{float(v):.6g}") for v in row])  # fmt: skip


def write_report(out_dir: str | Path, result: ScoreResult, frames: np.ndarray,
                 ref_frames: np.ndarray | None = None, note: str | None = None) -> dict[str, Path]:
    """Write ``scores.json``, ``per_frame.csv``, the PNG plots and ``report.html`` into ``out_dir``.

    ``frames`` (and ``ref_frames``) are the scored videos, for the frame strip. ``note``: what a reader must know
    before the numbers (the guard kept the input), at the top of the page and in ``scores.json``. Returns the
    written paths by name.
    """
    if len(frames) != result.detections.num_frames:
        raise BGFSError(f"the report needs the {result.detections.num_frames} scored frames, got {len(frames)}")
    if ref_frames is not None and result.ref_detections is None:
        raise BGFSError("ref_frames given but the result has no reference: score with reference=... first")
    if ref_frames is not None and len(ref_frames) != len(frames):
        raise BGFSError(f"ref_frames has {len(ref_frames)} frames, the video {len(frames)}: they must match")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["scores"] = out / "scores.json"
    write_json_atomic(paths["scores"], {"note": note, **result.to_dict()} if note else result.to_dict())
    paths["per_frame"] = out / "per_frame.csv"
    _write_csv(paths["per_frame"], result)
    plots = render_plots(result)
    for name, png in plots.items():
        paths[name] = out / f"{name}.png"
        with atomic_path(paths[name]) as tmp:
            tmp.write_bytes(png)
    strips = []
    if ref_frames is not None:
        strips.append(("reference (before)", frame_strip(ref_frames, result.ref_detections)))
    strips.append(("video" if ref_frames is None else "video (after)", frame_strip(frames, result.detections)))
    paths["html"] = out / "report.html"
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(_html(result, plots, strips, note), encoding="utf-8")
    return paths
