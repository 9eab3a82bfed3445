"""Scoring time per frame beside bare MediaPipe on the same frames.

    python bench/bench_score.py [--frames 86] [--reps 3] [--regions hands,face,full_body] [--report]

hands: the real GIF (320x240) repeated to --frames; face / full_body: 32-frame pan/zoom clips of face_swapped.jpg
and messi5.jpg. Columns, in ms per frame (median of --reps, wall clock):
  bare MP   a bare ``mp.solutions`` loop (video mode, same confidences), graph built outside the timed loop
  detect    ``detection.detect_video`` alone (Detector construction + model load, MediaPipe, slots, boxes)
  score     ``metrics.score_video`` end to end (detect + tracks, metrics, summary)
  metrics   ``metrics.score_detections`` alone, on detections already made
  overhead  score - bare MP
  +ref      ``score_video`` with a reference whose detections are given (metrics twice + fidelity: PSNR, SSIM,
            flicker, ROI mask)
  report    ``report.write_report`` (plots, CSV, JSON, HTML), total seconds, with --report
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_detect import time_bare  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from bgfs_core.corruptions import photo_clip  # noqa: E402
from bgfs_core.detection import detect_video  # noqa: E402
from bgfs_core.metrics import score_detections, score_video  # noqa: E402
from bgfs_core.video_io import read_video  # noqa: E402

DATA = ROOT / "tests" / "data"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(region: str, frames: np.ndarray, fps: float, reps: int, report: bool) -> None:
    time_bare(region, frames[:4])  # warm-up: model load, XNNPACK setup
    bare, detect, full = [], [], []
    for r in range(reps):  # interleaved, so drift in machine load hits all
        for which in (("bare", "detect", "score"), ("score", "detect", "bare"))[r % 2]:
            if which == "bare":
                bare.append(time_bare(region, frames)[0])  # wall seconds
            elif which == "detect":
                detect.append(_timed(lambda: detect_video(frames, region, fps=fps)))
            else:
                full.append(_timed(lambda: score_video(frames, region, fps=fps)))
    res = score_video(frames, region, fps=fps)
    det = res.detections
    metrics = [_timed(lambda: score_detections(det)) for _ in range(max(reps, 3))]
    other = np.ascontiguousarray(frames[:, :, ::-1])
    ref_t = [_timed(lambda: score_video(frames, region, reference=other, fps=fps, detections=det, ref_detections=det))
             for _ in range(max(reps, 3))]  # fmt: skip
    n = len(frames)
    ms = lambda xs: 1e3 * float(np.median(xs)) / n  # noqa: E731
    line = (f"{region:<10} {frames.shape[2]}x{frames.shape[1]:<5} {n:>6} {ms(bare):>9.1f} {ms(detect):>9.1f} "
            f"{ms(full):>9.1f} {ms(full) - ms(bare):>+9.1f} {ms(metrics):>9.2f} {ms(ref_t):>9.2f}")  # fmt: skip
    if report:
        from bgfs_core.report import write_report

        with tempfile.TemporaryDirectory() as tmp:
            line += f" {_timed(lambda: write_report(tmp, res, frames)):>9.2f} s"
    score = "not found" if res.score is None else f"{res.score:.1f}"
    print(line + f"   (score {score})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=86)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--regions", default="hands,face,full_body")
    p.add_argument("--report", action="store_true", help="also time write_report")
    args = p.parse_args()
    regions = args.regions.split(",")
    print(f"{'region':<10} {'size':<9} {'frames':>6} {'bare MP':>9} {'detect':>9} {'score':>9} {'overhead':>9} {'metrics':>9} "
          f"{'+ref':>9}" + (f" {'report':>11}" if args.report else "") + "   (ms per frame)")
    if "hands" in regions:
        gif, fps = read_video(DATA / "clips" / "fingers-lq.gif")
        bench("hands", np.concatenate([gif] * (args.frames // len(gif) + 1))[: args.frames], fps, args.reps, args.report)
    from PIL import Image

    for region, name in (("face", "face_swapped.jpg"), ("full_body", "messi5.jpg")):
        if region in regions:
            img = np.asarray(Image.open(DATA / "images" / name).convert("RGB"))
            bench(region, photo_clip(img, 32), 16.0, args.reps, args.report)


if __name__ == "__main__":
    main()
