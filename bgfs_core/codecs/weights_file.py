"""Reading one model's tensors out of a weights file (``.safetensors``, ``.pth``/``.pt``/``.ckpt``), and saying
shortly why a strict load failed. For the VAE files `bgfs fix` takes (`wan_checkpoint`, `taehv`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BGFSError, first_line

if TYPE_CHECKING:
    import torch

# Prefixes a whole-model checkpoint puts before its VAE's keys.
PREFIXES = ("first_stage_model.", "vae.")


def read_state_dict(path: str | Path, marker: str) -> dict[str, torch.Tensor]:
    """The tensors of the model whose key ``marker`` (e.g. ``decoder.head.0.gamma``) the file holds, bare or behind
    one of `PREFIXES` (then only that part, without the prefix); empty when it holds no such key. Weights only: no
    code in the file runs, and a safetensors file's other tensors are never read (a 28 GB model passed by mistake
    costs nothing)."""
    import torch

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                prefix = _prefix(keys, marker)
                return {} if prefix is None else {k[len(prefix):]: f.get_tensor(k) for k in keys
                                                  if k.startswith(prefix)}  # fmt: skip
        sd = _torch_load(path)
    except BGFSError:
        raise
    except Exception as e:  # a truncated or foreign file: safetensors, pickle and zip raise their own kinds
        raise BGFSError(f"could not read {path} as a weights file: {_why_unreadable(path, e)}") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):  # a training checkpoint
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BGFSError(f"{path} holds no state dict of tensors")
    prefix = _prefix([k for k in sd if isinstance(k, str)], marker)
    part = {} if prefix is None else {k[len(prefix):]: v for k, v in sd.items()
                                      if isinstance(k, str) and k.startswith(prefix)}  # fmt: skip
    if not all(isinstance(v, torch.Tensor) for v in part.values()):
        raise BGFSError(f"{path} holds no state dict of tensors")
    return part


def _prefix(keys: list[str], marker: str) -> str | None:
    have = set(keys)
    return next((p for p in ("", *PREFIXES) if p + marker in have), None)


def _why_unreadable(path: Path, exc: Exception) -> str:
    """torch's weights-only refusal, said for what the file is: its long advice to turn the safety off fits a
    checkpoint that pickles objects beside its tensors, not a file that is no checkpoint at all."""
    if "Weights only load failed" not in str(exc):
        return first_line(exc)
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == b"PK" or head[:1] == b"\x80":  # a torch zip archive, or a legacy pickle
        return ("it pickles Python objects beside its tensors, and BGFS loads weights only (no code in a file runs): "
                "save its state_dict as .safetensors")
    return "it is neither a safetensors file nor a PyTorch checkpoint (.pth, .pt, .ckpt)"


def _torch_load(path: Path) -> Any:
    import torch

    try:  # memory-mapped: a whole-model checkpoint's other tensors are not read into memory
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)  # the legacy format cannot be mapped


def describe_mismatch(model: Any, sd: dict[str, torch.Tensor]) -> str:
    """What a strict ``model.load_state_dict(sd)`` disagreed on, shortly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    parts = [f"{len(v)} {name}, e.g. {v[0]}" for name, v in (("missing", missing), ("unexpected", extra),
                                                               ("of another shape", shapes)) if v]  # fmt: skip
    return "; ".join(parts) or "a tensor did not load"
