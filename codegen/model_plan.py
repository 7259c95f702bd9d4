"""A model's execution plan: steps bound to buffers preallocated once.

``build_plan`` turns an optimised ``ModelGraph`` into a list of steps (one per
node; shape-only nodes are views and need none) whose arrays are views into a
few storage blocks, shared between tensors whose lifetimes do not overlap
(liveness over the topological order). Steps are bound once: convs to their
stage tuples, pools and Gemm heads to compiled kernels (``codegen.op_calls``),
the rest to numpy closures; the plan's compiled driver runs them all without
returning to Python, the Python loop of ``run_plan`` is the fallback (and
what ``Session.profile`` times step by step).
FusedConv nodes run convtune kernels, prepared (weights packed) once here,
sharing one scratch arena; activations passed from conv to conv stay in
blocked layouts (``codegen.layout_plan``). A blocked tensor's buffer has a
zero border the kernels never write, so it is shared only with tensors of
the same layout, and zeroed once. A conv that adds a residual it is the
last to read writes its output over it where its kernel allows
(``codegen.in_place``): one stream of memory fewer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convtune.codegen.build import build
from convtune.codegen.in_place import residual_in_place
from convtune.codegen.kernel import BoundConv, PreparedConv, ScratchArena
from convtune.codegen.launch import run_stages
from convtune.codegen.layout_plan import choose_layouts
from convtune.codegen.liveness import bind_storage
from convtune.codegen.model_driver import Driver
from convtune.codegen.prebuild import prebuild
from convtune.codegen.op_calls import OpCall, OpSequence, op_call
from convtune.codegen.ops import VIEW_OPS, Step, op_step
from convtune.ir.conv_transpose_graph import LoweringFor, lower_conv_transposes
from convtune.ir.conv_transpose_lowering import default_lowering
from convtune.ir.graph import ModelGraph, Node
from convtune.ir.loopnest import Store, walk
from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.state import BlockedLayout

ScheduleFor = Callable[[Conv2D], Schedule]


@dataclass
class PlannedStep:
    node: Node
    run: BoundConv | OpCall | OpSequence | Step
    """A conv bound to its arrays, a compiled operator, or a numpy closure."""
    packs: tuple[int, ...] = ()
    """A conv's stages that only copy its input into the kernel's packed
    layout (blocking, padding, im2col): the layout transforms left in the plan."""

    def run_packs(self) -> None:
        """Run only the ``packs`` stages (idempotent: ``Session.profile`` times them)."""
        assert isinstance(self.run, BoundConv)
        c = self.run.compiled
        for i in self.packs:
            run_stages(c.checked)(c.addresses[i:i + 1], c.extents[i:i + 1], self.run.buffers)


def _pack_stages(conv: PreparedConv) -> tuple[int, ...]:
    """Stages whose only stores go to the packed input (``data_packed``)."""
    stages = conv.kernel.loop_nest.stages
    assert len(stages) == len(conv.kernel.compiled.addresses)
    return tuple(i for i, st in enumerate(stages)
                 if {s.buffer for s in walk(st) if isinstance(s, Store)} == {"data_packed"})


@dataclass
class Plan:
    """Steps in order; ``inputs`` are the buffers feeds are copied into;
    ``values`` every tensor's array (constants included); ``blocks`` the
    storage the non-constant tensors live in."""


    steps: list[PlannedStep]
    inputs: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    blocks: list[np.ndarray]
    layouts: dict[str, BlockedLayout]
    """The tensors kept blocked (their ``values`` are the physical arrays)."""
    driver: Driver | None = None
    """Every step in one compiled call per segment (None: the Python loop only)."""

    @property
    def storage_bytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)


def _allocate(nbytes: int, layout: BlockedLayout | None) -> np.ndarray:
    """A host block; a blocked layout's is zeroed once (its border stays zero)."""
    return np.empty(nbytes, np.uint8) if layout is None else np.zeros(nbytes, np.uint8)


def _prepare(node: Node, constants: dict[str, np.ndarray], sch: Schedule, arena: ScratchArena) -> PreparedConv:
    wl: Conv2D = node.attrs["workload"]
    ins = [constants.get(t) for t in node.inputs if t]
    conv = build(sch).prepare(ins[1], ins[2] if wl.bias else None, arena=arena)
    conv.scratch()  # the arena grows to the largest kernel's scratch before any conv is bound
    return conv


def _conv_step(node: Node, ins: list[np.ndarray], out: np.ndarray, conv: PreparedConv) -> BoundConv:
    return conv.bind(ins[0], ins[-1] if node.attrs["workload"].residual else None, out)


def build_plan(graph: ModelGraph, schedule_for: ScheduleFor, blocked: bool = True, compiled: bool = True,
               lowering_for: LoweringFor = default_lowering, compile_jobs: int | None = None) -> Plan:
    """Bind every node of ``graph`` to its buffers; ``schedule_for`` gives
    the schedule of each FusedConv workload (tuned, or a fallback), a fresh
    one per call; ``blocked`` lets activations stay blocked between convs;
    ``compiled`` builds the plan's compiled driver (``codegen.model_driver``);
    ``lowering_for`` names the lowering of each transposed conv, whose
    sub-convs are then FusedConvs like any other (``ir.conv_transpose_graph``);
    ``compile_jobs``: worker processes for the kernels not in the disk
    cache (``codegen.prebuild``; default: one a core, 1: none)."""
    graph = lower_conv_transposes(graph, lowering_for)
    order = list(graph.nodes())
    schedules = {n.name: schedule_for(n.attrs["workload"]) for n in order if n.op == "FusedConv"}
    layouts = choose_layouts(graph, schedules) if blocked else {}
    prebuild((sch.state for sch in schedules.values()), compile_jobs)
    arena = ScratchArena()
    convs = {n.name: _prepare(n, graph.constants, schedules[n.name], arena) for n in order if n.op == "FusedConv"}
    in_place = {n.outputs[0]: n.inputs[-1] for n in order if n.op == "FusedConv" and n.attrs["workload"].residual
                and residual_in_place(convs[n.name].kernel.loop_nest)}
    st, blocks, views = bind_storage(graph, order, layouts, _allocate, in_place)
    values: dict[str, np.ndarray] = {**graph.constants, **views}
    steps = []
    for node in order:
        if node.op in VIEW_OPS and node.inputs[0] in st.of:
            continue
        ins, outs = [values[t] for t in node.inputs if t], [values[t] for t in node.outputs]
        blocked_io = {t: layouts[t] for t in (*node.inputs, *node.outputs) if t in layouts}
        run = (_conv_step(node, ins, outs[0], convs[node.name]) if node.op == "FusedConv"
               else op_call(node, ins, outs, graph.constants, blocked_io) or op_step(node, ins, outs))
        steps.append(PlannedStep(node, run, _pack_stages(convs[node.name]) if node.op == "FusedConv" else ()))
    if any(s.run.stale for s in steps if isinstance(s.run, BoundConv)):
        raise RuntimeError("model plan: the scratch arena grew after its convs were bound")
    driver = Driver([s.run for s in steps]) if compiled else None
    return Plan(steps, {t: values[t] for t in graph.inputs}, values, blocks, layouts, driver)


def time_steps(plan: Plan) -> list[float]:
    """Run every step once from Python, in order: the seconds each took
    (what ``Session.profile`` and the conv chain bench time)."""
    clock, times = time.perf_counter, []
    with np.errstate(all="ignore"):
        for step in plan.steps:
            start = clock()
            step.run()
            times.append(clock() - start)
    return times


def run_plan(plan: Plan, compiled: bool = True) -> None:
    """The execution loop: the compiled driver, or (``compiled=False``, or a
    plan without one) every step in turn from Python. NaN and Inf propagate
    quietly."""
    with np.errstate(all="ignore"):
        if compiled and plan.driver is not None:
            plan.driver()
            return
        for step in plan.steps:
            step.run()
