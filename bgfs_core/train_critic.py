"""Train the heatmap critic on the ROI cache: augmentation, masked heatmap loss, validation PCK, resumable state.

Each step draws a batch of cached frames (crops resized to ``critic.input_hw``), bends the fingers / limbs of a
share of them (``critic.articulate``; ``articulate_batch``), augments it (rotation, scale, shift, flip with the
region's flip permutation, colour, blur, noise; ``augment``) and re-renders the Gaussian
targets from the cached MediaPipe keypoints after the same geometric transform, so crop and target always agree
and use the critic's sigma. The loss (``heatmap_loss``) is masked by the cached visibility. One epoch is one pass
over the training frames; AdamW with a cosine learning-rate decay over ``epochs``.

Held-out clips: whole source videos when the cache has two or more, else clips (``split_clips``, fixed by
``critic.seed``); with a single video, neighbouring clips share its look, so validation is optimistic there.
Validation PCK@0.1: a visible keypoint is correct when the critic's soft-argmax lands within 0.1 x the larger
side of the bounding box of that frame's visible cached keypoints (frames with fewer than two visible keypoints
are not scored); ``val_pck_bent`` is the same on a copy of the validation crops with every finger bent at random
(``bent_copy``): how well the critic follows poses it was not shown. The best checkpoint is the epoch with the lowest
validation loss (train loss when nothing is held out).

Files in ``out_dir`` (all written atomically after every epoch, so Ctrl-C leaves the last epoch intact):
``critic_best.safetensors``, ``critic_last.safetensors`` (critics, see ``critic_io``), ``train_state.safetensors``
(weights + optimizer tensors, with the rest as JSON in its metadata; never pickle) and ``train_log.json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, check_folder_possible, write_json_atomic
from .config import Config
from .critic import CriticSpec
from .critic_io import STATE_FORMAT
from .errors import BGFSError
from .regions import get_region

PCK_THRESHOLD = 0.1
COORD_WEIGHT = 5.0  # weight of the soft-argmax L1 term (crop-side units) against the KL term (nats)
WEIGHT_DECAY = 1e-4
MIN_LR_FRACTION = 0.05  # cosine schedule floor


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)  # {epoch, train_loss, val_loss, val_pck, ...}
    best_val_pck: float | None = None
    best_epoch: int = 0
    seconds: float = 0.0


@dataclass
class FrameSet:
    """Cached frames resized for the critic, held in memory (about 48 KiB a frame at 128 x 128)."""

    crops: np.ndarray  # uint8 [N, H, W, 3] at spec.input_hw
    keypoints: np.ndarray  # float32 [N, K, 2], pixels of the resized crop
    visible: np.ndarray  # bool [N, K]
    crop_scale: np.ndarray  # float32 [N, 2]: resized-crop pixels -> cached-crop pixels (x, y)

    def __len__(self) -> int:
        return len(self.crops)


# --- data --------------------------------------------------------------------------------------------------------


class _ClipReader:
    """Map-style dataset over cache clips: loads one .npz and resizes its crops (runs in DataLoader workers)."""

    def __init__(self, cache_dir: Path, entries: list[dict], input_hw: tuple[int, int]) -> None:
        self.cache_dir, self.entries, self.input_hw = cache_dir, entries, input_hw

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        import torch
        import torch.nn.functional as F

        from .cache import load_clip

        clip = load_clip(self.cache_dir, self.entries[i])
        roi = np.asarray(clip["roi"])
        kp = np.asarray(clip["keypoints"], np.float32)
        vis = np.asarray(clip["visibility"], np.float32) > 0
        vis &= np.isfinite(kp).all(-1)
        keep = vis.sum(-1) > 0  # frames with nothing visible add nothing to a visibility-masked loss
        roi, kp, vis = roi[keep], np.nan_to_num(kp[keep]), vis[keep]
        h, w = roi.shape[1:3]
        if (h, w) != self.input_hw and len(roi):
            x = torch.from_numpy(roi).permute(0, 3, 1, 2).float()
            shrink = h > self.input_hw[0] or w > self.input_hw[1]
            x = F.interpolate(x, size=self.input_hw, mode="bilinear", align_corners=False, antialias=shrink)
            roi = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        scale = np.array([self.input_hw[1] / w, self.input_hw[0] / h], np.float32)
        back = np.broadcast_to(1 / scale, (len(roi), 2))
        return {"crops": roi, "keypoints": kp * scale, "visible": vis, "crop_scale": back}


def _identity(item: Any) -> Any:
    return item


def _load_frames(cache_dir: Path, entries: list[dict], spec: CriticSpec, num_workers: int) -> FrameSet:
    import torch

    k = spec.num_keypoints
    parts: dict[str, list[np.ndarray]] = {"crops": [], "keypoints": [], "visible": [], "crop_scale": []}
    if entries:
        reader = _ClipReader(cache_dir, entries, spec.input_hw)
        # Each worker is a process reading whole clips: more than the clips or the CPUs only costs start-up time,
        # and the frames come out the same whatever the number.
        num_workers = min(num_workers, len(entries), os.cpu_count() or 1)
        loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=num_workers, collate_fn=_identity)
        try:
            for item in loader:
                for key in parts:
                    parts[key].append(np.asarray(item[key]))
        except BGFSError as exc:  # from a worker, torch wraps the message in the worker's traceback: unwrap it
            raise BGFSError(str(exc).rsplit("BGFSError: ", 1)[-1].strip()) from None
    if not parts["crops"]:
        h, w = spec.input_hw
        return FrameSet(np.zeros((0, h, w, 3), np.uint8), np.zeros((0, k, 2), np.float32), np.zeros((0, k), bool),
                        np.ones((0, 2), np.float32))  # fmt: skip
    return FrameSet(*(np.concatenate(parts[key]) for key in ("crops", "keypoints", "visible", "crop_scale")))


def split_clips(clips: list[dict], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, val) clip indices: whole source videos held out when there are >= 2 (never more
    than half the clips: a long video beside a short one is not all held out), else clips (each instance keeping
    at least one training clip)."""
    if val_fraction <= 0:
        return list(range(len(clips))), []
    if len(clips) < 2:
        raise BGFSError(
            f"the cache holds {len(clips)} clip(s): validation needs at least 2; train without validation "
            "(critic.val_fraction=0, the node's val_fraction 0), or cache more footage: more or longer videos, or "
            "a shorter clips.clip_len (a new cache, or the same one rebuilt with --overwrite)"
        )
    rng = np.random.default_rng(seed)
    sources = sorted({int(c["source"]) for c in clips})
    want = val_fraction * len(clips)
    if len(sources) >= 2:
        val_sources: set[int] = set()
        held = 0
        for s in rng.permutation(sources):
            if held >= want or len(val_sources) == len(sources) - 1:
                break
            size = sum(int(c["source"]) == s for c in clips)
            if held + size <= len(clips) / 2:
                val_sources.add(int(s))
                held += size
        val = [i for i, c in enumerate(clips) if int(c["source"]) in val_sources]
    else:
        n_val = min(max(round(want), 1), len(clips) - 1)
        order = [int(i) for i in rng.permutation(len(clips))]
        # Never hold out an instance's last training clip (a second hand seen in one clip, an emoji MediaPipe
        # took for a hand): validating on something training never showed makes "best by validation loss" pick
        # an early, undertrained epoch. Only when no clip qualifies does the plain random draw stand.
        left = Counter(_instance_key(c) for c in clips)
        val = []
        for i in order:
            if len(val) < n_val and left[_instance_key(clips[i])] >= 2:
                val.append(i)
                left[_instance_key(clips[i])] -= 1
        val = sorted(val) or sorted(order[:n_val])
    val_set = set(val)
    return [i for i in range(len(clips)) if i not in val_set], val


STEP_MARGIN = 1.3  # a step's peak over what autograd saves (gradients, optimiser, loss): measured 1.13 at 512 px


def training_step_bytes(spec: CriticSpec, batch_size: int) -> int:
    """Bytes one training step of ``batch_size`` crops needs: what autograd saves for the backward pass, counted on
    the meta device (shapes only: no memory, no time), with ``STEP_MARGIN`` for the rest."""
    import torch

    from .critic import HeatmapCritic

    saved = 0

    def count(t: Any) -> Any:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    try:  # with gradients on whatever the caller's mode: under no_grad nothing would be saved, and counted
        with torch.device("meta"), torch.inference_mode(False), torch.enable_grad():
            model = HeatmapCritic(spec)
            with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
                model(torch.zeros(batch_size, 3, *spec.input_hw))
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel (a patched torch): no estimate
        return 0
    return int(saved * STEP_MARGIN)


def check_training_fits(spec: CriticSpec, batch_size: int, frames: int, device: str) -> None:
    """Refuse, before the cache is read, a critic size or batch whose training would not fit in memory: the kernel
    kills such a run without a word (on the CPU), or torch fails mid-way (on a GPU)."""
    import torch

    from .memory import available_bytes, gib

    batch = min(batch_size, frames)
    crops = frames * spec.input_hw[0] * spec.input_hw[1] * 3  # held as uint8 for the whole run
    step = training_step_bytes(spec, batch)
    on_cpu = torch.device(device).type in ("cpu", "mps")  # a Mac's GPU shares the host's memory
    advice = (f"use a smaller critic.input_hw (now {list(spec.input_hw)}, by default [128, 128]) or critic.batch_size "
              f"(now {batch_size}; the node's batch_size)")  # fmt: skip
    host, free = crops + (step if on_cpu else 0), available_bytes()
    if free is not None and host > 0.8 * free:
        parts = f"{gib(step)} for a step of {batch} crops, " if on_cpu else ""
        raise BGFSError(f"training this critic needs about {gib(host)} of memory ({parts}{gib(crops)} for the "
                        f"{frames} cached frames at its input size) and {gib(free)} are free: {advice}")  # fmt: skip
    if torch.device(device).type == "cuda":
        # against the card's whole memory, not what is free now: other models on it can be unloaded (ComfyUI's
        # Critic Trainer does so when it runs out), a step larger than the card cannot be helped that way
        total = torch.cuda.mem_get_info(torch.device(device))[1]
        if step > 0.9 * total:
            raise BGFSError(f"a training step of {batch} crops needs about {gib(step)} on {device}, which has "
                            f"{gib(total)} in all: {advice}")  # fmt: skip


def _instance_key(clip: dict) -> tuple[int, int]:
    return int(clip["source"]), int(clip.get("instance", 0))


def _read_cache(cfg: Config) -> tuple[Path, dict]:
    from .cache import load_manifest, stale_keypoints

    cache_dir = Path(cfg.data.cache_dir)
    if not (cache_dir / "manifest.json").is_file():
        raise BGFSError(f"no ROI cache in {str(cache_dir)!r}: run bgfs precompute first (or set data.cache_dir)")
    manifest = load_manifest(cache_dir)
    if not manifest.get("clips"):
        raise BGFSError(
            f"the ROI cache in {str(cache_dir)!r} holds no clips (no {cfg.roi.region} found in the videos?): "
            "run bgfs precompute first, on videos that show the region"
        )
    if manifest.get("region") != cfg.roi.region:
        raise BGFSError(
            f"the ROI cache in {str(cache_dir)!r} was built for {manifest.get('region')!r}, but roi.region is "
            f"{cfg.roi.region!r}: train for its region (--set roi.region={manifest.get('region')}), or point "
            f"data.cache_dir at a cache built for {cfg.roi.region}"
        )
    if tuple(manifest.get("keypoint_names", ())) != get_region(cfg.roi.region).keypoint_names:
        raise BGFSError(stale_keypoints(cache_dir, manifest, cfg.roi.region))
    return cache_dir, manifest


# --- augmentation, targets, loss ----------------------------------------------------------------------------------


def augment(crops: Any, keypoints: Any, visible: Any, flip_perm: tuple[int, ...], gen: Any) -> tuple[Any, Any, Any]:
    """Random rotation (+-20 deg), scale (0.8-1.25), shift (+-10%), horizontal flip, colour, blur and noise.

    ``crops`` float ``[B, 3, H, W]`` in [0, 1], ``keypoints`` ``[B, K, 2]`` pixels, ``visible`` bool ``[B, K]``.
    The keypoints get the same geometric transform (and the flip permutation); those pushed out of the crop
    become invisible.
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = crops.shape
    dev = crops.device

    def uniform(lo: float, hi: float, n: int = b) -> Any:
        return torch.rand(n, generator=gen).to(dev) * (hi - lo) + lo

    angle = uniform(-20.0, 20.0) * (math.pi / 180)
    scale = torch.exp(uniform(math.log(0.8), math.log(1.25)))
    shift = torch.stack([uniform(-0.1, 0.1) * w, uniform(-0.1, 0.1) * h], -1)
    flip = torch.rand(b, generator=gen).to(dev) < 0.5
    # Forward map in centred pixels: q_out = scale * R @ Flip @ q_in + shift.
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    fl = torch.diag_embed(torch.stack([torch.where(flip, -1.0, 1.0), torch.ones(b, device=dev)], -1))
    fwd = scale[:, None, None] * rot @ fl
    centre = torch.tensor([w / 2, h / 2], device=dev)
    kp = (keypoints - centre) @ fwd.transpose(1, 2) + shift[:, None] + centre
    # grid_sample wants the inverse in normalised coordinates: u_in = D^-1 fwd^-1 (D u_out - shift).
    d = torch.diag(torch.tensor([w / 2, h / 2], device=dev))
    d_inv = torch.diag(torch.tensor([2 / w, 2 / h], device=dev))
    inv = torch.linalg.inv(fwd)
    theta = torch.cat([d_inv @ inv @ d, (-(d_inv @ inv) @ shift[:, :, None])], -1)
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    out = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    perm = torch.tensor(flip_perm, device=dev)
    kp = torch.where(flip[:, None, None], kp[:, perm], kp)
    vis = torch.where(flip[:, None], visible[:, perm], visible)
    vis = vis & (kp[..., 0] >= 0) & (kp[..., 0] < w) & (kp[..., 1] >= 0) & (kp[..., 1] < h)

    # Colour: brightness, contrast, saturation.
    gray = out.mean(1, keepdim=True)
    sat = uniform(0.7, 1.3)[:, None, None, None]
    out = gray + (out - gray) * sat
    contrast = uniform(0.75, 1.25)[:, None, None, None]
    mean = out.mean((1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    out = out * uniform(0.75, 1.25)[:, None, None, None]
    # Blur a third of the crops (generated video is often soft), sigma 0.4-1.5 px, separable 7-tap Gaussian.
    sigma = torch.where(torch.rand(b, generator=gen).to(dev) < 1 / 3, uniform(0.4, 1.5), torch.zeros(b, device=dev))
    taps = torch.arange(-3, 4, device=dev, dtype=out.dtype)
    kern = torch.exp(-0.5 * (taps[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kern = (kern / kern.sum(-1, keepdim=True)).repeat_interleave(3, 0)
    x = out.reshape(1, b * 3, h, w)
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kern[:, None, None, :], groups=b * 3)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kern[:, None, :, None], groups=b * 3)
    out = x.reshape(b, 3, h, w)
    noise = uniform(0.0, 0.03)[:, None, None, None]
    out = out + noise * torch.randn(out.shape, generator=gen).to(dev)
    return out.clamp(0, 1), kp, vis


def articulate_batch(crops: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, region: str, share: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bend the fingers (limbs) of about ``share`` of the crops at random, keypoints moved with them.

    ``crops`` uint8 ``[B, H, W, 3]``, ``keypoints`` ``[B, K, 2]`` pixels, ``visible`` bool ``[B, K]``. The global
    affine ``augment`` never shows one finger turning against the others, which is what the fixer's bone and
    joint terms need the critic to read. The labels are where the warp put the joints, so they stay exact. Same
    warp as the ``finger_jitter`` corruption (``corruptions.articulate``), its field on a 4-pixel grid.
    """
    from .corruptions import CHAIN_WIDTH, articulate, region_chains

    reg = get_region(region)
    chains = region_chains(reg)
    crops, keypoints = crops.copy(), keypoints.copy()
    for b in np.flatnonzero(rng.random(len(crops)) < share):
        image, moved = articulate(crops[b], keypoints[b], visible[b], chains, rng, 1.0, CHAIN_WIDTH[reg.source], 4)
        crops[b], keypoints[b] = image, moved.astype(keypoints.dtype)
    return crops, keypoints


def bent_copy(frames: FrameSet, region: str, seed: int) -> FrameSet:
    """``frames`` with every crop's fingers / limbs bent (fixed draws): validation of how well the critic follows
    a pose it was not shown, which is what the fixer's bone and joint terms rely on (``val_pck_bent``)."""
    if not len(frames):
        return frames
    rng = np.random.default_rng([seed, 7, 7])  # a stream no training epoch draws from ([seed, epoch])
    crops, kp = articulate_batch(frames.crops, frames.keypoints, frames.visible, region, 1.0, rng)
    return FrameSet(crops, kp, frames.visible, frames.crop_scale)


def render_targets(keypoints: Any, visible: Any, spec: CriticSpec, crop_hw: tuple[int, int]) -> Any:
    """Gaussian target heatmaps ``[B, K, hh, hw]`` for keypoints given in pixels of a crop of size ``crop_hw``."""
    from .heatmaps import render_heatmaps_torch

    hh, hw = spec.heatmap_hw
    scale = keypoints.new_tensor([hw / crop_hw[1], hh / crop_hw[0]])
    return render_heatmaps_torch(keypoints.detach() * scale, visible, (hh, hw), spec.sigma)


def heatmap_loss(pred: Any, target: Any, keypoints: Any, visible: Any, crop_hw: tuple[int, int]) -> Any:
    """Visibility-masked mean over keypoints of KL(target || prediction) + ``COORD_WEIGHT`` x L1 of the soft-argmax.

    Both maps are read as distributions over the pixels (the critic's is a softmax; the target Gaussian is
    normalised): the KL term matches their shapes, and so the peak height (confidence); the L1 term (in units of
    the crop side) trains the point the fixer and PCK use. Pixel-wise MSE learns the same maps far more slowly.
    """
    from .critic import soft_argmax_crop

    n, k, h, w = pred.shape
    mask = visible.to(pred.dtype)
    p = pred.reshape(n, k, h * w)
    p = p / p.sum(-1, keepdim=True)
    t = target.reshape(n, k, h * w)
    t = t / t.sum(-1, keepdim=True).clamp_min(1e-12)
    kl = (t * (_safe_log(t) - _safe_log(p))).sum(-1)
    points, _ = soft_argmax_crop(pred, crop_hw)
    side = keypoints.new_tensor([crop_hw[1], crop_hw[0]])
    l1 = ((points - keypoints).abs() / side).sum(-1)
    return ((kl + COORD_WEIGHT * l1) * mask).sum() / mask.sum().clamp_min(1.0)


def _safe_log(x: Any) -> Any:
    """log with 0 -> a large negative number instead of -inf (a pixel the softmax underflowed, or 0 x log 0)."""
    return x.clamp_min(1e-30).log()


def pck(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, threshold: float = PCK_THRESHOLD) -> tuple[int, int]:
    """(correct, scored) keypoints: distance < threshold x larger side of the visible keypoints' bounding box."""
    correct = scored = 0
    for p, g, v in zip(pred, gt, visible):
        if v.sum() < 2:
            continue
        extent = float((g[v].max(0) - g[v].min(0)).max())
        if extent < 1.0:
            continue
        dist = np.linalg.norm(p[v] - g[v], axis=-1)
        correct += int((dist < threshold * extent).sum())
        scored += int(v.sum())
    return correct, scored


# --- one epoch ----------------------------------------------------------------------------------------------------


def _to_tensors(frames: FrameSet, idx: np.ndarray, device: Any) -> tuple[Any, Any, Any]:
    import torch

    crops = torch.from_numpy(frames.crops[idx]).to(device).permute(0, 3, 1, 2).float() / 255.0
    return crops, torch.from_numpy(frames.keypoints[idx]).to(device), torch.from_numpy(frames.visible[idx]).to(device)


def _train_epoch(model: Any, opt: Any, frames: FrameSet, spec: CriticSpec, batch_size: int, seed: int, epoch: int,
                 device: Any, progress: bool, articulate: float = 0.0) -> float:  # fmt: skip
    import torch

    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)  # per epoch: a resumed run repeats the same draws
    rng = np.random.default_rng([seed, epoch])
    order = torch.randperm(len(frames), generator=gen).numpy()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    flip_perm = get_region(spec.region).flip_permutation()
    model.train()
    total = 0.0
    bar = _progress(batches, f"epoch {epoch + 1}", progress)
    for idx in bar:
        if articulate > 0:
            bent, bent_kp = articulate_batch(frames.crops[idx], frames.keypoints[idx], frames.visible[idx],
                                             spec.region, articulate, rng)  # fmt: skip
            frames_b = FrameSet(bent, bent_kp, frames.visible[idx], frames.crop_scale[idx])
            crops, kp, vis = _to_tensors(frames_b, np.arange(len(idx)), device)
        else:
            crops, kp, vis = _to_tensors(frames, idx, device)
        crops, kp, vis = augment(crops, kp, vis, flip_perm, gen)
        target = render_targets(kp, vis, spec, spec.input_hw)
        loss = heatmap_loss(model(crops), target, kp, vis, spec.input_hw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        if progress:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / max(len(frames), 1)


def evaluate(
    model: Any, frames: FrameSet, spec: CriticSpec, batch_size: int, device: Any
) -> tuple[float, float | None]:
    """(validation loss, PCK@0.1 in cached-crop pixels) without augmentation."""
    import torch

    from .critic import soft_argmax_crop

    model.eval()
    total, correct, scored = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            idx = np.arange(i, min(i + batch_size, len(frames)))
            crops, kp, vis = _to_tensors(frames, idx, device)
            heatmaps = model(crops)
            target = render_targets(kp, vis, spec, spec.input_hw)
            total += float(heatmap_loss(heatmaps, target, kp, vis, spec.input_hw)) * len(idx)
            points, _ = soft_argmax_crop(heatmaps, spec.input_hw)
            scale = frames.crop_scale[idx][:, None, :]
            c, s = pck(points.cpu().numpy() * scale, frames.keypoints[idx] * scale, frames.visible[idx])
            correct, scored = correct + c, scored + s
    return total / max(len(frames), 1), (correct / scored if scored else None)


def _progress(items: list, desc: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


# --- checkpoints --------------------------------------------------------------------------------------------------


def save_train_state(path: Path, model: Any, opt: Any, info: dict[str, Any]) -> None:
    """Weights + optimizer tensors as safetensors; everything else (epoch, history, ...) as JSON metadata."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
    info = {**info, "param_groups": opt_state["param_groups"]}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"bgfs.format": STATE_FORMAT, "bgfs.train_state": json.dumps(info)})


# how to go on when a run folder holds another run: the CLI's flags and the Critic Trainer node's inputs
_START_OVER = ("start over there (--no-resume; on the Critic Trainer node, resume off) or use another run folder "
               "(--out-dir; on the node, another critic_name)")


def run_data(cfg: Config, manifest: dict, held_out: list[int]) -> dict[str, Any]:
    """What a run's training data and split depend on (``held_out``: the validation clips' indices): a resumed run
    must see the same (more epochs may differ). The cache by its content (clip names, the settings it was cut with), not its path: a moved folder resumes."""
    import hashlib

    c = cfg.critic
    clips = manifest["clips"]

    def sha1(files: list[str]) -> str:
        return hashlib.sha1("\n".join(sorted(files)).encode()).hexdigest()[:16]

    cut = hashlib.sha1(json.dumps(manifest.get("config", {}), sort_keys=True).encode()).hexdigest()[:16]
    # the held-out clips themselves, not only what chose them: a change of the rule must not pass for the same run
    return {"clips": len(clips), "clips_sha1": sha1([str(cl["file"]) for cl in clips]), "cache_settings_sha1": cut,
            "val_sha1": sha1([str(clips[i]["file"]) for i in held_out]), "val_fraction": c.val_fraction,
            "seed": c.seed, "lr": c.lr, "batch_size": c.batch_size, "articulate": c.articulate}  # fmt: skip


class OtherRunError(BGFSError):
    """The run folder holds a run for another setup, data or settings: resuming it would be wrong."""


def _check_same_data(path: Path, saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if saved is None:  # a state written before runs recorded their data
        return
    hashes = {"clips_sha1": "the cache's clips", "cache_settings_sha1": "the settings the cache was cut with",
              "val_sha1": "the clips held out for validation"}
    if "val_sha1" not in saved:  # a state written before runs recorded their split: what chose it is checked
        now = {k: v for k, v in now.items() if k != "val_sha1"}
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in now.items() if k not in hashes and saved.get(k) != v]
    changed += [what for k, what in hashes.items() if k in now and saved.get(k) != now[k]]
    if changed:
        raise OtherRunError(f"{str(path.parent)!r} holds a training run on other data or settings ({'; '.join(changed)}),"
                        f" whose split and best epoch would not carry over: {_START_OVER}")


def load_train_state(path: Path, model: Any, opt: Any, spec: CriticSpec,
                     data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore weights and optimizer from :func:`save_train_state`; returns the JSON part. ``data``
    (`run_data`): refuse a run trained on other data or settings."""
    from safetensors.torch import load_file

    from .critic_io import read_raw_metadata

    raw = read_raw_metadata(path)
    if raw.get("bgfs.format") != STATE_FORMAT:
        raise BGFSError(f"{str(path)!r} is not a BGFS training state: remove it or train with --no-resume")
    info = json.loads(raw["bgfs.train_state"])
    saved = CriticSpec(**info["spec"])
    if not saved.same_model(spec):
        raise OtherRunError(
            f"{str(path.parent)!r} holds a training run for another critic setup ({saved.region}, input "
            f"{list(saved.input_hw)}, heatmap {list(saved.heatmap_hw)}, width {saved.width}): {_START_OVER}"
        )
    if data is not None:
        _check_same_data(path, info.get("data"), data)
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
    return info


def _lr(base: float, epoch: int, epochs: int) -> float:
    """Cosine decay from ``base`` to ``MIN_LR_FRACTION * base`` over the run."""
    t = epoch / max(epochs - 1, 1)
    return base * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * t)))


# --- the loop -----------------------------------------------------------------------------------------------------


def train_critic(
    cfg: Config,
    out_dir: str | Path,
    epochs: int | None = None,
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train a critic on ``cfg.data.cache_dir`` for ``epochs`` (default ``cfg.critic.epochs``) into ``out_dir``.

    With ``resume`` a run continues from ``out_dir/train_state.safetensors`` (same setup only); ``epochs`` is the
    total, so a finished run is not trained again. ``on_epoch`` gets each epoch's history record.
    """
    import torch

    from .critic import HeatmapCritic
    from .critic_io import save_critic

    started = time.perf_counter()
    epochs = cfg.critic.epochs if epochs is None else int(epochs)
    if epochs <= 0:
        raise BGFSError(f"epochs must be > 0, got {epochs}")
    out_dir = Path(out_dir)
    check_folder_possible(out_dir, "the critic's folder")
    best_path, last_path = out_dir / "critic_best.safetensors", out_dir / "critic_last.safetensors"
    state_path, log_path = out_dir / "train_state.safetensors", out_dir / "train_log.json"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    c = cfg.critic

    cache_dir, manifest = _read_cache(cfg)
    spec = CriticSpec.from_config(cfg)
    clips = manifest["clips"]
    train_idx, val_idx = split_clips(clips, c.val_fraction, c.seed)
    frames = sum(len(clips[i]["frame_indices"]) for i in train_idx) + 2 * sum(  # validation: plain and bent
        len(clips[i]["frame_indices"]) for i in val_idx)
    check_training_fits(spec, c.batch_size, frames, device)
    train = _load_frames(cache_dir, [clips[i] for i in train_idx], spec, c.num_workers)
    val = _load_frames(cache_dir, [clips[i] for i in val_idx], spec, c.num_workers)
    val_bent = bent_copy(val, spec.region, c.seed)
    if len(train) == 0:
        raise BGFSError(
            f"the training clips in {str(cache_dir)!r} have no visible keypoints: "
            "run bgfs precompute on videos that show the region"
        )
    sources = len({int(cl["source"]) for cl in clips})
    summary = {
        "cache_dir": str(cache_dir), "clips": len(clips), "frames": len(train) + len(val), "sources": sources,
        "train_clips": len(train_idx), "val_clips": len(val_idx), "train_frames": len(train), "val_frames": len(val),
        "split": "source" if sources >= 2 and val_idx else "clip",
    }  # fmt: skip

    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(c.seed)
        model = HeatmapCritic(spec).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=WEIGHT_DECAY)
    info: dict[str, Any] = {"epoch": 0, "history": [], "best_epoch": 0, "best_score": None, "seconds": 0.0}
    data = run_data(cfg, manifest, val_idx)
    if not resume:  # starting over: an old run's state must not be picked up by a retry that resumes this one
        state_path.unlink(missing_ok=True)
    if resume and state_path.is_file():
        info = load_train_state(state_path, model, opt, spec, data)
        if progress:
            print(f"resuming {out_dir} after epoch {info['epoch']}", file=sys.stderr)
    start_epoch, history = int(info["epoch"]), list(info["history"])
    prior_seconds = float(info.get("seconds", 0.0))
    # The epochs the learning rate's cosine spans. A run that finished its schedule and is asked for more goes on
    # at the schedule's floor: stretched over the new total, the cosine would jump back up (a 300-epoch run
    # extended to 400 from 5% of lr to 15%) and undo the annealing. A run stopped mid-way takes the new total.
    planned = int(info.get("schedule_epochs", epochs))
    schedule = planned if start_epoch >= planned else epochs

    def best_pck() -> float | None:
        rec = next((h for h in history if h["epoch"] == info["best_epoch"]), None)
        return rec["val_pck"] if rec else None

    saved = start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            for group in opt.param_groups:
                group["lr"] = _lr(c.lr, min(epoch, schedule - 1), schedule)
            train_loss = _train_epoch(model, opt, train, spec, c.batch_size, c.seed, epoch, device, progress,
                                      c.articulate)  # fmt: skip
            val_loss, val_pck = evaluate(model, val, spec, c.batch_size, device) if len(val) else (None, None)
            bent_pck = evaluate(model, val_bent, spec, c.batch_size, device)[1] if len(val) else None
            record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_pck": val_pck,
                      "val_pck_bent": bent_pck, "lr": opt.param_groups[0]["lr"]}  # fmt: skip
            if not all(math.isfinite(x) for x in (train_loss, val_loss if val_loss is not None else 0.0)):
                # diverged: a NaN critic would be saved, and even judged best (its flat heatmaps still give a PCK)
                losses = f"{train_loss:g}" + ("" if val_loss is None else f", validation {val_loss:g}")
                kept = f" (epoch {saved}, the last finished one, is kept)" if saved else ""
                raise BGFSError(f"epoch {epoch + 1}'s loss is {losses}: the training diverged{kept}. Lower the "
                                f"learning rate (lr, now {c.lr:g}) and train again from the start (--no-resume; on "
                                "the node, resume off)")  # fmt: skip
            history.append(record)
            score = val_loss if val_loss is not None else train_loss
            is_best = info["best_score"] is None or score < info["best_score"]
            if is_best:
                info["best_score"], info["best_epoch"] = score, epoch + 1
            seconds = prior_seconds + time.perf_counter() - started
            meta = {"train_summary": {**summary, "epochs": epoch + 1, "best_epoch": info["best_epoch"]},
                    "val_pck": val_pck}  # fmt: skip
            # Order matters for Ctrl-C: the critics first, the training state (the resume point) last.
            if is_best:
                save_critic(best_path, model, spec, meta)
            save_critic(last_path, model, spec, meta)
            info.update(epoch=epoch + 1, history=history, seconds=seconds, spec=spec.to_dict(), data=data,
                        schedule_epochs=schedule)  # fmt: skip
            save_train_state(state_path, model, opt, info)
            saved = epoch + 1
            write_json_atomic(log_path, {
                "spec": spec.to_dict(), "data": summary, "config": cfg.to_dict(), "epochs_done": epoch + 1,
                "best_epoch": info["best_epoch"], "best_val_pck": best_pck(), "pck_threshold": PCK_THRESHOLD,
                "seconds": seconds, "history": history,
            })  # fmt: skip
            if progress:
                print(_epoch_line(record, epochs, is_best), file=sys.stderr)
            if on_epoch is not None:
                on_epoch(record)
    except KeyboardInterrupt:
        print(f"training interrupted: {out_dir} holds epoch {saved}; run again to resume", file=sys.stderr)
        raise
    if start_epoch >= epochs and progress:
        print(f"{out_dir} already holds {start_epoch} epoch(s) (asked {epochs}): nothing to train", file=sys.stderr)
    return TrainResult(
        best_path=best_path, last_path=last_path, history=history, best_val_pck=best_pck(),
        best_epoch=int(info["best_epoch"]), seconds=prior_seconds + time.perf_counter() - started,
    )  # fmt: skip


def _epoch_line(rec: dict[str, Any], epochs: int, is_best: bool) -> str:
    val = "" if rec["val_loss"] is None else f"  val_loss {rec['val_loss']:.4f}"
    pck_txt = "" if rec["val_pck"] is None else f"  val PCK@{PCK_THRESHOLD:g} {rec['val_pck']:.3f}"
    if rec.get("val_pck_bent") is not None:
        pck_txt += f" (bent {rec['val_pck_bent']:.3f})"
    best = "  (best)" if is_best else ""
    return f"epoch {rec['epoch']}/{epochs}  train_loss {rec['train_loss']:.4f}{val}{pck_txt}{best}"
