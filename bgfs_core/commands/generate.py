"""`bgfs generate`: a Wan 2.2 (or 2.1) video through diffusers, optionally with its raw latents for `bgfs fix`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BGFSError

HELP = "generate a video with a Wan 2.2 diffusers model (T2V-A14B, I2V-A14B, TI2V-5B); optionally keep its latents"



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-id", required=True,
                   help="local diffusers model folder, or a Hugging Face id (from the local cache, else downloaded) "
                        "(e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers)")
    p.add_argument("--kind", default="auto", choices=["auto", "t2v", "i2v", "ti2v"],
                   help="model kind; auto reads it from the model's configs")
    p.add_argument("--prompt", default=None, help="text prompt (needs the model's text encoder)")
    p.add_argument("--negative-prompt", default=None, help="what to avoid (used when --guidance-scale > 1)")
    p.add_argument("--prompt-embeds", default=None, metavar="FILE.safetensors",
                   help="precomputed 'prompt_embeds' (+ 'negative_prompt_embeds'): no text encoder is loaded; "
                        "--prompt is then only recorded in the latents metadata")
    p.add_argument("--save-prompt-embeds", default=None, metavar="FILE.safetensors",
                   help="also write the embeddings of --prompt / --negative-prompt, for later --prompt-embeds runs")
    p.add_argument("--image", default=None, help="first frame (required for I2V models, optional for TI2V-5B)")
    p.add_argument("--out", required=True, help="output video: .mp4/.mov/.m4v/.mkv (H.264), .gif, or a folder")
    p.add_argument("--num-frames", type=int, default=81, help="frames, 1 + 4k (default 81)")
    p.add_argument("--height", type=int, default=None,
                   help="multiple of 16 (Wan 2.1 VAE) or 32 (TI2V-5B); default: the model's native area in the "
                        "image's aspect ratio (480x832, TI2V-5B 704x1280)")
    p.add_argument("--width", type=int, default=None, help="see --height")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 40 for A14B, 50 for TI2V-5B)")
    p.add_argument("--guidance-scale", type=float, default=5.0, help="classifier-free guidance (high-noise expert)")
    p.add_argument("--guidance-scale-2", type=float, default=None,
                   help="guidance of the low-noise expert of A14B models (default: --guidance-scale)")
    p.add_argument("--boundary-ratio", type=float, default=None,
                   help="A14B expert switch, as a fraction of the 1000 training timesteps (model default: "
                        "T2V 0.875, I2V 0.9)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: 16, TI2V-5B 24)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed and saved)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="transformer/text encoder dtype (auto: bf16 on a GPU, fp32 on the CPU); the VAE stays fp32")
    p.add_argument("--cpu-offload", action="store_true",
                   help="keep models on the CPU and move each to the GPU while it runs (less GPU memory)")
    p.add_argument("--save-latents", default=None, metavar="FILE.safetensors",
                   help="also write the raw VAE latents [1, C, t, h, w] with their metadata, for `bgfs fix`")


def _check_paths(args: argparse.Namespace) -> None:
    from ..atomic import check_folder_possible
    from ..video_io import check_writable

    check_writable(args.out, "--out")
    for flag, value in (("--save-latents", args.save_latents), ("--save-prompt-embeds", args.save_prompt_embeds)):
        if not value:
            continue
        if Path(value).suffix.lower() != ".safetensors":
            raise BGFSError(f"{flag} {value}: the file name must end in .safetensors")
        if Path(value).is_dir():  # before minutes of generating, not after
            raise BGFSError(f"{flag} {value} is a folder: name a file in it, e.g. {Path(value) / 'out.safetensors'}")
        check_folder_possible(Path(value).parent, f"{flag} {value}")
    inputs = {Path(p).resolve() for p in (args.image, args.prompt_embeds) if p}
    outputs = [Path(p).resolve() for p in (args.out, args.save_latents, args.save_prompt_embeds) if p]
    if any(o in inputs for o in outputs) or len(set(outputs)) != len(outputs):
        raise BGFSError("the output paths must differ from each other and from the inputs")


def _no_text_encoder(args: argparse.Namespace, model: str, have_embeds: bool) -> None:
    """Say why this run needs the text encoder that the model lacks, in the flags that asked for it."""
    if args.save_prompt_embeds:
        raise BGFSError(f"--save-prompt-embeds encodes --prompt with the model's text encoder, and {model} has "
                        "none: save the embeddings with a model folder that has its text_encoder and tokenizer")
    if have_embeds:  # guidance > 1 without negative embeddings in the file: they would be encoded from the text
        raise BGFSError(f"--prompt-embeds {args.prompt_embeds} holds no 'negative_prompt_embeds', which "
                        f"--guidance-scale {args.guidance_scale:g} > 1 needs, and {model} has no text encoder to "
                        "encode --negative-prompt: write the file with both (--save-prompt-embeds with a model that "
                        "has its text encoder), or use --guidance-scale 1")
    raise BGFSError(f"{model} has no text encoder/tokenizer: pass --prompt-embeds instead of --prompt")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import secrets

    from .. import generate as g
    from ..atomic import atomic_path
    from ..video_io import check_fps, write_video

    # Everything cheap first: paths, frame rate, frame count, image, embeddings file, the model's configs and
    # size rules; then what the model needs for the prompt, before it loads.
    _check_paths(args)
    g.check_settings(steps=args.steps, guidance_scale=args.guidance_scale, guidance_scale_2=args.guidance_scale_2,
                     boundary_ratio=args.boundary_ratio, seed=args.seed, height=args.height, width=args.width)
    if args.fps is not None:  # before the model's configs are read (from the Hugging Face cache or the network)
        check_fps(args.fps, "--fps")
    if not args.prompt and not args.prompt_embeds:
        raise BGFSError("give --prompt or --prompt-embeds")
    if args.save_prompt_embeds and not args.prompt:
        raise BGFSError("--save-prompt-embeds encodes --prompt: give --prompt")
    g.check_num_frames(args.num_frames)
    image = g.read_image(args.image) if args.image else None
    embeds, negative_embeds = g.load_prompt_embeds(args.prompt_embeds) if args.prompt_embeds else (None, None)
    info = g.inspect_model(args.model_id, args.kind)
    g.check_num_frames(args.num_frames, info.temporal_ratio)
    dh, dw = g.default_size(info.kind, info.spatial_multiple, None if image is None else (image.height, image.width))
    height, width = args.height or dh, args.width or dw
    g.check_size(height, width, info.spatial_multiple)
    fps = args.fps if args.fps is not None else g.default_fps(info.kind)  # --fps was checked above
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    guidance = args.guidance_scale > 1.0
    need_text_encoder = embeds is None or bool(args.save_prompt_embeds) or (guidance and negative_embeds is None)
    if need_text_encoder and not info.has_text_encoder:
        _no_text_encoder(args, info.source, embeds is not None)

    pipe = g.load_pipeline(args.model_id, info.kind, args.device, args.dtype, image=image is not None,
                           text_encoder=need_text_encoder, cpu_offload=args.cpu_offload)
    if embeds is not None and args.prompt:
        print(f"bgfs generate: using the embeddings in {args.prompt_embeds}; --prompt is only recorded")
    if args.save_prompt_embeds:
        embeds, negative_embeds = g.encode_prompts(pipe, args.prompt, args.negative_prompt, guidance)
        g.save_prompt_embeds(args.save_prompt_embeds, embeds, negative_embeds, args.prompt, args.negative_prompt or "")
    frames, latents = g.generate_video(
        pipe, None if embeds is not None else args.prompt, args.negative_prompt, prompt_embeds=embeds,
        negative_prompt_embeds=negative_embeds, image=image, num_frames=args.num_frames, height=height, width=width,
        steps=args.steps, guidance_scale=args.guidance_scale, guidance_scale_2=args.guidance_scale_2,
        boundary_ratio=args.boundary_ratio, seed=seed)

    # the latents are written first and moved in after the video: a failure in either leaves an earlier run's video
    # and latents together, not this run's video beside that run's latents
    with contextlib.ExitStack() as stage:
        if args.save_latents:
            boundary = args.boundary_ratio if args.boundary_ratio is not None else info.boundary_ratio
            g.save_latents(stage.enter_context(atomic_path(args.save_latents)), latents, {
                "model_id": str(args.model_id), "kind": info.kind, "num_frames": int(len(frames)), "height": height,
                "width": width, "fps": fps, "seed": seed, "steps": args.steps or g.default_steps(info.kind),
                "guidance_scale": args.guidance_scale, "guidance_scale_2": args.guidance_scale_2,
                "boundary_ratio": boundary, "prompt": args.prompt or "", "negative_prompt": args.negative_prompt or "",
                "image": str(args.image) if args.image else None})
        write_video(args.out, frames, fps)
    print(f"bgfs generate: wrote {args.out} ({len(frames)} frames, {width}x{height}, {fps:g} fps, seed {seed})")
    if args.save_latents:
        print(f"bgfs generate: wrote {args.save_latents} (latents {list(latents.shape)}, {info.vae} VAE space)")
    return 0
