"""Tune a whole model: its tasks, with the trial budget spread by where the
model's time goes (after Ansor's task scheduler, Zheng et al., OSDI 2020).

The budget is ``trials_per_task`` times the number of tasks. A first round
gives every task a minimum (a quarter of the average, at least one trial:
the default config and a few samples), so every task has a measured time.
The rest is handed out in rounds, each in proportion to the tasks' current
shares of the model's conv time (count x best time, ``tasks.estimate_shares``):
trials go to the layers that dominate latency, and shift as tuning speeds
them up. A task whose search stops early (its space is exhausted) gives its
allotment back to the others. Once the budget is spent, each transposed conv
is timed whole with each lowering on its tuned sub-convs, and the fastest is
recorded beside the log (``tuner.lowering_log``).

The only state is the log and the Optuna studies that ``search.tune`` keeps:
each round's allotment is computed from what the studies have measured, so a
rerun of the same command after an interruption continues where it stopped,
and once the budget is spent it measures nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from convtune.ir.workload import Conv2D
from convtune.schedules.target import CpuTarget, CudaTarget
from convtune.tuner.conv_transpose_timing import choose_lowering
from convtune.tuner.dispatch import ApplyHistoryBest
from convtune.tuner.measure import MeasureOptions, Measurer
from convtune.tuner.search import Progress, TuneResult, tune
from convtune.tuner.tasks import Task, estimate_shares

FIRST_ROUND_FRACTION = 0.25
ROUNDS = 8
"""The budget after the first round is spent in about this many rounds."""


@dataclass
class ModelTuneResult:
    tasks: list[Task]
    """With shares from the measured best times."""
    results: dict[str, TuneResult]
    """Task workload key -> the latest ``tune`` result of its study."""
    budget: int
    lowerings: dict[str, str] = field(default_factory=dict)
    """Transposed conv workload key -> the lowering measured fastest with the tuned sub-convs."""

    @property
    def measured(self) -> int:
        return sum(r.measured for r in self.results.values())

    def result(self, task: Task) -> TuneResult:
        return self.results[task.workload.key]


def first_round_trials(trials_per_task: int) -> int:
    return max(1, math.floor(trials_per_task * FIRST_ROUND_FRACTION))


def allot(n: int, weights: Sequence[float]) -> list[int]:
    """``n`` trials split in proportion to ``weights`` (largest remainders
    first, earlier entries winning ties), summing to ``n`` exactly."""
    total = sum(weights)
    raw = [n * w / total for w in weights] if total > 0 else [n / len(weights)] * len(weights)
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])
    for i in by_remainder[:n - sum(counts)]:
        counts[i] += 1
    return counts


def tune_model(
    tasks: Sequence[Task],
    *,
    log: str | Path,
    trials_per_task: int,
    strategy: str = "tpe",
    storage: Optional[str] = None,
    seed: Optional[int] = None,
    options: MeasureOptions = MeasureOptions(),
    measurer: Optional[Measurer] = None,
    device: Optional[CpuTarget | CudaTarget] = None,
    on_target: Callable[[Task, int], None] = lambda task, trials: None,
    on_progress: Callable[[Task, Progress], None] = lambda task, p: None,
    on_done: Callable[[Task, TuneResult], None] = lambda task, r: None,
) -> ModelTuneResult:
    """Tune ``tasks`` (from ``tasks.extract_tasks``) with ``search.tune``, one
    study per task, ``trials_per_task`` trials per task on average, on
    ``device`` (default this CPU; a ``CudaTarget`` tunes the CUDA templates,
    with ``options.target`` "cuda" to measure on the GPU).
    ``on_target(task, trials)`` says when a task's trial target is raised,
    ``on_progress(task, progress)`` reports each of its trials and
    ``on_done(task, result)`` the end of each of its ``tune`` calls."""
    if not tasks:
        raise ValueError("tune_model: no tasks")
    budget = trials_per_task * len(tasks)
    results: dict[str, TuneResult] = {}
    exhausted: set[str] = set()
    own_measurer = measurer is None
    measurer = measurer or Measurer(options)

    def run(task: Task, target: int) -> None:
        on_target(task, target)
        result = tune(task.workload, log=log, strategy=strategy, n_trials=target, storage=storage, seed=seed,
                      target=device, options=options, measurer=measurer, on_progress=lambda p: on_progress(task, p))
        results[task.workload.key] = result
        on_done(task, result)
        if result.measured < target:
            exhausted.add(task.workload.key)

    def best_seconds(wl: Conv2D) -> Optional[float]:
        best = results[wl.key].best if wl.key in results else None
        return best.cost if best is not None else None

    try:
        for task in tasks:
            run(task, first_round_trials(trials_per_task))
        chunk = max(1, math.ceil((budget - len(tasks) * first_round_trials(trials_per_task)) / ROUNDS))
        while True:
            estimate_shares(tasks, best_seconds)
            remaining = budget - sum(r.measured for r in results.values())
            active = [t for t in tasks if t.workload.key not in exhausted]
            if remaining <= 0 or not active:
                break
            extra = allot(min(remaining, max(chunk, len(active))), [t.share for t in active])
            for task, n in sorted(zip(active, extra), key=lambda te: -te[0].share):
                if n:
                    run(task, results[task.workload.key].measured + n)
    finally:
        if own_measurer:
            measurer.close()
    # the lowerings are timed on this CPU; on a GPU a transposed conv runs the untuned default (sub-pixel)
    transposed = [] if isinstance(device, CudaTarget) else [t for task in tasks for t in task.transposed]
    lowerings: dict[str, str] = {}
    if transposed:
        dispatcher = ApplyHistoryBest(log)  # one read of the log serves every layer
        lowerings = {wl.key: choose_lowering(wl, dispatcher, log) for wl in dict.fromkeys(transposed)}
    return ModelTuneResult(list(tasks), results, budget, lowerings)
