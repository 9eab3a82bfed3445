"""Host-free helpers of the BGFS nodes: tensor layouts, the BGFS_ROI / BGFS_CRITIC payloads, names and errors.

Nothing here imports ComfyUI, so the glue is testable without a host (tests/test_nodes_glue.py). torch and PIL
are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..bgfs_core.detections import Detections
from ..bgfs_core.errors import BGFSError

if TYPE_CHECKING:
    import torch

CATEGORY = "BGFS"
CRITICS_FOLDER = "bgfs_critics"  # folder_paths key and folder name under models/
MEDIAPIPE_FOLDER = "bgfs_mediapipe"  # folder_paths key for models/mediapipe (Tasks backend .task files)
CACHE_SUBDIR = "bgfs_cache"  # ROI caches live in <output>/bgfs_cache/<name>/
RUNS_SUBDIR = "bgfs_critic_runs"  # training states live in <output>/bgfs_critic_runs/<critic name>/
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


# --- errors ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def node_errors(display_name: str) -> Iterator[None]:
    """Re-raise user errors (``BGFSError``) prefixed with the node's display name; everything else passes through.

    Only ``BGFSError`` is caught: ComfyUI's cancel (``InterruptProcessingException``) and real bugs must propagate
    untouched.
    """
    try:
        yield
    except BGFSError as exc:
        msg = str(exc)
        if msg.startswith(f"{display_name}:"):
            raise
        raise BGFSError(f"{display_name}: {msg}") from exc


# --- IMAGE / MASK / LATENT layouts -----------------------------------------------------------------------------


def check_images(images: Any) -> None:
    """An IMAGE batch ``[T, H, W, C]`` (C = 1, 3 or 4) with frames, or an error that says what came instead."""
    import torch

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = list(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise BGFSError(f"expected an IMAGE batch [frames, height, width, 3], got {shape}")
    if images.shape[0] == 0:
        raise BGFSError("the IMAGE batch holds no frames")


def _rgb(images: Any) -> torch.Tensor:
    """A checked IMAGE batch's RGB channels (alpha dropped, grey repeated), on its device and in its dtype."""
    check_images(images)
    return images.detach()[..., :3].expand(*images.shape[:-1], 3)


def rgb_image(images: Any) -> torch.Tensor:
    """An IMAGE batch as RGB float32 ``[T, H, W, 3]`` on the CPU (alpha dropped, grey repeated), values as given."""
    return _rgb(images).float().cpu()


def image_to_uint8(images: Any) -> np.ndarray:
    """ComfyUI IMAGE (float ``[T, H, W, C]`` in [0, 1], C = 3 or 4) -> RGB ``uint8 [T, H, W, 3]`` (alpha dropped)."""
    import torch

    x = _rgb(images).float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(x.cpu().numpy())


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """RGB ``uint8 [T, H, W, 3]`` -> ComfyUI IMAGE float ``[T, H, W, 3]`` in [0, 1] (CPU)."""
    import torch

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise BGFSError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(255.0)


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """Float mask ``[T, H, W]`` in [0, 1] -> ComfyUI MASK tensor (float32, CPU)."""
    import torch

    mask = np.asarray(mask, np.float32)
    if mask.ndim != 3:
        raise BGFSError(f"a mask must be [T, H, W], got {list(mask.shape)}")
    return torch.from_numpy(np.ascontiguousarray(np.clip(mask, 0.0, 1.0)))


def latent_samples(latent: Any) -> torch.Tensor:
    """The ``samples`` tensor of a video LATENT, ``[1, C, t, h, w]``, with errors a user can act on."""
    import torch

    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise BGFSError("the latent input is not a ComfyUI LATENT (a dict with 'samples')")
    samples = latent["samples"]
    if samples.ndim != 5:
        raise BGFSError(
            f"the latent is {samples.ndim}-dimensional {list(samples.shape)}; a video latent [1, C, t, h, w] from "
            "a Wan model (EmptyHunyuanLatentVideo, WanImageToVideo, Wan22ImageToVideoLatent, VAEEncode of frames) "
            "is needed"
        )
    if samples.shape[0] != 1:
        raise BGFSError(f"the latent holds a batch of {samples.shape[0]} videos; fix one video at a time (batch 1)")
    if not torch.isfinite(samples).all():
        raise BGFSError("the latent holds NaN or infinite values: check the sampler that produced it")
    return samples


def replace_samples(latent: dict, samples: torch.Tensor) -> dict:
    """A new LATENT dict with ``samples`` replaced and every other key (noise_mask, batch_index, ...) kept."""
    out = dict(latent)
    out["samples"] = samples
    return out


# --- BGFS_ROI / BGFS_CRITIC --------------------------------------------------------------------------------------


@dataclass
class RoiData:
    """What ``BGFS ROI Detect`` hands to the fixer: detections plus the ROI settings they were made with."""

    detections: Detections
    margin: float = 0.25
    min_conf: float = 0.3
    smooth: float = 0.6
    backend: str = "solutions"
    fps: float = 16.0  # the frame rate it was detected at: the guard tracks the fixed frames at the same rate
    track_names: list[str] | None = None  # ROI Detect's name for each slot ("left"); None: the region's labels

    @property
    def region(self) -> str:
        return self.detections.region

    @property
    def names(self) -> list[str]:
        """The name of each instance slot, as ROI Detect's preview and text call it."""
        return list(self.detections.spec.instance_labels) if self.track_names is None else list(self.track_names)

    @property
    def frame_hw(self) -> tuple[int, int]:
        return self.detections.frame_hw

    @property
    def num_frames(self) -> int:
        return self.detections.num_frames


@dataclass
class CriticData:
    """What ``BGFS Heatmap Critic Loader`` hands on: the network (frozen, built outside inference mode) and spec."""

    model: Any
    spec: Any  # bgfs_core.critic.CriticSpec
    meta: dict = field(default_factory=dict)
    name: str = ""

    @property
    def region(self) -> str:
        return self.spec.region


def check_roi(obj: Any) -> RoiData:
    if not isinstance(obj, RoiData):
        raise BGFSError(f"the roi input must come from a BGFS ROI Detect node, got {type(obj).__name__}")
    return obj


def check_critic(obj: Any) -> CriticData:
    if not isinstance(obj, CriticData):
        raise BGFSError(
            f"the critic input must come from BGFS Heatmap Critic Loader or BGFS Critic Trainer, got {type(obj).__name__}"
        )
    return obj


def roi_boxes(roi: RoiData) -> np.ndarray:
    """Square, smoothed ROI boxes ``[T, I, 4]`` (NaN where an instance is absent) with the ROI's own settings."""
    from ..bgfs_core.roi import roi_boxes as core_roi_boxes

    return core_roi_boxes(roi.detections, roi.margin, roi.min_conf, roi.smooth)


def roi_mask_frames(roi: RoiData, feather: float = 0.0) -> np.ndarray:
    """ROI mask per frame, ``float32 [T, H, W]``: the union of every instance's ROI box (0 where none)."""
    from ..bgfs_core.roi import roi_mask_union

    return roi_mask_union(roi_boxes(roi), roi.frame_hw, feather=feather)


def roi_crops(frames: np.ndarray, roi: RoiData, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square crops ``uint8 [N, S, S, 3]`` of every (frame, instance) that has an ROI box, the detected keypoints
    in crop pixels ``[N, K, 2]`` (NaN where unseen) and their confidence ``[N, K]``. N may be 0."""
    return crops_at(frames, roi.detections, roi_boxes(roi), size)


def crops_at(frames: np.ndarray, det: Detections, boxes: np.ndarray, size: int = 128
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``roi_crops`` with given boxes ``[T, I, 4]``: crops of ``frames`` and ``det``'s keypoints in them. Two
    videos cropped with the same boxes give tiles that compare one to one (before / after)."""
    from ..bgfs_core.roi import box_valid, crop_frames, frame_to_crop

    pairs = np.argwhere(box_valid(boxes))
    k = det.keypoints.shape[2]
    if len(pairs) == 0:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32)
    t, i = pairs[:, 0], pairs[:, 1]
    crops = crop_frames(frames[t], boxes[t, i], (size, size))
    keypoints = frame_to_crop(det.keypoints[t, i], boxes[t, i], (size, size)).astype(np.float32)
    return crops, keypoints, det.confidence[t, i].astype(np.float32)


def crop_labels(det: Detections, boxes: np.ndarray, names: list[str] | None = None) -> list[str]:
    """The preview slider's name for each crop ``crops_at`` makes, in its order: ``"12/43 left"`` (frame 12 of 43,
    the instance's label, or its track's name from ``names``; the label only when the region has several)."""
    from ..bgfs_core.roi import box_valid

    names = list(det.spec.instance_labels) if names is None else names
    return pair_labels(np.argwhere(box_valid(boxes)), det.num_frames, names)


def cuts_text(det: Detections, min_conf: float) -> str:
    """ROI Detect's words for the cuts in ``det`` (tracks, `bgfs_core.tracks.cuts`); "" when there are none."""
    from ..bgfs_core.tracks import cut_words, detection_cuts

    words = cut_words(det.region, detection_cuts(det, min_conf))
    return f"; {words}: boxes, fixes and scores treat each side alone" if words else ""


def pair_labels(pairs: Any, num_frames: int, names: list[str]) -> list[str]:
    """``"12/43 left"`` for each (frame, instance) pair: frame 12 of 43 and the instance's name, the name only when
    the region has several."""
    return [f"{t + 1}/{num_frames}" + (f" {names[i]}" if len(names) > 1 else "") for t, i in pairs]


def keypoint_heatmaps(keypoints: np.ndarray, confidence: np.ndarray, crop_size: int, heatmap_size: int = 64,
                      sigma: float = 2.0, min_conf: float = 0.0) -> np.ndarray:
    """Gaussian heatmaps ``float32 [N, K, hs, hs]`` of keypoints given in pixels of ``crop_size`` crops."""
    from ..bgfs_core.heatmaps import render_heatmaps

    visible = np.isfinite(keypoints).all(-1) & (confidence > min_conf)
    pts = keypoints * (heatmap_size / crop_size)
    return np.asarray(render_heatmaps(pts, visible, (heatmap_size, heatmap_size), sigma), np.float32)


# --- the fixer under ComfyUI's inference mode ------------------------------------------------------------------


def copy_module(module: Any) -> Any:
    """A deep copy with frozen parameters; made outside inference mode, its tensors are ones autograd accepts."""
    import copy

    return copy.deepcopy(module).requires_grad_(False).eval()


def build_codec(vae: Any, gradient_vae: Any = None) -> Any:
    """A ``LatentCodec`` over ComfyUI VAE objects (duck-typed: ``first_stage_model``, ``latent_channels``,
    ``upscale_ratio``, ``process_output``); gradients go through ``gradient_vae`` when given.

    Call it under ``torch.inference_mode(False)``: the decoder that gradients pass through is deep-copied, since
    ComfyUI's weights are inference tensors; the main VAE is only wrapped when a gradient VAE does that job.
    """
    from types import SimpleNamespace

    from ..bgfs_core.codecs import GradientProxyCodec, ModuleCodec

    def wrap(v: Any, what: str, copy: bool) -> Any:
        model = getattr(v, "first_stage_model", None)
        if model is None:
            raise BGFSError(f"the {what} input is not a loaded VAE (it has no first_stage_model): use Load VAE")
        view = SimpleNamespace(first_stage_model=copy_module(model) if copy else model,
                               latent_channels=v.latent_channels, upscale_ratio=v.upscale_ratio,
                               process_output=v.process_output)  # fmt: skip
        return ModuleCodec.from_comfy_vae(view, name=f"{type(model).__name__} ({what})")

    real = wrap(vae, "vae", copy=gradient_vae is None)
    if gradient_vae is None:
        return real
    if getattr(getattr(gradient_vae, "first_stage_model", None), "latent_format", None) is not None:
        # ComfyUI reads a 16-channel tiny autoencoder in fp16 as HunyuanVideo's taehv and rescales the latents it
        # decodes: another latent space than the Wan VAE's (madebyollin's taew2_1 ships in fp16 too)
        raise BGFSError("the gradient_vae input is a tiny autoencoder that ComfyUI reads as HunyuanVideo's (an fp16 "
                        "16-channel file): connect lighttaew2_1 (models/vae_approx) for the Wan 2.1 VAE, or save "
                        "taew2_1 in bf16 or fp32 first")  # fmt: skip
    return GradientProxyCodec(real, wrap(gradient_vae, "gradient_vae", copy=True))


@contextlib.contextmanager
def cancel_checks(check_cancel: Callable[[], None]) -> Iterator[None]:
    """Run ``check_cancel`` before every torch module's forward while the block runs (and never after).

    For loops that BGFS does not own step by step (critic training): a cancel then stops within a batch instead
    of at the end of an epoch. The hook is global to the process, so keep the block to the job itself.
    """
    from torch.nn.modules.module import register_module_forward_pre_hook

    handle = register_module_forward_pre_hook(lambda *_: check_cancel())
    try:
        yield
    finally:
        handle.remove()


def run_fix(latent: dict, vae: Any, critic: CriticData | None, roi: RoiData, settings: Any, gradient_vae: Any = None,
            on_step: Any = None, check_cancel: Callable[[], None] | None = None,
            free_memory: Callable[[], None] | None = None) -> tuple[dict, Any]:
    """Fix a LATENT dict -> (new LATENT with every other key kept, ``FixResult``).

    Safe under ComfyUI's ``torch.inference_mode()``: decoder, critic and latent are copied outside it first. The
    optimisation runs on the device of the decoder the gradients go through; the result comes back on the
    latent's device and dtype. ``check_cancel`` runs before every layer of the copied decoder and critic, so a
    cancel (it raises) stops the run within a layer rather than after a whole step; it propagates unchanged.
    When the device runs out of memory, ``free_memory`` (ComfyUI: unload the other models, reload the VAEs) runs
    once and the fix starts again; a second failure is an ``OutOfMemoryError`` that says what to make smaller.
    """
    # what makes the job smaller, in the node's terms
    smaller = _SMALLER
    if gradient_vae is None:
        tiny = tiny_vae_for(latent.get("samples") if isinstance(latent, dict) else None)
        smaller = (f"connect the Tiny AutoEncoder for Wan ({tiny} through Load VAE) to gradient_vae, "
                   + smaller.replace(" or ", ", or "))  # fmt: skip
    return _retry_with_advice(
        lambda _: _run_fix_once(latent, vae, critic, roi, settings, gradient_vae, on_step, check_cancel),
        free_memory, smaller)  # fmt: skip


_SMALLER = "fix fewer frames or lower ROI Detect's margin"


def tiny_vae_for(samples: Any) -> str:
    """The Tiny AutoEncoder file made for a latent's VAE: 48 channels are the Wan 2.2 VAE's (TI2V-5B), 16 the Wan
    2.1 VAE's (the 14B models)."""
    channels = samples.shape[1] if getattr(samples, "ndim", 0) >= 2 else None
    return "lighttaew2_2.safetensors" if channels == 48 else "lighttaew2_1.safetensors"


def _retry_with_advice(attempt: Callable[[bool], T], free_memory: Callable[[], None] | None, smaller: str) -> T:
    """`retry_out_of_memory`; a second failure says what to make smaller (``smaller``), in the node's terms."""
    from ..bgfs_core.errors import OutOfMemoryError

    try:
        return retry_out_of_memory(attempt, free_memory)
    except OutOfMemoryError as exc:
        again = ", even with the other models unloaded" if free_memory is not None else ""
        raise OutOfMemoryError(f"{exc.what}{again}: {smaller}", exc.what) from exc


T = TypeVar("T")


def retry_out_of_memory(attempt: Callable[[bool], T], free_memory: Callable[[], None] | None) -> T:
    """``attempt(False)``; when the device runs out of memory (`is_out_of_memory`), ``free_memory()`` and then
    ``attempt(True)`` once. A second failure, any other error, or the first one with no ``free_memory``,
    propagates unchanged."""
    from ..bgfs_core.errors import is_out_of_memory

    try:
        return attempt(False)
    except Exception as exc:
        if free_memory is None or not is_out_of_memory(exc):
            raise
    # out of the except block: the failed attempt's tensors, held by its traceback, are released before freeing
    free_memory()
    return attempt(True)


def _run_fix_once(latent: dict, vae: Any, critic: CriticData | None, roi: RoiData, settings: Any, gradient_vae: Any,
                  on_step: Any, check_cancel: Callable[[], None] | None) -> tuple[dict, Any]:
    import torch

    from ..bgfs_core.fixer import fix_latents

    samples = latent_samples(latent)
    roi = check_roi(roi)
    critic = check_critic(critic) if critic is not None else None  # None: the guide alone drives the edit
    settings.validate()
    with torch.inference_mode(False):
        codec = build_codec(vae, gradient_vae)
        grad_codec = getattr(codec, "grad", codec)
        # where the host runs that VAE (ComfyUI's VAE.device); with weights streamed from the CPU (--novram) the
        # first parameter's device would put the whole fix on the CPU
        device = getattr(gradient_vae if gradient_vae is not None else vae, "device", None)
        device = torch.device(device) if device is not None else next(grad_codec.module.parameters()).device
        # our copy, all of it on that device: weights ComfyUI left on the CPU to stream them (--novram, a partial
        # load) would make the codec decode on the CPU, away from the critic and the window
        grad_codec.module.to(device)
        model = copy_module(critic.model).to(device) if critic is not None else None
        _hook_cancel((grad_codec.module, model), check_cancel)
        z = samples.detach().to(dtype=torch.float32).clone()  # only the window goes to the device (fix_latents)
        spec = critic.spec if critic is not None else None
        result = fix_latents(z, codec, model, spec, roi.detections, settings, on_step=on_step, device=device)
        new = result.latents.detach().to(device=samples.device, dtype=samples.dtype).clone()
    return replace_samples(latent, new), result


def _hook_cancel(modules: tuple, check_cancel: Callable[[], None] | None) -> None:
    """``check_cancel`` before every layer of ``modules`` (None skipped): our own copies only, never ComfyUI's
    shared models."""
    if check_cancel is None:
        return
    for module in (m for m in modules if m is not None):
        for sub in module.modules():
            sub.register_forward_pre_hook(lambda *_: check_cancel())


def run_fix_frames(images: Any, critic: CriticData | None, roi: RoiData, settings: Any, device: Any = "cpu",
                   on_step: Any = None, check_cancel: Callable[[], None] | None = None,
                   free_memory: Callable[[], None] | None = None) -> tuple[torch.Tensor, Any]:
    """Fix an IMAGE batch ``[T, H, W, C]`` in pixel space, where the frames are the latents (``PixelCodec``, as
    ``bgfs fix`` without a VAE) -> (new IMAGE ``[T, H, W, 3]`` float32 on the CPU, ``FixResult``).

    Pixels the fix did not change are the input's, bit for bit. ``check_cancel`` runs before every layer of the
    copied critic and at every step; out of memory: as `run_fix`.
    """
    return _retry_with_advice(
        lambda _: _run_fix_frames_once(images, critic, roi, settings, device, on_step, check_cancel),
        free_memory, _SMALLER)  # fmt: skip


def _run_fix_frames_once(images: Any, critic: CriticData | None, roi: RoiData, settings: Any, device: Any,
                         on_step: Any, check_cancel: Callable[[], None] | None) -> tuple[torch.Tensor, Any]:
    import torch

    from ..bgfs_core.codecs import PixelCodec
    from ..bgfs_core.fixer import fix_latents

    check_images(images)
    roi = check_roi(roi)
    critic = check_critic(critic) if critic is not None else None
    settings.validate()
    (h0, w0), (h1, w1) = roi.frame_hw, images.shape[1:3]
    if len(images) != roi.num_frames or abs(h0 / w0 - h1 / w1) > 0.02 * (h1 / w1):
        raise BGFSError(f"the ROI was found on {roi.num_frames} frames of {w0}x{h0} but the images are "
                        f"{len(images)} of {w1}x{h1}: run ROI Detect on these images")  # fmt: skip
    source = rgb_image(images)
    with torch.inference_mode(False):
        codec = PixelCodec()
        device = torch.device(device)
        model = copy_module(critic.model).to(device) if critic is not None else None
        _hook_cancel((model,), check_cancel)
        # the frames are the latents: they stay on the CPU, only the ROI's window goes to the device
        z = codec.encode(source.permute(0, 3, 1, 2))
        spec = critic.spec if critic is not None else None

        def step(*args: Any) -> None:
            if check_cancel is not None:
                check_cancel()
            if on_step is not None:
                on_step(*args)

        result = fix_latents(z, codec, model, spec, roi.detections, settings, on_step=step, device=device)
        win = result.window
        if not result.report.get("changed") or win is None:
            return source.clone(), result
        # compare and decode only the window's region (a long video's full decode would be another copy of it)
        region = win.decoded_slices
        new, old = result.latents.detach()[region], z[region].clone()
        del z
        out = source.clone()
        changed = (new != old)[0].any(0)[..., None]  # [t, h, w, 1]: where the fix wrote
        box = region[2:]  # (t, h, w) of the frames [T, H, W, 3]
        out[box] = torch.where(changed, codec.decode(new).permute(0, 2, 3, 1).float(), source[box])
    return out, result


# --- drawing -----------------------------------------------------------------------------------------------------

_COLORS = ((255, 64, 64), (64, 160, 255), (80, 220, 80), (255, 200, 0), (220, 80, 255))


def draw_overlay(frames: np.ndarray, det: Detections, boxes: np.ndarray | None = None, min_conf: float = 0.0
                 ) -> np.ndarray:
    """Frames with each instance's skeleton, keypoints and ROI box drawn on them (``uint8 [T, H, W, 3]``)."""
    from PIL import Image, ImageDraw

    spec = det.spec
    out = np.empty_like(frames)
    h, w = frames.shape[1:3]
    r = max(1.5, min(h, w) / 160)
    for t, frame in enumerate(frames):
        img = Image.fromarray(frame)
        draw = ImageDraw.Draw(img)
        for i in range(det.keypoints.shape[1]):
            color = _COLORS[i % len(_COLORS)]
            if boxes is not None and np.isfinite(boxes[t, i]).all():
                draw.rectangle([float(v) for v in boxes[t, i]], outline=color, width=max(1, int(r / 1.5)))
            if not det.present[t, i]:
                continue
            kp, conf = det.keypoints[t, i], det.confidence[t, i]
            ok = np.isfinite(kp).all(-1) & (conf > min_conf)
            for a, b in spec.bones:
                if ok[a] and ok[b]:
                    draw.line([tuple(kp[a]), tuple(kp[b])], fill=color, width=max(1, int(r)))
            for (x, y), good in zip(kp, ok):
                if good:
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=color)
        out[t] = np.asarray(img)
    return out


def progress_preview(crop: np.ndarray | None, max_size: int = 512) -> tuple | None:
    """The ``(format, PIL image, max size)`` tuple that ComfyUI's ProgressBar sends as the node's live preview."""
    if crop is None:
        return None
    from PIL import Image

    return ("JPEG", Image.fromarray(np.ascontiguousarray(np.asarray(crop, np.uint8))), max_size)


def loss_plot(values: list[float], size: tuple[int, int] = (320, 160), title: str = "loss") -> Any:
    """A small line chart of ``values`` as a PIL image (the Critic Trainer's live preview)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, (24, 24, 28))
    draw = ImageDraw.Draw(img)
    vals = [v for v in values if v is not None and math.isfinite(v)]
    draw.text((6, 4), f"{title}: {vals[-1]:.4f}" if vals else title, fill=(230, 230, 230))
    if len(vals) >= 2:
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        pts = [(8 + (w - 16) * i / (len(vals) - 1), h - 8 - (h - 30) * (v - lo) / span) for i, v in enumerate(vals)]
        draw.line(pts, fill=(90, 200, 255), width=2)
    return img


# --- names, JSON -------------------------------------------------------------------------------------------------


def check_name(name: str, what: str) -> str:
    """A file/folder name a user typed: letters, digits, ``_ . -``; no paths (nothing can escape its folder)."""
    name = (name or "").strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not _NAME.match(name) or ".." in name:
        raise BGFSError(f"{what} {name!r}: use letters, digits, '_', '.' or '-' only (no folders), e.g. 'hands_v1'")
    return name


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays turned into Python values and NaN/inf into None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_report(report: dict) -> str:
    """A report dict as strict JSON text, ``summary`` first."""
    report = json_safe(report)
    ordered = {"summary": report.get("summary", "")} | {k: v for k, v in report.items() if k != "summary"}
    return json.dumps(ordered, indent=1)


def preview_ui(kind: str, region: str, crops: np.ndarray, heatmaps: np.ndarray | None, keypoints: np.ndarray | None,
               **after: Any) -> dict | None:
    """The heatmap widget's ``ui`` dict (built by ``nodes/preview_ui.py``), or None when there is nothing to show
    or that module is absent (a trimmed install): the nodes' results never depend on the widget."""
    if crops is None or len(crops) == 0:
        return None
    try:
        from .preview_ui import preview_ui as build
    except ImportError:
        return None
    return build(kind, region, crops, heatmaps, keypoints, **after)


def merge_ui(*parts: dict | None) -> dict | None:
    """Merge ui dicts (every value a list, as ComfyUI wants); None when all are empty."""
    out: dict[str, list] = {}
    for part in parts:
        for key, value in (part or {}).items():
            out.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return out or None
