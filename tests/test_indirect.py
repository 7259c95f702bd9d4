"""The indirect convolution template: its indirection table, every knob on an
odd strided, dilated, asymmetrically padded layer, odd shapes and groups,
channel-last input read in place, and the index-table read in the IR."""
import numpy as np
import pytest

from conftest import assert_correct
from targets import AVX512, avx512_schedule
from test_templates import covering_configs
from convtune.codegen import build, source
from convtune.codegen.lower import input_layout_wanted
from convtune.codegen.lower_indirect import channel_last_layout
from convtune.codegen.model_plan import build_plan, run_plan
from convtune.codegen.passes.bounds_check import OutOfBounds, check_bounds
from convtune.codegen.render_cuda import render_cuda
from convtune.codegen.render_numba import RenderError, render
from convtune.codegen.verify import TOLERANCE, random_inputs
from convtune.ir import conv2d, conv2d_reference, relative_error
from convtune.ir.evaluate import interpret
from convtune.ir.expr import IndexLoad, Load, Var
from convtune.ir.graph import ModelGraph, Node, TensorInfo
from convtune.ir.indirect import indirection_table, zero_row_offset
from convtune.ir.loopnest import Buffer, For, Kernel, LoopKind, Store
from convtune.schedules.layout import to_blocked
from convtune.schedules.state import BlockedLayout
from convtune.schedules.target import host_target
from convtune.schedules.templates import TEMPLATES, default_config, schedule_from_config

ODD = conv2d(2, 5, 7, 5, 17, 3, stride=2, padding=(2, 1, 0, 3), dilation=2, bias=True, activation="relu")
"""Batch 2, prime sizes, K = 17, stride 2, dilation 2, asymmetric padding."""


def indirect(wl, **knobs):
    """The template's AVX-512 default with ``knobs`` changed (the knobs below are sized for it)."""
    space = TEMPLATES["indirect"].space(wl, AVX512)
    return avx512_schedule(wl, {"algorithm": "indirect", **space.default, **knobs})


def assert_correct_on_blocked_input(kernel, layout, rng):
    """``kernel`` (of ``ODD``) given its input in ``layout`` into a poisoned NCHW output."""
    x = random_inputs(ODD, rng)
    out = np.full(ODD.out_shape, np.nan, np.float32)
    kernel.prepare(x.weight, x.bias)(to_blocked(layout, x.data), out=out)
    assert relative_error(out, conv2d_reference(ODD, x.data, x.weight, x.bias)) < TOLERANCE


def test_table_points_padding_taps_at_the_zero_row():
    wl = conv2d(1, 3, 5, 4, 8, 3, stride=2, padding=(1, 0, 2, 1), dilation=(1, 2))
    table = indirection_table(wl, wl.P * wl.Q + 2)
    zero = zero_row_offset(wl)
    assert zero == wl.H * wl.W * wl.C and table.dtype == np.int32
    for t in range(wl.P * wl.Q):
        for r in range(wl.R):
            for s in range(wl.S):
                y = (t // wl.Q) * 2 - 1 + r
                x = (t % wl.Q) * 2 - 0 + 2 * s
                inside = 0 <= y < wl.H and 0 <= x < wl.W
                assert table[t, r, s] == ((y * wl.W + x) * wl.C if inside else zero)
    assert (table[wl.P * wl.Q:] == zero).all()  # a tile's pixels past the last one read zeros
    assert (table == zero).any() and table.max() <= zero


def test_the_zero_row_of_the_channel_last_layout_is_zero():
    layout = channel_last_layout(ODD)
    assert layout.shape == (ODD.N, 1, ODD.H + 1, ODD.W, ODD.C)
    x = to_blocked(layout, np.ones(ODD.data_shape, np.float32))
    assert (x[:, :, ODD.H] == 0).all() and (x[:, :, :ODD.H] == 1).all()


@pytest.mark.parametrize("config", covering_configs(TEMPLATES["indirect"].space(ODD, host_target())),
                         ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_every_knob_value_is_correct(config):
    assert_correct(schedule_from_config(ODD, {"algorithm": "indirect", **config}))


@pytest.mark.parametrize("wl", [
    conv2d(1, 1, 7, 7, 3, 5, padding="same", bias=True, activation="sigmoid"),  # K = 3, one input channel
    conv2d(3, 16, 5, 7, 21, 1, stride=2, residual=True),  # 1x1 strided, K = 21, batch 3
    conv2d(1, 3, 23, 19, 8, 7, stride=2, padding=3, activation="hardswish"),  # a stem: C = 3, 7x7
    conv2d(2, 12, 7, 5, 18, 3, padding=(0, 2, 1, 0), groups=3),  # grouped: vectors span groups (lane gathers)
    conv2d(1, 32, 6, 6, 32, 3, padding="same_lower", groups=2, bias=True),  # grouped: vectors within a group
], ids=lambda wl: wl.short())
def test_odd_shapes_and_groups_are_correct(wl):
    assert_correct(indirect(wl, kb=min(16, wl.K), tb=min(5, wl.P * wl.Q)))


def test_a_vector_within_one_group_reads_its_input_once():
    """16 output channels of a 16-channel group share an input channel: one
    broadcast per pixel and channel, not 16 lanes read one by one."""
    wl = conv2d(1, 32, 6, 6, 32, 3, padding=1, groups=2)
    assert "vfromtuple((" not in source(indirect(wl, kb=16))
    assert "vfromtuple((" in source(indirect(wl, kb=32, tb=1))  # spans both groups


def test_the_tuner_decides_when_it_runs():
    assert default_config(ODD)["algorithm"] != "indirect"


def test_channel_last_input_is_read_in_place(rng):
    """In a model the previous conv writes the layout this one asks for; the
    kernel then has no packing stage, reads the array as it is, and gets the
    same answer as on NCHW input."""
    sch = indirect(ODD)
    layout = input_layout_wanted(sch.state)
    assert layout == channel_last_layout(ODD) and layout.block == ODD.C  # NHWC plus the zero row
    alone = build(sch)
    sch.io_layout(data=layout)
    in_place = build(sch)
    assert len(in_place.loop_nest.stages) == len(alone.loop_nest.stages) - 1
    assert "data_packed" not in {b.name for b in in_place.loop_nest.params}
    assert in_place.shape_of("data") == layout.shape
    assert_correct_on_blocked_input(in_place, layout, rng)


def test_another_blocked_input_is_repacked_to_channel_last(rng):
    sch = indirect(ODD)
    layout = BlockedLayout(ODD.data_shape, 4, 1, 2, ODD.H + 2, ODD.W + 3)  # NCHW4c in a border
    sch.io_layout(data=layout)
    kernel = build(sch)
    assert "data_packed" in {b.name for b in kernel.loop_nest.params}
    assert_correct_on_blocked_input(kernel, layout, rng)


def test_a_conv_writing_channel_last_feeds_it_without_a_copy(rng):
    prev = conv2d(2, 3, 7, 5, 5, 3, padding=1, activation="relu")
    sch = indirect(ODD)
    layout = input_layout_wanted(sch.state)
    sch.io_layout(data=layout)
    first = schedule_from_config(prev, default_config(prev))
    first.io_layout(out=layout)
    a, b = random_inputs(prev, rng), random_inputs(ODD, rng)
    conv = build(first).prepare(a.weight)
    mid = conv.new_output()
    conv(a.data, out=mid)
    out = build(sch).prepare(b.weight, b.bias)(mid)
    ref = conv2d_reference(ODD, conv2d_reference(prev, a.data, a.weight).astype(np.float32), b.weight, b.bias)
    assert relative_error(out, ref) < TOLERANCE


def test_in_a_model_the_tensor_between_two_convs_stays_channel_last(rng):
    """The model plan keeps the tensor an indirect conv reads in its
    channel-last layout: the conv before it writes it there, and the indirect
    kernel runs no packing stage."""
    a = conv2d(2, 3, 7, 5, 5, 3, padding=1, bias=True, activation="relu")
    graph = ModelGraph("chain")
    graph.add_input("x", a.data_shape)
    for name, wl, src, dst in (("A", a, "x", "y"), ("B", ODD, "y", "z")):
        graph.add_constant(f"w{name}", rng.standard_normal(wl.weight_shape).astype(np.float32))
        graph.add_constant(f"b{name}", rng.standard_normal(wl.K).astype(np.float32))
        graph.add_node(Node(name, "FusedConv", (src, f"w{name}", f"b{name}"), (dst,), {"workload": wl}),
                       {dst: TensorInfo(wl.out_shape, np.dtype(np.float32))})
    graph.outputs.append("z")
    plan = build_plan(graph, lambda wl: indirect(wl) if wl == ODD else schedule_from_config(wl, default_config(wl)))
    assert plan.layouts == {"y": channel_last_layout(ODD)}
    assert {s.node.name: s.packs for s in plan.steps}["B"] == ()
    x = rng.standard_normal(a.data_shape).astype(np.float32)
    plan.inputs["x"][...] = x
    run_plan(plan)
    assert relative_error(plan.values["z"], interpret(graph, {"x": x})["z"]) < TOLERANCE


def _gather(hi: int) -> Kernel:
    """out[i] = a[table[i]] for four i, table entries declared within [0, hi]."""
    i = Var("i")
    body = Store("out", (i,), Load("a", (IndexLoad("table", (i,), 0, hi),)))
    return Kernel("gather", (Buffer("a", (8,)), Buffer("table", (4,)), Buffer("out", (4,))),
                  (For("i", 4, LoopKind.PARALLEL, body),))


def test_an_index_table_read_is_bounded_by_its_declared_range():
    check_bounds(_gather(7))
    with pytest.raises(OutOfBounds):
        check_bounds(_gather(8))


def test_an_index_table_read_renders_for_numba_and_is_refused_on_cuda():
    assert "ld(a, ldi(table, i))" in render(_gather(7), [])
    with pytest.raises(RenderError, match="index tables"):
        render_cuda(_gather(7), [])
