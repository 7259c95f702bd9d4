"""The tuning log: durable appends, corrupt lines skipped with a warning naming
the file and line, best-record distillation."""
import json
import re

import pytest

from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.tuner import records
from convtune.tuner.records import ErrorCode, LogWarning, Record

WL = conv2d(1, 8, 8, 8, 8, 3, padding=1)


def rec(costs, config=None, code=0, target=None):
    return Record(WL.to_dict(), target or host_target().to_dict(), config or {"algorithm": "direct", "owb": len(costs)},
                  list(costs), code)


def test_round_trip_and_best(tmp_path):
    log = tmp_path / "sub" / "log.jsonl"
    for r in (rec([3.0, 2.0, 4.0]), rec([1.0, 1.5, 0.5]), rec([], code=ErrorCode.CRASH),
              rec([0.1], code=ErrorCode.WRONG_ANSWER)):
        records.append(log, r)
    back = list(records.read(log))
    assert len(back) == 4 and back[0].cost == 3.0 and back[1].cost == 1.0
    assert not back[2].ok and back[2].cost == float("inf")
    best = records.best_records(back)
    assert list(best.values())[0].costs == [1.0, 1.5, 0.5]  # the wrong answer is never the best, however fast
    assert back[1].gflops == pytest.approx(WL.flops / 1.0 / 1e9)


def test_corrupt_lines_are_skipped_with_file_and_line(tmp_path):
    log = tmp_path / "log.jsonl"
    records.append(log, rec([1.0]))
    with open(log, "a") as f:
        f.write('{"workload": {"N": 1}, "trunc\n')      # line 2: killed mid-write
        f.write("[1, 2, 3]\n")                          # line 3: not an object
        f.write(json.dumps({"config": {}}) + "\n")      # line 4: missing fields
    records.append(log, rec([2.0]))
    with pytest.warns(LogWarning) as caught:
        back = list(records.read(log))
    assert [r.cost for r in back] == [1.0, 2.0]
    messages = [str(w.message) for w in caught]
    assert any(f"{log}:2: skipped corrupt record" in m for m in messages)
    assert any(f"{log}:3:" in m for m in messages) and any(f"{log}:4:" in m and "missing fields" in m for m in messages)


@pytest.mark.parametrize("field,value,why", [
    ("target", {}, "target:"),
    ("target", {"kind": "cpu", "cpu": "x", "isa": "avx2"}, "target:"),
    ("costs", ["a"], "costs:"),
    ("costs", 5, "costs:"),
    ("costs", [0.0], "costs:"),
    ("config", [1], "config:"),
    ("config", {"owb": 2}, "config:"),
    ("error_code", "0", "error_code:"),
    ("error_code", 99, "error_code:"),
    ("error_code", True, "error_code:"),
    ("extra", [], "extra:"),
    ("timestamp", "now", "timestamp:"),
])
def test_valid_json_with_bad_fields_is_skipped_as_corrupt(tmp_path, field, value, why):
    """Such a line once passed and crashed ``convtune show``, ``tune`` and
    ``apply_history_best`` later, far from the bad line."""
    log = tmp_path / "log.jsonl"
    bad = dict(json.loads(rec([2.0]).to_json()), **{field: value})
    log.write_text(rec([1.0]).to_json() + "\n" + json.dumps(bad) + "\n")
    with pytest.warns(LogWarning, match=re.escape(f"{log}:2: skipped corrupt record ({why}")):
        back = list(records.read(log))
    assert [r.cost for r in back] == [1.0]
    assert records.best_records(back)  # what was kept is usable


def test_cost_is_the_true_median():
    assert rec([4.0, 1.0, 3.0, 2.0]).cost == 2.5
    assert rec([3.0, 1.0, 2.0]).cost == 2.0
    assert rec([5.0]).cost == 5.0


def test_records_of_another_target_are_kept_apart(tmp_path):
    other = dict(host_target().to_dict(), cpu="some-other-cpu")
    best = records.best_records([rec([1.0], target=other), rec([2.0])])
    assert len(best) == 2
    assert {r.target["cpu"] for r in best.values()} == {"some-other-cpu", host_target().cpu}


def test_record_has_the_fields_users_need():
    d = json.loads(rec([1.0]).to_json())
    for field in ("workload", "target", "config", "costs", "error_code", "error", "compile_seconds", "timestamp",
                  "versions", "version"):
        assert field in d


def test_pace_is_robust_to_the_pause_of_a_resumed_run():
    recs = []
    for t, (compile_s, measure_s) in zip((0.0, 2.0, 4.0, 3600.0, 3602.0), ((1.0, 0.3), (1.2, 0.2), (0.8, 0.4),
                                                                           (1.1, 0.3), (5.0, 0.3))):
        r = rec([1.0])
        r.timestamp, r.compile_seconds, r.extra = t, compile_s, {"measure_seconds": measure_s}
        recs.append(r)
    pace = records.pace(reversed(recs))  # order of the log does not matter
    assert pace.seconds_per_trial == 2.0  # the hour between the runs is not a trial
    assert pace.compile_seconds == 1.1 and pace.measure_seconds == 0.3


def test_pace_of_a_task_that_took_turns_with_others_counts_only_its_own_trials():
    """A model's tasks are tuned in rounds: this task got one trial a round
    (at 0, 50, 100, 150 s), the other tasks' trials came in between, the
    last 2 s before each of its own. Its gaps to its own previous record
    are a round's length (50 s); the log's, 2 s."""
    def at(t: float) -> Record:
        r = rec([1.0])
        r.timestamp = t
        return r

    mine = [at(t) for t in (0.0, 50.0, 100.0, 150.0)]
    others = [at(t) for start in (0, 50, 100) for t in range(start + 4, start + 50, 2)]
    for r in others:
        r.workload = conv2d(1, 8, 7, 7, 8, 3, padding=1).to_dict()
    assert records.pace(mine).seconds_per_trial == 50.0
    assert records.pace(mine, mine + others).seconds_per_trial == 2.0
