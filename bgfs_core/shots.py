"""Shot changes: consecutive frames that differ as only a cut to another shot makes them differ.

MediaPipe in video mode tracks a region from one frame to the next: after a cut it goes on looking where the region
was and takes frames to settle on the new shot's (on the bundled film's cut to a close-up at frame 200, the face's
keypoints grew from 113 to 196 px over five frames, and the fix of the clean clip reshaped the new face there).
`Detector.detect_video` starts MediaPipe afresh at each shot change instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Two frames lie across a shot change when both their colours and their pixels differ this much: half the L1
# distance between their colour histograms, and their mean absolute difference in grey levels. The film's three
# cuts: 0.145-0.22 and 39-43. Within the shots of the bundled footage, at most 0.063 and 9 (the hand clip), and
# 0.093 and 23 on its copies damaged at twice the evaluation's strength (the hand fills a third of the frame).
SHOT_CHANGE = 0.12
MEAN_CHANGE = 25.0
_SIDE = 64  # frames are read on a grid of about this many pixels a side: colours and layout, not detail


class FrameLook(NamedTuple):
    """What `shot_changed` compares: a frame's coarse grid of pixels and its colour histogram."""

    grid: np.ndarray  # int16 [h, w, 3], about _SIDE a side
    colours: np.ndarray  # [512]: 3 bits per channel, summing to 1


def frame_look(frame: np.ndarray) -> FrameLook:
    """`FrameLook` of an RGB uint8 ``[H, W, 3]`` frame."""
    sy, sx = max(1, frame.shape[0] // _SIDE), max(1, frame.shape[1] // _SIDE)
    grid = frame[::sy, ::sx]
    q = grid.reshape(-1, 3) >> 5
    counts = np.bincount((q[:, 0].astype(np.int64) << 6) | (q[:, 1] << 3) | q[:, 2], minlength=512)
    return FrameLook(grid.astype(np.int16), counts / max(1, counts.sum()))


def shot_changed(previous: FrameLook, current: FrameLook) -> bool:
    """Whether two consecutive frames (their `frame_look`) lie across a shot change."""
    colours = 0.5 * float(np.abs(previous.colours - current.colours).sum())
    return colours > SHOT_CHANGE and float(np.abs(previous.grid - current.grid).mean()) > MEAN_CHANGE
