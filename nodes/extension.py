"""The ComfyExtension that lists the BGFS nodes and registers the pack's model folders."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .anatomy_score import BGFSAnatomyScore
from .cache_builder import BGFSCacheBuilder
from .critic_loader import BGFSCriticLoader
from .critic_trainer import BGFSCriticTrainer
from .fixer import BGFSLatentAnatomyFixer
from .image_fixer import BGFSImageAnatomyFixer
from .roi_detect import BGFSROIDetect

NODES: list[type[io.ComfyNode]] = [
    BGFSROIDetect,
    BGFSCriticLoader,
    BGFSLatentAnatomyFixer,
    BGFSCacheBuilder,
    BGFSCriticTrainer,
    BGFSAnatomyScore,
    BGFSImageAnatomyFixer,
]


def register_model_folders() -> None:
    """``models/bgfs_critics`` and ``models/mediapipe`` as folder_paths keys (extra_model_paths.yaml can add more).

    Called when ComfyUI loads the extension, not at import: importing the pack changes nothing.
    """
    import os

    import folder_paths

    from .glue import CRITICS_FOLDER, MEDIAPIPE_FOLDER

    folder_paths.add_model_folder_path(CRITICS_FOLDER, os.path.join(folder_paths.models_dir, "bgfs_critics"))
    folder_paths.add_model_folder_path(MEDIAPIPE_FOLDER, os.path.join(folder_paths.models_dir, "mediapipe"))


class BGFSExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.8.0 does not call on_load; registering twice is harmless (add_model_folder_path dedups).
        register_model_folders()
        return list(NODES)
