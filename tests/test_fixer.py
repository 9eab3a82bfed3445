"""The Latent Anatomy Fixer: gradients reach the latents through real Wan VAE classes, latents outside the window
come back bit for bit, bad input gives clear errors, a cancel leaves the input untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import fix_reach, require_diffusers

from bgfs_core.codecs import DiffusersWanCodec, PixelCodec, wan_vae_config
from bgfs_core.critic import CriticSpec, HeatmapCritic
from bgfs_core.detections import Detections
from bgfs_core.errors import BGFSError
from bgfs_core.fixer import FixSettings, fix_latents
from bgfs_core.losses import LossWeights

TINY = {16: wan_vae_config("2.1", base_dim=8), 48: wan_vae_config("2.2", base_dim=8, decoder_base_dim=12)}


def hand_detections(num_frames: int, frame_hw: tuple[int, int], box: tuple[float, float, float, float]) -> Detections:
    """A synthetic left hand: 21 keypoints spread over ``box`` in every frame, drifting one pixel per frame."""
    det = Detections.empty("hands", num_frames, frame_hw)
    x0, y0, x1, y1 = box
    rng = np.random.default_rng(0)
    base = np.stack([rng.uniform(x0, x1, 21), rng.uniform(y0, y1, 21)], -1).astype(np.float32)
    for t in range(num_frames):
        det.keypoints[t, 0] = base + np.float32(t % 3)
        det.confidence[t, 0] = 0.9
        det.present[t, 0] = True
        det.scores[t, 0] = 0.9
        det.boxes[t, 0] = [x0, y0, x1, y1]
    return det


def random_critic() -> tuple[torch.nn.Module, CriticSpec]:
    torch.manual_seed(0)
    spec = CriticSpec.for_region("hands", input_hw=(32, 32), heatmap_hw=(16, 16), width=8)
    critic = HeatmapCritic(spec).eval().requires_grad_(False)
    torch.nn.init.normal_(critic.head.weight, std=0.3)  # an untrained critic with visible, varied peaks
    return critic, spec


SETTINGS = FixSettings(steps=2, lr=0.05, mode="latent", keypoint_conf=0.0, chunk_frames=1)


@pytest.mark.parametrize("channels", [16, 48])
@pytest.mark.usefixtures("needs_diffusers")
def test_fix_changes_the_window_and_nothing_else(channels):
    codec = DiffusersWanCodec.from_config(TINY[channels], seed=0)
    s = codec.spatial_ratio
    torch.manual_seed(1)
    latents = torch.randn(1, channels, 2, 64 // s, 96 // s)
    original = latents.clone()
    det = hand_detections(codec.pixel_frames(2), (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    result = fix_latents(latents, codec, critic, spec, det, SETTINGS)
    assert torch.equal(latents, original), "the input latents must never be modified in place"
    changed = (result.latents != original).any(1)[0]  # [t, h, w]
    assert changed.any(), "no gradient reached the latents"
    win = result.report["window"]
    allowed = torch.from_numpy(fix_reach(win, tuple(changed.shape), SETTINGS.feather))
    assert not (changed & ~allowed).any(), "latents outside the window changed"
    assert win["latent_x"][1] < latents.shape[-1], "the window should not cover the whole frame in this case"


@pytest.mark.parametrize("channels", [16, 48])
@pytest.mark.usefixtures("needs_diffusers")
def test_a_half_precision_copy_of_the_vae_passes_the_fp32_gradient(channels):
    """``bgfs fix --grad-dtype bf16`` (and ComfyUI on a GPU) back-propagate through a half-precision decoder: its
    gradient must be the fp32 one up to rounding; the fix through it stays fp32, outside the window bit for bit."""
    from bgfs_core.codecs import GradientProxyCodec

    codec = DiffusersWanCodec.from_config(TINY[channels], seed=0)
    s = codec.spatial_ratio
    z = torch.randn(1, channels, 2, 64 // s, 96 // s, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(5, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    half = codec.in_dtype(torch.bfloat16)
    assert half.name.endswith("(diffusers, bfloat16)") and next(codec.vae.parameters()).dtype == torch.float32
    grads = []
    for c in (codec, half):
        zz = z.clone().requires_grad_(True)
        (c.decode(zz) * weights).sum().backward()
        grads.append(zz.grad.flatten())
    cos = float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()))
    assert cos > 0.99, cos  # measured 0.996 (16 channels) and 0.9997 (48); fp16 0.9999

    det = hand_detections(codec.pixel_frames(2), (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    result = fix_latents(z, GradientProxyCodec(codec, half, same_weights=True), critic, spec, det, SETTINGS)
    assert result.latents.dtype == torch.float32 and result.report["codec"].endswith("(diffusers, bfloat16))")
    assert result.report["decoder_agreement_db"] is None  # a copy: not measured (it costs a decode)
    measured = fix_latents(z, GradientProxyCodec(codec, half, same_weights=False), critic, spec, det, SETTINGS)
    assert measured.report["decoder_agreement_db"] > 40  # measured 52 dB (16 channels) and 54 (48)
    assert not any("gradient decoder" in w for w in measured.report["warnings"])
    inside = torch.from_numpy(fix_reach(result.report["window"], tuple(z.shape[2:]), SETTINGS.feather))
    assert (result.latents[:, :, inside] != z[:, :, inside]).any()
    assert torch.equal(result.latents[:, :, ~inside], z[:, :, ~inside])


@pytest.mark.usefixtures("needs_diffusers")
@pytest.mark.parametrize("mode", ["warp", "latent"])
def test_the_regularisers_weigh_the_same_wherever_the_region_appears(mode):
    """The Wan decoder re-decodes every latent frame before the region as causal context, and the edit there does
    nothing: the warp's strain and the latent change are measured on the region's own frames, so the same edit
    costs the same whether the hand is in the first latent frames or the last (it once cost 2/11 as much late,
    in the last 2 of 11 latent frames)."""
    from bgfs_core.fixer import _Problem

    codec = DiffusersWanCodec.from_config(TINY[16], seed=0)
    n = codec.pixel_frames(11)  # 41 frames, 11 latent frames
    # every latent frame alike, so that the two regions' frames differ only in where they are
    z = torch.randn(1, 16, 1, 8, 12, generator=torch.Generator().manual_seed(0)).expand(-1, -1, 11, -1, -1)
    parts = {}
    for name, frames in (("early", range(0, 5)), ("late", range(n - 4, n))):
        det = hand_detections(n, (64, 96), (8.0, 8.0, 36.0, 36.0))
        gone = np.ones(n, bool)
        gone[list(frames)] = False
        det.present[gone], det.keypoints[gone], det.confidence[gone], det.boxes[gone] = False, np.nan, 0, np.nan
        problem = _Problem(z, codec, *random_critic(), det, FixSettings(mode=mode, smooth=0.0), [])
        params = problem.init_params().detach()
        win = problem.window
        assert win.ct0 == 0 and (win.t0 > 5) == (name == "late")  # late: decoded from 0 for 2 core frames
        # the same edit in each core frame
        if mode == "warp":
            params[problem.core :] = 0.1 * torch.randn(params.shape[1:], generator=torch.Generator().manual_seed(1))
        else:
            params[:, :, problem.core :] = 0.1 * torch.randn(1, 16, 1, *params.shape[3:],
                                                             generator=torch.Generator().manual_seed(1))  # fmt: skip
        with torch.no_grad():
            parts[name] = problem.evaluate(params)[1]
    for key in ["warp", "warp_time"] if mode == "warp" else ["latent"]:
        assert parts["late"][key].item() == pytest.approx(parts["early"][key].item(), rel=1e-3), key
    assert parts["late"]["latent"].item() > 0


@pytest.mark.usefixtures("needs_diffusers")
def test_a_gradient_decoder_of_another_latent_space_is_measured_and_warned_of():
    """A proxy whose gradient decoder decodes the latents unlike the judged VAE (here another VAE of the same
    shape, e.g. HunyuanVideo's taehv given for a Wan VAE): the report measures how far apart they are in the ROI,
    the summary says it, and a warning names the decoder; a codec that judges what it optimises reports None."""
    from bgfs_core.codecs import GradientProxyCodec

    codec = DiffusersWanCodec.from_config(TINY[16], seed=0)
    z = torch.randn(1, 16, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    det = hand_detections(codec.pixel_frames(3), (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    other = DiffusersWanCodec.from_config(TINY[16], seed=5)
    settings = dataclasses.replace(SETTINGS, chunk_frames=2)  # measured on the first chunk: 5 frames here
    report = fix_latents(z, GradientProxyCodec(codec, other), critic, spec, det, settings).report
    assert report["decoder_agreement_db"] < 20  # measured 14.7 dB (other seeds 16.5, 17.3)
    (warning,) = [w for w in report["warnings"] if w.startswith("the gradient decoder (Wan 2.1 VAE (diffusers))")]
    assert "dB PSNR in the ROI" in warning and f"Gradient decoder: {report['decoder_agreement_db']:.1f} dB" in report[
        "summary"]
    assert fix_latents(z, codec, critic, spec, det, settings).report["decoder_agreement_db"] is None


@pytest.mark.usefixtures("needs_diffusers")
def test_the_decoder_agreement_compares_the_same_frames_and_pixels():
    """The judged VAE decodes with its own reach (margin, context), the gradient decoder with its: the same weights
    with a wider margin agree inside the ROI to 40 dB (measured), where comparing one frame or one pixel row off
    measured 15 and 20 dB; running out of memory there leaves the measurement out, with a warning, not the fix;
    given the judged VAE's full decode, the whole window is compared with it and nothing is decoded for it."""
    from bgfs_core.codecs import GradientProxyCodec
    from bgfs_core.fix_video import decode_frames

    codec = DiffusersWanCodec.from_config(TINY[16], seed=0)
    wider = DiffusersWanCodec.from_config(TINY[16], seed=0)
    wider.default_margin = codec.default_margin + 4
    z = torch.randn(1, 16, 4, 12, 28, generator=torch.Generator().manual_seed(1))
    det = hand_detections(codec.pixel_frames(4), (96, 224), (40.0, 40.0, 72.0, 72.0))
    det.present[:6], det.boxes[:6] = False, np.nan  # a hand from frame 6: the window starts at latent frame 1
    critic, spec = random_critic()
    settings = dataclasses.replace(SETTINGS, chunk_frames=2)  # measured on the first chunk: frames 1-8
    fed, stream_of = [], codec.grad_stream

    def counted(checkpoint_blocks: bool = False):  # the latent frames the judged VAE decodes, call by call
        stream = stream_of(checkpoint_blocks)
        return lambda lat, state: (fed.append(lat.shape[2]), stream(lat, state))[1]

    codec.grad_stream = counted
    report = fix_latents(z, GradientProxyCodec(codec, wider), critic, spec, det, settings).report
    assert report["window"]["frames"] == [1, 13] and 35 < report["decoder_agreement_db"] < 100
    assert fed == [1, 2], "the causal warm-up (latent frame 0), then the first chunk: not the window's 3 frames"

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    judged = decode_frames(codec, z)  # as `bgfs fix` decodes what it judges
    codec.grad_stream = out_of_memory  # the judged VAE's decode of the window, which only the measurement runs
    result = fix_latents(z, GradientProxyCodec(codec, wider), critic, spec, det, settings)
    assert result.report["changed"] and result.report["decoder_agreement_db"] is None
    assert "was not measured: the VAE ran out of memory decoding the window's first" in result.report["summary"]
    # given the judged full decode (`bgfs fix` has it), the whole window is measured against it, with no decode
    result = fix_latents(z, GradientProxyCodec(codec, wider), critic, spec, det, settings, judged_frames=judged)
    assert 35 < result.report["decoder_agreement_db"] < 100  # measured 42 dB
    assert not any("gradient decoder" in w for w in result.report["warnings"])
    with pytest.raises(BGFSError, match=r"judged_frames are \[12, 96, 224, 3\], but the latents decode to \[13, 96"):
        fix_latents(z, GradientProxyCodec(codec, wider), critic, spec, det, settings, judged_frames=judged[1:])


def test_warp_mode_moves_pixels_with_the_pixel_codec(hand_video_frames):
    codec = PixelCodec()
    frames = torch.from_numpy(hand_video_frames[:5]).permute(0, 3, 1, 2).float() / 255
    latents = codec.encode(frames)
    det = hand_detections(5, frames.shape[-2:], (100.0, 60.0, 200.0, 160.0))
    critic, spec = random_critic()
    result = fix_latents(latents, codec, critic, spec, det, FixSettings(steps=3, lr=0.5, mode="warp", keypoint_conf=0.0))
    diff = (result.latents - latents).abs()[0].amax(0)  # [T, H, W]
    assert diff.max() > 0.01
    assert diff[:, :, :60].max() == 0 and diff[:, :30].max() == 0, "pixels far outside the ROI changed"
    assert "warp" in result.report["history"][-1]


def test_the_objective_falls_over_the_steps(hand_video_frames):
    codec = PixelCodec()
    frames = torch.from_numpy(hand_video_frames[:6]).permute(0, 3, 1, 2).float() / 255
    det = hand_detections(6, frames.shape[-2:], (100.0, 60.0, 200.0, 160.0))
    critic, spec = random_critic()
    result = fix_latents(codec.encode(frames), codec, critic, spec, det,
                         FixSettings(steps=20, lr=0.03, mode="latent", keypoint_conf=0.0, crop_jitter=0.0,
                                     guide=0.0))  # fmt: skip
    assert result.report["critic_after"]["total"] < 0.9 * result.report["critic_before"]["total"]


def test_warp_guide_moves_keypoints_onto_their_cleaned_trajectories(hand_video_frames):
    """The detections jitter (a 0-1-2 pixel sawtooth); the warp's own motion at each keypoint must learn to undo it."""
    codec = PixelCodec()
    frames = torch.from_numpy(hand_video_frames[:9]).permute(0, 3, 1, 2).float() / 255
    det = hand_detections(9, frames.shape[-2:], (100.0, 60.0, 200.0, 160.0))
    critic, spec = random_critic()
    weights = LossWeights(bone=0.0, smooth=0.0, joint=0.0, confidence=0.0)  # the guide alone against fidelity
    settings = FixSettings(steps=40, lr=0.05, mode="warp", crop_jitter=0.0, guide=5.0, weights=weights)
    result = fix_latents(codec.encode(frames), codec, critic, spec, det, settings)
    before, after = result.report["critic_before"]["target"], result.report["critic_after"]["target"]
    assert before > 0.001 and after < 0.2 * before, (before, after)
    none = fix_latents(codec.encode(frames), codec, critic, spec, det, FixSettings(steps=0, guide=5.0))
    assert none.report["critic_before"]["target"] == pytest.approx(before)


@pytest.mark.parametrize("mode", ["latent", "warp"])
def test_an_edit_that_moves_nothing_is_not_called_a_change(hand_video_frames, mode):
    """strength 0 and guide 0 leave only the fidelity terms, whose gradients are zero at the input: the steps run
    and move nothing, so the latents come back as they came (a warp by zero would resample them), the report says
    unchanged (so `bgfs fix` neither re-decodes nor tags the file as fixed) and a warning says why."""
    codec = PixelCodec()
    latents = codec.encode(torch.from_numpy(hand_video_frames[:5]).permute(0, 3, 1, 2).float() / 255)
    det = hand_detections(5, latents.shape[-2:], (100.0, 60.0, 200.0, 160.0))
    settings = FixSettings(steps=2, mode=mode, strength=0.0, guide=0.0)
    result = fix_latents(latents, codec, *random_critic(), det, settings)
    assert result.latents is latents and not result.report["changed"]
    assert any(w.startswith("the edit moved nothing: every gradient was zero (strength is 0 and guide is 0)")
               for w in result.report["warnings"])  # fmt: skip
    moved = fix_latents(latents, codec, *random_critic(), det, dataclasses.replace(settings, strength=1.0))
    assert moved.report["changed"] and not torch.equal(moved.latents, latents)
    # the guide alone on one frame: no motion to mend, and the warning says so, not "guide is 0"
    one = hand_detections(1, latents.shape[-2:], (100.0, 60.0, 200.0, 160.0))
    still = fix_latents(latents[:, :, :1], codec, None, None, one, FixSettings(steps=2, mode="warp", guide=3.0))
    assert not still.report["changed"]
    assert any("(the keypoints already follow steady, well-formed tracks)" in w for w in still.report["warnings"])


def test_the_fix_leaves_the_callers_modules_as_they_were():
    """A critic and a decoder handed over with trainable weights: the fix differentiates the latents alone (no
    weight gradient gathered on every step, which for a Wan VAE is the decoder's size again) and gives the
    weights back trainable."""
    from conftest import lively

    from bgfs_core.codecs import ModuleCodec
    from bgfs_core.codecs.taehv import TAEHVDecoder

    decoder = lively(TAEHVDecoder(16)).eval()
    critic, spec = random_critic()
    critic.requires_grad_(True)
    codec = ModuleCodec(decoder, latent_channels=16, spatial_ratio=8, signed=False, name="tae")
    det = hand_detections(5, (64, 96), (8.0, 8.0, 36.0, 36.0))
    result = fix_latents(torch.randn(1, 16, 2, 8, 12), codec, critic, spec, det, dataclasses.replace(SETTINGS, steps=2))
    assert result.report["changed"]
    for module in (decoder, critic):
        assert all(p.grad is None and p.requires_grad for p in module.parameters())


def test_a_region_found_below_min_conf_says_so():
    codec = PixelCodec()
    det = hand_detections(4, (32, 32), (4.0, 4.0, 28.0, 28.0))
    det.confidence[:] = 0.1
    result = fix_latents(torch.rand(1, 3, 4, 32, 32), codec, *random_critic(), det, SETTINGS)
    assert not result.report["changed"]
    assert "found in 4 of the 4 frames, but no keypoint as sure as min_conf 0.3" in result.report["summary"]


def test_the_report_says_how_well_the_critic_reads_the_frames():
    """An oracle critic, which reads each crop pixel's frame position from the frames themselves, finds every
    keypoint ROI Detect found; an untrained one does not, and the report warns."""

    class OracleCritic(HeatmapCritic):
        def predict_keypoints(self, crops):
            n, _, h, w = crops.shape
            where = torch.stack([crops[:, 0] * 160 - 0.5, crops[:, 1] * 120 - 0.5], -1)  # frame pixel centres
            frame = (crops[:, 2, h // 2, w // 2] * 6).long()  # the frame index, from the blue channel
            truth = torch.from_numpy(det.keypoints[frame.numpy(), 0])  # [n, 21, 2]
            dist = (where.reshape(n, 1, h * w, 2) - truth[:, :, None]).norm(dim=-1)  # [n, 21, h * w]
            at = dist.argmin(-1)
            points = torch.stack([at % w, at // w], -1).float() + 0.5  # crop pixel centres
            return points, torch.ones(n, 21), torch.zeros(n, 21, *self.spec.heatmap_hw)

    ys, xs = torch.meshgrid(torch.arange(120.0), torch.arange(160.0), indexing="ij")
    frames = torch.stack([torch.stack([(xs + 0.5) / 160, (ys + 0.5) / 120, torch.full_like(xs, (t + 0.5) / 6)])
                          for t in range(6)])  # fmt: skip
    det = hand_detections(6, (120, 160), (50.0, 30.0, 110.0, 90.0))
    codec, settings = PixelCodec(), FixSettings(steps=0)
    critic, spec = random_critic()
    oracle = OracleCritic(spec)
    good = fix_latents(codec.encode(frames), codec, oracle, spec, det, settings).report
    assert good["critic_fit"]["keypoints"] == 6 * 21 and good["critic_fit"]["pck"] > 0.95, good["critic_fit"]
    assert not good["warnings"] and "finds 100% of ROI Detect's 126 confident keypoints" in good["summary"]
    bad = fix_latents(codec.encode(frames), codec, critic, spec, det, settings).report
    assert bad["critic_fit"]["pck"] < 0.5
    assert "the critic finds only" in bad["warnings"][0] and "Train a critic on footage like this" in bad["summary"]


def test_without_a_critic_the_guide_alone_moves_the_keypoints(hand_video_frames):
    """No critic: the same sawtooth jitter is undone by the guide alone; latent mode or guide 0 cannot run."""
    codec = PixelCodec()
    frames = torch.from_numpy(hand_video_frames[:9]).permute(0, 3, 1, 2).float() / 255
    det = hand_detections(9, frames.shape[-2:], (100.0, 60.0, 200.0, 160.0))
    settings = FixSettings(steps=40, lr=0.05, mode="warp", crop_jitter=0.0, guide=5.0)
    result = fix_latents(codec.encode(frames), codec, None, None, det, settings)
    before, after = result.report["critic_before"]["target"], result.report["critic_after"]["target"]
    assert before > 0.001 and after < 0.2 * before, (before, after)
    assert result.report["critic_fit"] is None and "No critic: the guide alone" in result.report["summary"]
    diff = (result.latents - codec.encode(frames)).abs()[0].amax(0)
    assert diff.max() > 0.01 and diff[:, :, :60].max() == 0  # the hand moved, nothing far from it did
    assert result.preview["crops"].shape[0] == 9 and "heatmaps" not in result.preview
    critic, spec = random_critic()
    with pytest.raises(BGFSError, match="without a critic only the guide can drive the edit: use mode warp"):
        fix_latents(codec.encode(frames), codec, None, None, det, FixSettings(mode="latent"))
    with pytest.raises(BGFSError, match=r"guide > 0 \(got mode warp, guide 0.0\)"):
        fix_latents(codec.encode(frames), codec, None, None, det, FixSettings(guide=0.0))
    with pytest.raises(BGFSError, match="both the critic and its spec, or neither"):
        fix_latents(codec.encode(frames), codec, critic, None, det, settings)


def test_a_long_video_is_copied_once_whatever_the_steps():
    """Only the window's region goes where the fix computes: the full latents (the Image Fixer's are the frames,
    7.5 GB in float for 10 s of 1080p) are copied once, for the result, not to the device and once per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    codec = PixelCodec()
    latents = torch.rand(1, 3, 40, 64, 96) * 2 - 1
    det = hand_detections(40, (64, 96), (8.0, 8.0, 36.0, 36.0))
    det.present[:10] = det.present[20:] = False
    critic, spec = random_critic()

    class FullSizeCopies(TorchDispatchMode):
        made = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:  # views (detach, slices) share the latents' memory
                self.made += sum(isinstance(t, torch.Tensor) and t.numel() >= latents.numel()
                                 for t in (out if isinstance(out, (tuple, list)) else (out,)))  # fmt: skip
            return out

    results = {}
    for device in (None, "cpu"):
        with FullSizeCopies() as copies:
            results[device] = fix_latents(latents, codec, critic, spec, det,
                                          FixSettings(steps=3, mode="warp", chunk_frames=4), device=device)
        assert copies.made == 1, f"{copies.made} full-size tensors made (device={device})"
    assert torch.equal(results[None].latents, results["cpu"].latents)
    win = results[None].window
    t, h, w = win.decoded_shape
    assert t < 40 and h < 64 and w < 96, "the window should be a part of the video in this case"
    outside = torch.ones(40, 64, 96, dtype=torch.bool)
    outside[win.decoded_slices[2:]] = False
    assert torch.equal(results[None].latents[:, :, outside], latents[:, :, outside])


@pytest.mark.parametrize("codec_name,mode,with_critic",
                         [("pixel", "warp", True), ("pixel", "warp", False), ("pixel", "latent", True),
                          ("wan", "warp", True), ("wan", "latent", True)])  # fmt: skip
def test_no_autograd_graph_outlives_its_step(codec_name, mode, with_critic):
    """Between steps no activations are held for a backward that will never come: the first evaluation (the report's
    "before") and warp mode's latent term are measurements. As graphs they held the critic's activations on every
    crop and a copy of the window through every step (81 frames at 832x480, the default critic, the pixel codec, on
    a CPU: 1.3 GiB of the 3.2 GiB the fix added to the process). The Wan case has the decoder's causal stream,
    which starts after a warm-up from frames before the window."""
    import weakref

    held: set[int] = set()  # the tensors graphs have saved for their backward and still hold

    class Saved:
        def __init__(self, tensor: torch.Tensor):
            self.tensor = tensor
            held.add(id(self))
            weakref.finalize(self, held.discard, id(self))

    if codec_name == "wan":
        require_diffusers()
        codec = DiffusersWanCodec.from_config(TINY[16], seed=0)
        latents = torch.randn(1, 16, 4, 8, 12, generator=torch.Generator().manual_seed(1))
        det = hand_detections(codec.pixel_frames(4), (64, 96), (8.0, 8.0, 36.0, 36.0))
        det.present[:6] = False  # the ROI starts after the first latent frames: the stream warms up first
    else:
        codec, latents = PixelCodec(), torch.rand(1, 3, 8, 64, 96) * 2 - 1
        det = hand_detections(8, (64, 96), (8.0, 8.0, 36.0, 36.0))
    counts = []
    critic, spec = random_critic() if with_critic else (None, None)
    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
        result = fix_latents(latents, codec, critic, spec, det, FixSettings(steps=3, mode=mode, chunk_frames=1),
                             on_step=lambda *_: counts.append(len(held)))  # fmt: skip
    assert result.report["changed"] and len(counts) == 3
    if codec_name == "wan":
        assert result.report["window"]["latent_t"][0] > 0, "the case should warm the stream up"
    assert counts == [0, 0, 0], f"saved tensors still held after each step: {counts}"


def test_a_half_precision_decoder_keeps_its_small_gradients():
    """Through an fp16 gradient decoder (ComfyUI's Wan VAE on a GPU without bf16) the fix follows the fp32 one:
    the fidelity term is a mean over the window's pixels, and its gradient, unscaled, falls below fp16's range.
    Measured here: 0.21% off the fp32 edit unscaled, 0.01% with `GRAD_SCALE`."""
    from test_nodes_glue import _comfy_like_vae, _TinyWanDecoder

    from bgfs_core.codecs import ModuleCodec

    torch.manual_seed(1)
    decoder = _TinyWanDecoder()
    half = _TinyWanDecoder().half()
    half.load_state_dict({k: v.half() for k, v in decoder.state_dict().items()})
    latents = torch.randn(1, 16, 6, 40, 60)
    det = hand_detections(21, (320, 480), (40.0, 40.0, 440.0, 300.0))
    settings = FixSettings(steps=6, mode="warp", chunk_frames=2, crop_jitter=0.0)  # the guide alone
    edits = [fix_latents(latents, ModuleCodec.from_comfy_vae(_comfy_like_vae(m)), None, None, det, settings).latents
             - latents for m in (decoder, half)]  # fmt: skip
    assert float((edits[1] - edits[0]).norm() / edits[0].norm()) < 0.001


class _HalfRange(torch.autograd.Function):
    """The identity, whose backward overflows past ``LIMIT`` as fp16 does past 65504."""

    LIMIT = 10.0
    seen: list = []

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        _HalfRange.seen.append(float(g.abs().max()))
        return torch.where(g.abs() > _HalfRange.LIMIT, torch.full_like(g, float("inf")), g)


def test_a_step_whose_scaled_gradient_overflows_is_taken_unscaled():
    """`GRAD_SCALE` must not cost a step: where the scaled gradient overflows a half-precision decoder's range, the
    step is taken again unscaled and the scale shrinks, so the fix is the one without any overflow, bit for bit,
    and no step is reported as non-finite."""
    from test_nodes_glue import _comfy_like_vae, _TinyWanDecoder

    from bgfs_core.codecs import ModuleCodec

    class Overflowing(_TinyWanDecoder):
        def decode(self, z):
            return super().decode(_HalfRange.apply(z))

    _HalfRange.seen.clear()  # the class keeps what it saw: a test run twice in one process starts afresh
    torch.manual_seed(1)
    plain = _TinyWanDecoder()
    overflowing = Overflowing()
    overflowing.load_state_dict(plain.state_dict())
    latents = torch.randn(1, 16, 2, 9, 12)
    det = hand_detections(5, (72, 96), (8.0, 8.0, 60.0, 60.0))
    critic, spec = random_critic()
    settings = FixSettings(steps=4, lr=0.05, mode="latent", keypoint_conf=0.0, chunk_frames=1, crop_jitter=0.0)
    results = [fix_latents(latents, ModuleCodec.from_comfy_vae(_comfy_like_vae(m)), critic, spec, det, settings)
               for m in (plain, overflowing)]  # fmt: skip
    seen = _HalfRange.seen  # the largest gradient of each backward pass through the overflowing decoder
    assert len(seen) > settings.steps and max(seen) > _HalfRange.LIMIT, "some scaled steps overflowed"
    assert torch.equal(results[1].latents, results[0].latents)
    assert not any("non-finite" in w for w in results[1].report["warnings"])


def test_nothing_detected_is_a_clean_pass_through():
    codec = PixelCodec()
    latents = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    critic, spec = random_critic()
    result = fix_latents(latents, codec, critic, spec, Detections.empty("hands", 4, (32, 32)), SETTINGS)
    assert result.latents is latents and not result.report["changed"]
    assert "not detected" in result.report["summary"]


def test_bad_input_errors():
    codec = PixelCodec()
    latents = torch.rand(1, 3, 4, 32, 32)
    critic, spec = random_critic()
    with pytest.raises(BGFSError, match="trained for 'hands' but the ROI is 'face'"):
        fix_latents(latents, codec, critic, spec, Detections.empty("face", 4, (32, 32)), SETTINGS)
    with pytest.raises(BGFSError, match="covers 5 frames but the latents decode to 4 frames"):
        fix_latents(latents, codec, critic, spec, Detections.empty("hands", 5, (32, 32)), SETTINGS)
    with pytest.raises(BGFSError, match="another aspect ratio"):
        fix_latents(latents, codec, critic, spec, Detections.empty("hands", 4, (32, 64)), SETTINGS)
    with pytest.raises(BGFSError, match="mode must be one of latent, warp"):
        fix_latents(latents, codec, critic, spec, Detections.empty("hands", 4, (32, 32)), FixSettings(mode="paint"))
    with pytest.raises(BGFSError, match="lr_decay must be one of none, cosine"):
        fix_latents(latents, codec, critic, spec, Detections.empty("hands", 4, (32, 32)), FixSettings(lr_decay="step"))
    with pytest.raises(BGFSError, match="expects 3|channels"):
        fix_latents(torch.rand(1, 16, 2, 4, 4), codec, critic, spec, Detections.empty("hands", 2, (32, 32)), SETTINGS)


def test_rois_from_frames_of_another_size_are_rescaled_with_a_warning():
    codec = PixelCodec()
    latents = torch.rand(1, 3, 4, 64, 64) * 2 - 1
    det = hand_detections(4, (32, 32), (4.0, 4.0, 20.0, 20.0))
    critic, spec = random_critic()
    result = fix_latents(latents, codec, critic, spec, det, SETTINGS)
    assert any("rescaled" in w for w in result.report["warnings"])
    assert result.report["window"]["latent_x"][1] <= 48  # the box was scaled x2, not left at 20 px


def test_cancel_propagates_and_leaves_the_input_untouched():
    codec = PixelCodec()
    latents = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    original = latents.clone()
    det = hand_detections(4, (32, 32), (4.0, 4.0, 20.0, 20.0))
    critic, spec = random_critic()

    class UserCancelError(Exception):
        pass

    def on_step(step, total, losses, crop):
        assert crop is not None and crop.dtype == np.uint8 and crop.shape[-1] == 3
        if step == 2:
            raise UserCancelError

    with pytest.raises(UserCancelError):
        fix_latents(latents, codec, critic, spec, det, FixSettings(steps=10, keypoint_conf=0.0), on_step=on_step)
    assert torch.equal(latents, original)


def test_slots_that_swap_labels_are_followed_by_position_with_a_warning():
    codec = PixelCodec()
    latents = torch.rand(1, 3, 4, 64, 96) * 2 - 1
    det = hand_detections(4, (64, 96), (4.0, 4.0, 28.0, 28.0))
    other = hand_detections(4, (64, 96), (60.0, 30.0, 84.0, 54.0))
    for arr, src in ((det.keypoints, other.keypoints), (det.confidence, other.confidence),
                     (det.present, other.present), (det.boxes, other.boxes), (det.scores, other.scores)):
        arr[:, 1] = src[:, 0]
        arr[2] = arr[2, ::-1].copy()  # frame 2: the labels flip
    critic, spec = random_critic()
    result = fix_latents(latents, codec, critic, spec, det, FixSettings(steps=1, mode="warp", chunk_frames=1))
    assert any("changed places in 1 of 4 frames" in w for w in result.report["warnings"])
    assert "changed places" in result.report["summary"]


@pytest.mark.parametrize("channels", [16, 48])
@pytest.mark.usefixtures("needs_diffusers")
def test_keep_first_frame_leaves_the_first_decoded_frame_bit_for_bit(channels):
    """An I2V start image (or the frame a chained clip continues from): the causal Wan VAE decodes the first frame
    from the first latent frame alone, so keeping that latent frame keeps the frame exactly; the rest is fixed."""
    codec = DiffusersWanCodec.from_config(TINY[channels], seed=0)
    s = codec.spatial_ratio
    torch.manual_seed(1)
    latents = torch.randn(1, channels, 3, 64 // s, 96 // s)
    det = hand_detections(codec.pixel_frames(3), (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    with torch.no_grad():
        before = codec.decode(latents)
    for keep in (False, True):
        result = fix_latents(latents, codec, critic, spec, det, dataclasses.replace(SETTINGS, keep_first_frame=keep))
        with torch.no_grad():
            after = codec.decode(result.latents)
        frame_moved = (after != before).flatten(1).any(1).tolist()
        latent_moved = (result.latents != latents).flatten(3).any(-1)[0].any(0).tolist()
        assert frame_moved[0] is not keep and latent_moved[0] is not keep, (keep, frame_moved, latent_moved)
        assert all(frame_moved[1:]) and all(latent_moved[1:]), (keep, frame_moved, latent_moved)
    assert "the first frame kept as it is" in result.report["summary"]
    assert result.report["window"]["latent_t"] == [1, 3] and result.report["settings"]["keep_first_frame"]


def test_keep_first_frame_with_the_region_only_there_says_so():
    codec = PixelCodec()
    latents = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    det = hand_detections(4, (32, 32), (4.0, 4.0, 28.0, 28.0))
    det.present[1:] = False
    det.keypoints[1:] = np.nan
    settings = FixSettings(steps=2, keep_first_frame=True)
    result = fix_latents(latents, codec, None, None, det, settings)
    assert result.latents is latents and not result.report["changed"]
    assert "found only in the first frame, which keep_first_frame keeps" in result.report["summary"]
    assert fix_latents(latents, codec, None, None, det, FixSettings(steps=2)).report["window"]["latent_t"][0] == 0
