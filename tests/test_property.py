"""Property: any workload under any legal sequence of primitives computes the
reference result. Illegal steps must be refused by the primitive itself (a
ScheduleError); what is left is a legal schedule that must build and be right."""
import os

import pytest

from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from conftest import assert_correct
from convtune.ir import WorkloadError, conv2d
from convtune.schedules import Schedule, ScheduleError

EXAMPLES = int(os.environ.get("CONVTUNE_PROPERTY_EXAMPLES", "40"))


@st.composite
def workloads(draw):
    groups = draw(st.sampled_from(["1", "2", "4", "dw"]))
    cg, kg = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    g = {"1": 1, "2": 2, "4": 4, "dw": draw(st.integers(2, 8))}[groups]
    if groups == "dw":
        cg = 1
    kw = dict(
        stride=draw(st.sampled_from([1, 2, 3, (1, 2), (2, 1)])),
        dilation=draw(st.sampled_from([1, 1, 2, 3, (1, 2)])),
        padding=draw(st.one_of(st.integers(0, 2), st.sampled_from(["same", "same_lower", "valid"]),
                               st.tuples(*[st.integers(0, 2)] * 4))),
        groups=g,
        bias=draw(st.booleans()),
        residual=draw(st.booleans()),
        activation=draw(st.sampled_from([None, "relu", "relu6", "leaky_relu"])),
    )
    try:
        return conv2d(draw(st.integers(1, 2)), cg * g, draw(st.integers(3, 11)), draw(st.integers(3, 11)),
                      kg * g, draw(st.integers(1, 4)), draw(st.integers(1, 4)), **kw)
    except WorkloadError:
        assume(False)


ACTIONS = ["split", "split", "tile", "fuse", "reorder", "reorder", "unroll", "vectorize", "parallel",
           "cache_write", "pack_data", "pack_weights"]


def apply(sch: Schedule, action: str, a: int, b: int) -> None:
    leaves = sch.axes
    pick = leaves[a % len(leaves)]
    if action == "split":
        sch.split(pick, 1 + b % sch.extent(pick))
    elif action == "tile":
        other = leaves[b % len(leaves)]
        sch.tile(pick, other, 1 + b % sch.extent(pick), 1 + a % sch.extent(other))
    elif action == "fuse" and len(leaves) > 1:
        i = a % (len(leaves) - 1)
        sch.fuse(leaves[i], leaves[i + 1])
    elif action == "reorder":
        other = leaves[b % len(leaves)]
        if pick != other:
            sch.reorder(*sorted([pick, other], key=leaves.index, reverse=True))
    elif action == "unroll" and sch.extent(pick) <= 8:
        sch.unroll(pick)
    elif action == "vectorize":
        sch.vectorize(leaves[-1])
    elif action == "parallel":
        sch.parallel(pick)
    elif action == "cache_write":
        sch.cache_write(pick)
    elif action == "pack_data":
        sch.pack_data(1 + a % 8)
    elif action == "pack_weights":
        sch.pack_weights(1 + a % 8, 1 + b % 8)


@pytest.fixture(autouse=True)
def bounds_checked_kernels(monkeypatch):
    """Raw-pointer kernels would read past a buffer silently: here every
    access is checked at run time and raises IndexError instead."""
    monkeypatch.setenv("CONVTUNE_CHECK_BOUNDS", "1")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 999), st.integers(0, 999)),
                             min_size=2, max_size=12))
def test_random_legal_schedule_matches_reference(wl, actions):
    sch = Schedule(wl)
    for action, a, b in actions:
        try:
            apply(sch, action, a, b)
        except ScheduleError:
            pass  # refused as illegal; the schedule is unchanged and still legal
    note(str(sch))
    try:
        from convtune.codegen import lower_schedule

        lower_schedule(sch)
    except ScheduleError as e:
        assume("unroll" not in str(e))  # only an oversized unroll may be refused at build
        raise
    assert_correct(sch)
