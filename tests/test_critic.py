"""The heatmap critic network and its safetensors files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch

from bgfs_core.critic import CriticSpec, HeatmapCritic
from bgfs_core.critic_io import load_critic, read_critic_meta, save_critic
from bgfs_core.errors import BGFSError


def _critic(region: str = "hands", seed: int = 0, **kwargs) -> tuple[HeatmapCritic, CriticSpec]:
    torch.manual_seed(seed)
    spec = CriticSpec.for_region(region, **kwargs)
    return HeatmapCritic(spec).eval(), spec


def test_importing_the_modules_does_not_import_torch():
    code = "import sys, bgfs_core.critic, bgfs_core.critic_io, bgfs_core.train_critic; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(("region", "k"), [("hands", 21), ("face", 28)])
def test_forward_shapes_and_any_crop_size(region, k):
    model, spec = _critic(region)
    assert 300_000 <= model.num_parameters <= 1_000_000
    with torch.no_grad():
        for hw in ((128, 128), (256, 256), (96, 80)):
            out = model(torch.rand(2, 3, *hw))
            assert out.shape == (2, k, 64, 64)
            assert torch.isfinite(out).all() and (out >= 0).all()
        points, conf, heatmaps = model.predict_keypoints(torch.rand(3, 3, 256, 256))
    assert points.shape == (3, k, 2) and conf.shape == (3, k) and heatmaps.shape == (3, k, 64, 64)
    # An untrained critic's maps are flat, so its points sit at the centre of the crops that were passed in
    # (128 of 256 crop pixels, not 32 of 64 heatmap pixels) with a low confidence.
    assert (points - 128).abs().max() < 4 and conf.max() < 0.1


def test_other_heatmap_and_input_sizes():
    model, _ = _critic(input_hw=(96, 96), heatmap_hw=(32, 32), width=16)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 128, 128)).shape == (1, 21, 32, 32)


def test_one_crop_gives_the_same_maps_alone_or_in_a_batch():
    """GroupNorm: the fixer runs the critic on single crops in eval mode; batch-mates must not change them."""
    model, _ = _critic()
    crops = torch.rand(4, 3, 128, 128)
    with torch.no_grad():
        batch = model(crops)
        single = model(crops[1:2])
    torch.testing.assert_close(single[0], batch[1], atol=1e-5, rtol=1e-4)


def test_keypoint_gradient_reaches_the_crop():
    model, _ = _critic()
    crop = torch.rand(1, 3, 256, 256, requires_grad=True)
    points, conf, _ = model.predict_keypoints(crop)
    (points[0, 8] - torch.tensor([10.0, 10.0])).pow(2).sum().backward()  # pull the index tip to a corner
    grad = crop.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # A step against the gradient moves the predicted point towards the target.
    with torch.no_grad():
        before = (points[0, 8] - 10.0).norm()
        moved, _, _ = model.predict_keypoints(crop - 1e-2 * grad / grad.abs().max())
        assert (moved[0, 8] - 10.0).norm() < before


def test_save_load_roundtrip_is_exact(tmp_path):
    model, spec = _critic("face", seed=3, width=16)
    path = save_critic(tmp_path / "c.safetensors", model, spec, {"val_pck": 0.5, "train_summary": {"clips": 3}})
    loaded, spec2, meta = load_critic(path, region="face")
    assert spec2.same_model(spec)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["val_pck"] == 0.5 and meta["train_summary"] == {"clips": 3}
    assert meta["region"] == "face" and meta["width"] == 16 and meta["input_hw"] == [128, 128]
    assert read_critic_meta(path) == meta
    assert not list(tmp_path.glob("*.partial*"))  # the atomic write left no temporary file
    # readable by others as any file the user writes (a ComfyUI run as another user loads it), not 0600
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_wrong_region_is_refused_with_advice(tmp_path):
    model, spec = _critic("face", width=8)
    path = save_critic(tmp_path / "face.safetensors", model, spec)
    msg = r"face\.safetensors was trained for 'face', but region 'hands' was asked: train one for hands or pick another"
    with pytest.raises(BGFSError, match=msg):
        load_critic(path, region="hands")


def test_files_that_are_not_critics(tmp_path):
    with pytest.raises(BGFSError, match="does not exist"):
        load_critic(tmp_path / "missing.safetensors")
    pickled = tmp_path / "critic_best.pt"
    torch.save({"w": torch.zeros(3)}, pickled)
    with pytest.raises(BGFSError, match="not a safetensors file"):
        load_critic(pickled)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    with pytest.raises(BGFSError, match="not a BGFS critic"):
        read_critic_meta(other)
    # Right metadata, wrong weights: a clear error rather than a torch traceback.
    from bgfs_core.critic_io import read_raw_metadata

    model, spec = _critic(width=8)
    meta = read_raw_metadata(save_critic(tmp_path / "good.safetensors", model, spec))
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(3)}, str(bad), metadata=meta)
    with pytest.raises(BGFSError, match="do not load"):
        load_critic(bad)

