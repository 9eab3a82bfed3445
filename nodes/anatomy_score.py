"""BGFS Anatomy Score: MediaPipe's independent judgement of a video's anatomy -> score, summary, needs_fixing."""

from __future__ import annotations

from comfy_api.latest import io

from ..bgfs_core.detection import BACKENDS
from .glue import CATEGORY, node_errors
from .roi_detect import region_input

NAME = "BGFS Anatomy Score"
NOT_FOUND = -1.0  # the score output when the region is never found (the summary says so)


class BGFSAnatomyScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSAnatomyScore",
            display_name=NAME,
            category=CATEGORY,
            description="Scores the anatomical and kinematic consistency of a region in a video (0-100, higher "
            "is better) with MediaPipe, never with the critic the fixer optimises; with a reference it also "
            "measures fidelity (PSNR/SSIM inside and outside the ROI, flicker).",
            inputs=[
                io.Image.Input("images", tooltip="The video frames to judge (an IMAGE batch), e.g. the final VAE "
                               "Decode."),
                region_input("Which body region to judge."),
                io.Float.Input("threshold", default=70.0, min=0.0, max=100.0, step=1.0,
                               tooltip="needs_fixing is true when the score is below this."),
                io.Float.Input("fps", default=16.0, min=1.0, max=240.0, step=1.0,
                               tooltip="Frame rate of the frames (for MediaPipe tracking and the plots' time axis)."),
                io.Combo.Input("backend", options=list(BACKENDS), default="solutions",
                               tooltip="MediaPipe backend: 'solutions' (models bundled with mediapipe<=0.10.21, "
                               "offline) or 'tasks' (.task model files in models/mediapipe)."),
                io.Image.Input("reference", optional=True,
                               tooltip="Optional reference frames of the same length and size (e.g. the video "
                               "before fixing): adds before/after plots and fidelity numbers."),
            ],
            outputs=[
                io.Float.Output(display_name="score", tooltip="0-100, higher is better; -1 when the region is "
                                "never found (the summary says so)."),
                io.String.Output(display_name="summary"),
                io.Boolean.Output(display_name="needs_fixing",
                                  tooltip="score < threshold; false when the region is never found."),
            ],
        )

    @classmethod
    def execute(cls, images, region: str, threshold: float, fps: float, backend: str,
                reference=None) -> io.NodeOutput:  # fmt: skip
        from ..bgfs_core.metrics import score_video
        from ..bgfs_core.tracks import align_tracks, labelled_tracks
        from .glue import RoiData, crop_labels, crops_at, image_to_uint8, merge_ui, preview_ui, roi_boxes
        from .host import mediapipe_progress

        with node_errors(NAME):
            frames = image_to_uint8(images)
            ref = image_to_uint8(reference) if reference is not None else None
            with mediapipe_progress() as model_dir:
                result = score_video(frames, region, reference=ref, fps=float(fps),
                                     detector_kwargs={"backend": backend, "model_dir": model_dir})  # fmt: skip
            plots = _plots(result)
        score = NOT_FOUND if result.score is None else float(result.score)
        needs = bool(result.needs_fixing(float(threshold)))
        verdict = "not found: nothing to fix" if result.score is None else (
            f"{'needs fixing' if needs else 'fine'} (threshold {threshold:g})")
        summary = f"{result.summary}\nVerdict: {verdict}"

        # The widget: crops of the judged video with MediaPipe's keypoints; with a reference, the reference first
        # and the judged video as "after", both cut with the same boxes so the tiles compare one to one. Each
        # video's hands are followed by position (as the score follows them), and the judged video's tracks are
        # put in the slots of the reference's they lie on, whatever MediaPipe named them in either.
        det, names, _ = labelled_tracks(result.detections)
        ref_det = None
        if result.ref_detections is not None:
            ref_det, names, _ = labelled_tracks(result.ref_detections)
            det = align_tracks(det, ref_det)
        box_det = det if det.present.any() or ref_det is None else ref_det
        boxes = roi_boxes(RoiData(box_det))
        crops, kp, conf = crops_at(frames, det, boxes)
        labels = crop_labels(det, boxes, names)
        widget = None
        if ref is None:
            widget = preview_ui("score", region, crops, _heat(kp, conf, crops), kp, labels=labels)
        elif len(crops):
            rcrops, rkp, rconf = crops_at(ref, ref_det, boxes)
            widget = preview_ui("score", region, rcrops, _heat(rkp, rconf, rcrops), rkp, after_crops=crops,
                                after_heatmaps=_heat(kp, conf, crops), after_keypoints=kp, labels=labels)
        ui = merge_ui({"text": [summary], "images": plots}, widget)
        return io.NodeOutput(score, summary, needs, ui=ui)


def _heat(kp, conf, crops):
    from .glue import keypoint_heatmaps

    return keypoint_heatmaps(kp, conf, crops.shape[1], min_conf=0.3) if len(crops) else None


def _plots(result) -> list[dict]:
    """The report's plots (trajectories, bone lengths, per-frame score) in ComfyUI's temp folder, as
    ``ui["images"]`` entries; none when the region was found nowhere (nothing to plot)."""
    from ..bgfs_core.report import render_plots
    from .host import save_temp_image

    if not result.found and (result.reference is None or not result.reference.found):
        return []
    return [save_temp_image(png, f"bgfs_score_{name}") for name, png in render_plots(result).items()]
