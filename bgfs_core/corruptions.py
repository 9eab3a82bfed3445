"""Named, seeded corruptions of a real clip, made in image space so MediaPipe judges real (moved) pixels.

``corrupt(frames, det, name, seed, strength)`` takes RGB ``uint8 [T, H, W, 3]`` frames and the clip's own
:class:`Detections` (where the fingers are) and returns a corrupted copy of the same shape:

- ``finger_jitter``: every frame, each finger (a chain of the region: fingers for hands, limbs for bodies, the
  midline for the face) is turned by a small random angle about its root and its keypoints nudged, through a
  smooth displacement field (``cv2.remap``) around the keypoints.
- ``finger_backwards``: over a third of the clip the straightest finger is turned about its first joint (the
  knuckle; an elbow or knee for bodies) until it bends backwards, against the hand's curl, 90 x strength degrees
  past ``JointLimit.max_hyperextension`` (for joints without one: folded past ``max_bend``); the finger's old
  place is inpainted.
- ``bone_stretch``: over a few frames (a sixth of the clip) a finger is stretched along its length
  (x 1 + 0.6 strength).
- ``flicker``: the region's ROI changes brightness, contrast, colour and sharpness at random every frame.
- ``region_jitter``: every frame the whole region (all its chains) is shifted by a small random offset and turned
  by a small random angle, through the same smooth displacement field: a shaky, wobbling hand.
- ``dropped_frames``: some frames are replaced by a copy of the previous one (a stall), others by a black frame.

``corruption_map`` replays the fields of the two warp corruptions (``FIELD_CORRUPTIONS``) on pixel coordinates, and
``undo_warps`` inverts them: a perfect geometric repair, which `bench/eval_fixer.py` reports beside the fixer.

Every corruption is deterministic for a ``seed``. ``strength`` scales it (1 = the default, clearly visible).
``photo_clip`` makes a short clip from a still photo with a slow, smooth pan and zoom (real pixels, synthetic
camera motion), for footage that exists only as stills.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .detections import Detections
from .errors import BGFSError
from .regions import Region

CORRUPTIONS = (
    "finger_jitter", "finger_backwards", "bone_stretch", "flicker", "dropped_frames", "region_jitter",
)  # fmt: skip
# Width of a finger / limb / face feature as a fraction of the region's box diagonal, by landmark source.
CHAIN_WIDTH = {"hands": 0.1, "face_mesh": 0.12, "pose": 0.05}


def corrupt(frames: np.ndarray, det: Detections, name: str, seed: int = 0, strength: float = 1.0) -> np.ndarray:
    """A corrupted copy of ``frames`` (see the module doc for ``name``); ``det`` are the frames' detections."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise BGFSError(f"frames must be RGB uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
    if name not in CORRUPTIONS:
        raise BGFSError(f"unknown corruption {name!r}: choose one of {', '.join(CORRUPTIONS)}")
    if not isinstance(det, Detections) or det.num_frames != len(frames):
        n = det.num_frames if isinstance(det, Detections) else type(det).__name__
        raise BGFSError(f"det must be the Detections of these {len(frames)} frames, got {n}")
    if tuple(det.frame_hw) != tuple(frames.shape[1:3]):
        raise BGFSError(f"detections were made on {det.frame_hw} frames, these are {frames.shape[1:3]}")
    # dropped_frames blacks out frames whether or not the region is in them
    _check_strength_and_region(det, strength, None if name == "dropped_frames" else f"nothing to corrupt with {name!r}")
    rng = np.random.default_rng(seed)
    return _FUNCS[name](frames.copy(), det, rng, float(strength))


def corrupt_all(frames: np.ndarray, det: Detections, names: list[str], seed: int = 0, strength: float = 1.0
                ) -> np.ndarray:
    """``frames`` with each corruption of ``names`` applied in turn, the k-th seeded ``seed + k`` (all placed by
    the clean clip's ``det``): how `bgfs demo` and the fixer evaluation make their corrupted copies."""
    for k, name in enumerate(names):
        frames = corrupt(frames, det, name.strip(), seed=seed + k, strength=strength)
    return frames


# Corruptions that only move pixels, through smooth displacement fields: their fields can be replayed on pixel
# coordinates (``corruption_map``) and inverted (``undo_warps``).
FIELD_CORRUPTIONS = ("finger_jitter", "region_jitter")


def corruption_map(det: Detections, names: list[str], seed: int = 0, strength: float = 1.0) -> np.ndarray:
    """Where each pixel of ``corrupt_all(frames, det, names, seed, strength)`` was sampled in the clean frames:
    float32 ``[T, H, W, 2]`` (x, y in pixels). Only for :data:`FIELD_CORRUPTIONS`, whose output is a resampling
    of their input; the same fields are replayed on an image of pixel coordinates."""
    names = [n.strip() for n in names]
    other = [n for n in names if n not in FIELD_CORRUPTIONS]
    if other:
        raise BGFSError(f"only the warp corruptions ({', '.join(FIELD_CORRUPTIONS)}) have a field to replay, not "
                        f"{', '.join(map(repr, other))}")  # fmt: skip
    _check_strength_and_region(det, strength, "there is no corruption field")
    gx, gy = _pixel_grid(det.frame_hw)
    where = np.repeat(np.stack([gx, gy], -1)[None], det.num_frames, 0)
    for k, name in enumerate(names):  # seeded as corrupt_all seeds them
        where = _FUNCS[name](where, det, np.random.default_rng(seed + k), float(strength))
    return where


def undo_warps(corrupted: np.ndarray, det: Detections, names: list[str], seed: int = 0, strength: float = 1.0,
               iterations: int = 30) -> np.ndarray:
    """``corrupted`` (made by ``corrupt_all`` from the frames of ``det`` with these arguments) warped back through
    the exact inverse of the corruption's own field: what a perfect geometric fix would give.

    Not the clean clip: resampling twice blurs, and where the corruption squeezed pixels together the detail is
    gone. It is what undoing the corruption exactly gives, the reference for the fixer's warp mode (which only
    moves pixels too).
    """
    import cv2

    corrupted = np.asarray(corrupted)
    if corrupted.ndim != 4 or corrupted.shape[:3] != (det.num_frames, *det.frame_hw):
        raise BGFSError(f"corrupted frames {list(corrupted.shape)} do not match the detections' {det.num_frames} "
                        f"frames of {det.frame_hw[1]}x{det.frame_hw[0]}")  # fmt: skip
    where = corruption_map(det, names, seed, strength)
    gx, gy = _pixel_grid(det.frame_hw)
    out = np.empty_like(corrupted)
    for t in range(len(corrupted)):
        x, y = where_corrupted(where[t], gx, gy, iterations)
        out[t] = cv2.remap(corrupted[t], x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def where_corrupted(where: np.ndarray, x: np.ndarray, y: np.ndarray, iterations: int = 30
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Where a corruption put the clean points ``(x, y)`` (float32 arrays of one shape): the points whose
    ``where [H, W, 2]`` (one frame of `corruption_map`) reads ``(x, y)``."""
    import cv2

    # fixed-point iteration: the field is smooth and small, so it contracts
    px, py = x.copy(), y.copy()
    for _ in range(iterations):
        at = cv2.remap(where, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # both channels at once
        px, py = px + (x - at[..., 0]), py + (y - at[..., 1])
    return px, py


def _check_strength_and_region(det: Detections, strength: float, nothing: str | None) -> None:
    """The checks `corrupt` and `corruption_map` share; ``nothing``: what a clip without the region cannot give
    (None: such a clip is fine)."""
    if not strength >= 0:
        raise BGFSError(f"strength must be >= 0, got {strength}")
    if nothing is not None and not det.present.any():
        raise BGFSError(f"{det.region} is not found in any frame: {nothing}")


def _pixel_grid(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's own x and y (float32 ``[H, W]`` each): the identity map of ``cv2.remap``."""
    gy, gx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    return gx, gy


# --- geometry helpers --------------------------------------------------------------------------------------------


def _scale(det: Detections, t: int, i: int) -> float:
    kp = det.keypoints[t, i]
    ok = np.isfinite(kp).all(-1)
    if ok.sum() < 2:
        return math.nan
    return float(np.linalg.norm(kp[ok].max(0) - kp[ok].min(0)))


def _seen_instances(det: Detections):
    """``(frame, instance, size)`` for every instance detected with at least two keypoints, frame by frame."""
    for t in range(det.num_frames):
        for i in np.flatnonzero(det.present[t]):
            scale = _scale(det, t, i)
            if np.isfinite(scale):
                yield t, int(i), scale


def region_chains(spec: Region) -> list[tuple[int, ...]]:
    """The region's finger / limb chains (root first); a region without chains is one chain of all its keypoints."""
    return [tuple(c) for c in spec.chains] if spec.chains else [tuple(range(spec.num_keypoints))]


def _chains(det: Detections) -> list[tuple[int, ...]]:
    return region_chains(det.spec)


def _pivot(det: Detections, chain: tuple[int, ...]) -> int:
    """Index into ``chain`` of the joint to bend: its first joint with a limit (a finger's knuckle, an elbow, a
    knee), else the chain's middle."""
    limited = {lim.b for lim in det.spec.joint_limits}
    return next((k for k in range(1, len(chain) - 1) if chain[k] in limited), len(chain) // 2)


def _densify(points: np.ndarray, step: float) -> np.ndarray:
    """Points along the polyline ``points [N, 2]``, about ``step`` pixels apart (ends included)."""
    out = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / max(step, 1e-3))))
        out += [a + (b - a) * k / n for k in range(1, n + 1)]
    return np.asarray(out, np.float64)


def _capsule_mask(hw: tuple[int, int], points: np.ndarray, radius: float) -> np.ndarray:
    """uint8 {0, 255} mask of the thick polyline through ``points`` (radius in pixels)."""
    import cv2

    mask = np.zeros(hw, np.uint8)
    pts = np.round(points).astype(np.int32)
    th = max(1, int(round(2 * radius)))
    for a, b in zip(pts[:-1], pts[1:]):
        cv2.line(mask, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, th)
    for p in pts:
        cv2.circle(mask, tuple(int(v) for v in p), max(1, int(round(radius))), 255, -1)
    return mask


def _field_warp(frame: np.ndarray, dst: np.ndarray, src: np.ndarray, sigma: float, grid_step: int = 1) -> np.ndarray:
    """Move the pixels at ``src [N, 2]`` to ``dst [N, 2]`` with a smooth displacement field (``cv2.remap``).

    Backward map: output pixel ``x`` samples the input at ``x + a(x) * d(x)``, where ``d`` is the Gaussian-weighted
    (Shepard) average of ``src - dst`` around the ``dst`` points and ``a`` fades the warp out away from them.
    ``grid_step > 1`` computes the field on a grid that many pixels apart and resizes it (the field is smooth on
    the scale of ``sigma``; the critic's articulation augmentation uses this, ~20x fewer exponentials).
    """
    import cv2

    h, w = frame.shape[:2]
    x0, x1 = max(0, int(dst[:, 0].min() - 3 * sigma)), min(w, int(dst[:, 0].max() + 3 * sigma) + 1)
    y0, y1 = max(0, int(dst[:, 1].min() - 3 * sigma)), min(h, int(dst[:, 1].max() + 3 * sigma) + 1)
    if x1 <= x0 or y1 <= y0:
        return frame
    step = max(1, int(grid_step))
    if step == 1:
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        fx, fy = _shepard(gx + 0.5, gy + 0.5, dst, src, sigma)  # at pixel centres, in the keypoints' coordinates
    else:  # on the centres of step x step blocks, which cv2.resize's linear mode maps back onto pixels exactly
        ny, nx = -(-(y1 - y0) // step), -(-(x1 - x0) // step)
        gy, gx = np.mgrid[0:ny, 0:nx].astype(np.float32) * step + (step / 2)
        fx, fy = _shepard(gx + x0, gy + y0, dst, src, sigma)
        fx = cv2.resize(fx, (nx * step, ny * step), interpolation=cv2.INTER_LINEAR)[: y1 - y0, : x1 - x0]
        fy = cv2.resize(fy, (nx * step, ny * step), interpolation=cv2.INTER_LINEAR)[: y1 - y0, : x1 - x0]
    map_x, map_y = _pixel_grid((h, w))
    map_x[y0:y1, x0:x1] += fx
    map_y[y0:y1, x0:x1] += fy
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _shepard(px: np.ndarray, py: np.ndarray, dst: np.ndarray, src: np.ndarray, sigma: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """``_field_warp``'s backward displacement ``a(x) * d(x)`` at the points ``(px, py)`` (float32 arrays)."""
    wsum = np.zeros_like(px)
    dx = np.zeros_like(px)
    dy = np.zeros_like(px)
    disp = (src - dst).astype(np.float32)
    for (cx, cy), (ddx, ddy) in zip(dst.astype(np.float32), disp):
        g = np.exp(-((px - cx) ** 2 + (py - cy) ** 2) / (2 * sigma * sigma))
        wsum += g
        dx += g * ddx
        dy += g * ddy
    alpha = np.minimum(wsum, 1.0)
    norm = np.maximum(wsum, 1e-6)
    return alpha * dx / norm, alpha * dy / norm


def _forward(points: np.ndarray, dst: np.ndarray, src: np.ndarray, sigma: float, iterations: int = 20) -> np.ndarray:
    """Where ``_field_warp`` puts the content at ``points [N, 2]``: the ``x`` with ``x + a(x) d(x) = point``
    (fixed-point iteration; the field is smooth and small, so it contracts)."""
    p = points.astype(np.float32)
    x = p.copy()
    for _ in range(iterations):
        fx, fy = _shepard(x[:, 0].copy(), x[:, 1].copy(), dst, src, sigma)
        x = p - np.stack([fx, fy], -1)
    return x.astype(np.float64)


def _rigid_move(frame: np.ndarray, src_pts: np.ndarray, matrix: np.ndarray, radius: float) -> np.ndarray:
    """Move the thick polyline ``src_pts`` by the affine ``matrix [2, 3]``: inpaint where it was, paste it anew."""
    import cv2

    h, w = frame.shape[:2]
    dst_pts = src_pts @ matrix[:, :2].T + matrix[:, 2]
    src_mask = _capsule_mask((h, w), src_pts, radius * 1.5)
    dst_mask = _capsule_mask((h, w), dst_pts, radius)
    hole = cv2.bitwise_and(src_mask, cv2.bitwise_not(dst_mask))
    base = cv2.inpaint(frame, hole, max(3.0, radius), cv2.INPAINT_TELEA) if hole.any() else frame
    # cv2 puts pixel centres at integers, keypoints at +0.5: shift the matrix into cv2's frame
    m = matrix.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    moved = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.GaussianBlur(dst_mask.astype(np.float32) / 255.0, (0, 0), max(1.0, radius / 3))[..., None]
    return np.clip(base * (1 - alpha) + moved * alpha + 0.5, 0, 255).astype(np.uint8)


def _rotation(pivot: np.ndarray, degrees: float) -> np.ndarray:
    """Affine [2, 3] turning points about ``pivot`` by ``degrees`` (the sign convention of ``joint_bends``)."""
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.concatenate([r, (pivot - r @ pivot)[:, None]], 1)


def _stretch(origin: np.ndarray, direction: np.ndarray, factor: float) -> np.ndarray:
    """Affine [2, 3] scaling by ``factor`` along ``direction`` about ``origin``."""
    u = direction / max(np.linalg.norm(direction), 1e-9)
    m = np.eye(2) + (factor - 1.0) * np.outer(u, u)
    return np.concatenate([m, (origin - m @ origin)[:, None]], 1)


def _span(rng: np.random.Generator, t_len: int, length: int) -> range:
    length = max(1, min(t_len, length))
    start = int(rng.integers(0, t_len - length + 1))
    return range(start, start + length)


def _chain_points(det: Detections, t: int, i: int, chain: tuple[int, ...]) -> np.ndarray | None:
    pts = det.keypoints[t, i, list(chain)].astype(np.float64)
    ok = det.confidence[t, i, list(chain)] > 0
    return pts if np.isfinite(pts).all() and ok.all() else None


def _straightest_chain(det: Detections, t: int, i: int) -> tuple[int, ...] | None:
    """The chain whose end is farthest from its root relative to its length (most extended), if any is seen."""
    best, best_ratio = None, -1.0
    for chain in _chains(det):
        pts = _chain_points(det, t, i, chain)
        if pts is None or len(chain) < 3:
            continue
        length = np.linalg.norm(np.diff(pts, axis=0), axis=-1).sum()
        ratio = np.linalg.norm(pts[-1] - pts[0]) / max(length, 1e-6)
        if ratio > best_ratio:
            best, best_ratio = chain, ratio
    return best


def _straightest_chains(det: Detections, t: int):
    """``(instance, chain, its points, instance size)`` of frame ``t``'s straightest chain, per instance that has
    one (the finger or limb the "backwards" and "stretch" corruptions act on)."""
    for i in np.flatnonzero(det.present[t]):
        chain = _straightest_chain(det, t, i)
        scale = _scale(det, t, i)
        if chain is not None and np.isfinite(scale):
            yield int(i), chain, _chain_points(det, t, i, chain), scale


# --- corruptions -------------------------------------------------------------------------------------------------


def articulate(image: np.ndarray, keypoints: np.ndarray, ok: np.ndarray, chains: list[tuple[int, ...]],
               rng: np.random.Generator, strength: float = 1.0, width: float = 0.1, grid_step: int = 1,
               scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Turn each finger (chain) of one instance by a random angle about its root (normal, 9 x ``strength`` deg)
    and nudge its other joints (2.5% of the instance's size): ``(warped image, moved keypoints)``.

    ``keypoints [K, 2]`` in the image's pixels, ``ok [K]`` which are known; a chain with an unknown point is left
    alone. ``width`` is a finger's width as a fraction of the instance's size (``scale``, default: the diagonal
    of the known keypoints' box): the warp's reach. The moved keypoints are where the warp put the known joints
    (solved through the field, not the aimed-at places, which its smoothing misses by a few pixels):
    ``finger_jitter`` uses this on video frames, the critic's training on its crops (so that it learns to follow
    bent fingers, with exact labels, instead of recalling the poses it was shown).
    """
    kp = np.asarray(keypoints, np.float64)
    moved_kp = kp.copy()
    good = np.asarray(ok, bool) & np.isfinite(kp).all(-1)
    if good.sum() < 2:
        return image, moved_kp
    if scale is None:
        scale = float(np.linalg.norm(kp[good].max(0) - kp[good].min(0)))
    to = kp.copy()
    for chain in chains:
        if not good[list(chain)].all():
            continue
        pts = kp[list(chain)]
        root = pts[0]
        turn = _rotation(root, rng.normal(0.0, 9.0 * strength))
        moved = pts @ turn[:, :2].T + turn[:, 2]
        moved[1:] += rng.normal(0.0, 0.025 * strength * scale, size=(len(pts) - 1, 2))
        moved[0] = root
        to[list(chain)] = moved
    return _warp_chains(image, kp, to, good, chains, width, scale, grid_step, _unpaired_points)


def move_chains(image: np.ndarray, keypoints: np.ndarray, to: np.ndarray, ok: np.ndarray,
                chains: list[tuple[int, ...]], width: float, scale: float, grid_step: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that each chain's keypoints go from ``keypoints`` to ``to`` (both ``[K, 2]``), through a
    smooth field around the chains (points every half finger width, Gaussian reach ``width * scale``): the field
    family of ``articulate``. Chains with a keypoint not ``ok`` stay. ``(warped image, where the field put the
    ok keypoints)``."""
    return _warp_chains(image, keypoints, to, ok, chains, width, scale, grid_step, _paired_points)


def _paired_points(a: np.ndarray, b: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points along the polylines ``a`` and ``b [N, 2]`` (one chain before and after a move), each segment cut
    into as many pieces in both, about ``step`` pixels apart on the longer: the i-th points correspond."""
    pa, pb = [a[0]], [b[0]]
    for a0, a1, b0, b1 in zip(a[:-1], a[1:], b[:-1], b[1:]):
        n = max(1, int(math.ceil(max(np.linalg.norm(a1 - a0), np.linalg.norm(b1 - b0)) / max(step, 1e-3))))
        pa += [a0 + (a1 - a0) * k / n for k in range(1, n + 1)]
        pb += [b0 + (b1 - b0) * k / n for k in range(1, n + 1)]
    return np.asarray(pa, np.float64), np.asarray(pb, np.float64)


def _unpaired_points(a: np.ndarray, b: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """``articulate``'s pairing: each polyline densified on its own, cut to the shorter. Where a nudge changes a
    segment's piece count, the pairs after it shift by one and the field moves the joints only part of the way
    (labels stay exact: they are solved through the field). Kept so that every corrupted copy and augmented crop
    stays byte for byte what the published evaluations used."""
    s, d = _densify(a, step), _densify(b, step)
    n = min(len(s), len(d))
    return s[:n], d[:n]


def _warp_chains(image: np.ndarray, keypoints: np.ndarray, to: np.ndarray, ok: np.ndarray,
                 chains: list[tuple[int, ...]], width: float, scale: float, grid_step: int,
                 pairs: Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    kp = np.asarray(keypoints, np.float64)
    to = np.asarray(to, np.float64)
    moved_kp = kp.copy()
    src, dst = [], []
    for chain in chains:
        if not ok[list(chain)].all():
            continue
        s, d = pairs(kp[list(chain)], to[list(chain)], width * scale / 2)
        src.append(s)
        dst.append(d)
    if not src or scale <= 0:
        return image, moved_kp
    dst_all, src_all = np.concatenate(dst), np.concatenate(src)
    moved_kp[ok] = _forward(kp[ok], dst_all, src_all, width * scale)
    return _field_warp(image, dst_all, src_all, width * scale, grid_step), moved_kp


def _finger_jitter(frames: np.ndarray, det: Detections, rng: np.random.Generator, strength: float) -> np.ndarray:
    width = CHAIN_WIDTH[det.spec.source]
    chains = _chains(det)
    for t, i, scale in _seen_instances(det):
        ok = (det.confidence[t, i] > 0) & np.isfinite(det.keypoints[t, i]).all(-1)
        frames[t], _ = articulate(frames[t], det.keypoints[t, i], ok, chains, rng, strength, width, scale=scale)
    return frames


def _finger_backwards(frames: np.ndarray, det: Detections, rng: np.random.Generator, strength: float) -> np.ndarray:
    from .kinematics import curl_direction, curl_voters, joint_bends, joint_valid

    spec = det.spec
    width = CHAIN_WIDTH[spec.source]
    curls = np.ones(det.present.shape[1])
    if spec.joint_limits:  # each instance's curl over the whole clip, as the metrics judge it
        ok = det.present[..., None] & np.isfinite(det.keypoints).all(-1) & (det.confidence > 0)
        bends = joint_bends(det.keypoints.astype(np.float64), spec.joint_limits, ok)
        voters = joint_valid(ok, spec.joint_limits) & np.asarray(curl_voters(spec))
        curls = curl_direction(bends, voters, time_dim=0)[0]
    for t in _span(rng, len(frames), max(3, len(frames) // 3)):
        for i, chain, pts, scale in _straightest_chains(det, t):
            k = _pivot(det, chain)
            joint = (chain[k - 1], chain[k], chain[k + 1])
            bend = float(joint_bends(pts[[k - 1, k, k + 1]][None], [(0, 1, 2)])[0, 0])
            lim = next((j for j in spec.joint_limits if (j.a, j.b, j.c) == joint), None)
            curl = float(curls[i])
            if lim is not None and lim.max_hyperextension is not None:
                target = -curl * (lim.max_hyperextension + 90.0 * strength)  # bent backwards
            elif lim is not None:
                target = curl * min(178.0, lim.max_bend + 12.0 * strength)  # folded past its range
            else:
                target = -np.sign(bend or 1.0) * 40.0 * strength
            matrix = _rotation(pts[k], target - bend)
            frames[t] = _rigid_move(frames[t], _densify(pts[k:], width * scale / 3), matrix, width * scale / 2)
    return frames


def _bone_stretch(frames: np.ndarray, det: Detections, rng: np.random.Generator, strength: float) -> np.ndarray:
    width = CHAIN_WIDTH[det.spec.source]
    factor = 1.0 + 0.6 * strength
    for t in _span(rng, len(frames), max(3, len(frames) // 6)):
        for _, chain, pts, scale in _straightest_chains(det, t):
            root = 1 if len(chain) > 3 else 0  # fingers stretch from the knuckle, not the wrist
            matrix = _stretch(pts[root], pts[-1] - pts[root], factor)
            frames[t] = _rigid_move(frames[t], _densify(pts[root:], width * scale / 3), matrix, width * scale / 2)
    return frames


def _flicker(frames: np.ndarray, det: Detections, rng: np.random.Generator, strength: float) -> np.ndarray:
    import cv2

    from .roi import roi_boxes, roi_mask_union

    mask = roi_mask_union(roi_boxes(det, 0.25, 0.0, 0.6), frames.shape[1:3], feather=0.2)[..., None]
    for t in range(len(frames)):
        if not mask[t].any():
            continue
        f = frames[t].astype(np.float32)
        gain = 1.0 + rng.uniform(-0.45, 0.45) * strength
        colour = 1.0 + rng.uniform(-0.2, 0.2, size=3) * strength
        bias = rng.uniform(-30.0, 30.0) * strength
        sigma = rng.uniform(0.0, 2.5 * strength)
        g = cv2.GaussianBlur(f, (0, 0), sigma) if sigma > 0.3 else f
        mean = g.mean((0, 1), keepdims=True)
        g = (g - mean) * gain * colour + mean + bias
        g += rng.normal(0.0, 6.0 * strength, size=g.shape).astype(np.float32)
        frames[t] = np.clip(f * (1 - mask[t]) + g * mask[t] + 0.5, 0, 255).astype(np.uint8)
    return frames


def _dropped_frames(frames: np.ndarray, det: Detections, rng: np.random.Generator, strength: float) -> np.ndarray:
    t_len = len(frames)
    n = max(1, int(round(t_len * 0.15 * strength)))
    candidates = np.arange(1, t_len) if t_len > 1 else np.arange(t_len)
    picked = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
    source = frames.copy()
    for j, t in enumerate(picked):
        if j % 2 == 0 and t > 0:
            frames[t] = source[t - 1]  # a stall: the previous frame again
        else:
            frames[t] = 0  # a dropped frame left black
    return frames


def _region_jitter(frames: np.ndarray, det: Detections, rng: np.random.Generator, strength: float) -> np.ndarray:
    width = CHAIN_WIDTH[det.spec.source]
    for t, i, scale in _seen_instances(det):
        chains = [p for p in (_chain_points(det, t, i, c) for c in _chains(det)) if p is not None]
        if not chains:
            continue
        src = np.concatenate([_densify(p, width * scale / 2) for p in chains])
        move = _rotation(src.mean(0), rng.normal(0.0, 4.0 * strength))
        move[:, 2] += rng.normal(0.0, 0.04 * strength * scale, size=2)
        dst = src @ move[:, :2].T + move[:, 2]
        frames[t] = _field_warp(frames[t], dst, src, 1.5 * width * scale)
    return frames


_FUNCS = {
    "finger_jitter": _finger_jitter,
    "finger_backwards": _finger_backwards,
    "bone_stretch": _bone_stretch,
    "flicker": _flicker,
    "dropped_frames": _dropped_frames,
    "region_jitter": _region_jitter,
}


# --- clips from photos -------------------------------------------------------------------------------------------


def photo_clip(image: np.ndarray, num_frames: int = 16, zoom: float = 1.12, pan: tuple[float, float] = (0.04, 0.02),
               seed: int = 0) -> np.ndarray:
    """A clip of ``num_frames`` from one RGB photo: a slow, eased pan and zoom-in (``uint8 [T, H, W, 3]``).

    ``zoom`` is the final magnification (1 = none); ``pan`` the final shift of the view as a fraction of the
    width and height; ``seed`` picks the pan's direction. Every frame is a resampling of the photo's pixels.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BGFSError(f"image must be RGB uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    if num_frames < 1 or zoom < 1.0:
        raise BGFSError(f"need num_frames >= 1 and zoom >= 1, got {num_frames} and {zoom}")
    h, w = image.shape[:2]
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=2)
    out = np.empty((num_frames,) + image.shape, np.uint8)
    for t in range(num_frames):
        s = 0.5 - 0.5 * math.cos(math.pi * t / max(num_frames - 1, 1))  # ease in and out: 0 -> 1
        z = 1.0 + (zoom - 1.0) * s
        cx = w / 2 + signs[0] * pan[0] * w * s
        cy = h / 2 + signs[1] * pan[1] * h * s
        # output pixel (x, y) shows photo point ((x - w/2) / z + cx, (y - h/2) / z + cy)
        m = np.array([[z, 0.0, w / 2 - z * cx], [0.0, z, h / 2 - z * cy]])
        out[t] = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out
