"""The Tiny AutoEncoder for Wan's decoder in bgfs_core (`bgfs fix --gradient-vae`): the frame and size rules,
gradients to every latent frame, its files and their errors, `bgfs fix` through it; with COMFYUI_DIR, the same
frames and gradients as ComfyUI's own TAEHV class (what the node's gradient_vae input runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from comfy_host import load_comfy_module
from conftest import HAND_VIDEO, lively, require_diffusers
from safetensors.torch import save_file
from test_windowed_decode import COMFYUI_DIR, comfy

from bgfs_core.cli import main
from bgfs_core.codecs.taehv import TAEHVDecoder, load_taehv_decoder
from bgfs_core.errors import BGFSError
from bgfs_core.video_io import read_video


@pytest.mark.parametrize("channels,ratio", [(16, 8), (48, 16)])
def test_t_latent_frames_decode_to_4t_minus_3_and_every_one_gets_gradients(channels, ratio):
    tae = lively(TAEHVDecoder(channels))
    z = torch.randn(1, channels, 3, 4, 5, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = tae.decode(z)
    assert out.shape == (1, 3, 9, 4 * ratio, 5 * ratio)
    out[:, :, -1].square().mean().backward()  # the last frame alone: its memory reaches back to every latent frame
    assert all(z.grad[:, :, t].abs().sum() > 0 for t in range(3))


def test_a_file_loads_its_decoder_and_bad_files_are_named(tmp_path):
    tae = lively(TAEHVDecoder(16))
    encoder = {"encoder.0.weight": torch.zeros(64, 3, 3, 3)}  # a full TAEHV file has an encoder too: not loaded
    save_file({**tae.state_dict(), **encoder}, str(tmp_path / "taew2_1.safetensors"))
    loaded = load_taehv_decoder(tmp_path / "taew2_1.safetensors")
    z = torch.randn(1, 16, 2, 3, 3)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), tae.decode(z))
    wan = {"conv2.weight": torch.zeros(16, 16, 1, 1, 1), "decoder.head.0.gamma": torch.ones(8, 1, 1, 1)}
    save_file(wan, str(tmp_path / "wan_2.1_vae.safetensors"))
    with pytest.raises(BGFSError, match="wan_2.1_vae.safetensors is not a Tiny AutoEncoder for Wan"):
        load_taehv_decoder(tmp_path / "wan_2.1_vae.safetensors")
    sd = {k: v for k, v in tae.state_dict().items() if k != "decoder.3.conv.0.bias"}
    save_file(sd, str(tmp_path / "short.safetensors"))
    with pytest.raises(BGFSError, match=r"does not have the TAEHV decoder's layout \(1 missing, e\.g\. "
                                        r"decoder\.3\.conv\.0\.bias\)"):  # fmt: skip
        load_taehv_decoder(tmp_path / "short.safetensors")
    sd = dict(tae.state_dict(), **{"decoder.1.weight": torch.zeros(256, 32, 3, 3)})
    save_file(sd, str(tmp_path / "lighttaehy1_5.safetensors"))
    with pytest.raises(BGFSError, match="for 32-channel latents"):
        load_taehv_decoder(tmp_path / "lighttaehy1_5.safetensors")
    # HunyuanVideo's taehv has taew2_1's layout and 16 channels: only its name tells it apart
    save_file(tae.state_dict(), str(tmp_path / "taehv.safetensors"))
    with pytest.raises(BGFSError, match="is HunyuanVideo's tiny autoencoder"):
        load_taehv_decoder(tmp_path / "taehv.safetensors")
    # madebyollin's taew2_1 is fp16, as a .pth: read to fp32
    torch.save({k: v.half() for k, v in tae.state_dict().items()}, tmp_path / "taew2_1.pth")
    half = load_taehv_decoder(tmp_path / "taew2_1.pth")
    assert half.decoder[1].weight.dtype == torch.float32
    assert torch.equal(half.decoder[1].weight, tae.decoder[1].weight.half().float())
    with pytest.raises(BGFSError, match="gradient VAE file .*nowhere.safetensors does not exist"):
        load_taehv_decoder(tmp_path / "nowhere.safetensors")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny diffusers Wan 2.1 VAE folder and TAEHV files for 16 and 48 channels."""
    from bgfs_core.codecs import DiffusersWanCodec, wan_vae_config

    require_diffusers()
    d = tmp_path_factory.mktemp("taehv_cli")
    DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8)).vae.save_pretrained(d / "wan" / "vae")
    for channels, name in ((16, "lighttaew2_1.safetensors"), (48, "lighttaew2_2.safetensors")):
        save_file(lively(TAEHVDecoder(channels)).state_dict(), str(d / name))
    return d


@pytest.mark.parametrize("grad_dtype", ["fp32", "bf16"])
def test_the_fix_optimises_through_the_gradient_vae(files, grad_dtype):
    """The codec `bgfs fix --gradient-vae` builds: every step's decode goes through the TAEHV (in --grad-dtype),
    and the latents change."""
    from test_fixer import hand_detections, random_critic

    from bgfs_core.fix_video import make_codec
    from bgfs_core.fixer import FixSettings, fix_latents

    codec = make_codec("auto", str(files / "wan"), grad_dtype=grad_dtype,
                       gradient_vae=str(files / "lighttaew2_1.safetensors"))  # fmt: skip
    dtype = {"fp32": "", "bf16": " (bfloat16)"}[grad_dtype]
    assert codec.name == f"Wan 2.1 VAE (diffusers) (gradients through TAEHV lighttaew2_1.safetensors{dtype})"
    tae = codec.grad.module
    assert tae.decoder[1].weight.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[grad_dtype]
    calls = []
    tae.decoder[1].register_forward_hook(lambda _m, inp, _out: calls.append(inp[0].requires_grad))
    critic, spec = random_critic()
    det = hand_detections(9, (64, 96), (8.0, 8.0, 36.0, 36.0))
    z = torch.randn(1, 16, 3, 8, 12, generator=torch.Generator().manual_seed(3))
    result = fix_latents(z, codec, critic, spec, det, FixSettings(steps=2))
    assert result.report["changed"] and not torch.equal(result.latents, z)
    assert sum(calls) >= 2, "each step decodes with gradients through the TAEHV"
    # two random-weight models decode unlike each other: measured, and warned of (the VAE's bf16 copy is not measured)
    assert result.report["decoder_agreement_db"] < 20
    assert any(w.startswith("the gradient decoder (TAEHV lighttaew2_1") for w in result.report["warnings"])
    copy = make_codec("auto", str(files / "wan"), grad_dtype="bf16")
    assert copy.same_weights and fix_latents(z, copy, critic, spec, det, FixSettings(steps=0)).report[
        "decoder_agreement_db"] is None


def test_bgfs_fix_takes_a_gradient_vae(files, monkeypatch):
    """End to end: a random VAE decodes no hand, so the run ends in the clean pass-through; the report names the
    decoders; the fix gets the VAE's decode it judges against, to measure the TAEHV with at no cost."""
    import bgfs_core.fixer as fixer

    real_fix, given = fixer.fix_latents, []

    def fix_latents(*args, judged_frames=None, **kwargs):
        given.append(judged_frames)
        return real_fix(*args, judged_frames=judged_frames, **kwargs)

    monkeypatch.setattr(fixer, "fix_latents", fix_latents)
    out = files / "fixed.mp4"
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--model-id", str(files / "wan"),
                 "--gradient-vae", str(files / "lighttaew2_1.safetensors"), "--max-frames", "5", "--steps", "1",
                 "--quiet"]) == 0  # fmt: skip
    report = json.loads((files / "fixed_report" / "report.json").read_text())
    assert report["codec"] == "Wan 2.1 VAE (diffusers) (gradients through TAEHV lighttaew2_1.safetensors)"
    (judged,) = given
    assert judged.dtype == np.uint8 and judged.shape == (5, *read_video(out)[0].shape[1:])


@pytest.mark.parametrize("extra,says", [
    (["--gradient-vae", "{files}/lighttaew2_2.safetensors"], "does not decode the latent space of Wan 2.1 VAE"),
    (["--gradient-vae", "{files}/wan/vae/diffusion_pytorch_model.safetensors"], "is not a Tiny AutoEncoder for Wan"),
])  # fmt: skip
def test_a_gradient_vae_for_another_latent_space_is_refused(files, capsys, extra, says):
    out = files / "refused.mp4"
    extra = [e.format(files=files) for e in extra]
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--model-id", str(files / "wan"), *extra,
                 "--quiet"]) == 2  # fmt: skip
    assert says in capsys.readouterr().err and not out.exists()


def test_a_gradient_vae_needs_a_wan_vae(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["fix", "--in", str(HAND_VIDEO), "--out", str(out), "--gradient-vae", "lighttaew2_1.safetensors",
                 "--quiet"]) == 2  # fmt: skip
    assert "--gradient-vae decodes a Wan VAE's latents: give the VAE with --model-id" in capsys.readouterr().err


@comfy
@pytest.mark.parametrize("channels", [16, 48])
def test_the_same_frames_and_gradients_as_comfyuis_taehv(channels):
    theirs = lively(load_comfy_module(COMFYUI_DIR, "taehv", latent_channels=channels, latent_format=None,
                                      show_progress_bar=False))  # fmt: skip
    theirs.parallel = True  # as ModuleCodec decodes it for gradients
    ours = TAEHVDecoder(channels)
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if k.startswith("decoder.")}, strict=True)
    z = torch.randn(1, channels, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    a, b = theirs.decode(za), ours.decode(zb)
    assert a.std() > 0.05 and torch.equal(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    assert torch.equal(za.grad, zb.grad)
