"""Keypoint heatmaps: Gaussians rendered at keypoints, and a differentiable soft-argmax back to keypoints.

Coordinates are continuous pixels, as in ``bgfs_core.roi``: heatmap pixel ``(row i, column j)`` covers
``[j, j + 1) x [i, i + 1)`` and its centre is ``(j + 0.5, i + 0.5)``. So a point in crop pixels maps to heatmap
pixels by multiplying with ``heatmap_size / crop_size`` (no half-pixel shift), and back by dividing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import BGFSError

if TYPE_CHECKING:
    import torch


def _check(points_shape: tuple[int, ...], visible_shape: tuple[int, ...], hw: tuple[int, int], sigma: float) -> None:
    if len(points_shape) < 2 or points_shape[-1] != 2:
        raise BGFSError(f"keypoints must be [..., K, 2], got {list(points_shape)}")
    if tuple(visible_shape) != tuple(points_shape[:-1]):
        raise BGFSError(f"visibility must be [..., K] = {list(points_shape[:-1])}, got {list(visible_shape)}")
    if len(hw) != 2 or min(hw) < 1:
        raise BGFSError(f"heatmap size must be (height, width) > 0, got {hw!r}")
    if not sigma > 0:
        raise BGFSError(f"heatmap sigma must be > 0, got {sigma}")


def render_heatmaps(points: np.ndarray, visible: np.ndarray, hw: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian heatmaps ``float32 [..., K, h, w]`` for keypoints ``[..., K, 2]`` in heatmap pixels.

    Each map is ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance from a pixel centre to the point (peak 1 at
    the point); keypoints that are not visible, or NaN, get an all-zero map.
    """
    points = np.asarray(points, np.float32)
    visible = np.asarray(visible)
    _check(points.shape, visible.shape, tuple(hw), sigma)
    h, w = int(hw[0]), int(hw[1])
    on = (visible > 0) & np.isfinite(points).all(-1)
    pts = np.where(on[..., None], points, 0.0)
    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    gx = np.exp(-((xs - pts[..., 0:1]) ** 2) / (2 * sigma**2))  # [..., K, w]
    gy = np.exp(-((ys - pts[..., 1:2]) ** 2) / (2 * sigma**2))  # [..., K, h]
    gy = gy * on[..., None]
    return (gy[..., :, None] * gx[..., None, :]).astype(np.float32)  # separable: outer product


def render_heatmaps_torch(
    points: torch.Tensor, visible: torch.Tensor, hw: tuple[int, int], sigma: float
) -> torch.Tensor:
    """``render_heatmaps`` in torch (same device and dtype as ``points``; differentiable w.r.t. ``points``)."""
    import torch

    _check(tuple(points.shape), tuple(visible.shape), tuple(hw), sigma)
    h, w = int(hw[0]), int(hw[1])
    on = (visible > 0) & points.isfinite().all(-1)
    pts = torch.where(on[..., None], points, torch.zeros_like(points))
    xs = torch.arange(w, device=points.device, dtype=points.dtype) + 0.5
    ys = torch.arange(h, device=points.device, dtype=points.dtype) + 0.5
    gx = torch.exp(-((xs - pts[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((ys - pts[..., 1:2]) ** 2) / (2 * sigma**2)) * on[..., None].to(points.dtype)
    return gy[..., :, None] * gx[..., None, :]


def soft_argmax(heatmaps: torch.Tensor, temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable keypoints from heatmaps ``[..., K, h, w]``: (points ``[..., K, 2]`` in heatmap pixels,
    confidence ``[..., K]``).

    Weights: with ``temperature=None`` the map itself, clamped at 0 and normalised to sum 1 (integral regression:
    the expected position under the map's mass; exact for a Gaussian away from the border); with a temperature,
    ``softmax(map / temperature)`` over the pixels. For maps with peak ~1 the temperature must be small (about
    0.05 on 64 x 64): at 0.1 and above the ``exp(0)`` background of thousands of pixels outweighs the peak and
    pulls the point to the centre. The point is the weighted mean of the pixel centres; an all-zero map gives
    its centre.

    Confidence: the map's own height at that point (bilinear), clamped to [0, 1]. A clean target Gaussian gives
    ~1, an empty map 0, and a map with two rival peaks a low value, since the mean falls between them. It is
    differentiable w.r.t. the map and the point.
    """
    import torch
    import torch.nn.functional as F

    if heatmaps.ndim < 3:
        raise BGFSError(f"heatmaps must be [..., K, h, w], got {list(heatmaps.shape)}")
    if temperature is not None and not temperature > 0:
        raise BGFSError(f"soft-argmax temperature must be > 0 (or None), got {temperature}")
    *lead, h, w = heatmaps.shape
    flat = heatmaps.reshape(-1, h * w)
    if temperature is None:
        mass = flat.clamp_min(0)
        total = mass.sum(-1, keepdim=True)
        uniform = torch.full_like(mass, 1.0 / (h * w))
        weights = torch.where(total > 1e-12, mass / total.clamp_min(1e-12), uniform)
    else:
        weights = torch.softmax(flat / temperature, -1)
    weights = weights.reshape(-1, h, w)
    xs = torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5
    ys = torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5
    x = (weights.sum(1) * xs).sum(-1)
    y = (weights.sum(2) * ys).sum(-1)
    points = torch.stack([x, y], -1)  # [N, 2]
    # Height of the map at the point: grid_sample with align_corners=False uses the same pixel-centre convention.
    grid = torch.stack([2 * x / w - 1, 2 * y / h - 1], -1).reshape(-1, 1, 1, 2)
    height = F.grid_sample(heatmaps.reshape(-1, 1, h, w), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)  # fmt: skip
    confidence = height.reshape(-1).clamp(0.0, 1.0)
    return points.reshape(*lead, 2), confidence.reshape(*lead)
