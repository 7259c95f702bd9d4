"""A candidate that crashes, hangs, computes a wrong answer or fails to build
is recorded as failed, and tuning goes on."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import TEMPLATES
from convtune.tuner import records
from convtune.tuner.dispatch import ApplyHistoryBest
from convtune.tuner.measure import MeasureOptions
from convtune.tuner.records import ErrorCode
from convtune.tuner.search import tune

WL = conv2d(1, 4, 6, 6, 8, 3, padding=1)


@pytest.fixture
def faulty_template():  # type: ignore[no-untyped-def]
    """The plugin, registered in this process for one test only: imported at
    collection, it stayed in every xdist worker's registry, and a model tuned
    in-process by a later test (tests/test_cli_model.py) drew its candidates,
    which that tuner's worker, not given the plugin, could not build."""
    import faulty_template

    TEMPLATES[faulty_template.NAME] = faulty_template.TEMPLATE
    yield faulty_template
    del TEMPLATES[faulty_template.NAME]


def test_misbehaving_candidates_are_recorded_and_tuning_continues(tmp_path, faulty_template):
    log = tmp_path / "log.jsonl"
    space = {faulty_template.NAME: faulty_template.space(WL, host_target())}
    result = tune(WL, log=log, strategy="grid", n_trials=5, spaces=space, seed=0,
                  options=MeasureOptions(timeout=15, repeats=2, min_repeat_seconds=0.005,
                                         plugins=("faulty_template",)))
    assert result.measured == 5 and result.failures == 4
    by_mode = {r.config["mode"]: r for r in records.read(log)}
    assert set(by_mode) == set(faulty_template.MODES)
    assert by_mode["ok"].ok and by_mode["ok"].error_code == ErrorCode.OK
    assert by_mode["crash"].error_code == ErrorCode.CRASH and "exit code -11" in by_mode["crash"].error
    assert by_mode["hang"].error_code == ErrorCode.TIMEOUT and "15 s" in by_mode["hang"].error
    assert by_mode["wrong"].error_code == ErrorCode.WRONG_ANSWER and "relative error" in by_mode["wrong"].error
    assert by_mode["raise"].error_code == ErrorCode.BUILD_ERROR and "a bug in the template" in by_mode["raise"].error
    for mode in ("crash", "hang", "wrong", "raise"):
        assert by_mode[mode].costs == [] and not by_mode[mode].ok
    assert result.best is not None and result.best.config == {"algorithm": "faulty", "mode": "ok"}
    assert ApplyHistoryBest(log).config_for(WL) == ({"algorithm": "faulty", "mode": "ok"}, "tuned")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker's parent-death signal is Linux's prctl")
def test_worker_does_not_outlive_a_killed_tuner():
    """kill -9 of the tuner alone (not its process group) still ends the
    worker: no candidate keeps running on after its tuning run is gone."""
    script = ("import sys, time\nfrom tuner.measure import Measurer\nm = Measurer()\nm._start()\n"
              "print(m._proc.pid, flush=True)\ntime.sleep(120)\n")
    root = Path(__file__).resolve().parent.parent
    tuner = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    worker = int(tuner.stdout.readline())
    os.kill(tuner.pid, signal.SIGKILL)
    tuner.wait()
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{worker}").exists() and "Z" not in _state(worker):
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists() or "Z" in _state(worker)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return "gone"
