"""A whole Latent Anatomy Fixer run (`fix_latents`) at Wan 2.2's video size, through the full-size Wan VAE.

    python bench/bench_latent_fix.py --device cuda [--vae 2.1] [--frames 81] [--steps 30] [--grad-dtypes bf16,fp32]

What the Latent Anatomy Fixer node does between the sampler and VAE Decode: random latents of --frames frames at
832x480 (the cost does not depend on what they show), a hand-sized ROI (--roi px) drifting across the frame in
every frame, a heatmap critic of the default size (random weights; --critic FILE for a trained one), the default
settings (warp mode, 30 steps, each decoder block checkpointed) and the gradients through the VAE in each of
--grad-dtypes (bf16: a bf16 copy of the VAE, as `bgfs fix --grad-dtype auto` makes on a GPU; the fix's own
evaluations go through that copy too, and the fp32 VAE stays loaded beside it, as `bgfs fix` keeps it to decode
the result: about 0.5 GB of the peak that the node, with ComfyUI's bf16 VAE, does not hold; tae-bf16: a TAEHV in
bf16, random weights, its run including the decode of the window's first frames by the VAE that measures how
alike the two decode, as the node's gradient_vae has it; `bgfs fix --gradient-vae` compares with the decode it
already has instead). Side by side in one
run, after an untimed 1-step fix of 5 frames (CUDA loads its kernels on first use): the fix's seconds, their share
per step (its set-up and its evaluations before and after included), the peak memory (on CUDA the device's, from
torch; on a CPU the process's peak resident memory, which includes everything before it, so only the first row's
is its own) and the size of the window it decoded (the ROI's boxes over all frames, its margin and the decoder's
reach), in pixels. On CUDA it also splits the peak by phase: up to the end of the first step (set-up, the
evaluation before, step 1), the largest of the later steps, and the evaluation after the last step.

--impl comfy runs ComfyUI's own WanVAE class (COMFYUI_DIR) as the node runs it: ComfyUI's VAE in the gradients'
dtype (ComfyUI keeps the Wan VAE in bf16 on a GPU) wrapped by ModuleCodec, with no fp32 copy beside it; tae-
rows then use ComfyUI's TAEHV class.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def drifting_hand(num_frames: int, frame_hw: tuple[int, int], roi: int):
    """Detections of one hand: 21 keypoints spread over bench_fixer_step's drifting ``roi``-pixel box."""
    import numpy as np
    from bench_fixer_step import drifting_boxes

    from bgfs_core.detections import Detections

    h, w = frame_hw
    det = Detections.empty("hands", num_frames, frame_hw)
    spread = np.random.default_rng(0).uniform(-roi / 2, roi / 2, (21, 2)).astype(np.float32)
    boxes = drifting_boxes(num_frames, w, h, roi)
    det.boxes[:, 0] = boxes
    det.keypoints[:, 0] = spread + ((boxes[:, :2] + boxes[:, 2:]) / 2).astype(np.float32)[:, None]
    det.confidence[:, 0] = det.scores[:, 0] = 0.9
    det.present[:, 0] = True
    return det


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--vae", default="2.1", choices=("2.1", "2.2"), help="2.1: 16 channels, 8x (Wan 2.2 A14B); "
                   "2.2: 48 channels, 16x (TI2V-5B)")  # fmt: skip
    p.add_argument("--frames", type=int, default=81, help="pixel frames (1+4k)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--roi", type=int, default=160, help="the hand's box, px")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--grad-dtypes", default="bf16,fp32",
                   help="comma-separated: fp32, bf16, fp16 (a copy of the VAE in that dtype), tae-fp32, tae-bf16, "
                        "tae-fp16 (a TAEHV, random weights, in that dtype)")  # fmt: skip
    p.add_argument("--critic", default=None, help="a critic file (default: the default-size critic, random weights)")
    p.add_argument("--impl", default="diffusers", choices=("diffusers", "comfy"),
                   help="the VAE class: diffusers' AutoencoderKLWan, or ComfyUI's WanVAE (needs COMFYUI_DIR)")
    p.add_argument("--chunk-frames", type=int, default=None, help="latent frames per decode chunk (default: the "
                   "fixer's)")  # fmt: skip
    a = p.parse_args()
    unknown = {n.removeprefix("tae-") for n in a.grad_dtypes.split(",")} - {"fp32", "bf16", "fp16"}
    if unknown:
        p.error(f"--grad-dtypes: unknown {', '.join(sorted(unknown))}; use fp32, bf16, fp16, each with or without tae-")
    if a.impl == "comfy" and not os.environ.get("COMFYUI_DIR"):
        p.error("--impl comfy: set COMFYUI_DIR to a ComfyUI checkout")

    import torch
    from bench_fixer_step import comfy_wan_codec, proc_status_gb, tae_proxy

    from bgfs_core.codecs import DiffusersWanCodec, GradientProxyCodec, wan_vae_config
    from bgfs_core.critic import CriticSpec, HeatmapCritic
    from bgfs_core.critic_io import load_critic
    from bgfs_core.fixer import FixSettings, fix_latents

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    if a.critic:
        critic, spec, _ = load_critic(a.critic, device=dev)
    else:
        spec = CriticSpec.for_region("hands")
        critic = HeatmapCritic(spec).eval().requires_grad_(False)
        torch.nn.init.normal_(critic.head.weight, std=0.3)  # untrained, with visible, varied peaks
        critic.to(dev)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    ratio = 8 if a.vae == "2.1" else 16
    if a.impl == "diffusers":
        base = DiffusersWanCodec.from_config(wan_vae_config(a.vae), seed=0)
        base.vae.to(dev)

    def codec_for(name: str):
        """What the gradients go through (``name``: a dtype, or tae- and a dtype): a copy of the diffusers VAE beside
        the fp32 one that `bgfs fix` keeps, or ComfyUI's module itself in that dtype, as the node has it; with tae-,
        a TAEHV in that dtype (bgfs_core's beside the fp32 diffusers VAE, as `bgfs fix --gradient-vae` pairs them;
        ComfyUI's beside ComfyUI's VAE in that dtype, as the node has its gradient_vae). Called as the node calls
        it: the VAE decodes the window's first frames to measure the TAEHV."""
        dtype = dtypes[name.removeprefix("tae-")]
        if a.impl == "comfy":
            codec = comfy_wan_codec(a.vae, a.device, dtype)
            return tae_proxy(codec, "comfy", a.device, dtype) if name.startswith("tae-") else codec
        if name.startswith("tae-"):
            return tae_proxy(base, "bgfs", a.device, dtype)
        return base if dtype == torch.float32 else GradientProxyCodec(base, base.in_dtype(dtype), same_weights=True)

    phases: list[float] = []  # the peak (GB) up to each step's end, reset after each

    def on_step(step, total, losses, preview) -> None:
        if cuda:
            torch.cuda.synchronize(dev)
            phases.append(torch.cuda.max_memory_allocated(dev) / 2**30)
            torch.cuda.reset_peak_memory_stats(dev)

    def run(codec, frames: int, steps: int) -> tuple[float, float, str]:
        z = torch.randn(1, codec.latent_channels, codec.latent_frames(frames), a.height // ratio, a.width // ratio,
                        generator=torch.Generator().manual_seed(1))  # the LATENT stays on the CPU, as in ComfyUI
        det = drifting_hand(frames, (a.height, a.width), a.roi)
        phases.clear()
        if cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        started = time.perf_counter()
        result = fix_latents(z, codec, critic, spec, det, FixSettings(steps=steps, chunk_frames=a.chunk_frames),
                             on_step=on_step, device=dev)  # fmt: skip
        if cuda:
            torch.cuda.synchronize(dev)
            phases.append(torch.cuda.max_memory_allocated(dev) / 2**30)  # the evaluation after the last step
        seconds = time.perf_counter() - started
        assert result.report["changed"] and torch.isfinite(result.latents).all()
        peak = max(phases) if cuda else proc_status_gb("VmHWM")
        _, h, w = result.window.decoded_shape
        return seconds, peak, f"{w * ratio}x{h * ratio}"

    impl = "diffusers AutoencoderKLWan" if a.impl == "diffusers" else "ComfyUI WanVAE"
    print(f"Wan {a.vae} VAE ({impl}, full size, random weights) on {dev}, {a.frames} frames at {a.width}x{a.height}, "
          f"{a.roi} px hand ROI, {a.steps} steps, chunk frames {a.chunk_frames or 'default'}", flush=True)
    print(f"{'gradients through':<18} {'fix s':>8} {'per step':>8} {'peak GB':>8} {'decoded':>9}"
          + (f" {'to step 1':>9} {'steps 2+':>9} {'after':>9}" if cuda else ""), flush=True)  # fmt: skip
    rows = {}
    for name in a.grad_dtypes.split(","):
        codec = codec_for(name)
        if cuda:
            run(codec, 5, 1)  # untimed: CUDA's first use of each kernel
        seconds, peak, decoded = run(codec, a.frames, a.steps)
        rows[name] = (seconds, peak)
        split = ""
        if cuda:
            later = max(phases[1:-1], default=float("nan"))
            split = f" {phases[0]:>9.2f} {later:>9.2f} {phases[-1]:>9.2f}"
        print(f"{name:<18} {seconds:>8.1f} {seconds / max(a.steps, 1):>8.2f} {peak:>8.2f} {decoded:>9}{split}",
              flush=True)
        del codec
    if len(rows) > 1:
        (first, (s0, m0)), *rest = rows.items()
        for name, (s, m) in rest:
            memory = f", peak memory x{m / m0:.2f}" if cuda else ""  # a process's peak only grows
            print(f"  {name} against {first}: time x{s / s0:.2f}{memory}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
