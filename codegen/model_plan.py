"""A model's execution plan: steps bound to buffers preallocated once.

``build_plan`` turns an optimised ``ModelGraph`` into a list of steps (one per
node; shape-only nodes are views and need none) whose arrays are views into a
few storage blocks, shared between tensors whose lifetimes do not overlap
(liveness over the topological order). ``run_plan`` is the execution loop and
nothing else, so the plan can later be handed whole to one compiled driver.
FusedConv nodes run convtune kernels, prepared (weights packed) once here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from convtune.codegen.kernel import CompiledKernel
from convtune.codegen.ops import VIEW_OPS, Step, op_step
from convtune.ir.graph import ModelGraph, Node
from convtune.ir.workload import Conv2D

KernelFor = Callable[[Conv2D], CompiledKernel]


@dataclass
class PlannedStep:
    node: Node
    run: Step


@dataclass
class Plan:
    """Steps in order; ``inputs`` are the buffers feeds are copied into;
    ``values`` every tensor's array (constants included); ``blocks`` the
    storage the non-constant tensors live in."""

    steps: list[PlannedStep]
    inputs: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    blocks: list[np.ndarray]

    @property
    def storage_bytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)


def _storages(graph: ModelGraph, order: list[Node]) -> tuple[dict[str, int], list[int], list[int], list[int]]:
    """Storage id per tensor (a view shares its input's), and per storage its
    size in bytes, the step that creates it (-1: a model input) and the last
    step that reads it (``len(order)``: read after the run)."""
    storage: dict[str, int] = {}
    size: list[int] = []
    birth: list[int] = []

    def new(tensor: str, step: int) -> None:
        info = graph.tensors[tensor]
        storage[tensor] = len(size)
        size.append(math.prod(info.shape) * np.dtype(info.dtype).itemsize)
        birth.append(step)

    for t in graph.inputs:
        new(t, -1)
    for i, node in enumerate(order):
        for t in node.outputs:
            if node.op in VIEW_OPS and node.inputs[0] in storage:
                storage[t] = storage[node.inputs[0]]
            else:
                new(t, i)
    death = list(birth)
    for i, node in enumerate(order):
        for t in node.inputs:
            if t in storage:
                death[storage[t]] = max(death[storage[t]], i)
    for t in graph.outputs:
        if t in storage:
            death[storage[t]] = len(order)
    return storage, size, birth, death


def _assign_blocks(size: list[int], birth: list[int], death: list[int], steps: int) -> tuple[list[int], list[int]]:
    """Block per storage and block sizes: a storage takes the smallest free
    block that fits, else grows the largest free one, else opens a new one.
    A step's outputs are placed before its inputs are freed, so no step
    writes over what it reads."""
    block_of = [0] * len(size)
    capacity: list[int] = []
    free: list[int] = []
    for step in range(-1, steps):
        for s in (s for s in range(len(size)) if birth[s] == step):
            fits = [b for b in free if capacity[b] >= size[s]]
            if fits:
                b = min(fits, key=capacity.__getitem__)
                free.remove(b)
            elif free:
                b = max(free, key=capacity.__getitem__)
                free.remove(b)
                capacity[b] = size[s]
            else:
                b = len(capacity)
                capacity.append(size[s])
            block_of[s] = b
        free += [block_of[s] for s in range(len(size)) if death[s] == step]
    return block_of, capacity


def _conv_step(node: Node, ins: list[np.ndarray], out: np.ndarray, kernel_for: KernelFor) -> Step:
    wl: Conv2D = node.attrs["workload"]
    conv = kernel_for(wl).prepare(ins[1], ins[2] if wl.bias else None)
    x, residual = ins[0], ins[-1] if wl.residual else None
    return lambda: conv(x, residual=residual, out=out)


def build_plan(graph: ModelGraph, kernel_for: KernelFor) -> Plan:
    """Bind every node of ``graph`` to its buffers; ``kernel_for`` gives the
    compiled kernel of each FusedConv workload (tuned, or a fallback)."""
    order = list(graph.nodes())
    storage, size, birth, death = _storages(graph, order)
    block_of, capacity = _assign_blocks(size, birth, death, len(order))
    blocks = [np.empty(c, np.uint8) for c in capacity]
    values: dict[str, np.ndarray] = dict(graph.constants)
    for t, s in storage.items():
        info = graph.tensors[t]
        values[t] = blocks[block_of[s]][:size[s]].view(info.dtype).reshape(info.shape)
    steps = []
    for node in order:
        if node.op in VIEW_OPS and node.inputs[0] in storage:
            continue
        ins, outs = [values[t] for t in node.inputs if t], [values[t] for t in node.outputs]
        run = _conv_step(node, ins, outs[0], kernel_for) if node.op == "FusedConv" else op_step(node, ins, outs)
        steps.append(PlannedStep(node, run))
    return Plan(steps, {t: values[t] for t in graph.inputs}, values, blocks)


def run_plan(plan: Plan) -> None:
    """The execution loop: every step, in order (NaN and Inf propagate quietly)."""
    with np.errstate(all="ignore"):
        for step in plan.steps:
            step.run()
