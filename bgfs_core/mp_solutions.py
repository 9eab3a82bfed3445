"""Backend: the legacy ``mp.solutions`` graphs (hands, face mesh, pose) with the models bundled in mediapipe."""

from __future__ import annotations

import numpy as np

from .detection import RawInstance
from .errors import BGFSError


def _solutions():
    try:
        import mediapipe as mp

        return mp.solutions
    except (ImportError, AttributeError) as e:
        raise BGFSError(
            f"the 'solutions' detection backend needs mediapipe<=0.10.21 with its legacy mp.solutions API ({e}); "
            "install mediapipe==0.10.21, or use detect.backend=tasks with .task model files"
        ) from None


class SolutionsBackend:
    """One legacy MediaPipe graph; ``video_mode`` = not ``static_image_mode``, so it tracks between frames."""

    def __init__(
        self,
        source: str,
        landmark_ids: np.ndarray,
        video_mode: bool,
        min_detection_confidence: float,
        min_tracking_confidence: float,
        max_instances: int,
    ) -> None:
        self.source = source
        self.ids = [int(i) for i in landmark_ids]
        sol = _solutions()
        common = {
            "static_image_mode": not video_mode,
            "min_detection_confidence": min_detection_confidence,
            "min_tracking_confidence": min_tracking_confidence,
        }
        if source == "hands":
            self._graph = sol.hands.Hands(max_num_hands=max_instances, model_complexity=1, **common)
        elif source == "face_mesh":
            self._graph = sol.face_mesh.FaceMesh(max_num_faces=1, refine_landmarks=False, **common)
        elif source == "pose":
            # model_complexity 1 is the bundled model; 0 and 2 would be downloaded at run time.
            self._graph = sol.pose.Pose(model_complexity=1, smooth_landmarks=video_mode, **common)
        else:
            raise BGFSError(f"unknown landmark source {source!r}")

    def _xy(self, landmarks) -> np.ndarray:
        return np.array([(landmarks[i].x, landmarks[i].y) for i in self.ids], np.float32)

    def process(self, frame: np.ndarray, timestamp_ms: int) -> list[RawInstance]:
        """Landmarks in one RGB uint8 frame (the legacy graphs keep their own clock, so the timestamp is unused)."""
        if self._graph is None:
            raise BGFSError("this detector is closed: make a new one")
        res = self._graph.process(frame)
        if self.source == "hands":
            if not res.multi_hand_landmarks:
                return []
            out = []
            for lms, handed in zip(res.multi_hand_landmarks, res.multi_handedness):
                cls = handed.classification[0]
                # The legacy label assumes a mirrored (selfie) image: "Left" is the right hand as seen.
                label = "right" if cls.label == "Left" else "left"
                out.append(RawInstance(self._xy(lms.landmark), None, label, float(cls.score)))
            return out
        if self.source == "face_mesh":
            if not res.multi_face_landmarks:
                return []
            return [RawInstance(self._xy(res.multi_face_landmarks[0].landmark), None, "", 1.0)]
        if res.pose_landmarks is None:
            return []
        lms = res.pose_landmarks.landmark
        arr = np.array([(lms[i].x, lms[i].y, lms[i].visibility) for i in self.ids], np.float32)
        return [RawInstance(arr[:, :2], arr[:, 2], "", 1.0)]

    def reset(self) -> None:
        if self._graph is not None:
            self._graph.reset()

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
