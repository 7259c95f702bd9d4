"""Every CUDA template and every value of its knobs computes the right answer,
on a GPU where there is one and on numba's CUDA simulator otherwise
(``conftest`` sets NUMBA_ENABLE_CUDASIM without a GPU): against the float64
reference, fresh random inputs, a NaN-poisoned output. Shapes are tiny, as
the simulator runs every thread in Python."""
import math

import numpy as np
import pytest

from conftest import assert_correct
from convtune.codegen import build
from convtune.codegen.cuda_build import cuda_target
from convtune.codegen.verify import TOLERANCE, random_inputs
from convtune.ir import conv2d, conv2d_reference, relative_error
from convtune.ir.workload import ACTIVATIONS
from convtune.schedules import Schedule
from convtune.schedules.schedule import default_schedule
from convtune.schedules.templates import CUDA_TEMPLATES, default_config, schedule_from_config
from convtune.schedules.templates.cuda_common import parse_tile

WORKLOADS = {
    "cuda_direct": conv2d(1, 2, 4, 4, 4, 3, padding=1, bias=True, activation="relu"),
    "cuda_depthwise": conv2d(1, 3, 5, 5, 3, 3, padding=1, groups=3, bias=True, activation="relu6"),
    "cuda_gemm": conv2d(1, 4, 4, 4, 4, 3, padding=1, bias=True, residual=True, activation="relu"),
}
# (template, workload) pairs whose knobs differ: grouped convs stage only the
# weights; a 1x1 kernel has one inner window; channels that do not divide
# into the split-K parts.
PATH_WORKLOADS = {
    "cuda_direct_grouped": ("cuda_direct", conv2d(1, 4, 4, 5, 4, 3, padding=1, groups=2, residual=True)),
    "cuda_direct_1x1": ("cuda_direct", conv2d(2, 3, 5, 5, 4, 1, stride=2, activation="relu6")),
    "cuda_gemm_strided": ("cuda_gemm", conv2d(1, 6, 7, 7, 4, 1, stride=2, activation="leaky_relu")),  # 3-channel parts
    "cuda_depthwise_x2": ("cuda_depthwise", conv2d(1, 2, 6, 5, 4, 3, stride=2, padding=1, groups=2, residual=True)),
}


def _tiled(*pairs) -> tuple[int, int]:
    """(blocks, threads per block) of "VxTxI" tiles over their extents."""
    blocks = threads = 1
    for value, extent in pairs:
        v, t, i = parse_tile(value)
        blocks *= math.ceil(extent / (v * t * i))
        threads *= t
    return blocks, threads


def simulated_cost(wl, c) -> int:
    """What a config costs the simulator: it runs every thread of every block
    in Python, and each step through shared memory ends in a barrier."""
    if "tile_pq" in c:  # cuda_gemm
        blocks, threads = _tiled((c["tile_k"], wl.K), (c["tile_pq"], wl.P * wl.Q))
        return wl.N * c["split_k"] * blocks * threads * math.ceil(wl.Cg / c["split_k"] / c["tile_rc"])
    blocks, threads = _tiled((c["tile_f"], wl.K), (c["tile_y"], wl.P), (c["tile_x"], wl.Q))
    ry, rx = (int(n) for n in c["tile_r"].split("x"))
    return wl.N * blocks * threads * math.ceil(wl.Cg / c["tile_rc"]) * (wl.R // ry) * (wl.S // rx)


def cheap_covering_configs(wl, space) -> list[dict]:
    """Configs in which every (knob, value) pair appears, chosen greedily by
    newly covered pairs per unit of simulator cost."""
    configs = list(space.configs())
    uncovered = {(k.name, v) for k in space.knobs for v in k.values}
    chosen = []
    while uncovered:
        best = max(configs, key=lambda c: len(uncovered & set(c.items())) / simulated_cost(wl, c))
        if not uncovered & set(best.items()):
            raise AssertionError(f"no valid config has {sorted(uncovered)}")
        chosen.append(best)
        uncovered -= set(best.items())
    return chosen


def cases():
    target = cuda_target()
    sweeps = [(name, name, wl) for name, wl in WORKLOADS.items()]
    sweeps += [(label, name, wl) for label, (name, wl) in PATH_WORKLOADS.items()]
    for label, name, wl in sweeps:
        for i, config in enumerate(cheap_covering_configs(wl, CUDA_TEMPLATES[name].space(wl, target))):
            yield pytest.param(wl, {"algorithm": name, **config}, id=f"{label}-{i}")


def test_every_cuda_template_has_a_workload():
    assert set(WORKLOADS) == set(CUDA_TEMPLATES)


@pytest.mark.parametrize("wl,config", list(cases()))
def test_cuda_template_config_is_correct(wl, config):
    assert_correct(schedule_from_config(wl, config, cuda_target()), target="cuda")


@pytest.mark.parametrize("wl", [conv2d(1, 3, 9, 9, 4, 5, stride=2, padding=2), conv2d(1, 1, 1, 1, 1, 1),
                                conv2d(1, 4, 5, 5, 4, 3, padding=1, groups=4, bias=True),  # depthwise
                                conv2d(1, 3, 7, 7, 4, 3, padding=2, dilation=2, stride=(1, 2),
                                       activation="leaky_relu")])
def test_cuda_default_config_is_correct(wl):
    assert_correct(schedule_from_config(wl, default_config(wl, cuda_target()), cuda_target()), target="cuda")


def test_unbound_schedules_run_one_thread_per_parallel_iteration():
    """The CPU's default schedule, and one that accumulates in the output
    (zeroing, accumulating and finishing stages), run on the GPU as they are."""
    wl = conv2d(1, 3, 5, 5, 4, 3, padding=1, bias=True, activation="relu6")
    assert_correct(default_schedule(wl), target="cuda")
    sch = Schedule(wl)
    sch.reorder("c", "n", "k", "p", "q")  # the reduction outside: out is zeroed, accumulated, finished
    assert len(build(sch, target="cuda").stages) == 3
    assert_correct(sch, target="cuda")


def test_device_arrays_are_used_in_place(rng):
    from numba import cuda

    wl = conv2d(1, 4, 6, 6, 8, 3, padding=1, residual=True)
    kernel = build(schedule_from_config(wl, default_config(wl, cuda_target()), cuda_target()), target="cuda")
    x = random_inputs(wl, rng)
    conv = kernel.prepare(x.weight)
    data, residual = cuda.to_device(x.data), cuda.to_device(x.residual)
    out = cuda.to_device(np.full(wl.out_shape, np.nan, np.float32))
    assert conv(data, residual=residual, out=out) is out
    ref = conv2d_reference(wl, x.data, x.weight, None, x.residual)
    assert relative_error(out.copy_to_host(), ref) < TOLERANCE
    data.copy_to_device(-x.data)  # same buffers, new values: the prepared launch sees them
    conv.launch()
    assert relative_error(out.copy_to_host(), conv2d_reference(wl, -x.data, x.weight, None, x.residual)) < TOLERANCE


def test_bad_operands_get_one_line_errors(rng):
    from numba import cuda

    wl = conv2d(1, 2, 4, 4, 4, 3, padding=1)
    conv = build(schedule_from_config(wl, default_config(wl, cuda_target()), cuda_target()), target="cuda").prepare(
        random_inputs(wl, rng).weight)
    with pytest.raises(ValueError, match=r"data: expected shape \(1, 2, 4, 4\), got \(1, 2, 4, 5\)"):
        conv(np.zeros((1, 2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="data: expected a C-contiguous float32 device array of shape"):
        conv(cuda.to_device(np.zeros((1, 2, 4, 4), np.float64)))
    with pytest.raises(ValueError, match="residual: this workload was declared without a residual"):
        conv(np.zeros(wl.data_shape, np.float32), residual=np.zeros(wl.out_shape, np.float32))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_fused_activation_runs_on_the_gpu(activation, rng):
    """The epilogue's functions (exp, sigmoid, tanh) are device functions on
    the GPU; inputs scaled so the activation sees |y| up to ~100 (exp's
    overflow side included), output poisoned."""
    wl = conv2d(1, 2, 4, 4, 2, 3, padding=1, activation=activation)
    kernel = build(schedule_from_config(wl, default_config(wl, cuda_target()), cuda_target()), target="cuda")
    x = random_inputs(wl, rng)
    data = (x.data * 30).astype(np.float32)
    out = np.full(wl.out_shape, np.nan, np.float32)
    kernel.prepare(x.weight)(data, out=out)
    assert relative_error(out, conv2d_reference(wl, data, x.weight)) < TOLERANCE
