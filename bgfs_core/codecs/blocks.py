"""Activation checkpointing inside a causal Wan decoder, one residual or resample block at a time.

Checkpointing a whole decode chunk still holds all of that chunk's activations during its backward: at full size
the top-resolution blocks alone take gigabytes. Checkpointing each block instead needs care, because the Wan
decoders thread a mutable feature cache (one slot per causal conv, indexed by a running counter ``feat_idx``)
through their blocks: a block recomputed in the backward pass would read slots that later frames have since
overwritten. So each block becomes a pure function of its input and of the cache slots it owns (passed in and
returned), which torch's checkpoint can recompute exactly. Works on diffusers' ``WanDecoder3d`` and ComfyUI's
``Decoder3d`` (both 2.1 and 2.2): the innermost modules whose ``forward`` takes ``feat_cache`` are wrapped.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from ..errors import BGFSError

# modules inside a block that hold a causal conv but are called without the cache (1x1 shortcuts)
_UNCACHED = ("shortcut", "conv_shortcut", "skip")


def _takes_cache(module: Any) -> bool:
    try:
        return "feat_cache" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _is_causal_conv(module: Any) -> bool:
    return type(module).__name__.endswith("CausalConv3d")


def _cache_slots(block: Any) -> int:
    """Cache slots ``block`` uses per call: its causal convs, except the uncached shortcut convs."""
    return sum(_is_causal_conv(m) and not any(part in _UNCACHED for part in name.split("."))
               for name, m in block.named_modules())  # fmt: skip


def cached_blocks(decoder: Any) -> list[Any]:
    """The innermost submodules of ``decoder`` that take ``feat_cache`` (residual and resample blocks)."""
    found = []
    for _, m in decoder.named_modules():
        if m is decoder or not _takes_cache(m):
            continue
        if not any(c is not m and _takes_cache(c) for c in m.modules()):
            found.append(m)
    return found


def _checkpointed_forward(block: Any, original: Any, slots: int) -> Any:
    import torch
    from torch.utils.checkpoint import checkpoint

    def forward(x: Any, feat_cache: Any = None, feat_idx: Any = None, *args: Any, **kwargs: Any) -> Any:
        if feat_idx is None:
            feat_idx = [0]
        if feat_cache is None or not torch.is_grad_enabled():
            return original(x, feat_cache, feat_idx, *args, **kwargs)
        start = feat_idx[0]

        def run(x: Any, *old: Any) -> tuple:
            local = list(feat_cache)  # other slots are not touched by this block
            local[start:start + slots] = old
            counter = [start]
            out = original(x, local, counter, *args, **kwargs)
            if counter[0] != start + slots:
                raise BGFSError(f"{type(block).__name__} used {counter[0] - start} causal-cache slots, expected "
                                f"{slots}: this decoder version is not supported by block checkpointing "
                                "(turn it off)")  # fmt: skip
            return (out, *local[start:start + slots])

        out, *new = checkpoint(run, x, *feat_cache[start:start + slots], use_reentrant=False)
        feat_cache[start:start + slots] = new
        feat_idx[0] = start + slots
        return out

    return forward


@contextlib.contextmanager
def checkpoint_cached_blocks(decoder: Any, enabled: bool = True) -> Iterator[int]:
    """While active (and ``enabled``), every cached block of ``decoder`` runs under activation checkpointing (when
    gradients are on); yields how many blocks were wrapped. The module is restored on exit."""
    blocks = [b for b in cached_blocks(decoder) if "forward" not in b.__dict__] if enabled else []  # (not twice)
    try:
        for b in blocks:
            b.forward = _checkpointed_forward(b, b.forward, _cache_slots(b))
        yield len(blocks)
    finally:
        for b in blocks:
            b.__dict__.pop("forward", None)
