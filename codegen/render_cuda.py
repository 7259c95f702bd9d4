"""Render an optimised loop-nest kernel as Python source for ``numba.cuda.jit``.

The CUDA counterpart of ``render_numba``, sharing its scalar expression
rendering: each stage becomes one ``@cuda.jit`` kernel over flat float32
arrays with every shape, stride and loop bound a literal. A loop bound to a
block or thread index becomes that index; a stage's outermost parallel loop
(an unbound stage, e.g. zeroing an output) becomes one thread per iteration.
``STAGES`` lists each kernel with its launch configuration, derived from the
bound loops' extents.
"""
from __future__ import annotations

import math

from convtune.codegen.render_numba import FASTMATH, RenderError, _Renderer
from convtune.ir.expr import Expr, IndexLoad, Load
from convtune.ir.loopnest import Allocate, Barrier, For, Kernel, LoopKind, Stmt, Store, walk

GRID_THREADS = 128
"""Threads per block of a stage launched one thread per parallel iteration."""

_SCOPES = {"local": "cuda.local.array", "shared": "cuda.shared.array"}
_AXES = "xyz"


class _CudaRenderer(_Renderer):
    def __init__(self) -> None:
        super().__init__(check_bounds=False)

    def expr(self, e: Expr) -> str:
        if e.lanes > 1:
            raise RenderError(f"the CUDA renderer has no vector code: {e}")
        return super().expr(e)

    def load(self, e: Load) -> str:
        return f"{e.buffer}[{self.expr(e.indices[0])}]"

    def index_load(self, e: IndexLoad) -> str:
        raise RenderError(f"the CUDA renderer has no index tables (the int32 bits of {e.buffer} travel in a float32 "
                          "array only the CPU intrinsics reinterpret); indirect kernels are CPU-only")

    def stmt(self, s: Stmt, depth: int) -> list[str]:
        pad = "    " * depth
        if isinstance(s, For) and s.kind.is_gpu:
            return [f"{pad}{s.var} = cuda.{s.kind.value}", *self.stmt(s.body, depth)]
        if isinstance(s, For) and s.kind != LoopKind.SERIAL:
            raise RenderError(f"loop '{s.var}' is {s.kind.value}; on the GPU only a stage's outermost loop can be "
                              "parallel, and unrolling is done by the passes")
        if isinstance(s, Allocate):
            b = s.buffer
            if b.scope not in _SCOPES:
                raise RenderError(f"buffer {b.name} of scope {b.scope!r} cannot live inside a CUDA kernel")
            return [f"{pad}{b.name} = {_SCOPES[b.scope]}({b.size}, np.float32)", *self.stmt(s.body, depth)]
        if isinstance(s, Barrier):
            return [f"{pad}cuda.syncthreads()"]
        if isinstance(s, Store):
            return [f"{pad}{s.buffer}[{self.expr(s.indices[0])}] = {self.expr(s.value)}"]
        return super().stmt(s, depth)


_MATH_DEVICE_FUNCTIONS = '''

@cuda.jit(device=True, inline=True)
def vexp(x):
    return math.exp(min(x, np.float32(88.7)))  # exp(88.7) is finite in float32


@cuda.jit(device=True, inline=True)
def vsigmoid(x):
    e = math.exp(-abs(x))  # never overflows: 1 / (1 + e) or e / (1 + e)
    return np.float32(1.0) / (np.float32(1.0) + e) if x >= 0 else e / (np.float32(1.0) + e)


@cuda.jit(device=True, inline=True)
def vtanh(x):
    return math.tanh(x)
'''
"""The ``Call`` functions of the fused epilogue (``ir.expr.FUNCTIONS``) as
device functions under the names the shared expression renderer emits; the
CPU's vector versions in ``math_intrinsics`` are LLVM vector code that cannot
run on the GPU."""

Launch = tuple[tuple[int, int, int], tuple[int, int, int]]


def linear_launch(threads: int) -> Launch:
    """(grid, block) of one thread per item: blocks of ``GRID_THREADS``."""
    block = max(1, min(threads, GRID_THREADS))
    return (math.ceil(threads / block), 1, 1), (block, 1, 1)


def stage_launch(stage: Stmt) -> Launch:
    """(grid, block) of a stage: the extents of its bound loops, or one
    thread per iteration of its outermost parallel loop."""
    if isinstance(stage, For) and stage.kind == LoopKind.PARALLEL:
        return linear_launch(stage.extent)
    dims = {s.kind.value: s.extent for s in walk(stage) if isinstance(s, For) and s.kind.is_gpu}
    return (tuple(dims.get(f"blockIdx.{a}", 1) for a in _AXES),  # type: ignore[return-value]
            tuple(dims.get(f"threadIdx.{a}", 1) for a in _AXES))


def _stage_body(r: _CudaRenderer, stage: Stmt) -> list[str]:
    if isinstance(stage, For) and stage.kind == LoopKind.PARALLEL:
        return [f"    {stage.var} = cuda.grid(1)", f"    if {stage.var} < {stage.extent}:",
                *r.stmt(stage.body, 2)]
    return r.stmt(stage, 1)


def render_cuda(k: Kernel, header: list[str]) -> str:
    """The module source; ``header`` lines become leading comments. Stage N
    is the kernel ``stageN(*buffers)``, launched as ``STAGES[N]`` says, in order."""
    r = _CudaRenderer()
    signature = f"void({', '.join('float32[::1]' for _ in k.params)})"
    functions: list[str] = []
    stages = []
    for n, stage in enumerate(k.stages):
        functions += ["", "", f'@cuda.jit("{signature}", fastmath={FASTMATH}, cache=True)',
                      f"def stage{n}({', '.join(b.name for b in k.params)}):", *_stage_body(r, stage)]
        grid, block = stage_launch(stage)
        stages.append(f'("stage{n}", {grid}, {block})')
    out = [f"# {h}" for h in header]
    out += [
        "import math",
        "import numpy as np",
        "from numba import cuda",
        _MATH_DEVICE_FUNCTIONS,
        f"BUFFERS = ({', '.join(repr(b.name) for b in k.params)},)",
        f"STAGES = ({', '.join(stages)},)",
        "",
    ]
    out += [f"{name} = np.float32({value!r})" for value, name in r.consts.items()]
    return "\n".join(out + functions) + "\n"
