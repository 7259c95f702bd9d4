"""CUDA graphs of prepared launches and the launch-overhead report: checked
on a GPU; on the simulator, which has no graphs, the refusal is checked."""
import numpy as np
import pytest

from convtune.codegen import build
from convtune.codegen.cuda_build import cuda_target
from convtune.codegen.cuda_graph import CudaGraph
from convtune.codegen.cuda_launch import simulated
from convtune.codegen.verify import TOLERANCE, random_inputs
from convtune.ir import conv2d, conv2d_reference, relative_error
from convtune.schedules.templates import default_config, schedule_from_config

on_gpu = pytest.mark.skipif(simulated(), reason="CUDA graphs need a GPU")
FIRST = conv2d(1, 4, 6, 6, 8, 3, padding=1, bias=True, activation="relu")
SECOND = conv2d(1, 8, 6, 6, 4, 1, residual=True)


def _prepared(wl, rng):
    kernel = build(schedule_from_config(wl, default_config(wl, cuda_target()), cuda_target()), target="cuda")
    x = random_inputs(wl, rng)
    return kernel.prepare(x.weight, x.bias), x


def test_the_simulator_refuses_graphs_in_one_line(rng):
    if not simulated():
        pytest.skip("this machine has a GPU")
    conv, _ = _prepared(FIRST, rng)
    with pytest.raises(RuntimeError, match="cuda graph: CUDA graphs need a GPU"):
        CudaGraph([conv])


@on_gpu
def test_a_graph_of_two_convs_replays_the_chain(rng):
    from numba import cuda

    first, x1 = _prepared(FIRST, rng)
    second, x2 = _prepared(SECOND, rng)
    data = cuda.to_device(x1.data)
    middle = cuda.device_array(FIRST.out_shape, np.float32)
    residual = cuda.to_device(x2.residual)
    out = cuda.to_device(np.full(SECOND.out_shape, np.nan, np.float32))
    first.bind(data, None, middle)
    second.bind(middle, residual, out)
    graph = CudaGraph([first, second])
    assert graph.launches == 2
    for sign in (1, -1):  # new input values in the same buffer, the graph replayed
        data.copy_to_device(sign * x1.data)
        graph.replay()
        graph.synchronize()
        hidden = conv2d_reference(FIRST, sign * x1.data, x1.weight, x1.bias).astype(np.float32)
        ref = conv2d_reference(SECOND, hidden, x2.weight, None, x2.residual)
        assert relative_error(out.copy_to_host(), ref) < TOLERANCE


@on_gpu
def test_launch_overhead_report():
    from convtune.tuner.cuda_overhead import launch_overhead

    report = launch_overhead(runs=200)
    print(report)
    assert report["prepared_us"] < report["dispatcher_us"]
    assert report["graph_us"] < report["dispatcher_us"]


def test_overhead_report_says_in_one_line_that_it_needs_a_gpu():
    if not simulated():
        pytest.skip("this machine has a GPU")
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "convtune.tuner.cuda_overhead"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip() == "cuda_overhead: needs a GPU: numba's CUDA simulator has no launch overhead to measure"
