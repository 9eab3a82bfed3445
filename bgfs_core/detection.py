"""Run MediaPipe on frames and return :class:`Detections` with fixed instance slots per region.

Two backends give the raw landmarks: ``solutions`` (legacy ``mp.solutions``, models bundled in mediapipe<=0.10.21)
and ``tasks`` (the Tasks API, ``.task`` model files). This module turns their output into pixel keypoints, per
keypoint confidence, slots (left/right), boxes and scores, the same way for both.

Slots: hands and feet are (left, right) of the person. Both backends report landmarks "as seen in the image", so
for ``mirrored=True`` (selfie footage) left and right slots, and left/right keypoints, are swapped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .detections import Detections
from .errors import BGFSError
from .regions import Region, get_region
from .shots import frame_look, shot_changed

if TYPE_CHECKING:
    from .config import Config

BACKENDS = ("solutions", "tasks")

# what a host wants called as MediaPipe goes through the frames (`watch_frames`)
_frame_watch: ContextVar[Callable[[int, int | None], None] | None] = ContextVar("bgfs_frame_watch", default=None)


@contextlib.contextmanager
def watch_frames(callback: Callable[[int, int | None], None]) -> Iterator[None]:
    """Inside the block, every Detector calls ``callback(done, total)`` before each frame and once at the end
    (``total`` None for an iterable of unknown length): a host's progress bar and cancel check, which may raise to
    stop. MediaPipe is one call per frame that nothing else can interrupt."""
    token = _frame_watch.set(callback)
    try:
        yield
    finally:
        _frame_watch.reset(token)



class RawInstance(NamedTuple):
    """One instance as a backend found it: landmarks of ``landmark_ids`` in normalised image coordinates."""

    xy: np.ndarray  # float32 [L, 2], x / width and y / height
    visibility: np.ndarray | None  # float32 [L] for pose, None where the model gives none
    label: str  # hands: "left" / "right" for a non-mirrored image; "" otherwise
    score: float


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise BGFSError(f"a frame must be an RGB uint8 array of shape [H, W, 3], got {got}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise BGFSError(f"a frame must be at least 2x2 pixels, got {frame.shape[1]}x{frame.shape[0]}")
    return np.ascontiguousarray(frame)


class Detector:
    """MediaPipe detection of one region; ``video_mode`` tracks across consecutive frames."""

    def __init__(
        self,
        region: str,
        backend: str = "solutions",
        model_dir: str | Path | None = None,
        video_mode: bool = True,
        min_detection_confidence: float = 0.3,
        min_tracking_confidence: float = 0.3,
        mirrored: bool = False,
    ) -> None:
        self.region: Region = get_region(region)
        if backend not in BACKENDS:
            raise BGFSError(f"unknown detection backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        for name, value in (("min_detection_confidence", min_detection_confidence),
                            ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= value <= 1.0:
                raise BGFSError(f"{name} must be between 0 and 1, got {value}")
        self.backend_name = backend
        self.video_mode = bool(video_mode)
        self.mirrored = bool(mirrored)
        self.min_detection_confidence = float(min_detection_confidence)
        spec = self.region
        # Each backend extracts only the landmarks this region uses (28 of 468 for the face mesh).
        self._landmark_ids = np.unique(np.concatenate([np.asarray(ids) for ids in spec.source_ids]))
        self._cols = [np.searchsorted(self._landmark_ids, ids) for ids in spec.source_ids]
        # Pose landmarks always come back, guessed when hidden: a slot counts only where some are visible.
        self._min_conf = self.min_detection_confidence if spec.source == "pose" else 0.0
        kwargs = {
            "source": spec.source, "landmark_ids": self._landmark_ids, "video_mode": self.video_mode,
            "min_detection_confidence": self.min_detection_confidence,
            "min_tracking_confidence": float(min_tracking_confidence), "max_instances": spec.num_instances,
        }  # fmt: skip
        if backend == "solutions":
            from .mp_solutions import SolutionsBackend

            self._backend = SolutionsBackend(**kwargs)
        else:
            from .mp_tasks import TasksBackend

            self._backend = TasksBackend(model_dir=model_dir, **kwargs)
        self._last_ts = -1
        self._dirty = False
        self._hand_centres = np.full((2, 2), np.nan, np.float32)  # where each hand slot was last seen (tie-break)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget tracking state, so the next frame starts a new video."""
        self._backend.reset()
        self._last_ts = -1
        self._dirty = False
        self._hand_centres[:] = np.nan

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- detection ---------------------------------------------------------------------------------------------
    def detect(self, frame_rgb: np.ndarray, timestamp_ms: int | None = None) -> Detections:
        """Detect in one frame (``T`` = 1). In video mode, consecutive calls track; timestamps must increase."""
        frame = _check_frame(frame_rgb)
        h, w = frame.shape[:2]
        out = Detections.empty(self.region.name, 1, (h, w))
        self._detect_into(frame, self._next_timestamp(timestamp_ms), out, 0)
        return self._finish(out)

    def detect_video(
        self, frames: np.ndarray | Iterable[np.ndarray], fps: float = 25.0, progress: bool = False
    ) -> Detections:
        """Detect in every frame of a video (array ``[T, H, W, 3]`` or an iterable of ``[H, W, 3]`` frames)."""
        if not fps or not np.isfinite(fps) or fps <= 0:
            raise BGFSError(f"fps must be a number > 0, got {fps}")
        if self._dirty:
            self.reset()  # a new video must not inherit the last one's tracks
        if isinstance(frames, np.ndarray):
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise BGFSError(f"frames must be an RGB uint8 array of shape [T, H, W, 3], got "
                                f"{frames.dtype} {list(frames.shape)}")
            total: int | None = len(frames)
        else:
            total = len(frames) if hasattr(frames, "__len__") else None
        iterator = iter(frames)
        if progress:
            from tqdm import tqdm

            iterator = iter(tqdm(iterator, total=total, desc=f"detect {self.region.name}", unit="frame"))
        step = 1000.0 / fps
        start = self._last_ts + 1
        out: Detections | None = None
        t = capacity = 0
        watch = _frame_watch.get()
        look = None
        for frame in iterator:
            if watch is not None:
                watch(t, total)
            frame = _check_frame(frame)
            if out is None:
                hw = frame.shape[:2]
                out = Detections.empty(self.region.name, total or 64, hw)
                capacity = out.num_frames
            elif frame.shape[:2] != out.frame_hw:
                raise BGFSError(f"frame {t} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is "
                                f"{out.frame_hw[1]}x{out.frame_hw[0]}: all frames of a video must have one size")
            if self.video_mode:  # after a cut, tracking would look for the region where the last shot had it
                previous, look = look, frame_look(frame)
                if previous is not None and shot_changed(previous, look):
                    self._backend.reset()
                    self._hand_centres[:] = np.nan
            if t >= capacity:  # an iterable of unknown length: grow the buffers
                out = _concat(out, Detections.empty(self.region.name, capacity, out.frame_hw))
                capacity = out.num_frames
            # at least 1 ms apart: above 1000 fps, rounding to milliseconds would repeat a timestamp
            self._detect_into(frame, self._next_timestamp(start + max(t, int(round(t * step)))), out, t)
            t += 1
        if out is None:
            raise BGFSError("no frames to detect in: the video is empty")
        if watch is not None:
            watch(t, total)
        return self._finish(out.select(slice(0, t)) if t < out.num_frames else out)

    def _next_timestamp(self, timestamp_ms: int | None) -> int:
        ts = self._last_ts + 40 if timestamp_ms is None else int(timestamp_ms)  # 40 ms: 25 fps
        if self.video_mode and ts <= self._last_ts:
            raise BGFSError(f"timestamps must increase in video mode (got {ts} ms after {self._last_ts} ms); "
                            "call reset() before a new video")
        self._last_ts = max(ts, 0)
        self._dirty = True
        return self._last_ts

    def _detect_into(self, frame: np.ndarray, timestamp_ms: int, out: Detections, t: int) -> None:
        instances = self._backend.process(frame, timestamp_ms)
        if not instances:
            return
        spec = self.region
        h, w = frame.shape[:2]
        if spec.source == "hands":
            slots = _hand_slots(instances, self._hand_centres if self.video_mode else None)
            for k in _remembered(instances):
                self._hand_centres[slots[k]] = np.nanmean(instances[k].xy, 0)
            pairs = [(slot, inst, self._cols[slot]) for slot, inst in zip(slots, instances)]
        else:  # one face / one pose: each slot takes its landmark ids from it (feet: left and right leg)
            pairs = [(slot, instances[0], cols) for slot, cols in enumerate(self._cols)]
        scale = np.array([w, h], np.float32)
        for slot, inst, cols in pairs:
            xy = inst.xy[cols] * scale
            if inst.visibility is not None:
                conf = np.clip(inst.visibility[cols], 0.0, 1.0)
            else:
                conf = np.full(len(cols), inst.score if spec.source == "hands" else 1.0, np.float32)
            inside = (xy >= 0).all(-1) & (xy[:, 0] < w) & (xy[:, 1] < h)
            conf[~inside] = 0.0
            if not (conf > self._min_conf).any():
                continue
            out.keypoints[t, slot] = xy
            out.confidence[t, slot] = conf
            out.present[t, slot] = True
            out.scores[t, slot] = inst.score if spec.source == "hands" else float(conf.sum()) / len(conf)

    def _finish(self, det: Detections) -> Detections:
        if self.mirrored:  # the person's left is the image's right: swap slots and left/right keypoints
            perm = np.asarray(self.region.flip_permutation())
            det.keypoints = det.keypoints[:, ::-1][:, :, perm].copy()
            det.confidence = det.confidence[:, ::-1][:, :, perm].copy()
            det.present = det.present[:, ::-1].copy()
            det.scores = det.scores[:, ::-1].copy()
        det.boxes = _boxes(det.keypoints, det.confidence, self._min_conf)
        return det


def _hand_slots(instances: list[RawInstance], last_centres: np.ndarray | None = None) -> list[int]:
    """Slot per hand: 0 = left, 1 = right, from the handedness label.

    Two hands with one label: one label is wrong (a one-frame flicker on a hand-shaped object, or one hand found
    twice). Splitting them by x would swap both slots for that frame, so, in video mode, the surer of the two
    takes the slot last seen nearest to it (``last_centres [2, 2]``, normalised, NaN where never seen) and the
    other hand the other slot. Where only one slot was seen, the hand nearer its place takes it. With no such
    history, by x.
    """
    instances = instances[:2]
    slots = [0 if inst.label == "left" else 1 for inst in instances]
    surer = _surer_of_a_tie(instances)
    if surer is not None:
        centres = [np.nanmean(inst.xy, 0) for inst in instances]
        known = np.isfinite(last_centres).all(-1) if last_centres is not None else np.zeros(2, bool)
        if known.all():
            gaps = [float(np.linalg.norm(centres[surer] - c)) for c in last_centres]
            slots[surer] = int(np.argmin(gaps))
            slots[1 - surer] = 1 - slots[surer]
        elif known.any():  # one slot seen before: it goes to the hand nearer where it was, sure or not
            seen = int(np.argmax(known))
            nearer = int(np.argmin([float(np.linalg.norm(c - last_centres[seen])) for c in centres]))
            slots[nearer], slots[1 - nearer] = seen, 1 - seen
        else:  # a person facing the camera shows their right hand on the image's left
            slots = [1, 0] if centres[0][0] <= centres[1][0] else [0, 1]
    return slots


def _surer_of_a_tie(instances: list[RawInstance]) -> int | None:
    """Of the first two hands, when their labels name one slot, the index of the one with the higher handedness
    score (the first on a tie); None when there are fewer than two or their labels differ."""
    if len(instances) < 2 or (instances[0].label == "left") != (instances[1].label == "left"):
        return None
    return 0 if instances[0].score >= instances[1].score else 1


def _remembered(instances: list[RawInstance]) -> list[int]:
    """Which hands' places ``_hand_slots`` remembers for the next frame: all, but of two with one label only the
    surer one. The other is often the same hand found twice, and remembering it in the other slot would pull the
    hand there at its next duplicate."""
    surer = _surer_of_a_tie(instances)
    return list(range(min(2, len(instances)))) if surer is None else [surer]


def _boxes(keypoints: np.ndarray, confidence: np.ndarray, min_conf: float) -> np.ndarray:
    """``keypoint_box`` for every frame and slot at once: [T, I, 4], NaN where no keypoint is confident."""
    ok = np.isfinite(keypoints).all(-1) & (confidence > min_conf)
    x, y = keypoints[..., 0], keypoints[..., 1]
    boxes = np.stack([
        np.where(ok, x, np.inf).min(-1), np.where(ok, y, np.inf).min(-1),
        np.where(ok, x, -np.inf).max(-1), np.where(ok, y, -np.inf).max(-1),
    ], axis=-1).astype(np.float32)  # fmt: skip
    boxes[~ok.any(-1)] = np.nan
    return boxes


def _concat(a: Detections, b: Detections) -> Detections:
    return Detections(
        a.region, np.concatenate([a.keypoints, b.keypoints]), np.concatenate([a.confidence, b.confidence]),
        np.concatenate([a.present, b.present]), np.concatenate([a.boxes, b.boxes]),
        np.concatenate([a.scores, b.scores]), a.frame_hw,
    )  # fmt: skip


def detect_video(frames: np.ndarray | Iterable[np.ndarray], region: str, fps: float = 25.0,
                 progress: bool = False, **kwargs: object) -> Detections:
    """One-shot: build a :class:`Detector` (``kwargs`` as its constructor), detect in all frames, close it."""
    with Detector(region, **kwargs) as det:  # type: ignore[arg-type]
        return det.detect_video(frames, fps=fps, progress=progress)


def detector_kwargs(cfg: Config) -> dict:
    """``Detector`` keyword arguments from the ``detect`` section of a config (all but the region)."""
    d = cfg.detect
    return {"backend": d.backend, "model_dir": d.model_dir, "min_detection_confidence": d.min_detection_confidence,
            "min_tracking_confidence": d.min_tracking_confidence, "mirrored": d.mirrored}  # fmt: skip


def detector_from_config(cfg: Config, video_mode: bool = True) -> Detector:
    """A :class:`Detector` for ``cfg.roi.region`` with the ``detect`` section's settings."""
    return Detector(cfg.roi.region, video_mode=video_mode, **detector_kwargs(cfg))
