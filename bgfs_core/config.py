"""Configuration: one YAML file with every lever, validated on load, overridable from the command line."""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from .errors import BGFSError, not_a_file
from .regions import REGION_NAMES


class ConfigError(BGFSError):
    """A bad configuration file or override; the message names the key."""


@dataclass
class DataConfig:
    videos_dir: str = "tests/data/clips"
    cache_dir: str = "cache/default"


@dataclass
class ClipsConfig:
    clip_len: int = 4
    frame_stride: int = 1
    clips_per_video: int = 10
    max_frames_per_video: int = 0
    seed: int = 0

    @property
    def span(self) -> int:
        """Frames of the video one clip covers, first to last."""
        return (self.clip_len - 1) * self.frame_stride + 1


@dataclass
class DetectConfig:
    backend: str = "solutions"
    model_dir: str = "models/mediapipe"
    min_detection_confidence: float = 0.3
    min_tracking_confidence: float = 0.3
    mirrored: bool = False


@dataclass
class RoiConfig:
    region: str = "hands"
    out_hw: list[int] = field(default_factory=lambda: [256, 256])
    margin: float = 0.25
    min_conf: float = 0.3
    smooth: float = 0.6


@dataclass
class CriticConfig:
    heatmap_sigma: float = 2.0
    heatmap_hw: list[int] = field(default_factory=lambda: [64, 64])
    input_hw: list[int] = field(default_factory=lambda: [128, 128])
    width: int = 32
    lr: float = 2e-3
    batch_size: int = 8
    num_workers: int = 0
    epochs: int = 300
    val_fraction: float = 0.2
    seed: int = 0
    articulate: float = 0.5  # share of training crops whose fingers / limbs are bent at random (labels follow)


@dataclass
class FixerConfig:
    steps: int = 30
    lr: float = 0.035
    strength: float = 1.0
    mode: str = "warp"
    guide: float = 3.0
    lr_decay: str = "cosine"
    keep_first_frame: bool = False  # the first frame stays bit for bit (an I2V start image, a chained clip's seam)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    roi: RoiConfig = field(default_factory=RoiConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    fixer: FixerConfig = field(default_factory=FixerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIXER_MODES = ("latent", "warp")  # the fixer's edit modes (bgfs_core.fixer)
FIXER_LR_DECAYS = ("none", "cosine")  # its step-size schedules
GRAD_DTYPES = ("auto", "fp32", "bf16", "fp16")  # bgfs fix --grad-dtype: the decoder the gradients go through

_CHOICES = {
    "roi.region": REGION_NAMES,
    "detect.backend": ("solutions", "tasks"),
    "fixer.mode": FIXER_MODES,
    "fixer.lr_decay": FIXER_LR_DECAYS,
}
_POSITIVE = {
    "clips.clip_len", "clips.frame_stride", "clips.clips_per_video", "critic.heatmap_sigma", "critic.width",
    "critic.lr", "critic.batch_size", "critic.epochs", "fixer.lr",
}  # fmt: skip
_NON_NEGATIVE = {
    "roi.margin", "critic.num_workers", "clips.max_frames_per_video", "fixer.guide", "fixer.steps", "fixer.strength",
}  # fmt: skip
_UNIT_INTERVAL = {
    "roi.min_conf", "roi.smooth", "detect.min_detection_confidence", "detect.min_tracking_confidence",
    "critic.val_fraction", "critic.articulate",
}  # fmt: skip


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check one value against its annotated type, converting what is unambiguous (int -> float, "3" -> 3)."""
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if typ is float:
            # "nan" and "inf" parse as floats, and would pass every range check after
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise TypeError
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
        if origin is list:
            if isinstance(value, str):
                value = [v for v in value.replace("x", ",").split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise TypeError
            return [int(v) for v in value]
    except (TypeError, ValueError):
        pass
    else:
        return value
    want = "a [height, width] pair" if origin is list else getattr(typ, "__name__", str(typ))
    want = "a finite number" if typ is float else want
    raise ConfigError(f"config key {key!r}: expected {want}, got {value!r}")


def _check_ranges(key: str, value: Any) -> None:
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(_CHOICES[key])}")
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"config key {key!r}: must be > 0, got {value!r}")
    if key in _UNIT_INTERVAL and not 0.0 <= value <= 1.0:
        raise ConfigError(f"config key {key!r}: must be between 0 and 1, got {value!r}")
    if key == "critic.val_fraction" and value == 1.0:  # holding out every clip would leave none to train on
        raise ConfigError(f"config key {key!r}: the share of clips held out for validation must be below 1 (0 holds "
                          "out none; at most half the clips are held out when the cache has two or more videos)")
    if key.endswith("_hw") and any(v < 8 for v in value):
        raise ConfigError(f"config key {key!r}: sizes must be at least 8 pixels, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"config key {key!r}: must be >= 0, got {value!r}")


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    sections = {f.name: f for f in dataclasses.fields(Config)}
    if len(parts) != 2 or parts[0] not in sections:
        known = [f"{s}.{f.name}" for s in sections for f in dataclasses.fields(getattr(cfg, s))]
        hint = difflib.get_close_matches(key, known, n=1)
        raise ConfigError(f"config key {key!r} is not known" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    section = getattr(cfg, parts[0])
    hints = get_type_hints(type(section))
    if parts[1] not in hints:
        known = [f"{parts[0]}.{name}" for name in hints]
        hint = difflib.get_close_matches(key, known, n=1)
        raise ConfigError(f"config key {key!r} is not known" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if isinstance(value, SetValue):
        value = value.parse(key, hints[parts[1]])
    coerced = _coerce(key, value, hints[parts[1]])
    _check_ranges(key, coerced)
    setattr(section, parts[1], coerced)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if prefix:
                raise ConfigError(f"config key {key!r} is nested too deeply: use section.key")
            flat.update(_flatten(v, key + "."))
        else:
            if not prefix:
                raise ConfigError(f"config key {key!r} must sit inside a section (data, clips, detect, roi, ...)")
            flat[key] = v
    return flat


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (``None``: built-in defaults), then apply ``{"section.key": value}`` overrides."""
    import yaml

    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} {not_a_file(path)} (the bundled one is "
                              "configs/default.yaml)")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(path)!r} is not text (UTF-8): give a YAML file, e.g. a copy of "
                              "configs/default.yaml") from None  # fmt: skip
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
        for key, value in _flatten(tree).items():
            _set(cfg, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(cfg, key, value)
    _check_together(cfg)
    return cfg


def _check_together(cfg: Config) -> None:
    """Settings that are each valid but useless together."""
    c = cfg.clips
    if 0 < c.max_frames_per_video < c.span:  # every video would be read too short for a single clip
        raise ConfigError(
            f"clips.max_frames_per_video {c.max_frames_per_video} is shorter than one clip ({c.span} frames: "
            f"clips.clip_len {c.clip_len}, clips.frame_stride {c.frame_stride}): set it to {c.span} or more, or 0 "
            "to read whole videos")


class SetValue(str):
    """The text of one ``--set`` value, parsed once its key's type is known: a text key (a folder, a name) takes
    it as written, where YAML would turn ``0123`` into 83 and ``yes`` into True; other keys read it as YAML."""

    def parse(self, key: str, typ: Any) -> Any:
        import yaml

        if not self.strip():
            raise ConfigError(f"--set {key}=: give a value after '='")
        if typ is str:
            return str(self)
        try:
            value = yaml.safe_load(self)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}={self}: not a value ({exc.__class__.__name__})") from None
        if value is None:
            raise ConfigError(f"--set {key}={self}: give a value")
        return value


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["roi.margin=0.4", ...]`` into overrides (`SetValue`s, parsed by each key's type)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write it as section.key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = SetValue(raw)
    return out
