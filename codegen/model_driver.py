"""One compiled driver per model plan: every step's stages in turn, without returning to Python.

A plan's steps are bound calls: convs (``BoundConv``: stage addresses and a
buffer tuple) and compiled operators (``OpCall``). ``Driver``
writes a Numba function per segment of consecutive bound steps: each conv
becomes a call of the parallel stage driver (``codegen.launch``) on its own
stage addresses and buffers, each operator a call of its ``op_kernels``
function, all through ``call_native`` on function addresses taken in this
process (the stage driver's and the kernels' own caches hold their code; the
segment's cache holds none of it: linked into it, a cached segment
segfaulted later processes, numba issue 8578). A segment takes the
addresses of the arrays it uses in one int64 array and makes each array
once at its top (``array_at``), every operator's shape a literal. (A tuple
of the arrays as its argument, which numba passes as seven scalars an
array, made resnet18's one segment of 116 arrays compile in 4.6 s, now
2.5 s; one tuple of all the model's arrays for every segment had been
worse: 14 segments of a small exported network took 55 s.) Steps that
are plain Python closures (operators without a kernel) split the plan into
segments and run between them; the driver keeps the arrays alive as long
as the addresses are used.

The source holds no address, only the plan's structure, so it is the same
in every process: it goes to the kernel cache (``load_module``) with the
hash of every compiler source in it (``LOWERING_VERSION``), and a second
process loads its machine code instead of compiling it. A segment has no
parallel loop of its own: the stage driver's are compiled once per buffer
count (by the workers of ``codegen.prebuild`` when a model starts cold).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Union

import numba
import numpy as np
from numba import types

from convtune.codegen import op_kernels
from convtune.codegen.kernel import BoundConv
from convtune.codegen.kernel_cache import function_address, load_module
from convtune.codegen.launch import run_stages, stage_driver_signature
from convtune.codegen.lowering_cache import LOWERING_VERSION
from convtune.codegen.op_calls import OpCall, OpSequence
from convtune.codegen.render_numba import tuple_display

BoundStep = Union[BoundConv, OpCall, OpSequence]

_HEADER = '''# convtune model driver; compiler {version}
import numpy as np
from numba import njit
from convtune.codegen.intrinsics import array_at, call_native
'''


class _Arrays:
    """Each distinct array once, by address, size and type: its local name."""

    def __init__(self) -> None:
        self.index: dict[tuple[int, int, str], int] = {}
        self.arrays: list[np.ndarray] = []

    def __call__(self, a: np.ndarray) -> str:
        key = (a.ctypes.data, a.size, a.dtype.name)
        if key not in self.index:
            if a.ndim != 1 or not a.flags.c_contiguous:
                raise ValueError(f"model driver: a step's array must be flat and contiguous, got {a.shape}")
            self.index[key] = len(self.arrays)
            self.arrays.append(a)
        return f"a{self.index[key]}"


def _seen(a: np.ndarray | int) -> types.Type:
    """An operator argument's type as the segment makes it (``array_at``: writable)."""
    return types.int64 if isinstance(a, int) else types.Array(numba.from_dtype(a.dtype), 1, "C")


class _Segment:
    """One compiled function's calls, with the arrays and native addresses
    they name. It takes the arrays' addresses (``array_at`` makes each
    array once, at its top), so its compile grows with its calls, not with
    an argument list of seven scalars an array."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.arrays = _Arrays()
        self.natives: list[int] = []
        self.body: list[str] = []

    def source(self) -> str:
        made = [f"    a{i} = array_at(addresses[{i}], {a.size}, '{a.dtype.name}')"
                for i, a in enumerate(self.arrays.arrays)]
        return (f"\n\n@njit(cache=True, nogil=True)\ndef {self.name}(addresses, natives):\n"
                + "\n".join(made + self.body))

    def args(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([a.ctypes.data for a in self.arrays.arrays], np.int64), np.array(self.natives, np.int64)


class Driver:
    """The compiled plan: ``driver()`` runs every step in order."""

    def __init__(self, steps: list[BoundStep | Callable[[], None]]) -> None:
        steps = [call for s in steps for call in (s.calls if isinstance(s, OpSequence) else (s,))]
        convs = [s for s in steps if isinstance(s, BoundConv)]
        stage_driver = run_stages(any(c.compiled.checked for c in convs))
        order: list[_Segment | Callable[[], None]] = []
        segment = _Segment("segment_0")

        def call(dispatcher: Any, sig: tuple[types.Type, ...], text: list[str]) -> None:
            """A line calling ``dispatcher`` compiled for ``sig`` through its address (named in a comment)."""
            dispatcher.compile(sig)
            segment.natives.append(function_address(dispatcher, sig))
            segment.body.append(f"    call_native(natives[{len(segment.natives) - 1}], {tuple_display(text)})"
                                f"  # {dispatcher.__name__}")

        def close_segment() -> None:
            nonlocal segment
            if segment.body:
                order.append(segment)
                segment = _Segment(f"segment_{len(order)}")

        for step in steps:
            arrays = segment.arrays
            if isinstance(step, BoundConv):
                c = step.compiled
                call(stage_driver, stage_driver_signature(len(step.buffers)),
                     [arrays(c.addresses), arrays(c.extents), tuple_display([arrays(x) for x in step.buffers])])
            elif isinstance(step, OpCall):
                scalars = [int(v) for v in step.scalars]
                call(getattr(op_kernels, step.name), tuple(_seen(a) for a in [*step.arrays, *scalars]),
                     [arrays(x) for x in step.arrays] + [f"np.int64({v})" for v in scalars])
            else:
                close_segment()
                order.append(step)
        close_segment()
        segments = [item for item in order if isinstance(item, _Segment)]
        self.source = _HEADER.format(version=LOWERING_VERSION[:12]) + "".join(s.source() for s in segments) + "\n"
        module = load_module(self.source, "model")
        self._calls: list[Callable[[], None]] = []
        self._arrays = [a for s in segments for a in s.arrays.arrays]
        """What the segments' addresses point into, kept alive with them."""
        for item in order:
            if isinstance(item, _Segment):
                args = item.args()
                compiled = getattr(module, item.name)
                compiled.compile(tuple(numba.typeof(a) for a in args))
                item = functools.partial(compiled, *args)
            self._calls.append(item)
        self.segments = len(segments)

    def __call__(self) -> None:
        for call in self._calls:
            call()
