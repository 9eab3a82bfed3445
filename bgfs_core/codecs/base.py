"""The `LatentCodec` interface: what the fixer needs to know about a video VAE, and nothing more.

Frames are torch float ``[T, 3, H, W]`` in [0, 1]. Latents are raw VAE-space tensors ``[1, C, t, h, w]`` (the
layout of ComfyUI's ``LATENT["samples"]`` and of diffusers; no latents_mean/std normalisation). For Wan VAEs the
time axis is causal: latent frame 0 holds pixel frame 0 and latent frame j >= 1 holds pixel frames
``1 + 4(j-1) .. 4j``, so ``T = 1 + 4(t - 1)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ..errors import BGFSError

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch

# Named in channel errors so a user knows which VAE their latents belong to.
KNOWN_LATENT_SPACES = "Wan 2.1 VAE = 16 (14B T2V/I2V), Wan 2.2 VAE = 48 (TI2V-5B)"


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames ``[T, 3, H, W]`` in [0, 1] (a decode, or crops of one) as uint8 ``[T, H, W, 3]`` on the CPU."""
    return (frames.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def straight_through_clamp(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Clamp the values but pass the gradient through unchanged, so saturated pixels still steer the latents."""
    return x + (x.clamp(lo, hi) - x).detach()


class LatentCodec(ABC):
    """A video VAE seen by the fixer: encode, differentiable decode, and the latent grid's geometry."""

    # Latent frames of causal context decoded before a window's frames (-1: all of them, from frame 0), and the
    # spatial margin in latent cells around a window. Subclasses set values measured for their decoder.
    default_context: int = 0
    default_margin: int = 0

    @property
    @abstractmethod
    def name(self) -> str:
        """Short human-readable name, used in messages and reports."""

    @property
    @abstractmethod
    def latent_channels(self) -> int:
        """Channels C of the latents."""

    @property
    @abstractmethod
    def temporal_ratio(self) -> int:
        """Pixel frames per latent frame after the first (4 for Wan, 1 for the pixel codec)."""

    @property
    @abstractmethod
    def spatial_ratio(self) -> int:
        """Pixels per latent cell along each axis (8 for Wan 2.1, 16 for Wan 2.2)."""

    @abstractmethod
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[T, 3, H, W]`` in [0, 1] -> latents ``[1, C, t, h, w]`` (the posterior mean)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[1, C, t, h, w]`` -> frames ``[T, 3, H, W]`` in [0, 1]; differentiable (straight-through clamp)."""

    def decode_for_grad(self, latents: torch.Tensor) -> torch.Tensor:
        """The decode the optimiser back-propagates through; the real one unless a lighter proxy is set."""
        return self.decode(latents)

    def grad_stream(self, checkpoint_blocks: bool = False) -> Callable[[Any, Any], tuple[Any, Any]] | None:
        """The gradient decoder as a stateful stream, ``f(latents, state) -> (frames, state)``, or None.

        ``state`` None starts a video; passing the returned state on continues it exactly (the causal caches of
        the Wan decoders), which `decode_window` uses to chunk time without error. Codecs without one get
        chunks that re-decode a few context frames instead. ``checkpoint_blocks``: the stream checkpoints each
        residual / resample block of the decoder when run with gradients (`bgfs_core.codecs.blocks`).
        """
        return None

    # --- geometry -------------------------------------------------------------------------------------------------
    def latent_frames(self, num_frames: int) -> int:
        """Latent frames t for ``num_frames`` pixel frames (which must follow the codec's frame rule)."""
        self.check_frame_count(num_frames)
        return 1 + (num_frames - 1) // self.temporal_ratio

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from ``latent_frames`` latent frames counted from a first (causal) frame."""
        return 0 if latent_frames <= 0 else 1 + self.temporal_ratio * (latent_frames - 1)

    def pixel_hw(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """Pixel (H, W) of a latent grid (h, w)."""
        return int(latent_hw[0]) * self.spatial_ratio, int(latent_hw[1]) * self.spatial_ratio

    def check_frame_count(self, num_frames: int) -> None:
        """Raise `BGFSError` unless ``num_frames`` is 1 + r*k (r = temporal ratio), naming the nearest valid counts."""
        r = self.temporal_ratio
        if num_frames < 1:
            raise BGFSError(f"{self.name}: a video needs at least 1 frame, got {num_frames}.")
        if (num_frames - 1) % r == 0:
            return
        lower = 1 + (num_frames - 1) // r * r
        raise BGFSError(
            f"{self.name}: {num_frames} frames break the {r}k+1 rule of this VAE; use {lower} or {lower + r} frames "
            f"(trim the video or pad it by repeating the last frame)."
        )

    def check_hw(self, height: int, width: int) -> None:
        """Raise `BGFSError` unless the frame size is a multiple of the spatial ratio, naming the nearest valid size."""
        s = self.spatial_ratio
        if height % s == 0 and width % s == 0 and height > 0 and width > 0:
            return
        lo = (max(s, height // s * s), max(s, width // s * s))
        raise BGFSError(
            f"{self.name}: frame size {width}x{height} is not a multiple of {s}; crop to {lo[1]}x{lo[0]} "
            f"or resize to {lo[1] + s * (width % s > 0)}x{lo[0] + s * (height % s > 0)}."
        )

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise `BGFSError` unless ``frames`` is ``[T, 3, H, W]`` with a valid frame count and size."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise BGFSError(f"{self.name}: frames must be [T, 3, H, W] in [0, 1], got shape {tuple(frames.shape)}.")
        self.check_frame_count(int(frames.shape[0]))
        self.check_hw(int(frames.shape[2]), int(frames.shape[3]))

    def check_latents(self, latents: torch.Tensor) -> None:
        """Raise `BGFSError` unless ``latents`` is ``[1, C, t, h, w]`` with this codec's channel count."""
        if latents.ndim != 5:
            raise BGFSError(
                f"{self.name}: latents must be [1, C, t, h, w] (ComfyUI LATENT['samples'] of a video model), "
                f"got {latents.ndim} dims {tuple(latents.shape)}; image-model latents [B, C, h, w] do not fit."
            )
        if latents.shape[0] != 1:
            raise BGFSError(f"{self.name}: latents hold a batch of {latents.shape[0]} videos; pass one at a time.")
        c = int(latents.shape[1])
        if c != self.latent_channels:
            raise BGFSError(
                f"{self.name}: latents have {c} channels, but this VAE expects {self.latent_channels}: "
                f"{KNOWN_LATENT_SPACES}. Load the VAE that produced these latents."
            )
        if latents.numel() == 0:
            raise BGFSError(f"{self.name}: latents {list(latents.shape)} hold no frames or no pixels: pass the "
                            "sampler's output for a whole video")  # fmt: skip
        # they would decode to noise and be "fixed" as if fine. NaN and inf carry into the sum, which, unlike
        # isfinite(), makes no second tensor the size of a long video's latents (a pixel codec's are its frames)
        import torch

        if not bool(latents.sum(dtype=torch.float32).isfinite()):
            raise BGFSError(f"{self.name}: latents hold NaN or infinite values (a sampler that diverged, often fp16 "
                            "overflow): sample them again, e.g. in bf16 or fp32")  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, C={self.latent_channels}, "
            f"temporal={self.temporal_ratio}, spatial={self.spatial_ratio})"
        )
