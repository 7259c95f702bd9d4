"""Callable kernels: argument checking, weight packing, scratch buffers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtune.codegen.kernel_cache import CompiledModule
from convtune.codegen.launch import run_stages
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.schedules.layout import pack_weight_array
from convtune.ir.winograd import WinogradCompute
from convtune.schedules.state import ScheduleState, WeightPacking


def _as_input(name: str, x: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return arr


@dataclass
class CompiledKernel:
    """A conv2d kernel compiled from a schedule.

    ``kernel(data, weight, bias=None, residual=None)`` computes the conv in one
    call (packing the weights each time). For inference, ``prepare`` packs the
    weights once and returns a ``PreparedConv`` that only takes the data.
    """

    state: ScheduleState
    loop_nest: LoopNest
    source: str
    compiled: CompiledModule

    @property
    def workload(self):  # type: ignore[no-untyped-def]
        return self.state.compute.workload

    def prepare(self, weight: object, bias: object = None) -> PreparedConv:
        wl = self.workload
        w = _as_input("weight", weight, wl.weight_shape)
        shapes = {b.name: b.shape for b in self.loop_nest.params}
        packing = self.state.weight_packing
        if isinstance(self.state.compute, WinogradCompute):  # U = G g G^T, packed like KCRS
            w = self.state.compute.transform_weights(w)
            packing = packing or WeightPacking(1, 1)
        if packing is not None:
            w = pack_weight_array(packing, w, shapes["weight"])
        b = None
        if wl.bias:
            if bias is None:
                raise ValueError("bias: this workload has a bias; pass one of shape (K,)")
            b = _as_input("bias", bias, (wl.K,))
        elif bias is not None:
            raise ValueError("bias: this workload was declared without a bias (conv2d(..., bias=True))")
        return PreparedConv(self, w.reshape(-1), None if b is None else b.reshape(-1))

    def __call__(self, data: object, weight: object, bias: object = None,
                 residual: object = None, out: np.ndarray | None = None) -> np.ndarray:
        return self.prepare(weight, bias)(data, residual=residual, out=out)


class PreparedConv:
    """A kernel with its weights packed: ``conv(data, residual=None, out=None)``.

    Holds per-call scratch (the packed input), so one instance must not be
    called from two threads at once.
    """

    def __init__(self, kernel: CompiledKernel, weight: np.ndarray, bias: np.ndarray | None) -> None:
        self.kernel = kernel
        self.weight = weight
        self.bias = bias
        params = kernel.loop_nest.params
        self._scratch = {b.name: np.empty(b.size, np.float32) for b in params
                         if b.name not in ("data", "weight", "bias", "residual", "out")}
        self._order = [b.name for b in params]

    def __call__(self, data: object, residual: object = None, out: np.ndarray | None = None) -> np.ndarray:
        wl = self.kernel.workload
        args = dict(self._scratch)
        args["data"] = _as_input("data", data, wl.data_shape).reshape(-1)
        args["weight"] = self.weight
        if self.bias is not None:
            args["bias"] = self.bias
        if wl.residual:
            if residual is None:
                raise ValueError(f"residual: this workload adds a residual; pass one of shape {wl.out_shape}")
            args["residual"] = _as_input("residual", residual, wl.out_shape).reshape(-1)
        elif residual is not None:
            raise ValueError("residual: this workload was declared without a residual (conv2d(..., residual=True))")
        if out is None:
            out = np.empty(wl.out_shape, np.float32)
        elif out.shape != wl.out_shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous float32 array of shape {wl.out_shape}, "
                             f"got {out.dtype} {out.shape}")
        args["out"] = out.reshape(-1)
        compiled = self.kernel.compiled
        run_stages(compiled.checked)(compiled.addresses, compiled.extents, tuple(args[n] for n in self._order))
        return out
