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

from ..errors import BGFSError, first_line
from .diffusers_wan import wan_vae_config

if TYPE_CHECKING:
    import torch

# Key prefixes some single files put before the VAE's own keys (a whole-model checkpoint's VAE part).
_PREFIXES = ("first_stage_model.", "vae.")
_STAGES = 4  # dim_mult [1, 2, 4, 4]
_BLOCKS = 2  # num_res_blocks: a decoder stage has one more residual block than that
_RESIDUAL = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.", "residual.6.": "conv2.",
             "shortcut.": "conv_shortcut."}  # fmt: skip
_TOP = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
_PART = {"conv1.": "conv_in.", "head.0.": "norm_out.", "head.2.": "conv_out.", "middle.0.": "mid_block.resnets.0.",
         "middle.1.": "mid_block.attentions.0.", "middle.2.": "mid_block.resnets.1."}  # fmt: skip
_SAMPLER = ("resample.", "time_conv.")  # the up/down-sampling layer of a stage, not a residual block


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.ckpt`` file (weights only: no code is run), without
    a shared key prefix such as ``first_stage_model.``."""
    import torch

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    except Exception as e:  # a truncated or foreign file: safetensors, pickle and zip raise their own kinds
        raise BGFSError(f"could not read {path} as a weights file: {first_line(e)}") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BGFSError(f"{path} holds no state dict of tensors")
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def wan_vae_version(sd: dict[str, torch.Tensor], what: str = "this file") -> str:
    """``"2.1"`` or ``"2.2"`` for an original-layout Wan VAE state dict; a BGFSError for anything else."""
    if "conv2.weight" not in sd or "decoder.head.0.gamma" not in sd:
        hint = " (it is in diffusers' layout: pass its folder)" if "post_quant_conv.weight" in sd else ""
        raise BGFSError(f"{what} is not a Wan VAE in the original layout{hint}: it has no conv2.weight and "
                        "decoder.head.0.gamma; use ComfyUI's wan_2.1_vae.safetensors or wan2.2_vae.safetensors, "
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
    vae = diffusers.AutoencoderKLWan(**wan_vae_config(version, **widths))
    converted = {diffusers_key(k, version): v.float() for k, v in sd.items()}
    try:
        with torch.no_grad():
            vae.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise BGFSError(f"{what} is not the Wan {version} VAE's architecture ({describe_mismatch(vae, converted)}); "
                        "use ComfyUI's wan_2.1_vae.safetensors or wan2.2_vae.safetensors, or a diffusers folder") from e
    return vae.eval()


def describe_mismatch(model: Any, sd: dict[str, torch.Tensor]) -> str:
    """What a strict ``model.load_state_dict(sd)`` disagreed on, shortly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    parts = [f"{len(v)} {name}, e.g. {v[0]}" for name, v in (("missing", missing), ("unexpected", extra),
                                                               ("of another shape", shapes)) if v]  # fmt: skip
    return "; ".join(parts) or "a tensor did not load"
