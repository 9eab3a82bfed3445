"""ROI boxes from real MediaPipe detections on the hand video; crops (numpy vs torch), coordinates, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgfs_core.detections import Detections
from bgfs_core.errors import BGFSError
from bgfs_core.roi import (
    MAX_GAP,
    crop_frames,
    crop_to_frame,
    crop_torch,
    frame_to_crop,
    roi_boxes,
    roi_mask,
    roi_mask_union,
)


@pytest.fixture(scope="module")
def hand_det(hand_video_frames: np.ndarray) -> Detections:
    from bgfs_core.detection import Detector

    with Detector("hands", video_mode=True) as det:
        return det.detect_video(hand_video_frames, fps=10.0)


def _copy(det: Detections) -> Detections:
    return Detections.from_dict({k: np.copy(v) for k, v in det.to_dict().items()})


def _blank(det: Detections, frames: slice, slot: int = 0) -> Detections:
    det = _copy(det)
    det.keypoints[frames, slot] = np.nan
    det.confidence[frames, slot] = 0.0
    det.present[frames, slot] = False
    return det


def test_boxes_are_square_and_hold_every_confident_keypoint(hand_det: Detections) -> None:
    assert hand_det.present[:, 0].all(), "MediaPipe finds the left hand in all 43 frames"
    boxes = roi_boxes(hand_det, margin=0.25, min_conf=0.3, smooth=0.6)
    assert boxes.shape == (43, 2, 4) and boxes.dtype == np.float32
    b = boxes[:, 0]
    assert np.isfinite(b).all()
    np.testing.assert_allclose(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], rtol=1e-5)
    kp = hand_det.keypoints[:, 0]
    inside = (kp[..., 0] >= b[:, None, 0]) & (kp[..., 0] <= b[:, None, 2])
    inside &= (kp[..., 1] >= b[:, None, 1]) & (kp[..., 1] <= b[:, None, 3])
    assert inside.all(), "smoothing must not cut keypoints off the crop"
    single = roi_boxes(hand_det, 0.25, 0.3, 0.6, instance=0)
    np.testing.assert_array_equal(single, b)


def test_margin_grows_the_tight_box_on_every_side(hand_det: Detections) -> None:
    kp = hand_det.keypoints[5, 0]
    tight = max(np.ptp(kp[:, 0]), np.ptp(kp[:, 1]))
    for margin in (0.0, 0.25, 0.5):
        b = roi_boxes(hand_det, margin=margin, min_conf=0.3, smooth=0.0, instance=0)[5]
        assert b[2] - b[0] == pytest.approx(tight * (1 + 2 * margin), rel=1e-4)
        centre = (kp.min(0) + kp.max(0)) / 2
        np.testing.assert_allclose((b[:2] + b[2:]) / 2, centre, atol=1e-3)


def test_aspect_shapes_the_box(hand_det: Detections) -> None:
    b = roi_boxes(hand_det, 0.25, 0.3, 0.6, instance=0, aspect=0.75)
    np.testing.assert_allclose((b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1]), 0.75, rtol=1e-5)


def test_smoothing_removes_jitter(hand_det: Detections) -> None:
    raw = roi_boxes(hand_det, 0.25, 0.3, smooth=0.0, instance=0)
    steady = roi_boxes(hand_det, 0.25, 0.3, smooth=0.6, instance=0)

    def jitter(b: np.ndarray) -> float:  # mean size of the frame-to-frame acceleration of centre and side
        centre_side = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0]], -1)
        return float(np.abs(np.diff(centre_side, n=2, axis=0)).mean())

    assert jitter(steady) < 0.5 * jitter(raw)
    # zero lag: the smoothed centre follows the raw one on average
    assert abs(float(((steady - raw)[:, :2]).mean())) < 2.0


def test_short_gaps_are_bridged_and_long_absences_are_nan(hand_det: Detections) -> None:
    det = _blank(hand_det, slice(10, 15))  # 5 missing frames: bridged
    det = _blank(det, slice(20, 43))  # lost for good after frame 19
    b = roi_boxes(det, 0.25, 0.3, smooth=0.0, instance=0)
    assert np.isfinite(b[: 20 + MAX_GAP // 2]).all()
    # the bridge runs linearly from frame 9's box to frame 15's box
    np.testing.assert_allclose(b[12], b[9] + (b[15] - b[9]) * 3 / 6, rtol=1e-5)
    np.testing.assert_array_equal(b[20 : 20 + MAX_GAP // 2], np.repeat(b[19:20], MAX_GAP // 2, 0))
    assert np.isnan(b[20 + MAX_GAP // 2 :]).all()
    # a slot never seen is NaN throughout; a long gap is not bridged
    assert np.isnan(roi_boxes(_blank(hand_det, slice(0, 43)), 0.25, 0.3, 0.6, instance=0)).all()
    gap = roi_boxes(_blank(hand_det, slice(5, 30)), 0.25, 0.3, 0.6, instance=0)
    assert np.isnan(gap[5 + MAX_GAP // 2 : 30 - MAX_GAP // 2]).all() and np.isfinite(gap[30:]).all()


def test_low_confidence_keypoints_do_not_shape_the_box(hand_det: Detections) -> None:
    unsure = _copy(hand_det)
    unsure.keypoints[:, 0, 20] += 200.0  # pinky tip far away ...
    unsure.confidence[:, 0, 20] = 0.1  # ... but below min_conf
    dropped = _copy(hand_det)
    dropped.keypoints[:, 0, 20] = np.nan
    a = roi_boxes(unsure, 0.25, 0.3, 0.6, instance=0)
    np.testing.assert_allclose(a, roi_boxes(dropped, 0.25, 0.3, 0.6, instance=0), rtol=1e-5)
    assert (unsure.keypoints[:, 0, 20, 0] > a[:, 2]).all()  # the unsure point stays outside the crop
    # with a lower threshold the far point counts and the box grows
    assert (roi_boxes(unsure, 0.25, 0.05, 0.6, instance=0)[:, 2] > a[:, 2] + 100).all()


def test_crop_conventions_on_real_frames(hand_video_frames: np.ndarray) -> None:
    frames = hand_video_frames[:4]
    # A box of exactly out_hw pixels on the pixel grid is a plain slice.
    box = np.tile(np.array([[100, 60, 164, 124]], np.float32), (4, 1))
    np.testing.assert_array_equal(crop_frames(frames, box, (64, 64)), frames[:, 60:124, 100:164])
    # Twice the size: each crop pixel is the mean of a 2 x 2 block.
    big = np.tile(np.array([[100, 60, 228, 188]], np.float32), (4, 1))
    mean2 = frames[:, 60:188, 100:228].reshape(4, 64, 2, 64, 2, 3).astype(np.float32).mean((2, 4))
    assert np.abs(crop_frames(frames, big, (64, 64)).astype(np.float32) - mean2).max() <= 1.0
    # Outside the frame is black; a NaN box is an all-black crop.
    out = np.array([[-40, -40, 24, 24]] * 3 + [[np.nan] * 4], np.float32)
    c = crop_frames(frames, out, (64, 64))
    assert (c[:3, :39, :] == 0).all() and (c[:3, :, :39] == 0).all() and c[:3, 41:, 41:].any()
    np.testing.assert_array_equal(c[:3, 40:, 40:], frames[:3, :24, :24])
    assert (c[3] == 0).all()


def test_torch_crop_matches_numpy_crop_and_is_differentiable(
    hand_video_frames: np.ndarray, hand_det: Detections
) -> None:
    frames = hand_video_frames[:8]
    boxes = roi_boxes(hand_det, 0.25, 0.3, 0.6, instance=0)[:8]
    boxes[3] = [-30.5, 150.25, 70.0, 250.75]  # partly outside the 320 x 240 frame
    ref = crop_frames(frames, boxes, (96, 96)).astype(np.float32)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float().requires_grad_(True)
    crops = crop_torch(images, torch.from_numpy(boxes), (96, 96))
    assert crops.shape == (8, 3, 96, 96)
    diff = np.abs(crops.detach().permute(0, 2, 3, 1).numpy() - ref)
    # cv2 rounds sample positions to 1/32 px and weights to 1/1024: at most ~255/64 + 0.5 rounding on an edge
    assert diff.mean() < 0.5 and diff.max() < 4.5, (diff.mean(), diff.max())
    crops[:, :, 40:56, 40:56].sum().backward()
    grad = images.grad.abs().sum(1)
    assert grad.sum() > 0
    # only frame pixels under the crop's middle receive gradient
    ys, xs = np.nonzero(grad[0].numpy())
    b = boxes[0]
    side = b[2] - b[0]
    assert xs.min() >= b[0] + side * 40 / 96 - 1 and xs.max() <= b[0] + side * 56 / 96 + 1
    assert ys.min() >= b[1] + side * 40 / 96 - 1 and ys.max() <= b[1] + side * 56 / 96 + 1


def test_coordinate_transforms_round_trip_and_follow_pixels(
    hand_video_frames: np.ndarray, hand_det: Detections
) -> None:
    boxes = roi_boxes(hand_det, 0.25, 0.3, 0.6, instance=0)  # [T, 4]
    kp = hand_det.keypoints[:, 0]  # [T, K, 2]
    crop_pts = frame_to_crop(kp, boxes, (128, 128))
    assert crop_pts.shape == kp.shape and crop_pts.dtype == np.float32
    assert ((crop_pts > 0) & (crop_pts < 128)).all(), "keypoints lie inside their ROI crop"
    np.testing.assert_allclose(crop_to_frame(crop_pts, boxes, (128, 128)), kp, atol=1e-3)
    t_pts = frame_to_crop(torch.from_numpy(kp), torch.from_numpy(boxes), (128, 128))
    np.testing.assert_allclose(t_pts.numpy(), crop_pts, atol=1e-4)
    np.testing.assert_allclose(crop_to_frame(t_pts, torch.from_numpy(boxes), (128, 128)).numpy(), kp, atol=1e-3)
    # The same point seen in the frame and in the crop has the same colour (bilinear sample at the point).
    crops = crop_frames(hand_video_frames, boxes, (128, 128))

    def sample(img: np.ndarray, p: np.ndarray) -> np.ndarray:
        x, y = p - 0.5  # pixel centres at +0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        patch = img[y0 : y0 + 2, x0 : x0 + 2].astype(np.float32)
        return (patch[0, 0] * (1 - fx) * (1 - fy) + patch[0, 1] * fx * (1 - fy)
                + patch[1, 0] * (1 - fx) * fy + patch[1, 1] * fx * fy)  # fmt: skip

    errs = [np.abs(sample(hand_video_frames[t], kp[t, k]) - sample(crops[t], crop_pts[t, k])).max()
            for t in range(0, 43, 6) for k in range(21)]  # fmt: skip
    assert np.median(errs) < 6.0, np.median(errs)


def test_masks(hand_det: Detections) -> None:
    boxes = np.array([[10, 20, 110, 120], [np.nan] * 4, [-50, -50, 30, 30]], np.float32)
    m = roi_mask(boxes, (240, 320), feather=0.1)
    assert m.shape == (3, 240, 320) and m.dtype == np.float32
    assert m[0, 70, 60] == 1.0 and m[0, 5, 5] == 0.0 and m[0, 70, 115] == 0.0
    assert m[1].max() == 0.0
    row = m[0, 70, 10:40]
    assert 0 < row[0] < row[5] < 1.0 and row[15] == 1.0 and np.all(np.diff(row) >= 0)
    assert m[2, 0, 0] == 1.0 and m[2, 35, 35] == 0.0
    hard = roi_mask(boxes, (240, 320), feather=0.0)
    assert hard[0].sum() == 100 * 100
    both = roi_boxes(hand_det, 0.25, 0.3, 0.6)
    u = roi_mask_union(both, hand_det.frame_hw)
    np.testing.assert_array_equal(u, np.maximum(roi_mask(both[:, 0], hand_det.frame_hw),
                                                roi_mask(both[:, 1], hand_det.frame_hw)))  # fmt: skip


def test_bad_input_raises_clear_errors(hand_video_frames: np.ndarray, hand_det: Detections) -> None:
    with pytest.raises(BGFSError, match="boxes must be"):
        crop_frames(hand_video_frames[:2], np.zeros((3, 4), np.float32), (32, 32))
    with pytest.raises(BGFSError, match="frames must be uint8"):
        crop_frames(hand_video_frames[:2].astype(np.float32), np.zeros((2, 4)), (32, 32))
    with pytest.raises(BGFSError, match="boxes must be"):
        crop_torch(torch.zeros(2, 3, 8, 8), torch.zeros(3, 4), (4, 4))
    with pytest.raises(BGFSError, match="instance 5 does not exist"):
        roi_boxes(hand_det, 0.25, 0.3, 0.6, instance=5)
    with pytest.raises(BGFSError, match="margin"):
        roi_boxes(hand_det, -1.0, 0.3, 0.6)
    with pytest.raises(BGFSError, match="feather"):
        roi_mask(np.zeros((1, 4)), (8, 8), feather=2.0)
