"""Errors a user can act on. The CLI and the nodes prefix them with the command or node name."""

from pathlib import Path
from typing import Any

# pyproject.toml's optional extra `diffusers` (the nodes use ComfyUI's VAE and need none of it)
DIFFUSERS_EXTRA = 'pip install "diffusers>=0.35" "transformers>=4.45" "accelerate>=0.30" ftfy'


class BGFSError(ValueError):
    """Bad input or a missing file: the message says what is wrong and what to do."""


class OutOfMemoryError(BGFSError):
    """The device ran out of memory: the message says how big the job was and what makes it smaller. A host that
    holds other models (ComfyUI) may free them and try once more; ``what`` (the job, without advice) lets a host
    word the advice in its own terms (node inputs, CLI flags)."""

    def __init__(self, message: str, what: str = "") -> None:
        super().__init__(message)
        self.what = what or message


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory: torch's OutOfMemoryError (CUDA, ...), the plain
    RuntimeError of torch's CPU allocator, or BGFS's own :class:`OutOfMemoryError` that words either."""
    import torch

    return (isinstance(exc, (torch.OutOfMemoryError, OutOfMemoryError))
            or "DefaultCPUAllocator: can't allocate memory" in str(exc))  # fmt: skip


def not_a_file(path: Path) -> str:
    """How a path that should name a file fails to, for a message ("critic file X {not_a_file(X)}")."""
    return "is a folder, not a file" if path.is_dir() else "does not exist"


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type's name when it has none:
    what a user-facing error quotes of the exception under it."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def import_diffusers(what: str) -> Any:
    """The ``diffusers`` module, or a BGFSError saying that ``what`` needs that optional extra and how to get it."""
    try:
        import diffusers
    except ModuleNotFoundError as e:
        if e.name != "diffusers":  # one of its own dependencies: pip's message is the useful one
            raise
        raise BGFSError(f"{what} needs diffusers, an optional extra of BGFS: {DIFFUSERS_EXTRA}") from e
    return diffusers
