"""Gaussian heatmaps and the differentiable soft-argmax, including a round trip through a real MediaPipe hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgfs_core.errors import BGFSError
from bgfs_core.heatmaps import render_heatmaps, render_heatmaps_torch, soft_argmax
from bgfs_core.roi import crop_to_frame, frame_to_crop, roi_boxes


def test_render_puts_a_unit_peak_at_the_point_and_nothing_for_invisible_points() -> None:
    pts = np.array([[[10.5, 20.5], [40.0, 5.0], [3.0, 3.0], [np.nan, np.nan]]], np.float32)  # [1, K=4, 2]
    vis = np.array([[1, 1, 0, 1]], np.float32)
    hm = render_heatmaps(pts, vis, (32, 48), sigma=2.0)
    assert hm.shape == (1, 4, 32, 48) and hm.dtype == np.float32
    # the point (10.5, 20.5) is the centre of pixel row 20, column 10
    assert hm[0, 0, 20, 10] == pytest.approx(1.0) and np.unravel_index(hm[0, 0].argmax(), (32, 48)) == (20, 10)
    assert hm[0, 0, 20, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-5)  # 2 px away = one sigma
    # (40, 5) lies on the corner of four pixels: they share the maximum
    corner = hm[0, 1, 4:6, 39:41]
    np.testing.assert_allclose(corner, corner[0, 0])
    assert corner[0, 0] == pytest.approx(np.exp(-0.5 / 8), rel=1e-5) and hm[0, 1].max() == corner.max()
    assert hm[0, 2].max() == 0.0 and hm[0, 3].max() == 0.0 and not np.isnan(hm).any()


def test_torch_renderer_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 64, (3, 5, 21, 2)).astype(np.float32)
    vis = (rng.uniform(size=(3, 5, 21)) > 0.3).astype(np.float32)
    ref = render_heatmaps(pts, vis, (64, 64), 2.0)
    out = render_heatmaps_torch(torch.from_numpy(pts), torch.from_numpy(vis), (64, 64), 2.0)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("temperature", [None, 0.05])
def test_round_trip_recovers_points(temperature: float | None) -> None:
    rng = np.random.default_rng(1)
    sigma = 2.0
    pts = rng.uniform(4 * sigma, 64 - 4 * sigma, (6, 21, 2)).astype(np.float32)  # away from the border
    hm = torch.from_numpy(render_heatmaps(pts, np.ones((6, 21)), (64, 64), sigma))
    got, conf = soft_argmax(hm, temperature)
    assert got.shape == (6, 21, 2) and conf.shape == (6, 21)
    err = got.numpy() - pts
    assert np.abs(err).max() < 0.25, np.abs(err).max()
    assert conf.min() > 0.9


def test_soft_argmax_gradient_moves_the_point_the_right_way() -> None:
    pts = np.array([[[20.0, 30.0]]], np.float32)
    hm = torch.from_numpy(render_heatmaps(pts, np.ones((1, 1)), (64, 64), 2.0)).requires_grad_(True)
    got, conf = soft_argmax(hm)
    got[0, 0, 0].backward()  # d x / d heatmap
    g = hm.grad[0, 0].numpy()
    assert np.abs(g).sum() > 0
    # more mass to the right of the point raises x, to the left lowers it
    assert g[30, 25] > 0 > g[30, 15]
    hm2 = hm.detach().clone().requires_grad_(True)
    _, conf2 = soft_argmax(hm2)
    conf2.sum().backward()
    assert hm2.grad.abs().sum() > 0, "confidence is differentiable too"


def test_confidence_is_low_for_empty_or_ambiguous_maps() -> None:
    empty = torch.zeros(1, 2, 16, 16)
    pts, conf = soft_argmax(empty)
    np.testing.assert_allclose(pts.numpy(), 8.0)
    assert conf.max() == 0.0
    two = render_heatmaps(np.array([[10.0, 32.0], [54.0, 32.0]], np.float32), np.ones(2), (64, 64), 2.0).sum(0)
    pts, conf = soft_argmax(torch.from_numpy(two)[None])
    assert pts[0, 0] == pytest.approx(32.0, abs=0.01) and conf[0] < 0.01  # between the two peaks, on nothing


def test_heatmap_peak_lands_where_mediapipe_put_the_keypoint(hand_video_frames: np.ndarray) -> None:
    """Frame keypoint -> ROI crop (256 px) -> heatmap (64 px) -> peak -> soft-argmax -> back to the frame."""
    from bgfs_core.detection import Detector

    frames = hand_video_frames[:6]
    with Detector("hands") as det:
        d = det.detect_video(frames, fps=10.0)
    assert d.present[:, 0].all()
    boxes = roi_boxes(d, 0.25, 0.3, 0.6, instance=0)
    kp = d.keypoints[:, 0]
    scale = 64 / 256
    hm_pts = frame_to_crop(kp, boxes, (256, 256)) * scale
    hm = render_heatmaps(hm_pts, d.confidence[:, 0] >= 0.3, (64, 64), 2.0)
    peak = np.stack(np.unravel_index(hm.reshape(6, 21, -1).argmax(-1), (64, 64)), -1)[..., ::-1] + 0.5
    assert np.abs(peak - hm_pts).max() <= 0.5 + 1e-4  # the brightest pixel is the one holding the point
    got, _ = soft_argmax(torch.from_numpy(hm))
    back = crop_to_frame(got.numpy() / scale, boxes, (256, 256))
    side = boxes[:, 2] - boxes[:, 0]
    err = np.linalg.norm(back - kp, axis=-1)
    assert (err < 0.25 * side[:, None] / 64).all(), err.max()  # < 0.25 heatmap px, in frame pixels


def test_bad_input() -> None:
    with pytest.raises(BGFSError, match="visibility"):
        render_heatmaps(np.zeros((3, 2)), np.zeros(4), (8, 8), 2.0)
    with pytest.raises(BGFSError, match="sigma"):
        render_heatmaps(np.zeros((3, 2)), np.zeros(3), (8, 8), 0.0)
    with pytest.raises(BGFSError, match="temperature"):
        soft_argmax(torch.zeros(1, 1, 8, 8), temperature=0.0)
