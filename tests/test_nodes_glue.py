"""The nodes' host-free glue (nodes/glue.py) on real frames and real torch modules, without ComfyUI.

The pack is imported the way ComfyUI imports it: its root folder as a package under another name, so the nodes'
relative imports (``from ..bgfs_core ...``) resolve inside the pack.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import fix_reach

ROOT = Path(__file__).resolve().parents[1]
PACK = "bgfs_pack_under_test"


def _load_pack():
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


_load_pack()
glue = importlib.import_module(f"{PACK}.nodes.glue")
BGFSError = importlib.import_module(f"{PACK}.bgfs_core.errors").BGFSError
OutOfMemoryError = importlib.import_module(f"{PACK}.bgfs_core.errors").OutOfMemoryError


@pytest.fixture(scope="module")
def hand_frames(hand_video_frames: np.ndarray) -> np.ndarray:
    return hand_video_frames[:9]


@pytest.fixture(scope="module")
def hand_roi(hand_frames: np.ndarray):
    detect_video = importlib.import_module(f"{PACK}.bgfs_core.detection").detect_video
    det = detect_video(hand_frames, "hands", fps=10.0)
    assert det.present[:, 0].all(), "MediaPipe finds the hand in every frame of the sample"
    return glue.RoiData(det, margin=0.25, min_conf=0.3, smooth=0.6)


# --- importing -----------------------------------------------------------------------------------------------------


def test_importing_the_pack_and_its_glue_is_light():
    code = (
        "import importlib, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('p', {str(ROOT / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['p'] = m; spec.loader.exec_module(m)\n"
        "import p.nodes, p.nodes.glue\n"
        "assert callable(m.comfy_entrypoint) and not hasattr(m, 'NODE_CLASS_MAPPINGS')\n"
        "heavy = [k for k in ('torch', 'mediapipe', 'cv2', 'av', 'matplotlib', 'comfy', 'comfy_api') if k in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, f"importing the pack pulled in heavy modules or failed: {out.stdout}{out.stderr}"


def test_the_extension_is_resolved_lazily():
    nodes = importlib.import_module(f"{PACK}.nodes")
    assert "BGFSExtension" in nodes.__all__
    with pytest.raises(AttributeError):
        nodes.NotAThing  # noqa: B018


# --- layouts ---------------------------------------------------------------------------------------------------------


def test_image_round_trip_is_exact_on_real_frames(hand_frames):
    image = glue.uint8_to_image(hand_frames)
    assert image.shape == (9, 240, 320, 3) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    np.testing.assert_array_equal(glue.image_to_uint8(image), hand_frames)


def test_image_to_uint8_drops_alpha_and_rejects_bad_batches(hand_frames):
    rgba = torch.cat([glue.uint8_to_image(hand_frames), torch.rand(9, 240, 320, 1)], -1)
    np.testing.assert_array_equal(glue.image_to_uint8(rgba), hand_frames)
    with pytest.raises(BGFSError, match=r"IMAGE batch \[frames, height, width, 3\]"):
        glue.image_to_uint8(torch.rand(240, 320, 3))
    with pytest.raises(BGFSError, match="no frames"):
        glue.image_to_uint8(torch.rand(0, 8, 8, 3))
    with pytest.raises(BGFSError, match="uint8"):
        glue.uint8_to_image(hand_frames.astype(np.float32))


def test_latent_checks_name_the_problem():
    with pytest.raises(BGFSError, match="not a ComfyUI LATENT"):
        glue.latent_samples(torch.zeros(1, 16, 3, 4, 4))
    with pytest.raises(BGFSError, match="4-dimensional .* video latent"):
        glue.latent_samples({"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(BGFSError, match="batch of 2 videos"):
        glue.latent_samples({"samples": torch.zeros(2, 16, 3, 4, 4)})
    bad = torch.zeros(1, 16, 3, 4, 4)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(BGFSError, match="NaN"):
        glue.latent_samples({"samples": bad})


def test_replace_samples_keeps_every_other_latent_key():
    mask = torch.ones(1, 1, 3, 4, 4)
    latent = {"samples": torch.zeros(1, 16, 3, 4, 4), "noise_mask": mask, "batch_index": [0]}
    new = torch.ones(1, 16, 3, 4, 4)
    out = glue.replace_samples(latent, new)
    assert out["samples"] is new and out["noise_mask"] is mask and out["batch_index"] == [0]
    assert latent["samples"].sum() == 0, "the input LATENT must not be modified"


# --- errors ------------------------------------------------------------------------------------------------------------


class _CancelError(Exception):
    """Stands in for ComfyUI's InterruptProcessingException (an Exception subclass)."""


def test_node_errors_prefix_user_errors_once_and_let_everything_else_through():
    with pytest.raises(BGFSError) as info, glue.node_errors("BGFS Latent Anatomy Fixer"):
        raise BGFSError("latents have 48 channels, but this VAE expects 16")
    assert str(info.value) == "BGFS Latent Anatomy Fixer: latents have 48 channels, but this VAE expects 16"
    with pytest.raises(BGFSError) as info, glue.node_errors("BGFS ROI Detect"):
        raise BGFSError("BGFS ROI Detect: already prefixed")
    assert str(info.value).count("BGFS ROI Detect:") == 1
    with pytest.raises(_CancelError), glue.node_errors("BGFS Latent Anatomy Fixer"):
        raise _CancelError()  # a cancel must never turn into a user error
    with pytest.raises(KeyError), glue.node_errors("BGFS ROI Detect"):
        raise KeyError("a bug stays a bug")


def test_names_typed_on_nodes_cannot_leave_their_folder():
    assert glue.check_name("hands_v1", "critic_name") == "hands_v1"
    assert glue.check_name(" hands.v2.safetensors ", "critic_name") == "hands.v2"
    for bad in ("", "../evil", "a/b", "/abs", "..", "x" * 101, "sp ace"):
        with pytest.raises(BGFSError, match="letters, digits"):
            glue.check_name(bad, "cache name")


def test_reports_are_strict_json_with_the_summary_first():
    report = {"changed": True, "summary": "done", "loss": float("nan"), "arr": np.arange(3, dtype=np.float32),
              "n": np.int64(4), "nested": {"inf": float("inf"), "t": (1.5, np.float32(2.0))}}
    text = glue.dumps_report(report)

    def reject(name):
        raise ValueError(name)

    parsed = json.loads(text, parse_constant=reject)  # NaN / Infinity would raise
    assert list(parsed)[0] == "summary"
    assert parsed["loss"] is None and parsed["nested"]["inf"] is None
    assert parsed["arr"] == [0.0, 1.0, 2.0] and parsed["n"] == 4 and parsed["nested"]["t"] == [1.5, 2.0]


def test_merge_ui_concatenates_lists():
    assert glue.merge_ui(None, {}) is None
    merged = glue.merge_ui({"text": ["a"]}, None, {"text": ["b"], "bgfs_preview": [{"n": 1}]})
    assert merged == {"text": ["a", "b"], "bgfs_preview": [{"n": 1}]}


# --- ROI outputs on real detections ---------------------------------------------------------------------------------


def test_roi_mask_covers_every_detected_keypoint_and_nothing_when_absent(hand_frames, hand_roi):
    mask = glue.roi_mask_frames(hand_roi)
    assert mask.shape == (9, 240, 320) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    det = hand_roi.detections
    kp = det.keypoints[:, 0]
    ok = det.confidence[:, 0] >= hand_roi.min_conf
    t = np.repeat(np.arange(9)[:, None], kp.shape[1], 1)
    xs = np.clip(kp[..., 0].astype(int), 0, 319)
    ys = np.clip(kp[..., 1].astype(int), 0, 239)
    assert (mask[t[ok], ys[ok], xs[ok]] == 1.0).all()
    area = mask.mean((1, 2))
    assert ((area > 0.02) & (area < 0.6)).all(), f"the ROI is a hand-sized part of each frame, got {area}"
    empty = glue.RoiData(type(det).empty("hands", 9, (240, 320)))
    assert glue.roi_mask_frames(empty).max() == 0.0
    assert glue.mask_to_tensor(mask).shape == (9, 240, 320)


def test_roi_crops_hold_the_keypoints_and_heatmaps_peak_on_them(hand_frames, hand_roi):
    crops, kp, conf = glue.roi_crops(hand_frames, hand_roi, size=128)
    assert crops.shape == (9, 128, 128, 3) and crops.dtype == np.uint8
    assert kp.shape == (9, 21, 2) and conf.shape == (9, 21)
    good = conf >= 0.3
    assert good.any() and ((kp[good] >= 0) & (kp[good] < 128)).all()
    assert crops.std() > 20, "real hand crops, not blank"
    heat = glue.keypoint_heatmaps(kp, conf, 128, heatmap_size=64, sigma=2.0, min_conf=0.3)
    assert heat.shape == (9, 21, 64, 64)
    n, k = np.argwhere(good)[0]
    peak = np.unravel_index(heat[n, k].argmax(), (64, 64))
    np.testing.assert_allclose([peak[1] + 0.5, peak[0] + 0.5], kp[n, k] / 2, atol=1.0)
    empty = glue.RoiData(type(hand_roi.detections).empty("hands", 9, (240, 320)))
    assert glue.roi_crops(hand_frames, empty)[0].shape == (0, 128, 128, 3)
    # the preview slider's names, one per crop in the same (frame, hand) order
    boxes = glue.roi_boxes(hand_roi)
    pairs = np.argwhere(np.isfinite(boxes).all(-1) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1]))
    labels = glue.crop_labels(hand_roi.detections, boxes)
    assert labels == [f"{t + 1}/9 {('left', 'right')[i]}" for t, i in pairs] and len(labels) == len(crops)
    assert glue.crop_labels(empty.detections, glue.roi_boxes(empty)) == []
    # ROI Detect names followed tracks (tracks.labelled_tracks): the names given replace the slot labels
    named = glue.crop_labels(hand_roi.detections, boxes, ["left", "left_2"])
    assert named == [f"{t + 1}/9 {('left', 'left_2')[i]}" for t, i in pairs]


def test_the_fixer_preview_names_hands_as_roi_detect_did(hand_roi, monkeypatch):
    """The Fixer's preview takes ROI Detect's track names from the ROI; naming the already-followed slots again
    (the old code) called a track that MediaPipe mostly labelled "right" by its slot's label, "left"."""
    fix_shared = importlib.import_module(f"{PACK}.nodes.fix_shared")
    seen = {}
    monkeypatch.setattr(glue, "preview_ui", lambda *a, **kw: seen.update(kw) or None)
    roi = glue.RoiData(hand_roi.detections, track_names=["right", "left"])
    assert roi.names == ["right", "left"] and hand_roi.names == ["left", "right"]
    preview = {"crops": np.zeros((2, 8, 8, 3), np.uint8), "crop_frames": [3, 4], "crop_instances": [0, 1]}
    result = SimpleNamespace(preview=preview, report={"summary": "fixed"})
    ui = fix_shared.fix_ui(result, roi)
    assert seen["labels"] == ["4/9 right", "5/9 left"] and ui == {"text": ["fixed"]}


def test_overlay_draws_on_the_hand_only(hand_frames, hand_roi):
    boxes = glue.roi_boxes(hand_roi)
    out = glue.draw_overlay(hand_frames, hand_roi.detections, boxes, min_conf=0.3)
    assert out.shape == hand_frames.shape and out.dtype == np.uint8
    changed = (out != hand_frames).any(-1)
    assert changed.mean() > 0.002
    near = _dilate(glue.roi_mask_frames(hand_roi) > 0, 4)
    assert not (changed & ~near).any(), "drawing stays on the ROI box and the keypoints inside it"
    assert changed[near].mean() > 0.02


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Grow a boolean [T, H, W] mask by ``r`` pixels (square neighbourhood)."""
    h, w = mask.shape[1:]
    padded = np.pad(mask, ((0, 0), (r, r), (r, r)))
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[:, dy : dy + h, dx : dx + w]
    return out


def test_roi_detect_says_where_a_cut_is():
    from test_cuts import hand_track, two_shots

    assert glue.cuts_text(two_shots(), 0.3) == ("; a cut at frame 13 of 24 (the hands moved to another place at once "
                                                "and stayed so: another shot, or another hand): boxes, fixes and "
                                                "scores treat each side alone")  # fmt: skip
    steady = hand_track(np.stack([np.arange(24.0), np.zeros(24)], -1) + 200, np.ones(24))
    assert glue.cuts_text(steady, 0.3) == ""


def test_progress_preview_is_what_comfyui_sends(hand_frames):
    fmt, image, size = glue.progress_preview(hand_frames[0][:64, :64])
    assert fmt == "JPEG" and image.size == (64, 64) and size == 512
    assert glue.progress_preview(None) is None
    plot = glue.loss_plot([1.0, 0.5, 0.25, float("nan")])
    assert plot.size == (320, 160) and np.asarray(plot).std() > 0


# --- the fixer glue under ComfyUI's inference mode -------------------------------------------------------------------


class _TinyWanDecoder(torch.nn.Module):
    """A real (small) decoder with the Wan 2.1 geometry: 16 channels, 8x spatial, 1 + 4(t - 1) frames, [-1, 1]."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.proj = torch.nn.Conv3d(channels, 3 * 64, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.proj(z)
        b, _, t, h, w = x.shape
        x = x.view(b, 3, 8, 8, t, h, w).permute(0, 1, 4, 5, 2, 6, 3).reshape(b, 3, t, h * 8, w * 8)
        return torch.tanh(torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], 2))


def _comfy_like_vae(module: torch.nn.Module, channels: int = 16) -> SimpleNamespace:
    """What the fixer reads from a comfy.sd.VAE (the attributes ModuleCodec.from_comfy_vae duck-types)."""
    return SimpleNamespace(first_stage_model=module, latent_channels=channels,
                           upscale_ratio=(lambda a: max(0, a * 4 - 3), 8, 8),
                           process_output=lambda x: ((x + 1.0) / 2.0).clamp(0.0, 1.0))  # fmt: skip


@pytest.fixture(scope="module")
def small_roi(hand_video_frames):
    """Real detections on 5 real frames at 96x72, the size 2 x 9 x 12 latents decode to."""
    from PIL import Image

    frames = np.stack([np.asarray(Image.fromarray(f).resize((96, 72), Image.Resampling.BOX)) for f in hand_video_frames[:5]])
    detect_video = importlib.import_module(f"{PACK}.bgfs_core.detection").detect_video
    det = detect_video(frames, "hands", fps=10.0)
    assert det.present[:, 0].all()
    return glue.RoiData(det)


@pytest.fixture(scope="module")
def tiny_critic():
    critic_mod = importlib.import_module(f"{PACK}.bgfs_core.critic")
    spec = critic_mod.CriticSpec.for_region("hands", input_hw=(32, 32), heatmap_hw=(16, 16), width=8)
    with torch.inference_mode():  # as the loader would make it if it forgot inference_mode(False)
        torch.manual_seed(0)
        model = critic_mod.HeatmapCritic(spec).eval()
    return glue.CriticData(model, spec, {}, "tiny")


def _settings(**kw):
    return importlib.import_module(f"{PACK}.bgfs_core.fixer").FixSettings(**{"steps": 2, **kw})


@pytest.mark.parametrize("with_critic", [True, False], ids=["critic", "guide-only"])
def test_run_fix_backpropagates_under_inference_mode_and_keeps_latent_keys(small_roi, tiny_critic, with_critic):
    critic = tiny_critic if with_critic else None  # the Fixer node's critic input is optional
    with torch.inference_mode():  # what ComfyUI's executor does around every node
        torch.manual_seed(1)
        decoder = _TinyWanDecoder()
        vae = _comfy_like_vae(decoder)
        samples = torch.randn(1, 16, 2, 9, 12)
        noise_mask = torch.ones(1, 1, 2, 9, 12)
        latent = {"samples": samples, "noise_mask": noise_mask, "batch_index": [0]}
        weights = decoder.proj.weight.clone()
        steps: list[int] = []
        out, result = glue.run_fix(latent, vae, critic, small_roi, _settings(),
                                   on_step=lambda step, total, losses, crop: steps.append(step))  # fmt: skip
    assert steps == [1, 2]
    assert out["noise_mask"] is noise_mask and out["batch_index"] == [0] and latent["samples"] is samples
    new = out["samples"]
    assert new.shape == samples.shape and new.dtype == samples.dtype
    win = result.report["window"]
    core = (slice(None), slice(None), slice(*win["latent_t"]), slice(*win["latent_y"]), slice(*win["latent_x"]))
    assert (new[core] - samples[core]).abs().max() > 0, "the latents changed inside the ROI window"
    outside = torch.from_numpy(~fix_reach(win, (2, 9, 12)))
    assert outside.any() and torch.equal(new[:, :, outside], samples[:, :, outside]), "outside: bit for bit"
    assert torch.equal(decoder.proj.weight, weights) and not decoder._forward_pre_hooks, "ComfyUI's model untouched"
    assert result.report["summary"].startswith("BGFS fix (hands")
    assert ("Critic fit:" if with_critic else "No critic: the guide alone") in result.report["summary"]


@pytest.mark.parametrize("channels", [3, 4, 1], ids=["rgb", "rgba", "grey"])
def test_run_fix_frames_edits_real_frames_in_pixel_space_and_keeps_the_rest_bit_for_bit(small_roi, tiny_critic,
                                                                                         hand_video_frames, channels):
    """The Image Anatomy Fixer's fix: the frames are the latents (pixel codec). Under ComfyUI's inference mode, on
    5 real frames at 96x72: pixels inside the window move, every other pixel is the input's float value exactly,
    and the result is an RGB IMAGE on the CPU whatever the input's channels."""
    from PIL import Image

    frames = np.stack([np.asarray(Image.fromarray(f).resize((96, 72), Image.Resampling.BOX))
                       for f in hand_video_frames[:5]])  # fmt: skip
    images = glue.uint8_to_image(frames)
    if channels == 4:
        images = torch.cat([images, torch.full_like(images[..., :1], 0.5)], -1)
    elif channels == 1:
        images = images.mean(-1, keepdim=True)
    steps: list[int] = []
    with torch.inference_mode():
        out, result = glue.run_fix_frames(images, tiny_critic, small_roi, _settings(steps=3),
                                          on_step=lambda step, total, losses, crop: steps.append(step))  # fmt: skip
    assert steps == [1, 2, 3] and result.report["codec"] == "pixel codec" and result.report["changed"]
    assert out.shape == (5, 72, 96, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    source = images[..., :3].expand(5, 72, 96, 3)
    changed = (out != source).any(-1)
    assert changed.any(), "the fix moved pixels inside the ROI"
    outside = torch.from_numpy(~fix_reach(result.report["window"], (5, 72, 96)))
    assert outside.any() and not changed[outside].any(), "outside the window: the input, bit for bit"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_no_steps_pass_frames_and_latents_through_exactly(small_roi, tiny_critic):
    """steps 0 only reports (e.g. how well a critic reads the video): the output is the input, bit for bit, though
    a warp by zero would resample the window at float-noise level."""
    with torch.inference_mode():
        images = torch.rand(5, 72, 96, 3)
        out, result = glue.run_fix_frames(images, tiny_critic, small_roi, _settings(steps=0))
        assert torch.equal(out, images) and result.report["changed"] is False
        torch.manual_seed(2)
        samples = torch.randn(1, 16, 2, 9, 12)
        latent, _ = glue.run_fix({"samples": samples}, _comfy_like_vae(_TinyWanDecoder()), tiny_critic, small_roi,
                                 _settings(steps=0))  # fmt: skip
        assert torch.equal(latent["samples"], samples)


def test_run_fix_frames_refuses_frames_the_roi_was_not_found_on(small_roi):
    with pytest.raises(BGFSError, match="the ROI was found on 5 frames of 96x72 but the images are 4 of 96x72: run "
                       "ROI Detect on these images"):  # fmt: skip
        glue.run_fix_frames(torch.rand(4, 72, 96, 3), None, small_roi, _settings())
    with pytest.raises(BGFSError, match="images are 5 of 72x72"):  # another aspect ratio
        glue.run_fix_frames(torch.rand(5, 72, 72, 3), None, small_roi, _settings())
    _, result = glue.run_fix_frames(torch.rand(5, 144, 192, 3), None, small_roi, _settings(steps=1))
    assert any("ROI boxes were rescaled" in w for w in result.report["warnings"])  # the same shape, larger
    with pytest.raises(BGFSError, match="IMAGE batch"):
        glue.run_fix_frames(torch.rand(5, 72, 96), None, small_roi, _settings())


def test_run_fix_cancel_propagates_unchanged_and_stops_within_a_step(small_roi, tiny_critic):
    calls = {"n": 0}

    def check_cancel() -> None:
        calls["n"] += 1
        if calls["n"] > 40:
            raise _CancelError()

    with torch.inference_mode():
        vae = _comfy_like_vae(_TinyWanDecoder())
        latent = {"samples": torch.randn(1, 16, 2, 9, 12)}
        before = latent["samples"].clone()
        steps: list[int] = []
        with pytest.raises(_CancelError):
            glue.run_fix(latent, vae, tiny_critic, small_roi, _settings(steps=1000),
                         on_step=lambda step, *_: steps.append(step), check_cancel=check_cancel)  # fmt: skip
    assert len(steps) < 10, "the layer hooks stop the run long before the 1000 steps"
    assert torch.equal(latent["samples"], before)
    assert not vae.first_stage_model._forward_pre_hooks


def _oom_after(layers: int, times: int):
    """A cancel check that makes the device run out of memory at the ``layers``-th layer, ``times`` times over."""
    calls = {"n": 0, "raised": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] % layers == 0 and calls["raised"] < times:
            calls["raised"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return check


def test_run_fix_out_of_memory_frees_the_host_once_and_starts_again(small_roi, tiny_critic):
    with torch.inference_mode():
        torch.manual_seed(2)
        vae = _comfy_like_vae(_TinyWanDecoder())
        latent = {"samples": torch.randn(1, 16, 2, 9, 12)}
        before = latent["samples"].clone()
        clean, _ = glue.run_fix(latent, vae, tiny_critic, small_roi, _settings())
        freed: list[int] = []
        # the first attempt fails in its first step; the host frees memory; the second attempt is the whole fix
        out, result = glue.run_fix(latent, vae, tiny_critic, small_roi, _settings(), check_cancel=_oom_after(30, 1),
                                   free_memory=lambda: freed.append(1))  # fmt: skip
        assert freed == [1]
        assert torch.equal(out["samples"], clean["samples"]), "the retry is the same fix as a run that never failed"
        # out of memory again after freeing: a clear error, the input untouched
        with pytest.raises(OutOfMemoryError) as err:
            glue.run_fix(latent, vae, tiny_critic, small_roi, _settings(), check_cancel=_oom_after(30, 2),
                         free_memory=lambda: freed.append(2))  # fmt: skip
        assert freed == [1, 2] and torch.equal(latent["samples"], before)
        text = str(err.value)
        assert text.startswith("out of memory on cpu decoding") and "CUDA out of memory" in text
        assert "a window of" in text and "even with the other models unloaded" in text and "to gradient_vae" in text
        assert text.count("Tiny AutoEncoder") == 1, "one piece of advice, in the node's terms"
        assert "lighttaew2_1.safetensors" in text, "the tiny decoder made for a 16-channel (Wan 2.1 VAE) latent"
        # a host that cannot free anything gets the error at once
        with pytest.raises(OutOfMemoryError, match="gradient_vae"):
            glue.run_fix(latent, vae, tiny_critic, small_roi, _settings(), check_cancel=_oom_after(30, 1))
        # a 48-channel latent is the Wan 2.2 VAE's: its tiny decoder is another file
        vae48 = _comfy_like_vae(_TinyWanDecoder(48), channels=48)
        with pytest.raises(OutOfMemoryError, match=r"lighttaew2_2\.safetensors through Load VAE"):
            glue.run_fix({"samples": torch.randn(1, 48, 2, 9, 12)}, vae48, tiny_critic, small_roi, _settings(),
                         check_cancel=_oom_after(30, 1))  # fmt: skip
        assert BGFSError in OutOfMemoryError.__mro__, "the nodes' error wrapper names the node for it"


def test_run_fix_refuses_latents_of_another_vae(small_roi, tiny_critic):
    with torch.inference_mode():
        vae = _comfy_like_vae(_TinyWanDecoder())
        with pytest.raises(BGFSError, match="48 channels, but this VAE expects 16"):
            glue.run_fix({"samples": torch.randn(1, 48, 2, 9, 12)}, vae, tiny_critic, small_roi, _settings())
        with pytest.raises(BGFSError, match="BGFS ROI Detect"):
            glue.run_fix({"samples": torch.randn(1, 16, 2, 9, 12)}, vae, tiny_critic, "not an roi", _settings())


def test_run_fix_rescales_an_roi_from_larger_frames_and_says_so(small_roi, tiny_critic):
    det = small_roi.detections
    big = type(det)(det.region, det.keypoints * 2, det.confidence, det.present, det.boxes * 2, det.scores, (144, 192))
    with torch.inference_mode():
        vae = _comfy_like_vae(_TinyWanDecoder())
        _, result = glue.run_fix({"samples": torch.randn(1, 16, 2, 9, 12)}, vae, tiny_critic, glue.RoiData(big),
                                 _settings(steps=1))  # fmt: skip
        assert any("192x144" in w and "96x72" in w for w in result.report["warnings"])
        wide = type(det)(det.region, det.keypoints, det.confidence, det.present, det.boxes, det.scores, (72, 200))
        with pytest.raises(BGFSError, match="another aspect ratio"):
            glue.run_fix({"samples": torch.randn(1, 16, 2, 9, 12)}, vae, tiny_critic, glue.RoiData(wide), _settings())


def test_cancel_checks_reach_every_layer_and_go_away():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    seen: list[int] = []

    def check() -> None:
        seen.append(1)
        if len(seen) == 3:
            raise _CancelError()

    with pytest.raises(_CancelError), glue.cancel_checks(check):
        net(torch.randn(2, 3))  # Sequential, Linear, ReLU: the third layer's check cancels
    assert len(seen) == 3
    net(torch.randn(2, 3))
    assert len(seen) == 3, "no check after the block"


def test_the_mediapipe_folder_is_the_one_that_holds_the_model_files(tmp_path, monkeypatch):
    """extra_model_paths.yaml folders come before ComfyUI/models/mediapipe: an empty one must not hide the files."""
    host = importlib.import_module(f"{PACK}.nodes.host")
    extra, models = tmp_path / "extra", tmp_path / "models_mediapipe"
    extra.mkdir()
    models.mkdir()
    registered = [str(extra), str(models)]
    monkeypatch.setitem(sys.modules, "folder_paths", SimpleNamespace(get_folder_paths=lambda key: registered))
    assert host.mediapipe_dir() == str(extra)  # no .task file anywhere: the first, where the error will point
    (models / "hand_landmarker.task").write_bytes(b"x")
    assert host.mediapipe_dir() == str(models)
    (extra / "pose_landmarker_full.task").write_bytes(b"x")
    assert host.mediapipe_dir() == str(extra)
    registered.clear()
    assert host.mediapipe_dir() is None


def test_a_gradient_vae_comfyui_reads_as_hunyuanvideos_is_refused():
    """ComfyUI gives a 16-channel fp16 tiny autoencoder HunyuanVideo's latent format (it rescales what it decodes):
    another latent space than the Wan VAE's, which a channel count cannot tell. lighttaew2_1's has none."""
    errors = importlib.import_module(f"{PACK}.bgfs_core.errors")
    taehv = importlib.import_module(f"{PACK}.bgfs_core.codecs.taehv")

    def tiny_autoencoder(latent_format):
        module = taehv.TAEHVDecoder(16)
        module.latent_format = latent_format  # what comfy.taesd.taehv.TAEHV keeps
        return SimpleNamespace(first_stage_model=module, latent_channels=16,
                               upscale_ratio=(lambda a: max(0, a * 4 - 3), 8, 8), process_output=lambda x: x)  # fmt: skip

    vae = _comfy_like_vae(_TinyWanDecoder())
    with pytest.raises(errors.BGFSError, match="reads as HunyuanVideo's .* connect lighttaew2_1"):
        glue.build_codec(vae, tiny_autoencoder(latent_format=object))
    codec = glue.build_codec(vae, tiny_autoencoder(latent_format=None))
    assert codec.grad.name == "TAEHVDecoder (gradient_vae)"
