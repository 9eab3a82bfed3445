"""``bgfs fix``: fix the anatomy of a video's region by optimising its VAE latents against the critic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import FIXER_MODES, GRAD_DTYPES
from .common import add_config_arguments, config_from_args

HELP = ("fix a video (or a folder of videos): optimise its latents so the critic sees consistent anatomy; judge the "
        "result with MediaPipe")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--in", dest="input", default=None,
                   help="input video (mp4, mov, webm, gif or a folder of frames), or a folder of videos to fix each; "
                        "optional with --latents")
    p.add_argument("--out", required=True,
                   help="output video (.mp4 H.264, .gif, or a folder for PNG frames); for a folder of videos, the "
                        "folder that gets NAME.mp4 and NAME_report/ for each (videos already fixed there are skipped)")
    p.add_argument("--critic", default=None,
                   help="critic file (critic_best.safetensors from train-critic-cmd), trained on footage like this "
                        "video; without one the guide alone moves the region (warp mode, --guide > 0)")
    p.add_argument("--codec", choices=("auto", "pixel", "wan"), default="auto",
                   help="pixel: optimise the frames themselves (no VAE); wan: a Wan VAE via --model-id "
                        "(auto: wan when --model-id is given, else pixel)")  # fmt: skip
    p.add_argument("--model-id", default=None,
                   help="the Wan VAE: a file (ComfyUI's models/vae/wan_2.1_vae.safetensors for the 14B models, "
                        "wan2.2_vae.safetensors for TI2V-5B), a diffusers model folder, or a Hugging Face model id")
    p.add_argument("--vae-subfolder", default=None,
                   help="subfolder of a diffusers --model-id with the VAE (default: vae)")
    p.add_argument("--latents", default=None,
                   help="start from these latents instead of encoding --in: a bgfs generate --save-latents file, "
                        "or a .latent from ComfyUI's Save Latent node (a Wan sampler's LATENT); --in, if given, "
                        "lends its frame rate (when the file has none) and its sound")  # fmt: skip
    p.add_argument("--save-latents", default=None,
                   help="also write the output's latents (needs --model-id): .latent for ComfyUI's Load Latent (put "
                        "it in ComfyUI's input folder), .safetensors for bgfs fix --latents")  # fmt: skip
    p.add_argument("--region", default=None,
                   help="hands, face, feet, upper_body, full_body (default: the critic's, or roi.region without one)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: fixer.steps)")
    p.add_argument("--lr", type=float, default=None, help="step size (default: fixer.lr)")
    p.add_argument("--strength", type=float, default=None, help="anatomy weight against fidelity (fixer.strength)")
    p.add_argument("--mode", choices=FIXER_MODES, default=None, help="edit mode (default: fixer.mode)")
    p.add_argument("--guide", type=float, default=None,
                   help="pull towards the detector's cleaned keypoint trajectories, 0 = off (default: fixer.guide)")
    p.add_argument("--keep-first-frame", action="store_true", default=None,
                   help="leave the first frame bit for bit as it is: an I2V start image, or the last frame of the clip "
                        "before when clips are chained (default: fixer.keep_first_frame)")
    p.add_argument("--max-frames", type=int, default=0, help="read at most this many frames (0: all)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of --in: needed for a folder of frames, which carries none (default 25; Wan 2.2 "
                        "14B renders 16, TI2V-5B 24); for a video file it replaces the file's own; from --latents "
                        "alone, the file's (bgfs's), else 16 for Wan 2.1 VAE latents and 24 for Wan 2.2's")
    p.add_argument("--report-dir", default=None, help="where report.json and the plots go (default: OUT_report/)")
    p.add_argument("--device", default="cpu", help="torch device for the codec and critic (cpu, cuda, ...)")
    p.add_argument("--grad-dtype", choices=GRAD_DTYPES, default="auto",
                   help="dtype of the decoder the gradients go through, a copy of the VAE or --gradient-vae "
                   "(auto: bf16 on a GPU that computes it "
                   "natively, else fp32); bf16 took ~0.6x the step's time and memory on a CPU with native bf16. The "
                   "result is decoded and judged with the fp32 VAE")
    p.add_argument("--gradient-vae", default=None,
                   help="a Tiny AutoEncoder for Wan file (taew2_1.safetensors or lighttaew2_1.safetensors for the "
                        "Wan 2.1 VAE, lighttaew2_2.safetensors for Wan 2.2): the gradients go through it, several "
                        "times faster and lighter, while --model-id's VAE encodes, decodes the result and is judged; "
                        "in --grad-dtype")  # fmt: skip
    p.add_argument("--no-guard", action="store_true",
                   help="write the edit even when MediaPipe finds its geometry (detection, jitter, bone lengths, "
                        "joint limits) worse than the input's (default: keep the input)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..devices import check_device
    from ..fix_video import fix_video
    from ..video_io import check_fps

    if args.fps is not None:  # once, before a folder of videos loads the models and fails on each video
        check_fps(args.fps, "--fps")
    check_device(args.device)  # before MediaPipe reads the video, not at the fixer's first step
    cfg = config_from_args(
        args, **{"fixer.steps": args.steps, "fixer.lr": args.lr, "fixer.strength": args.strength,
                 "fixer.mode": args.mode, "fixer.guide": args.guide, "fixer.keep_first_frame": args.keep_first_frame}
    )  # fmt: skip
    videos = _folder_of_videos(args)
    if videos is not None:
        return _fix_each(cfg, args, videos)
    result = fix_video(cfg, _request(args, args.input, args.out, args.report_dir))
    print(result.summary)
    return 0


def _request(args: argparse.Namespace, source: str, output: str, report_dir: str | None):
    from ..fix_video import FixVideoRequest

    return FixVideoRequest(
        input=source, output=output, critic=args.critic, codec=args.codec, model_id=args.model_id,
        vae_subfolder=args.vae_subfolder, latents=args.latents, region=args.region, max_frames=args.max_frames,
        report_dir=report_dir, device=args.device, grad_dtype=args.grad_dtype, gradient_vae=args.gradient_vae,
        save_latents=args.save_latents,
        progress=not args.quiet, guard=not args.no_guard, fps=args.fps,
    )  # fmt: skip


def _folder_of_videos(args: argparse.Namespace) -> list[Path] | None:
    """The videos of ``--in`` when it is a folder of videos (not of frames), else None (one video)."""
    from ..errors import BGFSError
    from ..video_io import VIDEO_EXTENSIONS, holds_frames, is_video_file, list_videos

    if args.input is None:  # --latents alone: fix_video checks that they were given
        return None
    src = Path(args.input)
    if not src.is_dir():
        return None
    if holds_frames(src):  # the frames of one video; video files beside them would be ignored without a word
        if any(is_video_file(p) for p in src.iterdir()):
            raise BGFSError(f"{src} holds both image frames and video files: give each video's frames a folder of "
                            "their own (a folder of videos is fixed video by video)")  # fmt: skip
        return None
    if args.latents:  # --in then lends one video's rate and sound, or is left out
        raise BGFSError(f"--in {src} is a folder of videos, but --latents are one video's: give --in the video they "
                        "were made from (for its frame rate and sound), or leave --in out")  # fmt: skip
    if args.report_dir or args.save_latents:
        raise BGFSError("--save-latents and --report-dir name one video's files: fix a folder of videos without "
                        "them (each report goes to OUT/NAME_report/)")  # fmt: skip
    out = Path(args.out)
    if (out.exists() and not out.is_dir()) or (not out.exists() and out.suffix.lower() in VIDEO_EXTENSIONS):
        raise BGFSError(f"--in {src} is a folder of videos, so --out must be a folder (got {out})")
    if out.resolve() == src.resolve():
        raise BGFSError(f"--out must be another folder than --in ({src}): inputs are never overwritten, and the "
                        "reports' plots would be read as videos next time")  # fmt: skip
    videos = list_videos(src)
    names: dict[str, Path] = {}
    for video in videos:
        key = _stem(video).lower()  # A.mp4 and a.gif are one file on a case-insensitive disk
        if key in names:
            raise BGFSError(f"{names[key].name} and {video.name} would both be fixed into "
                            f"{out / (_stem(video) + '.mp4')}: rename one")  # fmt: skip
        names[key] = video
    return videos


def _stem(video: Path) -> str:
    """The name a video's output gets: a file's stem, a folder of frames' whole name (clip.001 stays clip.001)."""
    return video.name if video.is_dir() else video.stem


def _fix_each(cfg, args: argparse.Namespace, videos: list[Path]) -> int:
    """Fix every video into ``--out``/NAME.mp4; one that fails is named and the others go on; a video whose output
    and report are already there is skipped, so a stopped batch resumes."""
    out = Path(args.out)
    made_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _fix_into(cfg, args, videos, out)
    finally:  # a batch none of whose videos was written leaves no empty folder that looks like a result
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _fix_into(cfg, args: argparse.Namespace, videos: list[Path], out: Path) -> int:
    import copy

    from ..errors import BGFSError, OutOfMemoryError
    from ..fix_video import fix_video, load_fix_models

    rows: list[tuple[str, str]] = []
    failed, skipped = [], 0
    models = None  # the critic and codec, loaded for the first video to fix and kept for the others

    def table() -> None:
        print(f"\nbgfs fix: {len(videos)} videos in {args.input} -> {out}")
        for name, verdict in rows:
            print(f"  {name}: {verdict}")

    for i, video in enumerate(videos, 1):
        target, report_dir = out / f"{_stem(video)}.mp4", out / f"{_stem(video)}_report"
        if target.is_file() and (report_dir / "report.json").is_file():
            print(f"[{i}/{len(videos)}] {video.name}: already fixed in {target}, skipped")
            rows.append((video.name, "skipped (already fixed)"))
            skipped += 1
            continue
        print(f"[{i}/{len(videos)}] {video.name} -> {target}")
        request = _request(args, str(video), str(target), str(report_dir))
        if models is None:  # a critic or VAE that does not load stops the batch: no video would fix
            models = load_fix_models(copy.deepcopy(cfg), request)
        try:  # a copy per video: the fix sets the region it found on its config
            result = fix_video(copy.deepcopy(cfg), request, models)
        except BGFSError as exc:
            if isinstance(exc, OutOfMemoryError):  # the next video would run out too: it says what to make smaller
                table()
                raise BGFSError(f"{video.name}: {exc}") from exc
            print(f"bgfs fix: {video.name}: error: {exc}", file=sys.stderr)
            rows.append((video.name, f"failed: {exc}"))
            failed.append(video.name)
            continue
        except Exception:  # not a bad input but a fault: stop, after saying how far the batch got
            table()
            print(f"bgfs fix: {video.name}: stopped by an unexpected error (below)", file=sys.stderr)
            raise
        print(result.summary)
        rows.append((video.name, _verdict(result.report)))
    table()
    if failed:
        done = len(videos) - len(failed) - skipped
        raise BGFSError(f"{len(failed)} of {len(videos)} videos failed ({', '.join(failed)}); {done} fixed, {skipped} "
                        "skipped as already fixed")  # fmt: skip
    return 0


def _verdict(report: dict) -> str:
    """One line of MediaPipe's judgement of a fix: geometry before -> after and whether the edit was kept."""
    judge = report.get("judge", {})
    before, after = judge.get("geometry_before"), judge.get("geometry_after")
    text = "not found" if before is None else f"geometry {before:.1f} -> " + ("not found" if after is None else f"{after:.1f}")
    if judge.get("guard_kept_input"):
        return text + ", worse: the input was kept"
    return text + ("" if report.get("fixer", {}).get("changed") else ", nothing changed")
