"""Where a model plan's tensors live: storage shared by liveness, for any target.

Every non-constant tensor gets a storage (a view operator's output shares its
input's), every storage a lifetime over the topological order, and storages
whose lifetimes do not overlap share a block. The CPU plan
(``codegen.model_plan``) allocates the blocks as numpy arrays, the CUDA plan
(``codegen.cuda_model``) as device arrays: the bookkeeping is the same, so it
is written once, here. A blocked tensor's storage is only shared with
tensors of the same layout (its zero border must survive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from convtune.codegen.ops import VIEW_OPS
from convtune.ir.graph import ModelGraph, Node
from convtune.schedules.state import BlockedLayout

Allocate = Callable[[int, "BlockedLayout | None"], Any]
"""``allocate(nbytes, layout)``: a flat uint8 block (numpy or device) of
``nbytes``, zeroed where ``layout`` is a blocked layout."""


@dataclass
class Storages:
    """Storage id per tensor (a view shares its input's), and per storage its
    size in bytes, its blocked layout (None: any NCHW tensor may share it),
    the step that creates it (-1: a model input) and the last step that
    reads it (the number of steps: read after the run)."""

    of: dict[str, int]
    size: list[int]
    kind: list[BlockedLayout | None]
    birth: list[int]
    death: list[int]


def _last_reads(graph: ModelGraph, order: list[Node]) -> tuple[dict[str, str], dict[str, int]]:
    """Per tensor, the tensor whose storage it shares (itself, or a view's
    source); per such root, the last step reading it or a view of it (the
    number of steps for a model output)."""
    root: dict[str, str] = {}
    for node in order:
        if node.op in VIEW_OPS and node.inputs[0] not in graph.constants:
            for t in node.outputs:
                root[t] = root.get(node.inputs[0], node.inputs[0])
    last: dict[str, int] = {}
    for i, node in enumerate(order):
        for t in node.inputs:
            last[root.get(t, t)] = i
    for t in graph.outputs:
        last[root.get(t, t)] = len(order)
    return root, last


def storages(graph: ModelGraph, order: list[Node], layouts: dict[str, BlockedLayout],
             in_place: dict[str, str] | None = None) -> Storages:
    """``in_place``: {a conv's output: its residual input} for convs whose
    kernel may write over the residual (``codegen.in_place``); the output
    shares the residual's storage where that conv is the residual's last
    reader and both are laid out alike (and the residual is not the conv's
    data input too, nor a model input)."""
    in_place = in_place or {}
    root, last = _last_reads(graph, order)
    storage: dict[str, int] = {}
    size: list[int] = []
    kind: list[BlockedLayout | None] = []
    birth: list[int] = []

    def new(tensor: str, step: int) -> None:
        info, layout = graph.tensors[tensor], layouts.get(tensor)
        storage[tensor] = len(size)
        size.append(math.prod(layout.shape if layout else info.shape) * np.dtype(info.dtype).itemsize)
        kind.append(layout)
        birth.append(step)

    def overwritable(node: Node, out: str, step: int) -> bool:
        residual = in_place.get(out)
        if residual is None or residual not in storage:
            return False
        source = root.get(residual, residual)
        return (last[source] == step and birth[storage[residual]] >= 0
                and source != root.get(node.inputs[0], node.inputs[0]) and layouts.get(residual) == layouts.get(out)
                and graph.tensors[residual].shape == graph.tensors[out].shape)

    for t in graph.inputs:
        new(t, -1)
    for i, node in enumerate(order):
        for t in node.outputs:
            if node.op in VIEW_OPS and node.inputs[0] in storage:
                storage[t] = storage[node.inputs[0]]
            elif overwritable(node, t, i):
                storage[t] = storage[in_place[t]]
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
    return Storages(storage, size, kind, birth, death)


def assign_blocks(st: Storages, steps: int) -> tuple[list[int], list[int], list[BlockedLayout | None]]:
    """Block per storage, and per block its size and kind. An NCHW storage
    takes the smallest free NCHW block that fits, else grows the largest
    free one, else opens a new one; a blocked one takes a free block of its
    own layout, else a new one. A step's outputs are placed before its
    inputs are freed, so no step writes over what it reads."""
    block_of = [0] * len(st.size)
    capacity: list[int] = []
    block_kind: list[BlockedLayout | None] = []
    free: list[int] = []
    for step in range(-1, steps):
        for s in (s for s in range(len(st.size)) if st.birth[s] == step):
            same = [b for b in free if block_kind[b] == st.kind[s]]
            fits = [b for b in same if capacity[b] >= st.size[s]]
            if fits:
                b = min(fits, key=capacity.__getitem__)
            elif same and st.kind[s] is None:
                b = max(same, key=capacity.__getitem__)
                capacity[b] = st.size[s]
            else:
                b = len(capacity)
                capacity.append(st.size[s])
                block_kind.append(st.kind[s])
                free.append(b)
            free.remove(b)
            block_of[s] = b
        free += [block_of[s] for s in range(len(st.size)) if st.death[s] == step]
    return block_of, capacity, block_kind


def bind_storage(graph: ModelGraph, order: list[Node], layouts: dict[str, BlockedLayout],
                 allocate: Allocate, in_place: dict[str, str] | None = None) -> tuple[Storages, list[Any], dict[str, Any]]:
    """The storages (``in_place`` as for ``storages``), the blocks
    ``allocate`` made for them, and every non-constant tensor's array: a view
    of its block with the tensor's dtype and shape (its blocked layout's
    shape where it is kept blocked)."""
    st = storages(graph, order, layouts, in_place)
    block_of, capacity, block_kind = assign_blocks(st, len(order))
    blocks = [allocate(c, k) for c, k in zip(capacity, block_kind)]
    views = {}
    for t, s in st.of.items():
        info, layout = graph.tensors[t], st.kind[s]
        views[t] = blocks[block_of[s]][:st.size[s]].view(info.dtype).reshape(layout.shape if layout else info.shape)
    return st, blocks, views
