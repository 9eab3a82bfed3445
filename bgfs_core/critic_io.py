"""Critic files: safetensors weights (never pickle) with ``bgfs.*`` metadata that rebuilds the network.

Metadata (all strings, as safetensors requires; JSON where noted):
``bgfs.format`` = ``bgfs-critic-1``, ``bgfs.region``, ``bgfs.keypoint_names`` (JSON list), ``bgfs.input_hw`` and
``bgfs.heatmap_hw`` (JSON ``[h, w]``), ``bgfs.sigma``, ``bgfs.width``, ``bgfs.version`` (bgfs version that wrote
it), and from training ``bgfs.train_summary`` (JSON: cache dir, clips, frames, sources, epochs) and
``bgfs.val_pck`` (validation PCK@0.1, see ``train_critic.py``; ``null`` when nothing was held out).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_path
from .critic import CriticSpec
from .errors import BGFSError, not_a_file
from .regions import REGION_NAMES, get_region

FORMAT = "bgfs-critic-1"
STATE_FORMAT = "bgfs-train-state-1"  # a critic training run's resume point (train_critic), not a critic
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def spec_metadata(spec: CriticSpec) -> dict[str, str]:
    """The ``bgfs.*`` metadata strings that describe ``spec``."""
    return {
        "bgfs.format": FORMAT,
        "bgfs.region": spec.region,
        "bgfs.keypoint_names": json.dumps(list(spec.keypoint_names)),
        "bgfs.input_hw": json.dumps(list(spec.input_hw)),
        "bgfs.heatmap_hw": json.dumps(list(spec.heatmap_hw)),
        "bgfs.sigma": repr(spec.sigma),
        "bgfs.width": str(spec.width),
        "bgfs.version": __version__,
    }


def save_critic(path: str | Path, model: Any, spec: CriticSpec, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and metadata atomically; ``extra_meta`` keys become ``bgfs.<key>`` (JSON values)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = spec_metadata(spec)
    for key, value in (extra_meta or {}).items():
        meta[key if key.startswith("bgfs.") else f"bgfs.{key}"] = json.dumps(value)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_raw_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file, read from its header only (no torch, no weights)."""
    path = Path(path)
    if path.is_dir() and (path / "critic_best.safetensors").is_file():
        raise BGFSError(f"critic file {str(path)!r} is a folder: give the critic in it, "
                        f"{str(path / 'critic_best.safetensors')!r}")  # fmt: skip
    if not path.is_file():
        raise BGFSError(
            f"critic file {str(path)!r} {not_a_file(path)}: train one with `bgfs train-critic-cmd` "
            "(it writes critic_best.safetensors) or check the path"
        )
    try:
        with open(path, "rb") as fh:
            size_bytes = fh.read(8)
            (size,) = struct.unpack("<Q", size_bytes) if len(size_bytes) == 8 else (0,)
            if not 2 <= size <= min(_MAX_HEADER, path.stat().st_size - 8):
                raise ValueError("bad header size")
            header = json.loads(fh.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
    except (OSError, ValueError, UnicodeDecodeError):
        raise BGFSError(
            f"{str(path)!r} is not a safetensors file: BGFS critics are .safetensors files written by "
            "`bgfs train-critic-cmd` (pickled .pt files are not loaded)"
        ) from None
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_critic_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``bgfs.*`` metadata of a critic file (``region``, ``keypoint_names``, ..., ``val_pck``)."""
    raw = read_raw_metadata(path)
    fmt = raw.get("bgfs.format")
    if fmt is None:
        raise BGFSError(
            f"{str(path)!r} is a safetensors file but not a BGFS critic (it has no bgfs.format metadata): "
            "pick a file written by `bgfs train-critic-cmd`"
        )
    if fmt == STATE_FORMAT:
        raise BGFSError(f"{str(path)!r} is a critic training run's state, not a critic: use critic_best.safetensors "
                        "beside it")
    if fmt != FORMAT:
        raise BGFSError(f"critic {str(path)!r} has format {fmt!r}, this bgfs reads {FORMAT!r}: upgrade bgfs")
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith("bgfs."):
            continue
        name = key[len("bgfs.") :]
        if name in ("format", "region", "version"):
            meta[name] = value
            continue
        try:
            meta[name] = json.loads(value)
        except ValueError:
            meta[name] = value
    missing = [k for k in ("region", "keypoint_names", "input_hw", "heatmap_hw", "sigma", "width") if k not in meta]
    if missing:
        raise BGFSError(f"critic {str(path)!r} lacks metadata {', '.join('bgfs.' + k for k in missing)}: it is damaged")
    return meta


def spec_from_meta(meta: dict[str, Any]) -> CriticSpec:
    """Rebuild the :class:`CriticSpec` stored in a critic file's metadata."""
    return CriticSpec(
        region=meta["region"], keypoint_names=tuple(meta["keypoint_names"]), input_hw=tuple(meta["input_hw"]),
        heatmap_hw=tuple(meta["heatmap_hw"]), sigma=float(meta["sigma"]), width=int(meta["width"]),
        version=str(meta.get("version", "")),
    )  # fmt: skip


def check_region(path: str | Path, spec: CriticSpec, region: str | None) -> None:
    """Raise a :class:`BGFSError` unless the critic in ``path`` fits ``region`` (and today's keypoint set)."""
    name = Path(path).name
    if region is not None and region != spec.region:
        get_region(region)  # an unknown name is said as such, not as "train one for it"
        raise BGFSError(
            f"critic {name} was trained for {spec.region!r}, but region {region!r} was asked: "
            f"train one for {region} or pick another file"
        )
    if spec.region not in REGION_NAMES:
        raise BGFSError(f"critic {name} was trained for an unknown region {spec.region!r}: upgrade bgfs or retrain")
    if tuple(get_region(spec.region).keypoint_names) != spec.keypoint_names:
        raise BGFSError(
            f"critic {name} was trained on another keypoint set for {spec.region!r} (bgfs {spec.version}): "
            "retrain it with this version"
        )


def load_critic(path: str | Path, region: str | None = None, device: Any = "cpu") -> tuple[Any, CriticSpec, dict]:
    """Load a critic file -> (``HeatmapCritic`` in eval mode on ``device``, its spec, its parsed metadata).

    The parameters are frozen (``requires_grad=False``): users of a trained critic need gradients with respect
    to the crop only. ``region``, when given, must be the one the critic was trained for.
    """
    from safetensors.torch import load_file

    from .critic import HeatmapCritic

    meta = read_critic_meta(path)
    spec = spec_from_meta(meta)
    check_region(path, spec, region)
    model = HeatmapCritic(spec)
    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors and torch raise several types for a truncated or mismatched file
        raise BGFSError(f"critic {str(path)!r}: its weights do not load ({exc}); the file is damaged") from None
    model.requires_grad_(False)
    return model.to(device).eval(), spec, meta
