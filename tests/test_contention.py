"""The contention meter: what other processes take of the cores while a
candidate is timed (``tuner.contention``)."""
import os
import subprocess
import sys
import time

import pytest

from convtune.tuner.contention import CONTENDED, CpuMeter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat (Linux only)")

HOG = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"


def test_busy_processes_beside_the_meter_are_seen():
    """One spinning process per core, while this process sleeps: most of the
    machine is busy elsewhere, far above the threshold."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)  # the hogs are running
        with CpuMeter() as meter:
            time.sleep(1.0)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert meter.others is not None and meter.others > max(CONTENDED, 0.6), meter.others


def test_this_process_own_work_is_not_counted():
    """Spinning in this process keeps a core busy, but it is our own: the
    meter reads no more than it did a moment before while this process
    slept (the suite's other worker may keep a core busy throughout; were
    our own spinning counted, the reading would rise by a whole core)."""
    with CpuMeter() as idle:
        time.sleep(1.0)
    with CpuMeter() as meter:
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            pass
    assert idle.others is not None and meter.others is not None
    assert meter.others < idle.others + 0.5 / (os.cpu_count() or 1), (idle.others, meter.others)


def test_a_span_too_short_to_read_is_unknown():
    meter = CpuMeter()
    assert meter.stop() is None and meter.others is None
