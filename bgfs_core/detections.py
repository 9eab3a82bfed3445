"""The result of detecting a region in a video: fixed instance slots per frame, NaN where nothing was found."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .regions import Region, get_region


@dataclass
class Detections:
    """Keypoints of one region over ``T`` frames, ``I`` instance slots and ``K`` keypoints.

    keypoints:  float32 [T, I, K, 2], pixel (x, y) in the frame; NaN where the instance was not found.
    confidence: float32 [T, I, K] in [0, 1]; 0 where not found. Per-landmark visibility where the model gives
                one (pose), else the instance's detection score (hands) or 1 (face mesh), and 0 outside the frame.
    present:    bool [T, I]: the instance was detected in that frame.
    boxes:      float32 [T, I, 4], (x0, y0, x1, y1) pixels, tight around the confident keypoints; NaN if absent.
    scores:     float32 [T, I]: instance detection score (handedness score for hands), 0 if absent.
    frame_hw:   (height, width) of the frames the pixels refer to.
    """

    region: str
    keypoints: np.ndarray
    confidence: np.ndarray
    present: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    frame_hw: tuple[int, int]

    @property
    def spec(self) -> Region:
        return get_region(self.region)

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def detection_rate(self) -> float:
        """Fraction of frames in which at least one instance was found."""
        if self.num_frames == 0:
            return 0.0
        return float(self.present.any(axis=1).mean())

    def seen_keypoints(self, min_conf: float) -> np.ndarray:
        """bool [T, I, K]: keypoints of present instances, finite and at least ``min_conf`` sure."""
        return self.present[..., None] & np.isfinite(self.keypoints).all(-1) & (self.confidence >= min_conf)

    @classmethod
    def empty(cls, region: str, num_frames: int, frame_hw: tuple[int, int]) -> Detections:
        spec = get_region(region)
        t, i, k = num_frames, spec.num_instances, spec.num_keypoints
        return cls(
            region=region,
            keypoints=np.full((t, i, k, 2), np.nan, np.float32),
            confidence=np.zeros((t, i, k), np.float32),
            present=np.zeros((t, i), bool),
            boxes=np.full((t, i, 4), np.nan, np.float32),
            scores=np.zeros((t, i), np.float32),
            frame_hw=(int(frame_hw[0]), int(frame_hw[1])),
        )

    def select(self, frames: slice | np.ndarray) -> Detections:
        """The same detections restricted to some frames."""
        return Detections(
            self.region, self.keypoints[frames], self.confidence[frames], self.present[frames],
            self.boxes[frames], self.scores[frames], self.frame_hw,
        )  # fmt: skip

    def to_dict(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (see ``from_dict``)."""
        return {
            "keypoints": self.keypoints, "confidence": self.confidence, "present": self.present,
            "boxes": self.boxes, "scores": self.scores,
            "frame_hw": np.asarray(self.frame_hw, np.int32), "region": np.asarray(self.region),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Detections:
        return cls(
            region=str(d["region"]), keypoints=np.asarray(d["keypoints"], np.float32),
            confidence=np.asarray(d["confidence"], np.float32), present=np.asarray(d["present"], bool),
            boxes=np.asarray(d["boxes"], np.float32), scores=np.asarray(d["scores"], np.float32),
            frame_hw=tuple(int(v) for v in np.asarray(d["frame_hw"])),
        )  # fmt: skip


def keypoint_box(keypoints: np.ndarray, confidence: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box of the keypoints with confidence above ``min_conf``; NaN when none are."""
    ok = np.isfinite(keypoints).all(-1) & (confidence > min_conf)
    if not ok.any():
        return np.full(4, np.nan, np.float32)
    pts = keypoints[ok]
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], np.float32)
