"""The ROI cache the critic trains on (format version 1), its resumable builder and its readers.

Layout of ``cache_dir``:

- ``manifest.json``: ``{"version": 1, "region", "keypoint_names", "out_hw", "heatmap_hw", "heatmap_sigma",
  "clip_len", "seed", "config": {the settings the cache depends on}, "sources": [{"name", "path", "frames", "fps",
  "hw", "status": "ok" | "empty" | "error" | "pending", "error"?, "clips"}], "clips": [{"file", "source",
  "instance", "label", "frame_indices", "visible_fraction"}]}``. ``source`` indexes ``sources``; ``status``
  "empty" means the video was read but no clip showed the region, "pending" that a run stopped mid-way.
  ``instance`` is a track: hands are followed by position (``tracks.labelled_tracks``), and ``label`` is the
  handedness that track carried most often (``left_2`` where a second track is mostly ``left`` too).
  ``visible_fraction``: share of the clip's frames where the instance shows at least half its keypoints.
  Sources are known by ``name`` (the file name): a finished one is not read again, even if the file changed.
- ``clips/<source>_<label>_<first frame>.npz``, one per clip of ``T = clip_len`` frames: ``roi`` uint8
  ``[T, h, w, 3]`` (crops at ``roi.out_hw``); ``hm`` float16 ``[T, K, hh, hw]`` (Gaussians at the manifest's ``heatmap_hw``, ``heatmap_sigma``);
  ``keypoints`` float32 ``[T, K, 2]`` in crop pixels; ``keypoints_frame`` float32 ``[T, K, 2]`` in frame pixels
  (NaN where not detected); ``visibility`` float32 ``[T, K]`` (1: confidence >= ``roi.min_conf`` and inside the
  crop); ``boxes`` float32 ``[T, 4]``; ``frame_indices`` int32 ``[T]``; ``source_index``, ``instance`` ints.
  Coordinates follow ``bgfs_core.roi`` (pixel centres at +0.5).
- ``detections/<source>.npz``: MediaPipe's output per source, so a resumed run does not detect again.

Every file is written atomically and the manifest is rewritten after each source, so an interrupted run resumes:
finished sources are skipped, clips already on disk are kept. A cache keeps the settings it was started with
(``cache_settings``), except one that holds no clip yet: other settings start it over. A new cache none of whose
videos could be read is not left behind.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import re
import shutil
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, save_npz_atomic, write_json_atomic
from .config import Config
from .detections import Detections
from .errors import BGFSError
from .regions import get_region

CACHE_VERSION = 1
MANIFEST = "manifest.json"
MIN_VISIBLE = 0.75  # a clip needs its instance in at least this share of its frames
MIN_KEYPOINTS = 0.5  # ... where a frame counts when at least this share of its keypoints is visible
CLIP_KEYS = ("roi", "hm", "keypoints", "keypoints_frame", "visibility", "boxes", "frame_indices", "source_index",
             "instance")  # fmt: skip


@dataclass
class CacheSummary:
    """What one ``build_cache`` / ``append_frames_to_cache`` call did."""

    cache_dir: str
    sources_total: int = 0
    sources_ok: int = 0
    sources_empty: int = 0
    sources_failed: int = 0
    sources_skipped: int = 0  # finished in an earlier run
    detections_run: int = 0  # sources MediaPipe ran on in this call
    clips_written: int = 0
    clips_skipped: int = 0  # already in the cache
    frames: int = 0  # frames read in this call
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # "name: why no clip came from it"

    def format(self) -> str:
        lines = [
            f"ROI cache {self.cache_dir}: {self.sources_total} source(s): {self.sources_ok} ok, "
            f"{self.sources_empty} without the region, {self.sources_failed} failed, "
            f"{self.sources_skipped} skipped (done before)",
            f"clips: {self.clips_written} written, {self.clips_skipped} skipped (already cached); "
            f"{self.frames} frames read, detection run on {self.detections_run} source(s), {self.seconds:.1f} s",
        ]
        lines += [f"  failed: {e}" for e in self.errors]
        lines += [f"  no clips: {e}" for e in self.empty]
        return "\n".join(lines)


# --- readers -----------------------------------------------------------------------------------------------------


def load_manifest(cache_dir: str | Path) -> dict:
    """The cache's ``manifest.json``, checked for the format version."""
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise BGFSError(f"no ROI cache in {str(cache_dir)!r} (no {MANIFEST}): run bgfs precompute first")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BGFSError(f"{path} cannot be read ({e}): use a new data.cache_dir, or delete this one") from None
    if not isinstance(manifest, dict) or manifest.get("version") != CACHE_VERSION:
        got = manifest.get("version") if isinstance(manifest, dict) else None
        raise BGFSError(
            f"{path} is cache format {got!r}, this BGFS reads version {CACHE_VERSION}: "
            "rebuild it with bgfs precompute --overwrite (or use a new data.cache_dir)"
        )
    _check_entries(path, manifest)
    return manifest


def _check_entries(path: Path, manifest: dict) -> None:
    """The manifest's lists hold what readers index (a hand-edited or truncated one may not): refuse it here, by
    entry, rather than with a KeyError deep in training."""
    damaged = ("the manifest was edited or damaged; rebuild the cache with bgfs precompute --overwrite (or use a "
               "new data.cache_dir)")  # fmt: skip
    needs = {"sources": {"name": str}, "clips": {"file": str, "source": int, "frame_indices": list}}
    for key, fields in needs.items():
        entries = manifest.get(key)
        if not isinstance(entries, list):
            raise BGFSError(f"{path} has no {key!r} list: {damaged}")
        for i, entry in enumerate(entries):
            bad = [repr(name) for name, typ in fields.items() if not isinstance(entry, dict)
                   or not isinstance(entry.get(name), typ) or isinstance(entry.get(name), bool)]  # fmt: skip
            if bad:
                raise BGFSError(f"{path}: {key} entry {i} lacks a valid {', '.join(bad)}: {damaged}")
    for i, clip in enumerate(manifest["clips"]):
        if not 0 <= clip["source"] < len(manifest["sources"]) or not clip["frame_indices"]:
            raise BGFSError(f"{path}: clips entry {i} names source {clip['source']} of {len(manifest['sources'])} "
                            f"or no frames: {damaged}")  # fmt: skip


def load_clip(cache_dir: str | Path, entry: dict) -> dict[str, Any]:
    """The arrays of one clip (an entry of ``manifest["clips"]``); ``source_index`` and ``instance`` as ints."""
    path = Path(cache_dir) / entry["file"]
    if not path.is_file():
        raise BGFSError(f"cached clip {path} is missing: run bgfs precompute again on the same videos, which cuts "
                        "it anew (or queue its video through the Cache Builder again)")
    try:
        with np.load(path) as z:
            out: dict[str, Any] = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BGFSError(f"cached clip {path} cannot be read ({e}): rebuild with bgfs precompute --overwrite") from None
    missing = [k for k in CLIP_KEYS if k not in out]
    if missing:
        raise BGFSError(f"cached clip {path} lacks {', '.join(missing)}: rebuild with bgfs precompute --overwrite")
    out["source_index"] = int(out["source_index"])
    out["instance"] = int(out["instance"])
    return out


# --- settings ----------------------------------------------------------------------------------------------------


def cache_settings(cfg: Config) -> dict[str, Any]:
    """The config values a cache's clips depend on (stored as the manifest's ``config``): another value needs another
    cache. Not ``critic.heatmap_*``: a cache's heatmaps keep the size and sigma it was started with (the manifest's
    ``heatmap_hw``, ``heatmap_sigma``), and training renders its targets from the keypoints with the critic's own."""
    r, c, d = cfg.roi, cfg.clips, cfg.detect
    return {
        "roi.region": r.region, "roi.out_hw": list(r.out_hw), "roi.margin": r.margin, "roi.min_conf": r.min_conf,
        "roi.smooth": r.smooth, "clips.clip_len": c.clip_len, "clips.frame_stride": c.frame_stride,
        "clips.clips_per_video": c.clips_per_video, "clips.max_frames_per_video": c.max_frames_per_video,
        "clips.seed": c.seed, "detect.backend": d.backend,
        "detect.min_detection_confidence": d.min_detection_confidence,
        "detect.min_tracking_confidence": d.min_tracking_confidence, "detect.mirrored": d.mirrored,
    }  # fmt: skip


def stale_keypoints(cache_dir: Path, manifest: dict, region: str) -> str:
    """The error for a cache whose keypoints are not the region's (an older BGFS defined the region otherwise):
    its clips cannot be added to or trained on."""
    had, want = len(manifest.get("keypoint_names", ())), get_region(region).num_keypoints
    return (f"the ROI cache in {str(cache_dir)!r} holds {had} keypoints per {region} (another BGFS version's set), "
            f"this BGFS has {want}: rebuild it (bgfs precompute --overwrite; on the Cache Builder node, a new "
            "cache_name) or use a new data.cache_dir (--cache-dir)")  # fmt: skip


def _new_manifest(cfg: Config) -> dict:
    spec = get_region(cfg.roi.region)
    return {
        "version": CACHE_VERSION, "region": spec.name, "keypoint_names": list(spec.keypoint_names),
        "out_hw": list(cfg.roi.out_hw), "heatmap_hw": list(cfg.critic.heatmap_hw),
        "heatmap_sigma": cfg.critic.heatmap_sigma, "clip_len": cfg.clips.clip_len, "seed": cfg.clips.seed,
        "config": cache_settings(cfg), "sources": [], "clips": [],
    }  # fmt: skip


def _source_key(index: int, name: str) -> str:
    """What a source's files are named by: ``detections/<key>.npz``, ``clips/<key>_<label>_<frame>.npz``."""
    return f"{index:04d}_{_safe_name(name)}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60] or "source"


# --- sampling ----------------------------------------------------------------------------------------------------


def sample_clips(
    visible: np.ndarray,
    clip_len: int,
    stride: int,
    count: int,
    seed: int,
    key: str,
    usable: np.ndarray | None = None,
) -> list[tuple[int, np.ndarray]]:
    """Up to ``count`` non-overlapping clips ``(instance, frame_indices)`` from ``visible [T, I]`` (bool).

    A clip qualifies when its instance is visible in at least ``MIN_VISIBLE`` of its frames and, if given,
    ``usable [T, I]`` (e.g. has an ROI box) in all of them. The choice is random but fixed by ``(seed, key)``,
    so a video's clips do not change when other videos are added.
    """
    t, n_inst = visible.shape
    usable = np.ones_like(visible, bool) if usable is None else usable
    span = (clip_len - 1) * stride + 1
    offsets = stride * np.arange(clip_len)
    candidates = [(i, s) for i in range(n_inst) for s in range(0, t - span + 1)
                  if visible[s + offsets, i].mean() >= MIN_VISIBLE and usable[s + offsets, i].all()]  # fmt: skip
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    chosen: list[tuple[int, int]] = []
    for j in rng.permutation(len(candidates)):
        i, s = candidates[j]
        if all(i2 != i or abs(s2 - s) >= span for i2, s2 in chosen):
            chosen.append((i, s))
            if len(chosen) == count:
                break
    return [(i, s + offsets) for i, s in sorted(chosen, key=lambda c: (c[1], c[0]))]


# --- building ----------------------------------------------------------------------------------------------------


def _log(msg: str, progress: bool) -> None:
    if progress:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr)


def _is_cache_manifest(path: Path) -> bool:
    """``path`` is a manifest a BGFS cache build wrote (any format version), not some other tool's."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"version", "sources", "clips"} <= manifest.keys()


def _check_apart(videos_dir: Path, cache_dir: Path) -> None:
    """Refuse a cache that would write into the videos' own folder (its clips/ and detections/ among them)."""
    videos, cache = videos_dir.resolve(), cache_dir.resolve()
    if videos == cache or any(videos.is_relative_to(cache / sub) for sub in ("clips", "detections")):
        raise BGFSError(
            f"data.cache_dir {str(cache_dir)!r} would write its clips/ and detections/ into the videos' folder "
            f"{str(videos_dir)!r}: give the cache a folder of its own (--cache-dir)"
        )


class _Builder:
    """Adds sources to one cache directory; holds the manifest, the summary and a reusable detector."""

    def __init__(self, cfg: Config, overwrite: bool, progress: bool) -> None:
        self.cfg, self.progress = cfg, progress
        self.dir = Path(cfg.data.cache_dir)
        self.spec = get_region(cfg.roi.region)
        self.summary = CacheSummary(cache_dir=str(self.dir))
        self._detector: Any = None
        _check_apart(Path(cfg.data.videos_dir), self.dir)
        if overwrite:
            self._delete_cache()
        self.manifest = self._open_manifest()
        if self.manifest.get("heatmap_hw") and self.manifest.get("heatmap_sigma"):  # the cache's own, see cache_settings
            self.cfg = copy.deepcopy(cfg)
            self.cfg.critic.heatmap_hw = list(self.manifest["heatmap_hw"])
            self.cfg.critic.heatmap_sigma = float(self.manifest["heatmap_sigma"])
        # What the manifest file holds now: a run that changes nothing leaves it (and its mtime) alone, since
        # the nodes read that mtime as "the cache changed, run again" (the Builder, then the Critic Trainer).
        self._on_disk = json.dumps(self.manifest) if (self.dir / MANIFEST).exists() else None

    def _delete_cache(self) -> None:
        """Delete what an earlier build wrote here, and only that: a folder named clips/ beside no BGFS manifest
        may be the user's own videos."""
        owned = [self.dir / sub for sub in ("clips", "detections") if (self.dir / sub).is_dir()]
        if not owned and not (self.dir / MANIFEST).exists():
            return
        if not _is_cache_manifest(self.dir / MANIFEST):
            holds = ", ".join(p.name + "/" for p in owned) or MANIFEST
            what = f"a {MANIFEST} that is not a BGFS one" if (self.dir / MANIFEST).exists() else f"no {MANIFEST}"
            raise BGFSError(
                f"--overwrite: {str(self.dir)!r} holds {holds} but {what}, so it may not be a BGFS cache and nothing "
                "was deleted: use a new data.cache_dir (--cache-dir), or delete the folder yourself"
            )
        for sub in owned:
            shutil.rmtree(sub)
        (self.dir / MANIFEST).unlink(missing_ok=True)

    def _delete_sources_files(self, manifest: dict) -> None:
        """Delete the detections and clips a build wrote for the manifest's sources (known by their file names),
        then their folders if that left them empty."""
        for i, src in enumerate(manifest["sources"]):
            key = _source_key(i, src["name"])
            (self.dir / "detections" / f"{key}.npz").unlink(missing_ok=True)
            for clip in (self.dir / "clips").glob(f"{glob.escape(key)}_*.npz"):
                clip.unlink()
        for sub in ("detections", "clips"):
            with contextlib.suppress(OSError):  # only an empty folder goes
                (self.dir / sub).rmdir()

    def _open_manifest(self) -> dict:
        if not (self.dir / MANIFEST).exists():
            if self.dir.exists() and not self.dir.is_dir():
                raise BGFSError(f"data.cache_dir {str(self.dir)!r} is a file: point it at a folder")
            # A build (and an append) writes its manifest before any clip, so clips without one were not left by a
            # stopped build: their settings are unknown, and reused they would mix crop sizes and detector settings
            orphans = [sub + "/" for sub in ("clips", "detections") if (self.dir / sub).is_dir()]
            if orphans:
                raise BGFSError(f"{str(self.dir)!r} holds {', '.join(orphans)} but no {MANIFEST}, so their settings "
                                "are unknown: use a new data.cache_dir (--cache-dir), or delete "
                                f"{' and '.join(orphans)} there")  # fmt: skip
            return _new_manifest(self.cfg)
        manifest = load_manifest(self.dir)
        want, have = cache_settings(self.cfg), manifest.get("config", {})
        changed = [f"{k} {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v]
        if changed and not manifest.get("clips"):
            # Nothing to keep: a run that found no clip advises other detector settings, and those must not then
            # be refused. What it wrote goes (detections made with the old settings, clips a stopped run may have
            # left under its sources' names), and nothing else in the folder.
            _log(f"the ROI cache in {str(self.dir)!r} holds no clips: starting it over with the new settings "
                 f"({'; '.join(changed)})", self.progress)  # fmt: skip
            self._delete_sources_files(manifest)
            return _new_manifest(self.cfg)
        if changed:
            raise BGFSError(
                f"the ROI cache in {str(self.dir)!r} was built with other settings ({'; '.join(changed)}): "
                "use a new data.cache_dir (--cache-dir), or rebuild this one with --overwrite"
            )
        if tuple(manifest.get("keypoint_names", ())) != self.spec.keypoint_names:
            raise BGFSError(stale_keypoints(self.dir, manifest, self.spec.name))
        return manifest

    def save(self) -> None:
        text = json.dumps(self.manifest)
        if text != self._on_disk:
            write_json_atomic(self.dir / MANIFEST, self.manifest)
            self._on_disk = text

    def register(self, name: str, path: str) -> int:
        """Index of the source called ``name`` in the manifest (a new "pending" entry if it is not there)."""
        for i, src in enumerate(self.manifest["sources"]):
            if src["name"] == name:
                return i
        self.manifest["sources"].append({"name": name, "path": path, "status": "pending"})
        return len(self.manifest["sources"]) - 1

    def is_done(self, idx: int) -> bool:
        """A source finished by an earlier run, all its clips still on disk and readable; one that lost clips
        (deleted, truncated, or a copy of the cache that missed some) is opened again: its detections are cached,
        so only the clips are cut."""
        src = self.manifest["sources"][idx]
        if src["status"] not in ("ok", "empty"):
            return False
        lost = [c["file"] for c in self.manifest["clips"] if c["source"] == idx and not _has_clip(self.dir / c["file"])]
        if not lost:
            return True
        _log(f"{src['name']}: {len(lost)} cached clip(s) missing ({lost[0]}, ...): cutting them again", self.progress)
        self.manifest["clips"] = [c for c in self.manifest["clips"] if c["source"] != idx]
        src["status"] = "pending"
        return False

    def skip(self, idx: int) -> None:
        self.summary.sources_skipped += 1
        self.summary.clips_skipped += int(self.manifest["sources"][idx].get("clips", 0))

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def run_source(self, idx: int, load: Callable[[], tuple[np.ndarray, float]]) -> None:
        src = self.manifest["sources"][idx]
        try:
            frames, fps = load()
        except Exception as e:  # a broken file is reported and skipped, never fatal (Ctrl-C still stops)
            msg = str(e) if isinstance(e, BGFSError) else f"{type(e).__name__}: {e}"
            src.update(status="error", error=msg, clips=0)
            self.summary.sources_failed += 1
            self.summary.errors.append(f"{src['name']}: {msg}")
            _log(f"skipping {src['name']}: {msg}", self.progress)
            self.save()
            return
        self.summary.frames += len(frames)
        src.update(frames=int(len(frames)), fps=float(fps), hw=[int(frames.shape[1]), int(frames.shape[2])])
        key = _source_key(idx, src["name"])
        det = self._detections(key, src["name"], frames, fps)
        entries = self._write_clips(idx, key, frames, det)
        self.manifest["clips"].extend(entries)
        src.update(status="ok" if entries else "empty", clips=len(entries))
        src.pop("error", None)
        if entries:
            self.summary.sources_ok += 1
        else:
            self.summary.sources_empty += 1
            c = self.cfg.clips
            if len(frames) < c.span:  # not the detector's doing: no clip fits at all
                why = (f"{len(frames)} frame(s), shorter than one clip ({c.span} frames: clips.clip_len "
                       f"{c.clip_len}, clips.frame_stride {c.frame_stride})")  # fmt: skip
            else:
                why = f"no clip shows the {self.spec.name} in {MIN_VISIBLE:.0%} of its frames"
            self.summary.empty.append(f"{src['name']}: {why}")
            _log(f"{src['name']}: {why}", self.progress)
        self.save()

    def _detections(self, key: str, name: str, frames: np.ndarray, fps: float) -> Detections:
        path = self.dir / "detections" / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    det = Detections.from_dict({k: z[k] for k in z.files})
                if det.num_frames == len(frames) and det.frame_hw == frames.shape[1:3] and det.region == self.spec.name:
                    return det
            except Exception:  # an unreadable leftover is simply detected again
                pass
        if self._detector is None:
            from .detection import detector_from_config

            self._detector = detector_from_config(self.cfg, video_mode=True)
        source: Any = frames
        if self.progress:
            from tqdm import tqdm

            source = tqdm(frames, desc=f"detect {name}"[:40], unit="frame", leave=False)
        det = self._detector.detect_video(source, fps=fps)
        self.summary.detections_run += 1
        save_npz_atomic(path, **det.to_dict())
        return det

    def _write_clips(self, idx: int, key: str, frames: np.ndarray, det: Detections) -> list[dict]:
        from .roi import box_valid, roi_boxes
        from .tracks import labelled_tracks

        cfg = self.cfg
        # a clip follows one hand by position: a handedness label that flips for a frame would otherwise cut
        # the other hand (or a hand-shaped object) into it
        det, labels, _ = labelled_tracks(det, cfg.roi.min_conf)
        out_h, out_w = cfg.roi.out_hw
        boxes = roi_boxes(det, cfg.roi.margin, cfg.roi.min_conf, cfg.roi.smooth, aspect=out_w / out_h)
        kp_ok = det.seen_keypoints(cfg.roi.min_conf)
        frame_ok = kp_ok.mean(-1) >= MIN_KEYPOINTS  # [T, I]
        c = cfg.clips
        # Bridged frames (a box but no detection) may fill up to 1 - MIN_VISIBLE of a clip; boxless ones never.
        clips = sample_clips(frame_ok, c.clip_len, c.frame_stride, c.clips_per_video, c.seed,
                             self.manifest["sources"][idx]["name"], usable=box_valid(boxes))  # fmt: skip
        entries = []
        for slot, fidx in clips:
            label = labels[slot]
            rel = f"clips/{key}_{_safe_name(label)}_{int(fidx[0]):06d}.npz"
            entries.append({
                "file": rel, "source": idx, "instance": int(slot), "label": label,
                "frame_indices": [int(f) for f in fidx], "visible_fraction": float(frame_ok[fidx, slot].mean()),
            })  # fmt: skip
            if _has_clip(self.dir / rel):
                self.summary.clips_skipped += 1
                continue
            save_clip(self.dir / rel, clip_arrays(frames, det, boxes[:, slot], slot, fidx, idx, cfg))
            self.summary.clips_written += 1
        return entries


def _has_clip(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            return all(k in z.files for k in CLIP_KEYS)
    except Exception:  # unreadable: write it again
        return False


def save_clip(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a clip ``.npz`` atomically, deflated at level 1: half the time of ``np.savez_compressed``'s level 6
    for ~6 % more bytes (crops barely compress; heatmaps, mostly zeros, shrink ~10x at any level)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)


def clip_arrays(
    frames: np.ndarray,
    det: Detections,
    boxes: np.ndarray,
    slot: int,
    fidx: np.ndarray,
    source_index: int,
    cfg: Config,
) -> dict[str, np.ndarray]:
    """The arrays of one cached clip: ROI crops, heatmaps, keypoints (see the module docstring)."""
    from .heatmaps import render_heatmaps
    from .roi import crop_frames, frame_to_crop

    out_h, out_w = cfg.roi.out_hw
    hh, hw = cfg.critic.heatmap_hw
    b = boxes[fidx].astype(np.float32)
    kp_frame = det.keypoints[fidx, slot].astype(np.float32)
    kp_crop = frame_to_crop(kp_frame, b, (out_h, out_w))
    with np.errstate(invalid="ignore"):
        inside = (kp_crop >= 0).all(-1) & (kp_crop[..., 0] < out_w) & (kp_crop[..., 1] < out_h)
    visible = (det.confidence[fidx, slot] >= cfg.roi.min_conf) & det.present[fidx, slot, None] & inside
    scale = np.array([hw / out_w, hh / out_h], np.float32)
    hm = render_heatmaps(kp_crop * scale, visible, (hh, hw), cfg.critic.heatmap_sigma)
    return {
        "roi": crop_frames(frames[fidx], b, (out_h, out_w)),
        "hm": hm.astype(np.float16),
        "keypoints": kp_crop.astype(np.float32),
        "keypoints_frame": kp_frame,
        "visibility": visible.astype(np.float32),
        "boxes": b,
        "frame_indices": np.asarray(fidx, np.int32),
        "source_index": np.asarray(source_index, np.int64),
        "instance": np.asarray(slot, np.int64),
    }


def build_cache(cfg: Config, progress: bool = True, overwrite: bool = False) -> CacheSummary:
    """Detect ``cfg.roi.region`` in every video of ``cfg.data.videos_dir`` and cache clips in ``cfg.data.cache_dir``.

    Resumes: sources finished by an earlier run are skipped (not even decoded). Unreadable videos are reported
    in the summary, on stderr and in the manifest, and skipped; they are tried again on the next run.
    ``overwrite`` deletes an existing cache's manifest, clips and detections first.
    """
    from .video_io import list_videos, read_video

    started = time.perf_counter()
    try:
        videos = list_videos(cfg.data.videos_dir)
    except BGFSError as e:
        raise BGFSError(f"{e} (the folder is data.videos_dir, or --videos-dir)") from None
    cache_dir = Path(cfg.data.cache_dir)
    made_dir, made_manifest = not cache_dir.exists(), not (cache_dir / MANIFEST).exists()
    builder = _Builder(cfg, overwrite, progress)
    summary = builder.summary
    summary.sources_total = len(videos)
    try:
        indices = [builder.register(p.name, str(p)) for p in videos]
        builder.save()
        items: Any = list(zip(indices, videos))
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc=f"precompute {cfg.roi.region}", unit="video")
        for idx, path in items:
            if builder.is_done(idx):
                builder.skip(idx)
                continue
            builder.run_source(idx, lambda p=path: read_video(p, max_frames=cfg.clips.max_frames_per_video))
    finally:
        builder.close()
    if made_manifest and summary.sources_failed == summary.sources_total:
        _remove_unread_cache(cache_dir, made_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def _remove_unread_cache(cache_dir: Path, made_dir: bool) -> None:
    """Take away the manifest (and the folder) of a new cache none of whose videos could be read: it holds nothing,
    and a folder left behind would look like a cache."""
    (cache_dir / MANIFEST).unlink(missing_ok=True)
    if made_dir:
        with contextlib.suppress(OSError):  # only an empty folder goes
            cache_dir.rmdir()


def append_frames_to_cache(
    frames: np.ndarray, fps: float, source_name: str, cfg: Config, progress: bool = False
) -> CacheSummary:
    """Add a batch of frames (RGB ``uint8 [T, H, W, 3]``) as the source ``source_name`` of ``cfg.data.cache_dir``.

    Same format and resume rules as ``build_cache``: a name that is already cached is skipped.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise BGFSError(f"frames must be RGB uint8 [T, H, W, 3] with T > 0, got {frames.dtype} {list(frames.shape)}")
    if not source_name or not str(source_name).strip():
        raise BGFSError("give the frames a source name (it identifies them in the cache)")
    if not np.isfinite(fps) or fps <= 0:
        raise BGFSError(f"fps must be > 0, got {fps}")
    started = time.perf_counter()
    builder = _Builder(cfg, overwrite=False, progress=progress)
    summary = builder.summary
    summary.sources_total = 1
    max_frames = cfg.clips.max_frames_per_video
    try:
        idx = builder.register(str(source_name), f"<frames>:{source_name}")
        builder.save()  # before any clip, as build_cache: a stop mid-way leaves a cache that resumes
        if builder.is_done(idx):
            builder.skip(idx)
        else:
            builder.run_source(idx, lambda: (frames[: max_frames or None], float(fps)))
    finally:
        builder.close()
    summary.seconds = time.perf_counter() - started
    return summary
