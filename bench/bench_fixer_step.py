"""One fixer step (decode -> differentiable ROI crop -> critic -> backward) at 832x480: windowed vs full-frame.

Full-size architectures with random weights: diffusers AutoencoderKLWan with the Wan 2.1 config (16 channels,
8x; the 14B models) or, with --vae 2.2, the Wan 2.2 config (48 channels, 16x; TI2V-5B) and, via COMFYUI_DIR,
ComfyUI's TAEHV as the gradient decoder. Every configuration runs in a fresh subprocess so its peak
memory (VmHWM from /proc/self/status, which counts torch's allocations) is its own; "model GB" is the process's
memory with the models loaded, before the step, so "peak - model" is what the step itself needs. A step whose
memory passes --mem-limit-gb (the host's) is stopped and reported as not fitting, and one past --timeout as timed
out: results, so the exit status is 1 only when a configuration failed (a CUDA out-of-memory error is such a
failure). Children run with
MALLOC_MMAP_THRESHOLD_=1048576 (unless set) so glibc returns freed activations to the system. Configurations:

  full           the whole frame, decoded in checkpointed chunks (1 latent frame each)
  window         the ROI window, decoded in checkpointed chunks with the causal state streamed between them
  window-taehv   the ROI window through ComfyUI's TAEHV (gradient decoder; needs COMFYUI_DIR)
  window-tae     the same through bgfs_core's own TAEHV decoder (`bgfs fix --gradient-vae`; no ComfyUI needed)
  NAME+blocks    any of them with each decoder block checkpointed too (bgfs_core.codecs.blocks; the fixer's
                 default), e.g. full+blocks,window+blocks
  NAME+bf16      the decoder in bf16 (+fp16: fp16), as `bgfs fix --grad-dtype` and ComfyUI on a GPU run it
  NAME+comfy     ComfyUI's own WanVAE class (comfy.ldm.wan.vae / vae2_2, needs COMFYUI_DIR) instead of diffusers'
                 AutoencoderKLWan, wrapped as the Latent Anatomy Fixer node wraps it (ModuleCodec)
  NAME+chunks    plain chunk checkpointing (one causal state kept per chunk) instead of the segmented stream
  NAME+keepN     the segmented stream keeping N causal states (default ~sqrt(chunks)); +keepall keeps every one,
                 so its backward recomputes no chunk: the time and memory the schedule trades

  python bench/bench_fixer_step.py --configs full,window --frames 1,5 --roi 160
  python bench/bench_fixer_step.py --vae 2.2 --configs rf,full+blocks,window+blocks --frames 1 --roi 160
  COMFYUI_DIR=/opt/comfyui python bench/bench_fixer_step.py --configs window-taehv --frames 5,17,81
  COMFYUI_DIR=/opt/comfyui python bench/bench_fixer_step.py --device cuda --frames 81 \
      --configs window+blocks+bf16,window+blocks+bf16+comfy,window-taehv+bf16+comfy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # comfy_host: ComfyUI's own classes, as the tests load them


def proc_status_gb(field: str, pid: int | str = "self") -> float:
    """A memory line of /proc/<pid>/status in GiB: VmHWM (peak resident) or VmRSS (resident now); NaN if absent."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # the process has just ended
        return float("nan")
    return next((int(line.split()[1]) / 2**20 for line in lines if line.startswith(f"{field}:")), float("nan"))


def drifting_boxes(frames: int, width: int, height: int, roi: int):
    """A hand-sized ROI drifting slowly across the middle of the frame: boxes ``[frames, 4]`` (x0, y0, x1, y1)."""
    import numpy as np

    cx = width / 2 + 40 * np.sin(np.arange(frames) / 10)
    cy = height / 2 + 20 * np.cos(np.arange(frames) / 10)
    return np.stack([cx - roi / 2, cy - roi / 2, cx + roi / 2, cy + roi / 2], 1)


def stand_in_critic(width: int = 32):
    """A small conv net like a heatmap critic: 128x128 crop -> 21 heatmaps at 32x32."""
    import torch.nn as nn

    def block(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.ReLU())

    return nn.Sequential(block(3, width, 2), block(width, width, 1), block(width, 2 * width, 2),
                         block(2 * width, 2 * width, 1), block(2 * width, 4 * width, 1), nn.Conv2d(4 * width, 21, 1))


def roi_crop(frames, boxes, out_hw=128):
    """Differentiable bilinear crops of per-frame pixel boxes [F, 4] (x0, y0, x1, y1) -> [F, 3, out, out]."""
    import torch
    import torch.nn.functional as F

    f, _, h, w = frames.shape
    b = torch.as_tensor(boxes, dtype=frames.dtype, device=frames.device)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    sx, sy = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
    theta = torch.zeros(f, 2, 3, dtype=frames.dtype, device=frames.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx / (w / 2), (cx - w / 2) / (w / 2)
    theta[:, 1, 1], theta[:, 1, 2] = sy / (h / 2), (cy - h / 2) / (h / 2)
    grid = F.affine_grid(theta, (f, 3, out_hw, out_hw), align_corners=False)
    return F.grid_sample(frames, grid, align_corners=False)


# the sizes comfy.sd.VAE builds ComfyUI's WanVAE classes at for the real Wan VAE files
COMFY_WAN_SIZES = {"2.1": {"dim": 96, "z_dim": 16}, "2.2": {"dim": 160, "z_dim": 48}}


def comfy_wan_codec(vae: str, device: str, dtype, base_dim: int | None = None):
    """ComfyUI's WanVAE (full size or ``base_dim`` wide, random weights) on ``device`` in ``dtype``, wrapped as the
    Latent Anatomy Fixer node wraps comfy.sd.VAE.first_stage_model (ComfyUI keeps it in bf16 on a GPU)."""
    from comfy_host import load_comfy_module

    from bgfs_core.codecs import ModuleCodec

    sizes = {**COMFY_WAN_SIZES[vae], **({} if base_dim is None else {"dim": base_dim})}
    wan = load_comfy_module(os.environ["COMFYUI_DIR"], "wan21" if vae == "2.1" else "wan22", device, **sizes)
    return ModuleCodec(wan.to(device, dtype), latent_channels=sizes["z_dim"], spatial_ratio=8 if vae == "2.1" else 16,
                       name="WanVAE (ComfyUI)")  # fmt: skip


def tae_proxy(codec, which: str, device: str, dtype):
    """``codec`` with its gradients through a TAEHV of its latent space (random weights) on ``device`` in ``dtype``:
    bgfs_core's own decoder (``which`` "bgfs": `bgfs fix --gradient-vae`) or ComfyUI's class ("comfy": the Fixer
    node's gradient_vae; needs COMFYUI_DIR)."""
    from bgfs_core.codecs import GradientProxyCodec, ModuleCodec

    c, r = codec.latent_channels, codec.spatial_ratio
    if which == "bgfs":
        from bgfs_core.codecs.taehv import TAEHVDecoder

        taehv = TAEHVDecoder(c).eval().requires_grad_(False)
    else:
        from comfy_host import load_comfy_module

        taehv = load_comfy_module(os.environ["COMFYUI_DIR"], "taehv", device, latent_channels=c,
                                  latent_format=None, show_progress_bar=False)  # fmt: skip
    tae = ModuleCodec(taehv.to(device, dtype), latent_channels=c, spatial_ratio=r, signed=False, name="TAEHV")
    return GradientProxyCodec(codec, tae)


HALF = {"bf16": "bfloat16", "fp16": "float16"}  # +bf16 / +fp16: the decoder the gradients go through, in that dtype


def one(config: str, frames: int, roi: int, chunk: int, height: int, width: int, base_dim: int | None = None,
        vae: str = "2.1", device: str = "cpu") -> dict:
    """Run one step in this process; return timings and memory (on a CUDA device: the device's, from torch, after
    an untimed 1-frame step)."""
    import numpy as np
    import torch

    from bgfs_core.codecs import (
        DiffusersWanCodec,
        decode_window,
        pixel_box_of_window,
        wan_vae_config,
        window_from_boxes,
    )

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    name = config
    config, *extras = config.split("+")
    half = next((HALF[e] for e in extras if e in HALF), None)
    widths = {} if base_dim is None else {"base_dim": base_dim}
    dev = torch.device(device)
    dtype = getattr(torch, half) if half else torch.float32
    if "comfy" in extras:
        codec = comfy_wan_codec(vae, device, dtype, base_dim)
    else:
        codec = DiffusersWanCodec.from_config(wan_vae_config(vae, **widths), seed=0, dtype=dtype if half else None)
        codec.vae.to(dev)
    if config in ("window-taehv", "window-tae"):
        # the window the Fixer node decodes through a TAEHV: its own reach (4 cells, 2 latent frames); the README's
        # TAEHV rows before this used 6 cells and 4 latent frames
        codec = tae_proxy(codec, "bgfs" if config == "window-tae" else "comfy", device, dtype)
    critic = stand_in_critic().eval().requires_grad_(False).to(dev)
    ratio = codec.spatial_ratio
    cuda = dev.type == "cuda"

    def step(frames: int) -> dict:
        t = codec.latent_frames(frames)
        z = torch.randn(1, codec.latent_channels, t, height // ratio, width // ratio,
                        generator=torch.Generator().manual_seed(0)).to(dev)  # fmt: skip
        boxes = drifting_boxes(frames, width, height, roi)
        if config == "full":  # the whole frame, checkpointed per chunk as well
            win = window_from_boxes(codec, z.shape, np.array([[0, 0, width, height]] * frames), margin=0)
        else:
            win = window_from_boxes(codec, z.shape, boxes)
        pw = pixel_box_of_window(win)
        local = boxes[pw.frame0:pw.frame1] - np.array([pw.x0, pw.y0, pw.x0, pw.y0])
        if cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        rss0 = torch.cuda.memory_allocated(dev) / 2**30 if cuda else proc_status_gb("VmRSS")
        zz = z.requires_grad_(True)
        t0 = time.perf_counter()
        keep = next((e[4:] for e in extras if e.startswith("keep")), None)
        dec = decode_window(codec, zz, win, chunk_frames=chunk, checkpoint=True, segments="chunks" not in extras,
                            checkpoint_blocks="blocks" in extras,
                            keep_states=None if keep is None else 10**9 if keep == "all" else int(keep))
        heat = critic(roi_crop(dec, local))
        loss = heat.square().mean()
        if cuda:
            torch.cuda.synchronize(dev)
        t1 = time.perf_counter()
        loss.backward()
        if cuda:
            torch.cuda.synchronize(dev)
        t2 = time.perf_counter()
        assert zz.grad is not None and torch.isfinite(zz.grad).all()
        return {"config": name, "frames": frames, "roi": roi, "window_px": f"{dec.shape[3]}x{dec.shape[2]}",
                "decoded_px": f"{(win.cx1 - win.cx0) * ratio}x{(win.cy1 - win.cy0) * ratio}", "fwd_s": t1 - t0,
                "bwd_s": t2 - t1, "step_s": t2 - t0, "model_rss_gb": rss0,
                "peak_gb": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else proc_status_gb("VmHWM")}

    if cuda:  # CUDA loads its kernels and picks its algorithms on first use: a 1-frame step first, not timed
        step(1)
    return step(frames)


def receptive_field(vae: str = "2.1") -> None:
    """How far one perturbed latent cell reaches, in pixels and in latent cells (full-size decoder, random
    weights): what the codec's ``default_margin`` (latent cells around the ROI) must cover."""
    import torch

    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    codec = DiffusersWanCodec.from_config(wan_vae_config(vae), seed=0)
    r, c = codec.spatial_ratio, codec.latent_channels
    h = w = 24 if r == 8 else 16
    z = torch.randn(1, c, 1, h, w, generator=torch.Generator().manual_seed(1))
    z2 = z.clone()
    z2[:, :, 0, h // 2, w // 2] += 2 * torch.randn(c, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        d = (codec.decode_video(z)[0] - codec.decode_video(z2)[0]).abs().amax(dim=(0, 1, 2))
    c0 = h // 2 * r
    ys, xs = torch.meshgrid(torch.arange(h * r), torch.arange(w * r), indexing="ij")
    dist = torch.maximum((c0 - ys).clamp(min=0) + (ys - c0 - r + 1).clamp(min=0),
                         (c0 - xs).clamp(min=0) + (xs - c0 - r + 1).clamp(min=0))
    peak = d.max().item()
    print(f"Wan {vae} VAE (margin {codec.default_margin} latent cells = {codec.default_margin * r} px)")
    print("distance from the perturbed cell (px) | latent cells | max |change| | relative to peak")
    for k in range(0, (h // 2 - 1) * r, r):
        sel = d[(dist >= k) & (dist < k + r)]
        print(f"{k:3d}-{k + r - 1:3d} | {k // r:2d} | {sel.max().item():.2e} | {sel.max().item() / peak:.3f}")


def run_limited(cmd: list[str], timeout: float, mem_limit_gb: float) -> tuple[str, str, str]:
    """Run ``cmd``; stop it past ``timeout`` seconds or ``mem_limit_gb`` resident -> (why it stopped or "", out, err)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # glibc otherwise keeps freed activation buffers between chunks (2x+ resident memory at 17+ frames on
        # a CPU); a fixed mmap threshold hands them back, so "peak" is what the step really holds
        env = {"MALLOC_MMAP_THRESHOLD_": "1048576", **os.environ}
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        started, status = time.monotonic(), ""
        while proc.poll() is None:
            if proc_status_gb("VmRSS", proc.pid) > mem_limit_gb:  # NaN (gone) compares False
                status = f"does not fit: passed {mem_limit_gb:g} GB resident after {time.monotonic() - started:.0f} s"
            elif time.monotonic() - started > timeout:
                status = f"timed out after {timeout:g} s"
            if status:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read()
    if not status and proc.returncode != 0:
        status = "failed: " + ("killed" if proc.returncode < 0 else (e.strip().splitlines() or ["?"])[-1])
    return status, o, e


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="full,window,window-taehv",
                   help="full, window, window-taehv, window-tae, rf (receptive field)")
    p.add_argument("--frames", default="1,5", help="pixel frame counts (1+4k), comma-separated")
    p.add_argument("--roi", default="160", help="ROI sizes in px, comma-separated")
    p.add_argument("--chunk", type=int, default=1, help="latent frames per checkpointed chunk")
    p.add_argument("--vae", default="2.1", choices=("2.1", "2.2"),
                   help="2.1: the Wan 2.1 VAE (16 channels, 8x; Wan 2.2 14B); 2.2: the Wan 2.2 VAE (48 channels, 16x)")
    p.add_argument("--base-dim", type=int, default=None,
                   help="the VAE's width (default: the real, full-size one; e.g. 16 for frame-scaling studies on a CPU)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    p.add_argument("--mem-limit-gb", type=float, default=20.0, help="stop a step whose resident memory passes this")
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda[:N]; on CUDA the memory columns are the device's (torch's allocations)")
    p.add_argument("--one", nargs=3, metavar=("CONFIG", "FRAMES", "ROI"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), int(a.one[2]), a.chunk, a.height, a.width, a.base_dim, a.vae,
                             a.device)))  # fmt: skip
        return 0
    configs = a.configs.split(",")
    failed = False
    if "rf" in configs:
        receptive_field(a.vae)
        configs.remove("rf")
    needs_comfy = [c for c in configs if c.startswith("window-taehv") or "comfy" in c.split("+")]
    if needs_comfy and not os.environ.get("COMFYUI_DIR"):
        print(f"{', '.join(needs_comfy)} SKIPPED: set COMFYUI_DIR to a ComfyUI checkout", file=sys.stderr)
        configs = [c for c in configs if c not in needs_comfy]
    print(f"{'config':<22} {'frames':>6} {'roi':>4} {'decoded':>9} {'window':>9} {'fwd s':>7} {'bwd s':>7} "
          f"{'step s':>7} {'peak GB':>8} {'model GB':>8} {'step GB':>8}", flush=True)
    for frames in [int(f) for f in a.frames.split(",")]:
        for roi in [int(r) for r in a.roi.split(",")]:
            done = {}
            for config in configs:
                if config.startswith("full") and roi != int(a.roi.split(",")[0]):
                    continue  # the full-frame step does not depend on the ROI size
                cmd = [sys.executable, __file__, "--one", config, str(frames), str(roi), "--chunk", str(a.chunk),
                       "--vae", a.vae, "--height", str(a.height), "--width", str(a.width), "--device", a.device]
                cmd += [] if a.base_dim is None else ["--base-dim", str(a.base_dim)]
                status, out, err = run_limited(cmd, a.timeout, a.mem_limit_gb)
                failed = failed or status.startswith("failed")  # not fitting, or time, is a result
                if status:
                    print(f"{config:<22} {frames:>6} {roi:>4} {status}", flush=True)
                    continue
                m = json.loads(out.strip().splitlines()[-1])
                print(f"{config:<22} {frames:>6} {roi:>4} {m['decoded_px']:>9} {m['window_px']:>9} {m['fwd_s']:>7.1f} "
                      f"{m['bwd_s']:>7.1f} {m['step_s']:>7.1f} {m['peak_gb']:>8.2f} {m['model_rss_gb']:>8.2f} "
                      f"{m['peak_gb'] - m['model_rss_gb']:>8.2f}",
                      flush=True)
                done[config] = m
            if len(done) > 1:  # side by side: each configuration against the first that ran
                base, b = next(iter(done.items()))
                for config, m in list(done.items())[1:]:
                    print(f"  {config} against {base}: step time x{m['step_s'] / b['step_s']:.2f}, step memory "
                          f"x{(m['peak_gb'] - m['model_rss_gb']) / (b['peak_gb'] - b['model_rss_gb']):.2f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
