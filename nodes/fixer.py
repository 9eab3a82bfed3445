"""BGFS Latent Anatomy Fixer: optimise a Wan video LATENT inside the ROI so the critic sees consistent anatomy."""

from __future__ import annotations

from comfy_api.latest import io

from ..bgfs_core.config import FIXER_MODES
from .glue import CATEGORY, node_errors
from .sockets import CriticType, RoiType

NAME = "BGFS Latent Anatomy Fixer"


class BGFSLatentAnatomyFixer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSLatentAnatomyFixer",
            display_name=NAME,
            category=CATEGORY,
            description="Edits the Wan latents inside the region of interest: moves the region along ROI Detect's "
            "cleaned keypoint tracks and, with a heatmap critic connected, so that the critic sees consistent bone "
            "lengths, smooth motion and plausible joint angles; the rest of the video is kept. With decode on it "
            "also gives the decoded frames (the guard's own decode when it keeps the edit).",
            inputs=[
                io.Latent.Input("latent", tooltip="The Wan video latent to fix (the second sampler's output): "
                                "16 channels for the Wan 2.1 VAE (14B models), 48 for the Wan 2.2 VAE (TI2V-5B)."),
                io.Vae.Input("vae", tooltip="The VAE these latents belong to (wan_2.1_vae or wan2.2_vae), as "
                             "loaded by Load VAE."),
                CriticType.Input("critic", optional=True,
                                 tooltip="A heatmap critic for the same region (BGFS Heatmap Critic Loader or BGFS "
                                 "Critic Trainer), trained on footage like this video: its bone, joint and "
                                 "smoothness terms add to the guide. Leave it unconnected to let the guide alone "
                                 "move the region (warp mode, guide > 0); the report says how well a critic reads "
                                 "these frames."),
                RoiType.Input("roi", tooltip="Where the region is, from BGFS ROI Detect run on frames decoded from "
                              "these latents."),
                io.Int.Input("steps", default=30, min=0, max=10000, step=1,
                             tooltip="Optimisation steps: more is a stronger correction but a higher risk of "
                             "texture drift (0 passes the latents through)."),
                io.Float.Input("lr", default=0.035, min=0.0001, max=10.0, step=0.0001,
                               tooltip="Step size of the optimiser: in warp mode, control-point spacings per "
                               "step; in latent mode, latent units per step."),
                io.Float.Input("strength", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Weight of the anatomy terms against the fidelity terms (keep the video "
                               "as it was)."),
                io.Combo.Input("mode", options=list(FIXER_MODES), default="warp",
                               tooltip="warp: optimise a smooth displacement of the latents inside the ROI, which moves "
                               "anatomy rather than repainting it (better on MediaPipe's judgement); latent: optimise "
                               "the latent values in the ROI directly."),
                io.Float.Input("guide", default=3.0, min=0.0, max=100.0, step=0.1, optional=True,
                               tooltip="Pull towards the ROI's own keypoint trajectories, cleaned of jitter and "
                               "stretching (robust temporal filter + constant bone lengths): tells each finger where "
                               "to go. 0 leaves only the critic's anatomy terms."),
                io.Vae.Input("gradient_vae", optional=True,
                             tooltip="Optional light decoder of the same latent space for the gradient steps, "
                             "e.g. the Tiny AutoEncoder for Wan (lighttaew2_1 in models/vae_approx for the Wan 2.1 "
                             "VAE, lighttaew2_2 for Wan 2.2) via Load VAE: much cheaper steps; the result stays in "
                             "the main VAE's latent space."),
                io.Boolean.Input("guard", default=True, optional=True,
                                 tooltip="Judge the fix with MediaPipe on the VAE's full decode and pass the input "
                                 "latent through unchanged when the region's geometry (detection, jitter, bone "
                                 "lengths, joint limits) got worse than ROI Detect found it. Costs one full decode."),
                io.Boolean.Input("decode", default=False, optional=True,
                                 tooltip="Also decode the output latent with the VAE and give the frames on the "
                                 "images output, in place of a VAE Decode after the Fixer. With the guard on, the "
                                 "guard's full decode of a kept edit is reused, so the video is decoded once, not "
                                 "twice. Off: the images output is not available (decode the latent yourself). "
                                 "Changing it runs the fix again."),
                io.Boolean.Input("keep_first_frame", default=False, optional=True,
                                 tooltip="Leave the video's first frame exactly as it is: an I2V start image, or "
                                 "the last frame of the clip before when clips are chained. The Wan VAE decodes "
                                 "the first frame from the first latent frame alone, which is kept; the edit "
                                 "starts at frame 2."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent"),
                io.String.Output(display_name="report"),
                io.Image.Output(display_name="images",
                                tooltip="The output latent decoded by the VAE, as VAE Decode gives it (needs "
                                "decode on)."),
            ],
        )

    @classmethod
    def execute(cls, latent, vae, roi, steps: int, lr: float, strength: float, mode: str, critic=None,
                guide: float = 3.0, gradient_vae=None, guard: bool = True, decode: bool = False,
                keep_first_frame: bool = False) -> io.NodeOutput:  # fmt: skip
        import comfy.model_management as mm
        import comfy.utils

        from .fix_shared import fix_settings, fix_ui
        from .glue import check_roi, dumps_report, progress_preview, run_fix
        from .host import free_device_memory, released_on_out_of_memory

        with node_errors(NAME), released_on_out_of_memory(NAME):
            roi = check_roi(roi)
            settings = fix_settings(NAME, roi, steps, lr, strength, mode, guide, keep_first_frame)
            # every weight on the device: the fix runs dozens of passes through the decoder, and streaming its
            # weights in on each (a partial load) would cost more than the VAE's few hundred MB
            patchers = [v.patcher for v in (vae, gradient_vae) if v is not None]
            mm.load_models_gpu(patchers, force_full_load=True)
            pbar = comfy.utils.ProgressBar(max(int(steps), 1))

            def on_step(step: int, total: int, losses: dict, crop) -> None:
                # A cancel raises InterruptProcessingException here; fix_latents lets it through untouched.
                mm.throw_exception_if_processing_interrupted()
                pbar.update_absolute(step, total, progress_preview(crop))

            out, result = run_fix(latent, vae, critic, roi, settings, gradient_vae=gradient_vae, on_step=on_step,
                                  check_cancel=mm.throw_exception_if_processing_interrupted,
                                  free_memory=lambda: free_device_memory(NAME, "starting again", patchers))  # fmt: skip
            images = None  # the frames of `out`, when the guard decoded them
            if guard and result.report.get("changed"):
                out, images = _guarded(latent, out, vae, roi, result.report)
            out = _mark_fixed(latent, out, roi.region, result.report)
            if decode:
                result.report["images"] = "the guard's decode" if images is not None else "decoded"
                images = images if images is not None else vae_decode(vae, out["samples"])
                mm.throw_exception_if_processing_interrupted()
            else:
                images = _images_off()
        return io.NodeOutput(out, dumps_report(result.report), images, ui=fix_ui(result, roi))


def vae_decode(vae, samples):
    """The frames of ``samples`` as core's VAE Decode gives them: one IMAGE batch [frames, H, W, C]."""
    images = vae.decode(samples)
    if images.ndim == 5:  # [B, T, H, W, C] from a video VAE, as VAE Decode flattens it
        images = images.reshape(-1, *images.shape[-3:])
    return images


def _images_off():
    """What the images output gives with decode off: a node fed from it stops with this message, not a crash."""
    from comfy_execution.graph_utils import ExecutionBlocker

    return ExecutionBlocker(f"{NAME}: its images output needs decode on (or decode its latent output with VAE Decode)")


# LATENT key: the regions a BGFS Fixer has already edited in these latents (a list of region names)
FIXED_REGIONS = "bgfs_fixed_regions"


def _mark_fixed(latent: dict, out: dict, region: str, report: dict) -> dict:
    """``out`` marked as fixed for ``region`` when the edit is kept; a warning in ``report`` when ``latent`` was
    already fixed for it. Each pass resamples the region once more, and a second pass measured worse than one."""
    import logging

    from ..bgfs_core.fix_video import refix_warning

    done = list(latent.get(FIXED_REGIONS, ()))
    if region in done:
        warning = refix_warning("these latents were", region, f"an earlier {NAME}")
        report.setdefault("warnings", []).append(warning)
        report["summary"] = report.get("summary", "") + f"\nWarning: {warning}"
        logging.warning("%s: %s", NAME, warning)
    if out is latent or not report.get("changed"):
        return out
    return {**out, FIXED_REGIONS: done if region in done else [*done, region]}


def _guarded(latent: dict, fixed: dict, vae, roi, report: dict) -> tuple[dict, object]:
    """``fixed`` and its decoded frames, or ``latent`` and None when MediaPipe finds the geometry worse on the real
    decode (as ``bgfs fix``)."""
    import time

    from .fix_shared import guard_keeps

    started = time.perf_counter()  # what the guard costs: one full decode and MediaPipe
    images = vae_decode(vae, fixed["samples"])
    if guard_keeps(roi, images, report, started, "the input latent"):
        return fixed, images
    return latent, None
