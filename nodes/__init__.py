"""BGFS ComfyUI nodes: thin V3 glue over ``bgfs_core``.

``BGFSExtension`` is resolved lazily (PEP 562), so ``nodes.glue`` imports without ComfyUI (host-free tests) and
importing the pack does nothing heavy. ComfyUI gets it through the pack's ``comfy_entrypoint``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BGFSExtension"]


def __getattr__(name: str) -> Any:
    if name == "BGFSExtension":
        from .extension import BGFSExtension

        return BGFSExtension
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
