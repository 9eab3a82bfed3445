"""The fixer, the critic's training and the nodes' fixes with the computation on a device other than the CPU.

No GPU here, so `other_device` stands in for one: tensors on it hold CPU data, and every place where a host tensor
meets a device tensor raises as CUDA would (and ``.numpy()`` of a device tensor does). Each run is compared with
the same run on the CPU. What it cannot show: CUDA's own kernels, speed and memory. With ``BGFS_TEST_DEVICE=cuda``
the same tests run on a real GPU, compared with the CPU within tolerances (`close`).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import test_nodes_glue
import torch
from conftest import lively, require_diffusers
from other_device import OnDevice, other_device, stand_in
from test_fixer import TINY, hand_detections, random_critic

from bgfs_core.codecs import DiffusersWanCodec, PixelCodec
from bgfs_core.fixer import FixSettings, fix_latents

small_roi, tiny_critic = test_nodes_glue.small_roi, test_nodes_glue.tiny_critic  # the nodes' fixtures


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 0.0, gpu_atol: float = 0.05) -> bool:
    """``a`` as the CPU's ``b``: within ``atol`` on the stand-in (0: bit for bit), and on a real GPU, whose kernels
    round otherwise (and an optimiser's steps carry that on), within ``gpu_atol`` on average."""
    if not stand_in():
        return float((a.float() - b.float()).abs().mean()) <= gpu_atol
    return torch.equal(a, b) if atol == 0 else torch.allclose(a, b, atol=atol)


def test_the_stand_in_device_refuses_what_cuda_refuses():
    """The harness itself: a test that passes under it has met each of these checks."""
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with other_device() as dev:
        on = copy.deepcopy(layer).to(dev)
        assert on.weight.device == dev and (isinstance(on.weight, OnDevice) or not stand_in())
        y = x.to(dev).requires_grad_(True)
        out = on(y)
        assert out.device == dev and isinstance(float(out.sum()), float)
        out.sum().backward()
        assert y.grad.device == dev and on.weight.grad.device == dev
        host = out.detach().cpu()
        assert type(host) is torch.Tensor and np.asarray(host).shape == (3, 2)
        with pytest.raises(RuntimeError, match="same device"):
            out + torch.ones(3, 2)
        assert (out + torch.tensor(1.0)).device == dev  # a CPU scalar tensor is allowed elementwise, as on CUDA
        with pytest.raises(RuntimeError, match="same device"):  # but not where CUDA checks every argument
            torch.stack([out.sum(), torch.tensor(1.0)])
        assert out[torch.tensor([0, 2])].shape == (2, 2) and out[[0, 1]].shape == (2, 2)  # so are CPU indices
        with pytest.raises(RuntimeError, match="indices"):  # device indices into a CPU tensor are not
            x[torch.tensor([0, 2]).to(dev)]
        with pytest.raises(TypeError, match="numpy"):
            out.detach().numpy()
        with pytest.raises(TypeError, match="numpy"):
            np.asarray(out.detach())
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(3, generator=torch.Generator().manual_seed(0), device=dev)
        assert torch.equal(torch.zeros(2, device=dev).cpu(), torch.zeros(2))
        assert torch.tensor([1.0, 2.0], device=dev).device == dev and x.new_tensor([1.0], device=dev).device == dev
    host_out = layer(x)  # the same numbers as on the CPU
    assert close(host, host_out.detach(), gpu_atol=1e-5)


@pytest.mark.parametrize("mode", ["warp", "latent"])
def test_the_fix_runs_on_another_device_with_the_video_on_the_cpu(mode):
    """The pixel codec's latents (the frames) stay on the CPU; the window, the critic and the steps run on the
    device; the result comes back on the CPU, the same as a CPU run's bit for bit."""
    codec = PixelCodec()
    latents = torch.rand(1, 3, 12, 64, 96) * 2 - 1
    det = hand_detections(12, (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    settings = FixSettings(steps=2, mode=mode, chunk_frames=4, keypoint_conf=0.0)
    on_cpu = fix_latents(latents, codec, critic, spec, det, settings)
    with other_device() as dev:
        result = fix_latents(latents, codec, copy.deepcopy(critic).to(dev), spec, det, settings, device=dev)
    assert type(result.latents) is torch.Tensor and result.latents.device.type == "cpu"
    assert close(result.latents, on_cpu.latents) and result.report["changed"]
    assert result.preview["after_heatmaps"].shape == on_cpu.preview["after_heatmaps"].shape


@pytest.mark.parametrize("channels", [16, 48])
def test_the_fix_decodes_through_a_wan_vae_on_another_device(channels):
    """Latents on the CPU (a `bgfs fix --latents` file), the VAE and the critic on the device."""
    require_diffusers()
    codec = DiffusersWanCodec.from_config(TINY[channels], seed=0)
    s = codec.spatial_ratio
    latents = torch.randn(1, channels, 3, 64 // s, 96 // s, generator=torch.Generator().manual_seed(1))
    det = hand_detections(codec.pixel_frames(3), (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    settings = FixSettings(steps=2, lr=0.05, mode="warp", keypoint_conf=0.0, chunk_frames=1)
    on_cpu = fix_latents(latents, codec, critic, spec, det, settings)
    with other_device() as dev:
        on_device = copy.deepcopy(codec)
        on_device.vae.to(dev)
        result = fix_latents(latents, on_device, copy.deepcopy(critic).to(dev), spec, det, settings, device=dev)
    assert result.latents.device.type == "cpu" and result.report["changed"]
    # composite ops (norms, attention) reach the stand-in decomposed: float noise, not another result
    assert close(result.latents, on_cpu.latents, atol=1e-3)


def test_the_fix_decodes_through_a_gradient_vae_on_another_device(tmp_path):
    """`bgfs fix --device ... --gradient-vae`: the codec `make_codec` builds, the Wan VAE and its TAEHV on the
    device, the latents on the CPU. (Built on the CPU and moved: inside the stand-in, whose device is torch's meta
    device, diffusers' from_pretrained would build its empty model on the "GPU".)"""
    require_diffusers()
    from safetensors.torch import save_file

    from bgfs_core.codecs.taehv import TAEHVDecoder
    from bgfs_core.fix_video import make_codec

    DiffusersWanCodec.from_config(TINY[16], seed=0).vae.save_pretrained(tmp_path / "wan" / "vae")
    save_file(lively(TAEHVDecoder(16)).state_dict(), str(tmp_path / "lighttaew2_1.safetensors"))
    files = {"model_id": str(tmp_path / "wan"), "gradient_vae": str(tmp_path / "lighttaew2_1.safetensors")}
    latents = torch.randn(1, 16, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    det = hand_detections(9, (64, 96), (8.0, 8.0, 36.0, 36.0))
    critic, spec = random_critic()
    settings = FixSettings(steps=2, keypoint_conf=0.0)
    on_cpu = fix_latents(latents, make_codec("wan", **files), critic, spec, det, settings)
    codec = make_codec("wan", **files, grad_dtype="fp32")
    with other_device() as dev:
        codec.real.vae.to(dev)
        codec.grad.module.to(dev)
        result = fix_latents(latents, codec, copy.deepcopy(critic).to(dev), spec, det, settings, device=dev)
    assert result.latents.device.type == "cpu" and result.report["changed"]
    assert close(result.latents, on_cpu.latents, atol=1e-4)


def test_critic_training_runs_on_another_device(tmp_path, data_dir):
    from bgfs_core.cache import build_cache
    from bgfs_core.config import load_config
    from bgfs_core.critic_io import load_critic
    from bgfs_core.train_critic import train_critic

    small = {"clips.clip_len": 4, "clips.clips_per_video": 2, "roi.out_hw": [64, 64], "critic.input_hw": [32, 32],
             "critic.heatmap_hw": [16, 16], "critic.width": 8, "critic.batch_size": 4,
             "data.videos_dir": str(data_dir / "clips"), "data.cache_dir": str(tmp_path / "cache")}  # fmt: skip
    cfg = load_config(None, small)
    build_cache(cfg)
    on_cpu = train_critic(cfg, tmp_path / "cpu", epochs=2, progress=False, device="cpu")
    with other_device() as dev:
        result = train_critic(cfg, tmp_path / "device", epochs=2, progress=False, device=dev)
    assert [h["epoch"] for h in result.history] == [1, 2] and result.best_epoch == on_cpu.best_epoch
    for h, ref in zip(result.history, on_cpu.history):  # float noise of decomposed ops, as above
        assert h == pytest.approx(ref, rel=1e-5 if stand_in() else 0.05)
    a, _, _ = load_critic(result.best_path)
    b, _, _ = load_critic(on_cpu.best_path)
    assert all(close(x, y, atol=1e-5, gpu_atol=1e-3) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_nodes_fixes_run_on_the_hosts_device(small_roi, tiny_critic, hand_video_frames):
    """The Latent Anatomy Fixer with ComfyUI's VAE on the device and the LATENT on the CPU, and the Image Anatomy
    Fixer with the IMAGE on the CPU and ComfyUI's torch device elsewhere: both as on the CPU."""
    from PIL import Image
    from test_nodes_glue import _comfy_like_vae, _settings, _TinyWanDecoder, glue

    torch.manual_seed(1)
    decoder = _TinyWanDecoder()
    samples = torch.randn(1, 16, 2, 9, 12)
    frames = np.stack([np.asarray(Image.fromarray(f).resize((96, 72), Image.Resampling.BOX))
                       for f in hand_video_frames[:5]])  # fmt: skip
    images = glue.uint8_to_image(frames)
    with torch.inference_mode():  # as ComfyUI runs a node
        latent_cpu, _ = glue.run_fix({"samples": samples}, _comfy_like_vae(decoder), tiny_critic, small_roi, _settings())
        images_cpu, _ = glue.run_fix_frames(images, tiny_critic, small_roi, _settings())
    with other_device() as dev:
        vae = _comfy_like_vae(copy.deepcopy(decoder).to(dev))
        vae.device = dev  # ComfyUI's VAE.device: where the host runs it
        with torch.inference_mode():
            latent, result = glue.run_fix({"samples": samples}, vae, tiny_critic, small_roi, _settings())
            fixed, result_frames = glue.run_fix_frames(images, tiny_critic, small_roi, _settings(), device=dev)
    assert type(latent["samples"]) is torch.Tensor and latent["samples"].device.type == "cpu"
    assert close(latent["samples"], latent_cpu["samples"], atol=1e-5) and result.report["changed"]
    assert type(fixed) is torch.Tensor and fixed.device.type == "cpu" and result_frames.report["changed"]
    assert close(fixed, images_cpu, gpu_atol=0.01)
    # ComfyUI --novram (or a partial load): the VAE's weights stay on the CPU, streamed, though its device is the GPU
    with other_device() as dev:
        vae = _comfy_like_vae(decoder)
        vae.device = dev
        with torch.inference_mode():
            latent, _ = glue.run_fix({"samples": samples}, vae, tiny_critic, small_roi, _settings())
    assert close(latent["samples"], latent_cpu["samples"], atol=1e-5)
    assert decoder.proj.weight.device.type == "cpu", "ComfyUI's own model is left where it was"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny Wan pipelines saved like the Hugging Face repos (diffusers is an optional extra)."""
    require_diffusers()
    from test_generate import build_models

    return build_models(tmp_path_factory.mktemp("wan_models"))


@pytest.mark.parametrize("model,image", [("t2v", None), ("i2v", "handSrc.jpg"), ("ti2v", "handDst.jpg")])
def test_generation_runs_on_another_device(models, data_dir, model, image):
    """`bgfs generate --prompt-embeds` with the pipeline on the GPU (A14B's two experts, I2V's first frame,
    TI2V-5B's 48 channels): the embeddings and the image are read to the CPU."""
    from test_generate import _embeds

    from bgfs_core import generate as g

    pe, ne = _embeds()
    kw = {"prompt_embeds": pe, "negative_prompt_embeds": ne, "num_frames": 5, "height": 32, "width": 64, "steps": 2,
          "guidance_scale": 5.0, "seed": 7, "image": data_dir / "images" / image if image else None}  # fmt: skip
    pipe = g.load_pipeline(models[model], device="cpu", image=image is not None, text_encoder=False)
    frames_cpu, latents_cpu = g.generate_video(pipe, **kw)
    with other_device() as dev:
        for module in (pipe.transformer, pipe.transformer_2, pipe.vae):
            if module is not None:
                torch.nn.Module.to(module, dev)
        frames, latents = g.generate_video(pipe, **kw)
    assert latents.device.type == "cpu" and close(latents, latents_cpu, atol=1e-4, gpu_atol=0.01)
    assert np.abs(frames.astype(int) - frames_cpu).max() <= (1 if stand_in() else 8)


def test_bgfs_fix_runs_on_another_device(tmp_path, capsys):
    """`bgfs fix --device ...` end to end on 8 real frames: the critic and the window on the device, the video on
    the CPU; the same fixed video and MediaPipe's same judgement as `--device cpu`. The outputs are PNG folders:
    lossless to compare, and no PyAV needed where the GPU is."""
    import json

    from conftest import HAND_VIDEO
    from test_fix_cli import make_critic

    from bgfs_core.cli import main
    from bgfs_core.video_io import read_video

    critic = make_critic(tmp_path / "hands.safetensors")
    args = ["fix", "--in", str(HAND_VIDEO), "--critic", str(critic), "--max-frames", "8", "--steps", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    with other_device() as dev:
        assert main([*args, "--out", str(tmp_path / "device"), "--device", str(dev)]) == 0, capsys.readouterr()
    # and from a latents file (read to the CPU): its frames here, the pixel codec's latents
    from bgfs_core.fix_video import encode_frames
    from bgfs_core.generate import save_latents

    with torch.no_grad():
        frames = read_video(HAND_VIDEO, max_frames=8)[0]
        save_latents(tmp_path / "latents.safetensors", encode_frames(PixelCodec(), frames), {"fps": 10.0})
    with other_device() as dev:
        assert main([*args, "--latents", str(tmp_path / "latents.safetensors"), "--out", str(tmp_path / "latents"),
                     "--device", str(dev)]) == 0, capsys.readouterr()  # fmt: skip
    reports = {n: json.loads((tmp_path / f"{n}_report" / "report.json").read_text()) for n in ("cpu", "device", "latents")}
    for n, report in reports.items():  # the judge names the output it read: the same name for all, to compare them
        report["judge"]["judged"] = report["judge"]["judged"].replace(n, "OUT")
        report["judge"]["summary"] = report["judge"]["summary"].replace(f"{n} as written", "OUT as written")
    assert reports["device"]["fixer"]["changed"] and reports["latents"]["fixer"]["changed"]
    videos = [torch.from_numpy(read_video(tmp_path / n, max_frames=8)[0]) for n in ("device", "cpu")]
    assert close(*videos, gpu_atol=2.0)  # uint8 levels
    if stand_in():
        assert reports["device"]["judge"] == reports["cpu"]["judge"]
