"""`DiffusersWanCodec`: the Wan 2.1 (16 channels, 8x) and Wan 2.2 (48 channels, 16x) VAEs via diffusers.

Latents in and out are raw VAE space. ``AutoencoderKLWan.config.latents_mean/std`` are the statistics the Wan
pipelines use to normalise latents for the transformer (``(z - mean) / std`` before denoising, the inverse before
decoding); this codec never applies them, matching ComfyUI's ``LATENT["samples"]`` and ``WanPipeline(output_type=
"latent")`` after de-normalisation. Convert with `normalize_latents` / `denormalize_latents` when needed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BGFSError, first_line, import_diffusers
from .base import LatentCodec, straight_through_clamp

if TYPE_CHECKING:
    import torch

# Full-size configs of the two Wan VAEs (diffusers `AutoencoderKLWan` keys). latents_mean/std are the per-channel
# statistics Wan-AI publishes with each VAE (the class defaults are 2.1's; 2.2's are those of
# Wan-AI/Wan2.2-TI2V-5B-Diffusers' vae/config.json), so a VAE loaded from a single file normalises as the pipelines do.
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.157, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.123, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.052, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.499, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.06, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]
WAN21_VAE_CONFIG: dict[str, Any] = {"base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                    "temperal_downsample": [False, True, True]}
WAN22_VAE_CONFIG: dict[str, Any] = {"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4],
                                    "num_res_blocks": 2, "temperal_downsample": [False, True, True],
                                    "is_residual": True, "patch_size": 2, "in_channels": 12, "out_channels": 12,
                                    "scale_factor_spatial": 16, "latents_mean": WAN22_LATENTS_MEAN,
                                    "latents_std": WAN22_LATENTS_STD}

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
WEIGHTS_HINT = (
    "Pass a Wan VAE file (ComfyUI's models/vae/wan_2.1_vae.safetensors or wan2.2_vae.safetensors), or put the "
    "diffusers VAE in a local folder (<folder>/vae/config.json and <folder>/vae/diffusion_pytorch_model."
    "safetensors), e.g. `hf download Wan-AI/Wan2.2-I2V-A14B-Diffusers --include 'vae/*' --local-dir "
    "models/Wan2.2-I2V-A14B-Diffusers`, and pass that folder as the model id."
)


def wan_vae_config(version: str = "2.1", **overrides: Any) -> dict[str, Any]:
    """A config dict for `AutoencoderKLWan`: the full Wan ``"2.1"`` or ``"2.2"`` VAE, with keys overridden."""
    if version not in ("2.1", "2.2"):
        raise BGFSError(f"unknown Wan VAE version {version!r}; use '2.1' (16 channels) or '2.2' (48 channels).")
    cfg = dict(WAN21_VAE_CONFIG if version == "2.1" else WAN22_VAE_CONFIG)
    cfg.update(overrides)
    return cfg


def normalize_latents(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """Raw VAE latents -> the normalised space the Wan transformer sees, ``(z - mean) / std`` per channel."""
    import torch

    mean = torch.tensor(vae.config.latents_mean, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def denormalize_latents(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """Inverse of `normalize_latents`: the pipeline's latents -> raw VAE latents for this codec."""
    import torch

    mean = torch.tensor(vae.config.latents_mean, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1, 1)
    return latents * std + mean


class DiffusersWanCodec(LatentCodec):
    """A diffusers `AutoencoderKLWan` (Wan 2.1 or 2.2 VAE) behind the `LatentCodec` interface."""

    # Spatial margin measured on the full-size Wan 2.1 decoder with random weights (bench/bench_fixer_step.py
    # --configs rf); time is streamed exactly from frame 0 (the warm-up frames run without gradients).
    default_context = -1
    default_margin = 6

    def __init__(self, vae: Any) -> None:
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        self._patch = int(cfg.patch_size or 1)
        # The real ratios follow from the architecture (a tiny test config keeps them), not scale_factor_*.
        self._spatial = 2 ** (len(cfg.dim_mult) - 1) * self._patch
        self._temporal = 2 ** sum(bool(t) for t in cfg.temperal_downsample)
        self._num_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        dtype = str(next(vae.parameters()).dtype).replace("torch.", "")
        kind = f"Wan {'2.2' if cfg.z_dim == 48 else '2.1' if cfg.z_dim == 16 else '?'} VAE"
        self._name = f"{kind} (diffusers)" if dtype == "float32" else f"{kind} (diffusers, {dtype})"

    # --- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any], seed: int | None = 0, dtype: Any = None) -> DiffusersWanCodec:
        """Build with random weights from a config dict (tests, benchmarks); see `wan_vae_config`."""
        import torch

        diffusers = import_diffusers("a Wan VAE")
        if seed is not None:
            torch.manual_seed(seed)
        vae = diffusers.AutoencoderKLWan(**config)
        return cls(vae.to(dtype) if dtype is not None else vae)

    def in_dtype(self, dtype: Any) -> DiffusersWanCodec:
        """A copy of this VAE in ``dtype`` (e.g. bf16 as the decoder the gradients go through: about half the
        step's time and memory; pair it with this fp32 one in a `GradientProxyCodec`, which judges the result)."""
        import copy

        import torch

        # torch's own .to(): diffusers' override warns about modules to keep in fp32 even when the Wan VAE has none
        return DiffusersWanCodec(torch.nn.Module.to(copy.deepcopy(self.vae), dtype))

    @classmethod
    def from_pretrained(cls, model_id: str, subfolder: str | None = "vae", dtype: Any = None,
                        device: Any = None) -> DiffusersWanCodec:
        """Load from a VAE file (`from_single_file`), a local diffusers folder (offline) or a Hugging Face model id
        (``<id>/vae``)."""
        import torch

        path = Path(os.path.expanduser(model_id))
        if path.is_file():
            return cls.from_single_file(path, dtype=dtype, device=device)
        if path.exists():
            # Accept the model folder (with vae/) or the vae folder itself.
            if subfolder and not (path / subfolder / "config.json").is_file() and (path / "config.json").is_file():
                subfolder = None
            where = path / subfolder if subfolder else path
            if not (where / "config.json").is_file():
                raise BGFSError(f"no VAE config at {where / 'config.json'}. {WEIGHTS_HINT}")
        elif path.suffix.lower() in WEIGHT_SUFFIXES:  # a file name, mistyped: not a Hugging Face model id
            raise BGFSError(f"VAE file {model_id} does not exist. {WEIGHTS_HINT}")
        elif model_id.startswith((".", "/", "~")) or model_id.count("/") != 1:
            raise BGFSError(f"VAE folder {model_id} does not exist. {WEIGHTS_HINT}")
        diffusers = import_diffusers("a Wan VAE (--model-id)")
        try:
            vae = diffusers.AutoencoderKLWan.from_pretrained(str(path) if path.exists() else model_id, subfolder=subfolder,
                                                   torch_dtype=dtype or torch.float32)
        except (OSError, ValueError, RuntimeError) as e:
            raise BGFSError(f"could not load the Wan VAE from {model_id!r} (subfolder {subfolder!r}): "
                            f"{first_line(e).rstrip('.')}. {WEIGHTS_HINT}") from e
        return cls(vae.to(device) if device is not None else vae)

    @classmethod
    def from_single_file(cls, path: str | Path, dtype: Any = None, device: Any = None) -> DiffusersWanCodec:
        """Load a Wan 2.1 or 2.2 VAE file in the original layout: the one ComfyUI keeps in ``models/vae``
        (``wan_2.1_vae.safetensors``, ``wan2.2_vae.safetensors``) or Wan-AI's ``.pth`` (see `wan_checkpoint`). Such a
        file has no ``latents_mean``/``latents_std``: the config takes `wan_vae_config`'s, Wan-AI's published
        statistics for that version, which this codec never uses but `normalize_latents` does."""
        import torch

        from .wan_checkpoint import load_wan_vae_file

        path = Path(os.path.expanduser(str(path)))
        if not path.is_file():
            raise BGFSError(f"VAE file {path} does not exist. {WEIGHTS_HINT}")
        vae = load_wan_vae_file(path)
        # torch's own .to(), as in_dtype: diffusers' override warns about modules to keep in fp32
        return cls(torch.nn.Module.to(vae, device=device, dtype=dtype))

    # --- LatentCodec ----------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def temporal_ratio(self) -> int:
        return self._temporal

    @property
    def spatial_ratio(self) -> int:
        return self._spatial

    def _param(self) -> torch.Tensor:
        return next(self.vae.parameters())

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[T, 3, H, W]`` in [0, 1] -> raw latents ``[1, C, t, h, w]`` (posterior mean), float32."""
        self.check_frames(frames)
        p = self._param()
        x = (frames.to(p.device, p.dtype) * 2.0 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)
        return self.vae.encode(x).latent_dist.mode().float()

    def decode_video(self, latents: torch.Tensor, state: list | None = None, checkpoint_blocks: bool = False
                     ) -> tuple[torch.Tensor, list]:
        """Raw latents -> (unclamped video ``[1, 3, T, H, W]`` in about [-1, 1], causal state), with gradients.

        The same frame-by-frame causal loop as ``AutoencoderKLWan._decode``, but with the feature cache passed in
        and out (``state`` None starts a video; a returned state continues it exactly) instead of kept on the
        module, so calls are re-entrant as activation checkpointing needs, and without its hard clamp, whose
        gradient is zero on saturated pixels. ``checkpoint_blocks``: see `bgfs_core.codecs.blocks`.
        """
        import torch
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        from .blocks import checkpoint_cached_blocks

        self.check_latents(latents)
        p = self._param()
        x = self.vae.post_quant_conv(latents.to(p.device, p.dtype))
        first = state is None
        feat_map: list = [None] * self._num_convs if first else list(state)
        with checkpoint_cached_blocks(self.vae.decoder, enabled=checkpoint_blocks):
            outs = [self.vae.decoder(x[:, :, i:i + 1], feat_cache=feat_map, feat_idx=[0],
                                     first_chunk=first and i == 0) for i in range(x.shape[2])]  # fmt: skip
        out = torch.cat(outs, 2)
        return (unpatchify(out, patch_size=self._patch) if self._patch > 1 else out), feat_map

    def decode_stream(self, latents: torch.Tensor, state: list | None = None, checkpoint_blocks: bool = False
                      ) -> tuple[torch.Tensor, list]:
        """`decode` that continues from a causal ``state`` (None: a video's first frames) -> (frames, state)."""
        video, state = self.decode_video(latents, state, checkpoint_blocks)
        return straight_through_clamp((video[0].float().permute(1, 0, 2, 3) + 1.0) * 0.5), state

    def grad_stream(self, checkpoint_blocks: bool = False) -> Any:
        return functools.partial(self.decode_stream, checkpoint_blocks=checkpoint_blocks)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents ``[1, C, t, h, w]`` -> frames ``[T, 3, H, W]`` in [0, 1], float32, differentiable."""
        return self.decode_stream(latents, None)[0]
