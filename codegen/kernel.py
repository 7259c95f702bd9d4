"""Callable kernels: argument checking, weight packing, scratch buffers."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtune.codegen.kernel_cache import CompiledModule
from convtune.codegen.launch import run_stages
from convtune.codegen.lower_indirect import TABLE, indirection_operand
from convtune.ir.indirect import IndirectCompute
from convtune.ir.loopnest import Kernel as LoopNest
from convtune.schedules.layout import pack_toeplitz_weights, pack_weight_array, pack_winograd_weights
from convtune.ir.toeplitz import ToeplitzCompute
from convtune.ir.winograd import WinogradCompute
from convtune.schedules.state import BlockedLayout, ScheduleState, WeightPacking


def _as_input(name: str, x: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return arr


def host_operands(state: ScheduleState, nest: LoopNest, weight: object,
                  bias: object = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The weights in the kernel's layout (packed, Winograd-transformed or Toeplitz matrices)
    and the bias, checked and flat: what ``prepare`` does once, for every target."""
    wl = state.compute.workload
    w = _as_input("weight", weight, wl.weight_shape)
    shapes = {b.name: b.shape for b in nest.params}
    packing = state.weight_packing
    if isinstance(state.compute, WinogradCompute):  # U = G g G^T, transform element outermost
        w = pack_winograd_weights(packing or WeightPacking(1, 1), state.compute.transform_weights(w),
                                  shapes["weight"])
    elif isinstance(state.compute, ToeplitzCompute):  # one banded matrix per (k, c, kernel row)
        w = pack_toeplitz_weights(packing or WeightPacking(1, 1), state.compute.toeplitz_weights(w),
                                  shapes["weight"])
    elif packing is not None:
        w = pack_weight_array(packing, w, shapes["weight"])
    b = None
    if wl.bias:
        if bias is None:
            raise ValueError("bias: this workload has a bias; pass one of shape (K,)")
        b = _as_input("bias", bias, (wl.K,))
    elif bias is not None:
        raise ValueError("bias: this workload was declared without a bias (conv2d(..., bias=True))")
    return w.reshape(-1), None if b is None else b.reshape(-1)


def host_tables(state: ScheduleState, nest: LoopNest) -> dict[str, np.ndarray]:
    """The index tables a kernel reads (``IndexLoad``) by argument name: they
    depend on the workload only, so ``prepare`` builds them once, as it packs
    the weights. Only the indirect template has one (its indirection table)."""
    if not isinstance(state.compute, IndirectCompute):
        return {}
    return {TABLE: indirection_operand(state, nest)}


SCRATCH_ALIGN = 16
"""Scratch buffers in an arena start on 64-byte boundaries (16 floats)."""


class ScratchArena:
    """One scratch buffer shared by kernels that run one after another, as a
    model's convs do: each kernel's packed input and transform buffers are
    views of it, so a kernel finds the scratch its predecessor just wrote in
    cache instead of its own, last touched a whole network ago (Winograd's
    are megabytes). Kernels sharing an arena must not run at the same time."""

    def __init__(self) -> None:
        self._buf = np.empty(0, np.float32)
        self.generation = 0
        """Bumped when the buffer grows (views taken before are stale)."""

    @property
    def size(self) -> int:
        return self._buf.size

    def take(self, sizes: list[int]) -> list[np.ndarray]:
        """Views of ``sizes`` float32 elements each, aligned, from the start."""
        offsets = []
        total = 0
        for n in sizes:
            offsets.append(total)
            total += -(-n // SCRATCH_ALIGN) * SCRATCH_ALIGN
        if total > self._buf.size:
            self._buf = np.empty(total + SCRATCH_ALIGN, np.float32)
            self.generation += 1
        start = (-self._buf.ctypes.data // 4) % SCRATCH_ALIGN
        return [self._buf[start + o:start + o + n] for o, n in zip(offsets, sizes)]


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

    @property
    def input_layout(self) -> BlockedLayout | None:
        """The blocked layout ``data`` is taken in (None: NCHW)."""
        return self.state.io_layout("data")

    @property
    def output_layout(self) -> BlockedLayout | None:
        """The blocked layout ``out`` is written in (None: NCHW)."""
        return self.state.io_layout("out")

    @property
    def residual_layout(self) -> BlockedLayout | None:
        """The blocked layout ``residual`` is read in (None: NCHW)."""
        return self.state.io_layout("residual")

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Physical shape of argument ``name`` ('data', 'out', 'residual', ...)."""
        return next(b.shape for b in self.loop_nest.params if b.name == name)

    def prepare(self, weight: object, bias: object = None, arena: ScratchArena | None = None) -> PreparedConv:
        """Pack the weights once. With ``arena``, the kernel's scratch lives in
        that buffer, shared with the other kernels that use it."""
        return PreparedConv(self, *host_operands(self.state, self.loop_nest, weight, bias), arena=arena)

    def __call__(self, data: object, weight: object, bias: object = None,
                 residual: object = None, out: np.ndarray | None = None) -> np.ndarray:
        return self.prepare(weight, bias)(data, residual=residual, out=out)


class PreparedConv:
    """A kernel with its weights packed: ``conv(data, residual=None, out=None)``.

    ``data``, ``residual`` and ``out`` are NCHW arrays, or the physical arrays
    of the kernel's blocked layouts (``kernel.input_layout`` etc.; a blocked
    output array must be zero outside the tensor: ``new_output`` makes one).
    Holds per-call scratch (the packed input), its own or in a shared
    ``ScratchArena``, so one instance must not be called from two threads at
    once.
    """

    def __init__(self, kernel: CompiledKernel, weight: np.ndarray, bias: np.ndarray | None,
                 arena: ScratchArena | None = None) -> None:
        self.kernel = kernel
        self.weight = weight
        self.bias = bias
        self.tables = host_tables(kernel.state, kernel.loop_nest)
        params = kernel.loop_nest.params
        self._scratch_sizes = {b.name: b.size for b in params
                               if b.name not in ("data", "weight", "bias", "residual", "out", *self.tables)}
        self.arena = arena or ScratchArena()
        self._scratch: dict[str, np.ndarray] = {}
        self._generation = -1
        self._order = [b.name for b in params]

    def scratch(self) -> dict[str, np.ndarray]:
        """The scratch buffers by name (views of the arena, renewed if it grew)."""
        if self._generation != self.arena.generation:  # -1 at first: never taken
            views = self.arena.take(list(self._scratch_sizes.values()))
            self._scratch = dict(zip(self._scratch_sizes, views))
            self._generation = self.arena.generation
        return self._scratch

    def new_output(self) -> np.ndarray:
        """An output array for this kernel: NCHW, or its blocked layout with the border zeroed."""
        shape = self.kernel.shape_of("out")
        return np.empty(shape, np.float32) if self.kernel.output_layout is None else np.zeros(shape, np.float32)

    def __call__(self, data: object, residual: object = None, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = self.new_output()
        self.bind(data, residual, out)()
        return out

    def bind(self, data: object, residual: object, out: np.ndarray) -> BoundConv:
        """The call with its arguments checked and fixed once: a model's
        execution loop (or its compiled driver) then pays only for the launch.
        ``data``, ``residual`` and ``out`` must be the arrays used at every call."""
        wl = self.kernel.workload
        shape_of = self.kernel.shape_of
        args = dict(self.scratch())
        args["data"] = _as_input("data", data, shape_of("data")).reshape(-1)
        args["weight"] = self.weight
        args.update(self.tables)
        if self.bias is not None:
            args["bias"] = self.bias
        if wl.residual:
            if residual is None:
                raise ValueError(f"residual: this workload adds a residual; pass one of shape {shape_of('residual')}")
            args["residual"] = _as_input("residual", residual, shape_of("residual")).reshape(-1)
        elif residual is not None:
            raise ValueError("residual: this workload was declared without a residual (conv2d(..., residual=True))")
        if out.shape != shape_of("out") or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous float32 array of shape {shape_of('out')}, "
                             f"got {out.dtype} {out.shape}")
        args["out"] = out.reshape(-1)
        return BoundConv(self.kernel.compiled, tuple(args[n] for n in self._order), self.arena, self._generation)


@dataclass(frozen=True)
class BoundConv:
    """A prepared conv bound to its arrays (flat, in the stage functions'
    order): calling it runs the stages with no checks."""

    compiled: CompiledModule
    buffers: tuple[np.ndarray, ...]
    arena: ScratchArena
    generation: int

    @property
    def stale(self) -> bool:
        """True once the arena has grown: the scratch views bound are no longer its buffer."""
        return self.generation != self.arena.generation

    def __call__(self) -> None:
        compiled = self.compiled
        run_stages(compiled.checked)(compiled.addresses, compiled.extents, self.buffers)
