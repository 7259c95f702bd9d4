"""Search strategies, the default-first rule, invalid configs, reproducibility,
resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import fresh_seed
from convtune.ir import conv2d
from convtune.schedules.target import CpuTarget, host_target
from convtune.schedules.templates import default_config, search_space
from convtune.tuner import records
from convtune.tuner.measure import MeasureOptions, Measurer, MeasureResult
from convtune.tuner.search import ContentionWarning, default_storage, tune

WL = conv2d(1, 8, 8, 8, 32, 3, padding=1)
FAST = MeasureOptions(repeats=2, min_repeat_seconds=0.002, timeout=60)


def small_space():
    space = search_space(WL, host_target())["direct"]
    kbs = next(k.values for k in space.knobs if k.name == "kb")[:2]  # one and two vectors of this machine
    return {"direct": space.restrict(cb=(4, 8), kb=kbs, owb=(2, 3, 4, 8), ohb=(1, 2), reduction_order=("c_rs",),
                                     unroll_s=(False,), parallel=("nkp",))}


@pytest.fixture(scope="module")
def measurer():
    with Measurer(FAST) as m:
        yield m


def configs_in(log):
    return [r.config for r in records.read(log)]


def test_default_config_is_measured_first(tmp_path, measurer):
    tune(WL, log=tmp_path / "l.jsonl", strategy="random", n_trials=2, seed=3, measurer=measurer)
    assert configs_in(tmp_path / "l.jsonl")[0] == default_config(WL)


def test_every_template_default_is_measured_before_any_sample(tmp_path, measurer):
    """A few dozen trials must not settle on one template before each has
    been tried at its own default: the algorithm is one knob of many."""
    wl = conv2d(1, 8, 6, 6, 16, 1)  # a 1x1: channel-vector and row-vector templates apply
    spaces = search_space(wl, host_target())
    assert len(spaces) >= 4
    log = tmp_path / "l.jsonl"
    tune(wl, log=log, strategy="random", n_trials=len(spaces), seed=fresh_seed(), measurer=measurer)
    measured = configs_in(log)
    assert measured[0] == default_config(wl)
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    defaults = [{"algorithm": name, **space.default} for name, space in spaces.items()]
    assert sorted(map(key, measured)) == sorted(map(key, defaults))


def test_invalid_configs_cost_no_measurement(tmp_path, measurer):
    spaces = small_space()
    space = spaces["direct"]
    n_valid = len(list(space.configs()))
    assert n_valid < space.size()  # the register constraint refuses part of the product
    log = tmp_path / "l.jsonl"
    result = tune(WL, log=log, strategy="random", n_trials=n_valid, spaces=spaces, seed=1, measurer=measurer)
    measured = configs_in(log)
    assert all(space.invalid_reason({k: v for k, v in c.items() if k != "algorithm"}) is None for c in measured)
    assert len({json.dumps(c, sort_keys=True) for c in measured}) == len(measured) == result.measured
    study = optuna.load_study(study_name=result.study_name, storage=default_storage(log))
    refused = [t for t in study.trials if "invalid" in t.user_attrs]
    assert refused and not any(t.user_attrs.get("measured") for t in refused)


def test_grid_visits_every_valid_config_once_then_stops(tmp_path, measurer):
    spaces = small_space()
    n_valid = len(list(spaces["direct"].configs()))
    result = tune(WL, log=tmp_path / "l.jsonl", strategy="grid", n_trials=n_valid + 5, spaces=spaces, seed=0,
                  measurer=measurer)
    assert result.stopped_reason == "grid exhausted" and result.measured == n_valid
    assert len({json.dumps(c, sort_keys=True) for c in configs_in(tmp_path / "l.jsonl")}) == n_valid


def test_grid_larger_than_budget_warns(tmp_path, measurer):
    with pytest.warns(UserWarning, match=r"grid of \d+ valid configs is larger than the budget of 2 trials"):
        tune(WL, log=tmp_path / "l.jsonl", strategy="grid", n_trials=2, spaces=small_space(), seed=0, measurer=measurer)


class FakeMeasurer:
    """A deterministic stand-in: the search, not the machine, is under test."""

    def measure(self, workload, config):
        cost = 1e-3 * (1 + config["owb"] % 3 + config["cb"] / 8 + (config["kb"] == 16) * 0.3 + config["ohb"] * 0.1)
        return MeasureResult([cost, cost], cache="cold")  # as the default measurer times


@pytest.mark.filterwarnings("ignore:grid of 30 valid configs is larger than the budget")  # tested above
@pytest.mark.parametrize("strategy", ["grid", "random", "tpe"])
def test_seeded_search_is_reproducible(tmp_path, strategy):
    runs = []
    for i in range(2):
        log = tmp_path / f"{i}.jsonl"
        tune(WL, log=log, strategy=strategy, n_trials=14, seed=7, spaces=small_space(), measurer=FakeMeasurer())
        runs.append(configs_in(log))
    assert len(runs[0]) == 14 and runs[0] == runs[1]
    other = tmp_path / "other.jsonl"
    tune(WL, log=other, strategy=strategy, n_trials=14, seed=8, spaces=small_space(), measurer=FakeMeasurer())
    assert configs_in(other) != runs[0]


def test_tpe_on_a_small_space_still_measures_new_configs(tmp_path):
    spaces = small_space()
    n_valid = len(list(spaces["direct"].configs()))
    result = tune(WL, log=tmp_path / "l.jsonl", strategy="tpe", n_trials=n_valid, spaces=spaces, seed=0,
                  measurer=FakeMeasurer())
    assert result.measured == n_valid  # every valid config, none twice
    assert len({json.dumps(c, sort_keys=True) for c in configs_in(tmp_path / "l.jsonl")}) == n_valid


def test_tpe_learns_to_avoid_invalid_configs_and_never_gives_up_on_valid_ones(tmp_path):
    """A space most of whose product overflows the register file: invalid
    samples are refused (never measured) but told to TPE as the worst score,
    and a run of them steers the search to an unmeasured valid config, so
    tuning spends its whole budget on valid configs. Over 72 seeds TPE refused
    4-13 invalid samples on the way to the 32 valid configs; one that never
    leaves random sampling (n_startup_trials past the budget) refused 43-83."""
    avx512 = CpuTarget("znver5", ("avx512f", "avx2", "fma"), vector_lanes=16, vector_registers=32, cores=2)
    wl = conv2d(1, 8, 8, 8, 64, 3, padding=1)
    space = search_space(wl, avx512)["direct"]  # nothing is built: the fake measurer times configs
    crowded = {"direct": space.restrict(cb=(4, 8), kb=(64,), owb=(2, 3, 4, 5, 6, 7, 8), ohb=(1, 2, 3, 4),
                                        reduction_order=("c_rs", "rs_c"), unroll_s=(False,), parallel=("nkp",))}
    n_valid = len(list(crowded["direct"].configs()))
    assert 2 * n_valid < crowded["direct"].size()  # mostly invalid: 4 vectors x owb x ohb overflow 32 registers
    log = tmp_path / "l.jsonl"
    seed = fresh_seed()
    result = tune(wl, log=log, strategy="tpe", n_trials=n_valid, spaces=crowded, seed=seed, target=avx512,
                  measurer=FakeMeasurer())
    assert result.stopped_reason == "budget" and result.measured == n_valid, f"{result} (tune seed={seed})"
    assert all(crowded["direct"].invalid_reason({k: v for k, v in c.items() if k != "algorithm"}) is None
               for c in configs_in(log))
    study = optuna.load_study(study_name=result.study_name, storage=default_storage(log))
    refused = [t for t in study.trials if "invalid" in t.user_attrs]
    assert refused and all(t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.0 for t in refused)
    assert len(refused) <= 24, (f"{len(refused)} invalid samples for {n_valid} valid configs (tune seed={seed}): "
                                "TPE did not learn where tiles overflow, it samples like random search")


def test_resume_after_kill_measures_nothing_twice(tmp_path):
    log = tmp_path / "resume.jsonl"
    cmd = [sys.executable, "-m", "convtune.tuner.cli", "tune", "--conv", "N=1,C=8,H=8,W=8,K=16,R=3,S=3,pad=1",
           "--strategy", "random", "--seed", "5", "--trials", "6", "--log", str(log), "--repeats", "2"]
    root = Path(__file__).resolve().parent.parent
    first = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the tuner and its worker, mid-run
    first.wait()
    killed_at = len(log.read_text().splitlines())
    assert 2 <= killed_at < 6
    second = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    measured = configs_in(log)
    assert len(measured) == 6  # the earlier records were kept, none measured again
    assert len({json.dumps(c, sort_keys=True) for c in measured}) == 6
    assert "6 measured" in second.stdout


class InterruptingMeasurer(FakeMeasurer):
    """Ctrl-C arrives while the ``at``-th candidate is being measured."""

    def __init__(self, at):
        self.calls, self.at = 0, at

    def measure(self, workload, config):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().measure(workload, config)


def test_a_grid_point_interrupted_mid_measurement_is_measured_on_resume(tmp_path):
    spaces = small_space()
    n_valid = len(list(spaces["direct"].configs()))
    log = tmp_path / "l.jsonl"
    with pytest.raises(KeyboardInterrupt):
        tune(WL, log=log, strategy="grid", n_trials=n_valid, spaces=spaces, seed=0, measurer=InterruptingMeasurer(3))
    assert len(configs_in(log)) == 2
    result = tune(WL, log=log, strategy="grid", n_trials=n_valid, spaces=spaces, seed=0, measurer=FakeMeasurer())
    keys = [json.dumps(c, sort_keys=True) for c in configs_in(log)]
    assert len(keys) == len(set(keys)) == n_valid and result.measured == n_valid


def test_ctrl_c_caught_by_another_thread_while_a_record_is_logged_waits_for_the_study(tmp_path, monkeypatch):
    """The kernel hands a process-directed SIGINT to any thread that does not
    block it (rich's progress bar runs one); Python then raises in the main
    thread. Arriving between the log line and the study's update, it must not
    leave a logged config that the study counts as unmeasured."""
    import threading

    from convtune.tuner import search

    bystander_ready, stop = threading.Event(), threading.Event()
    bystander = threading.Thread(target=lambda: (bystander_ready.set(), stop.wait()))
    bystander.start()
    bystander_ready.wait()
    appended, append = [], records.append

    def append_then_ctrl_c(log, rec):
        append(log, rec)
        appended.append(rec)
        if len(appended) == 2:
            signal.pthread_kill(bystander.ident, signal.SIGINT)
            time.sleep(0.05)  # the main thread runs the Python handler here unless it is held

    monkeypatch.setattr(search.records, "append", append_then_ctrl_c)
    log = tmp_path / "l.jsonl"
    try:
        with pytest.raises(KeyboardInterrupt):
            tune(WL, log=log, strategy="random", n_trials=5, spaces=small_space(), seed=4, measurer=FakeMeasurer())
    finally:
        stop.set()
        bystander.join()
    logged = {json.dumps(c, sort_keys=True) for c in configs_in(log)}
    storage = default_storage(log)
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert len(logged) == 2 and {t.user_attrs["config"] for t in trials if t.user_attrs.get("measured")} == logged


class WarmMeasurer(FakeMeasurer):
    """Times back to back with warm caches, as ``--warm`` does."""

    def measure(self, workload, config):
        result = super().measure(workload, config)
        return MeasureResult([c / 2 for c in result.costs], cache="warm")


def test_a_warm_run_is_a_study_of_its_own_and_reuses_no_cold_record(tmp_path):
    log = tmp_path / "l.jsonl"
    cold = tune(WL, log=log, strategy="random", n_trials=3, spaces=small_space(), seed=5, measurer=FakeMeasurer())
    warm = tune(WL, log=log, strategy="random", n_trials=3, spaces=small_space(), seed=5,
                options=MeasureOptions(cold=False), measurer=WarmMeasurer())
    assert warm.study_name != cold.study_name and warm.measured == 3
    by_mode = {mode: [r.config_key for r in records.read(log) if r.cache == mode] for mode in ("cold", "warm")}
    assert len(by_mode["cold"]) == len(by_mode["warm"]) == 3  # the warm run measured its configs again
    assert warm.best.cache == "warm" and cold.best.cache == "cold"


class FailingMeasurer(FakeMeasurer):
    """Every config with a 3-column tile fails; counts what it is asked."""

    def __init__(self):
        self.asked = []

    def measure(self, workload, config):
        self.asked.append(json.dumps(config, sort_keys=True))
        if config["owb"] == 3:
            return MeasureResult(error_code=records.ErrorCode.RUNTIME_ERROR, error="boom")
        return super().measure(workload, config)


def test_a_second_worker_measures_nothing_the_first_measured_failures_included(tmp_path):
    spaces, storage = small_space(), default_storage(tmp_path / "shared.jsonl")
    first, second = FailingMeasurer(), FailingMeasurer()
    tune(WL, log=tmp_path / "a.jsonl", strategy="random", n_trials=8, spaces=spaces, seed=1, storage=storage,
         measurer=first)
    assert any('"owb": 3' in k for k in first.asked)  # the first worker saw failures
    # The second worker's log is empty: only the shared study tells it what was measured.
    tune(WL, log=tmp_path / "b.jsonl", strategy="random", n_trials=16, spaces=spaces, seed=3, storage=storage,
         measurer=second)
    assert len(second.asked) == 8 and not set(first.asked) & set(second.asked)


class ContendedMeasurer(FakeMeasurer):
    """Reports the share of the cores other processes took while timing."""

    def __init__(self, others_cpu):
        self.others_cpu = others_cpu

    def measure(self, workload, config):
        result = super().measure(workload, config)
        return MeasureResult(result.costs, cache="cold", others_cpu=self.others_cpu)


def test_contended_measurements_are_recorded_and_warned_about_once(tmp_path):
    log = tmp_path / "l.jsonl"
    with pytest.warns(ContentionWarning, match="kept 90% of the cores busy") as caught:
        tune(WL, log=log, strategy="random", n_trials=3, spaces=small_space(), seed=5, measurer=ContendedMeasurer(0.9))
    assert len([w for w in caught if issubclass(w.category, ContentionWarning)]) == 1
    assert [r.extra["others_cpu"] for r in records.read(log)] == [0.9] * 3


def test_a_quiet_measurement_warns_nothing(tmp_path):
    import warnings

    log = tmp_path / "l.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContentionWarning)
        tune(WL, log=log, strategy="random", n_trials=2, spaces=small_space(), seed=5, measurer=ContendedMeasurer(0.1))
    assert [r.extra["others_cpu"] for r in records.read(log)] == [0.1] * 2


class CountingMeasurer(FakeMeasurer):
    def __init__(self):
        self.asked = []

    def measure(self, workload, config):
        self.asked.append(dict(config))
        return super().measure(workload, config)


def test_a_space_that_grew_starts_from_the_logs_best_and_its_new_knob(tmp_path):
    from dataclasses import replace

    space = small_space()["direct"].restrict(owb=(8,))  # a tile as wide as the row: every config may prefetch
    grown = {"direct": replace(space, default={**space.default, "prefetch": True})}
    log = tmp_path / "l.jsonl"
    tune(WL, log=log, strategy="random", n_trials=4, spaces=grown, seed=2, measurer=FakeMeasurer())
    # As a version before the prefetch knob wrote it: no such key, measured without prefetching.
    old = [r for r in records.read(log) if not r.config["prefetch"]]
    best = min(old, key=lambda r: r.cost)
    lines = []
    for r in old:
        d = json.loads(r.to_json())
        del d["config"]["prefetch"]
        lines.append(json.dumps(d))
    log.write_text("\n".join(lines) + "\n")
    storage = f"sqlite:///{tmp_path / 'new.db'}"  # a new study, as a changed space gets
    counting = CountingMeasurer()
    result = tune(WL, log=log, strategy="random", n_trials=4, spaces=grown, seed=9, storage=storage,
                  measurer=counting)
    incumbent = {**best.config, "prefetch": False}
    assert incumbent not in counting.asked  # logged already: reused, not measured again
    trials = optuna.load_study(study_name=result.study_name, storage=storage).get_trials()
    firsts = [json.loads(t.user_attrs["config"]) for t in trials[:3]]
    assert incumbent in firsts and {**incumbent, "prefetch": True} in firsts


def test_a_spaces_identity_is_the_same_in_every_process():
    """The study name digests the knobs' reprs: an object's address in one would
    make every process a new study (resume and shared studies broken)."""
    for space in search_space(WL, host_target()).values():
        assert " at 0x" not in repr(space.knobs)
    out = [subprocess.run([sys.executable, "-c", "from convtune.ir import conv2d; "
                           "from convtune.schedules.templates import search_space; "
                           "print(repr([s.knobs for s in search_space(conv2d(1, 8, 8, 8, 32, 3, padding=1)).values()]))"],
                          capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert out[0] == out[1] and out[0]
