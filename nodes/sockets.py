"""The pack's custom socket types (stable names: workflows refer to them)."""

from __future__ import annotations

from comfy_api.latest import io

RoiType = io.Custom("BGFS_ROI")  # glue.RoiData: detections + ROI settings, from BGFS ROI Detect
CriticType = io.Custom("BGFS_CRITIC")  # glue.CriticData: heatmap critic + spec, from the loader or the trainer
