"""Software prefetch of the weight stream: the primitive, the pass, the knobs, and old logs without the knob."""
from __future__ import annotations

import re

import pytest

from conftest import assert_correct
from targets import avx512_invalid_reason, avx512_schedule
from convtune.codegen import source
from convtune.ir import conv2d
from convtune.schedules.schedule import Schedule
from convtune.schedules.state import ScheduleError


LAYER4 = conv2d(1, 64, 7, 7, 64, 3, padding=1, bias=True, activation="relu", residual=True)
WINOGRAD = {"algorithm": "winograd", "m": 2, "cb": 8, "kb": 16, "tb": 8}


def _prefetched(src: str) -> list[str]:
    """The prefetch calls of a kernel's stages (not its header's schedule trace)."""
    return re.findall(r"^ +prefetch\(weight, .*\)$", src, re.MULTILINE)


@pytest.mark.parametrize("wl,config", [
    (LAYER4, WINOGRAD),  # 16 tiles in two blocks: each chunk fetches half of the next block's lines
    (LAYER4, {**WINOGRAD, "tb": 16}),  # one tile block: each chunk fetches all of the next one
    (conv2d(2, 8, 11, 13, 17, 3, padding=1), {**WINOGRAD, "cb": 8, "tb": 5}),  # one channel block: c_o inlined
    (conv2d(1, 24, 13, 13, 40, 3, stride=2, padding=1, bias=True),
     {"algorithm": "direct", "cb": 8, "kb": 16, "ohb": 2, "owb": 7, "reduction_order": "c_rs", "unroll_s": True,
      "parallel": "nkp"}),
    (conv2d(2, 40, 9, 11, 24, 1, bias=True),  # 1x1: the taps are one, any reduction order is contiguous
     {"algorithm": "gemm", "cb": 8, "kb": 16, "tb": 7, "reduction_order": "rs_c", "unroll_s": False}),
    (conv2d(1, 12, 10, 10, 20, 3, padding=1, residual=True),  # one channel block
     {"algorithm": "indirect", "cb": 12, "kb": 16, "tb": 6, "reduction_order": "rs_c", "unroll_s": True}),
])
def test_prefetching_kernels_fetch_the_next_block_and_stay_correct(wl, config):
    sch = avx512_schedule(wl, {**config, "prefetch": True})
    src = source(sch)
    assert _prefetched(src), src
    assert not _prefetched(source(avx512_schedule(wl, {**config, "prefetch": False})))
    assert_correct(sch)


def test_a_stage_of_one_chunk_has_nothing_to_prefetch_and_still_builds():
    # Found by the property test: every loop of extent 1, the parallel one inlined.
    wl = conv2d(1, 1, 1, 1, 1, 1, stride=(3, 2), padding=(0, 2, 3, 3), bias=True, activation="relu", residual=True)
    sch = avx512_schedule(wl, {"algorithm": "gemm", "cb": 1, "kb": 1, "tb": 6, "reduction_order": "c_rs",
                                    "unroll_s": False, "prefetch": True})
    assert not _prefetched(source(sch))
    assert_correct(sch)


def test_chunks_sharing_a_block_split_its_lines():
    # 8 channels x 16 outputs per c_o step = 128 floats = 8 lines, shared by the 2 tile blocks: 4 each, ahead 2 chunks.
    src = source(avx512_schedule(LAYER4, {**WINOGRAD, "prefetch": True}))
    assert len(_prefetched(src)) == 4
    assert "+ 2 < " in src  # the last chunks, with no block after them, fetch nothing


def test_a_config_logged_before_the_knob_means_no_prefetch():
    old = dict(WINOGRAD)  # as tuning logs from before the knob hold it
    assert avx512_invalid_reason(LAYER4, old) is None
    assert source(avx512_schedule(LAYER4, old)) == source(avx512_schedule(LAYER4, {**old, "prefetch": False}))


def test_direct_prefetches_only_where_each_chunk_reads_its_block_once():
    wl = conv2d(1, 16, 9, 9, 32, 3, padding=1)
    base = {"algorithm": "direct", "cb": 8, "kb": 16, "ohb": 1, "owb": 9, "reduction_order": "c_rs",
            "unroll_s": False, "parallel": "nkp", "prefetch": True}
    assert avx512_invalid_reason(wl, base) is None
    for change in ({"parallel": "nk"}, {"reduction_order": "rs_c"}, {"owb": 3}):
        assert "prefetch needs" in avx512_invalid_reason(wl, {**base, **change})
    grouped = conv2d(1, 16, 9, 9, 32, 3, padding=1, groups=2)
    assert "prefetch=True is not one of" in avx512_invalid_reason(grouped, {**base, "cb": 8})


@pytest.mark.parametrize("args,message", [
    (("weight", "k_o"), "spatial axis"),
    (("out", "c_o"), "buffer must be"),
    (("weight", "c_o", 0), "ahead"),
])
def test_prefetch_primitive_refuses_what_it_cannot_do(args, message):
    sch = Schedule(conv2d(1, 16, 8, 8, 16, 3, padding=1))
    sch.split("k", 8)
    sch.split("c", 4)
    with pytest.raises(ScheduleError, match=message):
        sch.prefetch(*args)


def test_prefetch_twice_is_refused():
    sch = Schedule(conv2d(1, 16, 8, 8, 16, 3, padding=1))
    sch.split("c", 4)
    sch.prefetch("weight", "c_o")
    with pytest.raises(ScheduleError, match="already"):
        sch.prefetch("weight", "c_o")
