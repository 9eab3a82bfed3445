"""Wan VAE files in the original layout -> diffusers ``AutoencoderKLWan``, with no download.

The original layout is the one Wan-AI's ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth`` use and ComfyUI loads (its
``models/vae/wan_2.1_vae.safetensors`` and ``wan2.2_vae.safetensors``): ``decoder.upsamples.3.resample.1.weight``
where diffusers has ``decoder.up_blocks.0.upsamplers.0.resample.1.weight``. So `bgfs fix` can use the VAE file a
ComfyUI user already has instead of a second copy in diffusers' folder layout.

The architecture is read off the tensors' shapes (widths, 16 or 48 latent channels); the depth is the Wan VAEs'
own (4 stages of 2 residual blocks), as ComfyUI assumes too. Loading is strict: a key left over or missing means
the file is not one of these two VAEs, and the error says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BGFSError
from .diffusers_wan import wan_vae_config
from .weights_file import describe_mismatch, read_state_dict

if TYPE_CHECKING:
    import torch

_BLOCKS = 2  # num_res_blocks: a decoder stage has one more residual block than that
_RESIDUAL = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.", "residual.6.": "conv2.",
             "shortcut.": "conv_shortcut."}  # fmt: skip
_TOP = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
_PART = {"conv1.": "conv_in.", "head.0.": "norm_out.", "head.2.": "conv_out.", "middle.0.": "mid_block.resnets.0.",
         "middle.1.": "mid_block.attentions.0.", "middle.2.": "mid_block.resnets.1."}  # fmt: skip
_SAMPLER = ("resample.", "time_conv.")  # the up/down-sampling layer of a stage, not a residual block


def load_wan_vae_file(path: str | Path) -> Any:
    """A float32 diffusers ``AutoencoderKLWan`` holding the Wan VAE of a file in the original layout (also the VAE
    part of a whole-model checkpoint, behind ``first_stage_model.`` or ``vae.``)."""
    sd = read_state_dict(path, marker="decoder.head.0.gamma")
    if not sd and read_state_dict(path, marker="post_quant_conv.weight"):
        raise BGFSError(f"{path} is a VAE in diffusers' layout: pass the folder that holds it with its config.json")
    return wan_vae_from_state_dict(sd, what=str(path))


def wan_vae_version(sd: dict[str, torch.Tensor], what: str = "this file") -> str:
    """``"2.1"`` or ``"2.2"`` for an original-layout Wan VAE state dict; a BGFSError for anything else."""
    if "conv2.weight" not in sd or "decoder.head.0.gamma" not in sd:
        raise BGFSError(f"{what} is not a Wan VAE in the original layout (it has no conv2.weight and "
                        "decoder.head.0.gamma): use ComfyUI's wan_2.1_vae.safetensors or wan2.2_vae.safetensors, "
                        "Wan-AI's Wan2.1_VAE.pth or Wan2.2_VAE.pth, or a diffusers folder")  # fmt: skip
    channels = sd["conv2.weight"].shape[0]
    if channels not in (16, 48):
        raise BGFSError(f"{what} is a VAE with {channels} latent channels; the Wan VAEs have 16 (2.1) or 48 (2.2)")
    return "2.1" if channels == 16 else "2.2"


def diffusers_key(key: str, version: str) -> str:
    """One original-layout key -> its ``AutoencoderKLWan`` name (unchanged when no rule applies)."""
    for old, new in _TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        return key
    for old, new in _PART.items():
        if rest.startswith(old):
            return f"{part}.{new}{_residual(rest[len(old):])}"
    if version == "2.2":  # stages nested: {encoder.downsamples,decoder.upsamples}.STAGE.{down,up}samples.LAYER
        m = re.match(r"(down|up)samples\.(\d+)\.(?:down|up)samples\.(\d+)\.(.*)", rest)
        if m:
            kind, stage, layer, tail = m.groups()
            where = f"{kind}sampler." if tail.startswith(_SAMPLER) else f"resnets.{layer}."
            return f"{part}.{kind}_blocks.{stage}.{where}{_residual(tail)}"
        return key
    m = re.match(r"(down|up)samples\.(\d+)\.(.*)", rest)  # 2.1: one flat list per side
    if not m:
        return key
    kind, index, tail = m.groups()
    if kind == "down":  # diffusers keeps the encoder's list flat too
        return f"{part}.down_blocks.{index}.{_residual(tail)}"
    stage, layer = divmod(int(index), _BLOCKS + 2)  # a decoder stage: 3 residual blocks, then its upsampler
    where = "upsamplers.0." if layer == _BLOCKS + 1 else f"resnets.{layer}."
    return f"{part}.up_blocks.{stage}.{where}{_residual(tail)}"


def _residual(tail: str) -> str:
    for old, new in _RESIDUAL.items():
        if tail.startswith(old):
            return new + tail[len(old):]
    return tail


def wan_vae_from_state_dict(sd: dict[str, torch.Tensor], what: str = "this file") -> Any:
    """A float32 diffusers ``AutoencoderKLWan`` holding an original-layout Wan VAE state dict (strictly)."""
    import torch

    from ..errors import import_diffusers

    version = wan_vae_version(sd, what)
    widths = {"base_dim": int(sd["encoder.conv1.weight"].shape[0])} if "encoder.conv1.weight" in sd else {}
    if version == "2.2":
        widths["decoder_base_dim"] = int(sd["decoder.head.0.gamma"].shape[0])
    diffusers = import_diffusers("a Wan VAE file")
    with torch.device("meta"):  # no random init to overwrite (seconds, and memory, for the 2.2 VAE's 705M weights)
        vae = diffusers.AutoencoderKLWan(**wan_vae_config(version, **widths))
    converted = {diffusers_key(k, version): v.to(torch.float32) for k, v in sd.items()}
    try:
        vae.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as e:
        raise BGFSError(f"{what} is not the Wan {version} VAE's architecture ({describe_mismatch(vae, converted)}); "
                        "use ComfyUI's wan_2.1_vae.safetensors or wan2.2_vae.safetensors, or a diffusers folder") from e
    return vae.eval()
