"""BGFS Heatmap Critic Loader: a critic file from models/bgfs_critics -> BGFS_CRITIC."""

from __future__ import annotations

from comfy_api.latest import io

from .glue import CATEGORY, CRITICS_FOLDER, node_errors
from .sockets import CriticType

NAME = "BGFS Heatmap Critic Loader"


def critic_files() -> list[str]:
    """Critic files (.safetensors) in every models/bgfs_critics folder (extra_model_paths.yaml included)."""
    import folder_paths

    try:
        names = folder_paths.get_filename_list(CRITICS_FOLDER)
    except KeyError:  # the extension has not registered the folder (should not happen once loaded)
        return []
    return sorted(n for n in names if n.lower().endswith(".safetensors"))


def load_critic_data(path: str, name: str):
    """Load a critic file as ``CriticData``; weights built outside inference mode so the fixer can backprop."""
    import torch

    from ..bgfs_core.critic_io import load_critic
    from .glue import CriticData

    # ComfyUI runs nodes under torch.inference_mode(): tensors made there can never take part in autograd.
    with torch.inference_mode(False):
        model, spec, meta = load_critic(path, device="cpu")
    return CriticData(model=model, spec=spec, meta=meta, name=name)


def describe(critic) -> str:
    pck = critic.meta.get("val_pck")
    pck_txt = "n/a" if pck is None else f"{float(pck):.3f}"
    n = sum(p.numel() for p in critic.model.parameters())
    return (f"{critic.name}: {critic.spec.region} critic, {critic.spec.num_keypoints} keypoints, input "
            f"{critic.spec.input_hw[1]}x{critic.spec.input_hw[0]}, {n:,} parameters, validation PCK@0.1 {pck_txt}, "
            f"bgfs {critic.spec.version}")  # fmt: skip


class BGFSCriticLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSCriticLoader",
            display_name=NAME,
            category=CATEGORY,
            description="Loads a BGFS heatmap critic (trained by BGFS Critic Trainer or `bgfs train-critic-cmd`).",
            inputs=[
                io.Combo.Input("critic_name", options=critic_files(),
                               tooltip="A critic .safetensors file in ComfyUI/models/bgfs_critics/ (or a "
                               "'bgfs_critics' folder named in extra_model_paths.yaml)."),
            ],
            outputs=[CriticType.Output(display_name="critic")],
        )

    @classmethod
    def fingerprint_inputs(cls, critic_name: str | None = None, **_: object) -> str:
        """The file's modification time: a critic retrained under the same name is loaded again."""
        import os

        import folder_paths

        path = folder_paths.get_full_path(CRITICS_FOLDER, critic_name) if critic_name else None
        return f"{critic_name}:{os.path.getmtime(path)}" if path else str(critic_name)

    @classmethod
    def execute(cls, critic_name: str) -> io.NodeOutput:
        import folder_paths

        from ..bgfs_core.errors import BGFSError

        with node_errors(NAME):
            path = folder_paths.get_full_path(CRITICS_FOLDER, critic_name)
            if path is None:
                raise BGFSError(f"critic {critic_name!r} is not in models/bgfs_critics: put the file there and "
                                "refresh the node list")  # fmt: skip
            critic = load_critic_data(path, critic_name)
        return io.NodeOutput(critic, ui={"text": [describe(critic)]})
