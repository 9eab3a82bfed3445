"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import BGFSError


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files, and a writer that replaces the file itself (safetensors) makes its own: give
        # the result the usual permissions, so that a ComfyUI run as another user can read a critic
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_folder_possible(folder: str | Path, what: str) -> None:
    """Refuse a folder that cannot be made, or written in, before any work is done for it: a file stands where it
    or one of its parents would go, or the nearest folder that exists cannot be written (read-only, no permission;
    tried with a file made and removed at once, as permission bits do not tell root or a read-only mount)."""
    for above in (Path(folder), *Path(folder).parents):
        if above.exists():
            if not above.is_dir():
                raise BGFSError(f"{what}: {above} is a file, where a folder would have to be")
            try:
                fd, probe = tempfile.mkstemp(prefix=".bgfs-write-probe.", dir=above)
            except OSError as exc:
                raise BGFSError(f"{what}: {above} cannot be written ({exc.strerror or exc}): choose a folder you can "
                                "write to") from None  # fmt: skip
            os.close(fd)
            os.unlink(probe)
            return


def write_json_atomic(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz_atomic(path: str | Path, **arrays: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        import numpy as np

        np.savez_compressed(fh, **arrays)
