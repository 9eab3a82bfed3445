"""Wan VAE files in the original layout (ComfyUI's models/vae files, Wan-AI's .pth) loaded into diffusers'
AutoencoderKLWan: the key rules, the errors, and (with COMFYUI_DIR) the same frames and latents as ComfyUI's own
WanVAE classes holding the same file, and `bgfs fix --model-id FILE` end to end."""

from __future__ import annotations

import pytest
import torch
from comfy_host import load_comfy_module
from conftest import HAND_VIDEO, require_diffusers
from test_windowed_decode import COMFYUI_DIR, comfy

from bgfs_core.cli import main
from bgfs_core.codecs import DiffusersWanCodec, ModuleCodec
from bgfs_core.codecs.wan_checkpoint import diffusers_key, wan_vae_version
from bgfs_core.codecs.weights_file import read_state_dict
from bgfs_core.errors import BGFSError

# The Wan VAEs' depth as comfy.sd.VAE builds them for the real files (WanVAE's own defaults differ)
COMFY_WAN = {"dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True]}


@pytest.mark.parametrize("version,key,expected", [
    ("2.1", "conv1.bias", "quant_conv.bias"),
    ("2.1", "conv2.weight", "post_quant_conv.weight"),
    ("2.1", "decoder.conv1.weight", "decoder.conv_in.weight"),
    ("2.1", "decoder.middle.1.to_qkv.weight", "decoder.mid_block.attentions.0.to_qkv.weight"),
    ("2.1", "encoder.middle.2.residual.6.bias", "encoder.mid_block.resnets.1.conv2.bias"),
    ("2.1", "decoder.head.0.gamma", "decoder.norm_out.gamma"),
    ("2.1", "encoder.downsamples.5.time_conv.weight", "encoder.down_blocks.5.time_conv.weight"),
    ("2.1", "encoder.downsamples.3.shortcut.weight", "encoder.down_blocks.3.conv_shortcut.weight"),
    ("2.1", "decoder.upsamples.3.resample.1.weight", "decoder.up_blocks.0.upsamplers.0.resample.1.weight"),
    ("2.1", "decoder.upsamples.7.time_conv.bias", "decoder.up_blocks.1.upsamplers.0.time_conv.bias"),
    ("2.1", "decoder.upsamples.12.residual.3.gamma", "decoder.up_blocks.3.resnets.0.norm2.gamma"),
    ("2.2", "encoder.downsamples.1.downsamples.2.time_conv.weight", "encoder.down_blocks.1.downsampler.time_conv.weight"),
    ("2.2", "encoder.downsamples.2.downsamples.0.shortcut.bias", "encoder.down_blocks.2.resnets.0.conv_shortcut.bias"),
    ("2.2", "decoder.upsamples.0.upsamples.3.resample.1.weight", "decoder.up_blocks.0.upsampler.resample.1.weight"),
    ("2.2", "decoder.upsamples.3.upsamples.2.residual.2.weight", "decoder.up_blocks.3.resnets.2.conv1.weight"),
])  # fmt: skip
def test_original_keys_get_their_diffusers_names(version, key, expected):
    """Pairs read off the two classes' state dicts (ComfyUI's WanVAE and diffusers' AutoencoderKLWan)."""
    assert diffusers_key(key, version) == expected


def test_files_that_are_not_a_wan_vae_are_named_as_such(tmp_path):
    from safetensors.torch import save_file

    from bgfs_core.critic import CriticSpec, HeatmapCritic
    from bgfs_core.critic_io import save_critic

    critic = tmp_path / "critic.safetensors"
    save_critic(critic, HeatmapCritic(CriticSpec.for_region("hands", width=8)), CriticSpec.for_region("hands", width=8))
    with pytest.raises(BGFSError, match=r"critic.safetensors is not a Wan VAE in the original layout \(it has no "
                                        r"conv2.weight and decoder.head.0.gamma\): use ComfyUI's wan_2.1_vae"):  # fmt: skip
        DiffusersWanCodec.from_pretrained(str(critic))
    # a mistyped file name is not looked up as a Hugging Face model id
    with pytest.raises(BGFSError, match="VAE file vae/wan_2.1_vae.safetensors does not exist. Pass a Wan VAE file"):
        DiffusersWanCodec.from_pretrained("vae/wan_2.1_vae.safetensors")
    sd4 = {"conv2.weight": torch.zeros(4, 4, 1, 1, 1), "decoder.head.0.gamma": torch.ones(8, 1, 1, 1)}
    with pytest.raises(BGFSError, match="4 latent channels; the Wan VAEs have 16"):
        wan_vae_version(sd4)
    garbage = tmp_path / "wan_2.1_vae.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(BGFSError, match="could not read .*wan_2.1_vae.safetensors as a weights file"):
        DiffusersWanCodec.from_pretrained(str(garbage))
    # a whole-model checkpoint: its VAE part alone, without the prefix; nothing when it has none
    whole = {f"first_stage_model.{k}": v for k, v in sd4.items()}
    whole["model.diffusion_model.head.weight"] = torch.zeros(2)
    for suffix in (".safetensors", ".ckpt"):
        path = tmp_path / f"whole{suffix}"
        save_file(whole, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": whole}, path)
        part = read_state_dict(path, marker="decoder.head.0.gamma")
        assert sorted(part) == sorted(sd4) and torch.equal(part["conv2.weight"], sd4["conv2.weight"])
        assert read_state_dict(path, marker="decoder.22.bias") == {}


def test_a_diffusers_layout_file_is_pointed_to_its_folder(tmp_path, needs_diffusers):
    from safetensors.torch import save_file

    from bgfs_core.codecs import wan_vae_config

    vae = DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8)).vae
    save_file(vae.state_dict(), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(BGFSError, match="is a VAE in diffusers' layout: pass the folder that holds it"):
        DiffusersWanCodec.from_pretrained(str(tmp_path / "diffusion_pytorch_model.safetensors"))


# --- against ComfyUI's own classes (COMFYUI_DIR) ----------------------------------------------------------------
def comfy_wan(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny ComfyUI WanVAE with random weights everywhere, its RMS-norm gains too (they start at 1)."""
    sizes = {"wan21": {"dim": 8, "z_dim": 16}, "wan22": {"dim": 8, "dec_dim": 12, "z_dim": 48}}[kind]
    m = load_comfy_module(COMFYUI_DIR, kind, seed=seed, **sizes, **COMFY_WAN)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
    return m


@comfy
@pytest.mark.parametrize("kind,channels,ratio,suffix", [("wan21", 16, 8, ".safetensors"), ("wan22", 48, 16, ".pth")])
def test_a_comfyui_vae_file_decodes_and_encodes_as_comfyui_does(tmp_path, kind, channels, ratio, suffix):
    """The same file in ComfyUI's class (what the node runs) and in diffusers' (what `bgfs fix` runs): the same
    frames and latents, to float rounding. A key dropped from the file is named."""
    require_diffusers()
    from safetensors.torch import save_file

    m = comfy_wan(kind)
    path = tmp_path / f"{kind}{suffix}"
    if suffix == ".safetensors":
        save_file(m.state_dict(), str(path))
    else:  # Wan-AI's .pth, here behind a prefix beside another model, as a whole-model checkpoint holds it
        torch.save({**{f"vae.{k}": v for k, v in m.state_dict().items()}, "model.head.weight": torch.zeros(3)}, path)
    codec = DiffusersWanCodec.from_pretrained(str(path))
    assert codec.latent_channels == channels and codec.spatial_ratio == ratio
    theirs = ModuleCodec(m, latent_channels=channels, spatial_ratio=ratio)
    z = torch.randn(1, channels, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    frames = torch.rand(9, 3, 4 * ratio, 5 * ratio, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (codec.decode(z) - theirs.decode(z)).abs().max() < 1e-5
        assert (codec.encode(frames) - theirs.encode(frames)).abs().max() < 1e-5
    sd = m.state_dict()
    del sd["decoder.head.2.bias"]
    save_file(sd, str(tmp_path / "short.safetensors"))
    version = "2.1" if kind == "wan21" else "2.2"
    with pytest.raises(BGFSError, match=rf"not the Wan {version} VAE's architecture \(1 missing, e\.g\. "
                                        r"decoder\.conv_out\.bias\)"):  # fmt: skip
        DiffusersWanCodec.from_pretrained(str(tmp_path / "short.safetensors"))


@comfy
def test_bgfs_fix_takes_a_comfyui_vae_file(tmp_path):
    """`bgfs fix --model-id models/vae/<file>`: ComfyUI's bf16 file, read to fp32. A random VAE decodes no hand, so
    the run ends in the clean pass-through."""
    import json

    require_diffusers()
    from safetensors.torch import save_file

    from bgfs_core.video_io import read_video

    m = comfy_wan("wan21")
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}, str(path))
    out = tmp_path / "fixed.mp4"
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--model-id", str(path), "--max-frames", "5",
                 "--steps", "1", "--quiet"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "fixed_report" / "report.json").read_text())
    assert report["codec"] == "Wan 2.1 VAE (diffusers)"
    assert "not detected in any of the 5 frames" in report["fixer"]["summary"]
    assert len(read_video(out)[0]) == 5


@comfy
@pytest.mark.parametrize("kind", ["wan21", "wan22"])
def test_a_vae_file_normalises_latents_with_the_statistics_comfyui_uses(tmp_path, kind):
    """A single file carries no latents_mean/std, so the loaded VAE takes Wan-AI's published ones for its version:
    the same numbers as ComfyUI's latent format for that model, so `normalize_latents` gives what the transformer
    sees in ComfyUI too (the Wan 2.2 TI2V-5B statistics were once placeholders here)."""
    import importlib.util
    from pathlib import Path

    require_diffusers()
    from safetensors.torch import save_file

    from bgfs_core.codecs import normalize_latents

    spec = importlib.util.spec_from_file_location("comfy_latent_formats", Path(COMFYUI_DIR, "comfy", "latent_formats.py"))
    formats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(formats)
    theirs = {"wan21": formats.Wan21, "wan22": formats.Wan22}[kind]()
    path = tmp_path / f"{kind}.safetensors"
    save_file(comfy_wan(kind).state_dict(), str(path))
    vae = DiffusersWanCodec.from_pretrained(str(path)).vae
    channels = theirs.latents_mean.shape[1]
    assert vae.config.z_dim == channels
    z = torch.randn(1, channels, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    assert theirs.scale_factor == 1.0  # so process_in is exactly (z - mean) / std
    assert torch.allclose(normalize_latents(z, vae), theirs.process_in(z), atol=1e-6)
