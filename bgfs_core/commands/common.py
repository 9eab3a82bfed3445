"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..config import Config, load_config, parse_set_options


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults = configs/default.yaml)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key")


def config_from_args(args: argparse.Namespace, **flag_overrides: object) -> Config:
    """Config file, then ``--set`` overrides, then explicit flags (those that are not None)."""
    overrides = parse_set_options(getattr(args, "set", None))
    overrides.update({k: v for k, v in flag_overrides.items() if v is not None})
    return load_config(getattr(args, "config", None), overrides)
