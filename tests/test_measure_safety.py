"""A candidate that crashes, hangs, computes a wrong answer or fails to build
is recorded as failed, and tuning goes on."""

import faulty_template
from ir import conv2d
from schedules.target import host_target
from tuner import records
from tuner.dispatch import ApplyHistoryBest
from tuner.measure import MeasureOptions
from tuner.records import ErrorCode
from tuner.search import tune

WL = conv2d(1, 4, 6, 6, 8, 3, padding=1)


def test_misbehaving_candidates_are_recorded_and_tuning_continues(tmp_path):
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
