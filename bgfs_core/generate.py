"""Wan 2.1 / 2.2 videos through diffusers' Wan pipelines, keeping the raw latents so `bgfs fix` can start from them.

Model kinds (read from the model's JSON configs, never guessed from its name):
``t2v`` text to video (Wan 2.2 T2V-A14B: two experts; Wan 2.1 T2V: one), 16-channel Wan 2.1 VAE, ``WanPipeline``;
``i2v`` image to video (Wan 2.2 I2V-A14B: two experts), transformer input = 16 noise + 4 mask + 16 image
channels, ``WanImageToVideoPipeline``; ``ti2v`` Wan 2.2 TI2V-5B, 48-channel Wan 2.2 VAE, text or image to video
(``WanPipeline``, or ``WanImageToVideoPipeline`` when an image is given).

The two A14B experts: the pipeline runs ``transformer`` (high noise) while the timestep is >= ``boundary_ratio *
num_train_timesteps`` and ``transformer_2`` (low noise) below it, with ``guidance_scale`` / ``guidance_scale_2``.

Latents files (``.safetensors``): tensor ``latents`` float32 ``[1, C, t, h, w]`` in raw VAE space (the pipeline's
latents after ``z * std + mean``, what ``AutoencoderKLWan.decode`` takes and what ComfyUI calls ``samples``) and
``bgfs.*`` metadata, JSON-encoded strings: ``format`` (``bgfs-latents-1``), ``model_id``, ``kind``, ``vae``
(``wan2.1`` / ``wan2.2``), ``channels``, ``num_frames``, ``height``, ``width``, ``fps``, ``seed``, ``steps``,
``guidance_scale``, ``guidance_scale_2``, ``boundary_ratio``, ``prompt``, ``negative_prompt``, ``image``, ``version``.

Prompt-embedding files (``--prompt-embeds``): tensors ``prompt_embeds`` ``[1, L, text_dim]`` and optionally
``negative_prompt_embeds``, as UMT5 gives them (text_dim 4096 for the real models). With them no text encoder is
loaded (the 11 GB UMT5-XXL); `save_prompt_embeds` writes such a file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_path
from .errors import BGFSError, first_line, import_diffusers, not_a_file

if TYPE_CHECKING:
    import torch
    from PIL import Image

KINDS: tuple[str, ...] = ("t2v", "i2v", "ti2v")
LATENTS_FORMAT = "bgfs-latents-1"
EMBEDS_FORMAT = "bgfs-prompt-embeds-1"
DTYPES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
MAX_SEQUENCE_LENGTH = 512  # the pipelines' default text length

# Native settings of the released models (Wan's own configs): pixel area, frame rate, sampling steps.
_DEFAULTS = {"t2v": (480 * 832, 16.0, 40), "i2v": (480 * 832, 16.0, 40), "ti2v": (704 * 1280, 24.0, 50)}

DOWNLOAD_HINT = (
    "Download the diffusers version of the model first, e.g. `hf download Wan-AI/Wan2.2-I2V-A14B-Diffusers "
    "--local-dir models/Wan2.2-I2V-A14B-Diffusers` (others: Wan-AI/Wan2.2-T2V-A14B-Diffusers, "
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers; add `--exclude 'text_encoder/*'` when you will pass --prompt-embeds), then "
    "pass that folder as --model-id. A Hugging Face id is read from the local cache, or downloaded when online "
    "(the A14B models are over 100 GB); with HF_HUB_OFFLINE=1 set, only the cache is used."
)


# --- what a model is, from its JSON configs only ------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """A Wan model as its configs describe it; cheap to get, so inputs are checked before any weight loads."""

    source: str  # the folder or Hugging Face id the user gave
    kind: str  # t2v | i2v | ti2v
    experts: int  # 2 for the A14B models (transformer + transformer_2)
    boundary_ratio: float | None
    vae_channels: int  # 16 = Wan 2.1 VAE, 48 = Wan 2.2 VAE
    temporal_ratio: int
    spatial_multiple: int  # VAE spatial ratio x transformer patch: height and width must be multiples of it
    text_dim: int
    has_text_encoder: bool

    @property
    def vae(self) -> str:
        return vae_name(self.vae_channels)


def vae_name(channels: int) -> str:
    """``wan2.1`` for 16 latent channels, ``wan2.2`` for 48."""
    return {16: "wan2.1", 48: "wan2.2"}.get(int(channels), f"unknown-{channels}ch")


def hf_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (read now, not at huggingface_hub's import)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(
        constants.HF_HUB_OFFLINE
    )


def _looks_like_repo_id(model: str) -> bool:
    return not model.startswith((".", "/", "~")) and model.count("/") == 1 and "\\" not in model


def _read_config(model: str, filename: str) -> dict[str, Any]:
    """One JSON file of a model: from a local folder, or a Hugging Face repo (cache, or download when online)."""
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise BGFSError(f"{local} is not a diffusers Wan model folder: {filename} is missing. {DOWNLOAD_HINT}")
    elif _looks_like_repo_id(model):
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(model, filename, local_files_only=hf_offline()))
        except Exception as e:  # network, missing repo/file, offline cache miss: all mean "not available here"
            where = "in the local Hugging Face cache (HF_HUB_OFFLINE is set)" if hf_offline() else "locally or online"
            raise BGFSError(f"model {model!r}: {filename} not found {where} ({type(e).__name__}). "
                            f"{DOWNLOAD_HINT}") from None
    else:
        raise BGFSError(f"model folder {model} does not exist. {DOWNLOAD_HINT}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BGFSError(f"model {model!r}: cannot read {filename} ({e})") from None


def _detect_kind(model: str, z_dim: int, in_channels: int, expand_timesteps: bool) -> str:
    if z_dim == 48 or expand_timesteps:
        return "ti2v"
    if in_channels == 2 * z_dim + 4:  # noise + first-frame mask + image latents
        return "i2v"
    if in_channels == z_dim:
        return "t2v"
    raise BGFSError(f"model {model!r}: transformer in_channels {in_channels} fits no Wan kind with a "
                    f"{z_dim}-channel VAE")


def inspect_model(model_id_or_path: str | Path, kind: str = "auto") -> ModelInfo:
    """Read ``model_index.json`` and the VAE / transformer configs; detect the kind and the size rules."""
    model = str(model_id_or_path)
    index = _read_config(model, "model_index.json")
    cls = index.get("_class_name", "")
    if cls not in ("WanPipeline", "WanImageToVideoPipeline"):
        raise BGFSError(f"model {model!r} is a {cls or 'unknown'} pipeline; `bgfs generate` runs WanPipeline and "
                        "WanImageToVideoPipeline models (Wan 2.2 T2V-A14B, I2V-A14B, TI2V-5B, Wan 2.1 T2V/I2V)")

    def present(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None

    names = [n for n in ("transformer", "transformer_2") if present(n)]
    if not names or not present("vae"):
        raise BGFSError(f"model {model!r}: model_index.json lists no transformer or no vae. {DOWNLOAD_HINT}")
    vae = _read_config(model, "vae/config.json")
    tcfg = _read_config(model, f"{names[0]}/config.json")
    z_dim = int(vae.get("z_dim", 16))
    detected = _detect_kind(model, z_dim, int(tcfg.get("in_channels", 16)), bool(index.get("expand_timesteps")))
    if kind not in ("auto", *KINDS):
        raise BGFSError(f"unknown model kind {kind!r}; use auto, {', '.join(KINDS)}")
    if kind != "auto" and kind != detected:
        raise BGFSError(f"model {model!r} is a {detected} model (from its configs), not {kind}; use --kind auto")
    patch = tcfg.get("patch_size", [1, 2, 2])
    boundary = index.get("boundary_ratio")
    return ModelInfo(
        source=model,
        kind=detected,
        experts=len(names),
        boundary_ratio=float(boundary) if boundary is not None and len(names) == 2 else None,
        vae_channels=z_dim,
        temporal_ratio=int(vae.get("scale_factor_temporal", 4)),
        spatial_multiple=int(vae.get("scale_factor_spatial", 8)) * int(max(patch[1:])),
        text_dim=int(tcfg.get("text_dim", 4096)),
        has_text_encoder=present("text_encoder") and present("tokenizer"),
    )


# --- input checks (before anything heavy) -------------------------------------------------------------------------
def check_num_frames(num_frames: int, temporal_ratio: int = 4) -> None:
    """Wan makes ``1 + 4k`` frames; name the nearest valid counts otherwise."""
    if num_frames < 1 or (num_frames - 1) % temporal_ratio:
        lo = max(1, (num_frames - 1) // temporal_ratio * temporal_ratio + 1)
        hi = lo + temporal_ratio
        raise BGFSError(f"--num-frames {num_frames}: Wan makes 1 + {temporal_ratio}k frames; use {lo} or {hi}"
                        if num_frames > 1 else f"--num-frames {num_frames}: use 1 + {temporal_ratio}k, e.g. 81")


def check_size(height: int, width: int, multiple: int) -> None:
    """Height and width must be multiples of the VAE's spatial ratio times the transformer's patch size."""
    fixes = []
    for name, v in (("height", height), ("width", width)):
        if v < multiple or v % multiple:
            lo = v // multiple * multiple
            fixes.append(f"--{name} " + " or ".join(str(o) for o in (lo, lo + multiple) if o >= multiple))
    if fixes:
        raise BGFSError(f"height and width must be multiples of {multiple} for this model (VAE spatial ratio x "
                        f"transformer patch size), got {height}x{width}; use {', '.join(fixes)}")


def default_size(kind: str, multiple: int, image_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """The model's native pixel area, in the image's aspect ratio when there is one (else 480x832 / 704x1280)."""
    area = _DEFAULTS[kind][0]
    aspect = image_hw[0] / image_hw[1] if image_hw else (480 / 832 if area == 480 * 832 else 704 / 1280)
    h = max(multiple, int(round((area * aspect) ** 0.5 / multiple)) * multiple)
    w = max(multiple, int(round((area / aspect) ** 0.5 / multiple)) * multiple)
    return h, w


def default_fps(kind: str) -> float:
    return _DEFAULTS[kind][1]


def default_fps_of_latents(channels: int) -> float:
    """The frame rate Wan models render latents of this VAE at: 16 for the Wan 2.1 VAE's 16 channels (Wan 2.2
    14B T2V/I2V), 24 for the Wan 2.2 VAE's 48 (TI2V-5B)."""
    return default_fps("ti2v" if channels == 48 else "t2v")


def default_steps(kind: str) -> int:
    return _DEFAULTS[kind][2]


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, with a clear error when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    from .video_io import upright_rgb

    path = Path(path)
    if not path.is_file():
        raise BGFSError(f"--image {path} {not_a_file(path)}")
    try:
        with Image.open(path) as im:
            return upright_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise BGFSError(f"--image {path} cannot be read as an image ({type(e).__name__}); use a PNG or JPEG") from None


def as_image(image: Any) -> Image.Image:
    """A path, PIL image or RGB ``uint8 [H, W, 3]`` array -> an RGB PIL image."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise BGFSError(f"image must be RGB uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        return Image.fromarray(image)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise BGFSError(f"image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")


def fit_image(image: Image.Image, height: int, width: int) -> Image.Image:
    """Resize to cover ``height x width`` and centre-crop, so the first frame keeps the image's proportions."""
    from PIL import Image

    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


# --- loading -------------------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise BGFSError(f"unknown device {device!r}; use {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        from .devices import check_device

        check_device(device)  # the check bgfs fix makes, in the same words
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` is bf16 on a GPU (as Wan was trained) and fp32 on the CPU."""
    import torch

    if dtype not in DTYPES:
        raise BGFSError(f"unknown dtype {dtype!r}; use {', '.join(DTYPES)}")
    if dtype == "fp16" and device == "cpu":
        raise BGFSError("--dtype fp16 is not supported on the CPU; use fp32 or bf16")
    if dtype == "auto":
        dtype = "bf16" if device != "cpu" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def load_pipeline(model_id_or_path: str | Path, kind: str = "auto", device: str = "auto", dtype: str = "auto", *,
                  image: bool = False, text_encoder: bool = True, cpu_offload: bool = False) -> Any:
    """Load the Wan pipeline for ``model_id_or_path`` (a local diffusers folder or a cached Hugging Face id).

    ``image``: image-conditioned generation (required by i2v models, optional for ti2v, refused by t2v).
    ``text_encoder=False`` skips UMT5 and the tokenizer (pass prompt embeddings to `generate_video` then).
    The VAE stays in float32 (as diffusers' Wan examples load it); ``dtype`` applies to the transformers.
    """
    import torch

    diffusers = import_diffusers("bgfs generate (diffusers' Wan pipelines)")
    info = inspect_model(model_id_or_path, kind)
    if info.kind == "i2v" and not image:
        raise BGFSError(f"{info.source} is an image-to-video model: give the first frame with --image")
    if info.kind == "t2v" and image:
        raise BGFSError(f"{info.source} is a text-to-video model and takes no --image; use an I2V or TI2V-5B model")
    if text_encoder and not info.has_text_encoder:
        raise BGFSError(f"{info.source} has no text encoder/tokenizer: pass --prompt-embeds instead of --prompt")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if cpu_offload and dev != "cuda":
        raise BGFSError("--cpu-offload moves models between the CPU and a GPU; it needs --device cuda")
    cls = diffusers.WanImageToVideoPipeline if image else diffusers.WanPipeline
    skip = {} if text_encoder else {"text_encoder": None, "tokenizer": None}
    src = str(Path(os.path.expanduser(info.source))) if Path(os.path.expanduser(info.source)).is_dir() else info.source
    try:
        pipe = cls.from_pretrained(src, dtype={"default": dt, "vae": torch.float32},
                                   local_files_only=hf_offline() or Path(src).is_dir(), **skip)
    except (OSError, ValueError, RuntimeError) as e:
        raise BGFSError(f"could not load the Wan pipeline from {info.source!r}: {first_line(e)}. "
                        f"{DOWNLOAD_HINT}") from None
    pipe.bgfs_info = info  # what inspect_model found; generate_video reads the model id and kind from it
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    return pipe


def pipeline_info(pipe: Any) -> ModelInfo:
    """The `ModelInfo` of a loaded Wan pipeline (from `load_pipeline`, or read off its components)."""
    info = getattr(pipe, "bgfs_info", None)
    if info is not None:
        return info
    t = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    vae = pipe.vae.config
    source = str(pipe.config.get("_name_or_path", "the pipeline"))
    two = pipe.transformer is not None and pipe.transformer_2 is not None
    return ModelInfo(
        source=source, kind=_detect_kind(source, vae.z_dim, t.config.in_channels, bool(pipe.config.expand_timesteps)),
        experts=2 if two else 1, boundary_ratio=pipe.config.boundary_ratio if two else None,
        vae_channels=int(vae.z_dim), temporal_ratio=int(pipe.vae_scale_factor_temporal),
        spatial_multiple=int(pipe.vae_scale_factor_spatial) * int(max(t.config.patch_size[1:])),
        text_dim=int(t.config.text_dim), has_text_encoder=pipe.text_encoder is not None)


# --- prompt embeddings -------------------------------------------------------------------------------------------
def encode_prompts(pipe: Any, prompt: str, negative_prompt: str | None,
                   guidance: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text -> (prompt_embeds, negative_prompt_embeds or None without guidance) with the pipeline's UMT5."""
    import torch

    if pipe.text_encoder is None or pipe.tokenizer is None:
        raise BGFSError("this pipeline was loaded without a text encoder: pass prompt embeddings (--prompt-embeds)")
    with torch.no_grad():
        return pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt or "",
                                  do_classifier_free_guidance=guidance, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                  device=pipe._execution_device)


def save_prompt_embeds(path: str | Path, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None,
                       prompt: str = "", negative_prompt: str = "") -> Path:
    """Write a prompt-embeddings file (see the module docstring) atomically."""
    from safetensors.torch import save_file

    from . import __version__

    tensors = {"prompt_embeds": prompt_embeds.detach().cpu().contiguous()}
    if negative_prompt_embeds is not None:
        tensors["negative_prompt_embeds"] = negative_prompt_embeds.detach().cpu().contiguous()
    meta = {"bgfs.format": EMBEDS_FORMAT, "bgfs.prompt": json.dumps(prompt),
            "bgfs.negative_prompt": json.dumps(negative_prompt), "bgfs.version": __version__}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_prompt_embeds(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read ``prompt_embeds`` (``[1, L, D]`` or ``[L, D]``) and the optional ``negative_prompt_embeds``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise BGFSError(f"--prompt-embeds {path} {not_a_file(path)}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BGFSError(f"--prompt-embeds {path} is not a readable safetensors file ({e})") from None
    if "prompt_embeds" not in tensors:
        raise BGFSError(f"--prompt-embeds {path} holds {sorted(tensors)}; it needs a 'prompt_embeds' tensor "
                        "(and optionally 'negative_prompt_embeds')")
    out = []
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        t = tensors.get(key)
        if t is not None:
            t = t.unsqueeze(0) if t.ndim == 2 else t
            if t.ndim != 3 or t.shape[0] != 1:
                raise BGFSError(f"--prompt-embeds {path}: '{key}' must be [1, L, D] or [L, D], got {list(t.shape)}")
            if t.numel() == 0 or not bool(t.float().isfinite().all()):  # would generate from nothing, or noise
                raise BGFSError(f"--prompt-embeds {path}: '{key}' {list(t.shape)} is empty or holds NaN/inf values: "
                                "save the embeddings again (--save-prompt-embeds)")  # fmt: skip
        out.append(t)
    return out[0], out[1]


# --- generation ---------------------------------------------------------------------------------------------------
def _check_embeds(name: str, t: torch.Tensor, text_dim: int) -> None:
    if t.ndim != 3 or t.shape[-1] != text_dim:
        raise BGFSError(f"{name} must be [batch, tokens, {text_dim}] for this model (its text_dim), "
                        f"got {list(t.shape)}; were they made with another text encoder?")


def check_settings(*, steps: int | None = None, guidance_scale: float = 5.0, guidance_scale_2: float | None = None,
                   boundary_ratio: float | None = None, seed: int | None = None, height: int | None = None,
                   width: int | None = None) -> None:
    """The numbers of a generation, before the model loads: a NaN guidance would switch guidance off without a
    word, an infinite one write noise, a height of 0 fall back to the default, a seed past 64 bits fail at the end."""
    if steps is not None and steps < 1:
        raise BGFSError(f"--steps must be >= 1, got {steps}")
    for flag, value in (("--guidance-scale", guidance_scale), ("--guidance-scale-2", guidance_scale_2)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise BGFSError(f"{flag} must be a finite number >= 0 (Wan: 5.0; 1 or less: no guidance), got {value}")
    if boundary_ratio is not None and not 0.0 < boundary_ratio < 1.0:  # NaN fails too
        raise BGFSError(f"--boundary-ratio must be between 0 and 1 (A14B: T2V 0.875, I2V 0.9), got {boundary_ratio}")
    if seed is not None and not 0 <= seed < 2**64:
        raise BGFSError(f"--seed must be between 0 and 2**64 - 1, got {seed}")
    for flag, value in (("--height", height), ("--width", width)):
        if value is not None and value <= 0:
            raise BGFSError(f"{flag} must be > 0 (leave it out for the model's own size), got {value}")


def generate_video(pipe: Any, prompt: str | None = None, negative_prompt: str | None = None, *,
                   prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                   image: Any = None, num_frames: int = 81, height: int | None = None, width: int | None = None,
                   steps: int | None = None, guidance_scale: float = 5.0, guidance_scale_2: float | None = None,
                   boundary_ratio: float | None = None, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Run the pipeline -> (frames RGB ``uint8 [T, H, W, 3]``, raw VAE latents float32 ``[1, C, t, h, w]``).

    Text from ``prompt`` (needs the text encoder) or ``prompt_embeds``; ``image`` (path, PIL image or uint8 array)
    for i2v / ti2v; ``boundary_ratio`` overrides the A14B expert switch for this call. The frames are the VAE
    decode of exactly the returned latents (diffusers' own decode and post-processing).
    """
    import torch
    from diffusers import WanImageToVideoPipeline

    from .codecs.diffusers_wan import denormalize_latents

    info = pipeline_info(pipe)
    is_i2v_pipe = isinstance(pipe, WanImageToVideoPipeline)
    if image is None and is_i2v_pipe:
        raise BGFSError(f"{info.source} was loaded for image-to-video: give an image (--image)")
    if image is not None and not is_i2v_pipe:
        raise BGFSError("an image was given but the pipeline was loaded for text-to-video "
                        "(load_pipeline(..., image=True))")
    if image is not None:
        image = as_image(image)
    check_settings(steps=steps, guidance_scale=guidance_scale, guidance_scale_2=guidance_scale_2,
                   boundary_ratio=boundary_ratio, seed=seed, height=height, width=width)
    if height is None or width is None:
        image_hw = (image.height, image.width) if image is not None else None
        dh, dw = default_size(info.kind, info.spatial_multiple, image_hw)
        height, width = height or dh, width or dw
    check_num_frames(num_frames, pipe.vae_scale_factor_temporal)
    check_size(height, width, info.spatial_multiple)
    steps = default_steps(info.kind) if steps is None else steps
    two_experts = pipe.transformer_2 is not None and pipe.config.boundary_ratio is not None
    if (guidance_scale_2 is not None or boundary_ratio is not None) and not two_experts:
        raise BGFSError("--guidance-scale-2 and --boundary-ratio set the low-noise expert of the two-expert A14B "
                        f"models; {info.source} has one transformer")

    guidance = guidance_scale > 1.0  # the pipeline runs the negative branch only then
    if prompt_embeds is None:
        if not prompt:
            raise BGFSError("give a prompt (--prompt) or prompt embeddings (--prompt-embeds)")
        prompt_embeds, encoded_negative = encode_prompts(pipe, prompt, negative_prompt, guidance)
        negative_prompt_embeds = negative_prompt_embeds if negative_prompt_embeds is not None else encoded_negative
    elif guidance and negative_prompt_embeds is None:
        if pipe.text_encoder is None:
            raise BGFSError(f"--guidance-scale {guidance_scale} > 1 needs negative prompt embeddings: add "
                            "'negative_prompt_embeds' to the --prompt-embeds file, or use --guidance-scale 1")
        _, negative_prompt_embeds = encode_prompts(pipe, "", negative_prompt, True)
    _check_embeds("prompt embeddings", prompt_embeds, info.text_dim)
    if guidance:
        _check_embeds("negative prompt embeddings", negative_prompt_embeds, info.text_dim)
    else:
        negative_prompt_embeds = None
    # embeddings read from a file are on the CPU; the pipeline casts their dtype but leaves their device
    device = pipe._execution_device
    prompt_embeds = prompt_embeds.to(device)
    negative_prompt_embeds = negative_prompt_embeds.to(device) if negative_prompt_embeds is not None else None

    kwargs: dict[str, Any] = {}
    if image is not None:
        kwargs["image"] = fit_image(image, height, width)
    saved_boundary = pipe.config.boundary_ratio
    if boundary_ratio is not None:
        pipe.register_to_config(boundary_ratio=float(boundary_ratio))
    try:
        latents = pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                       height=height, width=width, num_frames=num_frames, num_inference_steps=steps,
                       guidance_scale=guidance_scale, guidance_scale_2=guidance_scale_2,
                       generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="latent",
                       return_dict=False, max_sequence_length=MAX_SEQUENCE_LENGTH, **kwargs)[0]
    finally:
        pipe.register_to_config(boundary_ratio=saved_boundary)

    # The same decode as the pipeline's own output_type="np" path, kept so the raw latents come back too.
    from diffusers.utils.torch_utils import get_module_execution_device

    vae = pipe.vae
    raw = denormalize_latents(latents.float(), vae)
    with torch.no_grad():
        video = vae.decode(raw.to(get_module_execution_device(vae), vae.dtype), return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    frames = np.clip(np.round(frames * 255.0), 0, 255).astype(np.uint8)
    pipe.maybe_free_model_hooks()
    return frames, raw.detach().to("cpu", torch.float32).contiguous()


# --- latents files ------------------------------------------------------------------------------------------------
# ComfyUI's Save Latent node (nodes.SaveLatent) writes {"latent_tensor": LATENT["samples"],
# "latent_format_version_0": an empty marker} as safetensors; Load Latent divides a file without the marker by 0.18215.
COMFY_LATENT_KEY = "latent_tensor"
COMFY_LATENT_VERSION_KEY = "latent_format_version_0"


def _bgfs_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """``meta`` as safetensors metadata: ``bgfs.<key>`` -> JSON (`load_latents` reads it back)."""
    return {f"bgfs.{k}": json.dumps(v) for k, v in meta.items()}


def save_comfy_latent(path: str | Path, latents: torch.Tensor, meta: dict[str, Any] | None = None) -> Path:
    """Write latents ``[1, C, t, h, w]`` as ComfyUI's Save Latent does (a ``.latent`` its Load Latent reads back
    unscaled), atomically; ``meta`` (JSON values) goes into ``bgfs.*`` metadata, which ComfyUI ignores."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".latent":
        raise BGFSError(f"ComfyUI latent file {path} must end in .latent")
    with atomic_path(path) as tmp:
        save_file({COMFY_LATENT_KEY: latents.detach().to("cpu").float().contiguous(),
                   COMFY_LATENT_VERSION_KEY: torch.tensor([])}, str(tmp), metadata=_bgfs_metadata(meta or {}))  # fmt: skip
    return path


def _comfy_latent(path: Path, samples: torch.Tensor, keys: set[str]) -> torch.Tensor:
    """The latents of a ComfyUI ``.latent`` file, scaled as ComfyUI's Load Latent reads them."""
    if COMFY_LATENT_VERSION_KEY not in keys:  # written before ComfyUI's latent format version 0
        samples = samples / 0.18215
    if samples.ndim != 5:
        raise BGFSError(f"{path} holds image latents {list(samples.shape)}, not a video's [B, C, t, h, w]: save the "
                        "LATENT of a Wan video sampler")  # fmt: skip
    if samples.shape[0] != 1:
        raise BGFSError(f"{path} holds a batch of {samples.shape[0]} videos: bgfs fix takes one (save them one by one)")
    return samples.float()


def save_latents(path: str | Path, latents: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Write raw VAE latents ``[1, C, t, h, w]`` with ``bgfs.*`` metadata (JSON values) atomically."""
    from safetensors.torch import save_file

    from . import __version__

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise BGFSError(f"latents file {path} must end in .safetensors")
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise BGFSError(f"latents must be [1, C, t, h, w], got {list(latents.shape)}")
    full = {"format": LATENTS_FORMAT, "channels": int(latents.shape[1]), "vae": vae_name(latents.shape[1]),
            **meta, "version": __version__}
    with atomic_path(path) as tmp:
        save_file({"latents": latents.detach().to("cpu").float().contiguous()}, str(tmp), metadata=_bgfs_metadata(full))
    return path


def check_latents_file(path: str | Path) -> Path:
    """``path`` as a Path, when it is a file (`load_latents` reads it)."""
    path = Path(path)
    if not path.is_file():
        raise BGFSError(f"latents file {path} {not_a_file(path)}: write one with `bgfs generate --save-latents` or "
                        "ComfyUI's Save Latent node")  # fmt: skip
    return path


def latents_channels(path: str | Path) -> int | None:
    """The channel count of a latents file's latents, read from its header alone (None when it does not say)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(check_latents_file(path)), framework="pt") as f:
            keys = set(f.keys())
            for key in (COMFY_LATENT_KEY, "latents"):
                if key in keys:
                    shape = f.get_slice(key).get_shape()
                    return int(shape[1]) if len(shape) > 1 else None
    except (SafetensorError, OSError):
        return None  # load_latents names what is wrong with it
    return None


def _read_bgfs_metadata(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The ``bgfs.*`` entries `save_latents` wrote (JSON values), checked where a fix reads them."""
    try:
        meta = {k[5:]: json.loads(v) for k, v in metadata.items() if k.startswith("bgfs.")}
    except json.JSONDecodeError:
        raise BGFSError(f"{path}: its bgfs metadata is not what bgfs writes (not JSON): is it a latents file? "
                        "Give the .safetensors `bgfs generate --save-latents` or `bgfs fix --save-latents` wrote, "
                        "or a .latent from ComfyUI's Save Latent") from None  # fmt: skip
    fps = meta.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps)):
        raise BGFSError(f"{path}: its frame rate (bgfs.fps) is {fps!r}, not a number: give the rate with --fps, "
                        "or save the latents again")  # fmt: skip
    return meta


def load_latents(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a latents file -> (latents float32 ``[1, C, t, h, w]``, metadata): one `save_latents` wrote, or a
    ``.latent`` file from ComfyUI's Save Latent node (a Wan sampler's LATENT, raw VAE latents; metadata only where
    `bgfs fix --save-latents` wrote it)."""
    from safetensors import SafetensorError, safe_open

    path = check_latents_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = _read_bgfs_metadata(path, f.metadata() or {})
            keys = set(f.keys())
            if COMFY_LATENT_KEY in keys:
                return _comfy_latent(path, f.get_tensor(COMFY_LATENT_KEY), keys), meta
            if "latents" not in keys:
                raise BGFSError(f"{path} holds no 'latents' tensor: not a bgfs latents file (nor ComfyUI's "
                                "Save Latent's)")  # fmt: skip
            latents = f.get_tensor("latents").float()
    except (SafetensorError, OSError) as e:
        raise BGFSError(f"{path} is not a readable safetensors file ({e})") from None
    if meta.get("format") != LATENTS_FORMAT:
        raise BGFSError(f"{path}: format {meta.get('format')!r}, expected {LATENTS_FORMAT!r} (bgfs generate)")
    if latents.ndim != 5 or latents.shape[1] != meta.get("channels"):
        raise BGFSError(f"{path}: latents {list(latents.shape)} do not match the metadata ({meta.get('channels')} "
                        "channels)")
    return latents, meta
