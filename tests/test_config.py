"""Config: the bundled file loads, every bad key or value is named in the error, overrides apply in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgfs_core.config import ConfigError, load_config, parse_set_options

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"


def test_default_config_matches_builtin_defaults():
    # the YAML file documents every lever: it must hold exactly the built-in defaults
    assert load_config(DEFAULT).to_dict() == load_config(None).to_dict()


def test_every_key_in_the_yaml_is_known():
    import yaml

    tree = yaml.safe_load(DEFAULT.read_text())
    cfg = load_config(None).to_dict()
    assert {s: set(v) for s, v in tree.items()} == {s: set(v) for s, v in cfg.items()}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"roi.margn": 0.3}, "'roi.margn' is not known (did you mean 'roi.margin'?)"),
        ({"roi.region": "tail"}, "'roi.region': 'tail' is not one of hands, face"),
        ({"critic.lr": -1}, "'critic.lr': must be > 0"),
        ({"fixer.lr_decay": "step"}, "'fixer.lr_decay': 'step' is not one of none, cosine"),
        ({"roi.min_conf": 1.5}, "'roi.min_conf': must be between 0 and 1"),
        ({"critic.articulate": 2}, "'critic.articulate': must be between 0 and 1"),
        ({"clips.clip_len": 2.5}, "'clips.clip_len': expected int"),
        ({"roi.out_hw": [256]}, "'roi.out_hw': expected a [height, width] pair"),
        ({"nosection.key": 1}, "'nosection.key' is not known"),
        ({"fixer.lr": "nan"}, "'fixer.lr': expected a finite number, got 'nan'"),
        ({"roi.margin": float("inf")}, "'roi.margin': expected a finite number, got inf"),
        ({"fixer.guide": "-inf"}, "'fixer.guide': expected a finite number"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(DEFAULT, overrides)
    assert needle in str(err.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("roi:\n  margin: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    binary = tmp_path / "photo.yaml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not YAML")
    with pytest.raises(ConfigError, match="is not text \\(UTF-8\\): give a YAML file"):
        load_config(binary)
    flat = tmp_path / "flat.yaml"
    flat.write_text("margin: 0.2\n")
    with pytest.raises(ConfigError, match="'margin' must sit inside a section"):
        load_config(flat)


def test_overrides_and_set_options():
    cfg = load_config(DEFAULT, parse_set_options(["roi.margin=0.5", "roi.out_hw=128x96", "detect.mirrored=true"]))
    assert cfg.roi.margin == 0.5 and cfg.roi.out_hw == [128, 96] and cfg.detect.mirrored is True
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set_options(["roi.margin"])


@pytest.mark.parametrize("text", ["0123", "yes", "2024_01_05", "2024-01-05", "~", "#x", "a b"])
def test_set_keeps_a_text_value_as_written(text):
    """A folder given with --set is that folder: YAML would read 0123 as 83, yes as True, ~ and #x as nothing."""
    cfg = load_config(None, parse_set_options([f"data.cache_dir={text}"]))
    assert cfg.data.cache_dir == text


@pytest.mark.parametrize("item", ["data.cache_dir=", "roi.margin=", "roi.margin=~", "roi.out_hw=[1,"])
def test_set_without_a_value_is_an_error_not_the_default(item):
    with pytest.raises(ConfigError, match="--set"):
        load_config(None, parse_set_options([item]))


def test_frame_cap_shorter_than_one_clip_is_refused_with_the_numbers():
    """A cap on the frames read per video below one clip's span would leave every video empty, each reported as
    too short to hold a clip: refused at once, naming the key and what would do."""
    with pytest.raises(ConfigError, match=r"max_frames_per_video 10 is shorter than one clip \(31 frames.*31 or more"):
        load_config(None, {"clips.clip_len": 16, "clips.frame_stride": 2, "clips.max_frames_per_video": 10})
    assert load_config(None, {"clips.clip_len": 16, "clips.frame_stride": 2, "clips.max_frames_per_video": 31})
    assert load_config(None, {"clips.clip_len": 16, "clips.max_frames_per_video": 0})
