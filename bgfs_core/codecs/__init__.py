"""Video VAEs behind one interface (`LatentCodec`) and the windowed decode the fixer optimises through.

Importing this package is cheap: torch and diffusers are imported inside the functions that use them.
"""

from .base import KNOWN_LATENT_SPACES, LatentCodec, frames_to_uint8, straight_through_clamp
from .diffusers_wan import DiffusersWanCodec, denormalize_latents, normalize_latents, wan_vae_config
from .module import ModuleCodec
from .pixel import PixelCodec
from .proxy import GradientProxyCodec
from .window import (
    LatentWindow,
    PixelWindow,
    decode_window,
    feather_mask,
    paste_window,
    pixel_box_of_window,
    window_from_boxes,
    window_latents,
)

__all__ = [
    "KNOWN_LATENT_SPACES",
    "DiffusersWanCodec",
    "GradientProxyCodec",
    "LatentCodec",
    "LatentWindow",
    "ModuleCodec",
    "PixelCodec",
    "PixelWindow",
    "decode_window",
    "denormalize_latents",
    "feather_mask",
    "frames_to_uint8",
    "normalize_latents",
    "paste_window",
    "pixel_box_of_window",
    "straight_through_clamp",
    "wan_vae_config",
    "window_from_boxes",
    "window_latents",
]
