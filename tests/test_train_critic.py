"""Training the critic on a real ROI cache built from the bundled hand video."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bgfs_core.config import load_config
from bgfs_core.critic import CriticSpec
from bgfs_core.critic_io import load_critic, read_critic_meta
from bgfs_core.errors import BGFSError
from bgfs_core.regions import FACE
from bgfs_core.train_critic import MIN_LR_FRACTION, augment, split_clips, train_critic

# Small everything: the point is the mechanics on real data, not accuracy.
SMALL = {
    "clips.clip_len": 4, "clips.clips_per_video": 4, "roi.out_hw": [128, 128], "critic.input_hw": [64, 64],
    "critic.heatmap_hw": [32, 32], "critic.heatmap_sigma": 1.5, "critic.width": 16, "critic.batch_size": 4,
    "critic.lr": 3e-3,
}  # fmt: skip


@pytest.fixture(scope="session")
def hand_cache(tmp_path_factory, data_dir):
    """A real ROI cache (MediaPipe on fingers-lq.gif), built once for the session."""
    from bgfs_core.cache import build_cache

    cache_dir = tmp_path_factory.mktemp("cache")
    cfg = load_config(None, {**SMALL, "data.videos_dir": str(data_dir / "clips"), "data.cache_dir": str(cache_dir)})
    build_cache(cfg)
    return cache_dir


def _cfg(cache_dir, **extra):
    return load_config(None, {**SMALL, "data.cache_dir": str(cache_dir), **extra})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_training_lowers_validation_loss_and_writes_a_critic(hand_cache, tmp_path):
    from bgfs_core.critic import HeatmapCritic
    from bgfs_core.train_critic import _load_frames, _read_cache, evaluate

    cfg = _cfg(hand_cache)
    cache_dir, manifest = _read_cache(cfg)
    _, val_idx = split_clips(manifest["clips"], cfg.critic.val_fraction, cfg.critic.seed)
    spec = CriticSpec.from_config(cfg)
    val = _load_frames(cache_dir, [manifest["clips"][i] for i in val_idx], spec, 0)
    assert len(val) > 0
    torch.manual_seed(cfg.critic.seed)
    untrained_loss, _ = evaluate(HeatmapCritic(spec), val, spec, 8, "cpu")

    seen = []
    result = train_critic(cfg, tmp_path / "out", epochs=12, progress=False, on_epoch=seen.append)
    assert [h["epoch"] for h in result.history] == list(range(1, 13)) and seen == result.history
    assert result.history[-1]["val_loss"] < 0.9 * untrained_loss
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(0.0 <= h["val_pck"] <= 1.0 and 0.0 <= h["val_pck_bent"] <= 1.0 for h in result.history)

    model, spec2, meta = load_critic(result.best_path, region="hands")
    assert spec2.same_model(spec)
    best = result.history[result.best_epoch - 1]
    assert best["val_loss"] == min(h["val_loss"] for h in result.history)
    assert meta["val_pck"] == pytest.approx(best["val_pck"]) and result.best_val_pck == pytest.approx(best["val_pck"])
    summary = meta["train_summary"]
    assert summary["sources"] == 1 and summary["clips"] == len(manifest["clips"]) and summary["split"] == "clip"
    assert summary["train_frames"] + summary["val_frames"] == summary["frames"] > 0
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["history"] == result.history and log["best_epoch"] == result.best_epoch
    assert read_critic_meta(result.last_path)["train_summary"]["epochs"] == 12
    # The loaded critic reproduces the validation loss it was saved with.
    again, _ = evaluate(model, val, spec, 8, "cpu")
    assert again == pytest.approx(best["val_loss"], rel=1e-4)


def test_interrupted_run_resumes_to_the_same_weights(hand_cache, tmp_path):
    cfg = _cfg(hand_cache)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # as Ctrl-C right after the epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_critic(cfg, tmp_path / "a", epochs=3, progress=False, on_epoch=stop_after_two)
    assert read_critic_meta(tmp_path / "a" / "critic_last.safetensors")["train_summary"]["epochs"] == 2
    load_critic(tmp_path / "a" / "critic_last.safetensors")  # the checkpoint left behind is whole

    resumed = train_critic(cfg, tmp_path / "a", epochs=3, progress=False)
    straight = train_critic(cfg, tmp_path / "b", epochs=3, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(resumed.history, straight.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    wa, wb = _weights(resumed.last_path), _weights(straight.last_path)
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wb)

    # Asking for epochs already done trains nothing; --no-resume starts over.
    again = train_critic(cfg, tmp_path / "a", epochs=3, progress=False)
    assert len(again.history) == 3
    # More epochs on a finished run go on at the end of its schedule: the cosine is not stretched over the new
    # total, which would raise the learning rate again (epoch 4 of 5 at 35% of lr, after 5% at epoch 3)
    more = train_critic(cfg, tmp_path / "a", epochs=5, progress=False)
    lrs = [h["lr"] for h in more.history]
    floor = cfg.critic.lr * MIN_LR_FRACTION
    assert lrs[:3] == [h["lr"] for h in straight.history] and lrs[2] == pytest.approx(floor)
    assert lrs[3:] == pytest.approx([floor, floor])
    fresh = train_critic(cfg, tmp_path / "a", epochs=1, resume=False, progress=False)
    assert len(fresh.history) == 1
    assert read_critic_meta(fresh.last_path)["train_summary"]["epochs"] == 1


def test_resume_refuses_another_setup(hand_cache, tmp_path):
    train_critic(_cfg(hand_cache), tmp_path, epochs=1, progress=False)
    with pytest.raises(BGFSError, match="another critic setup.*--no-resume.*resume off"):
        train_critic(_cfg(hand_cache, **{"critic.width": 8}), tmp_path, epochs=2, progress=False)


def test_the_training_state_is_not_taken_for_a_critic(hand_cache, tmp_path):
    from bgfs_core.critic_io import load_critic

    train_critic(_cfg(hand_cache), tmp_path, epochs=1, progress=False)
    with pytest.raises(BGFSError, match="training run's state, not a critic: use critic_best.safetensors"):
        load_critic(tmp_path / "train_state.safetensors")


def test_resume_checks_the_held_out_clips_themselves(hand_cache):
    """A run whose validation clips differ (the split's rule changed between versions) is another run; a state
    saved before runs recorded them is checked on what chose them, as before."""
    from bgfs_core.train_critic import OtherRunError, _check_same_data, run_data

    cfg = _cfg(hand_cache)
    manifest = json.loads((hand_cache / "manifest.json").read_text())
    now = run_data(cfg, manifest, split_clips(manifest["clips"], cfg.critic.val_fraction, cfg.critic.seed)[1])
    _check_same_data(Path("run/train_state.safetensors"), dict(now), now)
    with pytest.raises(OtherRunError, match="the clips held out for validation"):
        _check_same_data(Path("run/train_state.safetensors"), {**now, "val_sha1": "0" * 16}, now)
    _check_same_data(Path("run/train_state.safetensors"), {k: v for k, v in now.items() if k != "val_sha1"}, now)


def test_resume_refuses_another_cache_or_split(hand_cache, tmp_path):
    """A run folder reused for another cache would hand back the old critic ("nothing to train") or go on training
    it with another split, comparing best epochs across validation sets."""
    run = tmp_path / "run"
    train_critic(_cfg(hand_cache), run, epochs=1, progress=False)
    other = tmp_path / "other_cache"
    shutil.copytree(hand_cache, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["clips"] = manifest["clips"][1:]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BGFSError, match="other data or settings.*clips.*start over"):
        train_critic(_cfg(other), run, epochs=1, progress=False)
    # the same cache moved elsewhere is the same data: it resumes
    moved = tmp_path / "moved_cache"
    shutil.copytree(hand_cache, moved)
    assert len(train_critic(_cfg(moved), run, epochs=1, progress=False).history) == 1
    # the same clip names cut with other settings (precompute --overwrite --set roi.margin=...) are other data
    recut = json.loads((moved / "manifest.json").read_text())
    recut["config"]["roi.margin"] = 0.4
    (moved / "manifest.json").write_text(json.dumps(recut))
    with pytest.raises(BGFSError, match="the settings the cache was cut with"):
        train_critic(_cfg(moved), run, epochs=1, progress=False)
    with pytest.raises(BGFSError, match=r"critic.val_fraction|val_fraction 0\.\d+ -> 0\.5"):
        train_critic(_cfg(hand_cache, **{"critic.val_fraction": 0.5}), run, epochs=1, progress=False)
    assert len(train_critic(_cfg(hand_cache), run, epochs=2, progress=False).history) == 2  # the same data resumes
    assert len(train_critic(_cfg(other), run, epochs=1, resume=False, progress=False).history) == 1
    # starting over forgets the old run at once: a retry that resumes (the node's after running out of memory
    # before the first epoch) finds no other run's state
    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    import bgfs_core.train_critic as tc

    real = tc._train_epoch
    tc._train_epoch = out_of_memory
    try:
        with pytest.raises(torch.OutOfMemoryError):
            train_critic(_cfg(hand_cache), run, epochs=1, resume=False, progress=False)
    finally:
        tc._train_epoch = real
    assert len(train_critic(_cfg(hand_cache), run, epochs=1, resume=True, progress=False).history) == 1


def test_missing_or_empty_cache(tmp_path, hand_cache):
    with pytest.raises(BGFSError, match="run bgfs precompute first"):
        train_critic(_cfg(tmp_path / "nothing"), tmp_path / "out", epochs=1, progress=False)
    manifest = json.loads((hand_cache / "manifest.json").read_text())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({**manifest, "clips": []}))
    with pytest.raises(BGFSError, match="holds no clips"):
        train_critic(_cfg(empty), tmp_path / "out", epochs=1, progress=False)
    with pytest.raises(BGFSError, match=r"built for 'hands', but roi.region is 'face': train for its region "
                                        r"\(--set roi.region=hands\)"):
        train_critic(_cfg(hand_cache, **{"roi.region": "face"}), tmp_path / "out", epochs=1, progress=False)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "manifest.json").write_text(json.dumps({**manifest, "keypoint_names": manifest["keypoint_names"][:20]}))
    with pytest.raises(BGFSError, match=r"20 keypoints .* has 21: rebuild it \(bgfs precompute --overwrite"):
        train_critic(_cfg(stale), tmp_path / "out", epochs=1, progress=False)
    lost = tmp_path / "lost"
    shutil.copytree(hand_cache, lost)
    (lost / manifest["clips"][0]["file"]).unlink()
    for workers in (0, 1):  # from a DataLoader worker, the same one-line message, no worker traceback
        with pytest.raises(BGFSError) as caught:
            train_critic(_cfg(lost, **{"critic.num_workers": workers}), tmp_path / "out", epochs=1, progress=False)
        assert str(caught.value).startswith("cached clip") and "precompute again" in str(caught.value)
        assert "Traceback" not in str(caught.value)


def test_a_hand_edited_manifest_is_named_by_entry(hand_cache, tmp_path):
    manifest = json.loads((hand_cache / "manifest.json").read_text())
    edited = tmp_path / "edited"
    shutil.copytree(hand_cache, edited)
    cases = [
        ({**manifest, "clips": [{k: v for k, v in manifest["clips"][0].items() if k != "file"}]},
         r"clips entry 0 lacks a valid 'file': the manifest was edited or damaged; rebuild the cache with bgfs "
         r"precompute --overwrite"),
        ({**manifest, "clips": manifest["clips"][:1] + [{**manifest["clips"][1], "source": 7}]},
         r"clips entry 1 names source 7 of 1"),
        ({**manifest, "sources": None}, r"has no 'sources' list"),
        ({**manifest, "clips": ["clips/a.npz"]}, r"clips entry 0 lacks a valid 'file', 'source', 'frame_indices'"),
    ]  # fmt: skip
    for broken, says in cases:
        (edited / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(BGFSError, match=says):
            train_critic(_cfg(edited), tmp_path / "out", epochs=1, progress=False)
    assert not (tmp_path / "out" / "critic_best.safetensors").exists()


def test_a_critic_too_big_for_memory_is_refused_before_the_cache_is_read(hand_cache, tmp_path, monkeypatch):
    from bgfs_core import memory
    from bgfs_core import train_critic as tc
    from bgfs_core.critic import HeatmapCritic

    # the meta-device count is what a real forward saves for backward, and it grows with the area and the batch
    spec = CriticSpec.for_region("hands", input_hw=(64, 48), heatmap_hw=(32, 24), width=8)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):  # fmt: skip
        HeatmapCritic(spec)(torch.rand(3, 3, 64, 48))
    assert tc.training_step_bytes(spec, 3) == int(sum(saved) * tc.STEP_MARGIN)
    double = CriticSpec.for_region("hands", input_hw=(128, 96), heatmap_hw=(64, 48), width=8)
    assert 3.5 < tc.training_step_bytes(double, 3) / tc.training_step_bytes(spec, 3) < 4.2  # ~area, less rounding
    assert tc.training_step_bytes(spec, 6) == pytest.approx(2 * tc.training_step_bytes(spec, 3), rel=0.1)  # + weights
    with torch.no_grad():  # counted as training counts, whatever the caller's mode
        assert tc.training_step_bytes(spec, 3) == int(sum(saved) * tc.STEP_MARGIN)

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**30)
    read = []
    monkeypatch.setattr(tc, "_load_frames", lambda *a: read.append(a))
    big = {"critic.input_hw": [1024, 1024], "critic.heatmap_hw": [128, 128]}
    with pytest.raises(BGFSError, match=r"training this critic needs about [\d.]+ GiB of memory \([\d.]+ GiB for a step "
                                        r"of 4 crops, [\d.]+ GiB for the \d+ cached frames at its input size\) and 1.0 "
                                        r"GiB are free: use a smaller critic.input_hw \(now \[1024, 1024\]"):
        train_critic(_cfg(hand_cache, **big), tmp_path / "out", epochs=1, progress=False)
    assert not read, "refused before the cache's clips are read"
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # not Linux: no check
    with pytest.raises(TypeError):  # got past the check, into the stand-in reader
        train_critic(_cfg(hand_cache, **big), tmp_path / "out", epochs=1, progress=False)
    assert read


def test_more_workers_than_clips_or_cpus_read_the_same_frames(hand_cache, monkeypatch):
    import os

    from bgfs_core.train_critic import _load_frames, _read_cache

    cache_dir, manifest = _read_cache(_cfg(hand_cache))
    spec = CriticSpec.from_config(_cfg(hand_cache))
    one = _load_frames(cache_dir, manifest["clips"], spec, 0)
    started = []
    real = torch.utils.data.DataLoader

    def loader(*args, **kwargs):
        started.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    many = _load_frames(cache_dir, manifest["clips"], spec, 1000)  # as many processes as clips and CPUs allow
    assert started == [min(len(manifest["clips"]), os.cpu_count() or 1)]
    assert np.array_equal(one.crops, many.crops) and np.array_equal(one.keypoints, many.keypoints)


def test_holding_out_every_clip_is_refused():
    with pytest.raises(BGFSError, match="critic.val_fraction.*must be below 1"):
        load_config(None, {"critic.val_fraction": 1})
    assert load_config(None, {"critic.val_fraction": 0.9}).critic.val_fraction == 0.9


def test_command_line(hand_cache, tmp_path, capsys):
    from bgfs_core.commands import train_critic as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    sets = [f"{k}={json.dumps(v)}" for k, v in SMALL.items()]
    argv = ["--cache-dir", str(hand_cache), "--out-dir", str(tmp_path), "--epochs", "1", "--lr", "0.001", "--quiet",
            "--num-workers", "2"]  # fmt: skip
    args = parser.parse_args(argv + [a for s in sets for a in ("--set", s)])
    assert cmd.run(args) == 0
    assert "critic_best.safetensors" in capsys.readouterr().out
    assert json.loads((tmp_path / "train_log.json").read_text())["config"]["critic"]["lr"] == 0.001
    args = parser.parse_args(["--cache-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "x")])
    with pytest.raises(BGFSError, match="precompute"):
        cmd.run(args)


def test_split_by_source_or_clip():
    by_source = [{"source": s} for s in (0, 0, 0, 1, 1, 2, 2, 2, 3, 3)]
    train, val = split_clips(by_source, 0.2, seed=0)
    assert sorted(train + val) == list(range(10)) and val
    held = {by_source[i]["source"] for i in val}
    assert held.isdisjoint({by_source[i]["source"] for i in train})  # no video on both sides
    assert split_clips(by_source, 0.2, seed=0) == (train, val)  # deterministic
    # a long video beside a short one: the long one is never all held out, whichever the seed draws first
    uneven = [{"source": 0}] * 19 + [{"source": 1}]
    assert all(split_clips(uneven, 0.2, seed=seed)[1] == [19] for seed in range(10))
    one_video = [{"source": 0}] * 10
    train, val = split_clips(one_video, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8
    assert split_clips(one_video, 0.0, seed=1) == (list(range(10)), [])
    # One video, a second "hand" seen in one clip only (the bundled clip's emoji): it always stays in training.
    lone = [{"source": 0, "instance": 0}] * 7 + [{"source": 0, "instance": 1}]
    for seed in range(20):
        train, val = split_clips(lone, 0.2, seed=seed)
        assert 7 in train and len(val) == 2 and sorted(train + val) == list(range(8))
    assert split_clips([{"source": 0, "instance": 0}, {"source": 0, "instance": 1}], 0.5, 0)[1]  # nothing qualifies
    with pytest.raises(BGFSError, match="at least 2"):
        split_clips([{"source": 0}], 0.2, seed=0)
    with pytest.raises(BGFSError, match="critic.val_fraction=0.*more or longer videos"):  # not a setting that
        split_clips([{"source": 0}], 0.2, seed=0)  # the cache already has: one short video gives one clip


def test_a_diverging_run_stops_and_saves_no_nan_critic(hand_cache, tmp_path):
    """A learning rate far too high: the loss turns NaN. The run stops with what to do, and no critic of NaN
    weights is saved (a first epoch would have been saved as the best, its flat heatmaps still giving a PCK)."""
    with pytest.raises(BGFSError, match=r"epoch 1's loss is nan.*diverged\. Lower the learning rate \(lr, now "
                                        r"1e\+12\) and train again from the start \(--no-resume"):  # fmt: skip
        train_critic(_cfg(hand_cache, **{"critic.lr": 1e12}), tmp_path, epochs=2, progress=False)
    assert not list(tmp_path.glob("*.safetensors")), sorted(p.name for p in tmp_path.iterdir())


def test_augmentation_moves_crop_and_keypoints_together():
    """A bright dot drawn at one keypoint must end up where the augmented keypoint says, flips included."""
    b, h, w = 64, 96, 96
    gen = torch.Generator().manual_seed(0)
    kp = torch.rand(b, FACE.num_keypoints, 2, generator=gen) * 48 + 24
    visible = torch.zeros(b, FACE.num_keypoints, dtype=torch.bool)
    visible[:, 0] = True  # right_eye_outer; after a flip it is the left eye's outer corner (index 5)
    crops = torch.zeros(b, 3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for i in range(b):
        crops[i] = torch.exp(-((xx - kp[i, 0, 0]) ** 2 + (yy - kp[i, 0, 1]) ** 2) / (2 * 2.0**2))
    out, kp2, vis2 = augment(crops, kp, visible, FACE.flip_permutation(), gen)
    assert out.shape == crops.shape and out.min() >= 0 and out.max() <= 1
    assert vis2.sum(1).le(1).all() and vis2[:, 0].any() and vis2[:, 5].any()  # both flipped and unflipped seen
    errors, moved = [], []
    for i in range(b):
        if not vis2[i].any():
            continue  # pushed out of the crop
        j = int(vis2[i].nonzero()[0, 0])
        img = out[i].mean(0)
        mass = torch.where(img > 0.5 * img.max(), img, torch.zeros_like(img))
        centre = torch.stack([(mass * xx).sum(), (mass * yy).sum()]) / mass.sum()
        errors.append(float((centre - kp2[i, j]).norm()))
        moved.append(float((kp2[i, j] - kp[i, 0]).norm()))
    assert len(errors) > b // 2 and max(errors) < 1.0, errors
    assert np.median(moved) > 3.0  # the geometric transforms are real, not near-identity


def _fan_hand(size: int = 128) -> np.ndarray:
    """A flat hand's 21 keypoints (MediaPipe order): wrist at the bottom, five straight fingers fanned upwards."""
    kp = np.zeros((21, 2))
    kp[0] = (size / 2, size - 8)
    for f, angle in enumerate(np.radians([-60, -30, 0, 25, 50])):
        direction = np.array([np.sin(angle), -np.cos(angle)])
        for j, dist in enumerate((28, 44, 56, 66)):
            kp[1 + 4 * f + j] = kp[0] + dist * direction
    return kp


def test_articulation_bends_fingers_and_moves_their_labels():
    """A dot drawn at each fingertip must end up where the articulated keypoints say; a finger with an unknown
    joint is not turned."""
    from bgfs_core.train_critic import articulate_batch

    size, tips = 128, [4, 8, 12, 16, 20]
    kp = _fan_hand(size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    img = np.zeros((size, size), np.float64)
    for t in tips:
        img += np.exp(-((xx - kp[t, 0]) ** 2 + (yy - kp[t, 1]) ** 2) / (2 * 1.5**2))
    crops = np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[None, ..., None], 3, -1).repeat(8, 0)
    keypoints = np.repeat(kp[None].astype(np.float32), 8, 0)
    visible = np.ones((8, 21), bool)
    visible[:, 20] = False  # the little finger's tip is unknown: that finger must not move

    same, same_kp = articulate_batch(crops, keypoints, visible, "hands", 0.0, np.random.default_rng(0))
    assert np.array_equal(same, crops) and np.array_equal(same_kp, keypoints)
    bent, bent_kp = articulate_batch(crops, keypoints, visible, "hands", 1.0, np.random.default_rng(0))
    again, again_kp = articulate_batch(crops, keypoints, visible, "hands", 1.0, np.random.default_rng(0))
    assert np.array_equal(bent, again) and np.array_equal(bent_kp, again_kp)  # seeded
    assert np.array_equal(bent_kp[:, 20], keypoints[:, 20])  # unknown: left as it was
    still = np.linalg.norm(bent_kp[:, 17:20] - keypoints[:, 17:20], axis=-1)  # dragged a little by the ring finger
    errors, moved = [], []
    for b in range(8):
        gray = bent[b, ..., 0].astype(np.float64)
        for t in tips[:4]:
            near = (xx - bent_kp[b, t, 0]) ** 2 + (yy - bent_kp[b, t, 1]) ** 2 < 6**2
            mass = np.where(near & (gray > 0.3 * gray[near].max()), gray, 0.0)
            centre = np.array([(mass * xx).sum(), (mass * yy).sum()]) / mass.sum()
            errors.append(float(np.linalg.norm(centre - bent_kp[b, t])))
            moved.append(float(np.linalg.norm(bent_kp[b, t] - keypoints[b, t])))
    assert max(errors) < 1.5, max(errors)
    assert np.median(moved) > 3.0  # fingers really turn (9 degrees x 66 px ~ 10 px at the tip)
    assert np.median(still) < 0.6 * np.median(moved), (np.median(still), np.median(moved))
