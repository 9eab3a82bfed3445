"""Each anatomy and fidelity term is ~0 on a clean case, positive on a case built to violate it, and falls when
gradient descent works on that case."""

from __future__ import annotations

import math

import pytest
import torch

from bgfs_core.losses import (
    bone_constancy_loss,
    confidence_loss,
    joint_limit_loss,
    latent_proximity_loss,
    pixel_proximity_loss,
    smoothness_loss,
    target_loss,
    warp_smoothness_loss,
    warp_temporal_loss,
)
from bgfs_core.regions import get_region

HANDS = get_region("hands")


def straight_hand(t: int = 12) -> torch.Tensor:
    """A hand with straight, evenly spaced fingers, gliding to the right at constant speed: [T, 1, 21, 2]."""
    pts = torch.zeros(21, 2)
    for f, chain in enumerate(HANDS.chains):
        angle = math.radians(-60 + 30 * f)
        for j, k in enumerate(chain[1:], start=1):
            pts[k] = torch.tensor([math.sin(angle), -math.cos(angle)]) * 0.25 * j
    glide = torch.linspace(0, 1, t)[:, None, None] * torch.tensor([0.3, 0.0])
    return (pts[None] + glide)[:, None]


def descend(loss_fn, points: torch.Tensor, steps: int = 60, lr: float = 0.01) -> tuple[float, float]:
    p = points.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    first = float(loss_fn(p).detach())
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    return first, float(loss_fn(p).detach())


def valid_like(points: torch.Tensor) -> torch.Tensor:
    return torch.ones(points.shape[:-1], dtype=torch.bool)


def test_bone_constancy():
    clean = straight_hand()
    valid = valid_like(clean)
    assert float(bone_constancy_loss(clean, valid, HANDS)) < 1e-3
    stretched = clean.clone()
    stretched[::3, 0, 8] += torch.tensor([0.0, -0.15])  # index fingertip pulled away every third frame
    bad = float(bone_constancy_loss(stretched, valid, HANDS))
    assert bad > 0.005
    first, last = descend(lambda p: bone_constancy_loss(p, valid, HANDS), stretched, steps=200, lr=0.003)
    assert last < 0.3 * first


def test_smoothness_skips_dropouts():
    clean = straight_hand()
    valid = valid_like(clean)
    assert float(smoothness_loss(clean, valid)) < 1e-3  # constant velocity has no second difference
    jittery = clean + 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert float(smoothness_loss(jittery, valid)) > 0.02
    first, last = descend(lambda p: smoothness_loss(p, valid), jittery)
    assert last < 0.5 * first
    # a frame flagged invalid (a detection dropout) takes no part, however wild its keypoints
    wild = clean.clone()
    wild[5] += 10.0
    holes = valid.clone()
    holes[5] = False
    assert float(smoothness_loss(wild, holes)) < 1e-3


def test_joint_limits_catch_a_finger_bent_backwards():
    clean = straight_hand(4)
    curled = clean.clone()
    # curl every finger forwards a little (same direction), so the hand has a clear curl sign
    for chain in HANDS.chains[1:]:
        for k in chain[2:]:
            curled[:, 0, k, 0] += 0.05 * (k - chain[1])
    valid = valid_like(curled)
    assert float(joint_limit_loss(curled, valid, HANDS)) < 1e-6
    broken = curled.clone()
    # bend the index fingertip hard against the others (hyperextended DIP)
    pip, dip, tip = 6, 7, 8
    d = broken[:, 0, dip] - broken[:, 0, pip]
    broken[:, 0, tip] = broken[:, 0, dip] + torch.stack([-d[:, 1], d[:, 0]], -1) * -1.0
    assert float(joint_limit_loss(broken, valid, HANDS)) > 0.1
    first, last = descend(lambda p: joint_limit_loss(p, valid, HANDS), broken, steps=100)
    assert last < 0.3 * first


def test_confidence_and_fidelity_terms():
    conf = torch.full((4, 2, 21), 0.2)
    present = torch.tensor([[True, False]] * 4)
    assert float(confidence_loss(conf, present)) == pytest.approx(0.8)
    assert float(confidence_loss(torch.ones_like(conf), present)) == 0.0
    z0 = torch.randn(1, 16, 3, 8, 8)
    assert float(latent_proximity_loss(z0, z0)) == 0.0
    assert float(latent_proximity_loss(z0 + 0.1, z0)) > 0.0
    frames0 = torch.rand(3, 3, 16, 16)
    outside = torch.ones(3, 1, 16, 16)
    outside[..., 4:12, 4:12] = 0
    changed_inside = frames0.clone()
    changed_inside[..., 4:12, 4:12] += 0.5
    assert float(pixel_proximity_loss(changed_inside, frames0, outside)) == 0.0
    assert float(pixel_proximity_loss(frames0 + 0.1, frames0, outside)) == pytest.approx(0.01, rel=1e-4)


def test_warp_smoothness():
    flat = torch.zeros(3, 2, 8, 8)
    assert float(warp_smoothness_loss(flat + 1.0)) == 0.0  # a uniform shift is perfectly smooth
    rough = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    assert float(warp_smoothness_loss(rough)) > 0.5


def test_target_loss():
    start = straight_hand()
    valid = valid_like(start)
    move = torch.zeros_like(start)
    move[:, 0, 8] = torch.tensor([0.0, -0.05])  # ask the index fingertip to move up
    assert float(target_loss(start + move, start, move, valid)) < 1e-6
    assert float(target_loss(start, start, move, ~valid)) == 0.0  # no valid target: nothing asked
    first, last = descend(lambda p: target_loss(p, start, move, valid), start, steps=100, lr=0.003)
    assert first > 0.001 and last < 0.2 * first


def test_warp_temporal():
    flow = torch.zeros(4, 2, 3, 3)
    assert float(warp_temporal_loss(flow + 1.0)) == 0.0  # the same field every frame
    assert float(warp_temporal_loss(flow[:1])) == 0.0  # one frame: nothing to compare
    flow[2] = 1.0
    assert float(warp_temporal_loss(flow)) > 0.5
