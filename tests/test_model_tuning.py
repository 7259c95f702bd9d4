"""Model tuning: the budget, a minimum for every task, the rest to the tasks
that dominate latency, and resuming without measuring anything twice."""
from __future__ import annotations

import json

import pytest
from model_graphs import fused_conv_graph

from convtune.ir import conv2d
from convtune.tuner import records
from convtune.tuner.measure import MeasureOptions, Measurer, MeasureResult
from convtune.tuner.model_tuning import allot, first_round_trials, tune_model
from convtune.tuner.tasks import extract_tasks

SLOW = conv2d(1, 16, 8, 8, 16, 3, padding=1, activation="relu")
FAST = conv2d(1, 8, 8, 8, 8, 1)
SLOW_RESIDUAL = conv2d(1, 16, 8, 8, 16, 3, padding=1, residual=True)


class FakeMeasurer:
    """Times a config as the workload's FLOPs at a config-dependent speed,
    counts calls, and can raise Ctrl-C at a given call."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at

    def measure(self, workload: dict, config: dict) -> MeasureResult:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        speed = 1e9 * (1 + len(json.dumps(config, sort_keys=True)) % 7)
        cost = conv2d(**{k: workload[k] for k in "NCHWKRS"}, padding=tuple(workload["padding"])).flops / speed
        return MeasureResult([cost, cost], cache="cold")  # as the default measurer times


def measured_pairs(log) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(r.workload_key, r.config_key) for r in records.read(log)]


def test_allot_is_proportional_and_exact() -> None:
    assert allot(10, [0.5, 0.3, 0.2]) == [5, 3, 2]
    assert allot(3, [0.34, 0.33, 0.33]) == [1, 1, 1]
    assert allot(7, [0.9, 0.1]) == [6, 1]
    assert sum(allot(13, [0.1, 0.25, 0.65])) == 13


def test_budget_goes_first_to_every_task_then_to_the_slowest(tmp_path) -> None:
    tasks = extract_tasks(fused_conv_graph([SLOW, FAST, SLOW_RESIDUAL]))
    assert len(tasks) == 2
    log = tmp_path / "m.jsonl"
    result = tune_model(tasks, log=log, trials_per_task=8, strategy="random", seed=0, measurer=FakeMeasurer())
    trials = {t.name: result.result(t).measured for t in tasks}
    assert result.measured == sum(trials.values()) == 16 == len(measured_pairs(log))
    slow, fast = tasks
    assert min(trials.values()) >= first_round_trials(8)
    assert slow.share > 0.9 and trials[slow.name] > 2 * trials[fast.name]
    assert len(set(measured_pairs(log))) == 16


def test_rerun_measures_nothing_and_an_interrupted_run_resumes(tmp_path) -> None:
    tasks = extract_tasks(fused_conv_graph([SLOW, FAST]))
    log = tmp_path / "m.jsonl"
    first = FakeMeasurer(interrupt_at=9)
    with pytest.raises(KeyboardInterrupt):
        tune_model(tasks, log=log, trials_per_task=8, strategy="tpe", seed=1, measurer=first)
    assert len(measured_pairs(log)) == 8
    second = FakeMeasurer()
    result = tune_model(tasks, log=log, trials_per_task=8, strategy="tpe", seed=1, measurer=second)
    assert result.measured == 16 and second.calls == 8
    assert len(measured_pairs(log)) == len(set(measured_pairs(log))) == 16
    third = FakeMeasurer()
    again = tune_model(tasks, log=log, trials_per_task=8, strategy="tpe", seed=1, measurer=third)
    assert third.calls == 0 and again.measured == 16
    assert [again.result(t).best.config for t in tasks] == [result.result(t).best.config for t in tasks]


def test_real_measurements_on_a_tiny_model(tmp_path) -> None:
    """The real worker: compiled, checked against the reference, timed."""
    tasks = extract_tasks(fused_conv_graph([FAST, SLOW]))
    log = tmp_path / "m.jsonl"
    with Measurer(MeasureOptions(repeats=2, min_repeat_seconds=0.002, timeout=60)) as measurer:
        result = tune_model(tasks, log=log, trials_per_task=1, strategy="tpe", seed=0, measurer=measurer)
    recs = list(records.read(log))
    assert len(recs) == 2 and all(r.ok for r in recs)
    assert {r.workload_key for r in recs} == {t.workload.key for t in tasks}
    assert all(result.result(t).best.gflops > 0 for t in tasks)
