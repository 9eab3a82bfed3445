"""``bgfs fix``: fix the anatomy of a video's region by optimising its VAE latents against the critic."""

from __future__ import annotations

import argparse

from ..config import FIXER_MODES, GRAD_DTYPES
from .common import add_config_arguments, config_from_args

HELP = "fix a video: optimise its latents so the critic sees consistent anatomy; judge the result with MediaPipe"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--in", dest="input", required=True, help="input video (mp4, mov, webm, gif or a folder of frames)")
    p.add_argument("--out", required=True, help="output video (.mp4 H.264, .gif, or a folder for PNG frames)")
    p.add_argument("--critic", default=None,
                   help="critic file (critic_best.safetensors from train-critic-cmd), trained on footage like this "
                        "video; without one the guide alone moves the region (warp mode, --guide > 0)")
    p.add_argument("--codec", choices=("auto", "pixel", "wan"), default="auto",
                   help="pixel: optimise the frames themselves (no VAE); wan: a Wan VAE via --model-id "
                        "(auto: wan when --model-id is given, else pixel)")  # fmt: skip
    p.add_argument("--model-id", default=None, help="diffusers Wan model id or local folder holding the VAE")
    p.add_argument("--vae-subfolder", default="vae", help="subfolder of --model-id with the VAE (default: vae)")
    p.add_argument("--latents", default=None,
                   help="start from these latents (safetensors from bgfs generate --save-latents) instead of "
                        "encoding --in")  # fmt: skip
    p.add_argument("--region", default=None,
                   help="hands, face, feet, upper_body, full_body (default: the critic's, or roi.region without one)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: fixer.steps)")
    p.add_argument("--lr", type=float, default=None, help="step size (default: fixer.lr)")
    p.add_argument("--strength", type=float, default=None, help="anatomy weight against fidelity (fixer.strength)")
    p.add_argument("--mode", choices=FIXER_MODES, default=None, help="edit mode (default: fixer.mode)")
    p.add_argument("--guide", type=float, default=None,
                   help="pull towards the detector's cleaned keypoint trajectories, 0 = off (default: fixer.guide)")
    p.add_argument("--max-frames", type=int, default=0, help="read at most this many frames (0: all)")
    p.add_argument("--report-dir", default=None, help="where report.json and the plots go (default: OUT_report/)")
    p.add_argument("--device", default="cpu", help="torch device for the codec and critic (cpu, cuda, ...)")
    p.add_argument("--grad-dtype", choices=GRAD_DTYPES, default="auto",
                   help="dtype of the VAE copy the gradients go through (auto: bf16 on a GPU that has it, else fp16; "
                   "fp32 on the CPU); bf16 took ~0.6x the step's time and memory on a CPU with native bf16. The "
                   "result is decoded and judged with the fp32 VAE")
    p.add_argument("--no-guard", action="store_true",
                   help="write the edit even when MediaPipe finds its geometry (detection, jitter, bone lengths, "
                        "joint limits) worse than the input's (default: keep the input)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..fix_video import FixVideoRequest, fix_video

    cfg = config_from_args(
        args, **{"fixer.steps": args.steps, "fixer.lr": args.lr, "fixer.strength": args.strength,
                 "fixer.mode": args.mode, "fixer.guide": args.guide}
    )  # fmt: skip
    request = FixVideoRequest(
        input=args.input, output=args.out, critic=args.critic, codec=args.codec, model_id=args.model_id,
        vae_subfolder=args.vae_subfolder, latents=args.latents, region=args.region, max_frames=args.max_frames,
        report_dir=args.report_dir, device=args.device, grad_dtype=args.grad_dtype, progress=not args.quiet,
        guard=not args.no_guard,
    )  # fmt: skip
    result = fix_video(cfg, request)
    print(result.summary)
    return 0
