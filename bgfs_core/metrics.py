"""The anatomy score: MediaPipe's independent judgement of a region's geometry in a video, 0-100 with its parts.

The judge never uses the critic that the fixer optimises; it reads :class:`Detections` from MediaPipe.

How the score is made
---------------------
1. Instances are linked into **tracks** by position (a hand stays the same hand from frame to frame even when
   MediaPipe's handedness label or slot flips; a hand found twice in a frame, one box mostly inside the other's,
   counts once: ``tracks.drop_duplicates``); every flip or crossing of slots between consecutive frames is a
   **swap**. For one-instance regions with left/right keypoints (face, bodies) a frame whose keypoints match the
   previous frame better after exchanging left and right is a swap too. All other metrics are computed per track
   and pooled over tracks weighted by their samples, so the order of slots (and a mirrored copy) does not matter.
   A track that moves to another place and stays there (a cut to another shot: ``tracks.cuts``) is measured on
   each side alone: no jitter and no bone-length reference reaches across it.
2. Raw metrics (all scale-free):

   ===============  ==========================================================================================
   detection        frames where the region is found / frames where it should be: every frame, or with a
                    reference, sum over frames of min(instances found, instances in the reference) / instances
                    in the reference, over the frames where the reference found it
   jitter           mean |x[t+1] - 2 x[t] + x[t-1]| / region size over keypoints valid in 3 consecutive frames
                    (size: the track's median box diagonal in each shot, ``kinematics.region_scale``); dropouts
                    never count
   bone_cv          coefficient of variation of each bone's length over time, sqrt(mean((L / L_ref - 1)^2)),
                    where L_ref is the bone's running median over ``bone_window`` frames (so a limb turning
                    slowly in depth does not count, a stretch for a few frames does; ``bone_window=0``: the
                    clip's mean, the plain CV), averaged over bones and tracks weighted by frames seen; a bone
                    shorter than ``kinematics.MIN_BONE`` of the region's size is divided by that length instead
   joint_violations fraction of joint-frames outside their ``JointLimit``: bent backwards, against the track's
                    majority curl over the clip (the thumb against its own), beyond ``max_hyperextension``; or
                    flexed beyond ``max_bend`` (+ ``flexion_slack`` for fingers: in 2D a finger curled towards
                    the camera looks folded, so fingers' anatomical flexion limits are loosened)
   swaps            fraction of frame transitions with a left/right or instance swap
   low_confidence   hands only: fraction of hand-frames whose landmark confidence is below ``low_conf``
   ===============  ==========================================================================================

3. Each raw value ``x`` becomes a part in [0, 1] (1 = perfect): ``1 / (1 + x / half)``, where ``half``
   (``ScoreSettings``) is the value of ``x`` that halves the part; for ``detection`` ``x`` is the miss rate
   ``1 - detection``. The clip score is ``100 x`` the weighted mean of the parts that apply
   (``ScoreSettings.weights``, equal by default; e.g. the face has no joint limits and no confidence part).
   A per-frame score uses the same maps on per-frame values; a frame where the region should be but is not found
   scores 0.

4. The **geometry score** is the same mean over ``GEOMETRY_PARTS`` alone (detection, jitter, bone lengths, joint
   limits): what the fixer changes. ``bgfs fix``'s guard compares it rather than the score, because one frame on
   which MediaPipe's handedness label flickers (two swaps: there and back) costs a 43-frame clip about 8 points.

A region never found gives ``found=False``, ``score=None`` and a message, never a silent 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import kinematics as K
from .detections import Detections
from .errors import BGFSError
from .regions import get_region
from .tracks import JUMP, MAX_GAP, cuts, drop_duplicates, follow_tracks, gather_tracks, link_tracks, pieces

PART_NAMES = ("detection", "jitter", "bone_cv", "joint_violations", "swaps", "low_confidence")
# The parts that measure the region's geometry: what the fixer changes, and what `bgfs fix`'s guard weighs. Swaps
# (for hands: MediaPipe's handedness label) and landmark confidence flicker on single frames of an unchanged hand.
GEOMETRY_PARTS = ("detection", "jitter", "bone_cv", "joint_violations")
PER_FRAME_COLUMNS = ("frame", "instances", "expected", "jitter", "bone_dev", "joint_violations", "swap",
                     "low_confidence", "score")  # fmt: skip


@dataclass
class ScoreSettings:
    """Thresholds and scales of the anatomy score (see the module doc)."""

    min_conf: float = 0.3  # keypoints below this confidence do not count
    low_conf: float = 0.8  # hands: a hand-frame below this landmark confidence counts as low-confidence
    flexion_slack: float = 70.0  # 2D: degrees over a finger's max_bend before it counts as over-flexed
    bone_window: int = 9  # frames of the running median that bone lengths vary about (0: the clip's mean)
    jitter_half: float = 0.05  # mean second difference of 5% of the region's size per frame^2 halves the part
    bone_cv_half: float = 0.15
    joint_half: float = 0.05
    swap_half: float = 0.05
    low_conf_half: float = 0.1
    miss_half: float = 0.25  # missing the region in a quarter of the frames where it should be halves the part
    track_gate: float = 1.5  # distances past this x region size all cost the same: as far as an unknown track
    relabel_cost: float = 0.25  # prefer keeping a track's slot label unless moving it saves this much distance
    max_gap: int = MAX_GAP  # frames a lost track is remembered for
    cut_jump: float = JUMP  # x a track's size its motion before and after a frame must part by there: a cut
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PART_NAMES, 1.0))

    def half(self, part: str) -> float:
        return {"detection": self.miss_half, "jitter": self.jitter_half, "bone_cv": self.bone_cv_half, "joint_violations": self.joint_half,
                "swaps": self.swap_half, "low_confidence": self.low_conf_half}[part]  # fmt: skip


@dataclass
class Part:
    """One part of the score: the raw metric, the [0, 1] value it maps to, and how."""

    name: str
    raw: float
    value: float  # in [0, 1], 1 = perfect
    weight: float
    scale: str  # how raw maps to value, in words
    samples: int  # how many measurements the raw value rests on


@dataclass
class AnatomyScore:
    """The judgement of one clip: ``score`` in [0, 100] (None when the region is never found)."""

    region: str
    found: bool
    score: float | None
    parts: dict[str, Part]
    instances: list[dict[str, Any]]  # per track: label, frames, jitter, bone_cv, joint_violations
    per_frame: dict[str, np.ndarray]  # PER_FRAME_COLUMNS -> [T]
    num_frames: int
    message: str
    cuts: list[int] = field(default_factory=list)  # frames where another shot begins (`tracks.cuts`)

    @property
    def geometry_score(self) -> float | None:
        """The score over ``GEOMETRY_PARTS`` alone (same maps and weights); None when the region is never found."""
        parts = [p for name, p in self.parts.items() if name in GEOMETRY_PARTS]
        weight = sum(p.weight for p in parts)
        if self.score is None or weight <= 0:
            return None
        return 100.0 * sum(p.weight * p.value for p in parts) / weight

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN -> None); per-frame columns as lists."""
        return _json_safe({
            "region": self.region, "found": self.found, "score": self.score, "message": self.message,
            "geometry_score": self.geometry_score,
            "num_frames": self.num_frames, "cuts": self.cuts, "parts": {k: asdict(p) for k, p in self.parts.items()},
            "instances": self.instances, "per_frame": {k: v.tolist() for k, v in self.per_frame.items()},
        })  # fmt: skip


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        if math.isnan(v):
            return None
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def json_safe(obj: Any) -> Any:
    """Numbers as plain Python, NaN -> None, +-inf -> "inf"/"-inf" (strict JSON has neither)."""
    return _json_safe(obj)


# --- left/right swaps (tracks: bgfs_core.tracks) -----------------------------------------------------------------


def _lr_swaps(kp: np.ndarray, valid: np.ndarray, flip_perm: tuple[int, ...], scale: np.ndarray) -> np.ndarray:
    """[T] frames whose left/right keypoints match the previous frame better after exchanging them."""
    perm = np.asarray(flip_perm)
    moving = np.flatnonzero(perm != np.arange(len(perm)))
    out = np.zeros(kp.shape[0], bool)
    if len(moving) == 0:
        return out
    for t in range(1, kp.shape[0]):
        for i in range(kp.shape[1]):
            ok = valid[t, i, moving] & valid[t - 1, i, moving] & valid[t - 1, i, perm[moving]]
            if ok.sum() < 2 or not np.isfinite(scale[i]):
                continue
            cur, prev = kp[t, i, moving][ok], kp[t - 1, i, moving][ok]
            prev_flipped = kp[t - 1, i, perm[moving]][ok]
            d_same = np.linalg.norm(cur - prev, axis=-1).mean()
            d_flip = np.linalg.norm(cur - prev_flipped, axis=-1).mean()
            # the pair must be far apart (a face seen edge-on has left and right on top of each other)
            out[t] |= d_same > 0.05 * scale[i] and d_flip < 0.5 * d_same
    return out


# --- the score ---------------------------------------------------------------------------------------------------


def _part_value(name: str, raw: float, s: ScoreSettings) -> float:
    bad = 1.0 - float(np.clip(raw, 0.0, 1.0)) if name == "detection" else raw  # detection: the miss rate
    return 1.0 / (1.0 + bad / s.half(name))


def _scale_text(name: str, s: ScoreSettings) -> str:
    if name == "detection":
        return f"value = 1 / (1 + (1 - raw) / {s.half(name):g})"
    return f"value = 1 / (1 + raw / {s.half(name):g})"


def _weighted_mean(values: dict[str, float], s: ScoreSettings) -> float:
    num = sum(s.weights.get(k, 1.0) * v for k, v in values.items())
    den = sum(s.weights.get(k, 1.0) for k in values)
    return num / den if den > 0 else math.nan


def _check_detections(det: Detections, what: str) -> None:
    if not isinstance(det, Detections):
        raise BGFSError(f"{what} must be Detections, got {type(det).__name__}")
    if det.num_frames == 0:
        raise BGFSError(f"{what} has no frames: score a video with at least one frame")


def score_detections(det: Detections, reference: Detections | None = None,
                     settings: ScoreSettings | None = None) -> AnatomyScore:
    """Score one clip's detections (optionally against a reference's, for the detection rate)."""
    s = settings or ScoreSettings()
    _check_detections(det, "detections")
    spec = det.spec
    t_len, n_inst = det.present.shape
    if reference is not None:
        _check_detections(reference, "reference detections")
        if reference.num_frames != t_len or reference.region != det.region:
            raise BGFSError(f"reference detections ({reference.region}, {reference.num_frames} frames) do not match "
                            f"the video's ({det.region}, {t_len} frames): score clips of the same length and region")
    # a hand found twice would count as a second instance and send another hand's track to it for a frame
    det = drop_duplicates(det)
    reference = drop_duplicates(reference) if reference is not None else None
    note = ""
    # found: present with a keypoint sure enough to measure (a detection with none would count as found while
    # every other part left it out, a perfect score for a region nobody can see)
    n_found = det.seen_keypoints(s.min_conf).any(-1).sum(1)
    ref_found = reference.seen_keypoints(s.min_conf).any(-1).sum(1) if reference is not None else None
    if ref_found is not None and not ref_found.any():
        note = f" (the reference shows no {det.region}: detection is judged over every frame)"
        reference = ref_found = None
    if ref_found is None:
        expected = np.ones(t_len, np.int64)
        found_frac = (n_found > 0).astype(np.float64)
    else:
        expected = ref_found
        with np.errstate(invalid="ignore", divide="ignore"):
            found_frac = np.where(expected > 0, np.minimum(n_found, expected) / np.maximum(expected, 1), np.nan)
    frame_cols = {c: np.full(t_len, np.nan) for c in PER_FRAME_COLUMNS}
    frame_cols["frame"] = np.arange(t_len, dtype=np.float64)
    frame_cols["instances"] = n_found.astype(np.float64)
    frame_cols["expected"] = expected.astype(np.float64)
    if not n_found.any():
        unsure = int(det.present.any(1).sum())
        why = (f"{det.region} found in {unsure} of the {t_len} frames, but none of its keypoints as sure as the "
               f"judge's min_conf {s.min_conf:g}: no score (is the region small, blurred or cut off by the frame?)"
               if unsure else
               f"{det.region} not found in any of the {t_len} frames: no score (check --region, or that the region "
               "is visible and large enough)")  # fmt: skip
        return AnatomyScore(det.region, False, None, {}, [], frame_cols, t_len, why)

    m = _measure(det, s)
    parts_raw = {"detection": (float((n_found > 0).mean()), t_len) if reference is None else
                 (float(np.minimum(n_found, expected).sum() / expected.sum()), int(expected.sum()))}  # fmt: skip
    parts_raw.update(m.clip_metrics(spec.source == "hands"))
    parts = {name: Part(name, raw, _part_value(name, raw, s), s.weights.get(name, 1.0), _scale_text(name, s), n)
             for name, (raw, n) in parts_raw.items()}  # fmt: skip
    score = 100.0 * _weighted_mean({k: p.value for k, p in parts.items()}, s)
    frame_cols.update(m.frame_metrics(spec.source == "hands"))
    frame_cols["score"] = _frame_scores(frame_cols, found_frac, n_found, parts, s)
    cut = [int(t) for t in np.flatnonzero(m.cut)]
    if cut:
        note += f"; a cut at frame {', '.join(str(t + 1) for t in cut)}: each side judged alone"
    message = _describe(det.region, score, parts, t_len) + note
    return AnatomyScore(det.region, True, float(score), parts, m.instances(spec), frame_cols, t_len, message, cut)


_FRAME_PART = {"jitter": "jitter", "bone_cv": "bone_dev", "joint_violations": "joint_violations", "swaps": "swap",
               "low_confidence": "low_confidence"}  # fmt: skip


def _frame_scores(cols: dict[str, np.ndarray], found_frac: np.ndarray, n_found: np.ndarray,
                  parts: dict[str, Part], s: ScoreSettings) -> np.ndarray:
    """Per-frame score: the clip's maps on per-frame values; 0 where the region should be and is not found."""
    out = np.full(len(found_frac), np.nan)
    for t in range(len(found_frac)):
        if not np.isfinite(found_frac[t]):
            continue  # the reference has nothing here either: no judgement
        if n_found[t] == 0:
            out[t] = 0.0
            continue
        values = {"detection": _part_value("detection", float(found_frac[t]), s)}
        for part, col in _FRAME_PART.items():
            v = cols[col][t]
            if part in parts and np.isfinite(v):
                values[part] = _part_value(part, float(v / n_found[t] if part == "low_confidence" else v), s)
        out[t] = 100.0 * _weighted_mean(values, s)
    return out


@dataclass
class _Measures:
    """Per-sample measurements of one clip's tracks (``I`` tracks, re-ordered from slots by ``tracks.link_tracks``)."""

    slot_of: np.ndarray  # [T, I] slot each track takes its detection from, -1 if none
    swap: np.ndarray  # [T] bool
    transition: np.ndarray  # [T] bool
    scale: np.ndarray  # [I] pixels
    jitter: np.ndarray  # [T-2, I, K] second difference / scale at frames 1..T-2 (0 where not ok)
    jitter_ok: np.ndarray  # [T-2, I, K]
    bone_rel: np.ndarray  # [T, I, B] length / reference length - 1 (0 where not ok)
    bone_ok: np.ndarray  # [T, I, B] (only bones seen in >= 3 frames)
    violated: np.ndarray  # [T, I, J]
    joint_ok: np.ndarray  # [T, I, J]
    low: np.ndarray  # [T, I] present with low confidence
    cut: np.ndarray  # [T] bool: another shot begins (`tracks.cuts`)

    @property
    def present(self) -> np.ndarray:
        return self.slot_of >= 0

    def clip_metrics(self, hands: bool) -> dict[str, tuple[float, int]]:
        """Raw clip metrics pooled over tracks by samples: name -> (value, samples)."""
        out: dict[str, tuple[float, int]] = {}
        if self.jitter_ok.any():
            out["jitter"] = (float(self.jitter[self.jitter_ok].mean()), int(self.jitter_ok.sum()))
        if self.bone_ok.any():
            seen = self.bone_ok.sum(0)  # [I, B]
            cv = np.sqrt((self.bone_rel**2).sum(0) / np.maximum(seen, 1))
            out["bone_cv"] = (float(np.average(cv[seen > 0], weights=seen[seen > 0])), int(seen.sum()))
        if self.joint_ok.any():
            out["joint_violations"] = (float(self.violated.sum() / self.joint_ok.sum()), int(self.joint_ok.sum()))
        if self.transition.any():
            out["swaps"] = (float(self.swap.sum() / self.transition.sum()), int(self.transition.sum()))
        if hands and self.present.any():  # a hand found below the judge's confidence has no track to count
            out["low_confidence"] = (float(self.low.sum() / self.present.sum()), int(self.present.sum()))
        return out

    def frame_metrics(self, hands: bool) -> dict[str, np.ndarray]:
        """Per-frame columns: means over the frame's samples (NaN where a frame has none)."""

        def mean(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
            n = ok.sum((1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, np.where(ok, values, 0.0).sum((1, 2)) / np.maximum(n, 1), np.nan)

        t_len = len(self.swap)
        jitter = np.full(t_len, np.nan)
        if len(self.jitter):
            jitter[1:-1] = mean(self.jitter, self.jitter_ok)
        cols = {
            "jitter": jitter,
            "bone_dev": mean(np.abs(self.bone_rel), self.bone_ok),
            "joint_violations": mean(self.violated.astype(np.float64), self.joint_ok),
            "swap": np.where(self.transition, self.swap.astype(np.float64), np.nan),
        }
        if hands:
            cols["low_confidence"] = np.where(self.present.any(1), self.low.sum(1), np.nan).astype(np.float64)
        return cols

    def instances(self, spec: Any) -> list[dict[str, Any]]:
        """Per track: its usual slot label, frames, size and its own raw metrics."""
        out = []
        for i in np.flatnonzero(self.present.any(0)):
            label = spec.instance_labels[int(np.bincount(self.slot_of[self.present[:, i], i]).argmax())]
            jit_ok, bone_ok, joint_ok = self.jitter_ok[:, i], self.bone_ok[:, i], self.joint_ok[:, i]
            seen = bone_ok.sum(0)
            cv = np.sqrt((self.bone_rel[:, i] ** 2).sum(0) / np.maximum(seen, 1))
            out.append({
                "track": len(out), "label": label, "frames": int(self.present[:, i].sum()),
                "first_frame": int(np.flatnonzero(self.present[:, i])[0]), "scale_px": float(self.scale[i]),
                "jitter": float(self.jitter[:, i][jit_ok].mean()) if jit_ok.any() else math.nan,
                "bone_cv": float(np.average(cv[seen > 0], weights=seen[seen > 0])) if seen.any() else math.nan,
                "joint_violations": float(self.violated[:, i].sum() / joint_ok.sum()) if joint_ok.any() else math.nan,
            })  # fmt: skip
        return out


def _measure(det: Detections, s: ScoreSettings) -> _Measures:
    """Link the detections into tracks and measure jitter, bone lengths, joint limits and swaps per sample."""
    spec = det.spec
    t_len, n_inst = det.present.shape
    valid = det.seen_keypoints(s.min_conf)
    kp = np.where(valid[..., None], det.keypoints, np.nan).astype(np.float64)
    slot_of, swap, transition = link_tracks(det.present, kp, valid, s.max_gap, s.track_gate, s.relabel_cost)
    kp = gather_tracks(kp, slot_of, np.nan)
    valid = gather_tracks(valid, slot_of, False)
    conf = gather_tracks(det.confidence.astype(np.float64), slot_of, 0.0)
    scale = K.region_scale(kp, valid)  # [I]
    if n_inst == 1:  # left/right keypoints exchanged between frames
        lr = _lr_swaps(kp, valid, spec.flip_permutation(), scale)
        swap, transition = swap | lr, transition | lr
    # across a cut (another shot, another instance) neither jitter nor bone lengths compare frames
    cut = cuts(kp, valid, s.max_gap, s.cut_jump, by_size=spec.holds_its_size)
    # each shot's own size [T, I]: measured in one size for both, a close-up's wobble after a wide shot would read
    # as larger than the same wobble in the wide shot
    shot_scale = np.full((t_len, n_inst), np.nan)
    for span in pieces(cut):
        shot_scale[span] = np.asarray(K.region_scale(kp[span], valid[span]), np.float64)[None]
    safe_scale = np.where(np.isfinite(shot_scale) & (shot_scale > 0), shot_scale, np.nan)

    acc, jitter_ok = K.second_differences(kp, valid)  # [T-2, I, K, 2]
    with np.errstate(invalid="ignore"):
        jitter = np.linalg.norm(acc, axis=-1) / safe_scale[1:-1, :, None]
    jitter_ok = jitter_ok & np.isfinite(jitter) & ~(cut[1:-1] | cut[2:])[:, None, None]
    jitter = np.where(jitter_ok, jitter, 0.0)

    lengths = K.bone_lengths(kp, spec.rigid_bones, valid)  # [T, I, B]
    seen = K.bone_valid(valid, spec.rigid_bones) & (lengths > 1e-6)
    lengths = np.where(seen, lengths, np.nan)
    reference = np.concatenate([_reference_lengths(lengths[span], s.bone_window) for span in pieces(cut)])
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = (lengths - reference) / np.fmax(reference, K.MIN_BONE * safe_scale[:, :, None])
    bone_ok = seen & np.isfinite(rel) & (seen.sum(0) >= 3)[None]
    rel = np.where(bone_ok, rel, 0.0)

    limits = spec.joint_limits
    if limits:
        bends = K.joint_bends(kp, limits, valid)  # [T, I, J]
        joint_ok = K.joint_valid(valid, limits)
        curl = np.broadcast_to(K.joint_curl(bends, joint_ok, spec, time_dim=0), bends.shape).copy()  # per track
        # Fingers' flexion limits are anatomical (3D); limbs' (no hyperextension limit) are already set for 2D.
        slack = [s.flexion_slack if lim.max_hyperextension is not None else 0.0 for lim in limits]
        violated = (K.joint_limit_excess(bends, limits, curl, flexion_slack=slack) > 0) & joint_ok
    else:
        joint_ok = violated = np.zeros((t_len, n_inst, 0), bool)
    low = (slot_of >= 0) & (conf.max(-1) < s.low_conf)
    return _Measures(slot_of, swap, transition, scale, jitter, jitter_ok, rel, bone_ok, violated, joint_ok, low, cut)


def _reference_lengths(lengths: np.ndarray, window: int) -> np.ndarray:
    """What each bone length ``[T, I, B]`` (NaN where unseen) is compared with: its running median over
    ``window`` frames centred on each frame (unseen frames skipped), or its mean over the clip when ``window`` is 0."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, handled by the caller
        if window <= 0:
            return np.broadcast_to(np.nanmean(lengths, 0, keepdims=True), lengths.shape)
    return K.running_nanmedian(lengths, window // 2)


def _describe(region: str, score: float, parts: dict[str, Part], t_len: int) -> str:
    worst = min(parts.values(), key=lambda p: p.value)
    shown = ", ".join(f"{p.name} {p.value:.2f}" for p in parts.values())
    return f"{region}: {score:.1f}/100 over {t_len} frames ({shown}); weakest part: {worst.name}"


# --- whole videos ------------------------------------------------------------------------------------------------


@dataclass
class ScoreResult:
    """Everything a report, a node or the fixer needs about one scored video (and its reference)."""

    region: str
    fps: float
    anatomy: AnatomyScore
    detections: Detections
    reference: AnatomyScore | None = None
    ref_detections: Detections | None = None
    fidelity: Any = None  # fidelity.Fidelity when a reference was given
    summary: str = ""

    @property
    def score(self) -> float | None:
        return self.anatomy.score

    @property
    def found(self) -> bool:
        return self.anatomy.found

    def needs_fixing(self, threshold: float) -> bool:
        """Score below ``threshold``. A region never found needs no fixing: there is nothing to fix."""
        return self.anatomy.score is not None and self.anatomy.score < threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (scores.json); per-frame columns included."""
        out: dict[str, Any] = {
            "summary": self.summary, "region": self.region, "fps": self.fps, "score": self.anatomy.score,
            "found": self.anatomy.found, "num_frames": self.anatomy.num_frames, "anatomy": self.anatomy.to_dict(),
        }  # fmt: skip
        if self.reference is not None:
            out["reference"] = self.reference.to_dict()
            ref = self.reference.score
            out["delta"] = None if ref is None or self.anatomy.score is None else self.anatomy.score - ref
        if self.fidelity is not None:
            out["fidelity"] = self.fidelity.to_dict()
        return json_safe(out)


def _check_frames(frames: Any, what: str) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{frames.dtype} {list(frames.shape)}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise BGFSError(f"{what} must be RGB uint8 frames [T, H, W, 3], got {got}")
    if len(frames) == 0:
        raise BGFSError(f"{what} has no frames: give a video with at least one frame")
    return frames


def score_video(
    frames: np.ndarray,
    region: str,
    reference: np.ndarray | None = None,
    fps: float = 25.0,
    detector_kwargs: dict[str, Any] | None = None,
    settings: ScoreSettings | None = None,
    detections: Detections | None = None,
    ref_detections: Detections | None = None,
    roi: tuple[float, float, float] = (0.25, 0.3, 0.6),
    progress: bool = False,
) -> ScoreResult:
    """Detect ``region`` with MediaPipe in ``frames`` (and ``reference``) and score it; fidelity when a reference.

    ``detector_kwargs`` go to ``detection.Detector`` (backend, model_dir, confidences, mirrored). Detections already
    at hand can be passed to skip MediaPipe. ``roi`` = (margin, min_conf, smooth) of the ROI mask for fidelity.
    """
    from .detection import detect_video

    get_region(region)  # an unknown name is a BGFSError before MediaPipe starts
    frames = _check_frames(frames, "the video")
    if reference is not None:
        reference = _check_frames(reference, "the reference")
        if reference.shape != frames.shape:
            raise BGFSError(f"the reference ({len(reference)} frames of {reference.shape[2]}x{reference.shape[1]}) "
                            f"does not match the video ({len(frames)} frames of {frames.shape[2]}x{frames.shape[1]})"
                            ": give a reference with the same number of frames and size")  # fmt: skip
    kw = dict(detector_kwargs or {})
    for det, what, n in ((detections, "detections", len(frames)), (ref_detections, "ref_detections", len(frames))):
        if det is not None and (det.num_frames != n or det.region != region):
            raise BGFSError(f"{what} ({det.region}, {det.num_frames} frames) do not match the video ({region}, {n} "
                            "frames)")
    if detections is None:
        detections = detect_video(frames, region, fps=fps, progress=progress, **kw)
    ref_score = fid = None
    if reference is not None and ref_detections is None:
        ref_detections = detect_video(reference, region, fps=fps, progress=progress, **kw)
    anatomy = score_detections(detections, ref_detections if reference is not None else None, settings)
    if reference is not None:
        ref_score = score_detections(ref_detections, None, settings)
        from .fidelity import compare

        fid = compare(frames, reference, fidelity_mask(ref_detections, detections, frames.shape[1:3], roi))
    result = ScoreResult(region, float(fps), anatomy, detections, ref_score,
                         ref_detections if reference is not None else None, fid)  # fmt: skip
    result.summary = summarize(result)
    return result


def fidelity_mask(ref_detections: Detections, detections: Detections, frame_hw: tuple[int, int],
                  roi: tuple[float, float, float]) -> np.ndarray:
    """The ROI mask fidelity is measured with (``float32 [T, H, W]``): the reference's region (the video's where the
    reference has none), boxed with ``roi`` = (margin, min_conf, smooth) and feathered."""
    from .roi import roi_boxes, roi_mask_union

    margin, min_conf, smooth = roi
    mask_det = ref_detections if ref_detections.present.any() else detections
    # instances followed by position, as the fixer does, so a flipped label does not smear the smoothed boxes
    boxes = roi_boxes(follow_tracks(mask_det, min_conf)[0], margin, min_conf, smooth)
    return roi_mask_union(boxes, frame_hw, feather=0.1)


def summarize(result: ScoreResult) -> str:
    """A few readable lines: the score, its parts, the reference's score and the fidelity."""
    a = result.anatomy
    geometry = "" if a.geometry_score is None else f" (geometry {a.geometry_score:.1f})"
    score = "not found" if a.score is None else f"{a.score:.1f}/100{geometry}"
    lines = [f"Anatomy score ({result.region}): {score}"]
    if a.score is None:
        lines.append(a.message)
    else:
        lines.append("  parts: " + ", ".join(f"{p.name} {p.value:.2f} (raw {p.raw:.3g})" for p in a.parts.values()))
        if a.instances:
            lines.append("  instances: " + ", ".join(f"{d['label']} in {d['frames']} frames" for d in a.instances))
    if result.reference is not None:
        r = result.reference
        ref = "not found" if r.score is None else f"{r.score:.1f}/100"
        delta = "" if r.score is None or a.score is None else f" (change {a.score - r.score:+.1f})"
        if r.geometry_score is not None and a.geometry_score is not None:
            delta += f", geometry {r.geometry_score:.1f} -> {a.geometry_score:.1f}"
        lines.append(f"Reference: {ref}{delta}")
    if result.fidelity is not None:
        lines.append("Fidelity: " + result.fidelity.describe())
    return "\n".join(lines)
