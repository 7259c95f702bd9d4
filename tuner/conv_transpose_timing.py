"""Time a transposed conv end to end with each lowering, to pick its lowering.

A transposed conv's lowering is its algorithm knob: once its sub-convs are
tuned, the whole layer (input placement, sub-convs, interleave) runs with
each lowering on the same random inputs, each checked against the float64
reference into a NaN-poisoned output, and timed interleaved
(``bench.bench_layer``); the fastest goes to the lowering file beside the log
(``tuner.lowering_log``), where dispatch finds it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convtune.codegen.conv_transpose import PreparedConvTranspose
from convtune.codegen.verify import TOLERANCE
from convtune.ir.conv_transpose_lowering import LOWERINGS
from convtune.ir.reference import relative_error
from convtune.ir.reference_transpose import conv2d_transpose_reference
from convtune.ir.workload_transpose import ConvTranspose2D
from convtune.tuner.bench import bench_layer
from convtune.tuner.dispatch import ApplyHistoryBest
from convtune.tuner.lowering_log import append_choice


def layer_inputs(wl: ConvTranspose2D, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Data, weight and (when the workload has one) bias, standard normal float32."""
    rng = np.random.default_rng(seed)
    x, w = (rng.standard_normal(s, dtype=np.float32) for s in (wl.data_shape, wl.weight_shape))
    return x, w, rng.standard_normal(wl.K, dtype=np.float32) if wl.bias else None


def checked_lowerings(wl: ConvTranspose2D, dispatcher: ApplyHistoryBest, x: np.ndarray, w: np.ndarray,
                      b: np.ndarray | None, ref: np.ndarray) -> dict[str, PreparedConvTranspose]:
    """Every lowering of ``wl`` prepared with the dispatcher's sub-conv
    configs, each checked against ``ref``, the float64 reference of
    ``(x, w, b)`` (an ``AssertionError`` names a wrong one)."""
    convs = {}
    for name in LOWERINGS:
        conv = dispatcher.conv_transpose(wl, w, b, lowering=name)
        conv.output[...] = np.nan
        error = relative_error(conv(x), ref)
        if error >= TOLERANCE:
            raise AssertionError(f"{wl.short()}: the {name} lowering is wrong (relative error {error:.2g})")
        convs[name] = conv
    return convs


def choose_lowering(wl: ConvTranspose2D, dispatcher: ApplyHistoryBest, log: str | Path, rounds: int = 5,
                    min_block_seconds: float = 0.02) -> str:
    """Time every lowering of ``wl`` with the dispatcher's configs (those of
    ``log``; warm, interleaved), record the seconds beside the log, return the fastest."""
    x, w, b = layer_inputs(wl)
    convs = checked_lowerings(wl, dispatcher, x, w, b, conv2d_transpose_reference(wl, x, w, b))
    seconds = bench_layer({name: (lambda c=c: c(x)) for name, c in convs.items()}, rounds, min_block_seconds)
    return append_choice(log, wl, dispatcher.target.to_dict(), seconds["warm"])
