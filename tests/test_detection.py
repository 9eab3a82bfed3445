"""Detection: real MediaPipe (both backends) on the real photos and video in tests/data.

Ground truth from looking at the media: handSrc/handDst show a left hand (palm towards the camera, thumb up,
fingers to the right), halfcurl/nocurl a right hand from the back; in fingers-lq.gif the man raises his left
hand (on the image's right) in every frame, and an emoji of a hand appears in frames 28-35; face_swapped.jpg is a
frontal face filling about x 100-235, y 50-220; messi5.jpg shows a whole running player.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BODY_PHOTO, FACE_PHOTO, HAND_PHOTOS, load_rgb
from mp_task_bundles import build_task_bundles

from bgfs_core.config import load_config
from bgfs_core.detection import (
    Detector,
    RawInstance,
    _hand_slots,
    _remembered,
    detect_video,
    detector_from_config,
)
from bgfs_core.detections import Detections, keypoint_box
from bgfs_core.errors import BGFSError
from bgfs_core.mp_tasks import MODEL_URLS

HAND_SIDE = {"handSrc.jpg": 0, "handDst.jpg": 0, "halfcurl.jpg": 1, "nocurl.jpg": 1}  # 0 = left, 1 = right


def _check_consistent(det: Detections, hw: tuple[int, int]) -> None:
    """Invariants every result must keep: shapes, NaN/0 where absent, boxes = keypoint_box of what is present."""
    t, i, k = det.keypoints.shape[:3]
    assert det.frame_hw == hw
    assert det.confidence.shape == (t, i, k) and det.present.shape == (t, i) and det.boxes.shape == (t, i, 4)
    absent = ~det.present
    assert np.isnan(det.keypoints[absent]).all() and (det.confidence[absent] == 0).all()
    assert np.isnan(det.boxes[absent]).all() and (det.scores[absent] == 0).all()
    assert ((det.confidence >= 0) & (det.confidence <= 1)).all()
    min_conf = 0.3 if det.spec.source == "pose" else 0.0
    for ti, si in zip(*np.nonzero(det.present)):
        expected = keypoint_box(det.keypoints[ti, si], det.confidence[ti, si], min_conf)
        np.testing.assert_allclose(det.boxes[ti, si], expected, rtol=0, atol=1e-4)


def _inside(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return (xy[..., 0] >= 0) & (xy[..., 0] < hw[1]) & (xy[..., 1] >= 0) & (xy[..., 1] < hw[0])


# --- hands: photos and video ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hand_photo_results() -> dict[str, tuple[np.ndarray, Detections]]:
    with Detector("hands", video_mode=False) as det:
        return {p.name: (img, det.detect(img)) for p in HAND_PHOTOS for img in [load_rgb(p)]}


@pytest.fixture(scope="module")
def gif_detections(hand_video_frames) -> Detections:
    with Detector("hands", video_mode=True) as det:
        return det.detect_video(hand_video_frames, fps=10.0)


@pytest.mark.parametrize("name", [p.name for p in HAND_PHOTOS])
def test_hand_found_in_each_photo(hand_photo_results, name):
    img, det = hand_photo_results[name]
    hw = img.shape[:2]
    _check_consistent(det, hw)
    assert det.num_frames == 1 and det.present[0].sum() == 1, "exactly one hand in the photo"
    slot = int(np.argmax(det.present[0]))
    kp, conf = det.keypoints[0, slot], det.confidence[0, slot]
    assert _inside(kp, hw).all() and (conf > 0.5).all()
    np.testing.assert_allclose(conf, det.scores[0, slot])  # hands: every keypoint carries the handedness score
    x0, y0, x1, y1 = det.boxes[0, slot]
    assert (kp[:, 0] >= x0).all() and (kp[:, 0] <= x1).all() and (kp[:, 1] >= y0).all() and (kp[:, 1] <= y1).all()
    assert (x1 - x0) * (y1 - y0) > 0.05 * hw[0] * hw[1], "the hands fill a good part of these photos"
    if name in HAND_SIDE:
        assert slot == HAND_SIDE[name], "slot 0 is the person's left hand, 1 the right"


def test_hand_found_in_every_gif_frame_and_tracked(gif_detections, hand_video_frames):
    det = gif_detections
    hw = hand_video_frames.shape[1:3]
    _check_consistent(det, hw)
    assert det.num_frames == 43
    assert det.present[:, 0].all(), "the raised left hand is found in every frame, always in slot 0"
    assert (det.present[:, 1].sum()) <= 10  # only the emoji hand, in a few frames
    wrist = det.keypoints[:, 0, 0]
    assert (wrist[:, 0] > hw[1] / 2).all(), "the left hand of a person facing the camera is on the image's right"
    jumps = np.linalg.norm(np.diff(wrist, axis=0), axis=-1)
    assert np.median(jumps) < 0.05 * hw[1], "tracked keypoints move smoothly from frame to frame"


def test_video_mode_tracks_and_reset_gives_identical_results(hand_video_frames):
    frames = hand_video_frames[:8]
    with Detector("hands") as det:
        first = det.detect_video(frames, fps=10.0)
        det.detect(frames[0])  # leave tracking state and a later clock behind
        second = det.detect_video(frames, fps=10.0)  # a new video: starts from scratch
    np.testing.assert_array_equal(first.present, second.present)
    np.testing.assert_allclose(first.keypoints, second.keypoints)


def test_mirrored_swaps_hand_slots(hand_photo_results):
    img, plain = hand_photo_results["handSrc.jpg"]
    with Detector("hands", video_mode=False, mirrored=True) as det:
        mirrored = det.detect(img)
    np.testing.assert_array_equal(mirrored.present, plain.present[:, ::-1])
    np.testing.assert_allclose(mirrored.keypoints[:, 1], plain.keypoints[:, 0])


def _raw_hand(x: float, label: str, score: float) -> RawInstance:
    xy = np.stack([np.full(21, x), np.linspace(0.3, 0.6, 21)], -1).astype(np.float32)
    return RawInstance(xy, None, label, score)


def test_two_hands_with_one_label_keep_their_slots():
    hand, sticker = _raw_hand(0.70, "left", 1.0), _raw_hand(0.86, "left", 0.72)  # the sticker's label flickered
    last = np.array([[0.71, 0.45], [0.87, 0.45]], np.float32)  # left hand, right hand one frame ago
    assert _hand_slots([hand, sticker], last) == [0, 1]
    assert _hand_slots([sticker, hand], last) == [1, 0]
    # one hand found twice (boxes nearly the same): the surer one stays in the slot the hand had
    twice = [_raw_hand(0.72, "left", 0.97), _raw_hand(0.71, "left", 0.99)]
    assert _hand_slots(twice, np.array([[0.66, 0.45], [0.86, 0.45]], np.float32)) == [1, 0]
    # only one slot seen before: the surer hand takes it if it is nearer, else the other one
    assert _hand_slots([hand, sticker], np.array([[np.nan, np.nan], [0.69, 0.45]], np.float32)) == [1, 0]
    assert _hand_slots([hand, sticker], np.array([[np.nan, np.nan], [0.87, 0.45]], np.float32)) == [0, 1]
    assert _hand_slots([sticker, hand], np.array([[0.87, 0.45], [np.nan, np.nan]], np.float32)) == [0, 1]
    # no history (the first frame, or still images): a person facing the camera, by x
    assert _hand_slots([hand, sticker]) == [1, 0]
    assert _hand_slots([hand, sticker], np.full((2, 2), np.nan, np.float32)) == [1, 0]
    assert _hand_slots([_raw_hand(0.3, "left", 0.9), _raw_hand(0.7, "right", 0.9)], last) == [0, 1]  # labels rule
    # what the next frame's tie-break remembers: of a pair with one label only the surer hand, since the other is
    # often the same hand found twice (remembered in the other slot, it would pull the hand there next time)
    assert _remembered([hand, sticker]) == [0] and _remembered(twice) == [1]
    assert _remembered([_raw_hand(0.3, "left", 0.9), _raw_hand(0.7, "right", 0.8)]) == [0, 1]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_flickering_label_on_the_emoji_swaps_no_slots(hand_video_frames, gif_detections, seed):
    """Measured on the bundled clip's corrupted copies: on seed 1 the emoji's label flickers for a frame (frames
    34 / 36), on seed 2 on several; splitting the two "left" hands by x put the real hand in the right slot there,
    which the judge counted as swaps (0.048 and 0.143, about 8 and 16 points of anatomy score)."""
    from bgfs_core.corruptions import corrupt_all
    from bgfs_core.metrics import score_detections
    from bgfs_core.tracks import drop_duplicates

    corrupted = corrupt_all(hand_video_frames, gif_detections, ["finger_jitter", "region_jitter"], seed=seed)
    det = drop_duplicates(detect_video(corrupted, "hands", fps=10.0))  # the hand found twice is one hand
    assert det.present[:, 0].all(), "the real hand keeps slot 0 in every frame"
    emoji = det.present[:, 1]
    assert emoji.sum() >= 8, "the emoji is found, in slot 1"
    assert (det.keypoints[emoji, 1, 0, 0] > det.keypoints[emoji, 0, 0, 0] + 10).all(), "on the hand's right"
    assert score_detections(det).parts["swaps"].raw == 0.0


def test_iterable_of_unknown_length_and_blank_frames():
    blank = np.zeros((96, 128, 3), np.uint8)
    with Detector("hands") as det:
        det_out = det.detect_video((blank for _ in range(70)), fps=25.0)  # longer than the first buffer
    assert det_out.num_frames == 70 and not det_out.present.any()
    _check_consistent(det_out, (96, 128))
    assert det_out.detection_rate == 0.0


def test_convenience_detect_video(hand_video_frames, gif_detections):
    out = detect_video(hand_video_frames[:5], "hands", fps=10.0, video_mode=True)
    np.testing.assert_array_equal(out.present, gif_detections.present[:5])
    np.testing.assert_allclose(out.keypoints, gif_detections.keypoints[:5], atol=1e-3)


# --- face and pose ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_result() -> tuple[np.ndarray, Detections]:
    img = load_rgb(FACE_PHOTO)
    with Detector("face", video_mode=False) as det:
        return img, det.detect(img)


def test_face_keypoints_inside_the_face(face_result):
    img, det = face_result
    _check_consistent(det, img.shape[:2])
    assert det.present.all() and det.keypoints.shape == (1, 1, 28, 2)
    kp = det.keypoints[0, 0]
    assert ((kp[:, 0] > 95) & (kp[:, 0] < 240) & (kp[:, 1] > 50) & (kp[:, 1] < 225)).all()
    assert (det.confidence == 1.0).all()
    names = {n: i for i, n in enumerate(det.spec.keypoint_names)}
    y = kp[:, 1]
    assert y[names["forehead"]] < y[names["nose_bridge"]] < y[names["nose_tip"]] < y[names["upper_lip"]]
    assert y[names["upper_lip"]] < y[names["lower_lip"]] < y[names["chin"]]
    # The person's right eye is on the image's left (a non-mirrored photo).
    assert kp[names["right_eye_outer"], 0] < kp[names["right_eye_inner"], 0] < kp[names["left_eye_inner"], 0]
    assert kp[names["left_eye_inner"], 0] < kp[names["left_eye_outer"], 0]


def test_mirrored_face_swaps_left_and_right_keypoints(face_result):
    img, plain = face_result
    with Detector("face", video_mode=False, mirrored=True) as det:
        mirrored = det.detect(img)
    perm = list(plain.spec.flip_permutation())
    np.testing.assert_allclose(mirrored.keypoints[0, 0], plain.keypoints[0, 0][perm])


@pytest.fixture(scope="module")
def body_results() -> tuple[np.ndarray, dict[str, Detections]]:
    img = load_rgb(BODY_PHOTO)
    out = {}
    for region in ("full_body", "upper_body", "feet"):
        with Detector(region, video_mode=False) as det:
            out[region] = det.detect(img)
    return img, out


def test_pose_in_messi_photo(body_results):
    img, res = body_results
    full, upper = res["full_body"], res["upper_body"]
    for det in res.values():
        _check_consistent(det, img.shape[:2])
    assert full.present.all() and upper.present.all()
    kp = full.keypoints[0, 0]
    assert _inside(kp, img.shape[:2]).all()
    assert full.confidence[0, 0, :13].min() > 0.9, "the head and shoulders are clearly visible"
    shoulders_y, hips_y, ankles_y = kp[[11, 12], 1].mean(), kp[[23, 24], 1].mean(), kp[[27, 28], 1].mean()
    assert kp[0, 1] < shoulders_y < hips_y < ankles_y
    # upper_body is the first 25 pose landmarks of the same model.
    np.testing.assert_allclose(upper.keypoints[0, 0], kp[:25], atol=0.5)
    assert 0.5 < full.scores[0, 0] <= 1.0


def test_feet_give_two_slots_from_the_legs(body_results):
    _, res = body_results
    feet, full = res["feet"], res["full_body"]
    assert feet.keypoints.shape == (1, 2, 4, 2) and feet.present.all()
    np.testing.assert_allclose(feet.keypoints[0, 0], full.keypoints[0, 0, [25, 27, 29, 31]], atol=0.5)
    np.testing.assert_allclose(feet.keypoints[0, 1], full.keypoints[0, 0, [26, 28, 30, 32]], atol=0.5)
    np.testing.assert_allclose(feet.confidence[0, 0], full.confidence[0, 0, [25, 27, 29, 31]], atol=1e-3)
    assert not np.allclose(feet.keypoints[0, 0], feet.keypoints[0, 1])


def test_blank_frame_detects_nothing():
    blank = np.full((120, 160, 3), 255, np.uint8)
    for region in ("full_body", "face"):
        with Detector(region, video_mode=False) as det:
            out = det.detect(blank)
        assert not out.present.any() and np.isnan(out.keypoints).all() and np.isnan(out.boxes).all()
        assert out.frame_hw == (120, 160)


def test_seen_keypoints_are_present_finite_and_sure_enough(gif_detections):
    det = gif_detections
    assert det.seen_keypoints(0.3).any()
    conf = det.confidence.copy()
    conf[0, :, 3] = 0.29  # just under the threshold
    kp = det.keypoints.copy()
    kp[1, :, 4] = np.nan
    present = det.present.copy()
    present[2] = False
    edited = Detections(det.region, kp, conf, present, det.boxes, det.scores, det.frame_hw)
    seen = edited.seen_keypoints(0.3)
    assert not seen[0, :, 3].any() and not seen[1, :, 4].any() and not seen[2].any()
    np.testing.assert_array_equal(seen[3:], det.seen_keypoints(0.3)[3:])  # frames left alone are unchanged
    assert edited.seen_keypoints(0.29)[0, det.present[0], 3].all()  # the threshold is inclusive


# --- bad input ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_hands() -> Detector:
    with Detector("hands", video_mode=False) as det:
        yield det


@pytest.mark.parametrize(
    "frame",
    [np.zeros((32, 32, 3), np.float32), np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8),
     np.zeros((1, 32, 32, 3), np.uint8), [[0, 0, 0]]],
)  # fmt: skip
def test_bad_frames_say_what_shape_is_expected(image_hands, frame):
    with pytest.raises(BGFSError, match=r"RGB uint8 array of shape \[H, W, 3\]"):
        image_hands.detect(frame)


def test_bad_videos(image_hands):
    with pytest.raises(BGFSError, match=r"\[T, H, W, 3\]"):
        image_hands.detect_video(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(BGFSError, match="same size|one size"):
        image_hands.detect_video([np.zeros((32, 32, 3), np.uint8), np.zeros((40, 32, 3), np.uint8)])
    with Detector("hands") as video, pytest.raises(BGFSError, match="one size"):  # video mode: before shot checks
        video.detect_video(iter([np.zeros((32, 32, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)]))
    with pytest.raises(BGFSError, match="empty"):
        image_hands.detect_video([])
    with pytest.raises(BGFSError, match="fps"):
        image_hands.detect_video(np.zeros((1, 32, 32, 3), np.uint8), fps=0)
    for fps in (float("nan"), float("inf")):
        with pytest.raises(BGFSError, match="fps must be a number > 0"):
            image_hands.detect_video(np.zeros((1, 32, 32, 3), np.uint8), fps=fps)
    # above 1000 fps milliseconds repeat: the clock still moves on (it raised "timestamps must increase")
    with Detector("hands") as video:
        assert video.detect_video(np.zeros((3, 32, 32, 3), np.uint8), fps=1500.0).num_frames == 3


def test_bad_settings():
    with pytest.raises(BGFSError, match="unknown region 'hand'.*hands"):
        Detector("hand")
    with pytest.raises(BGFSError, match="backend.*solutions, tasks"):
        Detector("hands", backend="legacy")
    with pytest.raises(BGFSError, match="min_detection_confidence"):
        Detector("hands", min_detection_confidence=1.5)


def test_timestamps_must_increase_in_video_mode():
    frame = np.zeros((64, 64, 3), np.uint8)
    with Detector("hands", video_mode=True) as det:
        det.detect(frame, timestamp_ms=100)
        with pytest.raises(BGFSError, match="timestamps must increase.*reset"):
            det.detect(frame, timestamp_ms=100)
        det.reset()
        assert not det.detect(frame, timestamp_ms=0).present.any()


def test_detector_from_config():
    cfg = load_config(None, {"roi.region": "face", "detect.min_detection_confidence": 0.5, "detect.mirrored": True})
    with detector_from_config(cfg, video_mode=False) as det:
        assert det.region.name == "face" and det.backend_name == "solutions"
        assert det.min_detection_confidence == 0.5 and det.mirrored and not det.video_mode


# --- the Tasks API backend, on .task bundles assembled from the models inside the mediapipe package -------------
@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mediapipe_tasks")
    build_task_bundles(out)
    return out


def test_tasks_backend_hands_agree_with_solutions(task_dir, hand_photo_results):
    with Detector("hands", backend="tasks", model_dir=task_dir, video_mode=False) as det:
        for name, (img, ref) in hand_photo_results.items():
            out = det.detect(img)
            _check_consistent(out, img.shape[:2])
            assert out.present[0].sum() == 1, name
            slot = int(np.argmax(out.present[0]))
            if name in HAND_SIDE:
                assert slot == HAND_SIDE[name], f"{name}: tasks handedness maps to the same slot"
            a, b = out.boxes[0, slot], ref.boxes[0, int(np.argmax(ref.present[0]))]
            inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
            union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
            assert inter / union > 0.6, f"{name}: both backends box the same hand"


def test_tasks_backend_video_mode_finds_hand_in_every_frame(task_dir, hand_video_frames, gif_detections):
    with Detector("hands", backend="tasks", model_dir=task_dir, video_mode=True) as det:
        out = det.detect_video(hand_video_frames, fps=10.0)
    assert out.present[:, 0].all()
    diff = np.linalg.norm(out.keypoints[:, 0] - gif_detections.keypoints[:, 0], axis=-1)
    assert np.median(diff) < 3.0, "same models, same tracking: the same keypoints as the solutions backend"


def test_tasks_backend_pose_feet(task_dir, body_results):
    img, res = body_results
    with Detector("feet", backend="tasks", model_dir=task_dir, video_mode=False) as det:
        out = det.detect(img)
    assert out.present.all()
    np.testing.assert_allclose(out.keypoints, res["feet"].keypoints, atol=5.0)


def test_tasks_backend_missing_model_names_file_folder_and_url(tmp_path):
    with pytest.raises(BGFSError) as err:
        Detector("face", backend="tasks", model_dir=tmp_path)
    msg = str(err.value)
    assert "face_landmarker.task" in msg and str(tmp_path) in msg and MODEL_URLS["face_landmarker.task"] in msg
    with pytest.raises(BGFSError, match="pose_landmarker_full.task.*pose_landmarker_heavy.task"):
        Detector("feet", backend="tasks", model_dir=tmp_path)
    with pytest.raises(BGFSError, match="model folder"):
        Detector("hands", backend="tasks", model_dir=None)
    (tmp_path / "hand_landmarker.task").write_bytes(b"not a model")
    with pytest.raises(BGFSError, match="cannot be loaded"):
        Detector("hands", backend="tasks", model_dir=tmp_path)
