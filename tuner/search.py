"""``tune``: search a workload's knob space with Optuna, measuring safely.

Strategies:
- ``grid``: Optuna's GridSampler over the index of every valid config (the
  knob product minus what the constraints refuse), so no grid point is an
  invalid config; a warning says when the grid is larger than the budget.
- ``random``: RandomSampler over the structured space.
- ``tpe``: TPESampler with ``multivariate``, ``group`` and ``constant_liar``
  set explicitly (their defaults changed between Optuna versions).
The structured space is ``algorithm`` plus ``<algorithm>.<knob>`` for each
knob of the chosen template (a conditional space). The default config is
enqueued as the first trial, every other template's default after it
(``_first_trials``). A sampled config that breaks a constraint is
refused before compiling and costs no measurement and no budget.

The study lives in a SQLite file next to the log (or ``storage``, e.g. a
PostgreSQL URL shared by workers on several machines); the log doubles as a
cache of measured configs, so rerunning the same command resumes without
measuring anything twice. A sample that repeats a config the study measured
(failures included) or another worker is measuring is not measured again: the
next trial is steered to a random unmeasured config instead. A trial
interrupted before its measurement was logged is measured again on resume.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.trial import TrialState

from convtune.ir.workload import Conv2D
from convtune.schedules.space import Config, Space
from convtune.schedules.target import CpuTarget, host_target
from convtune.schedules.templates import default_config, invalid_reason, search_space
from convtune.tuner import records
from convtune.tuner.contention import CONTENDED
from convtune.tuner.interrupts import CtrlCGate
from convtune.tuner.measure import MeasureOptions, Measurer, MeasureResult
from convtune.tuner.records import ErrorCode, Record

STRATEGIES = ("grid", "random", "tpe")
MAX_REFUSALS = 50
"""Consecutive refused samples (invalid or duplicate) before giving up."""
STEER_AFTER = 5
"""Consecutive invalid samples after which the next trial is a random valid,
unmeasured config (a sampler stuck in an invalid region costs little)."""
INVALID_SCORE = 0.0
"""The value an invalid sample is told with: the worst any measured config
scores, so TPE learns where register tiles overflow. Told as failed instead,
it teaches TPE nothing; it once proposed 259 invalid tiles in a row."""


class ContentionWarning(UserWarning):
    """Candidates were timed while other processes competed for the cores."""


@dataclass
class Progress:
    measured: int
    budget: int
    best_gflops: float
    failures: int
    last: Optional[Record]
    reused: bool
    elapsed: float


@dataclass
class TuneResult:
    workload: Conv2D
    study_name: str
    measured: int
    """Candidates measured in this study so far (this run and earlier ones)."""
    failures: int
    best: Optional[Record]
    stopped_reason: str


def default_storage(log: str | Path) -> str:
    """``logs/x.jsonl`` -> ``sqlite:///logs/x.optuna.db``."""
    p = Path(log)
    return f"sqlite:///{p.with_name(p.stem + '.optuna.db')}"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _grid(spaces: dict[str, Space]) -> list[Config]:
    return [{"algorithm": name, **c} for name, space in spaces.items() for c in space.configs()]


def _params(config: Config, grid: Optional[list[Config]]) -> dict[str, Any]:
    """Optuna parameters that encode ``config``."""
    if grid is not None:
        return {"config": grid.index(config)}
    algo = config["algorithm"]
    return {"algorithm": algo, **{f"{algo}.{k}": v for k, v in config.items() if k != "algorithm"}}


def _suggest(trial: optuna.Trial, spaces: dict[str, Space], grid: Optional[list[Config]]) -> Config:
    if grid is not None:
        return dict(grid[trial.suggest_categorical("config", list(range(len(grid))))])
    algo = trial.suggest_categorical("algorithm", list(spaces))
    return {"algorithm": algo, **{k.name: trial.suggest_categorical(f"{algo}.{k.name}", list(k.values))
                                  for k in spaces[algo].knobs}}


class _AskTellGrid(optuna.samplers.GridSampler):
    """GridSampler for the ask-and-tell loop: Optuna's calls ``study.stop()``
    when the grid is exhausted, which only works inside ``study.optimize``;
    the tuning loop checks ``is_exhausted`` itself."""

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        pass


def make_sampler(strategy: str, grid: Optional[list[Config]], seed: Optional[int]) -> optuna.samplers.BaseSampler:
    if strategy == "grid":
        return _AskTellGrid({"config": list(range(len(grid or [])))}, seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=10)
    raise ValueError(f"strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")


def _open_study(name: str, storage: str | optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler,
                attempts: int = 5) -> optuna.Study:
    """Create or load the study. Workers started together on a fresh database
    race to create Optuna's tables; the loser retries after a short wait."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize",
                                       load_if_exists=True)
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(study: optuna.Study, trial_id: int, rec: Record, reused: bool) -> None:
    """Close a trial with its measured record (the log is the ground truth)."""
    storage = study._storage
    storage.set_trial_user_attr(trial_id, "measured", True)
    storage.set_trial_user_attr(trial_id, "reused", reused)
    if rec.ok:
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [rec.gflops])
    else:
        storage.set_trial_user_attr(trial_id, "error", f"{ErrorCode(rec.error_code).name}: {rec.error}")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _close_stale_trials(study: optuna.Study, logged: dict[str, Record]) -> None:
    """Trials left RUNNING by a killed process of this host: completed from the
    log when their record made it there, else failed, so a resumed run neither
    waits for them nor measures their config again."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host and not _alive(int(t.user_attrs.get("pid", 0))):
            study._storage.set_trial_user_attr(t._trial_id, "stale", True)
            rec = logged.get(t.user_attrs.get("config", ""))
            if rec is not None:
                _finish(study, t._trial_id, rec, reused=False)
            else:
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _record(wl: Conv2D, target: CpuTarget, config: Config, result: MeasureResult, study: str, trial: int) -> Record:
    return Record(wl.to_dict(), target.to_dict(), config, result.costs, int(result.error_code), result.error,
                  result.compile_seconds, versions=records.versions(),
                  extra={"study": study, "trial": trial, "measure_seconds": result.measure_seconds,
                         "cache": result.cache,
                         **({} if result.others_cpu is None else {"others_cpu": round(result.others_cpu, 3)})})


def _completed_key(config: Config, spaces: dict[str, Space]) -> str:
    """A logged config's key in the current space: a knob added since it was
    logged reads as the value its absence means (what was measured)."""
    space = spaces.get(config.get("algorithm", ""))
    return json.dumps(config if space is None else space.complete(config), sort_keys=True)


def _first_trials(workload: Conv2D, target: CpuTarget, spaces: dict[str, Space],
                  cache: dict[str, Record]) -> list[Config]:
    """What a new study tries first: the default config; then, when the log
    already has measurements of the workload (from a study of an older space,
    say, before a knob was added), its best config, and that config with each
    value of each knob it lacked, so a space that grew starts from the best it
    had rather than from scratch; then every other template's default. The
    algorithm is one categorical knob among many, and a sampler given a few
    dozen trials settles on the template of its first lucky sample: tuning
    mobilenet_v2 at 20 trials a task, the 32->16 1x1 at 112x112 never tried
    ``pointwise_w`` but once, with a poor config (237 us), while that
    template's default took 39 us warm and 88 cold against 74 and 143 for the
    config chosen."""
    firsts = [default_config(workload, target)]
    measured = [r for r in cache.values() if r.ok and r.config.get("algorithm") in spaces]
    if measured:
        best = min(measured, key=lambda r: r.cost).config
        space = spaces[best["algorithm"]]
        completed = space.complete(best)
        firsts.append(completed)
        knobs = {k.name: k for k in space.knobs}
        firsts += [{**completed, name: value} for name in sorted(completed.keys() - best.keys())
                   for value in knobs[name].values]
    firsts += [{"algorithm": name, **space.default} for name, space in spaces.items()]
    valid = [c for c in firsts if c["algorithm"] in spaces and not spaces[c["algorithm"]].invalid_reason(c)]
    return [c for i, c in enumerate(valid) if c not in valid[:i]]


def _warn_if_contended(result: MeasureResult, workload: Conv2D) -> bool:
    """Warn (once a run: True once warned) when other processes kept more
    than ``CONTENDED`` of the cores busy while a candidate was timed."""
    if result.others_cpu is None or result.others_cpu <= CONTENDED:
        return False
    warnings.warn(f"{workload.short()}: other processes kept {result.others_cpu:.0%} of the cores busy while "
                  "a candidate was timed; its time is inflated and configs may be ranked wrongly. Tune on a "
                  "quiet machine (records carry extra.others_cpu)", ContentionWarning, stacklevel=3)
    return True


def tune(
    workload: Conv2D,
    *,
    log: str | Path,
    strategy: str = "tpe",
    n_trials: int = 100,
    storage: str | optuna.storages.BaseStorage | None = None,
    seed: Optional[int] = None,
    target: Optional[CpuTarget] = None,
    spaces: Optional[dict[str, Space]] = None,
    options: MeasureOptions = MeasureOptions(),
    on_progress: Callable[[Progress], None] = lambda p: None,
    measurer: Optional[Measurer] = None,
) -> TuneResult:
    """Measure up to ``n_trials`` candidates of ``workload`` (counting those an
    earlier, interrupted run of the same study measured) and log each."""
    target = target or host_target()
    spaces = spaces or search_space(workload, target)
    grid = _grid(spaces) if strategy == "grid" else None
    if grid is not None and len(grid) > n_trials:
        warnings.warn(f"grid of {len(grid)} valid configs is larger than the budget of {n_trials} trials; "
                      "only part of it will be measured", stacklevel=2)
    space_id = _digest(json.dumps({k: repr(v.knobs) for k, v in spaces.items()}, sort_keys=True), 8)
    # Timed warm, a config looks faster than it runs in a model: a warm CPU run
    # is a study of its own and reuses only warm records.
    warm_cpu = options.target == "cpu" and options.cache_mode == "warm"
    study_name = (f"convtune-{_digest(workload.key, 12)}-{_digest(target.key, 6)}-{strategy}-{space_id}"
                  + ("-warm" if warm_cpu else ""))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    study = _open_study(study_name, storage or default_storage(log), make_sampler(strategy, grid, seed))
    study.set_user_attr("workload", workload.key)
    study.set_user_attr("target", target.key)
    cache: dict[str, Record] = {}
    if Path(log).exists():
        for r in records.read(log):
            if r.workload_key == workload.key and r.target_key == target.key and r.cache == options.cache_mode:
                cache.setdefault(_completed_key(r.config, spaces), r)
    _close_stale_trials(study, cache)
    if not study.get_trials(deepcopy=False):
        for config in _first_trials(workload, target, spaces, cache):
            study.enqueue_trial(_params(config, grid), skip_if_exists=True)

    own_measurer = measurer is None
    measurer = measurer or Measurer(options)
    host, pid, start = socket.gethostname(), os.getpid(), time.perf_counter()

    valid = grid if grid is not None else _grid(spaces)
    valid_keys = [json.dumps(c, sort_keys=True) for c in valid]
    rng = random.Random(seed)
    refusals = 0
    warned = False
    stopped = "budget"
    trial: Optional[optuna.Trial] = None
    # One read of the study's trials after each ask and each measurement
    # serves every check until the next: with 500 trials a read is ~9 ms.
    trials = study.get_trials(deepcopy=False)
    ctrl_c = CtrlCGate()
    with ctrl_c.held():  # Ctrl-C stops a measurement, never the bookkeeping around it
        try:
            while len(_measured(trials)) < n_trials:
                trial = None
                # Not the GridSampler's own test: it counts an interrupted, never
                # measured grid point as visited.
                if grid is not None and set(valid_keys) <= _taken(trials).keys():
                    stopped = "grid exhausted"
                    break
                if refusals >= MAX_REFUSALS:
                    stopped = f"{MAX_REFUSALS} samples in a row were invalid or duplicates"
                    break
                trial = study.ask()
                config = _suggest(trial, spaces, grid)
                key = json.dumps(config, sort_keys=True)
                trial.set_user_attr("config", key)
                trial.set_user_attr("host", host)
                trial.set_user_attr("pid", pid)
                reason = invalid_reason(workload, config, target)
                trials = study.get_trials(deepcopy=False)  # after ask: other workers' running configs too
                twin = None if reason else _taken(trials, but=trial.number).get(key)
                if reason or twin is not None:
                    if reason:
                        trial.set_user_attr("invalid", reason)
                        study.tell(trial, INVALID_SCORE)
                    else:
                        trial.set_user_attr("duplicate_of", twin)
                        study.tell(trial, state=TrialState.FAIL)
                    refusals += 1
                    # TPE on a small discrete space keeps proposing what it knows
                    # (or what it cannot have): steer the next trial to an
                    # unmeasured valid config instead.
                    if twin is not None or refusals % STEER_AFTER == 0:
                        busy = _taken(trials, but=trial.number)
                        fresh = [c for c, k in zip(valid, valid_keys) if k not in cache and k not in busy]
                        if not fresh:
                            stopped = "every valid config is measured"
                            break
                        study.enqueue_trial(_params(rng.choice(fresh), grid))
                    continue
                refusals = 0
                reused = key in cache
                if reused:
                    rec = cache[key]
                else:
                    with ctrl_c.allowed():
                        result = measurer.measure(workload.to_dict(), config)
                    warned = warned or _warn_if_contended(result, workload)
                    rec = _record(workload, target, config, result, study_name, trial.number)
                    records.append(log, rec)
                    cache[key] = rec
                _finish(study, trial._trial_id, rec, reused)
                trials = study.get_trials(deepcopy=False)
                done = _measured(trials)
                on_progress(Progress(len(done), n_trials, _best_gflops(done),
                                     sum(1 for t in done if t.state == TrialState.FAIL), rec, reused,
                                     time.perf_counter() - start))
        except KeyboardInterrupt:
            if trial is not None and study.get_trials(deepcopy=False)[trial.number].state == TrialState.RUNNING:
                trial.set_user_attr("interrupted", True)  # in its measurement: nothing of it was logged
                study.tell(trial, state=TrialState.FAIL)
            raise
        finally:
            if own_measurer:
                measurer.close()
    done = _measured(study.get_trials(deepcopy=False))
    best = min((r for r in cache.values() if r.ok), key=lambda r: r.cost, default=None)
    return TuneResult(workload, study_name, len(done), sum(1 for t in done if t.state == TrialState.FAIL), best,
                      stopped)


def _measured(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("measured")]


def _taken(trials: list[optuna.trial.FrozenTrial], but: int = -1) -> dict[str, int]:
    """Config key -> trial number, for configs measured in the study (by any
    worker, failures included) or being measured now."""
    return {t.user_attrs["config"]: t.number for t in trials
            if t.number != but and "config" in t.user_attrs
            and (t.user_attrs.get("measured") or t.state == TrialState.RUNNING)}


def _best_gflops(measured: list[optuna.trial.FrozenTrial]) -> float:
    return max((t.value for t in measured if t.state == TrialState.COMPLETE and t.value is not None), default=0.0)
