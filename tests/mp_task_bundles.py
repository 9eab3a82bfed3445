"""Test support: assemble MediaPipe Tasks ``.task`` bundles offline from the ``.tflite`` models in the mediapipe
package, so the ``tasks`` backend runs for real without downloading anything.

A ``.task`` file is an uncompressed zip of ``.tflite`` models with fixed names. What mediapipe 0.10.21 ships:
- hands: palm_detection_full + hand_landmark_full (both carry TFLite metadata) -> hand_landmarker.task. Works.
- pose: pose_detection + pose_landmark_full -> pose_landmarker_full.task. The landmark model has no metadata, and
  the Tasks graph refuses float inputs without NormalizationOptions, so its [0, 1] input scaling (mean 0,
  std 255, as in the legacy graph) is written into it first. Works: landmarks match ``mp.solutions`` to ~1 px.
- face: not possible. The Tasks face graph expects the 478-point v2 landmark model; the package only has the
  468-point v1 model (accepted, but its landmarks come out scrambled) and the attention model (7 outputs,
  rejected by the graph). The official face_landmarker.task must be downloaded.
"""

from __future__ import annotations

from pathlib import Path


def _models_dir() -> Path:
    import mediapipe as mp

    return Path(mp.__file__).parent / "modules"


def _with_image_normalisation(model: bytes) -> bytes:
    """Add input-image metadata (RGB, x / 255) to a float TFLite model that has none."""
    from mediapipe.tasks.python.metadata.metadata_writers.metadata_writer import MetadataWriter

    writer = MetadataWriter.create(bytearray(model)).add_general_info("pose landmarks detector")
    content, _ = writer.add_image_input(norm_mean=[0.0], norm_std=[255.0]).populate()
    return bytes(content)


def build_task_bundles(out_dir: str | Path) -> dict[str, Path]:
    """Write hand_landmarker.task and pose_landmarker_full.task into ``out_dir``; returns {file name: path}."""
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import (
        create_model_asset_bundle,
    )

    src = _models_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundles = {
        "hand_landmarker.task": {
            "hand_detector.tflite": (src / "palm_detection/palm_detection_full.tflite").read_bytes(),
            "hand_landmarks_detector.tflite": (src / "hand_landmark/hand_landmark_full.tflite").read_bytes(),
        },
        "pose_landmarker_full.task": {
            "pose_detector.tflite": (src / "pose_detection/pose_detection.tflite").read_bytes(),
            "pose_landmarks_detector.tflite": _with_image_normalisation(
                (src / "pose_landmark/pose_landmark_full.tflite").read_bytes()
            ),
        },
    }
    paths = {}
    for name, models in bundles.items():
        create_model_asset_bundle(models, str(out / name))
        paths[name] = out / name
    return paths
