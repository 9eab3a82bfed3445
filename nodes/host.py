"""Where the nodes read and write inside a ComfyUI install (folder_paths), and images for the node's ui."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..bgfs_core.errors import BGFSError
from .glue import CACHE_SUBDIR, CRITICS_FOLDER, MEDIAPIPE_FOLDER, RUNS_SUBDIR, check_name


def critics_dir() -> Path:
    """The folder new critics are saved to: the first ``bgfs_critics`` model folder (models/bgfs_critics)."""
    import folder_paths

    path = Path(folder_paths.get_folder_paths(CRITICS_FOLDER)[0])
    path.mkdir(parents=True, exist_ok=True)
    return path


def mediapipe_dir() -> str | None:
    """The models/mediapipe folder (Tasks backend model files): the first registered one that holds a ``.task``
    file (an extra_model_paths.yaml entry comes before ComfyUI/models/mediapipe and may be empty), else the first;
    None when there is none."""
    import folder_paths

    try:
        paths = folder_paths.get_folder_paths(MEDIAPIPE_FOLDER)
    except KeyError:
        return None
    holding = [p for p in paths if Path(p).is_dir() and any(Path(p).glob("*.task"))]
    return (holding or paths or [None])[0]


@contextlib.contextmanager
def mediapipe_progress() -> Iterator[str | None]:
    """A block where MediaPipe runs, as ``with mediapipe_progress() as model_dir:``: it yields the folder of the
    user's MediaPipe task models (`mediapipe_dir`), and while MediaPipe reads frames the queue's Cancel is checked
    before each frame and the node's progress bar counts them (MediaPipe is minutes on a long video, one
    uninterruptible call per frame)."""
    import comfy.model_management as mm
    import comfy.utils

    from ..bgfs_core.detection import watch_frames

    bar = None

    def on_frame(done: int, total: int | None) -> None:
        nonlocal bar
        mm.throw_exception_if_processing_interrupted()
        if total:
            if bar is None or done == 0:  # a second video (the reference, the guard's frames) starts a new bar
                bar = comfy.utils.ProgressBar(total)
            bar.update_absolute(done, total)

    with watch_frames(on_frame):
        yield mediapipe_dir()


def free_device_memory(node: str, then: str, reload: list[Any] = ()) -> None:
    """Make room on the device after running out of memory: a model from an earlier generation may still hold
    it. Unloads every model ComfyUI holds, empties the allocator's cache, and loads ``reload`` (model patchers the
    node goes on with) back fully."""
    import logging

    import comfy.model_management as mm

    logging.warning("%s: out of memory; unloading the other models and %s", node, then)
    mm.unload_all_models()
    mm.soft_empty_cache()
    if reload:
        mm.load_models_gpu(list(reload), force_full_load=True)


@contextlib.contextmanager
def released_on_out_of_memory(node: str) -> Iterator[None]:
    """When the node gives up for lack of memory (after `free_device_memory` and a second try), leave the device
    as ComfyUI leaves it after its own out-of-memory errors: every model unloaded, the allocator's cache emptied.
    ComfyUI does that only for torch's error type; the node's error is its own, with what to make smaller."""
    from ..bgfs_core.errors import OutOfMemoryError

    try:
        yield
    except OutOfMemoryError:
        import logging

        import comfy.model_management as mm

        logging.warning("%s: still out of memory; unloading every model, as ComfyUI does after an out-of-memory "
                        "error", node)  # fmt: skip
        mm.unload_all_models()
        mm.soft_empty_cache()
        raise


def cache_root() -> Path:
    """ROI caches built in ComfyUI live in ``<output>/bgfs_cache/<name>/`` (the CLI reads them with --cache-dir)."""
    import folder_paths

    return Path(folder_paths.get_output_directory()) / CACHE_SUBDIR


def runs_root() -> Path:
    """Critic training runs (resumable state, logs) live in ``<output>/bgfs_critic_runs/<critic name>/``."""
    import folder_paths

    return Path(folder_paths.get_output_directory()) / RUNS_SUBDIR


def cache_dir_for(name: str) -> Path:
    """The cache folder for a cache name typed on a node."""
    return cache_root() / check_name(name, "cache name")


def resolve_cache(cache: str) -> Path:
    """A cache given as a name (under output/bgfs_cache) or as a folder path (e.g. a Cache Builder's output)."""
    cache = (cache or "").strip()
    if not cache:
        raise BGFSError("no cache given: connect a BGFS Cache Builder's cache_path or type a cache name")
    path = Path(cache) if os.path.isabs(cache) else cache_dir_for(cache)
    if not (path / "manifest.json").is_file():
        raise BGFSError(f"no ROI cache at {str(path)!r} (no manifest.json): build one with BGFS Cache Builder "
                        "or `bgfs precompute`")  # fmt: skip
    return path


def save_temp_image(image: Any, prefix: str) -> dict[str, str]:
    """Save a PIL image or PNG bytes into ComfyUI's temp folder -> the ``ui["images"]`` entry that shows it."""
    import folder_paths

    from ..bgfs_core.atomic import atomic_path

    temp = Path(folder_paths.get_temp_directory())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"  # unique: many nodes and runs share the temp folder
    with atomic_path(temp / name) as tmp:
        if isinstance(image, (bytes, bytearray)):
            tmp.write_bytes(image)
        else:
            image.save(tmp, format="PNG", compress_level=4)
    return {"filename": name, "subfolder": "", "type": "temp"}
