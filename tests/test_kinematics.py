"""Skeleton geometry shared by the fixer's losses and the metrics: exact values, masks, gradients, real hands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA, load_rgb

from bgfs_core import kinematics as K
from bgfs_core.regions import HANDS, JointLimit

FINGER = [JointLimit(0, 1, 2, 100.0, 20.0)]  # one joint: bends forwards up to 100, backwards up to 20 degrees


def _bent(angle_deg: float) -> np.ndarray:
    """Three points: along +x, then turned by ``angle_deg`` (clockwise on screen, y down, is positive)."""
    a = np.radians(angle_deg)
    return np.array([[0.0, 0.0], [10.0, 0.0], [10.0 + 10 * np.cos(a), 10 * np.sin(a)]])


def test_bone_lengths_exact_batched_and_masked():
    kps = np.array([[[0.0, 0.0], [3.0, 4.0], [3.0, 10.0]]] * 2)  # [2, K=3, 2]
    kps[1, 2] = np.nan
    bones = [(0, 1), (1, 2)]
    valid = np.isfinite(kps).all(-1)
    lengths = K.bone_lengths(kps, bones, valid)
    np.testing.assert_allclose(lengths[0], [5.0, 6.0])
    assert lengths[1, 0] == pytest.approx(5.0)
    np.testing.assert_array_equal(K.bone_valid(valid, bones), [[True, True], [True, False]])
    # torch in, torch out; extra leading dims broadcast
    t = K.bone_lengths(torch.tensor(kps[None].repeat(4, 0)), bones, torch.tensor(valid[None].repeat(4, 0)))
    assert isinstance(t, torch.Tensor) and t.shape == (4, 2, 2)


@pytest.mark.parametrize("angle", [0.0, 30.0, -45.0, 90.0, 150.0])
def test_joint_bend_sign_and_mirror(angle):
    bend = K.joint_bends(_bent(angle), [(0, 1, 2)])
    assert bend[0] == pytest.approx(angle, abs=1e-6)
    mirrored = _bent(angle) * np.array([-1.0, 1.0])  # a horizontal flip turns the bend the other way
    assert K.joint_bends(mirrored, [(0, 1, 2)])[0] == pytest.approx(-angle, abs=1e-6)


def test_gradients_stay_finite_with_missing_keypoints():
    kps = torch.tensor(np.stack([_bent(40.0), _bent(0.0), _bent(-35.0)]), requires_grad=True)
    valid = torch.ones(3, 3, dtype=torch.bool)
    with torch.no_grad():
        kps[1, 2] = float("nan")  # a dropped keypoint
    valid[1, 2] = False
    bends = K.joint_bends(kps, FINGER, valid)
    excess = K.joint_limit_excess(bends, FINGER, torch.ones(3))
    acc, ok = K.second_differences(kps, valid)
    loss = excess.sum() + K.bone_lengths(kps, [(0, 1), (1, 2)], valid).sum() + acc.square().sum()
    loss.backward()
    assert torch.isfinite(kps.grad).all()
    assert kps.grad[1, 2].abs().sum() == 0  # the missing keypoint gets no gradient
    assert excess.detach()[2, 0].item() == pytest.approx(15.0) and excess.detach()[0, 0].item() == 0  # 15 past 20
    assert not ok[0, 2]


def test_curl_direction_majority_tie_fold_and_time_pooling():
    bends = np.array([[30.0, 40.0, -20.0], [-30.0, -40.0, 5.0], [175.0, -20.0, 0.0]])
    np.testing.assert_array_equal(K.curl_direction(bends), [1.0, -1.0, -1.0])  # row 3: the fold has no vote
    pooled = K.curl_direction(bends, time_dim=0)
    assert pooled.shape == (1,) and pooled[0] == -1.0  # votes per frame: +1, -2, -1 -> -2
    assert K.curl_direction(np.zeros((1, 3)))[0] == 1.0  # nothing bends: +1 by convention


def test_joint_limit_excess_forwards_backwards_fold_and_slack():
    lim = FINGER
    bends = np.array([[50.0], [130.0], [-35.0], [-170.0]])  # inside, over-flexed, backwards, a fold read backwards
    ex = K.joint_limit_excess(bends, lim, np.ones(4))
    np.testing.assert_allclose(ex[:, 0], [0.0, 30.0, 15.0, 80.0])  # the fold counts as 190 -> 180: 80 past 100
    # curl -1: +50 and +130 are now backwards (30 and 110 past 20), -170 is a plain over-flexion (70 past 100)
    np.testing.assert_allclose(K.joint_limit_excess(bends, lim, -np.ones(4))[:, 0], [30.0, 110.0, 0.0, 70.0])
    slack = K.joint_limit_excess(bends, lim, np.ones(4), flexion_slack=80.0)
    np.testing.assert_allclose(slack[:, 0], [0.0, 0.0, 15.0, 0.0])  # 100 + 80 -> 180: flexion is no longer judged


def test_a_joint_with_no_forward_side_is_judged_the_same_either_way():
    """Elbows and knees (no max_hyperextension) bend either way on screen, a person's left and right limbs
    opposite: a 155-degree right elbow is inside the 165-degree limit whichever way it bends and whatever the left
    elbow does (it was taken as a fold, 180, when it bent against the majority curl), and 170 is 5 past it."""
    from bgfs_core.regions import UPPER_BODY

    limits = UPPER_BODY.joint_limits[:2]  # the elbows: 165, no max_hyperextension
    for right in (-155.0, 155.0, -170.0, 170.0):
        bends = np.array([[60.0, right]])
        for curl in (np.ones((1, 2)), -np.ones((1, 2)), K.joint_curl(bends, np.ones_like(bends, bool), UPPER_BODY)):
            excess = K.joint_limit_excess(bends, limits, curl)[0]
            np.testing.assert_allclose(excess, [0.0, max(0.0, abs(right) - 165.0)], err_msg=f"{right} {curl}")
    bends = torch.tensor([[60.0, -170.0]], requires_grad=True)  # still differentiable, towards a smaller bend
    K.joint_limit_excess(bends, limits, torch.ones(1, 2)).sum().backward()
    assert bends.grad.tolist() == [[0.0, -1.0]]


def test_second_differences_skip_dropouts():
    t = np.arange(6, dtype=np.float64)
    kps = np.stack([t * 2.0, t * t], -1)[:, None, :]  # [T, K=1, 2]: constant velocity in x, acceleration 2 in y
    valid = np.ones((6, 1), bool)
    acc, ok = K.second_differences(kps, valid)
    np.testing.assert_allclose(acc[:, 0], [[0.0, 2.0]] * 4)
    valid[3] = False
    kps[3] = 1000.0  # garbage where the keypoint was lost must not show
    acc, ok = K.second_differences(kps, valid)
    np.testing.assert_array_equal(ok[:, 0], [True, False, False, False])
    assert np.abs(acc[~ok]).max() == 0


def test_region_scale_is_median_of_box_diagonals():
    kps = np.zeros((5, 2, 2))
    kps[:, 1] = [[3.0, 4.0], [6.0, 8.0], [3.0, 4.0], [3.0, 4.0], [300.0, 400.0]]  # one outlier frame
    valid = np.ones((5, 2), bool)
    valid[1] = False  # a frame without the instance
    assert K.region_scale(kps, valid) == pytest.approx(5.0)
    assert np.isnan(K.region_scale(kps, np.zeros((5, 2), bool)))


def test_curl_voters_exclude_the_thumb():
    voters = K.curl_voters(HANDS)
    thumb = [lim.b in (2, 3) for lim in HANDS.joint_limits]
    assert voters == [not t for t in thumb]


@pytest.fixture(scope="module")
def hand_photos():
    from bgfs_core.detection import detect_video

    out = {}
    for name in ("fullcurl", "nocurl"):
        det = detect_video(load_rgb(DATA / "images" / f"{name}.jpg")[None], "hands")
        slot = int(np.flatnonzero(det.present[0])[0])
        out[name] = det.keypoints[0, slot].astype(np.float64)
    return out


def test_real_fist_bends_its_index_more_than_a_pointing_hand(hand_photos):
    index = [i for i, lim in enumerate(HANDS.joint_limits) if lim.b in (5, 6, 7)]  # index MCP, PIP, DIP
    fist = K.joint_bends(hand_photos["fullcurl"], HANDS.joint_limits)
    pointing = K.joint_bends(hand_photos["nocurl"], HANDS.joint_limits)  # index straight, the others curled
    assert np.abs(fist[index]).sum() > np.abs(pointing[index]).sum() + 90.0, (fist[index], pointing[index])
    fingers = [i for i, v in enumerate(K.curl_voters(HANDS)) if v]
    curl = K.curl_direction(fist[fingers])
    clear = np.abs(fist[fingers]) > 20
    assert (np.sign(fist[fingers][clear]) == curl).all()  # a fist's fingers all curl the same way
    for kp in hand_photos.values():  # real hands break no limit (2D flexion slack as the metrics use it)
        bends = K.joint_bends(kp, HANDS.joint_limits)
        curl = K.joint_curl(bends, None, HANDS)
        slack = [70.0 if lim.max_hyperextension is not None else 0.0 for lim in HANDS.joint_limits]
        assert K.joint_limit_excess(bends, HANDS.joint_limits, curl, flexion_slack=slack).max() == 0.0
