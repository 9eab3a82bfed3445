"""BGFS Critic Trainer: train a heatmap critic on an ROI cache, save it into models/bgfs_critics -> BGFS_CRITIC."""

from __future__ import annotations

from comfy_api.latest import io

from .glue import CATEGORY, node_errors
from .sockets import CriticType

NAME = "BGFS Critic Trainer"


class BGFSCriticTrainer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSCriticTrainer",
            display_name=NAME,
            category=CATEGORY,
            description="Trains the heatmap critic on an ROI cache (MediaPipe pseudo-labels) and saves it into "
            "models/bgfs_critics/<critic_name>.safetensors. Runs resume: more epochs continue the same run.",
            inputs=[
                io.String.Input("cache", default="bgfs_hands",
                                tooltip="The ROI cache: a BGFS Cache Builder's cache_path, a cache name under "
                                "ComfyUI/output/bgfs_cache/, or the folder `bgfs precompute` wrote."),
                io.String.Input("critic_name", default="hands_critic",
                                tooltip="File name of the critic in models/bgfs_critics/ (letters, digits, _ . -); "
                                "its training state is kept in output/bgfs_critic_runs/<critic_name>/."),
                io.Int.Input("epochs", default=300, min=1, max=10000, step=1,
                             tooltip="Total epochs of the run; a finished run with the same name only trains the "
                             "epochs it lacks, at the learning rate its schedule ended on."),
                io.Float.Input("lr", default=0.002, min=0.000001, max=1.0, step=0.000001,
                               tooltip="Learning rate (AdamW, cosine decay)."),
                io.Int.Input("batch_size", default=8, min=1, max=4096, step=1, tooltip="Crops per training step."),
                io.Float.Input("val_fraction", default=0.2, min=0.0, max=0.9, step=0.05,
                               tooltip="Share of the cached clips held out for validation (PCK); 0 trains on all. "
                               "With a single training video, 0 can fix better (measured on the bundled clip): "
                               "held-out clips are frames the critic never learns."),
                io.Boolean.Input("resume", default=True,
                                 tooltip="Continue the run saved under this critic name; off starts over."),
                io.Float.Input("articulate", default=0.5, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Share of training crops whose fingers (limbs) are bent at random, labels "
                               "moved with them, so the critic follows poses it was not shown; 0 turns it off."),
            ],
            outputs=[CriticType.Output(display_name="critic")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, critic_name: str | None = None):
        from ..bgfs_core.errors import BGFSError
        from .glue import check_name

        if critic_name is None:  # linked: checked when it runs
            return True
        try:
            check_name(critic_name, "critic_name")
        except BGFSError as exc:
            return f"{NAME}: {exc}"
        return True

    @classmethod
    def fingerprint_inputs(cls, cache: str | None = None, **_: object) -> str:
        """A typed cache name: its manifest's modification time (clips added since -> train again). A linked
        cache (None here) is judged by the nodes upstream."""
        from ..bgfs_core.errors import BGFSError
        from .host import resolve_cache

        if cache is None:
            return ""
        try:
            return str((resolve_cache(cache) / "manifest.json").stat().st_mtime)
        except (BGFSError, OSError):
            return ""

    @classmethod
    def execute(cls, cache: str, critic_name: str, epochs: int, lr: float, batch_size: int, val_fraction: float,
                resume: bool, articulate: float = 0.5) -> io.NodeOutput:  # fmt: skip
        import logging
        import shutil

        import comfy.model_management as mm
        import comfy.utils
        import torch

        from ..bgfs_core.atomic import atomic_path
        from ..bgfs_core.cache import load_manifest
        from ..bgfs_core.config import load_config
        from ..bgfs_core.errors import OutOfMemoryError, first_line, is_out_of_memory
        from ..bgfs_core.train_critic import PCK_THRESHOLD, train_critic
        from .critic_loader import describe, load_critic_data
        from .glue import cancel_checks, check_name, loss_plot, retry_out_of_memory
        from .host import (
            critics_dir,
            free_device_memory,
            released_on_out_of_memory,
            resolve_cache,
            runs_root,
            save_temp_image,
        )

        with node_errors(NAME), released_on_out_of_memory(NAME):
            name = check_name(critic_name, "critic_name")
            cache_dir = resolve_cache(cache)
            manifest = load_manifest(cache_dir)
            region = manifest.get("region", "hands")
            cfg = load_config(None, {
                "data.cache_dir": str(cache_dir), "roi.region": region, "critic.epochs": int(epochs),
                "critic.lr": float(lr), "critic.batch_size": int(batch_size), "critic.val_fraction": float(val_fraction),
                "critic.articulate": float(articulate),
            })  # fmt: skip
            run_dir = runs_root() / name
            pbar = comfy.utils.ProgressBar(int(epochs))
            losses: list[float] = []
            lines: list[str] = []

            def on_epoch(record: dict) -> None:
                losses.append(float(record["train_loss"]))
                val = "" if record["val_loss"] is None else f", val loss {record['val_loss']:.4f}"
                pck = "" if record["val_pck"] is None else f", val PCK {record['val_pck']:.3f}"
                if record.get("val_pck_bent") is not None:
                    pck += f" (bent {record['val_pck_bent']:.3f})"
                lines.append(f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}{val}{pck}")
                pbar.update_absolute(int(record["epoch"]), int(epochs), ("PNG", loss_plot(losses, title="train loss"), 320))

            device = mm.get_torch_device()
            logging.info("%s: %s on %s (%d %s clips), %d epochs on %s", NAME, name, cache_dir,
                         len(manifest.get("clips", [])), region, int(epochs), device)  # fmt: skip
            def train(resume_now: bool):
                # A cancel stops within a batch (every layer checks); the last finished epoch is saved and resumes.
                with torch.inference_mode(False), torch.enable_grad(), cancel_checks(mm.throw_exception_if_processing_interrupted):
                    return train_critic(cfg, run_dir, epochs=int(epochs), resume=resume_now, progress=True,
                                        on_epoch=on_epoch, device=str(device))  # fmt: skip

            try:  # out of memory once: free the device and go on from the last finished epoch
                result = retry_out_of_memory(lambda retry: train(retry or bool(resume)),
                                             lambda: free_device_memory(NAME, "resuming"))  # fmt: skip
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                raise OutOfMemoryError(f"out of memory on {device} training the critic ({first_line(exc, 160)}), "
                                       f"even with the other models unloaded: lower batch_size (now "
                                       f"{int(batch_size)})") from exc  # fmt: skip
            target = critics_dir() / f"{name}.safetensors"
            with atomic_path(target) as tmp:
                shutil.copyfile(result.best_path, tmp)
            critic = load_critic_data(str(target), target.name)
        losses = [float(h["train_loss"]) for h in result.history]
        pck = "n/a (nothing held out)" if result.best_val_pck is None else f"{result.best_val_pck:.3f}"
        summary = (f"saved {target} (best epoch {result.best_epoch}, validation PCK@{PCK_THRESHOLD:g} {pck}); "
                   f"{len(result.history)} epoch(s), {result.seconds:.0f} s in total")  # fmt: skip
        if not lines:
            summary = f"nothing to train: the run already holds {len(result.history)} epoch(s). " + summary
        text = "\n".join([*lines, summary, describe(critic)])
        ui = {"text": [text], "images": [save_temp_image(loss_plot(losses, (480, 220), "train loss"), "bgfs_loss")]}
        return io.NodeOutput(critic, ui=ui)
