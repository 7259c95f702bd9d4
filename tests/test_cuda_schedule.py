"""GPU schedule primitives, device-limit checks, template registration and the
CUDA renderer's source: everything about a CUDA schedule that needs no device."""
import re

import pytest

from convtune.codegen import build, source
from convtune.ir import conv2d
from convtune.schedules import Schedule
from convtune.schedules.gpu import check_limits, footprint, launch_dims, shared_bytes
from convtune.schedules.state import ScheduleError
from convtune.schedules.target import CudaTarget
from convtune.schedules.templates import CUDA_TEMPLATES, default_config, schedule_from_config, search_space

WL = conv2d(1, 8, 10, 10, 16, 3, padding=1, bias=True, activation="relu")
GPU = CudaTarget("test GPU", (8, 0))


def gpu_schedule(wl=WL, threads=(4, 5, 5), shared=True) -> Schedule:
    """One block per (4 channels x 5 x 5 pixels), one thread per output, the
    input channels staged through shared memory four at a time."""
    sch = Schedule(wl)
    ko, ki = sch.split("k", threads[0])
    po, pi = sch.split("p", threads[1])
    qo, qi = sch.split("q", threads[2])
    sch.reorder("n", ko, po, qo, ki, pi, qi)
    for axis, tag in ((ko, "blockIdx.z"), (po, "blockIdx.y"), (qo, "blockIdx.x"),
                      (ki, "threadIdx.z"), (pi, "threadIdx.y"), (qi, "threadIdx.x")):
        sch.bind(axis, tag)
    sch.cache_write(qi)
    if shared:
        co, _ = sch.split("c", 4)
        sch.cache_read("data", "shared", co)
        sch.cache_read("weight", "shared", co)
    return sch


def test_launch_dims_and_footprint_follow_the_bindings():
    sch = gpu_schedule()
    assert launch_dims(sch.state) == ((2, 2, 4), (5, 5, 4))
    co = sch.axes[7]
    assert footprint(sch.state, "data", co)[1] == (1, 4, 7, 7)  # 4 channels x (5 + 2 halo) rows x 7 columns
    assert footprint(sch.state, "weight", co)[1] == (4, 4, 3, 3)
    assert shared_bytes(sch.state) == 4 * (4 * 7 * 7 + 4 * 4 * 9)


def test_cpu_search_space_has_no_cuda_templates():
    assert not set(search_space(WL)) & set(CUDA_TEMPLATES)
    assert set(search_space(WL, GPU)) == {"cuda_direct", "cuda_gemm"}
    depthwise = conv2d(1, 8, 10, 10, 8, 3, padding=1, groups=8)
    assert set(search_space(depthwise, GPU)) == {"cuda_depthwise"}
    assert default_config(depthwise, GPU)["algorithm"] == "cuda_depthwise"
    with pytest.raises(ScheduleError, match=r"unknown algorithm '\w+' \(one of cuda_direct, cuda_depthwise, cuda_gemm\)"):
        schedule_from_config(WL, default_config(WL), GPU)


@pytest.mark.parametrize("steps,message", [
    (lambda s: s.bind("c", "threadIdx.x"), "bind: 'c' is a reduction axis"),
    (lambda s: s.bind("k", "warp"), "bind: tag 'warp' is not one of"),
    (lambda s: (s.bind("k", "blockIdx.x"), s.bind("p", "blockIdx.x")), "bind: 'k' is already bound to blockIdx.x"),
    (lambda s: s.bind("p", "blockIdx.x"), "bind: 'p' is bound to blockIdx.x, but loop 'k' is outside it"),
    (lambda s: (s.parallel("n"), s.bind("k", "blockIdx.x")), "bind: 'n' is a parallel CPU loop"),
    (lambda s: s.cache_read("data", "shared", "c"), "cache_read: bind block and thread axes first"),
    (lambda s: (s.bind("k", "blockIdx.x"), s.cache_read("bias", "shared", "c")), "cache_read: buffer 'bias'"),
    (lambda s: (s.bind("k", "blockIdx.x"), s.cache_read("data", "local", "c")), "cache_read: scope 'local'"),
    (lambda s: (s.bind("k", "blockIdx.x"), s.cache_read("data", "shared", "k")),
     "cache_read: attach point 'k' must be inside the bound axes"),
    (lambda s: (s.pack_data(4), s.bind("k", "blockIdx.x"), s.cache_read("data", "shared", "c")),
     "cache_read: data is packed"),
])
def test_gpu_primitive_errors_name_the_primitive(steps, message):
    with pytest.raises(ScheduleError, match=re.escape(message)):
        steps(Schedule(WL))


def test_splitting_a_cache_read_attach_point_is_refused():
    sch = gpu_schedule()
    with pytest.raises(ScheduleError, match="cache_read attach point of data"):
        sch.split(sch.axes[7], 2)


def test_limits_refuse_a_schedule_before_it_compiles():
    check_limits(gpu_schedule().state, GPU)
    with pytest.raises(ScheduleError, match=r"bind: 1600 threads per block \(40 x 40 x 1\) exceed .* limit of 1024"):
        check_limits(gpu_schedule(conv2d(1, 4, 40, 40, 1, 3, padding=1), threads=(1, 40, 40), shared=False).state,
                     GPU)
    small = CudaTarget("small GPU", (8, 0), max_shared_memory_per_block=1024)
    with pytest.raises(ScheduleError, match=r"cache_read: 1360 bytes of shared memory per block exceed .* 1024"):
        check_limits(gpu_schedule().state, small)
    few = CudaTarget("few registers", (8, 0), registers_per_block=2048)
    with pytest.raises(ScheduleError, match=r"cache_write: 100 threads x about 33 registers exceed the 2048"):
        check_limits(gpu_schedule().state, few)


def test_cuda_template_space_refuses_too_many_threads():
    space = search_space(conv2d(1, 4, 32, 32, 32, 3, padding=1), CudaTarget("tiny", (8, 0), max_threads_per_block=64))
    config = dict(space["cuda_direct"].default, tile_f="1x16x1", tile_y="1x8x1", tile_x="1x16x1")
    assert "threads and registers must fit" in space["cuda_direct"].invalid_reason(config)


def test_cpu_build_refuses_a_gpu_schedule():
    with pytest.raises(ValueError, match="target: this schedule binds GPU blocks and threads"):
        build(gpu_schedule())


def test_cuda_source_is_readable_with_literal_sizes_and_launch_config():
    src = source(gpu_schedule(), target="cuda")
    assert '@cuda.jit("void(float32[::1], float32[::1], float32[::1], float32[::1])"' in src
    assert 'STAGES = (("stage0", (2, 2, 4), (5, 5, 4)),)' in src
    assert "k_o = cuda.blockIdx.z" in src and "q_i = cuda.threadIdx.x" in src
    assert src.count("cuda.syncthreads()") == 2
    assert "data_shared = cuda.shared.array(196, np.float32)" in src
    assert "def stage0(data, weight, bias, out):" in src  # shapes are literals, not arguments


def test_split_k_sums_partial_results_in_a_last_stage():
    wl = conv2d(1, 8, 4, 4, 8, 3, padding=1, bias=True)
    config = {"algorithm": "cuda_gemm", "tile_k": "1x4x2", "tile_pq": "1x8x2", "split_k": 4, "tile_rc": 2,
              "unroll": True, "shared": "weight"}
    src = source(schedule_from_config(wl, config, GPU), target="cuda")
    assert 'STAGES = (("stage0", (1, 1, 4), (8, 4, 1)), ("stage1", (1, 1, 1), (128, 1, 1)),)' in src
    assert "def stage1(data, weight, bias, out, partial):" in src
    assert "(partial[i0] + partial[i0 + 128]) + partial[i0 + 256]) + partial[i0 + 384])" in src


def test_only_one_reduction_axis_splits_over_blocks():
    sch = Schedule(WL)
    sch.reorder("c", "r", "n", "k", "p", "q", "s")
    sch.bind("c", "blockIdx.z")
    with pytest.raises(ScheduleError, match="bind: reduction axis 'c' is already split over blocks"):
        sch.bind("r", "blockIdx.y")
