"""Model refinement (``tuner.model_refine``): each task's config chosen among
its best of every algorithm by the whole model's time, logged as records
timed in the model, which dispatch prefers; resumable.

The model's timing is injected (a judge) so the tests check the mechanics,
not this machine's speed: which candidates are tried, that a candidate is
taken only when it wins twice, what is logged and that the refined log runs
the model correctly."""
import itertools

import numpy as np
import pytest
from model_graphs import tiny_onnx_model

from convtune.ir.reference import relative_error
from convtune.schedules.target import host_target
from convtune.schedules.templates import TEMPLATES, default_config
from convtune.tuner import records
from convtune.tuner.dispatch import ApplyHistoryBest, tuning_workload
from convtune.tuner.model_refine import candidates, in_place_variants, refine_model
from convtune.tuner.records import MODEL_CACHE, Record
from convtune.tuner.session import Session


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("refine") / "tiny.onnx"
    tiny_onnx_model(path)
    return str(path)


def _tasks(session):
    return {tuning_workload(n.attrs["workload"]).key: tuning_workload(n.attrs["workload"])
            for n in session.graph.nodes() if n.op == "FusedConv"}


def _log(path, session, target):
    """Per task: its default config (the faster record, the incumbent) and
    direct_w's default (slower alone), as a tuning would have logged them."""
    for wl in _tasks(session).values():
        incumbent = {"algorithm": default_config(wl, target)["algorithm"], **default_config(wl, target)}
        other = {"algorithm": "direct_w", **TEMPLATES["direct_w"].space(wl, target).default}
        for config, cost in ((incumbent, 1e-4), (other, 2e-4)):
            records.append(path, Record(wl.to_dict(), target.to_dict(), config, [cost], extra={"cache": "cold"}))


def _feeds(session, rng):
    return {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in session.get_inputs()}


def test_a_candidate_that_wins_twice_in_the_model_is_chosen_logged_and_run(model, tmp_path, rng):
    target = host_target()
    log = tmp_path / "tiny.jsonl"
    session = Session(model, logs=None)
    _log(log, session, target)
    tasks = _tasks(session)
    tried = []

    def judge(current, trial, config):
        tried.append(config["algorithm"])
        return 1.5 if config["algorithm"] == "direct_w" else 0.5

    feeds = _feeds(session, rng)
    choices = refine_model(session.graph, [log], log, feeds, judge=judge)
    assert {c.workload.key for c in choices} == set(tasks) and len(tasks) == 2
    # one alternative per task, judged twice; the 1x1 task's in-place gemm variant, judged once (it lost)
    assert sorted(tried) == ["direct_w"] * 4 + ["gemm"]
    assert all(c.chosen["algorithm"] == "direct_w" and c.seconds > 0 for c in choices)
    refined = [r for r in records.read(log) if r.cache == MODEL_CACHE]
    assert len(refined) == 2 and all(r.extra["model"] == session.graph.name for r in refined)
    dispatch = ApplyHistoryBest([log], target)
    for wl in tasks.values():  # the slower-alone record now serves the model
        assert dispatch.config_for(wl)[0]["algorithm"] == "direct_w"
    want = Session(model, logs=None).run(None, feeds)
    got = Session(model, logs=[log]).run(None, feeds)
    assert relative_error(got[0], want[0]) < 1e-4
    # resumed: both tasks refined for this model, nothing is judged again
    assert refine_model(session.graph, [log], log, feeds, judge=judge) == [] and len(tried) == 5


def test_a_task_tuned_after_its_refinement_is_judged_again_against_the_refined_choice(model, tmp_path, rng):
    target = host_target()
    log = tmp_path / "tiny.jsonl"
    session = Session(model, logs=None)
    _log(log, session, target)
    feeds = _feeds(session, rng)
    refine_model(session.graph, [log], log, feeds, judge=lambda current, trial, config: 1.5)  # direct_w taken
    wl = next(iter(_tasks(session).values()))
    # Tuning goes on (a knob added, say) and logs a new best of another algorithm for one task.
    newer = {"algorithm": "direct", **TEMPLATES["direct"].space(wl, target).default, "owb": 1}
    records.append(log, Record(wl.to_dict(), target.to_dict(), newer, [5e-5], extra={"cache": "cold"}))
    tried = []

    def judge(current, trial, config):
        tried.append(config)
        return 1.5 if config == newer else 0.5

    choices = refine_model(session.graph, [log], log, feeds, judge=judge)
    assert [c.workload.key for c in choices] == [wl.key]  # the other task is settled
    assert choices[0].candidates[0]["algorithm"] == "direct_w"  # the refined choice is the incumbent
    assert newer in tried and choices[0].chosen == newer
    assert ApplyHistoryBest([log], target).config_for(wl)[0] == newer


def test_a_candidate_must_win_both_comparisons(model, tmp_path, rng):
    target = host_target()
    log = tmp_path / "tiny.jsonl"
    session = Session(model, logs=None)
    _log(log, session, target)
    verdicts = itertools.cycle([1.5, 1.0])  # each candidate faster once, then not: noise, not a win
    choices = refine_model(session.graph, [log], log, _feeds(session, rng),
                           judge=lambda current, trial, config: next(verdicts))
    assert [c.chosen == c.candidates[0] for c in choices] == [True, True]
    assert sorted(len(c.speedups) for c in choices) == [1, 2]  # the 1x1 task has its in-place variant too
    assert all(s == 1.0 for c in choices for s in c.speedups)
    for c in choices:  # the incumbent's choice is logged too: a rerun resumes
        assert ApplyHistoryBest([log], target).config_for(c.workload)[0] == c.chosen


def test_candidates_are_each_algorithms_best_and_never_a_refinements_own_record(model, tmp_path):
    target = host_target()
    wl = next(iter(_tasks(Session(model, logs=None)).values()))
    log = tmp_path / "c.jsonl"
    base = default_config(wl, target)
    knobs = {k: v for k, v in base.items() if k != "algorithm"}
    slow = {"algorithm": base["algorithm"],
            **next(c for c in TEMPLATES[base["algorithm"]].space(wl, target).configs() if c != knobs)}
    fast_w = {"algorithm": "direct_w", **TEMPLATES["direct_w"].space(wl, target).default}
    for config, cost, cache in ((slow, 3e-4, "cold"), (base, 2e-4, "cold"), (fast_w, 1e-4, "cold"),
                                (fast_w, 1e-6, MODEL_CACHE)):
        records.append(log, Record(wl.to_dict(), target.to_dict(), config, [cost], extra={"cache": cache}))
    other = Record(wl.to_dict(), {**target.to_dict(), "cpu": "elsewhere"}, base, [1e-9], extra={"cache": "cold"})
    records.append(log, other)
    got = candidates(records.read(log), target)[wl.key]
    assert got == [fast_w, base]  # best first; the slower config of base's algorithm, the model record
    # and the other machine's record are not candidates


def test_a_model_record_outranks_isolated_ones_and_the_latest_refinement_wins():
    target = host_target().to_dict()
    wl = {"N": 1, "C": 8, "H": 8, "W": 8, "K": 8, "R": 3, "S": 3, "padding": [1, 1, 1, 1]}
    cold = Record(wl, target, {"algorithm": "a"}, [1e-6], extra={"cache": "cold"})
    old = Record(wl, target, {"algorithm": "b"}, [1e-3], timestamp=1.0, extra={"cache": MODEL_CACHE})
    new = Record(wl, target, {"algorithm": "c"}, [2e-3], timestamp=2.0, extra={"cache": MODEL_CACHE})
    assert sorted([cold, old, new], key=lambda r: r.rank) == [new, old, cold]
    (best,) = records.best_records([cold, old, new]).values()
    assert best is new


def test_a_pointwise_task_gets_the_gemm_variant_that_reads_nchw_in_place(model):
    """Only a 1x1, stride-1, unpadded conv has it: its best gemm config (or
    gemm's default) with cb=1, valid; none where gemm already reads cb=1."""
    target = host_target()
    tasks = _tasks(Session(model, logs=None)).values()
    pointwise = next(wl for wl in tasks if wl.R == 1)
    three = next(wl for wl in tasks if wl.R == 3)
    assert in_place_variants(three, [], target) == []
    [variant] = in_place_variants(pointwise, [], target)
    assert variant == {"algorithm": "gemm", **TEMPLATES["gemm"].space(pointwise, target).default, "cb": 1}
    logged = {**variant, "cb": 8, "tb": 4}
    configs = [logged, default_config(pointwise, target)]  # best first: the best gemm is the logged one
    assert in_place_variants(pointwise, configs, target) == [{**logged, "cb": 1}]
    assert in_place_variants(pointwise, [variant], target) == []
