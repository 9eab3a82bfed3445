"""Overhead of ``Detector.detect_video`` over a bare ``mp.solutions`` loop on the same frames and settings.

    python bench/bench_detect.py [--frames 200] [--reps 3] [--no-large] [--regions hands,face,full_body]

hands: the 43 GIF frames (320x240) repeated to --frames, and the same frames resized 2x (640x480).
face / full_body: face_swapped.jpg / messi5.jpg repeated to a short video (cheap, optional).
Both sides run in video mode with the same confidences; graphs are built outside the timed loop; runs are
interleaved (bare, ours, ours, bare, ...) and the median over --reps is reported, as wall-clock and as CPU
time of the process (steadier on a busy machine). "own work" replays recorded MediaPipe results through the
Detector, timing per frame what it adds alone (frame checks, landmark reads, slots, pixels, boxes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgfs_core.detection import Detector  # noqa: E402
from bgfs_core.video_io import read_video  # noqa: E402

DATA = ROOT / "tests" / "data"
CONF = 0.3


def _bare_graph(region: str):
    import mediapipe as mp

    sol = mp.solutions
    kw = {"static_image_mode": False, "min_detection_confidence": CONF, "min_tracking_confidence": CONF}
    if region == "hands":
        return sol.hands.Hands(max_num_hands=2, model_complexity=1, **kw)
    if region == "face":
        return sol.face_mesh.FaceMesh(max_num_faces=1, refine_landmarks=False, **kw)
    return sol.pose.Pose(model_complexity=1, smooth_landmarks=True, **kw)


def _clock() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])  # wall, CPU of all threads


def time_bare(region: str, frames: np.ndarray) -> np.ndarray:
    graph = _bare_graph(region)
    try:
        t0 = _clock()
        for frame in frames:
            graph.process(frame)
        return _clock() - t0
    finally:
        graph.close()


def time_detector(region: str, frames: np.ndarray) -> np.ndarray:
    with Detector(region, video_mode=True, min_detection_confidence=CONF, min_tracking_confidence=CONF) as det:
        t0 = _clock()
        det.detect_video(frames, fps=25.0)
        return _clock() - t0


class _Replay:
    """Stands in for a MediaPipe graph and returns recorded results: times the Detector's own work alone."""

    def __init__(self, recorded: list) -> None:
        self.recorded, self.i = recorded, 0

    def process(self, frame: np.ndarray):
        out = self.recorded[self.i % len(self.recorded)]
        self.i += 1
        return out

    def reset(self) -> None:
        self.i = 0

    def close(self) -> None:
        pass


def conversion_us(region: str, frames: np.ndarray) -> float:
    """Microseconds per frame that ``Detector`` adds around MediaPipe (checks, landmark reads, slots, boxes)."""
    with Detector(region, video_mode=True, min_detection_confidence=CONF, min_tracking_confidence=CONF) as det:
        graph = det._backend._graph
        recorded = [graph.process(f) for f in frames[:50]]
        det._backend._graph = _Replay(recorded)
        t0 = time.perf_counter()
        det.detect_video(frames, fps=25.0)
        dt = time.perf_counter() - t0
        det._backend._graph = graph
    return 1e6 * dt / len(frames)


def bench(name: str, region: str, frames: np.ndarray, reps: int) -> None:
    time_bare(region, frames[:5])  # warm-up: load models, first XNNPACK setup
    time_detector(region, frames[:5])
    bare, ours = [], []
    for r in range(reps):
        order = (("bare", "ours"), ("ours", "bare"))[r % 2]
        for which in order:
            (bare if which == "bare" else ours).append(
                time_bare(region, frames) if which == "bare" else time_detector(region, frames)
            )
    n = len(frames)
    (b, bc), (o, oc) = np.median(bare, axis=0), np.median(ours, axis=0)
    h, w = frames.shape[1:3]
    print(f"{name:<24} {w}x{h:<5} {n:>5}  {n / b:>8.1f}  {n / o:>8.1f}  {100 * (o - b) / b:>+8.1f}%"
          f"  {100 * (oc - bc) / bc:>+8.1f}%  {conversion_us(region, frames):>8.0f} us"
          f"   (bare {1e3 * b / n:.1f} ms/frame)")


def _resize(frames: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = frames.shape[1:3]
    size = (int(w * scale), int(h * scale))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def _photo_video(path: Path, n: int) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    return np.repeat(img[None], n, axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-large", action="store_true", help="skip the 2x resized hand video")
    p.add_argument("--regions", default="hands,face,full_body")
    args = p.parse_args()
    regions = args.regions.split(",")

    gif, _ = read_video(DATA / "clips" / "fingers-lq.gif")
    hands = np.concatenate([gif] * (args.frames // len(gif) + 1))[: args.frames]
    print(f"{'case':<24} {'size':<9} {'frames':>5}  {'bare fps':>8}  {'ours fps':>8}  {'wall +%':>9}  {'CPU +%':>9}"
          f"  {'own work':>11}")
    if "hands" in regions:
        bench("hands, GIF", "hands", hands, args.reps)
        if not args.no_large:
            bench("hands, GIF x2", "hands", _resize(hands, 2.0), args.reps)
    short = max(10, args.frames // 4)
    if "face" in regions:
        bench("face, face_swapped.jpg", "face", _photo_video(DATA / "images" / "face_swapped.jpg", short), args.reps)
    if "full_body" in regions:
        bench("full_body, messi5.jpg", "full_body", _photo_video(DATA / "images" / "messi5.jpg", short), args.reps)


if __name__ == "__main__":
    main()
