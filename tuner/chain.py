"""A model's conv chain: its fused convs run one after another, as the model
runs them, on buffers allocated once.

The chain is what a model runtime does minus everything that is not a conv:
a conv whose input comes from another operator (a pooling layer, the model
input) reads that tensor precomputed by a reference run of the model. Two
ways to run it:

- ``nchw``: every conv takes and writes NCHW, packing its input into scratch
  and unpacking its output on every call (each kernel as ``PreparedConv``
  does alone);
- ``blocked``: activations between convs stay in NCHW[x]c. A tensor gets the
  layout its first consumer reads in place (``input_layout_wanted``), its
  producer writes that layout (border zero), every other consumer reads it
  in that layout too (repacking inside its kernel if it wants another);
  tensors read by other operators, or by no conv in place, stay NCHW.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from convtune.codegen import build
from convtune.codegen.kernel import PreparedConv, ScratchArena
from convtune.codegen.lower import input_layout_wanted
from convtune.ir.graph import ModelGraph
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import Conv2D
from convtune.schedules.layout import from_blocked, to_blocked
from convtune.schedules.space import Config
from convtune.schedules.state import BlockedLayout
from convtune.schedules.templates import default_config, schedule_from_config

MODES = ("nchw", "blocked")
ConfigFor = Callable[[Conv2D], Config]


@dataclass(frozen=True)
class ChainConv:
    """One fused conv of the model: its workload, constants and tensor names."""

    name: str
    workload: Conv2D
    data: str
    residual: str | None
    out: str
    weight: np.ndarray
    bias: np.ndarray | None


@dataclass
class ConvChain:
    """A model's fused convs in execution order and the value of every tensor
    of one reference run on a random input (the feeds of convs whose input
    no conv of the chain produces)."""

    model: str
    convs: list[ChainConv]
    values: dict[str, np.ndarray]
    read_elsewhere: frozenset[str] = frozenset()
    """The model's inputs and outputs and the tensors operators other than
    convs read: the model has them in NCHW. (A tensor that such an operator
    writes and only convs read is taken as blocked: pooling and other
    layout-agnostic operators can write NCHW[x]c.)"""


def conv_chain(graph: ModelGraph, seed: int = 0) -> ConvChain:
    """The chain of an optimised graph (``ir.model_passes.optimize``)."""
    from convtune.ir.evaluate import evaluate

    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = dict(graph.constants)
    for name in graph.inputs:
        values[name] = rng.uniform(-1, 1, graph.tensors[name].shape).astype(np.float32)
    convs = []
    for node in graph.nodes():
        for tensor, value in zip(node.outputs, evaluate(node, [values[t] for t in node.inputs if t])):
            values[tensor] = np.asarray(value, np.float32)
        if node.op == "FusedConv":
            wl: Conv2D = node.attrs["workload"]
            bias = values[node.inputs[2]] if wl.bias else None
            convs.append(ChainConv(node.name, wl, node.inputs[0], node.inputs[-1] if wl.residual else None,
                                   node.outputs[0], values[node.inputs[1]], bias))
    if not convs:
        raise ValueError(f"model {graph.name}: no conv to chain")
    others = {t for node in graph.nodes() if node.op != "FusedConv" for t in node.inputs}
    return ConvChain(graph.name, convs, values, frozenset(others | set(graph.outputs) | set(graph.inputs)))


def model_chain(model: str, seed: int = 0) -> ConvChain:
    """The chain of a zoo model (or an ONNX file)."""
    from convtune.ir.model_passes import optimize
    from convtune.ir.onnx_frontend import import_model
    from convtune.tuner.zoo import resolve_model

    return conv_chain(optimize(import_model(resolve_model(model))), seed)


@dataclass
class ChainRun:
    """The chain's kernels prepared, bound to preallocated buffers."""

    mode: str
    convs: list[ChainConv]
    prepared: list[PreparedConv]
    buffers: dict[str, np.ndarray]
    """Every tensor the chain reads or writes, in its layout."""
    layouts: dict[str, BlockedLayout] = field(default_factory=dict)
    """The tensors kept blocked (the others are NCHW)."""
    calls: list[Callable[[], object]] = field(default_factory=list)

    def __call__(self) -> None:
        for call in self.calls:
            call()

    def timed(self) -> list[float]:
        """Run the chain once; the seconds each conv took inside it."""
        times = []
        for call in self.calls:
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return times

    def nchw(self, tensor: str) -> np.ndarray:
        """A tensor of the chain as an NCHW array."""
        layout = self.layouts.get(tensor)
        return self.buffers[tensor] if layout is None else from_blocked(layout, self.buffers[tensor])

    def check(self) -> float:
        """The largest relative error of any conv against the float64
        reference on the inputs it was given (run the chain first)."""
        return max(relative_error(self.nchw(c.out), conv2d_reference(
            c.workload, self.nchw(c.data), c.weight, c.bias, None if c.residual is None else self.nchw(c.residual)))
            for c in self.convs)


def plan_layouts(chain: ConvChain, configs: ConfigFor) -> dict[str, BlockedLayout]:
    """The blocked layouts of ``blocked`` mode: a tensor that only convs
    read gets the layout the first conv reading it as data reads in place;
    the others (and those whose first reader has no such layout) stay NCHW."""
    layouts: dict[str, BlockedLayout] = {}
    seen: set[str] = set()
    for c in chain.convs:
        if c.data in seen or c.data in chain.read_elsewhere:
            continue
        seen.add(c.data)
        wanted = input_layout_wanted(schedule_from_config(c.workload, configs(c.workload)).state)
        if wanted is not None:
            layouts[c.data] = wanted
    return layouts


def prepare_chain(chain: ConvChain, mode: str, configs: ConfigFor | None = None,
                  shared_scratch: bool = True) -> ChainRun:
    """Build and prepare every kernel of the chain for ``mode``; with
    ``shared_scratch`` their scratch lives in one ``ScratchArena``."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    configs = configs or default_config
    layouts = plan_layouts(chain, configs) if mode == "blocked" else {}
    run = ChainRun(mode, chain.convs, [], {}, layouts)
    produced = {c.out for c in chain.convs}
    arena = ScratchArena() if shared_scratch else None
    for c in chain.convs:
        sch = schedule_from_config(c.workload, configs(c.workload))
        io = {"data": layouts.get(c.data), "out": layouts.get(c.out),
              "residual": layouts.get(c.residual) if c.residual else None}
        sch.io_layout(**io)
        conv = build(sch).prepare(c.weight, c.bias, arena=arena)
        for tensor in (c.data, c.residual):
            if tensor and tensor not in run.buffers and tensor not in produced:
                value = chain.values[tensor]
                layout = layouts.get(tensor)
                run.buffers[tensor] = value.copy() if layout is None else to_blocked(layout, value)
        run.buffers[c.out] = conv.new_output()
        run.prepared.append(conv)
    # Bound once the arena has its final size: each call then only launches, as in a model runtime.
    run.calls = [conv.bind(run.buffers[c.data], run.buffers[c.residual] if c.residual else None, run.buffers[c.out])
                 for c, conv in zip(chain.convs, run.prepared)]
    return run
