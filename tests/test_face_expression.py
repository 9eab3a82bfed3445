"""A face's expression is not a defect: a blink, a word or a smile survives the guide, the losses and the judge,
while the head's shake and a stretching skull are still removed."""

from __future__ import annotations

import math

import numpy as np
import torch

from bgfs_core.detections import Detections
from bgfs_core.losses import bone_constancy_loss, smoothness_loss
from bgfs_core.metrics import score_detections
from bgfs_core.regions import get_region
from bgfs_core.targets import kinematic_targets

FACE = get_region("face")
F = {name: i for i, name in enumerate(FACE.keypoint_names)}
_LAYOUT = {  # a 100 px face, pixels from its centre
    "right_eye_outer": (-30, -10), "right_eye_inner": (-12, -10), "right_eye_top": (-21, -14),
    "right_eye_bottom": (-21, -6), "left_eye_inner": (12, -10), "left_eye_outer": (30, -10),
    "left_eye_top": (21, -14), "left_eye_bottom": (21, -6), "right_brow_outer": (-32, -22),
    "right_brow_mid": (-21, -26), "right_brow_inner": (-10, -23), "left_brow_inner": (10, -23),
    "left_brow_mid": (21, -26), "left_brow_outer": (32, -22), "nose_bridge": (0, -10), "nose_tip": (0, 12),
    "right_nostril": (-7, 14), "left_nostril": (7, 14), "mouth_right": (-14, 30), "mouth_left": (14, 30),
    "upper_lip": (0, 26), "lower_lip": (0, 34), "forehead": (0, -45), "chin": (0, 52), "right_cheek": (-45, 0),
    "left_cheek": (45, 0), "right_jaw": (-35, 35), "left_jaw": (35, 35),
}  # fmt: skip
T = 40
BLINK = {18: 3.0, 19: 6.0, 20: 8.0, 21: 6.0, 22: 3.0}  # the upper lids come down 8 px over five frames


def mouth_opening(t: np.ndarray) -> np.ndarray:
    return 8.0 * (0.5 - 0.5 * np.cos(2 * math.pi * t / 8))  # px: a word every 8 frames (3 Hz at 24 fps)


def talking_face() -> np.ndarray:
    """The face gliding right, talking and blinking once: [T, 28, 2] pixels."""
    base = np.array([_LAYOUT[n] for n in FACE.keypoint_names], np.float64)
    out = []
    for t in range(T):
        p = base.copy()
        o = mouth_opening(np.array(t))
        p[F["lower_lip"], 1] += o
        p[F["chin"], 1] += o
        p[[F["right_jaw"], F["left_jaw"]], 1] += o  # the jaw bone drops as one
        p[[F["right_eye_top"], F["left_eye_top"]], 1] += BLINK.get(t, 0.0)
        out.append(p + np.array([200 + 1.0 * t, 240]))
    return np.stack(out)


def detections(kp: np.ndarray) -> Detections:
    det = Detections.empty("face", kp.shape[0], (480, 640))
    det.keypoints[:, 0] = kp
    det.confidence[:, 0] = 0.9
    det.present[:, 0] = True
    det.boxes[:, 0] = np.concatenate([kp.min(1), kp.max(1)], -1)
    det.scores[:, 0] = 0.9
    return det


def openings(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mouth opening, right eye opening) per frame of ``[T, 28, 2]`` keypoints."""
    return (kp[:, F["lower_lip"], 1] - kp[:, F["upper_lip"], 1],
            kp[:, F["right_eye_bottom"], 1] - kp[:, F["right_eye_top"], 1])  # fmt: skip


def test_guide_keeps_the_words_and_the_blink_and_removes_the_shake():
    truth = talking_face()
    rng = np.random.default_rng(0)
    shaken = truth + rng.normal(0, 3.0, (T, 1, 2)) + rng.normal(0, 0.3, truth.shape)  # the whole face shakes
    target = kinematic_targets(detections(shaken)).keypoints[:, 0].astype(np.float64)
    assert np.isfinite(target).all()
    mouth, eye = openings(target)
    true_mouth, true_eye = openings(truth)
    # the words: within a pixel of the truth (a Gaussian over the head's pose flattens them to about their mean)
    assert np.abs(mouth - true_mouth).mean() < 1.0, np.abs(mouth - true_mouth).mean()
    assert mouth.std() > 0.8 * true_mouth.std(), (mouth.std(), true_mouth.std())
    # the blink: the lids still close most of the way
    assert eye[20] < true_eye[0] - 0.6 * BLINK[20], eye[16:25]
    # the shake is gone from the lips as from the rest of the face
    for part in (list(FACE.expressive_keypoints), [k for k in range(28) if k not in FACE.expressive_keypoints]):
        before = np.linalg.norm(shaken[:, part] - truth[:, part], axis=-1).mean()
        after = np.linalg.norm(target[:, part] - truth[:, part], axis=-1).mean()
        assert after < 0.5 * before, (part, before, after)


def test_the_judge_and_the_losses_take_expression_for_no_defect():
    truth = talking_face()
    det = detections(truth)
    bone_cv = score_detections(det).parts["bone_cv"].raw
    points, valid = torch.from_numpy(truth[:, None]).float(), torch.ones(T, 1, 28, dtype=torch.bool)
    assert bone_cv < 1e-6, bone_cv
    assert float(bone_constancy_loss(points, valid, FACE)) < 1e-6
    assert float(smoothness_loss(points, valid, FACE)) < 1e-6
    # ... and still see a skull that stretches (the nose grows by a quarter every third frame)
    stretched = truth.copy()
    stretched[::3, F["nose_tip"], 1] += 6.0
    assert score_detections(detections(stretched)).parts["bone_cv"].raw > 0.01
    stretched_points = torch.from_numpy(stretched[:, None]).float()
    assert float(bone_constancy_loss(stretched_points, valid, FACE)) > 0.004
    assert float(smoothness_loss(stretched_points, valid, FACE)) > 0.2


def test_the_reports_chain_plot_takes_no_word_for_a_stretch():
    from bgfs_core.report import _chain_lengths

    names, rel = _chain_lengths(detections(talking_face()), 0)
    assert names == ["forehead->nose_tip"]  # the face's chain without the jaw's hinge (nose tip to chin)
    np.testing.assert_allclose(rel, 1.0, atol=1e-6)


def test_face_bones_split_into_rigid_and_flexible():
    flexible = {tuple(sorted(b)) for b in FACE.flexible_bones}
    assert flexible <= {tuple(sorted(b)) for b in FACE.bones}  # drawn, as every bone
    assert not flexible & {tuple(sorted(b)) for b in FACE.rigid_bones}
    assert (F["upper_lip"], F["lower_lip"]) in FACE.flexible_bones
    assert (F["right_eye_outer"], F["right_eye_inner"]) in FACE.rigid_bones
    for name in ("hands", "feet"):  # nothing in them changes length with expression
        region = get_region(name)
        assert region.rigid_bones == region.bones and not region.expressive_keypoints
    for name in ("upper_body", "full_body"):  # a smile widens the mouth; its corners are smoothed as any keypoint
        region = get_region(name)
        mouth = (region.keypoint_names.index("mouth_left"), region.keypoint_names.index("mouth_right"))
        assert region.flexible_bones == (mouth,) and mouth in region.bones and mouth not in region.rigid_bones
        assert len(region.rigid_bones) == len(region.bones) - 1 and not region.expressive_keypoints


def test_expression_kept_measures_a_stiffened_face():
    from bgfs_core.expression import describe, expression_kept

    truth = talking_face()
    stiff = truth.copy()
    o = mouth_opening(np.arange(T))[:, None]
    stiff[:, [F["lower_lip"], F["chin"], F["right_jaw"], F["left_jaw"]], 1] -= 0.5 * o  # half the words
    same = expression_kept(detections(truth), detections(truth.copy()))
    assert same == {"range_kept": 1.0, "change": 0.0}
    half = expression_kept(detections(truth), detections(stiff))
    assert 0.5 < half["range_kept"] < 0.8 and half["change"] > 0.005, half
    assert "of their movement kept" in describe(half) and describe(None) == ""
    hands = Detections.empty("hands", T, (480, 640))
    assert expression_kept(hands, hands) is None  # no expression to keep
    # a still face: its openings only wobble with the detector, and a fix that steadies them loses nothing
    base = np.array([_LAYOUT[n] for n in FACE.keypoint_names], np.float64) + np.array([200.0, 240.0])
    still = base + np.random.default_rng(1).normal(0, 0.3, (T, 28, 2))
    assert expression_kept(detections(still), detections(np.repeat(base[None], T, 0))) is None

