"""A second torch device on a CPU-only machine, for tests of code written to run on a GPU.

`other_device()` is a context in which the device ``meta`` behaves like a CUDA device that holds real data: tensors
created on it or moved to it (factories, ``.to``, ``Module.to``) are CPU tensors underneath that report ``meta`` as
their device, and every operation that mixes them with CPU tensors raises as CUDA would:

- an operation on tensors of both devices raises "Expected all tensors to be on the same device" (as on CUDA, a
  CPU 0-dim tensor is allowed in an elementwise operation, and CPU indices in indexing, but device indices into a
  CPU tensor are not);
- ``.numpy()`` / ``np.asarray`` raise "can't convert ... to numpy" (``.item()``, ``float()``, ``bool()`` work);
- a random draw on the device with a CPU ``torch.Generator`` raises.

So a test finds where a host-side tensor meets a device-side one without a GPU. Values are computed on the CPU, so
results can be compared with a CPU run bit for bit. Speed, memory and CUDA's own kernels are not simulated, and
the device's type is ``meta``: code that branches on ``"cuda"`` (half-precision choices, ``torch.cuda`` calls)
takes its other branch here.

With ``BGFS_TEST_DEVICE`` set (e.g. ``cuda``), `other_device()` gives that real device instead and `stand_in()` is
False: the same tests then run on a GPU where there is one, with tolerances for its own arithmetic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

DEVICE = torch.device("meta")
_T = torch.Tensor
_TO_HOST = (_T.item, _T.__float__, _T.__int__, _T.__bool__, _T.tolist, _T.__index__)
# ops that may take tensors of both devices: copies between them, and Module.to's check before it swaps a tensor
_MIXED = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default,
          torch.ops.aten._has_compatible_shallow_copy_type.default)
# CUDA takes index tensors from the CPU: only the indexed tensor and the values must be on the device
_INDEXED = {torch.ops.aten.index.Tensor: (0,), torch.ops.aten.index_put.default: (0, 2),
            torch.ops.aten.index_put_.default: (0, 2), torch.ops.aten._index_put_impl_.default: (0, 2)}


class OnDevice(torch.Tensor):
    """A CPU tensor (``host``) that reports `DEVICE` as its device."""

    host: torch.Tensor

    @staticmethod
    def __new__(cls, host: torch.Tensor) -> OnDevice:
        t = torch.Tensor._make_wrapper_subclass(cls, host.shape, strides=host.stride(),
                                                storage_offset=host.storage_offset(), dtype=host.dtype,
                                                device=DEVICE, layout=host.layout)  # fmt: skip
        t.host = host
        return t

    def __repr__(self) -> str:  # type: ignore[override]
        return f"OnDevice({self.host!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in (_T.numpy, _T.__array__):
            raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the "
                            "tensor to host memory first.")  # fmt: skip
        if func in _TO_HOST:
            return func(args[0].host, *args[1:], **kwargs)
        if func in (_T.__getitem__, _T.__setitem__):  # the binding makes list indices on the device, as data-less
            args = (args[0], _host_index(args[1]), *args[2:])  # tensors here: CPU index tensors do the same
        return torch._C._disabled_torch_function_impl(func, types, args, kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _host_index(index: Any) -> Any:
    if isinstance(index, list):
        return torch.tensor(index)
    if isinstance(index, tuple):
        return tuple(torch.tensor(i) if isinstance(i, list) else i for i in index)
    return index


def _run(func: Any, args: tuple, kwargs: dict) -> Any:
    on_device, on_host, device_index = False, False, False

    pointwise = torch.Tag.pointwise in getattr(func, "tags", ())

    def unwrap(x: Any, checked: bool = True) -> Any:
        nonlocal on_device, on_host, device_index
        if isinstance(x, OnDevice):
            on_device = on_device or checked
            device_index = device_index or not checked
            return x.host
        if isinstance(x, torch.Tensor) and x.device.type == DEVICE.type:
            raise AssertionError(f"a real {DEVICE} tensor (no data) reached {func}: other_device() misses a way "
                                 "tensors are made on the device")  # fmt: skip
        if isinstance(x, torch.Tensor) and checked and (x.dim() > 0 or not pointwise):
            on_host = True
        if isinstance(x, torch.device) and x.type == DEVICE.type:
            return torch.device("cpu")
        return x

    checked = _INDEXED.get(func)
    host_args = tuple(tree_map(lambda x, i=i: unwrap(x, checked is None or i in checked), a)
                      for i, a in enumerate(args))  # fmt: skip
    target = kwargs.get("device")
    to_device = target is not None and torch.device(target).type == DEVICE.type
    generator = kwargs.get("generator")
    if to_device and generator is not None and generator.device.type != DEVICE.type:
        raise RuntimeError(f"Expected a '{DEVICE.type}' device type for generator but found 'cpu'")
    host_kwargs = tree_map(unwrap, kwargs)
    if device_index and not on_device:
        raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
    if on_device and on_host and func not in _MIXED:
        where = [f"{'device' if isinstance(a, OnDevice) else 'cpu'} {list(a.shape)}"
                 for a in args if isinstance(a, torch.Tensor)]  # fmt: skip
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"{DEVICE} and cpu! ({func}: {', '.join(where)})")  # fmt: skip
    out = func(*host_args, **host_kwargs)
    if func is torch.ops.aten.copy_.default:
        return args[0]
    if func is torch.ops.aten._to_copy.default:
        device_out = to_device or (target is None and on_device)
    else:
        device_out = to_device or on_device
    if not device_out:
        return out
    return tree_map(lambda x: OnDevice(x) if isinstance(x, torch.Tensor) else x, out)


class _Dispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


class _Moves(TorchFunctionMode):
    """``Tensor.to(DEVICE)`` from the CPU: the binding looks the device up before dispatch, so route it to
    ``aten._to_copy``, which `_Dispatch` turns into an `OnDevice`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _T.to:
            t = args[0]
            if len(args) > 1 and isinstance(args[1], torch.Tensor):
                device, dtype = args[1].device, args[1].dtype
            else:
                rest = {k: v for k, v in kwargs.items() if k not in ("copy", "non_blocking")}
                device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **rest)
            device = torch.device(device) if device is not None else t.device
            dtype = dtype if dtype is not None else t.dtype
            if device.type == DEVICE.type or isinstance(t, OnDevice):
                if device == t.device and dtype == t.dtype and not kwargs.get("copy", False):
                    return t
                return torch.ops.aten._to_copy.default(t, dtype=dtype, device=device)
        if func in (_T.new_tensor, torch.tensor, torch.as_tensor):
            like = args[0] if func is _T.new_tensor else None
            data = args[1] if like is not None else args[0]
            device = kwargs.get("device", like.device if like is not None else None)
            if device is not None and torch.device(device).type == DEVICE.type:
                dtype = kwargs.get("dtype", like.dtype if like is not None and not isinstance(data, torch.Tensor)
                                   else None)  # fmt: skip
                host = torch.tensor(data.host if isinstance(data, OnDevice) else data, dtype=dtype)
                return torch.ops.aten._to_copy.default(host, device=DEVICE)
        return func(*args, **kwargs)


def stand_in() -> bool:
    """Whether `other_device()` is the stand-in (no ``BGFS_TEST_DEVICE``): its results equal the CPU's exactly."""
    return not os.environ.get("BGFS_TEST_DEVICE")


@contextlib.contextmanager
def other_device() -> Iterator[torch.device]:
    """Within: `DEVICE` holds data like a GPU would, and host/device mix-ups raise as on CUDA (or, with
    ``BGFS_TEST_DEVICE``, that real device)."""
    if not stand_in():
        yield torch.empty(0, device=os.environ["BGFS_TEST_DEVICE"]).device  # "cuda" -> cuda:0, as tensors report it
        return
    from unittest import mock

    import bgfs_core.devices

    real_check = bgfs_core.devices.check_device

    def check_device(name: str, what: str = "--device") -> None:  # `meta` holds no data except in here
        if torch.device(name) != DEVICE:
            real_check(name, what)

    with _Dispatch(), _Moves(), mock.patch.object(bgfs_core.devices, "check_device", check_device):
        yield DEVICE
