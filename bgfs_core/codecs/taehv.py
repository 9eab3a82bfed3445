"""The Tiny AutoEncoder for Wan's decoder (``taew2_1``, ``lighttaew2_1``, ``lighttaew2_2``), for gradients only.

`bgfs fix --gradient-vae FILE` optimises through it while the real Wan VAE encodes, decodes the result and is
judged: what the Latent Anatomy Fixer node does with ComfyUI's own TAEHV class on its *gradient_vae* input. The
layers sit where the published weight files put them (keys ``decoder.N...``), so a file loads as it is. Every
frame is decoded at once, each memory block fed the previous frame's input at that block: the mode whose gradients
reach every frame (decoding frame by frame, TAEHV detaches that memory).

A decoder stage: three memory blocks, 2x upsampling in space, 1x/2x/2x growth in time (each latent frame becomes
1, 2 or 4 frames over the stages), then a channel-narrowing convolution. 4t frames come out of t latent frames and
the first 3 are dropped, so t latent frames decode to 4t - 3 frames, the Wan VAE's rule.
"""

from __future__ import annotations

from pathlib import Path

# torch at the top: this module is imported only to load a TAEHV (bgfs_core.codecs does not import it)
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BGFSError, not_a_file

WIDTHS = (256, 128, 64, 64)  # channels of the decoder's stages
TIME_GROWTH = (1, 2, 2)
TRIMMED_FRAMES = 3


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class _Clamp(nn.Module):
    """A soft clamp of the latents to about +-3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _MemBlock(nn.Module):
    """A residual block that sees its input and the previous frame's."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + x)


class _TGrow(nn.Module):
    """Each frame becomes ``stride`` frames: a 1x1 convolution to ``stride`` times the channels, split in time."""

    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, channels, h, w = x.shape
        return self.conv(x).reshape(frames * self.stride, channels, h, w)


class TAEHVDecoder(nn.Module):
    """A TAEHV decoder: 16 latent channels (Wan 2.1, 8x) or 48 (Wan 2.2, 16x: 2x2 pixel patches).
    ``decode(z [B, C, t, h, w]) -> [B, 3, 4t - 3, H, W]`` in about [0, 1]. Random weights until loaded."""

    def __init__(self, latent_channels: int = 16) -> None:
        super().__init__()
        if latent_channels not in (16, 48):
            raise BGFSError(f"a TAEHV for Wan has 16 (Wan 2.1) or 48 (Wan 2.2) latent channels, not {latent_channels}")
        self.latent_channels = latent_channels
        self.patch_size = 2 if latent_channels == 48 else 1
        layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, WIDTHS[0]), nn.ReLU()]
        for stage, growth in enumerate(TIME_GROWTH):
            n = WIDTHS[stage]
            layers += [_MemBlock(n), _MemBlock(n), _MemBlock(n), nn.Upsample(scale_factor=2), _TGrow(n, growth),
                       _conv(n, WIDTHS[stage + 1], bias=False)]  # fmt: skip
        layers += [nn.ReLU(), _conv(WIDTHS[-1], 3 * self.patch_size**2)]
        self.decoder = nn.Sequential(*layers)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        x = z.movedim(2, 1).flatten(0, 1)  # [B * t, C, h, w]: every frame at once
        for layer in self.decoder:
            if isinstance(layer, _MemBlock):
                frames = x.unflatten(0, (b, -1))
                past = F.pad(frames, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1].flatten(0, 1)  # the previous frame's; 0 first
                x = layer(x, past)
            else:
                x = layer(x)
        x = x.unflatten(0, (b, -1))
        if self.patch_size > 1:
            x = F.pixel_shuffle(x, self.patch_size)
        return x[:, TRIMMED_FRAMES:].movedim(2, 1)


def load_taehv_decoder(path: str | Path) -> TAEHVDecoder:
    """The decoder of a TAEHV weights file for Wan (``taew2_1``, ``lighttaew2_1``: 16 channels; ``lighttaew2_2``:
    48), float32; its encoder, if the file has one, is not loaded."""
    import os

    from .weights_file import describe_mismatch, read_state_dict

    path = Path(os.path.expanduser(str(path)))
    use = "use lighttaew2_1.safetensors or taew2_1 (the Wan 2.1 VAE), lighttaew2_2.safetensors (Wan 2.2)"
    if not path.is_file():
        raise BGFSError(f"gradient VAE file {path} {not_a_file(path)}: {use}")
    sd = read_state_dict(path, marker="decoder.22.bias")
    if "decoder.22.bias" not in sd or "decoder.1.weight" not in sd:
        raise BGFSError(f"{path} is not a Tiny AutoEncoder for Wan (no decoder.1.weight and decoder.22.bias): {use}")
    channels = int(sd["decoder.1.weight"].shape[1])
    if channels not in (16, 48):
        raise BGFSError(f"{path} is a tiny autoencoder for {channels}-channel latents (not Wan's): {use}")
    if path.name.lower().startswith("taehv"):
        # HunyuanVideo's taehv has taew2_1's layout and 16 channels, but decodes another latent space; only its
        # name tells them apart (ComfyUI's VAE list goes by the name too; madebyollin's taew2_1 is fp16 as well)
        raise BGFSError(f"{path} is HunyuanVideo's tiny autoencoder (taehv), made for another latent space than "
                        f"Wan's: {use}")
    model = TAEHVDecoder(channels).eval().requires_grad_(False)
    decoder = {k: v.float() for k, v in sd.items() if k.startswith("decoder.")}
    try:
        with torch.no_grad():
            model.load_state_dict(decoder, strict=True)
    except RuntimeError as e:
        raise BGFSError(f"{path} does not have the TAEHV decoder's layout ({describe_mismatch(model, decoder)})") from e
    return model
