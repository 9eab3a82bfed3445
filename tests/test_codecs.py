"""Codecs: pixel identity, diffusers AutoencoderKLWan (16 and 48 channels, tiny random weights), adapters, proxy."""

from __future__ import annotations

import pytest
import torch
from conftest import require_diffusers

from bgfs_core.codecs import (
    DiffusersWanCodec,
    GradientProxyCodec,
    ModuleCodec,
    PixelCodec,
    wan_vae_config,
)
from bgfs_core.errors import BGFSError

TINY = {
    "2.1": wan_vae_config("2.1", base_dim=8),
    "2.2": wan_vae_config("2.2", base_dim=8, decoder_base_dim=12),
}


@pytest.fixture(scope="module")
def wan21() -> DiffusersWanCodec:
    require_diffusers()
    return DiffusersWanCodec.from_config(TINY["2.1"], seed=0)


@pytest.fixture(scope="module")
def wan22() -> DiffusersWanCodec:
    require_diffusers()
    return DiffusersWanCodec.from_config(TINY["2.2"], seed=0)


def real_frames(hand_video_frames, n: int, size: int) -> torch.Tensor:
    """n frames of the real hand video, centre-cropped to size x size, float [n, 3, size, size] in [0, 1]."""
    v = torch.from_numpy(hand_video_frames[:n]).permute(0, 3, 1, 2).float() / 255.0
    h, w = v.shape[2:]
    y, x = (h - size) // 2, (w - size) // 2
    return v[:, :, y:y + size, x:x + size].contiguous()


def test_pixel_codec_roundtrip_on_real_video(hand_video_frames):
    codec = PixelCodec()
    frames = real_frames(hand_video_frames, 7, 64)
    z = codec.encode(frames)
    assert z.shape == (1, 3, 7, 64, 64) and z.min() >= -1 and z.max() <= 1
    assert torch.allclose(codec.decode(z), frames, atol=1e-6)


def test_empty_or_non_finite_latents_are_refused():
    """Latents with no frame (a ComfyUI LATENT cut to nothing) failed deep in a convolution; NaN latents (a sampler
    that diverged) decoded to noise and came back "unchanged" with exit code 0."""
    codec = PixelCodec()
    codec.check_latents(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(BGFSError, match=r"latents \[1, 3, 0, 4, 4\] hold no frames or no pixels"):
        codec.check_latents(torch.zeros(1, 3, 0, 4, 4))
    bad = torch.zeros(1, 3, 2, 4, 4)
    bad[0, 1, 1, 2, 3] = float("nan")
    with pytest.raises(BGFSError, match="hold NaN or infinite values .* sample them again"):
        codec.check_latents(bad)
    with pytest.raises(BGFSError, match="hold NaN or infinite values"):
        codec.check_latents(bad.nan_to_num(posinf=0.0).index_fill(2, torch.tensor([0]), float("inf")))


def test_straight_through_clamp_keeps_gradients():
    codec = PixelCodec()
    z = torch.full((1, 3, 1, 2, 2), 1.5, requires_grad=True)  # decodes to 1.25, shown as 1.0
    out = codec.decode(z)
    assert out.max().item() == 1.0
    out.sum().backward()
    assert torch.all(z.grad == 0.5)  # d/dz of (z + 1) / 2, not the zero a hard clamp would give


@pytest.mark.parametrize("kind,channels,ratio", [("2.1", 16, 8), ("2.2", 48, 16)])
def test_wan_geometry_and_gradients(kind, channels, ratio, wan21, wan22, hand_video_frames):
    codec = wan21 if kind == "2.1" else wan22
    assert (codec.latent_channels, codec.temporal_ratio, codec.spatial_ratio) == (channels, 4, ratio)
    frames = real_frames(hand_video_frames, 5, 2 * ratio)
    with torch.no_grad():
        z = codec.encode(frames)
    assert z.shape == (1, channels, 2, 2, 2)
    z = z.clone().requires_grad_(True)
    out = codec.decode(z)
    assert out.shape == (5, 3, 2 * ratio, 2 * ratio)
    # A loss on the pixels of the last frame's top-left quarter reaches the latents of both latent frames.
    out[-1, :, :ratio, :ratio].mean().backward()
    g = z.grad
    assert torch.isfinite(g).all()
    assert g[:, :, 1].abs().sum() > 0 and g[:, :, 0].abs().sum() > 0


@pytest.mark.parametrize("kind", ["2.1", "2.2"])
def test_wan_decode_matches_diffusers(kind, wan21, wan22):
    """Our re-entrant, clamp-free decode loop gives diffusers' own decode (inside [-1, 1])."""
    codec = wan21 if kind == "2.1" else wan22
    z = torch.randn(1, codec.latent_channels, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = codec.decode(z)
        ref = (codec.vae.decode(z).sample[0].permute(1, 0, 2, 3) + 1) / 2
    assert ours.shape == (9, 3, 2 * codec.spatial_ratio, 3 * codec.spatial_ratio)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_stream_continues_exactly(wan21):
    z = torch.randn(1, 16, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = wan21.decode(z)
        a, state = wan21.decode_stream(z[:, :, :2], None)
        b, _ = wan21.decode_stream(z[:, :, 2:], state)
    assert a.shape[0] == 5 and b.shape[0] == 8
    assert torch.allclose(torch.cat([a, b]), full, atol=1e-6)


def test_frame_count_and_size_errors(wan21):
    with pytest.raises(BGFSError, match=r"80 frames break the 4k\+1 rule.*77 or 81"):
        wan21.check_frame_count(80)
    wan21.check_frame_count(81)
    with pytest.raises(BGFSError, match="80 frames"):
        wan21.encode(torch.rand(80, 3, 16, 16))
    with pytest.raises(BGFSError, match="not a multiple of 8"):
        wan21.encode(torch.rand(5, 3, 20, 16))
    assert PixelCodec().latent_frames(80) == 80  # no frame rule without temporal compression


def test_channel_errors(wan21, wan22):
    with pytest.raises(BGFSError, match=r"32 channels, but this VAE expects 16.*Wan 2.2 VAE = 48"):
        wan21.decode(torch.zeros(1, 32, 2, 2, 2))
    with pytest.raises(BGFSError, match="expects 48"):
        wan22.decode(torch.zeros(1, 16, 2, 2, 2))
    with pytest.raises(BGFSError, match=r"\[1, C, t, h, w\]"):
        wan21.decode(torch.zeros(1, 16, 2, 2))
    with pytest.raises(BGFSError, match="expects 3"):
        PixelCodec().decode(torch.zeros(1, 16, 2, 2, 2))


def test_from_pretrained_local_folder_and_missing(tmp_path, wan21):
    wan21.vae.save_pretrained(tmp_path / "model" / "vae")
    for where in (tmp_path / "model", tmp_path / "model" / "vae"):  # the model folder or the vae folder itself
        loaded = DiffusersWanCodec.from_pretrained(str(where))
        z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert torch.equal(loaded.decode(z), wan21.decode(z))
    with pytest.raises(BGFSError, match="does not exist.*local folder"):
        DiffusersWanCodec.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BGFSError, match="no VAE config"):
        DiffusersWanCodec.from_pretrained(str(tmp_path / "empty"))
    weights = next((tmp_path / "model" / "vae").glob("*.safetensors"))  # a download that stopped half-way
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BGFSError, match=r"could not load the Wan VAE .*subfolder 'vae'\): Unable to load weights "
                       r"[^\n]*safetensors'\. Pass a Wan VAE file"):
        DiffusersWanCodec.from_pretrained(str(tmp_path / "model"))


def test_module_codec_wraps_a_decoder_module(wan21):
    mod = ModuleCodec(wan21.vae, latent_channels=16, spatial_ratio=8, name="wrapped")
    z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(mod.decode(z), wan21.decode(z).clamp(0, 1), atol=1e-5)
        frames = wan21.decode(z)
        assert torch.allclose(mod.encode(frames), wan21.encode(frames), atol=1e-5)
    with pytest.raises(BGFSError, match="no decode"):
        ModuleCodec(torch.nn.Linear(2, 2), latent_channels=16, spatial_ratio=8)


def test_gradient_proxy_rules(wan21, wan22):
    grad = DiffusersWanCodec.from_config(TINY["2.1"], seed=1)  # same latent space, other weights
    proxy = GradientProxyCodec(wan21, grad)
    assert (proxy.latent_channels, proxy.spatial_ratio, proxy.temporal_ratio) == (16, 8, 4)
    z = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(proxy.decode(z), wan21.decode(z))
        assert torch.equal(proxy.decode_for_grad(z), grad.decode(z))
        assert not torch.allclose(proxy.decode(z), proxy.decode_for_grad(z))
    with pytest.raises(BGFSError, match="latent channels 16 vs 48.*spatial ratio 8 vs 16"):
        GradientProxyCodec(wan21, wan22)
    with pytest.raises(BGFSError, match="latent channels 3 vs 16"):
        GradientProxyCodec(PixelCodec(), wan21)


@pytest.mark.parametrize("kind", ["2.1", "2.2"])
def test_block_checkpointing_keeps_gradients_and_restores_the_decoder(kind, wan21, wan22):
    from bgfs_core.codecs.blocks import cached_blocks

    codec = wan21 if kind == "2.1" else wan22
    z = torch.randn(1, codec.latent_channels, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    grads, outs, kept = [], [], []
    for blocks in (False, True):
        zz = z.clone().requires_grad_(True)
        stream = codec.grad_stream(checkpoint_blocks=blocks)
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list = saved) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())  # what autograd keeps for the backward pass
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            a, state = stream(zz[:, :, :1], None)
            b, _ = stream(zz[:, :, 1:], state)
        kept.append(sum(saved))
        out = torch.cat([a, b])
        (out ** 2).mean().backward()
        grads.append(zz.grad)
        outs.append(out.detach())
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[1].abs().sum() > 0
    assert kept[1] < 0.5 * kept[0]  # the blocks' activations are recomputed, not kept
    # residual and resample blocks were wrapped for the call only
    blocks = cached_blocks(codec.vae.decoder)
    assert len(blocks) >= 4 and all("forward" not in b.__dict__ for b in blocks)
