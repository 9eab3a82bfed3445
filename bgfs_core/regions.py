"""Body regions: named MediaPipe landmark sets with their skeletons.

Every loss, metric and plot is written once against :class:`Region`, so adding a region is adding data here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BGFSError


@dataclass(frozen=True)
class JointLimit:
    """Plausible range of the bend at joint ``b`` of the chain ``a -> b -> c`` (degrees, 0 = straight).

    ``max_bend`` caps flexion. ``max_hyperextension`` caps bending the other way, where the other way is set by
    the region's majority curl direction (see ``bgfs_core.kinematics``); ``None`` means the sign is not judged.
    """

    a: int
    b: int
    c: int
    max_bend: float
    max_hyperextension: float | None = None


@dataclass(frozen=True)
class Region:
    name: str
    source: str  # which MediaPipe model gives the landmarks: "hands" | "face_mesh" | "pose"
    keypoint_names: tuple[str, ...]
    source_ids: tuple[tuple[int, ...], ...]  # per instance: landmark index in the source model, per keypoint
    instance_labels: tuple[str, ...]  # fixed instance slots, e.g. ("left", "right")
    bones: tuple[tuple[int, int], ...]  # the skeleton drawn
    # bones whose length changes with expression (eyelids, lips, an opening jaw): drawn, never held constant
    flexible_bones: tuple[tuple[int, int], ...] = ()
    # keypoints that move against the rest with expression (eyelids, lips, jaw): the guide smooths the head's
    # motion under them, not their own, so that a blink or a spoken word survives the fix
    expressive_keypoints: tuple[int, ...] = ()
    chains: tuple[tuple[int, ...], ...] = ()  # finger / limb chains, root first
    joint_limits: tuple[JointLimit, ...] = ()
    flip_perm: tuple[int, ...] = field(default=())  # keypoint order after a horizontal flip (empty: identity)
    # the box around its keypoints keeps its size through poses and expressions (a face), so a sudden change of it
    # that holds is a cut (`tracks.cuts`); a hand's shrinks as it closes into a fist, a body's as its arms drop
    holds_its_size: bool = False

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def num_instances(self) -> int:
        return len(self.instance_labels)

    @property
    def rigid_bones(self) -> tuple[tuple[int, int], ...]:
        """The bones whose length should hold over time: what the bone losses, the guide and the judge measure."""
        return tuple(b for b in self.bones if b not in self.flexible_bones)

    def flip_permutation(self) -> tuple[int, ...]:
        return self.flip_perm or tuple(range(self.num_keypoints))


# --- hands: MediaPipe Hands, 21 landmarks per hand -------------------------------------------------------------
_HAND_NAMES = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip
_HAND_CHAINS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (0, 13, 14, 15, 16), (0, 17, 18, 19, 20))
_HAND_BONES = ((5, 9), (9, 13), (13, 17)) + tuple(
    (chain[i], chain[i + 1]) for chain in _HAND_CHAINS for i in range(len(chain) - 1)
)


def _finger_limits() -> tuple[JointLimit, ...]:
    limits = [JointLimit(1, 2, 3, 70.0, 30.0), JointLimit(2, 3, 4, 90.0, 30.0)]  # thumb MCP, IP
    for base in (5, 9, 13, 17):
        mcp, pip, dip, tip = base, base + 1, base + 2, base + 3
        limits += [
            JointLimit(0, mcp, pip, 100.0, 35.0),  # MCP
            JointLimit(mcp, pip, dip, 115.0, 15.0),  # PIP: barely hyperextends
            JointLimit(pip, dip, tip, 95.0, 25.0),  # DIP
        ]
    return tuple(limits)


HANDS = Region(
    name="hands",
    source="hands",
    keypoint_names=_HAND_NAMES,
    source_ids=(tuple(range(21)), tuple(range(21))),
    instance_labels=("left", "right"),
    bones=_HAND_BONES,
    chains=_HAND_CHAINS,
    joint_limits=_finger_limits(),
)

# --- face: a 28-point subset of the 468-point Face Mesh (eyes, brows, nose, mouth, outline) ---------------------
_FACE_POINTS = (
    ("right_eye_outer", 33), ("right_eye_inner", 133), ("right_eye_top", 159), ("right_eye_bottom", 145),
    ("left_eye_inner", 362), ("left_eye_outer", 263), ("left_eye_top", 386), ("left_eye_bottom", 374),
    ("right_brow_outer", 70), ("right_brow_mid", 105), ("right_brow_inner", 107),
    ("left_brow_inner", 336), ("left_brow_mid", 334), ("left_brow_outer", 300),
    ("nose_bridge", 168), ("nose_tip", 1), ("right_nostril", 129), ("left_nostril", 358),
    ("mouth_right", 61), ("mouth_left", 291), ("upper_lip", 0), ("lower_lip", 17),
    ("forehead", 10), ("chin", 152), ("right_cheek", 234), ("left_cheek", 454), ("right_jaw", 172), ("left_jaw", 397),
)  # fmt: skip
_FACE_NAMES = tuple(name for name, _ in _FACE_POINTS)
_F = {name: i for i, name in enumerate(_FACE_NAMES)}


def _flip_order(names: tuple[str, ...]) -> tuple[int, ...]:
    """For each keypoint, the index of its mirror image: left and right swapped, whether the side leads the name
    (left_eye_outer) or ends it (mouth_left); a point on the midline maps to itself."""
    index = {n: i for i, n in enumerate(names)}

    def mirror(name: str) -> str:
        for a, b in (("left", "right"), ("right", "left")):
            if name.startswith(a + "_"):
                return b + name[len(a) :]
            if name.endswith("_" + a):
                return name[: -len(a)] + b
        return name

    return tuple(index[mirror(n)] for n in names)


def _face_pairs(pairs: list[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((_F[a], _F[b]) for a, b in pairs)


# A blink, speech or a smile changes these; the skull and the jaw bone do not change the rest.
_FACE_FLEXIBLE = _face_pairs([
    ("right_eye_top", "right_eye_bottom"), ("left_eye_top", "left_eye_bottom"),  # eyelids
    ("mouth_right", "mouth_left"), ("upper_lip", "lower_lip"),  # lips
    ("nose_tip", "chin"), ("right_cheek", "right_jaw"), ("left_jaw", "left_cheek"),  # across the jaw's hinge
])  # fmt: skip


def _face_bones() -> tuple[tuple[int, int], ...]:
    pairs = [
        ("right_eye_outer", "right_eye_inner"), ("left_eye_inner", "left_eye_outer"),
        ("right_eye_inner", "left_eye_inner"), ("right_eye_top", "right_eye_bottom"),
        ("left_eye_top", "left_eye_bottom"), ("right_brow_outer", "right_brow_mid"),
        ("right_brow_mid", "right_brow_inner"), ("left_brow_inner", "left_brow_mid"),
        ("left_brow_mid", "left_brow_outer"), ("nose_bridge", "nose_tip"), ("right_nostril", "left_nostril"),
        ("mouth_right", "mouth_left"), ("upper_lip", "lower_lip"), ("forehead", "nose_bridge"),
        ("nose_tip", "chin"), ("right_cheek", "right_jaw"), ("right_jaw", "chin"), ("chin", "left_jaw"),
        ("left_jaw", "left_cheek"), ("right_eye_outer", "right_cheek"), ("left_eye_outer", "left_cheek"),
    ]  # fmt: skip
    return _face_pairs(pairs)


FACE = Region(
    name="face",
    source="face_mesh",
    keypoint_names=_FACE_NAMES,
    source_ids=(tuple(idx for _, idx in _FACE_POINTS),),
    instance_labels=("face",),
    bones=_face_bones(),
    flexible_bones=_FACE_FLEXIBLE,
    expressive_keypoints=tuple(_F[n] for n in (
        "right_eye_top", "right_eye_bottom", "left_eye_top", "left_eye_bottom",
        "mouth_right", "mouth_left", "upper_lip", "lower_lip", "chin", "right_jaw", "left_jaw")),  # fmt: skip
    chains=((_F["forehead"], _F["nose_bridge"], _F["nose_tip"], _F["chin"]),),
    joint_limits=(),
    flip_perm=_flip_order(_FACE_NAMES),
    holds_its_size=True,
)

# --- pose-based regions: MediaPipe Pose, 33 landmarks ------------------------------------------------------------
_POSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
_POSE_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20),
    (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31),
    (30, 32), (27, 31), (28, 32),
)  # fmt: skip


# A smile or a word widens the mouth: its width is drawn but never held constant (the corners themselves are
# smoothed as any keypoint: a body's motion says nothing of how its lips move, so they are not expressive keypoints).
_POSE_FLEXIBLE = ((9, 10),)


def _subset(ids: tuple[int, ...], bones: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    pos = {src: i for i, src in enumerate(ids)}
    return tuple((pos[a], pos[b]) for a, b in bones if a in pos and b in pos)


_LIMB_LIMITS = (  # elbows and knees seen in 2D: only a limb folded back on itself is implausible
    JointLimit(11, 13, 15, 165.0), JointLimit(12, 14, 16, 165.0),
    JointLimit(23, 25, 27, 165.0), JointLimit(24, 26, 28, 165.0),
)  # fmt: skip

FULL_BODY = Region(
    name="full_body",
    source="pose",
    keypoint_names=_POSE_NAMES,
    source_ids=(tuple(range(33)),),
    instance_labels=("person",),
    bones=_POSE_BONES,
    flexible_bones=_POSE_FLEXIBLE,
    chains=((11, 13, 15, 19), (12, 14, 16, 20), (23, 25, 27, 31), (24, 26, 28, 32)),
    joint_limits=_LIMB_LIMITS,
    flip_perm=_flip_order(_POSE_NAMES),
)

_UPPER_IDS = tuple(range(25))
UPPER_BODY = Region(
    name="upper_body",
    source="pose",
    keypoint_names=_POSE_NAMES[:25],
    source_ids=(_UPPER_IDS,),
    instance_labels=("person",),
    bones=_subset(_UPPER_IDS, _POSE_BONES),
    flexible_bones=_subset(_UPPER_IDS, _POSE_FLEXIBLE),
    chains=((11, 13, 15, 19), (12, 14, 16, 20)),
    joint_limits=_LIMB_LIMITS[:2],
    flip_perm=_flip_order(_POSE_NAMES[:25]),
)

# Feet are two instances (left, right) of knee -> ankle -> heel -> toe, so that each foot gets its own crop.
FEET = Region(
    name="feet",
    source="pose",
    keypoint_names=("knee", "ankle", "heel", "toe"),
    source_ids=((25, 27, 29, 31), (26, 28, 30, 32)),
    instance_labels=("left", "right"),
    bones=((0, 1), (1, 2), (2, 3), (1, 3)),
    chains=((0, 1, 3),),
    joint_limits=(JointLimit(0, 1, 3, 150.0),),
)

REGIONS: dict[str, Region] = {r.name: r for r in (HANDS, FACE, FEET, UPPER_BODY, FULL_BODY)}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)


def get_region(name: str) -> Region:
    """Look a region up by name, with an error that lists the valid names."""
    try:
        return REGIONS[name]
    except KeyError:
        raise BGFSError(f"unknown region {name!r}: choose one of {', '.join(REGION_NAMES)}") from None
