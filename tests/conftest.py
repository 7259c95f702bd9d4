"""Shared helpers: every kernel a test builds is checked against the float64
reference on fresh random inputs with a NaN-poisoned output buffer. Inputs
are drawn from a new seed on every run (a fixed seed would test one input
forever); failures print the seed to reproduce them."""
from __future__ import annotations

import os
import signal
from pathlib import Path

# Without a GPU (CI) the CUDA tests run on numba's CUDA simulator. numba reads
# the variable when it is first imported (below, through convtune); only
# numba.cuda acts on it, which no CPU code path imports, so it is set for the
# whole run and the tuning workers it starts.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from convtune.codegen import build
from convtune.codegen.verify import TOLERANCE, check_kernel
from convtune.ir.workload import Conv2D
from convtune.schedules import Schedule

ROOT = Path(__file__).resolve().parent.parent
SMALL_CONV = "N=1,C=8,H=8,W=8,K=16,R=3,S=3,stride=1,pad=1"
"""A layer that tunes in seconds, in ``convtune tune --conv`` form."""


def fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**32)


# Hypothesis's own "ci" profile, loaded when CI is set, is derandomized: every
# CI run would check the same draws. This profile is loaded for every run, CI
# or not: new draws each run, no deadline (a kernel compiles in seconds on a
# 2-core machine), and a failure prints the blob that replays it.
settings.register_profile("convtune", derandomize=False, print_blob=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("convtune")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give the run one fresh Hypothesis seed (unless ``--hypothesis-seed``
    names one), so a failing run is replayed by passing it back. Under
    pytest-xdist a worker takes the controller's seed (``workerinput``),
    so the seed printed at the end replays every worker's draws. Ctrl-C
    is made deliverable."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell without job control starts background jobs with Ctrl-C
        # ignored, and Python keeps that: the Ctrl-C tests (and the tuner
        # processes they start, which inherit it) would get no signal.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        config.option.hypothesis_seed = worker["hypothesis_seed"]
    elif config.getoption("hypothesis_seed") is None:
        config.option.hypothesis_seed = str(fresh_seed())


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # type: ignore[no-untyped-def]
    """pytest-xdist's hook, on the controller for each worker it starts."""
    node.workerinput["hypothesis_seed"] = node.config.getoption("hypothesis_seed")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Shown even under ``-q``: the seed that replays this run's draws."""
    if terminalreporter.stats.get("failed"):
        seed = config.getoption("hypothesis_seed")
        terminalreporter.write_line(f"Hypothesis draws of this run: rerun with --hypothesis-seed={seed}")


def assert_correct(sch: Schedule, seed: int | None = None, target: str = "cpu") -> float:
    """Build ``sch`` for ``target`` and check it; ``seed`` reproduces a reported failure."""
    kernel = build(sch, target=target)
    seed = fresh_seed() if seed is None else seed
    err = check_kernel(kernel, np.random.default_rng(seed))
    assert err < TOLERANCE, (f"relative error {err:.3g} for {sch.workload.short()} (inputs: seed={seed})\n"
                             f"{sch}\n{kernel.source}")
    return err


def tiled_schedule(wl: Conv2D, kb: int = 4, qb: int = 3) -> Schedule:
    """Register-tiled, vectorized, unpacked: exercises guards, gathers and
    non-divisible splits on the original NCHW buffers."""
    sch = Schedule(wl)
    ko, ki = sch.split("k", min(kb, wl.K))
    qo, qi = sch.split("q", min(qb, wl.Q))
    sch.reorder("n", ko, "p", qo, "c", "r", "s", qi, ki)
    f = sch.fuse("n", ko)
    sch.parallel(f)
    sch.cache_write(qo)
    sch.unroll(qi)
    sch.vectorize(ki)
    return sch


def packed_schedule(wl: Conv2D, cb: int = 4, kb: int = 8, qb: int = 3) -> Schedule:
    """The NCHW[x]c direct-conv shape: packed data and weights, a register
    tile of qb columns x kb channels, no guards in the reduction."""
    sch = Schedule(wl)
    sch.pack_data(cb)
    sch.pack_weights(cb, kb)
    ko, ki = sch.split("k", min(kb, wl.K))
    qo, qi = sch.split("q", min(qb, wl.Q))
    co, ci = sch.split("c", min(cb, wl.Cg))
    sch.reorder("n", ko, "p", qo, co, "r", "s", ci, qi, ki)
    f = sch.fuse(sch.fuse("n", ko), "p")
    sch.parallel(f)
    sch.cache_write(qo)
    sch.unroll(qi)
    sch.vectorize(ki)
    return sch


@pytest.fixture
def rng() -> np.random.Generator:
    seed = fresh_seed()
    print(f"rng fixture: seed={seed}")  # shown by pytest when the test fails
    return np.random.default_rng(seed)


def gemm_schedule(wl: Conv2D, cb: int = 4, kb: int = 8, tb: int = 3) -> Schedule:
    """im2col + GEMM: output pixels fused into one axis, a register tile of
    tb pixels x kb channels."""
    sch = Schedule(wl)
    sch.pack_data(cb, im2col=True)
    sch.pack_weights(cb, kb)
    pq = sch.fuse("p", "q")
    ko, ki = sch.split("k", min(kb, wl.K))
    to, ti = sch.split(pq, min(tb, wl.P * wl.Q))
    co, ci = sch.split("c", min(cb, wl.Cg))
    sch.reorder("n", ko, to, co, "r", "s", ci, ti, ki)
    f = sch.fuse(sch.fuse("n", ko), to)
    sch.parallel(f)
    sch.cache_write(f)
    sch.unroll(ti)
    sch.vectorize(ki)
    return sch
