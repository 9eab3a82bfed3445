"""``bgfs train-critic-cmd``: train the heatmap critic on the ROI cache that ``bgfs precompute`` built."""

from __future__ import annotations

import argparse

from .common import add_config_arguments, config_from_args

HELP = "train the heatmap critic on the ROI cache (writes OUT_DIR/critic_best.safetensors); resumes by default"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out-dir", default="outputs/critic", help="where the critic, its checkpoints and log go")
    p.add_argument("--epochs", type=int, default=None, help="total epochs (default: critic.epochs); more than a finished run "
                   "had go on at the learning rate its schedule ended on")
    p.add_argument("--cache-dir", default=None, help="ROI cache to train on (default: data.cache_dir)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: critic.lr)")
    p.add_argument("--batch-size", type=int, default=None, help="crops per step (default: critic.batch_size)")
    p.add_argument("--num-workers", type=int, default=None, help="cache loading workers (default: critic.num_workers)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT_DIR holds a training state")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def run(args: argparse.Namespace) -> int:
    from ..train_critic import PCK_THRESHOLD, train_critic

    cfg = config_from_args(
        args, **{"data.cache_dir": args.cache_dir, "critic.lr": args.lr, "critic.batch_size": args.batch_size,
                 "critic.num_workers": args.num_workers, "critic.epochs": args.epochs}
    )  # fmt: skip
    result = train_critic(cfg, args.out_dir, resume=not args.no_resume, progress=not args.quiet)
    pck = "n/a (nothing held out)" if result.best_val_pck is None else f"{result.best_val_pck:.3f}"
    print(
        f"critic: {result.best_path} (epoch {result.best_epoch}, validation PCK@{PCK_THRESHOLD:g} {pck}); "
        f"{len(result.history)} epoch(s) in {result.seconds:.0f} s"
    )
    return 0
