"""A model's cold kernels built in parallel worker processes, then loaded here."""
import importlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import fresh_seed, packed_schedule

from convtune.codegen import build
from convtune.codegen.build import is_built
from convtune.codegen.prebuild import compile_jobs, prebuild
from convtune.codegen.verify import check_kernel
from convtune.ir import conv2d
from convtune.schedules import Schedule
from convtune.schedules.state import BlockedLayout

# Shapes no other test builds, so this process has not compiled them already.
WORKLOADS = [conv2d(1, 7, 9, 13, 11, 3, padding=1, bias=True), conv2d(2, 5, 6, 10, 9, 1, activation="relu")]


def _lower_again(*args: object) -> None:
    raise AssertionError("this process lowered a schedule a worker had lowered")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVTUNE_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_workers_build_each_cold_kernel_once_and_this_process_only_loads_it(cache, monkeypatch) -> None:
    states = [packed_schedule(wl, kb=4).state for wl in WORKLOADS]
    assert not any(is_built(s) for s in states)
    assert prebuild([*states, states[0]], jobs=2) == 2  # a repeated schedule is one kernel
    assert all(is_built(s) for s in states)
    monkeypatch.setattr(importlib.import_module("convtune.codegen.build"), "lower_schedule", _lower_again)
    seed = fresh_seed()
    for s in states:
        kernel = build(s)
        assert kernel.compiled.disk_cache_hit, "this process compiled what a worker should have"
        err = check_kernel(kernel, np.random.default_rng(seed))
        assert err < 1e-4, f"relative error {err:.3g} (inputs: seed={seed})"
    assert prebuild(states, jobs=2) == 0  # nothing cold is left: no worker starts
    assert not list(cache.glob("prebuild_*")), "the workers' claims were left in the cache"


def test_workers_also_compile_the_stage_driver_for_each_buffer_count(cache) -> None:
    """A model's driver calls the parallel stage driver compiled for each
    kernel's buffer count: a process after the workers loads it, compiles none."""
    states = [packed_schedule(wl, kb=4).state for wl in WORKLOADS]
    assert prebuild(states, jobs=2) == 2
    counts = sorted({len(build(s).loop_nest.params) for s in states})
    probe = ("import sys\n"
             "from convtune.codegen.launch import compile_stage_driver, run_stages\n"
             "for n in map(int, sys.argv[1:]):\n"
             "    compile_stage_driver(n)\n"
             "stats = run_stages().stats\n"
             "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n")
    run = subprocess.run([sys.executable, "-c", probe, *map(str, counts)], env=dict(os.environ),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(len(counts)), "0"], f"buffer counts {counts}: {run.stdout}"


def test_a_schedule_whose_pickle_changes_in_the_worker_is_found_here(cache, monkeypatch) -> None:
    """A blocked residual's layout is keyed 'residual', a string this process
    shares with the workload's field name and a worker's unpickled copy does
    not: the worker's pickle of the schedule differs, yet its lowering must be
    found under this process's key (resnet18's residual convs were lowered twice)."""
    wl = conv2d(1, 7, 9, 13, 12, 3, padding=1, bias=True, residual=True)
    states = []
    for kb in (4, 2):
        sch = packed_schedule(wl, kb=kb)
        sch.io_layout(residual=BlockedLayout(wl.out_shape, kb))
        states.append(sch.state)
    assert pickle.dumps(states[0]) != pickle.dumps(pickle.loads(pickle.dumps(states[0])))
    assert prebuild(states, jobs=2) == 2
    monkeypatch.setattr(importlib.import_module("convtune.codegen.build"), "lower_schedule", _lower_again)
    assert all(build(s).compiled.disk_cache_hit for s in states)


def test_a_kernel_that_cannot_build_is_left_to_the_caller_to_report(cache) -> None:
    gpu = Schedule(WORKLOADS[1])
    gpu.bind("n", "blockIdx.x")  # a GPU schedule: a CPU build refuses it
    good = packed_schedule(WORKLOADS[0], kb=4).state
    assert prebuild([gpu.state, good], jobs=2) == 2
    assert is_built(good) and not is_built(gpu.state)
    with pytest.raises(ValueError, match="build it with target='cuda'"):
        build(gpu.state)


def test_one_cold_kernel_or_one_job_starts_no_worker(cache) -> None:
    states = [packed_schedule(wl, kb=4).state for wl in WORKLOADS]
    assert prebuild(states[:1], jobs=2) == 0 and prebuild(states, jobs=1) == 0
    assert not any(is_built(s) for s in states)


def test_jobs_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CONVTUNE_COMPILE_JOBS", "3")
    assert compile_jobs() == 3
    monkeypatch.setenv("CONVTUNE_COMPILE_JOBS", "many")
    with pytest.raises(ValueError, match="CONVTUNE_COMPILE_JOBS='many': give a number"):
        compile_jobs()
    monkeypatch.delenv("CONVTUNE_COMPILE_JOBS")
    assert compile_jobs() >= 1
