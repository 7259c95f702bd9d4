"""Every template and every value of every knob builds a correct kernel.

Configs are chosen greedily so that each (knob, value) pair of a template
appears in at least one built kernel, with as few kernels as that takes.
"""
import itertools

import pytest

from conftest import assert_correct
from targets import AVX2, AVX512
from convtune.codegen import source
from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import (
    BUILTIN, TEMPLATES, default_config, invalid_reason, schedule_from_config, search_space,
)
from convtune.tuner.suites import load_suite, suite_names

WORKLOADS = {
    "direct": conv2d(1, 16, 10, 14, 32, 3, padding=1, bias=True, activation="relu"),
    "gemm": conv2d(1, 16, 9, 8, 32, 3, stride=(1, 2), padding=1),
    "depthwise_c": conv2d(1, 32, 10, 14, 32, 3, padding=1, groups=32, residual=True),
    "depthwise_w": conv2d(1, 8, 11, 20, 8, 3, padding=1, groups=8, bias=True),
    "winograd": conv2d(1, 16, 10, 14, 32, 3, padding=1, bias=True, residual=True, activation="relu6"),
    "indirect": conv2d(1, 12, 5, 5, 32, 3, stride=(2, 1), padding=(1, 2, 0, 1), residual=True),
    "toeplitz": conv2d(2, 3, 7, 33, 12, 3, padding="same", bias=True, activation="silu"),
    "direct_w": conv2d(2, 12, 9, 21, 12, 3, stride=(1, 2), padding=(1, 0, 2, 1), bias=True, activation="relu"),
    "pointwise_w": conv2d(2, 12, 5, 7, 20, 1, bias=True, activation="relu"),  # 35 pixels: a ragged last vector
}

# Paths a template takes only for some workloads, swept knob by knob as well:
# (template, workload) under a test-id prefix.
PATH_WORKLOADS = {
    "gemm_1x1": ("gemm", conv2d(1, 24, 7, 5, 40, 1, stride=2, bias=True, activation="relu")),  # no im2col, subsampled
    "direct_w_1x1": ("direct_w", conv2d(1, 5, 6, 40, 24, 1, bias=True, residual=True)),  # rows of 2.5 vectors
    "direct_w_dilated": ("direct_w", conv2d(1, 6, 11, 11, 21, 3, padding=2, dilation=2, groups=3)),
    "pointwise_w_grouped": ("pointwise_w", conv2d(1, 12, 3, 5, 8, 1, groups=4, residual=True)),
}


def covering_configs(space, limit=3000):
    """Few valid configs in which every (knob, value) pair appears."""
    configs = list(itertools.islice(space.configs(), limit))
    uncovered = {(k.name, v) for k in space.knobs for v in k.values}
    chosen = []
    while uncovered:
        best = max(configs, key=lambda c: len(uncovered & set(c.items())))
        gained = uncovered & set(best.items())
        if not gained:
            raise AssertionError(f"no valid config has {sorted(uncovered)}")
        chosen.append(best)
        uncovered -= gained
    return chosen


def sweeps():
    """(test-id prefix, template, workload) of every template sweep."""
    return [(name, name, wl) for name, wl in WORKLOADS.items()] + [
        (label, name, wl) for label, (name, wl) in PATH_WORKLOADS.items()]


def cases():
    for label, name, wl in sweeps():
        space = TEMPLATES[name].space(wl, host_target())
        for i, config in enumerate(covering_configs(space)):
            yield pytest.param(wl, {"algorithm": name, **config}, id=f"{label}-{i}")


def test_every_template_has_a_workload():
    assert set(WORKLOADS) == set(BUILTIN)


@pytest.mark.parametrize("wl,config", list(cases()))
def test_template_config_is_correct(wl, config):
    assert_correct(schedule_from_config(wl, config))


@pytest.mark.parametrize("wl", [conv2d(1, 3, 20, 20, 8, 7, stride=2, padding=3), conv2d(2, 12, 9, 9, 20, 1),
                                conv2d(1, 6, 8, 8, 6, 3, padding=1, groups=6), conv2d(1, 10, 6, 6, 12, 3, padding=1),
                                conv2d(1, 4, 5, 5, 4, 3, groups=2),
                                conv2d(1, 8, 14, 14, 16, 3, padding=1, groups=8),  # depthwise, channel multiplier 2
                                conv2d(1, 1, 1, 1, 1, 1), conv2d(1, 1, 3, 3, 1, 3, padding=1),
                                *(conv2d(1, 16, 14, 14, k, 1) for k in (3, 17, 21, 1000)),  # RGB, heatmap, class heads
                                conv2d(2, 8, 13, 17, 3, 3, padding=1, bias=True),  # prime sizes, batch 2
                                conv2d(3, 5, 11, 7, 21, 3, stride=2, padding=(1, 0, 2, 1), residual=True),
                                conv2d(2, 16, 13, 11, 17, 3, padding=1, bias=True, activation="relu"),  # winograd
                                conv2d(2, 7, 19, 23, 7, 3, padding=1, groups=7, residual=True)])  # depthwise, 7 lanes
def test_default_config_is_valid_and_correct(wl):
    """Including one-element workloads, whose every loop has one iteration
    (once merged all stages into one and read an accumulator before setting it),
    and output channel counts that are no multiple of a vector (the last
    block's lanes are masked: once no template built K = 3, 17 or 21)."""
    config = default_config(wl)
    assert config["algorithm"] in search_space(wl)
    assert_correct(schedule_from_config(wl, config))


@pytest.mark.parametrize("wl", [conv2d(1, 8, 13, 17, 8, 3, stride=2, padding=1, groups=8),
                                conv2d(2, 6, 9, 11, 6, 3, padding=(0, 2, 1, 0), groups=6, activation="relu6"),
                                conv2d(1, 4, 10, 10, 8, 3, padding="same", groups=4, dilation=2)])
def test_depthwise_rows_read_the_input_in_place(wl):
    """Borders become masked vector loads (strided rows: one wide masked load),
    not a padded copy of the input and not lane-by-lane code."""
    from convtune.codegen import source

    sch = schedule_from_config(wl, default_config(wl))
    body = source(sch).split("def stage0", 1)[1]
    assert "vldmask(data," in body and "data_packed" not in body and "vfromtuple(" not in body
    assert_correct(sch)




@pytest.mark.parametrize("target", [AVX2, AVX512], ids=["avx2", "avx512"])
@pytest.mark.parametrize("suite", suite_names())
def test_every_space_and_default_is_valid_on_every_isa(target, suite):
    """Spaces depend on the target (vector width, register count): a default
    that only fits one ISA would break tuning on the other machines."""
    for layer in load_suite(suite)[1]:
        spaces = search_space(layer.workload, target)  # a Space refuses an invalid default when built
        config = default_config(layer.workload, target)
        assert config["algorithm"] in spaces
        assert spaces[config["algorithm"]].invalid_reason(config) is None


@pytest.mark.parametrize("target", [AVX2, AVX512], ids=["avx2", "avx512"])
def test_every_knob_value_a_space_offers_has_a_valid_config_on_every_isa(target):
    """A value that no config can take (a channel tile only 32 registers
    hold, offered on a 16-register AVX2 machine) wastes the tuner's samples,
    and the sweeps above, on the host's ISA, could not cover it."""
    for label, name, wl in sweeps():
        covering_configs(TEMPLATES[name].space(wl, target))


@pytest.mark.parametrize("target", [AVX2, AVX512], ids=["avx2", "avx512"])
def test_kernels_for_another_isa_still_compute_correctly(target):
    """A kernel sized for the other vector width still runs here: LLVM
    legalises the vectors, so only speed, never the result, depends on it."""
    wl = WORKLOADS["direct"]
    assert_correct(schedule_from_config(wl, default_config(wl, target), target))


def test_depthwise_layers_search_only_the_depthwise_templates():
    """Blocking input channels means nothing with one channel per group: the
    tuner's budget goes to the templates that can win."""
    def builtin(wl):  # other tests register plugin templates
        return set(search_space(wl)) & set(BUILTIN)

    assert builtin(conv2d(1, 32, 14, 14, 32, 3, padding=1, groups=32)) == {"depthwise_c", "depthwise_w"}
    assert builtin(conv2d(1, 8, 14, 14, 16, 3, padding=1, groups=8)) == {"depthwise_c", "depthwise_w"}
    assert {"direct", "gemm"} <= builtin(conv2d(1, 32, 14, 14, 32, 3, padding=1, groups=2))


def test_direct_w_keeps_its_tile_in_registers():
    """A tile ragged along channels and along the row vectorises only in
    part (a scalar copy, accumulators in memory, 10-65 s to compile): the
    space refuses it and every config it allows has register accumulators."""
    wl = conv2d(1, 5, 6, 17, 18, 1, bias=True)
    space = TEMPLATES["direct_w"].space(wl, host_target())
    assert space.invalid_reason({**space.default, "vw": 16, "nv": 1, "kb": 4})
    configs = list(space.configs())
    assert any(c["kb"] > 1 for c in configs)
    for c in configs:
        assert "np.empty" not in source(schedule_from_config(wl, {"algorithm": "direct_w", **c})), c


def test_row_templates_count_the_guards_of_padded_and_ragged_tiles_in_their_code_size():
    """Drawn by the compile-time bench: 42 unrolled taps x 6 accumulators,
    every load guarded by the vertical padding, compiled for 10.3 s cold
    (840 calls by the estimate without guards, 1075 in the source). Without
    the padding the same tile stays allowed."""
    config = {"algorithm": "direct_w", "vw": 8, "nv": 1, "kb": 3, "ohb": 2, "unroll_rs": True, "parallel": "nk"}
    padded = conv2d(2, 30, 25, 20, 21, 6, 7, stride=(3, 1), padding=(3, 3, 3, 2), dilation=(3, 1))
    assert "calls (compile time)" in invalid_reason(padded, config, AVX2)
    unpadded = conv2d(2, 30, 31, 20, 21, 6, 7, stride=(3, 1), padding=(0, 3, 0, 2), dilation=(3, 1))
    assert invalid_reason(unpadded, config, AVX2) is None


@pytest.mark.parametrize("wl", [conv2d(1, 24, 14, 14, 40, 1, bias=True), conv2d(2, 16, 7, 7, 24, 1, residual=True)])
def test_pointwise_w_reads_the_flattened_pixels_in_place(wl):
    """196 and 49 pixels end in a ragged vector: its guard must stay one
    masked load per vector (undivided, ``ir.simplify``), not a load per lane."""
    space = TEMPLATES["pointwise_w"].space(wl, host_target())
    sch = schedule_from_config(wl, {"algorithm": "pointwise_w", **space.default})
    body = source(sch).split("def stage0", 1)[1]
    assert "vldmask(data," in body and "data_packed" not in body and "vfromtuple(" not in body
    assert_correct(sch)


@pytest.mark.parametrize("order", ["kp", "pk"])
@pytest.mark.parametrize("wl", [conv2d(2, 24, 9, 11, 40, 1, bias=True), conv2d(1, 12, 5, 5, 18, 1, groups=3)])
def test_pointwise_w_computes_the_same_in_either_block_order(wl, order):
    """pk nests the channel blocks inside each pixel block (its input read
    from memory once); kp the pixel blocks inside each channel block. 99
    pixels and 40 channels by kb 4 or 8 make both tails ragged."""
    default = TEMPLATES["pointwise_w"].space(wl, host_target()).default
    for parallel in ("nk", "nkp"):
        sch = schedule_from_config(wl, {"algorithm": "pointwise_w", **default, "order": order, "parallel": parallel})
        loops = str(sch).split("loops:")[1]
        assert_correct(sch)
        assert loops.index("k_o") > loops.index("p_q_o") if order == "pk" else loops.index("k_o") < loops.index("p_q_o")


def test_pointwise_w_applies_to_unpadded_stride_1_pointwise_convs_only():
    applies = TEMPLATES["pointwise_w"].applies
    assert applies(conv2d(1, 8, 7, 7, 16, 1)) and applies(conv2d(1, 8, 7, 7, 16, 1, groups=2))
    assert not applies(conv2d(1, 8, 7, 7, 16, 1, stride=2))
    assert not applies(conv2d(1, 8, 7, 7, 16, 1, padding=1))
    assert not applies(conv2d(1, 8, 7, 7, 16, 3, padding=1))
    assert not applies(conv2d(1, 8, 7, 7, 8, 1, groups=8))  # depthwise: depthwise_w's
