"""`PixelCodec`: the identity "VAE", so the whole fixer runs and can be measured on real footage without weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import LatentCodec, straight_through_clamp

if TYPE_CHECKING:
    import torch


class PixelCodec(LatentCodec):
    """Latents are the frames mapped to [-1, 1] in the video layout ``[1, 3, T, H, W]``; ratios are 1."""

    default_context = 0  # every latent frame decodes on its own
    default_margin = 0  # and every cell too

    @property
    def name(self) -> str:
        return "pixel codec"

    @property
    def latent_channels(self) -> int:
        return 3

    @property
    def temporal_ratio(self) -> int:
        return 1

    @property
    def spatial_ratio(self) -> int:
        return 1

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[T, 3, H, W]`` in [0, 1] -> ``[1, 3, T, H, W]`` in [-1, 1]."""
        self.check_frames(frames)
        return (frames.float() * 2.0 - 1.0).permute(1, 0, 2, 3).unsqueeze(0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[1, 3, T, H, W]`` -> frames ``[T, 3, H, W]`` in [0, 1] (straight-through clamp)."""
        self.check_latents(latents)
        return straight_through_clamp((latents[0].permute(1, 0, 2, 3) + 1.0) * 0.5)
