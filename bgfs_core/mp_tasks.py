"""Backend: the MediaPipe Tasks API (Hand/Face/PoseLandmarker) with ``.task`` model files from a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .detection import RawInstance
from .errors import BGFSError

# Accepted file names per landmark source, in order of preference.
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "hands": ("hand_landmarker.task",),
    "face_mesh": ("face_landmarker.task",),
    "pose": ("pose_landmarker_full.task", "pose_landmarker_heavy.task", "pose_landmarker_lite.task"),
}
_BASE = "https://storage.googleapis.com/mediapipe-models"
MODEL_URLS: dict[str, str] = {
    "hand_landmarker.task": f"{_BASE}/hand_landmarker/hand_landmarker/float16/latest/hand_landmarker.task",
    "face_landmarker.task": f"{_BASE}/face_landmarker/face_landmarker/float16/latest/face_landmarker.task",
    "pose_landmarker_full.task": f"{_BASE}/pose_landmarker/pose_landmarker_full/float16/latest/pose_landmarker_full.task",
    "pose_landmarker_heavy.task": f"{_BASE}/pose_landmarker/pose_landmarker_heavy/float16/latest/pose_landmarker_heavy.task",
    "pose_landmarker_lite.task": f"{_BASE}/pose_landmarker/pose_landmarker_lite/float16/latest/pose_landmarker_lite.task",
}


def find_model(source: str, model_dir: str | Path | None) -> Path:
    """The ``.task`` file for a landmark source in ``model_dir``, or an error saying where to download it."""
    names = MODEL_FILES[source]
    if model_dir is None:
        raise BGFSError(f"the 'tasks' detection backend needs a model folder (detect.model_dir) holding {names[0]}")
    folder = Path(model_dir).expanduser().resolve()
    for name in names:
        if (folder / name).is_file():
            return folder / name
    also = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    raise BGFSError(
        f"model file {names[0]}{also} not found in {folder}: download {MODEL_URLS[names[0]]} into that folder, "
        "or use detect.backend=solutions"
    )


class TasksBackend:
    """One Tasks-API landmarker; ``video_mode`` uses RunningMode.VIDEO (tracking, increasing timestamps)."""

    def __init__(
        self,
        source: str,
        landmark_ids: np.ndarray,
        video_mode: bool,
        min_detection_confidence: float,
        min_tracking_confidence: float,
        max_instances: int,
        model_dir: str | Path | None = None,
    ) -> None:
        if source not in MODEL_FILES:
            raise BGFSError(f"unknown landmark source {source!r}")
        self.source = source
        self.ids = [int(i) for i in landmark_ids]
        self.video_mode = video_mode
        self.model_path = find_model(source, model_dir)
        self._conf = (min_detection_confidence, min_tracking_confidence)
        self._max_instances = max_instances
        self._landmarker = self._create()
        self._closed = False

    def _create(self):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        det, track = self._conf
        base = BaseOptions(model_asset_path=str(self.model_path))
        mode = vision.RunningMode.VIDEO if self.video_mode else vision.RunningMode.IMAGE
        if self.source == "hands":
            cls, opts = vision.HandLandmarker, vision.HandLandmarkerOptions(
                base_options=base, running_mode=mode, num_hands=self._max_instances,
                min_hand_detection_confidence=det, min_hand_presence_confidence=track, min_tracking_confidence=track,
            )  # fmt: skip
        elif self.source == "face_mesh":
            cls, opts = vision.FaceLandmarker, vision.FaceLandmarkerOptions(
                base_options=base, running_mode=mode, num_faces=1,
                min_face_detection_confidence=det, min_face_presence_confidence=track, min_tracking_confidence=track,
            )  # fmt: skip
        else:
            cls, opts = vision.PoseLandmarker, vision.PoseLandmarkerOptions(
                base_options=base, running_mode=mode, num_poses=1,
                min_pose_detection_confidence=det, min_pose_presence_confidence=track, min_tracking_confidence=track,
            )  # fmt: skip
        self._mp_image = lambda frame: mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)
        try:
            return cls.create_from_options(opts)
        except (RuntimeError, ValueError) as e:
            raise BGFSError(f"model file {self.model_path} cannot be loaded ({e}); download it again") from None

    def _xy(self, landmarks) -> np.ndarray:
        return np.array([(landmarks[i].x, landmarks[i].y) for i in self.ids], np.float32)

    def process(self, frame: np.ndarray, timestamp_ms: int) -> list[RawInstance]:
        """Landmarks in one RGB uint8 frame; in video mode ``timestamp_ms`` must increase from call to call."""
        if self._closed:
            raise BGFSError("this detector is closed: make a new one")
        if self._landmarker is None:
            self._landmarker = self._create()
        image = self._mp_image(frame)
        if self.video_mode:
            res = self._landmarker.detect_for_video(image, int(timestamp_ms))
        else:
            res = self._landmarker.detect(image)
        if self.source == "hands":
            # Tasks handedness (mediapipe>=0.10.15) is the hand as seen in a non-mirrored image.
            return [
                RawInstance(self._xy(lms), None, cats[0].category_name.lower(), float(cats[0].score))
                for lms, cats in zip(res.hand_landmarks, res.handedness)
            ]
        if self.source == "face_mesh":
            return [RawInstance(self._xy(res.face_landmarks[0]), None, "", 1.0)] if res.face_landmarks else []
        if not res.pose_landmarks:
            return []
        lms = res.pose_landmarks[0]
        arr = np.array([(lms[i].x, lms[i].y, lms[i].visibility or 0.0) for i in self.ids], np.float32)
        return [RawInstance(arr[:, :2], arr[:, 2], "", 1.0)]

    def reset(self) -> None:
        # A landmarker's tracks and clock cannot be rewound: a new one is made on the next frame.
        if self.video_mode and self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None
        self._closed = True
