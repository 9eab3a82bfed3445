"""``bgfs score``: MediaPipe's anatomy score of a video (optionally against a reference) and an HTML report."""

from __future__ import annotations

import argparse
import sys

from .common import add_config_arguments, config_from_args

HELP = ("score the anatomy of a body region in a video with MediaPipe (0-100, with its parts) and write a report; "
        "with --ref also before/after plots and fidelity (PSNR/SSIM inside and outside the ROI, flicker)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--in", dest="input", required=True, help="the video to score (file or folder of frames)")
    p.add_argument("--ref", default=None, help="a reference video of the same length and size (e.g. before fixing)")
    p.add_argument("--region", default=None, help="hands | face | feet | upper_body | full_body (default: roi.region)")
    p.add_argument("--out", required=True, help="report folder: scores.json, per_frame.csv, *.png, report.html")
    p.add_argument("--backend", default=None, help="MediaPipe backend: solutions | tasks (default: detect.backend)")
    p.add_argument("--model-dir", default=None, help="folder of .task models for --backend tasks (detect.model_dir)")
    p.add_argument("--max-frames", type=int, default=0, help="score only the first N frames (0: all)")
    p.add_argument("--fail-below", type=float, default=None, metavar="SCORE",
                   help="exit with status 1 when the score is below SCORE or the region is not found (a gate)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_folder_possible
    from ..detection import detector_kwargs
    from ..errors import BGFSError
    from ..metrics import score_video
    from ..report import write_report
    from ..video_io import check_report_apart, read_video

    if args.fail_below is not None and not 0.0 <= args.fail_below <= 100.0:  # NaN too: a gate that never shuts
        raise BGFSError(f"--fail-below is a score from 0 to 100, got {args.fail_below}")
    check_folder_possible(args.out, "--out")
    check_report_apart(args.out, "--out", args.input, args.ref)
    cfg = config_from_args(args, **{"roi.region": args.region, "detect.backend": args.backend,
                                    "detect.model_dir": args.model_dir})  # fmt: skip
    frames, fps = read_video(args.input, max_frames=args.max_frames)
    ref = None
    if args.ref:
        ref, _ = read_video(args.ref, max_frames=args.max_frames)
        frames, ref = _even_padding_undone(frames, ref)
    result = score_video(frames, cfg.roi.region, reference=ref, fps=fps, detector_kwargs=detector_kwargs(cfg),
                         roi=(cfg.roi.margin, cfg.roi.min_conf, cfg.roi.smooth), progress=not args.quiet)
    paths = write_report(args.out, result, frames, ref)
    print(result.summary)
    print(f"Report: {paths['html']}")
    if args.fail_below is not None and (result.score is None or result.needs_fixing(args.fail_below)):
        why = "no score (region not found)" if result.score is None else f"score {result.score:.1f}"
        print(f"bgfs score: {why} is below {args.fail_below:g}", file=sys.stderr)
        return 1
    return 0


def _even_padding_undone(frames, ref):
    """An odd-sized video comes out of an H.264 writer a row or column larger (yuv420p needs even sizes; BGFS
    repeats the edge): compare the two on the size they share, and say so."""
    (h, w), (rh, rw) = frames.shape[1:3], ref.shape[1:3]
    if (h, w) == (rh, rw) or abs(h - rh) > 1 or abs(w - rw) > 1 or min(h, rh) % 2 == 0 and min(w, rw) % 2 == 0:
        return frames, ref
    hh, ww = min(h, rh), min(w, rw)
    print(f"bgfs score: comparing the videos at {ww}x{hh}, the odd size one of them had before H.264's even-size "
          "padding", file=sys.stderr)
    return frames[:, :hh, :ww], ref[:, :hh, :ww]
