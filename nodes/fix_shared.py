"""What both Fixer nodes do after the fix: the guard's verdict (MediaPipe on the fixed frames) and the widget's
before/after preview. Imports ComfyUI, so only the nodes use it."""

from __future__ import annotations

import time
from typing import Any


def fix_settings(name: str, roi: Any, steps: int, lr: float, strength: float, mode: str, guide: float,
                 keep_first_frame: bool) -> Any:
    """Both Fixer nodes' widgets as checked FixSettings. The crop margin, confidence and box smoothing come from
    ROI Detect, so the fixer crops the region as the detection did; the run is logged as it starts."""
    import logging

    from ..bgfs_core.fixer import FixSettings

    settings = FixSettings(steps=int(steps), lr=float(lr), strength=float(strength), mode=mode, guide=float(guide),
                           margin=roi.margin, min_conf=roi.min_conf, smooth=roi.smooth,
                           keep_first_frame=bool(keep_first_frame))  # fmt: skip
    settings.validate()
    logging.info("%s: %d steps (%s mode) on the %s in %d frames", name, settings.steps, settings.mode, roi.region,
                 roi.num_frames)  # fmt: skip
    return settings


def guard_keeps(roi: Any, images: Any, report: dict, started: float, kept_as: str,
                what: str = "the fixed decode") -> bool:
    """Whether the edit is kept: MediaPipe on ``images`` (an IMAGE batch of the fixed frames) against ROI Detect's
    detections of the input, as ``bgfs fix`` judges. The verdict and its cost (from ``started``) go into ``report``;
    ``kept_as`` names what comes out instead when the geometry got worse ("the input latent")."""
    import comfy.model_management as mm

    from ..bgfs_core.fix_video import geometry_worse, judge_detections
    from .glue import image_to_uint8
    from .host import mediapipe_progress

    mm.throw_exception_if_processing_interrupted()
    with mediapipe_progress() as model_dir:
        judge = judge_detections(roi.detections, image_to_uint8(images), fps=roi.fps,
                                 detector_kwargs={"backend": roi.backend, "model_dir": model_dir}, what=what)  # fmt: skip
    judge["seconds"] = time.perf_counter() - started  # what the guard costs
    report["judge"] = judge
    report["summary"] += f"\n{judge['summary']} (guard: {judge['seconds']:.1f} s)"
    if geometry_worse(judge):
        report["guard_kept_input"] = True
        report["summary"] += (f"\nGuard: the geometry got worse, so the output is {kept_as} unchanged (set guard to "
                              "false to keep the edit anyway).")  # fmt: skip
        return False
    return True


def fix_ui(result: Any, roi: Any) -> dict | None:
    """The node's text and heatmap widget: the ROI before the fix and, when the edit was kept, after it. The
    slider names each crop as ROI Detect's does ("17/81 left"), not by its number among the window's crops."""
    from .glue import merge_ui, pair_labels, preview_ui

    prev = result.preview or {}
    if result.report.get("guard_kept_input"):  # the edit was not kept: preview only what comes out, the input
        prev = {k: v for k, v in prev.items() if not k.startswith("after_")}
    labels = None
    if prev.get("crop_frames") is not None:
        # ROI Detect's names: following its tracks again would name already-followed slots by their order
        labels = pair_labels(zip(prev["crop_frames"], prev["crop_instances"]), roi.num_frames, roi.names)
    widget = preview_ui("fix", roi.region, prev.get("crops"), prev.get("heatmaps"), prev.get("keypoints"),
                        after_crops=prev.get("after_crops"), after_heatmaps=prev.get("after_heatmaps"),
                        after_keypoints=prev.get("after_keypoints"), labels=labels)  # fmt: skip
    return merge_ui({"text": [result.report.get("summary", "")]}, widget)
