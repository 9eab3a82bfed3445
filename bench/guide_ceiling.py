"""How far the guide alone can go: realise its targets exactly, with no optimiser, no critic and no grid.

    python bench/guide_ceiling.py [--seeds 0,1,2,3] [--reach 1.0]
    python bench/guide_ceiling.py --video tests/data/body/cam01.mp4 --trim 0:49 --scale 0.25 --region upper_body

The fixer's guide moves ROI Detect's keypoints towards `targets.kinematic_targets` (its readings cleaned: a robust
temporal filter and constant bone lengths). Here each corrupted copy of `bench/eval_fixer.py` (finger_jitter +
region_jitter) is warped so that every detected keypoint lands on its target exactly, through the field family
that made the corruption (`corruptions.move_chains`: chains of points, Gaussian reach of a finger's width x
``--reach``), which can express the corruption's own inverse. So what is printed is a ceiling for any warp the
guide drives, whatever its grid. MediaPipe judges, as in the evaluation.

``--targets truth`` asks the same field for the corruption's own answer instead: each keypoint of the clean clip is
moved from where the corruption put it (found through `corruptions.corruption_map`) back to where it was. That is
the ceiling of a warp driven by 21 keypoints that are exactly right; `eval_fixer.py`'s "exact undo" row, a dense
field, is the same answer at every pixel.

It also prints how far MediaPipe's reading of the warped frames follows the applied move (the slope and
correlation of the re-read move on the applied one, and the residual in pixels): the guide assumes a reading moves
with the pixels it sits on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=str(ROOT / "tests/data/clips/fingers-lq.gif"))
    p.add_argument("--region", default="hands")
    p.add_argument("--trim", default=None, metavar="START:STOP", help="frames of the video to use, as eval_fixer.py's")
    p.add_argument("--scale", type=float, default=1.0, help="resize the frames, as eval_fixer.py's")
    p.add_argument("--seeds", default="0,1,2,3", help="corruption seeds, as eval_fixer.py's")
    p.add_argument("--reach", type=float, default=1.0, help="the field's reach in finger widths")
    p.add_argument("--sigma", type=float, default=None, help="the targets' temporal smoothing in frames "
                   "(default: FixSettings.target_sigma)")
    p.add_argument("--pose-sigma", type=float, default=None, help="default: FixSettings.target_pose_sigma")
    p.add_argument("--gain", type=float, default=1.0, help="move each keypoint this many times its way to the "
                   "target (1: onto it; more makes up for a re-reading that follows a move only part of the way)")
    p.add_argument("--targets", choices=("guide", "truth"), default="guide",
                   help="guide: ROI Detect's keypoints on the damaged frames onto the guide's targets; truth: the "
                        "clean keypoints from where the corruption put them back to where they were")
    args = p.parse_args()

    import numpy as np
    from eval_fixer import read_part  # bench/ is this script's folder, first on sys.path

    from bgfs_core.corruptions import (
        CHAIN_WIDTH,
        corrupt_all,
        corruption_map,
        move_chains,
        region_chains,
        where_corrupted,
    )
    from bgfs_core.detection import detect_video
    from bgfs_core.fixer import FixSettings
    from bgfs_core.metrics import score_video
    from bgfs_core.targets import kinematic_targets

    frames, fps = read_part(args.video, args.trim, args.scale)
    region = args.region
    clean = detect_video(frames, region, fps=fps)
    chains = region_chains(clean.spec)
    width = CHAIN_WIDTH[clean.spec.source] * args.reach
    s = FixSettings()

    def judge(video: np.ndarray) -> dict:
        a = score_video(video, region, fps=fps).anatomy
        return {k: a.parts[k].raw for k in ("jitter", "bone_cv")}

    print(f"clean clip: {judge(frames)}")
    names = ["finger_jitter", "region_jitter"]
    changes = []
    for seed in [int(v) for v in args.seeds.split(",")]:
        corrupted = corrupt_all(frames, clean, names, seed=seed)
        det = detect_video(corrupted, region, fps=fps)
        if args.targets == "truth":  # from the corruption's truth back to the clean keypoints
            where = corruption_map(clean, names, seed=seed)
            src, valid = np.full_like(clean.keypoints, np.nan), clean.seen_keypoints(0.0)
            for t, i in zip(*np.nonzero(clean.present)):
                ok = valid[t, i]
                kx, ky = clean.keypoints[t, i, ok].T.astype(np.float32)
                src[t, i, ok] = np.stack(where_corrupted(where[t], kx[None], ky[None], iterations=40), -1)[0]
            dst = clean.keypoints
        else:
            tg = kinematic_targets(det, min_conf=s.min_conf,
                                   sigma=s.target_sigma if args.sigma is None else args.sigma,
                                   pose_sigma=s.target_pose_sigma if args.pose_sigma is None else args.pose_sigma)
            src, valid, dst = det.keypoints, det.present[..., None] & tg.valid, tg.keypoints
        moved = corrupted.copy()
        for t, i in zip(*np.nonzero(valid.any(-1))):
            ok = valid[t, i]
            if ok.sum() < 2:
                continue
            kp = src[t, i]
            scale = float(np.linalg.norm(kp[ok].max(0) - kp[ok].min(0)))
            to = kp + args.gain * (dst[t, i] - kp)
            moved[t], _ = move_chains(moved[t], kp, to, ok, chains, width, scale)
        reread = detect_video(moved, region, fps=fps)
        applied, got = [], []
        for t, i in zip(*np.nonzero(valid.any(-1) & reread.present)):
            ok = valid[t, i] & np.isfinite(reread.keypoints[t, i]).all(-1)
            applied.append(args.gain * (dst[t, i] - src[t, i])[ok])
            got.append((reread.keypoints[t, i] - src[t, i])[ok])
        a, g = np.concatenate(applied).ravel(), np.concatenate(got).ravel()
        before, after = judge(corrupted), judge(moved)
        change = {k: after[k] / before[k] - 1 for k in before}
        changes.append(change)
        print(f"seed {seed}: jitter {before['jitter']:.4f} -> {after['jitter']:.4f} ({change['jitter']:+.0%}), "
              f"bone_cv {before['bone_cv']:.4f} -> {after['bone_cv']:.4f} ({change['bone_cv']:+.0%}); MediaPipe "
              f"follows the applied move with slope {np.dot(a, g) / np.dot(a, a):.2f}, correlation "
              f"{np.corrcoef(a, g)[0, 1]:.2f}: applied {np.abs(a).mean():.2f} px, residual {np.abs(g - a).mean():.2f} px "
              "(mean per coordinate)", flush=True)  # fmt: skip
    print(f"\nmean over seeds {args.seeds}: jitter {np.mean([c['jitter'] for c in changes]):+.1%}, "
          f"bone_cv {np.mean([c['bone_cv'] for c in changes]):+.1%} (targets: -50%, -33%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
