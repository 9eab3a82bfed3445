"""`GradientProxyCodec`: optimise through a light decoder of the same latent space, judge with the real one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import BGFSError
from .base import LatentCodec

if TYPE_CHECKING:
    import torch


class GradientProxyCodec(LatentCodec):
    """``encode`` and ``decode`` use ``real``; ``decode_for_grad`` (the optimiser's decode) uses ``grad``.

    Both must decode the same latent space (channels and ratios are checked; the value scale cannot be, so pair a
    VAE with a tiny decoder trained for it, e.g. the Wan 2.1 VAE with ``taew2_1`` / ``lighttaew2_1``; the fixer
    measures how alike they decode). ``same_weights``: ``grad`` is ``real`` in another dtype, which decodes the same
    frames up to rounding, so that measurement is skipped.
    """

    def __init__(self, real: LatentCodec, grad: LatentCodec, same_weights: bool = False) -> None:
        mismatches = [
            f"{what} {a} vs {b}"
            for what, a, b in (
                ("latent channels", real.latent_channels, grad.latent_channels),
                ("temporal ratio", real.temporal_ratio, grad.temporal_ratio),
                ("spatial ratio", real.spatial_ratio, grad.spatial_ratio),
            )
            if a != b
        ]
        if mismatches:
            raise BGFSError(
                f"the gradient decoder {grad.name} does not decode the latent space of {real.name} "
                f"({', '.join(mismatches)}); pick the tiny decoder made for this VAE (lighttaew2_1 or taew2_1 for Wan 2.1, "
                "lighttaew2_2 for Wan 2.2)."
            )
        self.real = real
        self.grad = grad
        self.same_weights = same_weights
        # The windowed decode runs through grad, so its reach sets the window.
        self.default_context = grad.default_context
        self.default_margin = grad.default_margin

    @property
    def name(self) -> str:
        return f"{self.real.name} (gradients through {self.grad.name})"

    @property
    def latent_channels(self) -> int:
        return self.real.latent_channels

    @property
    def temporal_ratio(self) -> int:
        return self.real.temporal_ratio

    @property
    def spatial_ratio(self) -> int:
        return self.real.spatial_ratio

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode with the real VAE."""
        return self.real.encode(frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The real decode: what the result is judged on."""
        return self.real.decode(latents)

    def decode_for_grad(self, latents: torch.Tensor) -> torch.Tensor:
        """The light decode the optimiser back-propagates through."""
        return self.grad.decode(latents)

    def grad_stream(self, checkpoint_blocks: bool = False) -> Any:
        return self.grad.grad_stream(checkpoint_blocks)
