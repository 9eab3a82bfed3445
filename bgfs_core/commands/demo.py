"""``bgfs demo``: the whole sidecar on the bundled real hand video, on the CPU, with no Wan weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_arguments, config_from_args

HELP = "precompute, train a small critic and fix the bundled hand video with the pixel codec (CPU, a few minutes)"

BUNDLED_VIDEO = Path(__file__).resolve().parents[2] / "tests" / "data" / "clips" / "fingers-lq.gif"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", default="outputs/demo", help="folder for the cache, critic, fixed video and report")
    p.add_argument("--video", default=str(BUNDLED_VIDEO), help="video to fix (default: the bundled hand video)")
    p.add_argument("--epochs", type=int, default=None, help="critic training epochs (default: critic.epochs)")
    p.add_argument("--steps", type=int, default=None, help="fixer steps (default: fixer.steps)")
    p.add_argument("--mode", choices=("latent", "warp"), default=None, help="fixer edit mode (default: fixer.mode)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..cache import build_cache
    from ..fix_video import FixVideoRequest, fix_video
    from ..train_critic import train_critic

    out = Path(args.out)
    video = Path(args.video)
    cfg = config_from_args(
        args, **{"data.videos_dir": str(video.parent) if video.is_file() else str(video),
                 "data.cache_dir": str(out / "cache"), "critic.epochs": args.epochs, "fixer.steps": args.steps,
                 "fixer.mode": args.mode}
    )  # fmt: skip
    print(f"[1/3] precompute: {cfg.data.videos_dir} -> {cfg.data.cache_dir}")
    print(build_cache(cfg, progress=not args.quiet).format())
    print(f"[2/3] train the critic ({cfg.critic.epochs} epochs) -> {out / 'critic'}")
    trained = train_critic(cfg, out / "critic", progress=not args.quiet)
    print(f"critic: {trained.best_path} (validation PCK@0.1 {trained.best_val_pck})")
    print(f"[3/3] fix {video} with the pixel codec ({cfg.fixer.mode} mode, {cfg.fixer.steps} steps)")
    result = fix_video(cfg, FixVideoRequest(input=str(video), output=str(out / "fixed.mp4"),
                                            critic=str(trained.best_path), codec="pixel",
                                            report_dir=str(out / "report"), progress=not args.quiet))  # fmt: skip
    print(result.summary)
    return 0
