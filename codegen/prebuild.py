"""Cold builds of a model's kernels in parallel worker processes.

Why: a model's first run lowers and compiles every conv kernel, one after
another, each a second or more of single-threaded Python and LLVM (numba
compiles under the GIL, so threads would not help). Workers build the
kernels exactly as ``build`` does, so the lowered nests and the machine code
land in the disk caches, and this process then loads each in milliseconds:
a cold start takes about 1/cores of the time on the kernels. The workers
are fresh interpreters (``python -m convtune.codegen.prebuild``: never a
fork of a process whose OpenMP threads run, and no re-import of the user's
``__main__``); each claims the next unbuilt kernel by creating its claim
file exclusively, so one slow kernel never leaves the others idle. A kernel
a worker fails to build is built again by the caller, whose ``build``
raises its error as usual.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from convtune.codegen.build import bounds_checked, build, is_built
from convtune.codegen.kernel_cache import cache_dir
from convtune.codegen.launch import compile_stage_driver
from convtune.codegen.lowering_cache import store_lowering
from convtune.schedules.state import ScheduleState

JOBS_VARIABLE = "CONVTUNE_COMPILE_JOBS"


def compile_jobs() -> int:
    """``$CONVTUNE_COMPILE_JOBS``, else the cores this process may run on."""
    value = os.environ.get(JOBS_VARIABLE, "")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"{JOBS_VARIABLE}={value!r}: give a number of worker processes") from None
    return len(os.sched_getaffinity(0))


def prebuild(states: Iterable[ScheduleState], jobs: int | None = None) -> int:
    """Build in ``jobs`` worker processes (default ``compile_jobs()``) the
    CPU kernels of ``states`` that the disk caches do not hold yet; returns
    how many that was (0 when fewer than two would be built: a worker's
    start-up would cost more than it saves)."""
    missing = list(dict.fromkeys(pickle.dumps(s) for s in states if not is_built(s)))
    jobs = min(compile_jobs() if jobs is None else jobs, len(missing))
    if jobs < 2:
        return 0
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="prebuild_") as work:
        todo = Path(work) / "states.pkl"
        todo.write_bytes(pickle.dumps(missing))
        # The workers import what this process can: same interpreter, same path.
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env = dict(os.environ, PYTHONPATH=path)
        workers = [subprocess.Popen([sys.executable, "-m", "convtune.codegen.prebuild", str(todo)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(jobs)]
        for w in workers:
            w.wait()
    return len(missing)


def _claim(todo: Path, name: str) -> bool:
    try:
        os.close(os.open(todo.with_name(f"claim_{name}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def work(todo: Path) -> None:
    """A worker: build every kernel of ``todo`` (the caller's pickles of its
    schedules) that no other worker claimed; each lowering is stored under
    the caller's pickle too, which is the key the caller will look up.
    The stage driver is compiled for each buffer count the kernels have, once."""
    for index, pickled in enumerate(pickle.loads(todo.read_bytes())):
        if _claim(todo, str(index)):
            try:
                kernel = build(pickle.loads(pickled))
            except Exception:  # noqa: BLE001 - the caller builds it again and raises the error where it is seen
                continue
            store_lowering(pickled, bounds_checked(), (kernel.loop_nest, kernel.source))
            buffers, serial = len(kernel.loop_nest.params), kernel.compiled.checked
            if _claim(todo, f"driver_{buffers}_{serial}"):
                compile_stage_driver(buffers, serial)


if __name__ == "__main__":
    work(Path(sys.argv[1]))
