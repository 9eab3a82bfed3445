"""BGFS ROI Detect: MediaPipe on a frame batch -> BGFS_ROI, a per-frame ROI MASK and a keypoint overlay."""

from __future__ import annotations

from comfy_api.latest import io

from ..bgfs_core.detection import BACKENDS
from ..bgfs_core.regions import REGION_NAMES
from .glue import CATEGORY, node_errors
from .sockets import RoiType

NAME = "BGFS ROI Detect"


def region_input(tooltip: str) -> io.Combo.Input:
    return io.Combo.Input("region", options=list(REGION_NAMES), default="hands", tooltip=tooltip)


class BGFSROIDetect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSROIDetect",
            display_name=NAME,
            category=CATEGORY,
            description="Finds a body region (hands, face, feet, ...) in every frame with MediaPipe and gives the "
            "region of interest the Latent Anatomy Fixer works on, as a mask and as a keypoint overlay.",
            inputs=[
                io.Image.Input("images", tooltip="The video frames (an IMAGE batch), e.g. a VAE Decode of the "
                               "latents you want to fix, or Get Video Components of a loaded video."),
                region_input("Which body region to find: hands (both, with handedness), face, feet, upper_body "
                             "or full_body."),
                io.Float.Input("margin", default=0.25, min=0.0, max=2.0, step=0.05,
                               tooltip="How much the ROI box grows beyond the keypoints, as a fraction of its size "
                               "on every side."),
                io.Float.Input("min_conf", default=0.3, min=0.0, max=1.0, step=0.05,
                               tooltip="Keypoints whose confidence is below this do not shape the ROI."),
                io.Float.Input("smooth", default=0.6, min=0.0, max=0.99, step=0.05,
                               tooltip="Temporal smoothing of the ROI boxes (0: none; towards 1: steadier crops)."),
                io.Combo.Input("backend", options=list(BACKENDS), default="solutions",
                               tooltip="MediaPipe backend: 'solutions' (models bundled with mediapipe<=0.10.21, "
                               "offline) or 'tasks' (.task model files in models/mediapipe)."),
                io.Float.Input("fps", default=16.0, min=1.0, max=240.0, step=1.0,
                               tooltip="Frame rate of the frames, for MediaPipe's tracking between frames "
                               "(Wan 2.2 14B: 16, TI2V-5B: 24)."),
            ],
            outputs=[
                RoiType.Output(display_name="roi"),
                io.Mask.Output(display_name="mask"),
                io.Image.Output(display_name="overlay"),
            ],
        )

    @classmethod
    def execute(cls, images, region: str, margin: float, min_conf: float, smooth: float, backend: str,
                fps: float) -> io.NodeOutput:  # fmt: skip
        import logging

        from ..bgfs_core.detection import detect_video
        from ..bgfs_core.tracks import labelled_tracks
        from .glue import (
            RoiData,
            crop_labels,
            cuts_text,
            draw_overlay,
            image_to_uint8,
            keypoint_heatmaps,
            mask_to_tensor,
            merge_ui,
            preview_ui,
            roi_boxes,
            roi_crops,
            roi_mask_frames,
            uint8_to_image,
        )
        from .host import mediapipe_progress

        with node_errors(NAME):
            frames = image_to_uint8(images)
            logging.info("%s: %s in %d frames (%dx%d)", NAME, region, len(frames), frames.shape[2], frames.shape[1])
            with mediapipe_progress() as model_dir:
                det = detect_video(frames, region, fps=fps, backend=backend, model_dir=model_dir)
            # each ROI follows one hand by position (a handedness label that flips would make it jump)
            det, names, relinked = labelled_tracks(det, min_conf)
            roi = RoiData(det, margin=margin, min_conf=min_conf, smooth=smooth, backend=backend, fps=float(fps),
                          track_names=names)
            boxes = roi_boxes(roi)
            mask = roi_mask_frames(roi)
            overlay = draw_overlay(frames, det, boxes, min_conf=min_conf)
            crops, keypoints, conf = roi_crops(frames, roi)
            labels = crop_labels(det, boxes, names)
            heatmaps = keypoint_heatmaps(keypoints, conf, crops.shape[1], min_conf=min_conf) if len(crops) else None
        found = int(det.present.any(1).sum())
        text = (f"{region}: found in {found} of {det.num_frames} frames "
                f"({det.frame_hw[1]}x{det.frame_hw[0]}, {len(crops)} ROI crops)")  # fmt: skip
        if relinked:
            text += (f"; MediaPipe's left/right labels changed places (or a hand was found twice) in {relinked} "
                     "frames: each ROI follows one hand by position")
        text += cuts_text(det, min_conf)
        if found == 0:
            text += "; nothing to fix there: a Fixer will pass its input through unchanged"
        ui = merge_ui({"text": [text]}, preview_ui("detect", region, crops, heatmaps, keypoints, labels=labels))
        return io.NodeOutput(roi, mask_to_tensor(mask), uint8_to_image(overlay), ui=ui)
