"""BGFS Cache Builder: frames -> an ROI cache (crops + MediaPipe heatmaps) that the trainer and the CLI read."""

from __future__ import annotations

from comfy_api.latest import io

from ..bgfs_core.detection import BACKENDS
from .glue import CATEGORY, node_errors
from .roi_detect import region_input

NAME = "BGFS Cache Builder"


class BGFSCacheBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BGFSCacheBuilder",
            display_name=NAME,
            category=CATEGORY,
            description="Adds a video's frames to an ROI cache in ComfyUI/output/bgfs_cache/<cache_name>/: square "
            "crops of the region with MediaPipe keypoint heatmaps, the data BGFS Critic Trainer learns from.",
            inputs=[
                io.Image.Input("images", tooltip="The frames of one video (an IMAGE batch), e.g. from Load Video -> "
                               "Get Video Components, or VideoHelperSuite's Load Video."),
                region_input("Which body region to cache; one cache holds one region."),
                io.String.Input("cache_name", default="bgfs_hands",
                                tooltip="Cache folder under ComfyUI/output/bgfs_cache/ (letters, digits, _ . -). "
                                "Each run adds this video to it; the same frames twice are skipped."),
                io.Float.Input("fps", default=16.0, min=1.0, max=240.0, step=1.0,
                               tooltip="Frame rate of the frames (MediaPipe tracks between frames with it); "
                               "connect Get Video Components' fps."),
                io.Int.Input("clip_len", default=4, min=1, max=256, step=1, tooltip="Frames per cached clip."),
                io.Int.Input("clips_per_video", default=10, min=1, max=1000, step=1,
                             tooltip="Clips sampled from this video (fewer if it is short)."),
                io.Int.Input("frame_stride", default=1, min=1, max=64, step=1,
                             tooltip="Take every n-th frame inside a clip."),
                io.Int.Input("crop_size", default=256, min=32, max=1024, step=16,
                             tooltip="Side of the square ROI crops stored in the cache, px."),
                io.Int.Input("clip_seed", default=0, min=0, max=2**31 - 1, step=1,
                             tooltip="Clip sampling is deterministic for a seed."),
                io.Combo.Input("backend", options=list(BACKENDS), default="solutions", optional=True,
                               tooltip="MediaPipe backend, as on ROI Detect: 'solutions' (models bundled with "
                               "mediapipe<=0.10.21, offline) or 'tasks' (.task model files in models/mediapipe; "
                               "the only one on Python 3.13). One cache holds one backend's detections."),
            ],
            outputs=[io.String.Output(display_name="cache_path")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, cache_name: str | None = None):
        from ..bgfs_core.errors import BGFSError
        from .glue import check_name

        if cache_name is None:
            return True
        try:
            check_name(cache_name, "cache_name")
        except BGFSError as exc:
            return f"{NAME}: {exc}"
        return True

    @classmethod
    def fingerprint_inputs(cls, cache_name: str | None = None, **_: object) -> str | float:
        """The cache's manifest time: a cache deleted or rebuilt outside this graph makes the node run again
        instead of showing what it did before (the same frames are skipped, so it is cheap)."""
        from .host import cache_dir_for

        if cache_name is None:
            return ""
        try:
            return str((cache_dir_for(cache_name) / "manifest.json").stat().st_mtime)
        except Exception:  # no manifest (yet, or any more): NaN equals nothing, so the node always runs
            return float("nan")

    @classmethod
    def execute(cls, images, region: str, cache_name: str, fps: float, clip_len: int, clips_per_video: int,
                frame_stride: int, crop_size: int, clip_seed: int, backend: str = "solutions") -> io.NodeOutput:  # fmt: skip
        import hashlib

        from ..bgfs_core.cache import append_frames_to_cache, load_manifest
        from ..bgfs_core.config import load_config
        from .glue import image_to_uint8
        from .host import cache_dir_for, mediapipe_dir, mediapipe_progress

        with node_errors(NAME):
            cache_dir = cache_dir_for(cache_name)
            frames = image_to_uint8(images)
            cfg = load_config(None, {
                "data.cache_dir": str(cache_dir), "roi.region": region, "roi.out_hw": [crop_size, crop_size],
                "clips.clip_len": clip_len, "clips.clips_per_video": clips_per_video,
                "clips.frame_stride": frame_stride, "clips.seed": clip_seed, "detect.backend": backend,
                "detect.model_dir": mediapipe_dir(),
            })  # fmt: skip
            # The source is named by its content: the same frames queued again are recognised and skipped.
            _check_settings(cache_dir, cfg)
            digest = hashlib.sha1(frames.tobytes()).hexdigest()[:12]
            name = f"comfyui_{len(frames)}x{frames.shape[2]}x{frames.shape[1]}_{digest}"
            with mediapipe_progress():
                summary = append_frames_to_cache(frames, float(fps), name, cfg, progress=False)
            manifest = load_manifest(cache_dir)
        total = (f"the cache now holds {len(manifest['clips'])} clip(s) of {manifest['region']} from "
                 f"{len(manifest['sources'])} source(s)")  # fmt: skip
        return io.NodeOutput(str(cache_dir), ui={"text": [summary.format() + "\n" + total]})


# The cache settings this node's inputs set, by the name the user sees on the node.
_INPUT_OF = {"roi.region": "region", "roi.out_hw": "crop_size", "clips.clip_len": "clip_len",
             "clips.clips_per_video": "clips_per_video", "clips.frame_stride": "frame_stride",
             "clips.seed": "clip_seed", "detect.backend": "backend"}  # fmt: skip


def _check_settings(cache_dir, cfg) -> None:
    """A cache keeps the settings it was started with (its clips must agree): refuse others in the node's words,
    before core's message, which speaks of the command line's --cache-dir."""
    from ..bgfs_core.cache import MANIFEST, cache_settings, load_manifest
    from ..bgfs_core.errors import BGFSError

    if not (cache_dir / MANIFEST).is_file():
        return
    manifest = load_manifest(cache_dir)
    if not manifest.get("clips"):  # nothing to keep: core starts such a cache over with the new settings
        return
    have = manifest.get("config", {})
    changed = []
    for key, want in cache_settings(cfg).items():
        if key in have and have[key] != want:
            changed.append(f"{_INPUT_OF.get(key, key)} {_shown(have[key])!r}, not {_shown(want)!r}")
    if changed:
        raise BGFSError(f"the cache {cache_dir.name!r} was built with {'; '.join(changed)}: use a new cache_name for "
                        "these settings, or set them back to add this video to it")  # fmt: skip


def _shown(value):
    """A setting as the node shows it: the crop size [s, s] as s."""
    return value[0] if isinstance(value, list) and len(value) == 2 and value[0] == value[1] else value
