"""Shot changes: MediaPipe starts afresh at a cut instead of tracking the last shot's region into the next."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BODY_VIDEO, FACE_VIDEO, HAND_PHOTOS, load_rgb, video_frames
from mp_task_bundles import build_task_bundles

from bgfs_core import kinematics as K
from bgfs_core.detection import Detector, detect_video
from bgfs_core.shots import frame_look, shot_changed
from bgfs_core.tracks import detection_cuts


def changes(frames: np.ndarray) -> list[int]:
    looks = [frame_look(f) for f in frames]
    return [t for t in range(1, len(frames)) if shot_changed(looks[t - 1], looks[t])]


def test_shot_changes_are_the_films_cuts_and_none_in_the_other_footage(hand_video_frames):
    film = video_frames(FACE_VIDEO, 0, 270, (352, 256))
    assert changes(film) == [1, 98, 154, 200]  # frame 0 is black
    assert changes(hand_video_frames) == []
    assert changes(video_frames(BODY_VIDEO, 0, 100, (272, 480))) == []


def face_sizes(det) -> np.ndarray:
    valid = det.seen_keypoints(0.3)
    return K.frame_scale(np.where(valid[..., None], det.keypoints, np.nan), valid)[:, 0]


def test_mediapipe_finds_the_next_shots_face_at_once():
    frames = video_frames(FACE_VIDEO, 196, 206, (352, 256))  # frame 200: a cut to a close-up of another face
    det = detect_video(frames, "face", fps=24.0)
    size = face_sizes(det)
    # tracking the last shot's face, the keypoints took five frames to grow to the new one (0.66 of it at the cut)
    assert size[4] > 0.95 * size[-1] > 1.5 * size[3], np.round(size)
    # in the same place, but 66% larger: a cut all the same
    assert np.flatnonzero(detection_cuts(det, 0.3)).tolist() == [4]


@pytest.mark.parametrize("backend", ["solutions", "tasks"])
def test_a_hand_after_a_cut_is_found_where_it_is(hand_video_frames, tmp_path, backend):
    from PIL import Image

    h, w = hand_video_frames.shape[1:3]
    photo = np.asarray(Image.fromarray(load_rgb(HAND_PHOTOS[0])).resize((w, h), Image.BICUBIC))
    frames = np.concatenate([hand_video_frames[:12], np.repeat(photo[None], 4, 0)])
    model_dir = tmp_path if backend == "tasks" else None
    if model_dir is not None:
        build_task_bundles(model_dir)
    with Detector("hands", backend=backend, model_dir=model_dir, video_mode=False) as still:
        alone = still.detect(photo)
    with Detector("hands", backend=backend, model_dir=model_dir) as video:
        det = video.detect_video(frames, fps=10.0)  # one landmarker, timestamps on: the cut resets it, no clock
    slot = int(np.argmax(alone.present[0]))
    assert det.present[12, slot], "the photo's hand at the cut itself"
    gap = np.linalg.norm(det.keypoints[12:, slot] - alone.keypoints[0, slot], axis=-1)
    assert np.median(gap) < 3.0, np.round(np.median(gap, -1), 1)
