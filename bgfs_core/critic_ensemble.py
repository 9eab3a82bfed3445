"""Several critics as one: the mean of their heatmaps.

The fixer optimises against the critic, so it finds and exploits whatever one critic gets wrong. Critics trained
on the same data with different seeds or augmentation err in different places; against their mean heatmaps an
edit has to move what all of them see. The mean of the members' maps is again a distribution of the same mass,
so the soft-argmax of the mean is the mean of their soft-argmaxes.
"""

from __future__ import annotations

from typing import Any

from .critic import CriticSpec
from .errors import BGFSError


def check_compatible(specs: list[CriticSpec], names: list[str]) -> None:
    """Members must predict the same keypoints of the same region on the same heatmap grid."""
    first = specs[0]
    for spec, name in zip(specs[1:], names[1:]):
        if (spec.region, spec.keypoint_names, spec.heatmap_hw, spec.sigma) != (
            first.region, first.keypoint_names, first.heatmap_hw, first.sigma,
        ):  # fmt: skip
            raise BGFSError(
                f"critic {name!r} ({spec.region}, {len(spec.keypoint_names)} keypoints, heatmaps {spec.heatmap_hw}, "
                f"sigma {spec.sigma}) cannot join {names[0]!r} ({first.region}, {len(first.keypoint_names)} "
                f"keypoints, heatmaps {first.heatmap_hw}, sigma {first.sigma}): an ensemble needs critics trained "
                "with the same region and critic.heatmap_hw / critic.heatmap_sigma"
            )


def critic_ensemble(members: list[Any]) -> Any:
    """A module with a critic's interface (``spec``, ``forward``, ``predict_keypoints``) over ``members``."""
    import torch
    import torch.nn as nn

    from .critic import soft_argmax_crop

    if not members:
        raise BGFSError("an ensemble needs at least one critic")
    check_compatible([m.spec for m in members], [f"member {i}" for i in range(len(members))])

    class CriticEnsemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(members)
            self.spec = members[0].spec

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return torch.stack([m(crops) for m in self.members]).mean(0)

        def predict_keypoints(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            heatmaps = self(crops)
            points, confidence = soft_argmax_crop(heatmaps, (int(crops.shape[-2]), int(crops.shape[-1])))
            return points, confidence, heatmaps

        @property
        def num_parameters(self) -> int:
            return sum(p.numel() for p in self.parameters())

    return CriticEnsemble()
