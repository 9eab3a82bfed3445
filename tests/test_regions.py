"""Regions: skeletons are consistent, so that losses and plots written once work for every region."""

from __future__ import annotations

import pytest

from bgfs_core.errors import BGFSError
from bgfs_core.regions import REGION_NAMES, get_region


@pytest.mark.parametrize("name", REGION_NAMES)
def test_region_is_consistent(name):
    r = get_region(name)
    k = r.num_keypoints
    assert len(set(r.keypoint_names)) == k
    assert len(r.source_ids) == r.num_instances and all(len(ids) == k for ids in r.source_ids)
    assert r.bones and all(0 <= a < k and 0 <= b < k and a != b for a, b in r.bones)
    assert len(set(r.bones)) == len(r.bones)
    assert all(all(0 <= j < k for j in chain) for chain in r.chains)
    assert all(0 <= v < k for lim in r.joint_limits for v in (lim.a, lim.b, lim.c))
    perm = r.flip_permutation()
    assert sorted(perm) == list(range(k))
    assert all(perm[perm[i]] == i for i in range(k)), "flipping twice must give the identity"


def test_hands_have_two_instances_and_five_finger_chains():
    hands = get_region("hands")
    assert hands.instance_labels == ("left", "right")
    assert len(hands.chains) == 5 and all(chain[0] == 0 for chain in hands.chains)
    assert len(hands.joint_limits) == 14  # thumb MCP+IP, then MCP/PIP/DIP for four fingers


def test_face_flip_swaps_eyes():
    face = get_region("face")
    names = face.keypoint_names
    perm = face.flip_permutation()
    assert names[perm[names.index("left_eye_outer")]] == "right_eye_outer"
    assert names[perm[names.index("nose_tip")]] == "nose_tip"
    # every sided point, whether the side leads its name or ends it (the mouth's corners were once left alone, so
    # the critic's flip augmentation trained each corner's channel on the other corner)
    swap = {"left": "right", "right": "left"}
    for i, name in enumerate(names):
        other = "_".join(swap.get(part, part) for part in name.split("_"))
        assert names[perm[i]] == other, (name, names[perm[i]])
    assert names[perm[names.index("mouth_left")]] == "mouth_right"


def test_unknown_region_lists_choices():
    # A BGFSError, so the CLI and the nodes show it as a prefixed message instead of a traceback.
    with pytest.raises(BGFSError, match="choose one of hands, face, feet, upper_body, full_body"):
        get_region("tail")
