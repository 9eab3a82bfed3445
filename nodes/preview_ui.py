"""ComfyUI glue of the heatmap preview: save the sheets to the temp folder, return the node's ``ui`` dict.

Imported lazily inside node ``execute`` (it imports ``folder_paths``). ``web/bgfs_preview.js`` reads
``ui["bgfs_preview"][0]`` and loads each sheet through ``/view``.
"""

from __future__ import annotations

import uuid

import numpy as np

from ..bgfs_core.preview import build_preview

SUBFOLDER = "bgfs"  # inside ComfyUI's temp folder, which ComfyUI empties at start-up


def preview_ui(
    kind: str,
    region: str,
    crops: np.ndarray,
    heatmaps: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    after_crops: np.ndarray | None = None,
    after_heatmaps: np.ndarray | None = None,
    after_keypoints: np.ndarray | None = None,
    labels: list[str] | None = None,
) -> dict:
    """The ``ui`` dict ``{"bgfs_preview": [payload]}`` for a node run (see ``bgfs_core.preview.build_preview``)."""
    import folder_paths
    from PIL import Image

    from ..bgfs_core.atomic import atomic_path

    prev = build_preview(kind, region, crops, heatmaps, keypoints, after_crops, after_heatmaps, after_keypoints,
                         labels=labels)  # fmt: skip
    folder = f"{folder_paths.get_temp_directory()}/{SUBFOLDER}"
    stem = f"bgfs_{kind}_{uuid.uuid4().hex[:12]}"  # unique: several nodes and runs share the temp folder
    payload = dict(prev.payload)
    for name, sheet in prev.sheets.items():
        filename = f"{stem}_{name}.png"
        with atomic_path(f"{folder}/{filename}") as tmp:
            # compress_level 1: a 2 MP sheet saves in tens of ms; the files only live until ComfyUI restarts
            Image.fromarray(sheet).save(tmp, format="PNG", compress_level=1)
        payload[name] = {"filename": filename, "subfolder": SUBFOLDER, "type": "temp"}
    return {"bgfs_preview": [payload]}
