"""How much a video changed against its source: PSNR and SSIM inside and outside an ROI mask, and ROI flicker.

Masks are ``float32 [T, H, W]`` weights in [0, 1] (``roi.roi_mask``): "inside" weighs each pixel by the mask,
"outside" by ``1 - mask``. Identical inputs give exactly PSNR = inf and SSIM = 1.0. In JSON (``to_dict``) an
infinite PSNR is written as the string ``"inf"`` and a metric with no pixels to measure (an empty mask) as null.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import BGFSError

DATA_RANGE = 255.0
_C1 = (0.01 * DATA_RANGE) ** 2  # the usual SSIM constants (Wang et al. 2004)
_C2 = (0.03 * DATA_RANGE) ** 2


@dataclass
class Fidelity:
    psnr_inside: float  # dB; inf when identical there, NaN when the mask is empty
    psnr_outside: float
    ssim_inside: float  # in [-1, 1], 1 = identical
    ssim_outside: float
    flicker: float  # mean |frame t - frame t-1| inside the mask, video (0-255 units)
    flicker_ref: float  # the same for the reference
    flicker_ratio: float  # flicker / flicker_ref: 1 = as steady as the source, > 1 flickers more
    mask_fraction: float  # mean of the mask: the share of pixels inside the ROI

    def to_dict(self) -> dict[str, Any]:
        from .metrics import json_safe

        return json_safe(asdict(self))

    def describe(self) -> str:
        if not self.mask_fraction > 0:  # nothing detected: no inside to measure, "outside" is the whole frame
            return f"no ROI: PSNR {_db(self.psnr_outside)}, SSIM {_ssim(self.ssim_outside)} over the whole frame"
        flicker = "n/a" if math.isnan(self.flicker_ratio) else f"x{self.flicker_ratio:.2f} of the source"
        return (f"{self.describe_psnr()}, SSIM {_ssim(self.ssim_inside)}/{_ssim(self.ssim_outside)}, "
                f"ROI flicker {flicker}")

    def describe_psnr(self) -> str:
        return f"PSNR inside/outside ROI {_db(self.psnr_inside)}/{_db(self.psnr_outside)}"


def _db(v: float) -> str:
    return "inf dB" if v == math.inf else "n/a" if math.isnan(v) else f"{v:.1f} dB"


def _ssim(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"  # NaN: the ROI covers every pixel, or none


def _check_pair(video: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    for what, arr in (("video", video), ("reference", ref)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[-1] != 3:
            got = list(arr.shape) if isinstance(arr, np.ndarray) else type(arr).__name__
            raise BGFSError(f"the {what} must be RGB frames [T, H, W, 3], got {got}")
    if len(video) == 0:
        raise BGFSError("no frames to compare: give videos with at least one frame")
    if video.shape != ref.shape:
        raise BGFSError(f"the video ({len(video)} frames of {video.shape[2]}x{video.shape[1]}) and the reference "
                        f"({len(ref)} frames of {ref.shape[2]}x{ref.shape[1]}) differ in length or size: compare "
                        "videos with the same number of frames and size")  # fmt: skip
    if mask is None:
        return np.zeros(video.shape[:3], np.float32)
    mask = np.asarray(mask, np.float32)
    if mask.shape != video.shape[:3]:
        raise BGFSError(f"the ROI mask is {list(mask.shape)} but the frames are {list(video.shape[:3])} [T, H, W]")
    return mask


def _psnr(sq_err_sum: float, weight_sum: float) -> float:
    if weight_sum <= 0:
        return math.nan
    mse = sq_err_sum / weight_sum
    return math.inf if mse == 0 else 10.0 * math.log10(DATA_RANGE**2 / mse)


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM per pixel of two ``[H, W, 3]`` frames (Gaussian window, sigma 1.5), averaged over channels."""
    import cv2

    a = a.astype(np.float32)  # float32 halves the time; identical inputs never get here (exactly 1.0 instead)
    b = b.astype(np.float32)

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    return (num / den).mean(-1)


def compare(video: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> Fidelity:
    """PSNR, SSIM (inside / outside ``mask``) and ROI flicker of ``video`` against ``ref`` (same shape)."""
    mask = _check_pair(video, ref, mask)
    sq = {"in": 0.0, "out": 0.0}
    ssim = {"in": 0.0, "out": 0.0}
    weight = {"in": 0.0, "out": 0.0}
    for t in range(len(video)):
        m = mask[t]
        same = np.array_equal(video[t], ref[t])
        if not same:
            diff = video[t].astype(np.int16) - ref[t].astype(np.int16)
            err = np.square(diff, dtype=np.float32).mean(-1)
            s_map = _ssim_map(video[t], ref[t])
        for key, w in (("in", m), ("out", 1.0 - m)):
            ws = float(w.sum(dtype=np.float64))
            weight[key] += ws
            sq[key] += 0.0 if same else float((err * w).sum(dtype=np.float64))
            ssim[key] += ws if same else float((s_map * w).sum(dtype=np.float64))
    flicker, flicker_ref = roi_flicker(video, mask), roi_flicker(ref, mask)
    if math.isnan(flicker) or math.isnan(flicker_ref):
        ratio = math.nan
    elif flicker_ref > 0:
        ratio = flicker / flicker_ref
    else:
        ratio = 1.0 if flicker == 0 else math.inf
    return Fidelity(
        psnr_inside=_psnr(sq["in"], weight["in"]), psnr_outside=_psnr(sq["out"], weight["out"]),
        ssim_inside=ssim["in"] / weight["in"] if weight["in"] > 0 else math.nan,
        ssim_outside=ssim["out"] / weight["out"] if weight["out"] > 0 else math.nan,
        flicker=flicker, flicker_ref=flicker_ref, flicker_ratio=ratio, mask_fraction=float(mask.mean()),
    )  # fmt: skip


def roi_flicker(frames: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute frame-to-frame change inside the mask (weighted by the mask in both frames).

    NaN when there is nothing to measure: one frame, or a mask that is empty in every pair of frames.
    """
    if len(frames) < 2:
        return math.nan
    total = weight = 0.0
    for t in range(1, len(frames)):
        w = mask[t] * mask[t - 1]
        ws = float(w.sum(dtype=np.float64))
        if ws == 0:
            continue
        diff = np.abs(frames[t].astype(np.int16) - frames[t - 1].astype(np.int16)).astype(np.float32).mean(-1)
        total += float((diff * w).sum(dtype=np.float64))
        weight += ws
    return total / weight if weight > 0 else math.nan


def psnr(video: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) weighted by ``mask`` (all pixels when None): inf when identical."""
    _check_pair(video, ref, mask)
    total = weight = 0.0
    for t in range(len(video)):  # frame by frame: a long video in float64 at once would take GBs
        err = ((video[t].astype(np.float64) - ref[t].astype(np.float64)) ** 2).mean(-1)
        w = np.ones(err.shape) if mask is None else np.asarray(mask[t], np.float64)
        total += float((err * w).sum())
        weight += float(w.sum())
    return _psnr(total, weight)


def ssim(video: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM weighted by ``mask`` (all pixels when None): 1.0 when identical."""
    _check_pair(video, ref, mask)
    total = weight = 0.0
    for t in range(len(video)):
        w = np.ones(video.shape[1:3]) if mask is None else np.asarray(mask[t], np.float64)
        s_map = 1.0 if np.array_equal(video[t], ref[t]) else _ssim_map(video[t], ref[t])
        total += float((s_map * w).sum())
        weight += float(w.sum())
    return total / weight if weight > 0 else math.nan
