"""Torch device names checked before any work: a CPU build asked for ``cuda`` fails at once, with what to do."""

from __future__ import annotations

from .errors import BGFSError


def check_device(name: str, what: str = "--device") -> None:
    """Refuse a device torch cannot use here: a name that is no device (``gpu``), a kind this build or machine
    lacks (``cuda`` on a CPU build or with no GPU visible, ``mps`` off a Mac), an index past the devices seen."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise BGFSError(f"{what} {name!r} is not a torch device: use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cpu":
        return
    if device.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:  # torch.cuda, torch.xpu, ...: the backends that count their devices
        backend = getattr(torch, device.type, None)
        available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
        count = backend.device_count() if available and hasattr(backend, "device_count") else 1
    if not available:
        raise BGFSError(f"{what} {name}: this torch ({torch.__version__}) sees no {device.type} device (a CPU build, "
                        "or no GPU visible): use --device cpu, or install torch's build for your GPU")  # fmt: skip
    if device.index is not None and device.index >= count:
        raise BGFSError(f"{what} {name}: torch sees {count} {device.type} device(s), numbered from 0")
