"""Windowed, chunked, checkpointed decode and paste-back; ComfyUI WanVAE / TAEHV adapters via COMFYUI_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_host import load_comfy_module
from conftest import require_diffusers

from bgfs_core.codecs import (
    DiffusersWanCodec,
    GradientProxyCodec,
    ModuleCodec,
    PixelCodec,
    decode_window,
    feather_mask,
    paste_window,
    pixel_box_of_window,
    wan_vae_config,
    window_from_boxes,
    window_latents,
)
from bgfs_core.codecs.window import reversal_cost, stream_slots
from bgfs_core.errors import BGFSError

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")


@pytest.fixture(scope="module")
def wan21() -> DiffusersWanCodec:
    require_diffusers()
    return DiffusersWanCodec.from_config(wan_vae_config("2.1", base_dim=8), seed=0)


def boxes_for(num_frames: int, box, frames: range | None = None) -> np.ndarray:
    b = np.full((num_frames, 4), np.nan)
    b[frames if frames is not None else slice(None)] = box
    return b


def test_pixel_window_is_an_exact_crop(hand_video_frames):
    codec = PixelCodec()
    frames = torch.from_numpy(hand_video_frames[:12]).permute(0, 3, 1, 2).float() / 255
    z = codec.encode(frames)
    win = window_from_boxes(codec, z.shape, boxes_for(12, [30.5, 20, 90, 70], range(3, 9)), margin=5)
    pw = pixel_box_of_window(win)
    assert (pw.frame0, pw.frame1, pw.x0, pw.y0, pw.x1, pw.y1) == (3, 9, 30, 20, 90, 70)
    out = decode_window(codec, z, win, chunk_frames=4)
    assert torch.equal(out, codec.decode(z)[3:9, :, 20:70, 30:90])


def test_window_geometry_wan(wan21):
    shape = (1, 16, 6, 20, 30)  # 21 frames, 160 x 240 px
    win = window_from_boxes(wan21, shape, boxes_for(21, [60, 50, 100, 90], range(6, 11)), margin=3)
    # Frames 6..10 live in latent frames 2..3; pixels 60..100 x 50..90 in cells 7..13 x 6..12.
    assert (win.t0, win.t1, win.x0, win.x1, win.y0, win.y1) == (2, 4, 7, 13, 6, 12)
    assert (win.ct0, win.cx0, win.cx1, win.cy0, win.cy1) == (0, 4, 16, 3, 15)  # Wan: context from frame 0
    assert tuple(pixel_box_of_window(win)) == (5, 13, 56, 48, 104, 96)
    with pytest.raises(BGFSError, match="no frame has an ROI"):
        window_from_boxes(wan21, shape, boxes_for(21, np.nan))
    with pytest.raises(BGFSError, match=r"\[21, 4\]"):
        window_from_boxes(wan21, shape, boxes_for(20, [0, 0, 8, 8]))


def test_windowed_decode_matches_full_decode(wan21):
    """Time is exact (the causal state is streamed); space differs only by what lies beyond the margin."""
    z = torch.randn(1, 16, 3, 22, 22, generator=torch.Generator().manual_seed(0))
    boxes = boxes_for(9, [72, 72, 104, 104], range(5, 9))  # cells 9..13, latent frame 2
    with torch.no_grad():
        full = wan21.decode(z)
        whole = window_from_boxes(wan21, z.shape, boxes, margin=9)  # margin reaches the grid's edges
        pw = pixel_box_of_window(whole)
        ref = full[pw.frame0:pw.frame1, :, pw.y0:pw.y1, pw.x0:pw.x1]
        assert torch.allclose(decode_window(wan21, z, whole, chunk_frames=1), ref, atol=1e-5)
        errs = {}
        for margin in (2, None):  # None: the default margin, 6 cells
            win = window_from_boxes(wan21, z.shape, boxes, margin=margin)
            errs[margin] = (decode_window(wan21, z, win, chunk_frames=2) - ref).abs()
    assert (win.cx0, win.cx1) == (3, 19)
    # Measured on this random-weight model: margin 2 -> max 0.52 / mean 0.072, margin 6 -> max 0.11 / mean 0.013
    # (the full-size Wan 2.1 decoder with random weights: 0.04 / 0.007 at margin 6, 0.15 / 0.018 at margin 4).
    # What remains is the mid-block's frame-wide attention and the convolutions' tails, small against a pixel
    # range of 1; the window only feeds gradients, the final decode is the full one.
    assert errs[None].max() < 0.2 and errs[None].mean() < 0.02
    assert errs[2].mean() > 3 * errs[None].mean()


@pytest.mark.parametrize("context", [1, -1], ids=["context-1", "from-frame-0"])
@pytest.mark.parametrize("kind", ["streamed", "chunks"])
def test_a_window_decodes_from_its_region_alone(request, context, kind):
    """`LatentWindow.local`: the decoded region's latents are all `decode_window` reads, so a fixer can send only
    them to the device (a long video's full latents stay where they are) and get the same frames and gradients:
    through a causal stream (the Wan VAE), and in chunks that re-decode context frames."""
    if kind == "streamed":
        codec = request.getfixturevalue("wan21")  # diffusers' Wan VAE, an optional extra: only this case needs it
    else:  # no causal stream, frames that mix their neighbours' latents: decoded as TAEHV is
        from test_nodes_glue import _TinyWanDecoder

        torch.manual_seed(4)
        mixing = _TinyWanDecoder()
        mixing.proj = torch.nn.Conv3d(16, 3 * 64, 3, padding=1)
        codec = ModuleCodec(mixing, latent_channels=16, spatial_ratio=8)
    z = torch.randn(1, 16, 5, 22, 22, generator=torch.Generator().manual_seed(3))
    win = window_from_boxes(codec, z.shape, boxes_for(17, [72, 72, 104, 104], range(9, 13)), margin=2,
                            context=context)  # fmt: skip
    assert win.t0 == 3 and win.ct0 == (2 if context == 1 else 0) and win.cx0 > 0
    local = win.local()
    assert local.decoded_shape == win.decoded_shape and local.grid == win.decoded_shape
    assert pixel_box_of_window(local)[2:] == tuple(v - o for v, o in zip(pixel_box_of_window(win)[2:],
                                                                       (win.cx0 * 8, win.cy0 * 8) * 2))  # fmt: skip
    region = window_latents(z, win).requires_grad_(True)
    full = z.clone().requires_grad_(True)
    a = decode_window(codec, region, local, chunk_frames=1)
    b = decode_window(codec, full, win, chunk_frames=1)
    assert torch.equal(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    assert torch.equal(region.grad, full.grad[win.decoded_slices])
    outside = torch.ones_like(full.grad, dtype=torch.bool)
    outside[win.decoded_slices] = False
    assert not full.grad[outside].any()


def test_checkpointing_gives_the_same_gradients(wan21, monkeypatch):
    # 6 core chunks, each checkpointed, the causal state streamed between them; and in segments of chunks that
    # keep only their start states (recomputed in the backward pass)
    z = torch.randn(1, 16, 7, 12, 12, generator=torch.Generator().manual_seed(1))
    win = window_from_boxes(wan21, z.shape, boxes_for(25, [40, 40, 56, 56], range(3, 25)), margin=2)
    assert win.t1 - win.t0 == 6
    grads = []
    for ckpt, segments, blocks in ((False, False, False), (True, False, False), (True, True, False),
                                   (True, True, True), (True, False, True)):
        zz = z.clone().requires_grad_(True)
        out = decode_window(wan21, zz, win, chunk_frames=1, checkpoint=ckpt, segments=segments,
                            checkpoint_blocks=blocks)
        (out ** 2).mean().backward()
        grads.append(zz.grad)
    for keep in (0, 2, 5):  # no state kept but the start, two, every one (the default keeps sqrt(6) - 1 = 1)
        zz = z.clone().requires_grad_(True)
        (decode_window(wan21, zz, win, chunk_frames=1, checkpoint_blocks=True, keep_states=keep) ** 2).mean().backward()
        grads.append(zz.grad)
    for g in grads[1:]:
        assert torch.allclose(grads[0], g, atol=1e-7)
    g = grads[3]
    # Blocks are checkpointed in segments (each chunk's gradient pass runs outside other checkpoints), never nested
    # in chunk checkpoints, where memory grew with the frame count.
    asked = []
    stream = wan21.grad_stream
    monkeypatch.setattr(wan21, "grad_stream", lambda checkpoint_blocks=False: asked.append(checkpoint_blocks) or
                        stream(checkpoint_blocks))  # fmt: skip
    for segments in (True, False):
        decode_window(wan21, z.clone().requires_grad_(True), win, chunk_frames=1, segments=segments,
                      checkpoint_blocks=True)  # fmt: skip
    assert asked == [True, False]
    # Gradients reach the core's latent frames, and only the decoded region (the warm-up frame 0 runs no-grad).
    assert g[:, :, 1:, win.cy0:win.cy1, win.cx0:win.cx1].abs().sum() > 0
    outside = g.clone()
    outside[:, :, win.t0:win.t1, win.cy0:win.cy1, win.cx0:win.cx1] = 0
    assert torch.count_nonzero(outside) == 0


def test_the_warm_up_state_is_kept_across_steps(wan21, monkeypatch):
    """A region that appears late: the context frames before it are decoded once for all of a fix's steps, and
    each step's frames and gradients are bit for bit those of a step without the kept state."""
    z = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(6))
    win = window_from_boxes(wan21, z.shape, boxes_for(17, [16, 16, 40, 40], range(12, 17)), margin=2)
    assert (win.ct0, win.t0) == (0, 3)  # three latent frames of warm-up, from frame 0
    warm_ups = []
    stream = wan21.grad_stream

    def counted(checkpoint_blocks: bool = False):
        inner = stream(checkpoint_blocks)
        return lambda lat, state: (warm_ups.append(lat.shape[2]) if state is None else None) or inner(lat, state)

    monkeypatch.setattr(wan21, "grad_stream", counted)

    def step(latents: torch.Tensor, warm: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        zz = latents.clone().requires_grad_(True)
        out = decode_window(wan21, zz, win, chunk_frames=1, warm=warm)
        (out ** 2).mean().backward()
        return out.detach(), zz.grad

    plain = step(z, None)
    warm: dict = {}
    for _ in range(2):
        kept = step(z, warm)
        assert torch.equal(kept[0], plain[0]) and torch.equal(kept[1], plain[1])
    assert warm_ups == [3, 3]  # the plain step's and the first kept step's warm-up only
    # other context latents: the kept state is not theirs, so it is made again
    z2 = z.clone()
    z2[:, :, 1] += 0.5
    warm_ups.clear()
    with torch.no_grad():
        assert torch.equal(decode_window(wan21, z2, win, warm=warm), decode_window(wan21, z2, win))
    assert warm_ups == [3, 3]


def test_streamed_backward_recomputes_what_the_schedule_plans(wan21, monkeypatch):
    """The segmented stream's backward recomputes the causal states it needs on `reversal_cost`'s schedule: fewer
    chunk forwards than equal segments keeping as many states, none when every state is kept."""
    z = torch.randn(1, 16, 7, 12, 12, generator=torch.Generator().manual_seed(1))
    win = window_from_boxes(wan21, z.shape, boxes_for(25, [40, 40, 56, 56], range(3, 25)), margin=2)
    counts = {True: 0, False: 0}  # chunk forwards with / without gradients
    stream = wan21.grad_stream

    def counted(checkpoint_blocks: bool = False):
        inner = stream(checkpoint_blocks)

        def run(lat, state):
            counts[torch.is_grad_enabled()] += 1
            return inner(lat, state)
        return run

    monkeypatch.setattr(wan21, "grad_stream", counted)
    chunks = win.t1 - win.t0
    assert chunks == 6 and stream_slots(chunks) == 1
    for keep, recomputed in ((None, 5), (0, 15), (2, 4), (5, 0)):
        counts.update({True: 0, False: 0})
        out = decode_window(wan21, z.clone().requires_grad_(True), win, chunk_frames=1, keep_states=keep)
        out.sum().backward()
        # 1 warm-up frame and the forward pass, then the recomputed states; each chunk runs once with gradients
        assert counts == {False: 1 + chunks + recomputed, True: chunks}, keep
    # The planner against ~sqrt(chunks) equal segments with the same states kept (the schedule before it):
    # 21 chunks (81 frames, 1 latent frame a chunk) in segments of 5 recompute 4 x 10 chunk forwards.
    assert stream_slots(21) == 4 and reversal_cost(21, 4) == (35, 6)
    assert reversal_cost(21, 20) == (20, 1) and reversal_cost(21, 0) == (210, 0)
    with pytest.raises(BGFSError, match="keep_states must be >= 0"):
        decode_window(wan21, z, win, keep_states=-1)


def test_paste_window_feathers_and_leaves_the_rest_unchanged():
    codec = PixelCodec()
    z = torch.randn(1, 3, 10, 30, 40, generator=torch.Generator().manual_seed(2))
    win = window_from_boxes(codec, z.shape, boxes_for(10, [12, 10, 20, 16], range(4, 7)), margin=3, context=2)
    new = window_latents(z, win) + 5.0
    out = paste_window(z, win, new, feather=2)
    mask = feather_mask(win, 2)[0, 0]
    assert mask[:2].max() == 0 and mask[2:].max() == 1  # context frames are never edited
    ramp = torch.tensor(sorted(set(mask[2, 5].tolist())))  # one row across the window
    assert torch.allclose(ramp, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    changed = torch.zeros_like(z, dtype=torch.bool)
    changed[:, :, win.ct0:win.t1, win.cy0:win.cy1, win.cx0:win.cx1] = (mask > 0)
    assert torch.equal(out[~changed], z[~changed])  # bit for bit outside the feathered core
    core = (slice(None), slice(None), slice(win.t0, win.t1), slice(win.y0, win.y1), slice(win.x0, win.x1))
    assert torch.equal(out[core], z[core] + 5.0)
    # Differentiable: the optimiser's variable is the window, pasted before decoding.
    w = window_latents(z, win).requires_grad_(True)
    paste_window(z, win, w, feather=2).sum().backward()
    assert torch.equal(w.grad, mask.expand_as(w.grad[0])[None])
    with pytest.raises(BGFSError, match="window latents must have shape"):
        paste_window(z, win, new[:, :, 1:])
    # Half-precision latents (a bf16 LATENT): the core holds the new values rounded once, not a bf16 blend's
    # rounding of them (which missed them where old and new lie far apart), and the rest stays bit for bit.
    z16 = (z * 40).bfloat16()
    new = window_latents(z16.float(), win) * -1.37 + 0.01
    out = paste_window(z16, win, new, feather=2)
    assert out.dtype == torch.bfloat16 and torch.equal(out[~changed], z16[~changed])
    assert torch.equal(out[core], new[:, :, win.t0 - win.ct0 :, win.y0 - win.cy0 : win.y1 - win.cy0,
                                      win.x0 - win.cx0 : win.x1 - win.cx0].bfloat16())  # fmt: skip


# --- ComfyUI's own modules (COMFYUI_DIR) ------------------------------------------------------------------------
comfy = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: ComfyUI WanVAE/TAEHV adapter tests "
                                                   "SKIPPED (point it at a ComfyUI checkout to run them)")


@pytest.fixture(scope="module")
def comfy_modules():
    if not Path(COMFYUI_DIR, "comfy", "ldm", "wan", "vae.py").is_file():
        pytest.fail(f"COMFYUI_DIR={COMFYUI_DIR} is not a ComfyUI checkout (no comfy/ldm/wan/vae.py)")
    pytest.importorskip("einops", reason="ComfyUI's WanVAE needs einops (pip install einops)")
    return {
        "wan21": load_comfy_module(COMFYUI_DIR, "wan21", dim=8, z_dim=16),
        "wan22": load_comfy_module(COMFYUI_DIR, "wan22", dim=8, dec_dim=12, z_dim=48),
        "taehv": load_comfy_module(COMFYUI_DIR, "taehv", latent_channels=16, latent_format=None,
                                   show_progress_bar=False),
        # lighttaew2_2: the Wan 2.2 VAE's latent space (48 channels), 2x2 pixel patches
        "taehv48": load_comfy_module(COMFYUI_DIR, "taehv", latent_channels=48, latent_format=None,
                                     show_progress_bar=False),
    }


@comfy
@pytest.mark.parametrize("kind,channels,ratio", [("wan21", 16, 8), ("wan22", 48, 16)])
def test_comfy_wanvae_adapter(comfy_modules, kind, channels, ratio):
    m = comfy_modules[kind]
    codec = ModuleCodec(m, latent_channels=channels, spatial_ratio=ratio)
    # The node decodes the window `bgfs fix` decodes: the same architecture, the same reach.
    assert (codec.default_margin, codec.default_context) == (DiffusersWanCodec.default_margin,
                                                             DiffusersWanCodec.default_context)
    z = torch.randn(1, channels, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = ((m.decode(z)[0].permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1)
        assert torch.allclose(codec.decode(z), ref, atol=1e-5)
        assert codec.encode(codec.decode(z)).shape == z.shape
    assert codec.grad_stream() is not None
    win = window_from_boxes(codec, z.shape, boxes_for(9, [ratio * 3, ratio * 3, ratio * 5, ratio * 5], range(5, 9)))
    pw = pixel_box_of_window(win)
    zz = z.clone().requires_grad_(True)
    out = decode_window(codec, zz, win, chunk_frames=1, checkpoint_blocks=False)
    with torch.no_grad():  # the default margin covers this small grid: exact
        assert torch.allclose(out, codec.decode(z)[pw.frame0:pw.frame1, :, pw.y0:pw.y1, pw.x0:pw.x1], atol=1e-5)
    out.mean().backward()
    assert zz.grad[:, :, 2].abs().sum() > 0
    # ComfyUI's causal cache kept across steps (win starts at latent frame 2): the same frames, bit for bit
    assert win.ct0 == 0 < win.t0 == 2
    warm: dict = {}
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(decode_window(codec, z, win, chunk_frames=1, warm=warm), out.detach())
    assert "state" in warm
    # the same gradients with each ComfyUI decoder block checkpointed (its own cache-slot layout)
    zb = z.clone().requires_grad_(True)
    decode_window(codec, zb, win, chunk_frames=1, checkpoint_blocks=True).mean().backward()
    assert torch.allclose(zb.grad, zz.grad, atol=1e-6)


@comfy
def test_comfy_taehv_adapter_and_proxy(comfy_modules):
    m = comfy_modules["taehv"]
    tae = ModuleCodec(m, latent_channels=16, spatial_ratio=8, signed=False, context=4, margin=6, name="TAEHV")
    z = torch.randn(1, 16, 4, 6, 6, generator=torch.Generator().manual_seed(4), requires_grad=True)
    out = tae.decode(z)
    assert out.shape == (13, 3, 48, 48)
    # Parallel mode while decoding: the last frame's loss reaches the first latent frame through the memory
    # (ComfyUI's default sequential mode detaches it); the module's own setting is restored.
    out[-1].mean().backward()
    assert z.grad[:, :, 0].abs().sum() > 0 and m.parallel is False
    with torch.no_grad():
        assert torch.allclose(out, m.decode(z)[0].permute(1, 0, 2, 3).clamp(0, 1), atol=1e-5)
    real = ModuleCodec(comfy_modules["wan21"], latent_channels=16, spatial_ratio=8)
    proxy = GradientProxyCodec(real, tae)
    assert proxy.grad_stream() is None and proxy.default_context == 4
    # Without settings, a TAEHV window reaches 4 cells and 2 latent frames (1-2% of the peak change, measured)
    light = ModuleCodec(m, latent_channels=16, spatial_ratio=8, signed=False)
    assert (light.default_margin, light.default_context) == (4, 2)
    win = window_from_boxes(proxy, z.shape, boxes_for(13, [16, 16, 32, 32], range(9, 13)))
    zz = z.detach().clone().requires_grad_(True)
    w = decode_window(proxy, zz, win, chunk_frames=1)
    pw = pixel_box_of_window(win)
    with torch.no_grad():  # through TAEHV, with enough context and margin for its reach on this small grid
        assert torch.allclose(w, tae.decode(z)[pw.frame0:pw.frame1, :, pw.y0:pw.y1, pw.x0:pw.x1], atol=1e-4)
    w.mean().backward()
    assert zz.grad.abs().sum() > 0
    with pytest.raises(BGFSError, match="latent channels 48 vs 16"):
        GradientProxyCodec(ModuleCodec(comfy_modules["wan22"], latent_channels=48, spatial_ratio=16), tae)


@comfy
def test_comfy_taehv_for_wan22_latents_is_a_gradient_decoder(comfy_modules):
    """lighttaew2_2 (TAEHV with 48 channels and 2x2 pixel patches: 16x like the Wan 2.2 VAE) as the TI2V-5B
    Fixer's gradient_vae: paired with ComfyUI's Wan 2.2 VAE, the windowed decode goes through it and back."""
    m = comfy_modules["taehv48"]
    tae = ModuleCodec(m, latent_channels=48, spatial_ratio=16, signed=False, context=4, margin=6, name="TAEHV 48")
    z = torch.randn(1, 48, 4, 5, 5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = tae.decode(z)
        assert out.shape == (13, 3, 80, 80)
        assert torch.allclose(out, m.decode(z)[0].permute(1, 0, 2, 3).clamp(0, 1), atol=1e-5)
    real = ModuleCodec(comfy_modules["wan22"], latent_channels=48, spatial_ratio=16)
    proxy = GradientProxyCodec(real, tae)
    win = window_from_boxes(proxy, z.shape, boxes_for(13, [16, 16, 48, 48], range(9, 13)))
    pw = pixel_box_of_window(win)
    zz = z.clone().requires_grad_(True)
    w = decode_window(proxy, zz, win, chunk_frames=1)
    with torch.no_grad():  # through the TAEHV, with enough context and margin for its reach on this small grid
        assert torch.allclose(w, out[pw.frame0:pw.frame1, :, pw.y0:pw.y1, pw.x0:pw.x1], atol=1e-4)
    w.mean().backward()
    assert zz.grad.abs().sum() > 0 and torch.isfinite(zz.grad).all()
    with pytest.raises(BGFSError, match="latent channels 16 vs 48"):
        GradientProxyCodec(ModuleCodec(comfy_modules["wan21"], latent_channels=16, spatial_ratio=8), tae)


@comfy
def test_the_fix_measures_comfyuis_tiny_decoder_against_its_wan_vae(comfy_modules):
    """The Fixer node with a gradient_vae: ComfyUI's Wan VAE (its weights inference tensors, as ComfyUI loads them;
    the node wraps it uncopied) decodes the window once more, without gradients, to measure the TAEHV against it;
    two random-weight models decode unlike each other, so the fix warns."""
    import copy

    from test_fixer import hand_detections, random_critic

    from bgfs_core.fixer import FixSettings, fix_latents

    with torch.inference_mode():  # ComfyUI's weights are inference tensors
        wan = load_comfy_module(COMFYUI_DIR, "wan21", dim=8, z_dim=16)
    assert next(wan.parameters()).is_inference()
    tae = ModuleCodec(copy.deepcopy(comfy_modules["taehv"]), latent_channels=16, spatial_ratio=8, signed=False)
    proxy = GradientProxyCodec(ModuleCodec(wan, latent_channels=16, spatial_ratio=8), tae)
    critic, spec = random_critic()
    z = torch.randn(1, 16, 3, 8, 12, generator=torch.Generator().manual_seed(3))
    result = fix_latents(z, proxy, critic, spec, hand_detections(9, (64, 96), (8.0, 8.0, 36.0, 36.0)),
                         FixSettings(steps=1))  # fmt: skip
    assert result.report["changed"] and result.report["decoder_agreement_db"] < 20
    assert any(w.startswith("the gradient decoder (TAEHV)") for w in result.report["warnings"])
