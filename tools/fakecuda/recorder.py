"""The dispatch mode that records what would make a GPU step wait or go wrong (see __init__)."""
from __future__ import annotations

import contextlib
import traceback
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

SYNCING = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::nonzero_static", "aten::masked_select",
           "aten::bincount", "aten::unique", "aten::_unique", "aten::_unique2", "aten::unique_dim",
           "aten::unique_consecutive", "aten::masked_scatter", "aten::is_nonzero", "aten::equal", "aten::allclose",
           "aten::repeat_interleave"}
"""Ops whose result size or value the host must wait for, on CUDA inputs."""


def _where() -> str:
    """The innermost frame of the project's own code: where a event came from."""
    for f in reversed(traceback.extract_stack()):
        if any(p in f.filename for p in ("/lacol/", "/pipelines/", "/tools/fakecuda/scenarios")):
            return f"{f.filename.split('/')[-2]}/{f.filename.split('/')[-1]}:{f.lineno} {f.name}"
    return "?"


class Recorder(TorchDispatchMode):
    """Records events; ``pinned`` emulates page-locked host memory (``pin_memory`` returns a
    copy that ``is_pinned`` then reports, as CUDA's host allocator would)."""

    def __init__(self):
        super().__init__()
        self.events: list[dict] = []
        self._pinned: dict[int, weakref.ref] = {}
        self.ops = 0
        self.quiet = 0

    @contextlib.contextmanager
    def setup(self):
        """Work inside is set-up, not the path under check: its events are not recorded."""
        self.quiet += 1
        try:
            yield
        finally:
            self.quiet -= 1

    def is_pinned(self, t: torch.Tensor) -> bool:
        ref = self._pinned.get(id(t))
        return ref is not None and ref() is t

    def event(self, kind: str, op: str) -> None:
        if not self.quiet:
            self.events.append({"kind": kind, "op": op, "where": _where()})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.ops += 1
        if name == "aten::_pin_memory":
            if isinstance(args[0], FakeTensor):
                out = args[0].clone()
            else:
                with torch._C._DisableTorchDispatch():
                    out = args[0].clone()
            self._pinned[id(out)] = weakref.ref(out)
            return out
        if name == "aten::is_pinned":
            return self.is_pinned(args[0])
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        cuda = any(t.device.type == "cuda" for t in tensors)
        dev = kwargs.get("device")
        if not cuda and not any(isinstance(t, FakeTensor) for t in tensors) and (
                dev is None or torch.device(dev).type != "cuda"):
            with torch._C._DisableTorchDispatch():  # host work on real tensors runs for real
                return func(*args, **kwargs)
        if name in ("aten::_to_copy", "aten::copy_", "aten::to"):
            self._copy(name, args, kwargs)
        elif cuda:
            if name in SYNCING:
                self.event("host sync", name)
            elif name.startswith("aten::index") and len(args) > 1 and isinstance(args[1], (list, tuple)) and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
                self.event("host sync", name + " (boolean mask)")
            devices = {t.device for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
            if len(devices) > 1:
                self.event("device mix", f"{name} on {sorted(map(str, devices))}")
            gen = kwargs.get("generator")
            if gen is not None and gen.device.type != "cuda":
                self.event("CPU generator", name)
        else:  # a factory on the device
            gen = kwargs.get("generator")
            if gen is not None and gen.device.type != "cuda":
                self.event("CPU generator", name)
        return func(*args, **kwargs)

    def _copy(self, name, args, kwargs):
        if name == "aten::copy_":
            dst, src = args[0].device, args[1].device
            blocking, source = not (kwargs.get("non_blocking") or (len(args) > 2 and args[2])), args[1]
        else:
            src = args[0].device
            dst = kwargs.get("device")
            dst = src if dst is None else torch.device(dst)
            blocking, source = not kwargs.get("non_blocking", False), args[0]
        if src.type == "cpu" and dst.type == "cuda":
            if source.dim() == 0 and name == "aten::copy_":
                return  # a host scalar filled into a device tensor travels in the launch
            if blocking:
                self.event("blocking host-to-device copy", name)
            if not self.is_pinned(source):
                self.event("pageable host-to-device copy", name)
        elif src.type == "cuda" and dst.type == "cpu":
            self.event("host sync", f"{name} device-to-host")
