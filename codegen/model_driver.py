"""One compiled driver per model plan: every step's stages in turn, without returning to Python.

A plan's steps are bound calls: convs (``BoundConv``: stage addresses and a
buffer tuple) and compiled operators (``OpCall``). ``Driver``
writes a Numba function per segment of consecutive bound steps: each conv
becomes a call of the parallel stage driver (``codegen.launch``) on its
slice of one address array, each operator a call of its ``op_kernels``
function with its shapes as literals; every array is an element of one
tuple argument. Steps that are plain Python closures (operators without a
kernel) split the plan into segments and run between them.

The source holds no address, only the plan's structure, so it is the same
in every process: it goes to the kernel cache (``load_module``) with the
hash of every compiler source in it (``LOWERING_VERSION``: the driver's
compiled code holds the stage driver and operator kernels it calls, and
depends on the kernels it is bound to, none of which its own text names;
a driver cached under an older compiler segfaulted), and a second process
loads its machine code instead of compiling it. Entering it costs
4 us for resnet18's 74 arrays, 9.5 us for mobilenet_v2's 155 (numba unboxes
the tuple); a segment compiles in seconds because it has no parallel loop of
its own (the stage driver's are compiled once per tuple length).
"""
from __future__ import annotations

import functools
from typing import Callable, Union

import numba
import numpy as np

from convtune.codegen.kernel import BoundConv
from convtune.codegen.kernel_cache import load_module
from convtune.codegen.lowering_cache import LOWERING_VERSION
from convtune.codegen.op_calls import OpCall, OpSequence

BoundStep = Union[BoundConv, OpCall, OpSequence]

_HEADER = '''# convtune model driver; compiler {version}
from numba import njit
from convtune.codegen.launch import run_stages as _run_stages
{imports}
run_stages = _run_stages({checked})
'''


class _Arrays:
    """Each distinct array once, by address and size: its index in the tuple."""

    def __init__(self) -> None:
        self.index: dict[tuple[int, int], int] = {}
        self.arrays: list[np.ndarray] = []

    def __call__(self, a: np.ndarray) -> str:
        key = (a.ctypes.data, a.size)
        if key not in self.index:
            self.index[key] = len(self.arrays)
            self.arrays.append(a)
        return f"bufs[{self.index[key]}]"


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


class Driver:
    """The compiled plan: ``driver()`` runs every step in order."""

    def __init__(self, steps: list[BoundStep | Callable[[], None]]) -> None:
        steps = [call for s in steps for call in (s.calls if isinstance(s, OpSequence) else (s,))]
        convs = [s for s in steps if isinstance(s, BoundConv)]
        checked = any(c.compiled.checked for c in convs)
        arrays, starts, lines, kernels = _Arrays(), [0], [], set()
        order: list[str | Callable[[], None]] = []
        body: list[str] = []

        def close_segment() -> None:
            if body:
                name = f"segment_{len(lines)}"
                lines.append(f"\n\n@njit(cache=True, nogil=True)\ndef {name}(addresses, extents, bufs):\n"
                             + "\n".join(body))
                order.append(name)
                body.clear()

        for step in steps:
            if isinstance(step, BoundConv):
                a, b = starts[-1], starts[-1] + len(step.compiled.addresses)
                starts.append(b)
                body.append(f"    run_stages(addresses[{a}:{b}], extents[{a}:{b}], "
                            f"{_tuple([arrays(x) for x in step.buffers])})")
            elif isinstance(step, OpCall):
                kernels.add(step.name)
                args = [arrays(x) for x in step.arrays] + [repr(int(v)) for v in step.scalars]
                body.append(f"    {step.name}({', '.join(args)})")
            else:
                close_segment()
                order.append(step)
        close_segment()
        imports = f"from convtune.codegen.op_kernels import {', '.join(sorted(kernels))}\n" if kernels else ""
        self.source = _HEADER.format(version=LOWERING_VERSION[:12], checked=checked,
                                     imports=imports) + "\n".join(lines) + "\n"
        module = load_module(self.source, "model")
        args = (np.concatenate([c.compiled.addresses for c in convs] or [np.zeros(0, np.int64)]),
                np.concatenate([c.compiled.extents for c in convs] or [np.zeros(0, np.int64)]),
                tuple(arrays.arrays))
        signature = tuple(numba.typeof(a) for a in args)
        self._calls: list[Callable[[], None]] = []
        for item in order:
            if isinstance(item, str):
                segment = getattr(module, item)
                segment.compile(signature)
                item = functools.partial(segment, *args)
            self._calls.append(item)
        self.segments = sum(1 for item in order if isinstance(item, str))

    def __call__(self) -> None:
        for call in self._calls:
            call()
