"""The pixel-space fix (the Image Anatomy Fixer's, and `bgfs fix` without a VAE) at Wan 2.2's video size.

    python bench/bench_pixel_fix.py [--frames 81] [--steps 30] [--critic FILE] [--out DIR]

The bundled hand clip (43 frames, 320x240) played forward and back to --frames, scaled 2x (the hand about 300 px)
and padded with its own edge to 832x480, then damaged as `bgfs demo` damages it (finger warps and jitter). Prints
the fix's time and the process's peak memory (this script's input building included: run it alone), and
MediaPipe's judgement from `bgfs fix`.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--critic", default=None, help="critic file (default: none, the guide alone)")
    p.add_argument("--out", default="outputs/bench_pixel_fix")
    args = p.parse_args()

    import numpy as np
    from PIL import Image

    from bgfs_core.cli import main as bgfs
    from bgfs_core.corruptions import corrupt_all
    from bgfs_core.detection import detect_video
    from bgfs_core.video_io import read_video, write_video

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, _ = read_video(ROOT / "tests" / "data" / "clips" / "fingers-lq.gif")
    order = [*range(len(frames)), *range(len(frames) - 2, 0, -1)] * (args.frames // (2 * len(frames)) + 1)
    big = np.stack([np.asarray(Image.fromarray(frames[i]).resize((640, 480), Image.Resampling.BICUBIC))
                    for i in order[: args.frames]])  # fmt: skip
    big = np.pad(big, ((0, 0), (0, 0), (96, 96), (0, 0)), mode="edge")
    damaged = corrupt_all(big, detect_video(big, "hands", fps=16.0), ["finger_jitter", "region_jitter"])
    write_video(out / "damaged.mp4", damaged, 16.0)
    cmd = ["fix", "--in", str(out / "damaged.mp4"), "--out", str(out / "fixed.mp4"), "--steps", str(args.steps),
           "--quiet", *(["--critic", args.critic] if args.critic else [])]  # fmt: skip
    started = time.perf_counter()
    code = bgfs(cmd)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"{args.frames} frames at 832x480, {args.steps} steps, {'critic' if args.critic else 'guide alone'}: "
          f"bgfs fix {seconds:.1f} s, peak memory {peak:.2f} GiB (the whole process)")
    return code


if __name__ == "__main__":
    sys.exit(main())
