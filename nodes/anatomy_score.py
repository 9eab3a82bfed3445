"""BGFS Anatomy Score: MediaPipe's independent judgement of a video's anatomy -> score, summary, needs_fixing."""

from __future__ import annotations

from comfy_api.latest import io

from .glue import CATEGORY, node_errors
from .roi_detect import region_input

NAME = "BGFS Anatomy Score"


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
                io.Image.Input("reference", optional=True,
                               tooltip="Optional reference frames of the same length and size (e.g. the video "
                               "before fixing): adds before/after plots and fidelity numbers."),
            ],
            outputs=[
                io.Float.Output(display_name="score"),
                io.String.Output(display_name="summary"),
                io.Boolean.Output(display_name="needs_fixing"),
            ],
        )

    @classmethod
    def execute(cls, images, region: str, threshold: float, fps: float, reference=None) -> io.NodeOutput:
        raise NotImplementedError
