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
projection convs after its depthwise layers then skip their packing. A
MaxPool between fused convs (resnet's stem) passes blocked tensors through
(``_through_max_pool``): the pool runs on channel blocks, so the stem conv
writes no NCHW and the convs after the pool pack nothing.
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


def _readers_layout(graph: ModelGraph, schedules: dict[str, Schedule], wanted: dict[str, BlockedLayout | None],
                    tensor: str) -> tuple[BlockedLayout, list[tuple[str, str]]] | None:
    """The layout the fused convs reading ``tensor`` read in place, and their
    (node, role) uses; None unless every reader is a fused conv and one wants a layout."""
    readers = graph.consumers(tensor)
    if tensor in graph.outputs or not readers or any(r.name not in schedules for r in readers):
        return None
    uses = [(r.name, role) for r in readers for role in _roles(r, tensor)]
    wants = [wanted[n] for n, role in uses if role == "data" and wanted[n] is not None]
    if not wants:
        return None
    return (wants[0] if all(w == wants[0] for w in wants) else max(wants, key=_border)), uses


def _apply(schedules: dict[str, Schedule], io: list[tuple[str, str, BlockedLayout]]) -> bool:
    """Give each (node, role) its layout, if every schedule involved accesses
    its layouts with contiguous vectors and takes them; else change nothing.
    Every reader is checked too: one that reads NCHW in place along its rows,
    given the layout another reader wants, would gather each vector lane by lane."""
    states = {n: schedules[n].state for n, _, _ in io}
    if not all(_contiguous(states[n], layout) for n, _, layout in io):
        return False
    try:
        for n, role, layout in io:
            states[n] = _with_layout(states[n], role, layout)
    except ScheduleError:
        return False
    for n, state in states.items():
        schedules[n].state = state
    return True


def _through_max_pool(graph: ModelGraph, pool: Node, schedules: dict[str, Schedule],
                      wanted: dict[str, BlockedLayout | None]) -> dict[str, BlockedLayout]:
    """A 2-D MaxPool between fused convs (resnet's stem) pools blocked tensors
    (``op_kernels.max_pool`` with a channel block a pixel): its input in the
    block its readers want, unpadded (a pool's padding never wins, so it is no
    zero border), its output in their layout; the conv before it then writes
    no NCHW and the convs after it pack nothing. {} where that does not apply."""
    (source,), (pooled,) = pool.inputs[:1], pool.outputs[:1]
    writer = graph.producer(source)
    chosen = _readers_layout(graph, schedules, wanted, pooled)
    if (chosen is None or len(pool.outputs) != 1 or len(graph.tensors[source].shape) != 4 or writer is None
            or writer.name not in schedules or source in graph.outputs or graph.consumers(source) != [pool]):
        return {}
    layout, uses = chosen
    unpadded = BlockedLayout(graph.tensors[source].shape, layout.block)
    if not _apply(schedules, [(writer.name, "out", unpadded), *((n, role, layout) for n, role in uses)]):
        return {}
    return {source: unpadded, pooled: layout}


def choose_layouts(graph: ModelGraph, schedules: dict[str, Schedule]) -> dict[str, BlockedLayout]:
    """Blocked layouts by tensor name; the schedules of ``schedules`` (one per
    FusedConv node, by node name) are given the matching ``io_layout`` s."""
    wanted = {name: input_layout_wanted(sch.state) for name, sch in schedules.items()}
    layouts: dict[str, BlockedLayout] = {}
    for name in schedules:
        tensor = graph.node(name).outputs[0]
        chosen = _readers_layout(graph, schedules, wanted, tensor)
        if chosen is not None and _apply(schedules, [(name, "out", chosen[0]),
                                                     *((n, role, chosen[0]) for n, role in chosen[1])]):
            layouts[tensor] = chosen[0]
    for node in graph.nodes():
        if node.op == "MaxPool":
            layouts.update(_through_max_pool(graph, node, schedules, wanted))
    return layouts
