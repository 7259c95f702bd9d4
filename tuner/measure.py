"""Safe measurement of candidates in a worker process.

A candidate is built, checked against the float64 reference on fresh random
inputs with a NaN-poisoned output, and only then timed: warm-up, then
``repeats`` repeats. By default each timed call finds the caches cold
(``cache_flush``: flushed, then the input re-read), as a layer does inside a
model, and a repeat keeps the median of its few flushed calls; warm timing
(``cold=False``) keeps the mean of an adaptive number of calls back to back
(enough to last ``min_repeat_seconds``), which flatters kernels with large
weights or scratch. Everything runs in a
separate process: a candidate that segfaults kills only the worker, one that
hangs (in compilation or at run time) is killed at the deadline; either way
the failure is returned as a result and a fresh worker takes the next one.
One candidate is measured at a time: two measurements on a 2-core machine
falsify each other. A result says how much of the machine other processes
took while it was timed (``tuner.contention``), so a log tuned beside
something else can be told apart.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable, Optional

from convtune.tuner.contention import CpuMeter
from convtune.tuner.records import ErrorCode


@dataclass(frozen=True)
class MeasureOptions:
    repeats: int = 5
    min_repeat_seconds: float = 0.05
    timeout: float = 120.0
    """Deadline for one candidate: build, check and timing together."""
    plugins: tuple[str, ...] = ()
    """Modules the worker imports first (they may register extra templates)."""
    cold: bool = True
    """Flush the caches before each timed call (model conditions)."""
    cold_calls: int = 5
    """Flushed calls per repeat when cold (each flush reads twice the caches),
    odd so that the repeat's median is one call's time."""
    target: str = "cpu"
    """'cpu', or 'cuda' (``tuner.measure_cuda``: the worker's GPU)."""

    @property
    def cache_mode(self) -> str:
        """How its records say the caches were: "cold" when flushed (the CPU
        default), "warm" when timed back to back (``--warm``, and CUDA, whose
        timing has no cold mode)."""
        return "cold" if self.cold and self.target == "cpu" else "warm"


@dataclass
class MeasureResult:
    costs: list[float] = field(default_factory=list)
    error_code: int = ErrorCode.OK
    error: str = ""
    compile_seconds: float = 0.0
    measure_seconds: float = 0.0
    cache: str = "warm"
    """How the caches were when timed: "cold" (flushed) or "warm"."""
    others_cpu: Optional[float] = None
    """Fraction of the cores other processes kept busy while this was timed
    (``tuner.contention``; None where unknown): above ``CONTENDED`` the
    costs are not to be trusted."""


# ---------------------------------------------------------------- worker side

_references: OrderedDict[str, Any] = OrderedDict()


def _inputs_and_reference(wl):  # type: ignore[no-untyped-def]
    """Random inputs and the float64 reference, computed once per workload per
    worker (fresh in every worker process: never a fixed seed)."""
    import numpy as np

    from convtune.codegen.verify import random_inputs
    from convtune.ir.reference import conv2d_reference

    if wl.key not in _references:
        x = random_inputs(wl, np.random.default_rng())
        _references[wl.key] = (x, conv2d_reference(wl, x.data, x.weight, x.bias, x.residual))
        while len(_references) > 4:
            _references.popitem(last=False)
    return _references[wl.key]


def measure_here(workload: dict, config: dict, options: MeasureOptions) -> MeasureResult:
    """Build, check and time one candidate in this process."""
    if options.target == "cuda":
        from convtune.tuner.measure_cuda import measure_cuda

        return measure_cuda(workload, config, options)
    import numpy as np

    from convtune.codegen import build
    from convtune.ir.workload import Conv2D
    from convtune.schedules.templates import schedule_from_config

    wl = Conv2D.from_dict(workload)
    meter = CpuMeter()  # the whole candidate: a longer span reads the tick counters better
    start = time.perf_counter()
    try:
        kernel = build(schedule_from_config(wl, config))
    except Exception as e:  # noqa: BLE001 - any build failure is a result, not a crash
        return MeasureResult(error_code=ErrorCode.BUILD_ERROR, error=_describe(e))
    compiled = time.perf_counter() - start
    x, ref = _inputs_and_reference(wl)
    out = np.full(wl.out_shape, np.nan, np.float32)
    try:
        conv = kernel.prepare(x.weight, x.bias)
        conv(x.data, residual=x.residual, out=out)
    except Exception as e:  # noqa: BLE001
        return MeasureResult(error_code=ErrorCode.RUNTIME_ERROR, error=_describe(e), compile_seconds=compiled)
    wrong = wrong_answer(out, ref, compiled)
    if wrong is not None:
        return wrong

    def run() -> None:
        conv(x.data, residual=x.residual, out=out)

    costs = _time(run, x.data, options)
    return MeasureResult(costs, compile_seconds=compiled, measure_seconds=time.perf_counter() - start - compiled,
                         cache=options.cache_mode, others_cpu=meter.stop())


def _time(run: Callable[[], None], data: Any, options: MeasureOptions) -> list[float]:
    """Seconds per call of ``run``, ``options.repeats`` times: each the
    median of a few calls after a cache flush (cold), or the mean of a block
    of back-to-back calls (warm). Cold repeats take the median because a
    flushed call lasts a fraction of a millisecond, less than one stall of
    the VM: in a mobilenet_v2 tuning run on a 2-core Xeon VM, 192 of 600
    candidates had a repeat at least twice their fastest (repeats of 5-12
    ms against 0.45), with no other process busy; the mean of four calls
    let one stall double a repeat, and 14 candidates' medians of five such
    repeats were 1.5-7x their fastest: among them the gemm default of the
    960->320 1x1 layer, recorded at 3.0 ms, which timed alone afterwards
    ran in 0.41 ms cold, as fast as the best config of that study."""
    from convtune.tuner.timing import calls_per_block, median, time_calls

    number = calls_per_block(run, options.min_repeat_seconds)
    if options.cold:
        from convtune.schedules.target import host_target
        from convtune.tuner.cache_flush import CacheFlusher

        flush = CacheFlusher(host_target().cores, keep=(data,))
        calls = max(1, min(number, options.cold_calls))
        return [median(time_calls(run, calls, settle=0.0, warmup=0, before=flush)) for _ in range(options.repeats)]
    costs = []
    for _ in range(options.repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            run()
        costs.append((time.perf_counter() - t0) / number)
    return costs


def wrong_answer(out: Any, ref: Any, compile_seconds: float) -> MeasureResult | None:
    """The WRONG_ANSWER result when ``out`` disagrees with the float64 reference, else None."""
    from convtune.codegen.verify import TOLERANCE
    from convtune.ir.reference import relative_error

    err = relative_error(out, ref)
    if err < TOLERANCE:
        return None
    return MeasureResult(error_code=ErrorCode.WRONG_ANSWER, compile_seconds=compile_seconds,
                         error=f"relative error {err:.3g} against the float64 reference (limit {TOLERANCE:g})")


def _describe(e: BaseException) -> str:
    last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(e).__name__}: {e}{where}"


# ---------------------------------------------------------------- parent side


class Measurer:
    """Measures candidates one at a time in a restartable worker process
    (``python -m convtune.tuner.worker``: a fresh interpreter, never a fork of a
    process whose OpenMP threads are running)."""

    def __init__(self, options: MeasureOptions = MeasureOptions()) -> None:
        self.options = options
        self._proc: Any = None
        self._send: Any = None
        self._recv: Any = None

    def _start(self) -> None:
        # The worker imports what this process can: same interpreter, same path.
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env = dict(os.environ, PYTHONPATH=path)
        self._proc = subprocess.Popen([sys.executable, "-m", "convtune.tuner.worker", *self.options.plugins],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._send = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        if not self._recv.poll(300) or self._recv.recv() != "ready":
            self._kill()
            raise RuntimeError("the measurement worker did not start")

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._send.close()
            self._recv.close()
        self._proc = self._send = self._recv = None

    def measure(self, workload: dict, config: dict) -> MeasureResult:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        started = time.perf_counter()
        try:
            self._send.send((workload, config, self.options))
            if self._recv.poll(self.options.timeout):
                return self._recv.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            code = self._proc.wait(5)
            self._kill()
            return MeasureResult(error_code=ErrorCode.CRASH,
                                 error=f"worker process died (exit code {code}) after "
                                       f"{time.perf_counter() - started:.1f} s")
        self._kill()
        return MeasureResult(error_code=ErrorCode.TIMEOUT,
                             error=f"no result within {self.options.timeout:g} s; worker killed")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._send.send(None)
                self._proc.wait(5)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # interrupted or failing: do not wait for the candidate in flight
            self._kill()
