"""Cuts: where a region moves to another place and stays (another shot), nothing over time reaches across."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FACE_VIDEO, video_frames

from bgfs_core.detections import Detections
from bgfs_core.losses import bone_constancy_loss, smoothness_loss
from bgfs_core.metrics import ScoreSettings, score_detections
from bgfs_core.regions import get_region
from bgfs_core.roi import roi_boxes
from bgfs_core.targets import kinematic_targets
from bgfs_core.tracks import cuts, pieces

SHAPE = np.random.default_rng(3).uniform(-20, 20, (21, 2))  # a hand's 21 keypoints: every bone a fixed length


def hand_track(centres: np.ndarray, scales: np.ndarray) -> Detections:
    """A one-hand ``Detections`` (slot 0) whose keypoints are ``SHAPE`` scaled and moved to each frame's centre."""
    det = Detections.empty("hands", len(centres), (480, 640))
    for t, (c, k) in enumerate(zip(centres, scales)):
        kp = (SHAPE * k + c).astype(np.float32)
        det.keypoints[t, 0], det.confidence[t, 0], det.present[t, 0], det.scores[t, 0] = kp, 0.9, True, 0.9
        det.boxes[t, 0] = [*kp.min(0), *kp.max(0)]
    return det


def two_shots(n: int = 12) -> Detections:
    """A hand drifting right at x~100 for ``n`` frames, then, from frame ``n`` on, another shot: a hand 30% larger
    (its bones 30% longer) drifting down at x~450. Each moves at constant velocity: no jitter, no bone stretch."""
    t = np.arange(n, dtype=np.float64)
    first = np.stack([100 + 3 * t, 200 + 0 * t], -1)
    second = np.stack([450 + 0 * t, 150 + 4 * t], -1)
    return hand_track(np.concatenate([first, second]), np.r_[np.ones(n), np.full(n, 1.3)])


def found(centres: np.ndarray) -> list[int]:
    """`cuts` of a one-hand track at these centres (sizes: ``SHAPE``'s diagonal, about 50 px)."""
    det = hand_track(centres, np.ones(len(centres)))
    return np.flatnonzero(cuts(det.keypoints, det.seen_keypoints(0.3))).tolist()


def test_a_cut_is_a_jump_that_stays_and_a_glitch_or_fast_motion_is_not():
    det = two_shots()
    assert np.flatnonzero(cuts(det.keypoints, det.seen_keypoints(0.3))).tolist() == [12]
    assert [(p.start, p.stop) for p in pieces(cuts(det.keypoints, det.seen_keypoints(0.3)))] == [(0, 12), (12, 24)]
    t = np.arange(30, dtype=np.float64)
    size = float(np.linalg.norm(SHAPE.max(0) - SHAPE.min(0)))
    still = np.stack([200 + 0 * t, 200 + 0 * t], -1)
    for glitch in ([0], [1], [0, 1], [8], [8, 9], [8, 9, 10], [28, 29]):  # thrown across the frame and back
        where = still.copy()
        where[glitch] += 3 * size
        assert found(where) == [], glitch
    fast = still + np.stack([0.6 * size * np.clip(t - 10, 0, None), 0 * t], -1)  # from rest to 0.6 sizes a frame
    assert found(fast) == []
    for period, amplitude in ((8, 0.75), (10, 1.0), (12, 1.5)):  # waving: 2 Hz at 16 fps, up to 0.8 sizes a frame
        wave = still + np.stack([amplitude * size * np.sin(2 * np.pi * t / period), 0 * t], -1)
        assert found(wave) == [], (period, amplitude)


def test_a_longer_glitch_that_returns_is_no_cut_and_a_short_shot_elsewhere_is_two():
    # thrown elsewhere for 4 to 8 frames (GLITCH_FRAMES), then back on its way: the judge counts it and the fixer
    # mends it, as a shorter glitch; it used to read as two cuts, between which nothing was compared
    t = np.arange(40, dtype=np.float64)
    size = float(np.linalg.norm(SHAPE.max(0) - SHAPE.min(0)))
    moving = np.stack([150 + 2 * t, 200 + 0 * t], -1)
    for length in (4, 5, 8):
        where = moving.copy()
        where[14 : 14 + length] += [3 * size, 2 * size]
        assert found(where) == [], length
    # longer than GLITCH_FRAMES, or not back where it was going: shots of their own
    where = moving.copy()
    where[14:26] += [3 * size, 2 * size]
    assert found(where) == [14, 26]
    elsewhere = moving.copy()
    elsewhere[14:20] += [3 * size, 2 * size]
    elsewhere[20:] += [0, 4 * size]
    assert found(elsewhere) == [14, 20]
    flicker = moving.copy()  # a glitch, back on its way for a while, then another shot: that cut stays
    flicker[14:20] += [3 * size, 2 * size]
    flicker[26:] += [3 * size, 2 * size]
    assert found(flicker) == [26]
    # a face shrunk to 60% for five frames: no cut in size either
    det = hand_track(moving, np.where((t >= 14) & (t < 19), 0.6, 1.0))
    assert np.flatnonzero(cuts(det.keypoints, det.seen_keypoints(0.3), by_size=True)).tolist() == []
    det = hand_track(moving, np.where(t >= 14, np.where(t < 19, 0.6, 1.66), 1.0))  # shrunk, then a close-up
    assert np.flatnonzero(cuts(det.keypoints, det.seen_keypoints(0.3), by_size=True)).tolist() == [14, 19]
    # and the judge now counts such a glitch as jitter
    where = moving.copy()
    where[14:19] += [3 * size, 2 * size]
    glitched = score_detections(hand_track(where, np.ones(40)))
    steady = score_detections(hand_track(moving, np.ones(40)))
    assert glitched.parts["jitter"].raw > 10 * max(steady.parts["jitter"].raw, 1e-6)


def test_a_cut_to_a_close_up_in_the_same_place_is_a_cut_and_a_region_coming_closer_is_not():
    t = np.arange(24, dtype=np.float64)
    place = np.stack([300 + 0 * t, 200 + 0 * t], -1)
    scales = np.ones(24)

    def found_at(scales: np.ndarray, by_size: bool = True) -> list[int]:
        det = hand_track(place, scales)
        return np.flatnonzero(cuts(det.keypoints, det.seen_keypoints(0.3), by_size=by_size)).tolist()

    assert found_at(np.where(t < 12, 1.0, 1.66)) == [12]  # the film's cut to a close-up at frame 200: 66% larger
    # but only for a region whose size holds (a face): a hand shrinks as it closes into a fist
    assert found_at(np.where(t < 12, 1.0, 0.6), by_size=False) == []
    assert found_at(1.05**t) == []  # 5% larger every frame
    for glitch in ([8], [8, 9]):  # a shrunken hand for a frame or two
        glitched = scales.copy()
        glitched[glitch] = 0.6
        assert found_at(glitched) == [], glitch


def test_the_roi_box_stays_on_a_face_across_a_real_cut():
    from bgfs_core.detection import detect_video

    frames = video_frames(FACE_VIDEO, 88, 112, (352, 256))  # the film's first cut is at frame 98
    det = detect_video(frames, "face", fps=24.0)
    cut = cuts(det.keypoints, det.seen_keypoints(0.3))
    assert np.flatnonzero(cut).tolist() == [10]  # frame 98
    boxes = roi_boxes(det, 0.25, 0.3, 0.6)[:, 0]
    seen = det.seen_keypoints(0.3)[:, 0]
    kp = np.where(seen[..., None], det.keypoints[:, 0], np.nan)
    face_centre = (kp.min(1) + kp.max(1)) / 2
    off = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - face_centre, axis=-1) / (boxes[:, 2] - boxes[:, 0])
    # smoothed across the cut, the box lagged over a third of its side behind the face on frames 97 and 98 (0.38,
    # 0.35)
    assert off.max() < 0.06, np.round(off, 2)


def test_the_judge_measures_neither_jitter_nor_bones_across_a_cut():
    score = score_detections(two_shots())
    assert score.parts["jitter"].raw < 1e-6  # the jump, counted as jitter: 0.58
    assert score.cuts == [12] and score.to_dict()["cuts"] == [12]
    assert score.message.endswith("; a cut at frame 13: each side judged alone")
    # against the clip's mean length (bone_window=0), not a running median that keeps the shots apart anyway
    score = score_detections(two_shots(), settings=ScoreSettings(bone_window=0))
    assert score.parts["bone_cv"].raw < 1e-6  # the two hands' bones as one's: 0.13


def test_each_shot_is_measured_in_its_own_size():
    """A wobbling hand, then a cut to a close-up of it (twice as large, the same wobble scaled with it): the same
    jitter in each shot's own size, and so over the whole clip. Measured in one size for both shots (the clip's
    median, the wide shot's here), the close-up's jitter read as twice what it is (0.131, not 0.084)."""
    n, rng = 16, np.random.default_rng(0)
    wobble = rng.normal(0, 1.5, (2 * n, 2))
    centres = np.r_[np.full((n, 2), 200.0) + wobble[:n], np.full((n, 2), 300.0) + 2 * wobble[n:]]
    det = hand_track(centres, np.r_[np.ones(n), np.full(n, 2.0)])
    both = score_detections(det)
    assert both.cuts == [n]
    wide, close = (score_detections(det.select(span)).parts["jitter"].raw for span in (slice(0, n), slice(n, None)))
    assert both.parts["jitter"].raw == pytest.approx((wide + close) / 2, rel=0.02)


def test_targets_are_drawn_on_each_side_of_a_cut_alone():
    det = two_shots()
    targets = kinematic_targets(det)
    assert targets.valid[:, 0].all()
    for shot in (slice(0, 12), slice(12, 24)):
        alone = kinematic_targets(det.select(shot))
        # across the cut, the bone lengths of the two hands were one reference: the frames next to it moved 3 px
        np.testing.assert_allclose(targets.keypoints[shot], alone.keypoints, atol=1e-3)


def test_the_critics_terms_do_not_compare_frames_across_a_cut():
    det = two_shots()
    points = torch.from_numpy(det.keypoints[:, :1].astype(np.float32)) / 40.0
    valid = torch.ones(points.shape[:3], dtype=torch.bool)
    cut = torch.from_numpy(cuts(det.keypoints, det.seen_keypoints(0.3)))
    hands = get_region("hands")
    assert smoothness_loss(points, valid, hands) > 0.1  # the jump, read as the hand's motion
    assert smoothness_loss(points, valid, hands, cut=cut) < 1e-4
    assert bone_constancy_loss(points, valid, hands) > 0.02  # a hand 30% larger, read as its bones stretching
    assert bone_constancy_loss(points, valid, hands, cut=cut) < 1e-4


def test_a_fix_across_a_real_cut_says_so_and_steadies_both_shots():
    from bgfs_core.codecs import PixelCodec
    from bgfs_core.corruptions import corrupt_all
    from bgfs_core.detection import detect_video
    from bgfs_core.fix_video import decode_frames, encode_frames
    from bgfs_core.fixer import FixSettings, fix_latents
    from bgfs_core.metrics import score_video

    clean = video_frames(FACE_VIDEO, 88, 112, (352, 256))
    damaged = corrupt_all(clean, detect_video(clean, "face", fps=24.0), ["finger_jitter", "region_jitter"], seed=0)
    det = detect_video(damaged, "face", fps=24.0)
    codec = PixelCodec()
    result = fix_latents(encode_frames(codec, damaged), codec, None, None, det,
                         FixSettings(steps=30, lr=0.035, mode="warp", guide=3.0))  # fmt: skip
    assert ("a cut at frame 11 of 24 (the face moved or changed size at once and stayed so: another shot, or another "
            "face): each side is fixed alone") in result.report["warnings"]
    fixed = decode_frames(codec, result.latents)
    for shot in (slice(0, 10), slice(10, 24)):
        before = score_video(damaged[shot], "face", fps=24.0).anatomy.parts["jitter"].raw
        after = score_video(fixed[shot], "face", fps=24.0).anatomy.parts["jitter"].raw
        assert after < 0.5 * before, (shot, before, after)


def test_the_reports_chain_lengths_are_each_shots_own():
    from bgfs_core.report import _chain_lengths

    _, rel = _chain_lengths(two_shots(), 0, [12])
    np.testing.assert_allclose(rel, 1.0, atol=1e-5)  # against the clip's median: 0.87 and 1.13


def test_the_warps_temporal_term_leaves_out_the_latent_steps_a_cut_lies_across():
    from types import SimpleNamespace

    from bgfs_core.fixer import _Problem
    from bgfs_core.losses import warp_temporal_loss

    flow = torch.zeros(6, 2, 3, 3)
    flow[3:] = 1.0  # one correction before the cut, another after
    across = torch.tensor([False, False, True, False, False])
    assert warp_temporal_loss(flow) > 0.1 and warp_temporal_loss(flow, across) == 0.0
    # a Wan VAE's latent frame j > 0 holds pixel frames 4j-3 .. 4j; the window's core is latent frames 1-5
    window = SimpleNamespace(window=SimpleNamespace(t0=1, t1=6, temporal_ratio=4))
    for frame, steps in ((9, [False, True, False, False]),  # the first pixel frame of latent 3: the step 2 -> 3
                         (11, [False, True, True, False])):  # inside latent 3: both its steps
        cut = np.zeros(21, bool)
        cut[frame] = True
        assert _Problem._latent_steps_across(window, cut).tolist() == steps
