"""``bgfs demo``: the whole sidecar on the bundled real hand video, on the CPU, with no Wan weights."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..config import FIXER_MODES, Config
from .common import add_config_arguments, config_from_args

HELP = ("precompute and train a small critic on the bundled hand video, then fix a copy of it with warped, jittering "
        "fingers (pixel codec, CPU, a few minutes)")

# In a checkout (or an editable install) the clip the tests use; a wheel carries it as the package bgfs_core.samples
# (pyproject.toml maps that package to tests/data/clips).
BUNDLED_VIDEO = Path(__file__).resolve().parents[2] / "tests" / "data" / "clips" / "fingers-lq.gif"
WHEEL_VIDEO = Path(__file__).resolve().parents[1] / "samples" / "fingers-lq.gif"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", default="outputs/demo", help="folder for the cache, critic, fixed video and report")
    p.add_argument("--video", default=None, help="video to fix (default: the bundled hand video)")
    p.add_argument("--epochs", type=int, default=None, help="critic training epochs (default: critic.epochs)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of the clips held out to validate the critic (default 0: with one video, held-out "
                        "clips are frames the critic never learns, and the fix measured better without them)")
    p.add_argument("--steps", type=int, default=None, help="fixer steps (default: fixer.steps)")
    p.add_argument("--mode", choices=FIXER_MODES, default=None, help="fixer edit mode (default: fixer.mode)")
    p.add_argument("--corrupt", default="finger_jitter,region_jitter",
                   help="corruptions applied to the video before fixing it ('' to fix the video as it is)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..cache import build_cache
    from ..fix_video import FixVideoRequest, fix_video
    from ..train_critic import OtherRunError, train_critic

    out = Path(args.out)
    video = Path(args.video) if args.video else bundled_video()
    cfg = demo_config(args)
    _check_video(video, out)
    corruptions = _corruptions(args.corrupt)  # before minutes of training, not after
    print(f"[1/3] precompute: {video} -> {cfg.data.cache_dir}")
    out.mkdir(parents=True, exist_ok=True)
    name = _source_name(video)
    with tempfile.TemporaryDirectory(prefix=".precompute.", dir=out) as staged:
        # the video alone in a folder of its own: the critic learns the video it fixes, not every one beside it
        cfg.data.videos_dir = staged
        (shutil.copytree if video.is_dir() else shutil.copy2)(video, Path(staged) / name)
        overwrite = _holds_another_cache(Path(cfg.data.cache_dir), name, cfg)  # an earlier demo in this --out
        print(build_cache(cfg, progress=not args.quiet, overwrite=overwrite).format())
    print(f"[2/3] train the critic ({cfg.critic.epochs} epochs) -> {out / 'critic'}")
    try:
        trained = train_critic(cfg, out / "critic", progress=not args.quiet)
    except OtherRunError:  # an earlier demo in this folder with other settings: its critic is not this one's
        print(f"{out / 'critic'} holds a critic trained with other settings: training a new one")
        trained = train_critic(cfg, out / "critic", resume=False, progress=not args.quiet)
    held_out = (f"validation PCK@0.1 {trained.best_val_pck}" if trained.best_val_pck is not None
                else "trained on every clip, none held out")  # fmt: skip
    print(f"critic: {trained.best_path} ({held_out})")
    target = video
    if corruptions:
        target = out / "corrupted.mp4"
        _write_corrupted(video, target, corruptions, cfg.roi.region)
        print(f"corrupted copy ({args.corrupt}): {target}")
    print(f"[3/3] fix {target} with the pixel codec ({cfg.fixer.mode} mode, {cfg.fixer.steps} steps)")
    result = fix_video(cfg, FixVideoRequest(input=str(target), output=str(out / "fixed.mp4"),
                                            critic=str(trained.best_path), codec="pixel",
                                            report_dir=str(out / "report"), progress=not args.quiet))  # fmt: skip
    print(result.summary)
    return 0


def bundled_video() -> Path:
    """The bundled hand clip: the checkout's, else the wheel's copy (``BUNDLED_VIDEO`` when neither is there)."""
    return next((p for p in (BUNDLED_VIDEO, WHEEL_VIDEO) if p.is_file()), BUNDLED_VIDEO)


def demo_config(args: argparse.Namespace) -> Config:
    """The demo's configuration: the defaults and ``--set``, then the demo's own flags."""
    out = Path(args.out)
    return config_from_args(
        args, **{"data.cache_dir": str(out / "cache"), "critic.epochs": args.epochs, "fixer.steps": args.steps,
                 "fixer.mode": args.mode, "critic.val_fraction": args.val_fraction}
    )  # fmt: skip


def _check_video(video: Path, out: Path) -> None:
    from ..errors import BGFSError
    from ..video_io import holds_frames, is_video_file, video_info

    if video == BUNDLED_VIDEO and not video.exists():  # neither a checkout nor a wheel with the clip in it
        raise BGFSError(f"the bundled hand video is missing (looked for {BUNDLED_VIDEO} and {WHEEL_VIDEO}): "
                        "reinstall BGFS (pip install -e . in its checkout), or give a video with --video")
    if not (is_video_file(video) or (video.is_dir() and holds_frames(video))):
        raise BGFSError(f"--video {video}: give a video file or a folder of frames"
                        + ("" if video.exists() else " (it does not exist)"))  # fmt: skip
    if video.is_dir() and out.resolve().is_relative_to(video.resolve()):
        raise BGFSError(f"--out {out} lies inside --video {video}: give the demo a folder outside the frames")
    for written in _WRITES:  # a video left by an earlier demo, say: the demo would write over it as it reads it
        if video.resolve().is_relative_to((out / written).resolve()):
            raise BGFSError(f"--video {video} is a file this demo writes ({out / written}): copy it out of --out "
                            "first, or give the demo another --out")
    if video.is_file():  # an empty or broken file is named now, not as the cache's copy of it after precompute
        video_info(video, timed=False)


_WRITES = ("corrupted.mp4", "fixed.mp4", "report", "cache", "critic")  # what the demo writes into --out


def _corruptions(text: str) -> list[str]:
    """The --corrupt names, checked ('' for none)."""
    from ..corruptions import CORRUPTIONS
    from ..errors import BGFSError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise BGFSError(f"--corrupt {text}: unknown corruption {unknown[0]!r}: choose from {', '.join(CORRUPTIONS)}")
    return names


def _source_name(video: Path) -> str:
    """The video's name in the cache, with a digest of where it is and what it holds: another video.mp4 (or this
    one, changed) is another source, not one already cached."""
    import hashlib

    real = video.resolve()
    stat = real.stat()
    digest = hashlib.sha1(f"{real}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    return f"{real.stem}_{digest}{real.suffix}"


def _holds_another_cache(cache_dir: Path, name: str, cfg: Config) -> bool:
    """Whether the cache holds clips of another video than ``name``, or was cut with other settings (an earlier
    demo with other --set values): either way it is built anew."""
    import json

    from ..cache import cache_settings

    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    others = any(src.get("name") != name for src in manifest.get("sources", []))
    have = manifest.get("config", {})
    return others or any(have.get(key) != value for key, value in cache_settings(cfg).items())


def _write_corrupted(video: Path, target: Path, names: list[str], region: str) -> None:
    """A copy of ``video`` with the named corruptions (seeded), so the fix has defects to remove."""
    from ..corruptions import corrupt_all
    from ..detection import detect_video
    from ..video_io import read_video, write_video

    frames, fps = read_video(video)
    det = detect_video(frames, region, fps=fps)
    write_video(target, corrupt_all(frames, det, names), fps)
