"""``bgfs precompute``: detect the region in every video and build the ROI cache the critic trains on."""

from __future__ import annotations

import argparse

from ..errors import BGFSError
from .common import add_config_arguments, config_from_args

HELP = "build the ROI cache (crops, heatmaps, keypoints) from a folder of videos; resumes an interrupted run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--videos-dir", default=None, help="folder of videos / frame folders (default: data.videos_dir)")
    p.add_argument("--cache-dir", default=None, help="where the cache goes (default: data.cache_dir)")
    p.add_argument("--region", default=None, help="hands | face | feet | upper_body | full_body (default: roi.region)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing cache in CACHE_DIR and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..cache import build_cache, load_manifest

    cfg = config_from_args(
        args, **{"data.videos_dir": args.videos_dir, "data.cache_dir": args.cache_dir, "roi.region": args.region}
    )
    summary = build_cache(cfg, progress=not args.quiet, overwrite=args.overwrite)
    print(summary.format())
    if summary.sources_total and summary.sources_failed == summary.sources_total:
        raise BGFSError(f"none of the {summary.sources_total} video(s) in {cfg.data.videos_dir!r} could be read "
                        f"({summary.errors[0]}{', ...' if len(summary.errors) > 1 else ''}): convert them to mp4 "
                        "(H.264) or to folders of PNG frames")  # fmt: skip
    clips = len(load_manifest(cfg.data.cache_dir)["clips"])
    if clips == 0:
        raise BGFSError(f"no clip shows the {cfg.roi.region} region: check the videos and roi.region, or run again "
                        "with lower detect.min_detection_confidence / roi.min_conf (--set KEY=VALUE)")  # fmt: skip
    print(f"{clips} clip(s) in {cfg.data.cache_dir}: ready to train the critic on")
    return 0
