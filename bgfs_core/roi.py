"""Regions of interest: steady boxes around a region's keypoints, crops of frames to them, masks.

Coordinates (shared with ``heatmaps`` and ``detections``): continuous pixel coordinates, x to the right and y down,
where pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)`` and its centre is ``(j + 0.5, i + 0.5)``.
MediaPipe's normalised landmark times the frame size is such a coordinate, and so is torch's
``grid_sample(align_corners=False)``. A box ``(x0, y0, x1, y1)`` maps onto a crop of ``(h, w)`` pixels so that
its left edge ``x0`` is the crop's ``x = 0`` and ``x1`` is ``x = w``: ``x_crop = (x - x0) * w / (x1 - x0)``.
Boxes may reach outside the frame; crops are black there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .detections import Detections
from .errors import BGFSError
from .tracks import MAX_GAP, detection_cuts, pieces

if TYPE_CHECKING:
    import torch

MIN_SIDE = 16.0  # pixels: a box around one or two keypoints is grown to at least this


# --- boxes -------------------------------------------------------------------------------------------------------


def _raw_boxes(det: Detections, slot: int, margin: float, min_conf: float, aspect: float) -> np.ndarray:
    """Per frame (cx, cy, height) of the box around the confident keypoints, grown by ``margin``; NaN if none."""
    kp, conf = det.keypoints[:, slot], det.confidence[:, slot]
    ok = np.isfinite(kp).all(-1) & (conf >= min_conf) & det.present[:, slot, None]
    x, y = kp[..., 0], kp[..., 1]
    with np.errstate(invalid="ignore"):  # frames without keypoints give inf - inf; they become NaN below
        x0, x1 = np.where(ok, x, np.inf).min(-1), np.where(ok, x, -np.inf).max(-1)
        y0, y1 = np.where(ok, y, np.inf).min(-1), np.where(ok, y, -np.inf).max(-1)
        height = np.maximum(y1 - y0, (x1 - x0) / aspect) * (1.0 + 2.0 * margin)
        height = np.maximum(height, MIN_SIDE / min(aspect, 1.0))
        out = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, height], -1).astype(np.float64)
    out[~ok.any(-1)] = np.nan
    return out


def _bridge(series: np.ndarray, max_gap: int) -> np.ndarray:
    """Linearly fill interior NaN runs of at most ``max_gap`` frames; hold the ends ``max_gap // 2`` frames."""
    out = series.copy()
    known = np.flatnonzero(np.isfinite(series[:, 0]))
    if len(known) == 0:
        return out
    for a, b in zip(known[:-1], known[1:]):
        if 1 < b - a <= max_gap + 1:
            w = (np.arange(a + 1, b) - a)[:, None] / (b - a)
            out[a + 1 : b] = (1 - w) * series[a] + w * series[b]
    hold = max_gap // 2
    # Hold at the ends of every run of known frames (after bridging), not only of the whole video.
    known = np.isfinite(out[:, 0])
    starts = np.flatnonzero(known & ~np.r_[False, known[:-1]])
    ends = np.flatnonzero(known & ~np.r_[known[1:], False])
    for s in starts:
        lo = max(0, s - hold)
        fill = ~np.isfinite(out[lo:s, 0])
        out[lo:s][fill] = out[s]
    for e in ends:
        hi = min(len(out), e + 1 + hold)
        fill = ~np.isfinite(out[e + 1 : hi, 0])
        out[e + 1 : hi][fill] = out[e]
    return out


def _smooth(series: np.ndarray, factor: float) -> np.ndarray:
    """Zero-lag forward-backward exponential smoothing of each finite run of frames."""
    a = min(max(float(factor), 0.0), 0.99)  # 1 would freeze the box at the run's first frame
    if a == 0.0:
        return series
    out = series.copy()
    known = np.isfinite(series[:, 0])
    starts = np.flatnonzero(known & ~np.r_[False, known[:-1]])
    ends = np.flatnonzero(known & ~np.r_[known[1:], False])
    for s, e in zip(starts, ends):
        run = series[s : e + 1].copy()
        for t in range(1, len(run)):
            run[t] = a * run[t - 1] + (1 - a) * run[t]
        for t in range(len(run) - 2, -1, -1):
            run[t] = a * run[t + 1] + (1 - a) * run[t]
        out[s : e + 1] = run
    return out


def roi_boxes(
    det: Detections,
    margin: float,
    min_conf: float,
    smooth: float,
    instance: int | None = None,
    *,
    aspect: float = 1.0,
    max_gap: int = MAX_GAP,
) -> np.ndarray:
    """Steady ROI boxes ``(x0, y0, x1, y1)`` in frame pixels: ``[T, I, 4]``, or ``[T, 4]`` for one ``instance``.

    Each box is centred on the keypoints with confidence >= ``min_conf``, ``aspect`` (width / height; 1 = square)
    shaped, and grows by ``margin`` x its size on every side. Centre and size are smoothed over time
    (forward-backward exponential, ``smooth`` in [0, 1): 0 = raw, towards 1 = steadier); gaps of up to
    ``max_gap`` frames without a detection are bridged and the box is held ``max_gap // 2`` frames past the first
    and last detection. Neither reaches across a cut (`tracks.cuts`), where each side is held instead. Elsewhere the
    box is NaN. Boxes may extend beyond the frame.
    """
    if margin < 0 or not np.isfinite(margin):
        raise BGFSError(f"ROI margin must be >= 0, got {margin}")
    if not 0.0 <= smooth <= 1.0:
        raise BGFSError(f"ROI smooth must be between 0 and 1, got {smooth}")
    if aspect <= 0 or not np.isfinite(aspect):
        raise BGFSError(f"ROI aspect (width / height) must be > 0, got {aspect}")
    slots = range(det.keypoints.shape[1]) if instance is None else [instance]
    if instance is not None and not 0 <= instance < det.keypoints.shape[1]:
        raise BGFSError(
            f"instance {instance} does not exist: region {det.region!r} has {det.keypoints.shape[1]} instance slot(s)"
        )
    # a cut (`tracks.cuts`): the box must not glide from one shot's region to the next over the frames around it
    spans = pieces(detection_cuts(det, min_conf, max_gap))
    boxes = np.full((det.num_frames, len(slots), 4), np.nan, np.float32)
    for j, slot in enumerate(slots):
        raw = _raw_boxes(det, slot, margin, min_conf, aspect)
        cxcyh = np.concatenate([_smooth(_bridge(raw[span], max_gap), smooth) for span in spans])
        half_h = cxcyh[:, 2] / 2
        half_w = half_h * aspect
        boxes[:, j] = np.stack([cxcyh[:, 0] - half_w, cxcyh[:, 1] - half_h,
                                cxcyh[:, 0] + half_w, cxcyh[:, 1] + half_h], -1)  # fmt: skip
    return boxes[:, 0] if instance is not None else boxes


def box_valid(boxes: Any) -> Any:
    """Boolean ``[...]``: the box is finite and has positive width and height (numpy or torch)."""
    if isinstance(boxes, np.ndarray):
        finite = np.isfinite(boxes).all(-1)
    else:
        finite = boxes.isfinite().all(-1)
    return finite & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


# --- coordinates ------------------------------------------------------------------------------------------------


def _align(points: Any, boxes: Any) -> Any:
    """Give ``boxes`` a keypoint axis when ``points`` has one more dimension (``[..., K, 2]`` vs ``[..., 4]``)."""
    while boxes.ndim < points.ndim:
        boxes = boxes[..., None, :]
    return boxes


def frame_to_crop(points: Any, boxes: Any, out_hw: tuple[int, int]) -> Any:
    """Frame pixel ``(x, y)`` -> pixels of the crop of ``boxes`` resized to ``out_hw`` (numpy or torch)."""
    b = _align(points, boxes)
    h, w = out_hw
    x = (points[..., 0] - b[..., 0]) * (w / (b[..., 2] - b[..., 0]))
    y = (points[..., 1] - b[..., 1]) * (h / (b[..., 3] - b[..., 1]))
    return _stack_xy(points, x, y)


def crop_to_frame(points: Any, boxes: Any, out_hw: tuple[int, int]) -> Any:
    """Crop pixel ``(x, y)`` (crop of ``boxes`` at ``out_hw``) -> frame pixels (numpy or torch)."""
    b = _align(points, boxes)
    h, w = out_hw
    x = points[..., 0] * ((b[..., 2] - b[..., 0]) / w) + b[..., 0]
    y = points[..., 1] * ((b[..., 3] - b[..., 1]) / h) + b[..., 1]
    return _stack_xy(points, x, y)


def _stack_xy(like: Any, x: Any, y: Any) -> Any:
    if isinstance(like, np.ndarray):
        return np.stack([x, y], -1).astype(np.result_type(like.dtype, np.float32), copy=False)
    import torch

    return torch.stack([x, y], -1)


# --- crops ------------------------------------------------------------------------------------------------------


def _check_out_hw(out_hw: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in out_hw)
    except (TypeError, ValueError):
        raise BGFSError(f"crop size must be (height, width), got {out_hw!r}") from None
    if h < 1 or w < 1:
        raise BGFSError(f"crop size must be positive, got {out_hw!r}")
    return h, w


def crop_frames(frames: np.ndarray, boxes: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Crop ``uint8 [T, H, W, 3]`` frames to ``boxes [T, 4]`` resized to ``out_hw`` (bilinear; black outside).

    A frame whose box is NaN gives a black crop.
    """
    import cv2

    h, w = _check_out_hw(out_hw)
    frames = np.asarray(frames)
    boxes = np.asarray(boxes, np.float64)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise BGFSError(f"frames must be uint8 [T, H, W, C], got {frames.dtype} {list(frames.shape)}")
    if boxes.shape != (len(frames), 4):
        raise BGFSError(f"boxes must be [T, 4] with T = {len(frames)} frames, got {list(boxes.shape)}")
    out = np.zeros((len(frames), h, w, frames.shape[3]), np.uint8)
    valid = box_valid(boxes)
    for t in np.flatnonzero(valid):
        x0, y0, x1, y1 = boxes[t]
        sx, sy = (x1 - x0) / w, (y1 - y0) / h
        # cv2 puts pixel centres at integer coordinates: index = continuous coordinate - 0.5 (both sides).
        m = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]])
        crop = cv2.warpAffine(frames[t], m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
        out[t] = crop.reshape(h, w, -1)
    return out


def crop_torch(images: torch.Tensor, boxes: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Differentiable crop of ``[N, C, H, W]`` images to ``boxes [N, 4]`` (frame pixels) at ``out_hw``.

    Bilinear ``grid_sample`` (``align_corners=False``, zeros outside the frame), the torch twin of
    ``crop_frames``. Gradients flow to ``images`` (and to ``boxes``). A NaN box gives a zero crop.
    """
    import torch
    import torch.nn.functional as F

    h, w = _check_out_hw(out_hw)
    if images.ndim != 4:
        raise BGFSError(f"images must be [N, C, H, W], got {list(images.shape)}")
    n, _, height, width = images.shape
    if tuple(boxes.shape) != (n, 4):
        raise BGFSError(f"boxes must be [N, 4] with N = {n} images, got {list(boxes.shape)}")
    if n == 0:
        return images.new_zeros(0, images.shape[1], h, w)
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    u = (torch.arange(w, device=images.device, dtype=images.dtype) + 0.5) / w
    v = (torch.arange(h, device=images.device, dtype=images.dtype) + 0.5) / h
    xs = boxes[:, 0:1] + u[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # [N, w] frame x of each crop column
    ys = boxes[:, 1:2] + v[None] * (boxes[:, 3:4] - boxes[:, 1:2])  # [N, h]
    gx = (2.0 * xs / width - 1.0)[:, None, :].expand(n, h, w)
    gy = (2.0 * ys / height - 1.0)[:, :, None].expand(n, h, w)
    grid = torch.nan_to_num(torch.stack([gx, gy], -1), nan=-2.0)  # -2: outside the frame, so zeros
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --- masks ------------------------------------------------------------------------------------------------------


def roi_mask(boxes: np.ndarray, frame_hw: tuple[int, int], feather: float = 0.1) -> np.ndarray:
    """``float32 [T, H, W]``: 1 inside each frame's box, ramping linearly to 0 at its edge, 0 outside.

    The ramp is ``feather`` x the box's width (height) wide, inside the box; 0 gives a hard edge. NaN boxes give
    an all-zero mask.
    """
    if not 0.0 <= feather <= 0.5:
        raise BGFSError(f"mask feather must be between 0 and 0.5 (a fraction of the box size), got {feather}")
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BGFSError(f"boxes must be [T, 4], got {list(boxes.shape)}")
    h, w = (int(v) for v in frame_hw)
    valid = box_valid(boxes)
    b = np.where(valid[:, None], boxes, 0.0)
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5

    def ramp(coords: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        dist = np.minimum(coords[None] - lo[:, None], hi[:, None] - coords[None])  # to the nearer edge
        if feather == 0.0:
            return (dist >= 0).astype(np.float64)
        width = np.maximum(feather * (hi - lo), 1e-6)[:, None]
        return np.clip(dist / width, 0.0, 1.0)

    mx = ramp(xs, b[:, 0], b[:, 2]) * valid[:, None]
    my = ramp(ys, b[:, 1], b[:, 3])
    return (my[:, :, None] * mx[:, None, :]).astype(np.float32)


def roi_mask_union(boxes: np.ndarray, frame_hw: tuple[int, int], feather: float = 0.1) -> np.ndarray:
    """``roi_mask`` of every instance of ``boxes [T, I, 4]``, merged by maximum: ``float32 [T, H, W]``."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise BGFSError(f"boxes must be [T, I, 4], got {list(boxes.shape)}")
    out = np.zeros((boxes.shape[0], int(frame_hw[0]), int(frame_hw[1])), np.float32)
    for i in range(boxes.shape[1]):
        np.maximum(out, roi_mask(boxes[:, i], frame_hw, feather), out=out)
    return out
