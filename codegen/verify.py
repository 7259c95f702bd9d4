"""Check a compiled kernel against the float64 reference.

Inputs are fresh random numbers (never zeros, so a dropped term shows), the
output buffer is poisoned with NaN (so an element the kernel never writes
shows), and the error is ``max|y - ref| / max|ref|``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convtune.codegen.kernel import CompiledKernel
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import Conv2D

TOLERANCE = 1e-4
"""fp32 kernels must match the float64 reference to this relative error."""


@dataclass(frozen=True)
class Inputs:
    data: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    residual: np.ndarray | None


def random_inputs(wl: Conv2D, rng: np.random.Generator) -> Inputs:
    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)

    return Inputs(draw(wl.data_shape), draw(wl.weight_shape),
                  draw((wl.K,)) if wl.bias else None, draw(wl.out_shape) if wl.residual else None)


def check_kernel(kernel: CompiledKernel, rng: np.random.Generator | None = None) -> float:
    """The kernel's relative error on fresh random inputs (inf if an output
    element was left unwritten)."""
    rng = rng or np.random.default_rng()
    wl = kernel.workload
    x = random_inputs(wl, rng)
    out = np.full(wl.out_shape, np.nan, np.float32)
    kernel.prepare(x.weight, x.bias)(x.data, residual=x.residual, out=out)
    return relative_error(out, conv2d_reference(wl, x.data, x.weight, x.bias, x.residual))
