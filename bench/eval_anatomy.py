"""Does the anatomy score rank every corrupted copy of a real clip below its source? One table, per region.

    python bench/eval_anatomy.py [--clips-dir tests/data/clips] [--clip-region hands] [--seeds 0,1,2]
                                 [--strength 1.0] [--max-frames 0] [--no-photos] [--photo-frames 16]

Every video in --clips-dir is judged for --clip-region; unless --no-photos, 16-frame clips made from
tests/data/images/face_swapped.jpg (face) and messi5.jpg (full_body) with a slow pan/zoom are added. Each named
corruption (bgfs_core.corruptions) is applied with each seed; MediaPipe scores source and copy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgfs_core.corruptions import CORRUPTIONS, corrupt, photo_clip  # noqa: E402
from bgfs_core.metrics import score_video  # noqa: E402
from bgfs_core.video_io import list_videos, read_video  # noqa: E402

IMAGES = ROOT / "tests" / "data" / "images"


def _photo(name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips-dir", default=str(ROOT / "tests" / "data" / "clips"))
    ap.add_argument("--clip-region", default="hands", help="region judged in the clips of --clips-dir")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--no-photos", action="store_true")
    ap.add_argument("--photo-frames", type=int, default=16)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    clips: list[tuple[str, str, np.ndarray, float]] = []
    for path in list_videos(args.clips_dir):
        frames, fps = read_video(path, max_frames=args.max_frames)
        clips.append((args.clip_region, path.name, frames, fps))
    if not args.no_photos:
        clips.append(("face", "face_swapped.jpg (pan/zoom)", photo_clip(_photo("face_swapped.jpg"), args.photo_frames), 16.0))
        clips.append(("full_body", "messi5.jpg (pan/zoom)", photo_clip(_photo("messi5.jpg"), args.photo_frames), 16.0))

    header = f"{'region':<10} {'clip':<28} {'corruption':<17} {'seed':>4} {'source':>7} {'corrupt':>8} {'delta':>7}  below?"
    print(header)
    print("-" * len(header))
    total = below = 0
    started = time.perf_counter()
    for region, name, frames, fps in clips:
        source = score_video(frames, region, fps=fps)
        if source.score is None:
            print(f"{region:<10} {name:<28} {source.anatomy.message}")
            continue
        for corruption in CORRUPTIONS:
            for seed in seeds:
                bad = corrupt(frames, source.detections, corruption, seed=seed, strength=args.strength)
                res = score_video(bad, region, fps=fps)
                score = -1.0 if res.score is None else res.score  # not found: counts as ranked below
                ok = score < source.score
                total += 1
                below += ok
                shown = "not found" if res.score is None else f"{score:8.1f}"
                print(f"{region:<10} {name[:28]:<28} {corruption:<17} {seed:>4} {source.score:7.1f} {shown:>8} "
                      f"{score - source.score:+7.1f}  {'yes' if ok else 'NO'}", flush=True)  # fmt: skip
    print("-" * len(header))
    print(f"ranked below the source: {below}/{total}  ({time.perf_counter() - started:.0f} s)")
    return 0 if below == total else 1


if __name__ == "__main__":
    sys.exit(main())
