"""Instance tracks: which detection in each frame continues which instance, by position.

ROI Detect fills instance slots by label (hands: 0 = left, 1 = right, from MediaPipe's handedness). When the label
flips for a frame, or a second "hand" (a hand-shaped object, a reflection) takes the other label, one slot jumps
between two instances. Anything that reads a slot over time (the judge's jitter and bone lengths, the fixer's ROI
boxes, trajectories and bone terms) must follow instances by position instead: `link_tracks` does that, as the
judge has always done, and `follow_tracks` re-orders a whole `Detections` into tracks for the fixer. A hand found
twice in one frame (`duplicates`) is one hand: the judge drops it (`drop_duplicates`), and so does `follow_tracks`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .detections import Detections
from .regions import get_region

MAX_GAP = 8  # frames a lost track is remembered: a gap this long between sightings is bridged, not a new track


def _centres(kp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of the valid keypoints: [T, I, 2], NaN where none."""
    w = valid[..., None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid[..., None], kp, 0.0).sum(-2) / w.sum(-2)


def link_tracks(present: np.ndarray, keypoints: np.ndarray, valid: np.ndarray, max_gap: int = MAX_GAP,
                track_gate: float = 1.5, relabel_cost: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Link detections (``present [T, I]``; ``keypoints [T, I, K, 2]`` used where ``valid [T, I, K]``) into tracks
    by position.

    Each frame's detections go to the tracks that minimise the distance between the centres of their valid
    keypoints and where each track is expected: where it was last seen, moved on at the velocity of its last two
    sightings (in units of the instance's size, the diagonal of its keypoints,
    capped at ``track_gate``; a track unseen for more than ``max_gap`` frames costs the cap), plus
    ``relabel_cost`` for every detection whose slot differs from its track's last slot.
    Returns ``slot_of [T, I]`` (the slot that track ``i`` takes its detection from at frame ``t``, -1 if none),
    ``swap [T]`` (a detection continued a track seen in the previous frame under another slot) and
    ``transition [T]`` (some track seen at ``t - 1`` continued at ``t``).
    """
    from . import kinematics as K

    centres, sizes = _centres(keypoints, valid), K.frame_scale(keypoints, valid)
    t_len, n = present.shape
    slot_of = np.full((t_len, n), -1, np.int64)
    swap = np.zeros(t_len, bool)
    transition = np.zeros(t_len, bool)
    last_c = np.full((n, 2), np.nan)
    velocity = np.zeros((n, 2))  # per frame, from the track's last two sightings: hands crossing pass each other
    last_size = np.full(n, np.nan)
    last_t = np.full(n, -(10**9))
    last_slot = np.arange(n)
    for t in range(t_len):
        slots = [i for i in range(n) if present[t, i] and np.isfinite(centres[t, i]).all()]
        if not slots:
            continue
        expected = last_c + velocity * (t - last_t)[:, None].clip(0, max_gap)
        best, best_cost = None, math.inf
        for tracks in itertools.permutations(range(n), len(slots)):
            cost = 0.0
            for slot, tr in zip(slots, tracks):
                known = t - last_t[tr] <= max_gap and np.isfinite(last_c[tr]).all()
                if known:
                    size = np.nanmax([sizes[t, slot], last_size[tr], 1e-6])
                    cost += min(float(np.linalg.norm(centres[t, slot] - expected[tr])) / size, track_gate)
                else:
                    cost += track_gate
                cost += relabel_cost * (slot != last_slot[tr])
            if cost < best_cost - 1e-12:
                best, best_cost = tracks, cost
        for slot, tr in zip(slots, best):
            if last_t[tr] == t - 1:
                transition[t] = True
                swap[t] |= slot != last_slot[tr]
            slot_of[t, tr] = slot
            recent = t - last_t[tr] <= max_gap and np.isfinite(last_c[tr]).all()
            velocity[tr] = (centres[t, slot] - last_c[tr]) / (t - last_t[tr]) if recent else 0.0
            last_c[tr], last_t[tr], last_slot[tr] = centres[t, slot], t, slot
            if np.isfinite(sizes[t, slot]):
                last_size[tr] = sizes[t, slot]
    return slot_of, swap, transition


# Region sizes (the diagonal of the keypoints' box) by which a track's motion before a frame and its motion from that
# frame on must disagree there for the frame to be a cut. Within shots of the bundled footage (a hand, a face, a
# body, feet; 5 to 60 fps, damaged copies too) no frame comes near it; across the film's cuts, 0.8 to 0.9.
JUMP = 0.5
GAP_ALLOWANCE = 0.15  # region sizes added per frame the track was not seen across: its motion there is a guess
STEADY = 4  # sightings fitted on each side of a frame; a glitch of up to STEADY - 1 frames is never a cut
SIZE_JUMP = float(np.log(1.4))  # or its size must change by more than 40% there (the film's cut to a close-up: 66%)
WOBBLE = 4.0  # the two sides' lines must lie this many times farther apart than any centre lies off its line
# Two cuts at most this many frames apart (0.5 s at Wan's 16 fps) between which the region left its motion and after
# which it is back on it are a longer glitch, not a shot of their own: no shot of a generated clip is that short
# and returns the region where it was going.
GLITCH_FRAMES = 8


def cuts(keypoints: np.ndarray, valid: np.ndarray, max_gap: int = MAX_GAP, jump: float = JUMP,
         by_size: bool = False) -> np.ndarray:
    """``[T]`` bool: frames where a track (slot of ``keypoints [T, I, K, 2]``, used where ``valid [T, I, K]``) moves
    to another place, or changes its size, at once and stays so: a cut to another shot, or another instance taking
    the track.

    On each side of a frame, a straight line through the centres of the track's last (first) ``STEADY`` sightings
    (at least 3) is its motion there. The frame is a cut when both lines are steady (no centre lies more than
    ``jump / 2`` times the track's size, nor a ``WOBBLE``-th of the lines' distance, off its line) and yet they lie
    more than ``jump`` times its size apart (plus ``GAP_ALLOWANCE`` for each frame it went unseen in between, at
    most ``max_gap``) both at the frame and at the sighting before it, and the step between those two sightings is
    as large. With ``by_size`` (a region that `holds_its_size`), the same for the logarithm of its size, by
    ``SIZE_JUMP`` (plus ``GAP_ALLOWANCE / 2`` per frame unseen), where each side's size must also hold (a cut to a
    close-up in the same place). A glitch (a region thrown elsewhere for up to ``STEADY - 1`` frames and back)
    leaves a side unsteady, and a longer one (up to ``GLITCH_FRAMES``) returns to the motion it left: either is for
    the fixer to mend and the judge to count, not a cut. Fast or accelerating motion meets itself where the two lines
    join.

    Nothing that works over time reaches across a cut: ROI boxes are neither smoothed nor bridged across it,
    kinematic targets are drawn on each side alone, and the fixer's bone, smoothness and warp terms and the judge's
    jitter and bone-length reference do not compare frames on its two sides. The mask is one for all instances: a
    cut in one track also parts the others' frames there. A track's slots are taken as they are: follow a hand's
    tracks first (`follow_tracks`), or a handedness label that flips for good can read as a cut.
    """
    from . import kinematics as K

    kp = np.where(valid[..., None], keypoints, np.nan).astype(np.float64)
    centres, sizes = _centres(kp, valid), K.frame_scale(kp, valid)
    out = np.zeros(kp.shape[0], bool)
    for i in range(kp.shape[1]):
        seen = np.flatnonzero(np.isfinite(centres[:, i]).all(-1) & np.isfinite(sizes[:, i]))
        out[_track_cuts(seen, centres[seen, i], sizes[seen, i], max_gap, jump, by_size)] = True
    return out


def detection_cuts(det: Detections, min_conf: float, max_gap: int = MAX_GAP) -> np.ndarray:
    """`cuts` of ``det``'s slots (tracks already: `follow_tracks` first for hands), its keypoints seen with
    ``min_conf``, by size too where its region `holds_its_size`."""
    return cuts(det.keypoints, det.seen_keypoints(min_conf), max_gap, by_size=det.spec.holds_its_size)


def _line(t: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares straight motion through centres ``c [n, d]`` at frames ``t``: (``[[slope], [value at frame
    0]]``, ``[2, d]``; the farthest centre's distance from it)."""
    tm = t - t.mean()
    slope = (tm[:, None] * (c - c.mean(0))).sum(0) / max(float((tm * tm).sum()), 1e-12)
    coef = np.stack([slope, c.mean(0) - slope * t.mean()])
    return coef, float(np.linalg.norm(c - (coef[0] * t[:, None] + coef[1]), axis=-1).max())


def _parting(t_before: np.ndarray, v_before: np.ndarray, t_after: np.ndarray, v_after: np.ndarray,
             at: tuple[int, int]) -> tuple[float, float, float]:
    """Straight lines through values ``v [n, d]`` at frames ``t`` on each side of a frame: (how far apart they lie
    at the closer of the frames ``at``, the farthest value's distance off its line, the larger change along a line
    over its own frames)."""
    line_b, off_b = _line(t_before, v_before)
    line_a, off_a = _line(t_after, v_after)
    apart = min(float(np.linalg.norm((line_b[0] - line_a[0]) * t + line_b[1] - line_a[1])) for t in at)
    span = max(float(np.linalg.norm(line_b[0])) * np.ptp(t_before), float(np.linalg.norm(line_a[0])) * np.ptp(t_after))
    return apart, max(off_b, off_a), span


def _track_cuts(seen: np.ndarray, c: np.ndarray, size: np.ndarray, max_gap: int, jump: float,
                by_size: bool) -> list[int]:
    """`cuts` of one track seen on frames ``seen`` at centres ``c`` with sizes ``size``."""
    run = np.r_[0, np.cumsum(np.diff(seen) > max_gap + 1)]  # sightings joined by gaps of at most max_gap frames
    log_size = np.log(size)[:, None]
    found: dict[int, float] = {}  # sighting -> by how many times its threshold the two lines lie apart
    for n in range(1, len(seen)):
        in_run = np.flatnonzero(run == run[n])
        before, after = in_run[(in_run < n) & (in_run >= n - STEADY)], in_run[(in_run >= n) & (in_run < n + STEADY)]
        if len(before) < 3 or len(after) < 3:
            continue
        a, b = seen[n - 1], seen[n]
        unit = float(np.median(size[np.r_[before, after]]))
        threshold = (jump + GAP_ALLOWANCE * (b - a - 1)) * unit
        apart, off, _ = _parting(seen[before], c[before], seen[after], c[after], (a, b))
        # both sides steady, and the jump far beyond their wobble: a region waving back and forth fits two lines
        # that part where it turns, but no more than a few times their wobble
        steady = off <= min(jump / 2 * unit, apart / WOBBLE)
        if steady and apart > threshold and np.linalg.norm(c[n] - c[n - 1]) > threshold:
            found[n] = apart / threshold
            continue
        if not by_size:
            continue
        # the same for the size: a cut to a close-up of a region in the same place (a wide shot's face, then the
        # next shot's large one); a region unseen for a while may have come closer meanwhile
        threshold = SIZE_JUMP + GAP_ALLOWANCE / 2 * (b - a - 1)
        apart, off, span = _parting(seen[before], log_size[before], seen[after], log_size[after], (a, b))
        # within a shot a region's size holds, give or take: a side that grows or shrinks (a limb swinging out, a
        # 2-frame glitch and its way back) is no shot's steady size
        steady = off + span <= min(SIZE_JUMP / 2, apart / WOBBLE)
        if steady and apart > threshold and abs(log_size[n, 0] - log_size[n - 1, 0]) > threshold:
            found[n] = apart / threshold
    # a side whose sightings reach past another cut fits a line through both shots: of two cuts within STEADY
    # sightings, only the clearer one is
    kept: list[int] = []
    for n in sorted(found, key=found.get, reverse=True):
        if all(abs(n - m) >= STEADY for m in kept):
            kept.append(n)
    kept.sort()
    out, i = [], 0
    while i < len(kept):  # a glitch takes both its cuts: the next pair starts after it (its own side is no shot)
        if i + 1 < len(kept) and _returns(seen, c, log_size, run, kept[i], kept[i + 1], jump, by_size):
            i += 2
            continue
        out.append(int(seen[kept[i]]))
        i += 1
    return out


def _returns(seen: np.ndarray, c: np.ndarray, log_size: np.ndarray, run: np.ndarray, n1: int, n2: int, jump: float,
             by_size: bool) -> bool:
    """Whether the region, thrown elsewhere at sighting ``n1``, is back on its motion from sighting ``n2`` on (within
    ``GLITCH_FRAMES`` frames): the lines through the sightings before ``n1`` and from ``n2`` lie closer than a cut's
    threshold, in place and, with ``by_size``, in size."""
    if seen[n2] - seen[n1] > GLITCH_FRAMES or run[n1 - 1] != run[n2]:
        return False
    in_run = np.flatnonzero(run == run[n1])
    before = in_run[(in_run < n1) & (in_run >= n1 - STEADY)]
    after = in_run[(in_run >= n2) & (in_run < n2 + STEADY)]
    if len(before) < 3 or len(after) < 3:
        return False
    at = (int(seen[n1 - 1]), int(seen[n2]))
    unit = float(np.median(np.exp(log_size[np.r_[before, after], 0])))
    apart, _, _ = _parting(seen[before], c[before], seen[after], c[after], at)
    if apart > jump * unit:
        return False
    if by_size:
        apart, _, _ = _parting(seen[before], log_size[before], seen[after], log_size[after], at)
        return apart <= SIZE_JUMP
    return True


_ONE = {"hands": "hand", "face": "face", "feet": "foot", "upper_body": "person", "full_body": "person"}


def cut_words(region: str, cut: np.ndarray) -> str:
    """What to tell a user of the `cuts` ``cut [T]`` of ``region``'s tracks (frames counted from 1, as the nodes'
    preview counts them); "" when there are none."""
    frames = np.flatnonzero(cut)
    if not len(frames):
        return ""
    where = ", ".join(str(t + 1) for t in frames)
    how = "moved or changed size" if get_region(region).holds_its_size else "moved to another place"
    return (f"a cut at frame {where} of {len(cut)} (the {region.replace('_', ' ')} {how} at once and stayed so: "
            f"another shot, or another {_ONE.get(region, 'instance')})")


def pieces(cut: np.ndarray) -> list[slice]:
    """The spans of frames between `cuts` (``cut [T]`` bool): each starts at frame 0 or at a cut."""
    starts = [0, *[int(t) for t in np.flatnonzero(cut) if t > 0], len(cut)]
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


def gather_tracks(arr: np.ndarray, slot_of: np.ndarray, fill: Any) -> np.ndarray:
    """Re-order the slot axis (1) of ``arr [T, I, ...]`` into tracks; ``fill`` where a track has no detection."""
    idx = np.clip(slot_of, 0, None)
    out = np.take_along_axis(arr, idx.reshape(idx.shape + (1,) * (arr.ndim - 2)), axis=1).copy()
    out[slot_of < 0] = fill
    return out


def duplicates(det: Detections, overlap: float = 0.5) -> np.ndarray:
    """[T, I] bool: detections that mostly lie inside another, more confident one of the same frame (a hand found
    twice): their boxes' intersection covers more than ``overlap`` of the smaller box."""
    out = np.zeros(det.present.shape, bool)
    for t in np.flatnonzero(det.present.sum(1) >= 2):
        slots = np.flatnonzero(det.present[t])
        for a, b in itertools.permutations(slots, 2):
            ba, bb = det.boxes[t, a], det.boxes[t, b]
            if not (np.isfinite(ba).all() and np.isfinite(bb).all()) or det.scores[t, a] > det.scores[t, b]:
                continue
            if det.scores[t, a] == det.scores[t, b] and a < b:  # a tie: keep the first slot
                continue
            w = min(ba[2], bb[2]) - max(ba[0], bb[0])
            h = min(ba[3], bb[3]) - max(ba[1], bb[1])
            smaller = min((ba[2] - ba[0]) * (ba[3] - ba[1]), (bb[2] - bb[0]) * (bb[3] - bb[1]))
            if w > 0 and h > 0 and w * h > overlap * max(smaller, 1e-6):
                out[t, a] = True
    return out


def drop_duplicates(det: Detections) -> Detections:
    """``det`` without the hands found twice (`duplicates`), as if those detections had not been made; other
    regions (the feet's two slots can overlap when the feet touch) and hands with none come back as they are."""
    if det.present.shape[1] < 2 or det.spec.source != "hands":
        return det
    dup = duplicates(det)
    if not dup.any():
        return det
    return Detections(
        det.region, np.where(dup[..., None, None], np.nan, det.keypoints).astype(det.keypoints.dtype),
        np.where(dup[..., None], 0.0, det.confidence).astype(det.confidence.dtype), det.present & ~dup,
        np.where(dup[..., None], np.nan, det.boxes).astype(det.boxes.dtype),
        np.where(dup, 0.0, det.scores).astype(det.scores.dtype), det.frame_hw,
    )  # fmt: skip


def follow_tracks(det: Detections, min_conf: float = 0.3) -> tuple[Detections, int]:
    """``det`` with its instance slots re-ordered so that each slot follows one instance by position, and with
    duplicate detections (`duplicates`) dropped -> (that, the number of frames changed). Only hands are followed:
    their slots come from a handedness label; the feet's come from one pose's left and right leg, which stays
    right when the feet cross, where following by position would not. Other regions have one instance."""
    followed, frames, _ = _follow(det, min_conf)
    return followed, frames


def labelled_tracks(det: Detections, min_conf: float = 0.3) -> tuple[Detections, list[str], int]:
    """`follow_tracks` (the tracks and the number of frames changed), plus a name for each track: the instance
    label its detections carried most often (``"left"``), with the track's number added where two tracks would
    share one (``"left_2"``, e.g. a hand-shaped object that MediaPipe also calls left). Unchanged detections keep
    the region's instance labels. -> (tracks, names, frames changed)."""
    followed, frames, slot_of = _follow(det, min_conf)
    names = list(det.spec.instance_labels)
    if slot_of is None:
        return followed, names, frames
    labels: list[str] = []
    for i in range(slot_of.shape[1]):
        seen = slot_of[:, i][slot_of[:, i] >= 0]
        label = names[int(np.bincount(seen).argmax())] if len(seen) else names[i]
        labels.append(label if label not in labels else f"{label}_{i + 1}")
    return followed, labels, frames


def _follow(det: Detections, min_conf: float) -> tuple[Detections, int, np.ndarray | None]:
    """`follow_tracks` and the ``slot_of`` it gathered with (None when ``det`` comes back as it is)."""
    if det.present.shape[1] < 2 or det.spec.source != "hands":
        return det, 0, None
    kept = drop_duplicates(det)
    present = kept.present
    valid = kept.seen_keypoints(min_conf)
    kp = np.where(valid[..., None], kept.keypoints, np.nan).astype(np.float64)
    slot_of, _, _ = link_tracks(present, kp, valid)  # only present slots are linked
    moved = ((slot_of >= 0) & (slot_of != np.arange(slot_of.shape[1]))).any(1) | (det.present & ~present).any(1)
    frames = int(moved.sum())
    if frames == 0:
        return det, 0, None
    return _gather_detections(kept, slot_of), frames, slot_of


def _gather_detections(det: Detections, slot_of: np.ndarray) -> Detections:
    """``det`` re-ordered into tracks (`gather_tracks` on every field)."""
    return Detections(
        det.region, gather_tracks(det.keypoints, slot_of, np.nan), gather_tracks(det.confidence, slot_of, 0.0),
        slot_of >= 0, gather_tracks(det.boxes, slot_of, np.nan), gather_tracks(det.scores, slot_of, 0.0),
        det.frame_hw,
    )  # fmt: skip


def align_tracks(det: Detections, reference: Detections, min_conf: float = 0.3) -> Detections:
    """``det``'s tracks put in the slots of the ``reference``'s tracks they lie on (both already tracks, e.g. from
    `labelled_tracks`): of every order of ``det``'s slots, the one whose centres lie nearest the reference's, on
    average over the frames where both see the instance (in units of the reference instance's size). Two videos
    of the same scene (before and after a fix) whose detectors named the hands differently then compare slot for
    slot. ``det`` comes back as it is when no order brings any instance together."""
    from . import kinematics as K

    n = det.present.shape[1]
    if n < 2 or reference.present.shape != det.present.shape:
        return det
    mine = _centres(det.keypoints, det.seen_keypoints(min_conf))
    ref_valid = reference.seen_keypoints(min_conf)
    ref = _centres(reference.keypoints, ref_valid)
    size = K.region_scale_or_one(reference.keypoints, ref_valid)  # [I]
    best, best_cost = tuple(range(n)), math.inf
    for order in itertools.permutations(range(n)):
        gap = np.linalg.norm(mine[:, list(order)] - ref, axis=-1) / size  # [T, I], NaN where either is unseen
        if np.isfinite(gap).any():
            cost = float(np.nanmean(gap))
            if cost < best_cost - 1e-9:
                best, best_cost = order, cost
    if best == tuple(range(n)):
        return det
    order = np.broadcast_to(np.array(best), det.present.shape)
    return _gather_detections(det, np.where(np.take_along_axis(det.present, order, 1), order, -1))
