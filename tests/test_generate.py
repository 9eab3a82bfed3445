"""`bgfs generate` end to end through diffusers' real Wan pipelines, with tiny random-weight models saved as
diffusers model folders and loaded back by `load_pipeline`: T2V with two experts, I2V with two experts, TI2V-5B
with the 48-channel Wan 2.2 VAE; plus the CLI, its errors, and Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_diffusers

from bgfs_core import generate as g
from bgfs_core.cli import main
from bgfs_core.errors import BGFSError

IMAGES = Path(__file__).parent / "data" / "images"
TEXT_DIM = 16
WORDS = ["a", "hand", "waving", "at", "the", "camera", "person", "fingers", "fused", "extra", "deformed"]


def _tiny_vae(wan22: bool):
    from diffusers import AutoencoderKLWan

    if not wan22:  # Wan 2.1 layout (8x spatial, 4x temporal), the real latents_mean/std defaults
        return AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                temperal_downsample=[False, True, True])
    gen = torch.Generator().manual_seed(1)
    return AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
                            out_channels=12, scale_factor_spatial=16,
                            latents_mean=(torch.randn(48, generator=gen) * 0.3).tolist(),
                            latents_std=(torch.rand(48, generator=gen) + 0.5).tolist())


def _tiny_transformer(in_channels: int, out_channels: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                 in_channels=in_channels, out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=32,
                                 ffn_dim=32, num_layers=1, rope_max_seq_len=32)


def _tiny_text_encoder():
    """A UMT5 encoder and a T5 tokenizer built from a local vocabulary: the real classes, no download."""
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1,
                                          num_heads=2, relative_attention_num_buckets=8))
    return tokenizer, encoder


def _scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models here are tiny: thread start-up dominates, and on a busy 2-core machine it is 10-40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    require_diffusers()  # every test that builds the models needs the extra; the size rules below do not
    return build_models(tmp_path_factory.mktemp("wan_models"))


def build_models(root: Path) -> dict[str, Path]:
    """Three tiny Wan models saved like the Hugging Face repos (model_index.json + one folder per component)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    torch.manual_seed(0)
    tokenizer, encoder = _tiny_text_encoder()
    t2v = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=_tiny_vae(False), scheduler=_scheduler(),
                      transformer=_tiny_transformer(16, 16), transformer_2=_tiny_transformer(16, 16),
                      boundary_ratio=0.875)
    # I2V-A14B and TI2V-5B ship no text encoder here: they run from precomputed embeddings.
    i2v = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=_tiny_vae(False), scheduler=_scheduler(),
                                  transformer=_tiny_transformer(36, 16), transformer_2=_tiny_transformer(36, 16),
                                  boundary_ratio=0.9)
    ti2v = WanPipeline(tokenizer=None, text_encoder=None, vae=_tiny_vae(True), scheduler=_scheduler(),
                       transformer=_tiny_transformer(48, 48), expand_timesteps=True)
    paths = {}
    for name, pipe in (("t2v", t2v), ("i2v", i2v), ("ti2v", ti2v)):
        pipe.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def _embeds(seed: int = 0, tokens: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, tokens, TEXT_DIM, generator=gen), torch.randn(1, tokens, TEXT_DIM, generator=gen)


def _count_calls(pipe) -> dict[str, int]:
    counts = {"transformer": 0, "transformer_2": 0}
    for name in counts:
        module = getattr(pipe, name)
        if module is not None:
            module.register_forward_pre_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


def test_inspect_model_reads_kind_and_size_rules(models):
    from diffusers import WanImageToVideoPipeline, WanPipeline

    t2v, i2v, ti2v = (g.inspect_model(models[k]) for k in ("t2v", "i2v", "ti2v"))
    assert (t2v.kind, t2v.experts, t2v.boundary_ratio, t2v.vae, t2v.spatial_multiple) == ("t2v", 2, 0.875, "wan2.1", 16)
    assert (i2v.kind, i2v.experts, i2v.boundary_ratio, i2v.has_text_encoder) == ("i2v", 2, 0.9, False)
    assert (ti2v.kind, ti2v.experts, ti2v.vae, ti2v.spatial_multiple, ti2v.text_dim) == ("ti2v", 1, "wan2.2", 32, 16)
    with pytest.raises(BGFSError, match="is a t2v model .from its configs., not i2v"):
        g.inspect_model(models["t2v"], kind="i2v")
    # a pipeline loaded by diffusers directly is read off its components, with the same result
    for info, cls, name in ((t2v, WanPipeline, "t2v"), (i2v, WanImageToVideoPipeline, "i2v"),
                            (ti2v, WanPipeline, "ti2v")):
        got = g.pipeline_info(cls.from_pretrained(models[name], text_encoder=None, tokenizer=None))
        assert (got.kind, got.experts, got.boundary_ratio, got.vae_channels, got.spatial_multiple, got.text_dim) == (
            info.kind, info.experts, info.boundary_ratio, info.vae_channels, info.spatial_multiple, info.text_dim)


def test_t2v_two_experts_split_by_boundary_and_latents_decode_to_the_frames(models):
    from bgfs_core.codecs.diffusers_wan import DiffusersWanCodec

    pipe = g.load_pipeline(models["t2v"], device="cpu", text_encoder=False)
    assert pipe.text_encoder is None and pipe.tokenizer is None
    calls = _count_calls(pipe)
    pe, ne = _embeds()
    kw = {"prompt_embeds": pe, "negative_prompt_embeds": ne, "num_frames": 5, "height": 32, "width": 32, "steps": 4}
    frames, latents = g.generate_video(pipe, guidance_scale=5.0, guidance_scale_2=3.0, seed=7, **kw)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert latents.shape == (1, 16, 2, 4, 4) and latents.dtype == torch.float32
    # 4 UniPC steps with flow shift 3 are t = 999, 900, 750, 500: two above the 875 boundary (high-noise expert)
    # and two below (low-noise expert), each run twice for classifier-free guidance.
    timesteps = pipe.scheduler.timesteps.tolist()
    high = sum(t >= 875 for t in timesteps)
    assert 0 < high < 4 and calls == {"transformer": 2 * high, "transformer_2": 2 * (4 - high)}

    # --boundary-ratio moves the switch for this call only
    calls.update(transformer=0, transformer_2=0)
    g.generate_video(pipe, guidance_scale=5.0, boundary_ratio=0.95, seed=7, **kw)
    assert calls == {"transformer": 2, "transformer_2": 6}
    assert pipe.config.boundary_ratio == 0.875

    # Raw VAE space: decoding the returned latents with the VAE gives the returned frames.
    decoded = DiffusersWanCodec(pipe.vae).decode(latents).detach()  # [T, 3, H, W] in [0, 1]
    again = (decoded.permute(0, 2, 3, 1).numpy() * 255.0).round()
    assert np.abs(again - frames.astype(np.float64)).max() <= 1.0

    # Same seed, same video; another seed, another video.
    _, same = g.generate_video(pipe, guidance_scale=5.0, guidance_scale_2=3.0, seed=7, **kw)
    _, other = g.generate_video(pipe, guidance_scale=5.0, guidance_scale_2=3.0, seed=8, **kw)
    assert torch.equal(same, latents) and not torch.allclose(other, latents)


def _pixels(image) -> torch.Tensor:
    """A PIL image as the VAE's input video ``[1, 3, 1, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1.0


def test_i2v_two_experts_see_the_image(models):
    from bgfs_core.codecs.diffusers_wan import normalize_latents

    with pytest.raises(BGFSError, match="give the first frame with --image"):
        g.load_pipeline(models["i2v"], device="cpu", text_encoder=False)
    pipe = g.load_pipeline(models["i2v"], device="cpu", image=True, text_encoder=False)
    calls = _count_calls(pipe)
    inputs = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: inputs.append(kw["hidden_states"]), with_kwargs=True)
    pe, ne = _embeds()
    kw = {"prompt_embeds": pe, "negative_prompt_embeds": ne, "num_frames": 5, "height": 32, "width": 64, "steps": 3,
          "seed": 3}
    frames, lat_a = g.generate_video(pipe, image=IMAGES / "handSrc.jpg", **kw)
    assert frames.shape == (5, 32, 64, 3) and lat_a.shape == (1, 16, 2, 4, 8)
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0
    # The experts' input is noise (16) + first-frame mask (4) + the image's normalised latents (16 channels).
    x = inputs[0]
    assert x.shape == (1, 36, 2, 4, 8)
    assert bool((x[:, 16:20, 0] == 1).all()) and bool((x[:, 16:20, 1:] == 0).all())
    image = g.fit_image(g.read_image(IMAGES / "handSrc.jpg"), 32, 64)
    with torch.no_grad():
        expected = normalize_latents(pipe.vae.encode(_pixels(image)).latent_dist.mode(), pipe.vae)
    torch.testing.assert_close(x[:, 20:, :1], expected, atol=1e-4, rtol=1e-4)
    # same seed and text, another first frame: other latents
    _, lat_b = g.generate_video(pipe, image=IMAGES / "messi5.jpg", **kw)
    assert not torch.allclose(lat_a, lat_b, atol=1e-3)


def test_ti2v_48_channels_text_and_image(models):
    pipe = g.load_pipeline(models["ti2v"], device="cpu", text_encoder=False)
    pe, ne = _embeds()
    frames, latents = g.generate_video(pipe, prompt_embeds=pe, negative_prompt_embeds=ne, num_frames=5, height=32,
                                       width=64, steps=2, seed=1)
    assert frames.shape == (5, 32, 64, 3) and latents.shape == (1, 48, 2, 2, 4)
    with pytest.raises(BGFSError, match="one transformer"):
        g.generate_video(pipe, prompt_embeds=pe, negative_prompt_embeds=ne, num_frames=5, height=32, width=64,
                         steps=2, guidance_scale_2=2.0)

    # TI2V image-to-video keeps the image as the first latent frame: it equals the VAE encoding of the image.
    pipe = g.load_pipeline(models["ti2v"], device="cpu", image=True, text_encoder=False)
    image = g.fit_image(g.read_image(IMAGES / "handDst.jpg"), 32, 64)
    _, latents = g.generate_video(pipe, prompt_embeds=pe, negative_prompt_embeds=ne, image=image, num_frames=5,
                                  height=32, width=64, steps=2, seed=1)
    with torch.no_grad():
        encoded = pipe.vae.encode(_pixels(image)).latent_dist.mode()
    torch.testing.assert_close(latents[:, :, :1], encoded, atol=1e-4, rtol=1e-4)


def test_cli_text_prompt_latents_and_embeddings_round_trip(models, tmp_path):
    from bgfs_core.video_io import read_video

    base = ["generate", "--model-id", str(models["t2v"]), "--num-frames", "5", "--height", "32", "--width", "32",
            "--steps", "2", "--seed", "11", "--device", "cpu"]
    out, lat, emb = tmp_path / "out.mp4", tmp_path / "out.latents.safetensors", tmp_path / "prompt.safetensors"
    rc = main([*base, "--prompt", "a hand waving at the camera", "--negative-prompt", "fused fingers",
               "--out", str(out), "--save-latents", str(lat), "--save-prompt-embeds", str(emb)])
    assert rc == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 32, 3) and fps == pytest.approx(16.0)
    latents, meta = g.load_latents(lat)
    assert latents.shape == (1, 16, 2, 4, 4)
    assert meta["model_id"] == str(models["t2v"]) and meta["vae"] == "wan2.1" and meta["channels"] == 16
    assert (meta["num_frames"], meta["fps"], meta["seed"], meta["kind"]) == (5, 16.0, 11, "t2v")

    # The saved embeddings replace the text encoder and give the very same latents.
    out2, lat2 = tmp_path / "again.gif", tmp_path / "again.latents.safetensors"
    assert main([*base, "--prompt-embeds", str(emb), "--out", str(out2), "--save-latents", str(lat2)]) == 0
    assert torch.equal(g.load_latents(lat2)[0], latents)
    assert read_video(out2)[0].shape == (5, 32, 32, 3)


def test_cli_image_to_video(models, tmp_path):
    from bgfs_core.video_io import read_video

    emb = tmp_path / "embeds.safetensors"
    g.save_prompt_embeds(emb, *_embeds())
    out = tmp_path / "i2v.mp4"
    rc = main(["generate", "--model-id", str(models["i2v"]), "--image", str(IMAGES / "handSrc.jpg"),
               "--prompt-embeds", str(emb), "--out", str(out), "--num-frames", "5", "--height", "32", "--width", "48",
               "--steps", "2", "--seed", "0", "--guidance-scale-2", "2.0", "--fps", "8"])
    assert rc == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and fps == pytest.approx(8.0)


def _bad_embeds(tmp_path: Path) -> Path:
    path = tmp_path / "wide.safetensors"
    g.save_prompt_embeds(path, torch.zeros(1, 4, TEXT_DIM + 1), torch.zeros(1, 4, TEXT_DIM + 1))
    return path


def _not_an_image(tmp_path: Path) -> Path:
    path = tmp_path / "broken.png"
    path.write_text("this is not a PNG")
    return path


@pytest.mark.parametrize(
    ("model", "extra", "needle"),
    [
        ("t2v", ["--num-frames", "6"], "1 + 4k frames; use 5 or 9"),
        ("t2v", ["--height", "40"], "multiples of 16"),
        ("ti2v", ["--height", "48"], "multiples of 32"),
        ("missing", [], "does not exist"),
        ("offline", [], "HF_HUB_OFFLINE"),
        ("i2v", [], "give the first frame with --image"),
        ("i2v", ["--image", "BROKEN"], "cannot be read as an image"),
        ("t2v", ["--image", str(IMAGES / "handSrc.jpg")], "takes no --image"),
        ("ti2v", ["--guidance-scale-2", "3"], "has one transformer"),
        ("t2v", ["--prompt-embeds", "WIDE"], f"[batch, tokens, {TEXT_DIM}]"),
        ("missing", ["--prompt-embeds", "NAN_EMBEDS"], "is empty or holds NaN/inf values"),  # were accepted
        ("missing", ["--prompt-embeds", "NO_TOKENS"], "is empty or holds NaN/inf values"),
        ("t2v", ["--out", "video.avi"], "--out"),
        ("t2v", ["--boundary-ratio", "1.5"], "between 0 and 1"),
        ("i2v", ["--image", str(IMAGES / "handSrc.jpg"), "--prompt", "a hand"], "has no text encoder"),
        ("t2v", ["--fps", "inf"], "--fps must be between 0.01 and 1000"),  # was found after generating
        ("t2v", ["--save-latents", "UNDER_A_FILE"], "--save-latents"),  # likewise: the video was written first
        ("missing", ["--fps", "0.0001"], "--fps must be between 0.01 and 1000"),  # before the model is looked up
        # each also before the model is looked up: a NaN guidance switched guidance off without a word, inf wrote
        # noise, a height of 0 fell back to the default size, a seed past 64 bits failed after the model loaded
        ("missing", ["--guidance-scale", "nan"], "--guidance-scale must be a finite number >= 0"),
        ("missing", ["--guidance-scale-2", "inf"], "--guidance-scale-2 must be a finite number >= 0"),
        ("missing", ["--guidance-scale", "-3"], "--guidance-scale must be a finite number >= 0"),
        ("missing", ["--height", "0"], "--height must be > 0"),
        ("missing", ["--width", "-16"], "--width must be > 0"),
        ("missing", ["--seed", str(2**70)], "--seed must be between 0 and 2**64 - 1"),
        ("missing", ["--steps", "0"], "--steps must be >= 1"),
        ("missing", ["--boundary-ratio", "nan"], "--boundary-ratio must be between 0 and 1"),
        ("t2v", ["--save-latents", "A_FOLDER"], "is a folder: name a file in it"),  # was an OSError after generating
        # an existing file named without a suffix would be written as a folder of PNG frames: it failed after generating
        ("missing", ["--out", "A_FILE"], "is a file, and a name without a suffix is written as a folder of PNG frames"),
        ("missing", ["--image", "A_DIR"], "is a folder, not a file"),  # it said "does not exist"
        # guidance needs negative embeddings, and a model without a text encoder cannot make them: the old message
        # asked for the --prompt-embeds that were given
        ("i2v", ["--image", str(IMAGES / "handSrc.jpg"), "--prompt-embeds", "NO_NEGATIVE"],
         "holds no 'negative_prompt_embeds', which --guidance-scale 5 > 1 needs"),
        ("i2v", ["--image", str(IMAGES / "handSrc.jpg"), "--prompt", "a hand", "--save-prompt-embeds", "SAVED"],
         "--save-prompt-embeds encodes --prompt with the model's text encoder"),
    ],
)
def test_cli_errors(models, tmp_path, monkeypatch, capsys, model, extra, needle):
    model_id = {"missing": str(tmp_path / "no-such-model"), "offline": "nobody/no-such-wan-model"}.get(model)
    if model == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder.safetensors").mkdir()
    no_negative = tmp_path / "no_negative.safetensors"
    g.save_prompt_embeds(no_negative, _embeds()[0], None)
    nan_embeds = g.save_prompt_embeds(tmp_path / "nan.safetensors", _embeds()[0] * float("nan"), None)
    no_tokens = g.save_prompt_embeds(tmp_path / "empty.safetensors", _embeds()[0][:, :0], None)
    extra = [{"BROKEN": str(_not_an_image(tmp_path)), "WIDE": str(_bad_embeds(tmp_path)),
              "UNDER_A_FILE": str(tmp_path / "a_file" / "x.safetensors"),
              "A_FOLDER": str(tmp_path / "a_folder.safetensors"), "NO_NEGATIVE": str(no_negative),
              "SAVED": str(tmp_path / "saved.safetensors"), "NAN_EMBEDS": str(nan_embeds),
              "NO_TOKENS": str(no_tokens), "A_FILE": str(tmp_path / "a_file"), "A_DIR": str(tmp_path)}.get(a, a)
             for a in extra]  # fmt: skip
    given = "--prompt-embeds" in extra or "--prompt" in extra
    text = [] if given else ["--prompt-embeds", str(g.save_prompt_embeds(tmp_path / "good.safetensors", *_embeds()))]
    out = tmp_path / "out.mp4"
    args = ["generate", "--model-id", model_id or str(models[model]), *text, "--out", str(out), "--num-frames", "5",
            "--height", "32", "--width", "32", "--steps", "1", "--device", "cpu", *extra]
    assert main(args) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "video.avi").exists()


def test_ctrl_c_during_denoising_leaves_outputs_untouched(models, tmp_path, monkeypatch):
    from diffusers import WanTransformer3DModel

    out, lat = tmp_path / "out.mp4", tmp_path / "out.latents.safetensors"
    out.write_bytes(b"previous video")
    forward = WanTransformer3DModel.forward
    seen = []

    def interrupted(self, *args, **kwargs):
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(WanTransformer3DModel, "forward", interrupted)
    rc = main(["generate", "--model-id", str(models["t2v"]), "--prompt", "a hand", "--out", str(out),
               "--save-latents", str(lat), "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "3",
               "--device", "cpu"])
    assert rc == 130 and len(seen) == 2
    assert out.read_bytes() == b"previous video" and not lat.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_failure_writing_the_latents_leaves_the_earlier_video_and_latents(models, tmp_path, monkeypatch, capsys):
    """--save-latents are staged and moved in after the video: a disk that fills while they are written leaves the
    earlier run's video beside its latents (the new video was in place first, beside the old latents)."""
    out, lat = tmp_path / "out.mp4", tmp_path / "out.latents.safetensors"
    out.write_bytes(b"previous video")
    lat.write_bytes(b"previous latents")

    def disk_full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(g, "save_latents", disk_full)
    rc = main(["generate", "--model-id", str(models["t2v"]), "--prompt", "a hand", "--out", str(out),
               "--save-latents", str(lat), "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "1",
               "--device", "cpu"])  # fmt: skip
    assert rc == 2 and "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == b"previous video" and lat.read_bytes() == b"previous latents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.latents.safetensors", "out.mp4"]


def test_latents_files_with_metadata_bgfs_did_not_write_are_refused(tmp_path):
    """A critic (its bgfs.* metadata is not JSON) or a hand-edited rate crashed bgfs fix --latents with a
    JSONDecodeError or a ValueError; each is a prefixed error now."""
    from safetensors.torch import save_file

    latents = {"latents": torch.zeros(1, 16, 2, 4, 4)}
    save_file(latents, str(tmp_path / "critic.safetensors"), metadata={"bgfs.spec": "region=hands, width=8"})
    with pytest.raises(BGFSError, match="bgfs metadata is not what bgfs writes .* is it a latents file"):
        g.load_latents(tmp_path / "critic.safetensors")
    meta = {"bgfs.format": f'"{g.LATENTS_FORMAT}"', "bgfs.channels": "16"}
    save_file(latents, str(tmp_path / "ok.safetensors"), metadata=meta)
    assert g.load_latents(tmp_path / "ok.safetensors")[0].shape == (1, 16, 2, 4, 4)
    for rate in ('"abc"', "true", "NaN"):
        save_file(latents, str(tmp_path / "rate.safetensors"), metadata=meta | {"bgfs.fps": rate})
        with pytest.raises(BGFSError, match=r"frame rate \(bgfs.fps\) is .*, not a number: give the rate with --fps"):
            g.load_latents(tmp_path / "rate.safetensors")


def test_frame_and_size_rules_suggest_valid_values():
    g.check_num_frames(81)
    with pytest.raises(BGFSError, match="use 77 or 81"):
        g.check_num_frames(80)
    with pytest.raises(BGFSError, match="use 1 \\+ 4k"):
        g.check_num_frames(0)
    g.check_size(480, 832, 16)
    with pytest.raises(BGFSError, match="--width 800 or 832"):
        g.check_size(480, 810, 32)
    assert g.default_size("i2v", 16) == (480, 832)
    assert g.default_size("ti2v", 32) == (704, 1280)
    h, w = g.default_size("i2v", 16, (1000, 500))  # portrait image: portrait video of about the same area
    assert h > w and h % 16 == 0 and w % 16 == 0 and abs(h * w - 480 * 832) < 0.1 * 480 * 832


def test_cuda_without_a_gpu_is_refused_as_bgfs_fix_refuses_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BGFSError, match=r"--device cuda: this torch \(.*\) sees no cuda device .* use --device cpu"):
        g.resolve_device("cuda")
    assert g.resolve_device("auto") == "cpu"
