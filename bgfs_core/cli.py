"""The ``bgfs`` command line. Each sub-command lives in ``bgfs_core/commands/<name>.py`` with
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports happen inside ``run``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from .errors import BGFSError
from .native_logs import native_info_filtered

COMMANDS = {
    "precompute": "precompute",
    "train-critic-cmd": "train_critic",
    "fix": "fix",
    "generate": "generate",
    "score": "score",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="bgfs", description="Body-part Geometry Fixer Sidecar for Wan 2.2 videos.")
    parser.add_argument("--version", action="version", version=f"bgfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f".commands.{module_name}", __package__)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # --quiet: MediaPipe's native log lines too, which no setting of its own silences
    with native_info_filtered() if getattr(args, "quiet", False) else contextlib.nullcontext():
        try:
            return int(args._run(args) or 0)
        except BGFSError as exc:
            print(f"bgfs {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a disk that is full or read-only, a path without permission: say which, no traceback
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"bgfs {args.command}: error: {exc.strerror or exc}{where}: check the path and free space; "
                  "inputs are untouched and no partial output was left", file=sys.stderr)  # fmt: skip
            return 2
        except KeyboardInterrupt:
            print(f"bgfs {args.command}: interrupted; inputs are untouched and no half-written file was left",
                  file=sys.stderr)  # fmt: skip
            return 130


if __name__ == "__main__":
    sys.exit(main())
