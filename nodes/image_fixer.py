"""BGFS Image Anatomy Fixer: the same fix on decoded frames (an IMAGE batch), for videos that are already made."""

from __future__ import annotations

from comfy_api.latest import io

from ..bgfs_core.config import FIXER_MODES
from .glue import CATEGORY, node_errors
from .sockets import CriticType, RoiType

NAME = "BGFS Image Anatomy Fixer"


class BGFSImageAnatomyFixer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSImageAnatomyFixer",
            display_name=NAME,
            category=CATEGORY,
            description="Edits the frames themselves inside the region of interest, as `bgfs fix` does without a VAE: "
            "for a video that is already decoded or made elsewhere (Load Video). For Wan latents before VAE Decode, "
            "use the Latent Anatomy Fixer. Pixels outside the fix's window stay as they were, bit for bit.",
            inputs=[
                io.Image.Input("images", tooltip="The video's frames, e.g. from Load Video -> Get Video Components."),
                RoiType.Input("roi", tooltip="Where the region is, from BGFS ROI Detect run on these images."),
                CriticType.Input("critic", optional=True,
                                 tooltip="A heatmap critic for the same region, trained on footage like this video "
                                 "(see the Latent Anatomy Fixer). Leave it unconnected to let the guide alone move "
                                 "the region (warp mode, guide > 0)."),
                io.Int.Input("steps", default=30, min=0, max=10000, step=1,
                             tooltip="Optimisation steps (0 passes the frames through)."),
                io.Float.Input("lr", default=0.035, min=0.0001, max=10.0, step=0.0001,
                               tooltip="Step size of the optimiser: in warp mode, control-point spacings per step; "
                               "in latent mode, pixel units per step."),
                io.Float.Input("strength", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Weight of the anatomy terms against the fidelity terms."),
                io.Combo.Input("mode", options=list(FIXER_MODES), default="warp",
                               tooltip="warp: a smooth displacement of the pixels inside the ROI, which moves anatomy "
                               "rather than repainting it; latent: optimise the pixel values in the ROI directly."),
                io.Float.Input("guide", default=3.0, min=0.0, max=100.0, step=0.1, optional=True,
                               tooltip="Pull towards the ROI's own keypoint trajectories, cleaned of jitter and "
                               "stretching. 0 leaves only the critic's anatomy terms."),
                io.Boolean.Input("guard", default=True, optional=True,
                                 tooltip="Run MediaPipe on the fixed frames and pass the input frames through "
                                 "unchanged when the region's geometry (detection, jitter, bone lengths, joint "
                                 "limits) got worse than ROI Detect found it."),
                io.Boolean.Input("keep_first_frame", default=False, optional=True,
                                 tooltip="Leave the first frame exactly as it is: an I2V start image, or the last "
                                 "frame of the clip before when clips are chained; the edit starts at frame 2."),
            ],
            outputs=[
                io.Image.Output(display_name="images"),
                io.String.Output(display_name="report"),
            ],
        )

    @classmethod
    def execute(cls, images, roi, steps: int, lr: float, strength: float, mode: str, critic=None, guide: float = 3.0,
                guard: bool = True, keep_first_frame: bool = False) -> io.NodeOutput:  # fmt: skip
        import time

        import comfy.model_management as mm
        import comfy.utils

        from .fix_shared import fix_settings, fix_ui, guard_keeps
        from .glue import check_roi, dumps_report, progress_preview, rgb_image, run_fix_frames
        from .host import free_device_memory, released_on_out_of_memory

        with node_errors(NAME), released_on_out_of_memory(NAME):
            roi = check_roi(roi)
            settings = fix_settings(NAME, roi, steps, lr, strength, mode, guide, keep_first_frame)
            pbar = comfy.utils.ProgressBar(max(int(steps), 1))

            def on_step(step: int, total: int, losses: dict, crop) -> None:
                pbar.update_absolute(step, total, progress_preview(crop))

            out, result = run_fix_frames(images, critic, roi, settings, mm.get_torch_device(), on_step=on_step,
                                         check_cancel=mm.throw_exception_if_processing_interrupted,
                                         free_memory=lambda: free_device_memory(NAME, "starting again"))  # fmt: skip
            report = result.report
            if guard and report.get("changed") and not guard_keeps(roi, out, report, time.perf_counter(),
                                                                    "the input", what="the fixed frames"):
                out = rgb_image(images)  # as every other output of this node: RGB float32 on the CPU
        return io.NodeOutput(out, dumps_report(report), ui=fix_ui(result, roi))
