"""Which activations stay in blocked NCHW[x]c layouts between convs.

A tensor that one fused conv writes and only fused convs read (as their
input or their residual) is kept in the blocked layout its reading convs
read in place (``codegen.lower.input_layout_wanted``; the most padded one
when they differ): the writer writes
that layout, the readers read it in place, and the NCHW packing and
unpacking between them disappear. Everything else stays NCHW. A layout a
schedule refuses (``ScheduleError``), or one its writer or any reader would
access with scattered or gathered vectors (``_contiguous``), leaves that
tensor NCHW. A 1x1 gemm with ``cb=1`` reads NCHW1c in place, the layout a
row-vector writer (``depthwise_w``) stores contiguously: mobilenet_v2's
projection convs after its depthwise layers then skip their packing.
"""
from __future__ import annotations

from convtune.codegen.lower import input_layout_wanted
from convtune.ir.graph import ModelGraph, Node
from convtune.ir.loopnest import LoopKind
from convtune.schedules import ScheduleError
from convtune.schedules import primitives as prim
from convtune.schedules.schedule import Schedule
from convtune.schedules.state import BlockedLayout, ScheduleState


def _roles(node: Node, tensor: str) -> list[str]:
    """How a FusedConv reads ``tensor``: as its 'data', its 'residual', or both."""
    roles = ["data"] if node.inputs[0] == tensor else []
    if node.attrs["workload"].residual and node.inputs[-1] == tensor:
        roles.append("residual")
    return roles


def _with_layout(state: ScheduleState, role: str, layout: BlockedLayout) -> ScheduleState:
    return prim.io_layout(state, **{role: layout})


def _border(layout: BlockedLayout) -> tuple[int, int]:
    """Readers of one tensor that want different layouts get the most padded
    one: a 1x1 gemm (which wants no border) packs its im2col from it cheaply,
    while a 3x3 reader given the 1x1's unpadded layout would repack it through
    its own input transform (squeezenet's Winograd expands then took 8-16 s
    each to compile, instead of about 1)."""
    return layout.top, layout.left


def _contiguous(state: ScheduleState, layout: BlockedLayout) -> bool:
    """Whether the schedule reads or writes ``layout`` with contiguous vectors.

    A vector along output channels takes any block: one store per vector
    (and its input is read by broadcasts, or packed). A vector along the
    output row (``depthwise_w``, ``direct_w``, ``toeplitz``) would be
    scattered over a channel block's lanes, or gathered from them:
    mobilenet_v2's depthwise layers ran 1.5-2.5x slower writing NCHW16c for
    the 1x1 after them than writing NCHW and letting the 1x1 pack it. A
    layout of block 1 (NCHW, with rows below for a pointwise gemm's last
    pixel tile) keeps row vectors contiguous, so those take it, and a vector
    along the flattened pixels (``pointwise_w``) too, as long as no border
    columns break its rows."""
    vectorized = state.annotated(LoopKind.VECTORIZED)
    roots = state.roots_of(vectorized[0]) if vectorized else frozenset()
    if roots == {"k"}:
        return True
    return layout.block == 1 and ("p" not in roots or (layout.left == 0 and layout.cols == layout.tensor[3]))


def choose_layouts(graph: ModelGraph, schedules: dict[str, Schedule]) -> dict[str, BlockedLayout]:
    """Blocked layouts by tensor name; the schedules of ``schedules`` (one per
    FusedConv node, by node name) are given the matching ``io_layout`` s."""
    wanted = {name: input_layout_wanted(sch.state) for name, sch in schedules.items()}
    layouts: dict[str, BlockedLayout] = {}
    for name in schedules:
        tensor = graph.node(name).outputs[0]
        readers = graph.consumers(tensor)
        if tensor in graph.outputs or not readers or any(r.name not in schedules for r in readers):
            continue
        uses = [(r.name, role) for r in readers for role in _roles(r, tensor)]
        wants = [wanted[n] for n, role in uses if role == "data" and wanted[n] is not None]
        if not wants:
            continue
        layout = wants[0] if all(w == wants[0] for w in wants) else max(wants, key=_border)
        # Every reader too: one that reads NCHW in place along its rows, given
        # the layout another reader wants, would gather each vector lane by lane.
        states = {n: schedules[n].state for n in {name, *(n for n, _ in uses)}}
        if not all(_contiguous(state, layout) for state in states.values()):
            continue
        try:
            states[name] = _with_layout(states[name], "out", layout)
            for n, role in uses:
                states[n] = _with_layout(states[n], role, layout)
        except ScheduleError:
            continue
        for n, state in states.items():
            schedules[n].state = state
        layouts[tensor] = layout
    return layouts
