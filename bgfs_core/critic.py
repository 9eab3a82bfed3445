"""The heatmap critic: a small, differentiable network that finds a region's keypoints in an ROI crop.

It is trained on MediaPipe pseudo-labels (``train_critic.py``) and then used by the fixer, which backpropagates
through it (in eval mode, often one crop at a time) to move the keypoints it sees. Hence GroupNorm, which behaves
the same for one crop or many and in train or eval mode, and smooth SiLU activations, whose gradients do not switch
on and off.

Output: non-negative heatmaps ``[N, K, hh, hw]``: per keypoint a softmax over the pixels, scaled by ``2 pi
sigma^2``, the mass of the training target (a Gaussian of peak 1 and ``spec.sigma`` heatmap pixels). A confident
prediction thus looks like its target, peak ~1; an unsure one is spread out, with a low peak. The temperature-free
``heatmaps.soft_argmax`` is then the expected position under that distribution (integral regression), and its
confidence (the map's height at the point) is ~1 for a clear keypoint. Each map always holds the same mass, so a
keypoint the critic cannot see gives a flat, low map rather than an empty one. ``predict_keypoints`` returns the
points in crop pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import __version__
from .regions import get_region

if TYPE_CHECKING:
    import torch

    from .config import Config


@dataclass(frozen=True)
class CriticSpec:
    """Everything needed to rebuild a critic: stored in the metadata of every critic file."""

    region: str
    keypoint_names: tuple[str, ...]
    input_hw: tuple[int, int] = (128, 128)  # crops are resized to this inside forward
    heatmap_hw: tuple[int, int] = (64, 64)  # resolution of the predicted heatmaps
    sigma: float = 2.0  # Gaussian sigma of the training targets, in heatmap pixels
    width: int = 32  # base channel width
    version: str = field(default=__version__)  # bgfs version that built it

    def __post_init__(self) -> None:
        # Normalise lists (from JSON / YAML) to tuples so that specs compare and hash by value.
        object.__setattr__(self, "keypoint_names", tuple(self.keypoint_names))
        object.__setattr__(self, "input_hw", (int(self.input_hw[0]), int(self.input_hw[1])))
        object.__setattr__(self, "heatmap_hw", (int(self.heatmap_hw[0]), int(self.heatmap_hw[1])))
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "width", int(self.width))

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @classmethod
    def for_region(cls, region: str, **kwargs: Any) -> CriticSpec:
        """A spec for a named region (keypoint names taken from ``regions.py``)."""
        return cls(region=region, keypoint_names=get_region(region).keypoint_names, **kwargs)

    @classmethod
    def from_config(cls, cfg: Config) -> CriticSpec:
        """The spec that ``cfg`` asks for (region from ``roi.region``, the rest from ``critic.*``)."""
        c = cfg.critic
        return cls.for_region(
            cfg.roi.region, input_hw=tuple(c.input_hw), heatmap_hw=tuple(c.heatmap_hw), sigma=c.heatmap_sigma,
            width=c.width,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_model(self, other: CriticSpec) -> bool:
        """True when both specs build the same network (the version may differ)."""
        a, b = self.to_dict(), other.to_dict()
        a.pop("version")
        b.pop("version")
        return a == b


def _norm(channels: int) -> Any:
    import torch.nn as nn

    return nn.GroupNorm(min(8, channels), channels)


def _conv(cin: int, cout: int, stride: int = 1) -> Any:
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(cout), nn.SiLU())


def _build_layers(spec: CriticSpec) -> dict[str, Any]:
    """A small U-Net: four stride-2 stages down to 1/16, bilinear upsampling with skips back up to 1/2."""
    import torch.nn as nn

    w = spec.width
    return {
        "stem": nn.Sequential(_conv(3, w, 2), _conv(w, w)),  # 1/2
        "down2": nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w)),  # 1/4
        "down3": nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w)),  # 1/8
        "down4": nn.Sequential(_conv(4 * w, 4 * w, 2), _conv(4 * w, 4 * w)),  # 1/16: context of the whole crop
        "up3": _conv(8 * w, 2 * w),
        "up2": _conv(4 * w, w),
        "up1": _conv(2 * w, w),
        "head": nn.Conv2d(w, spec.num_keypoints, 1),
    }


def __getattr__(name: str) -> Any:
    # PEP 562: ``HeatmapCritic`` subclasses torch.nn.Module, so it is defined on first access, not at import time.
    if name == "HeatmapCritic":
        globals()[name] = cls = _define_critic_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_critic_class() -> type:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    class HeatmapCritic(nn.Module):
        """Crop ``[N, 3, H, W]`` in [0, 1] -> non-negative keypoint heatmaps ``[N, K, *spec.heatmap_hw]``.

        Any crop size is accepted: crops are resized to ``spec.input_hw`` inside ``forward``, differentiably.
        """

        def __init__(self, spec: CriticSpec) -> None:
            super().__init__()
            self.spec = spec
            for name, layer in _build_layers(spec).items():
                self.add_module(name, layer)
            nn.init.normal_(self.head.weight, std=1e-3)  # start from flat maps: no keypoint preferred
            nn.init.zeros_(self.head.bias)
            self.map_mass = 2 * math.pi * spec.sigma**2  # sum of a Gaussian of peak 1 on the pixel grid

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            if crops.ndim != 4 or crops.shape[1] != 3:
                raise ValueError(f"HeatmapCritic expects crops [N, 3, H, W], got {tuple(crops.shape)}")
            x = crops.to(self.head.weight.dtype)
            if tuple(x.shape[-2:]) != self.spec.input_hw:
                shrink = x.shape[-2] > self.spec.input_hw[0] or x.shape[-1] > self.spec.input_hw[1]
                x = F.interpolate(x, size=self.spec.input_hw, mode="bilinear", align_corners=False, antialias=shrink)
            x = (x - 0.5) / 0.25
            f1 = self.stem(x)
            f2 = self.down2(f1)
            f3 = self.down3(f2)
            f4 = self.down4(f3)
            y = self.up3(torch.cat([up(f4, f3), f3], 1))
            y = self.up2(torch.cat([up(y, f2), f2], 1))
            y = self.up1(torch.cat([up(y, f1), f1], 1))
            y = self.head(y)
            if tuple(y.shape[-2:]) != self.spec.heatmap_hw:
                y = F.interpolate(y, size=self.spec.heatmap_hw, mode="bilinear", align_corners=False)
            # Spatial softmax per keypoint, scaled to the mass of the target Gaussian (see the module docstring).
            n, k, h, w = y.shape
            return torch.softmax(y.reshape(n, k, h * w), -1).reshape(n, k, h, w) * self.map_mass

        def predict_keypoints(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Keypoints in the crops' pixel coordinates ``[N, K, 2]``, confidence ``[N, K]`` and the heatmaps."""
            heatmaps = self(crops)
            points, confidence = soft_argmax_crop(heatmaps, (int(crops.shape[-2]), int(crops.shape[-1])))
            return points, confidence, heatmaps

        @property
        def num_parameters(self) -> int:
            return sum(p.numel() for p in self.parameters())

    HeatmapCritic.__module__ = __name__
    HeatmapCritic.__qualname__ = "HeatmapCritic"
    return HeatmapCritic


def soft_argmax_crop(heatmaps: torch.Tensor, crop_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``heatmaps.soft_argmax`` rescaled from heatmap pixels to the pixels of a crop of size ``crop_hw``."""
    from .heatmaps import soft_argmax

    points, confidence = soft_argmax(heatmaps)
    hh, hw = heatmaps.shape[-2:]
    # Pixel i covers [i, i + 1) at both resolutions, so coordinates scale by the size ratio.
    scale = points.new_tensor([crop_hw[1] / hw, crop_hw[0] / hh])
    return points * scale, confidence
