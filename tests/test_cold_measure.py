"""Measurement under model conditions: the caches are flushed before each
timed call by default (tuner and bench), ``--warm`` times back to back, and
records say which was used (old logs, which say nothing, read as warm)."""
import itertools
import json
import time

import numpy as np
import pytest
from conftest import SMALL_CONV

from convtune.schedules.target import host_target
from convtune.tuner import bench, search
from convtune.tuner.cache_flush import CacheFlusher, cache_bytes
from convtune.tuner.cli import main, parse_conv
from convtune.tuner.measure import MeasureOptions, _time, measure_here
from convtune.tuner.records import Record
from convtune.tuner.timing import time_calls


def test_the_flusher_reads_twice_every_cache_and_rewarms_what_it_keeps():
    keep = np.arange(64, dtype=np.float32)
    flush = CacheFlusher(2, keep=(keep,))
    flush()
    assert cache_bytes(2) >= 1 << 20
    assert flush._buf.nbytes >= 2 * cache_bytes(2)
    lines = flush._buf.size / 16
    assert flush.sink == lines + keep[::16].sum()  # every line of the evictor read once, then the kept array


def test_time_calls_runs_before_untimed_before_every_timed_call():
    events = []
    times = time_calls(lambda: events.append("call"), 3, settle=0.0, warmup=1, before=lambda: events.append("flush"))
    assert len(times) == 3
    assert events == ["call"] + ["flush", "call"] * 3


def test_a_stall_in_one_flushed_call_of_each_repeat_does_not_move_the_cold_cost():
    """A VM stall lasts longer than a flushed call: one stalled call among a
    repeat's five leaves the repeat at the typical call's time (the mean,
    as before, would put every repeat at about 6.8 ms)."""
    calls = itertools.count()

    def run() -> None:  # 1 ms a call, 30 ms on every fifth: one in any five consecutive calls
        time.sleep(0.030 if next(calls) % 5 == 2 else 0.001)

    costs = _time(run, np.zeros(16, np.float32), MeasureOptions(repeats=3, cold_calls=5))
    assert len(costs) == 3
    assert all(0.001 <= c < 0.004 for c in costs), costs


DIRECT = {"algorithm": "direct", "cb": 4, "kb": 16, "owb": 4, "ohb": 1, "reduction_order": "c_rs",
          "unroll_s": False, "parallel": "nkp"}


def _measure(cold: bool):
    wl = parse_conv(SMALL_CONV + ",bias=1,act=relu")
    return measure_here(wl.to_dict(), DIRECT, MeasureOptions(repeats=3, min_repeat_seconds=0.001, cold=cold))


def test_the_tuner_measures_cold_by_default_and_warm_on_request():
    assert MeasureOptions().cold
    cold, warm = _measure(True), _measure(False)
    for result, cache in ((cold, "cold"), (warm, "warm")):
        assert result.error_code == 0, result.error
        assert result.cache == cache and len(result.costs) == 3 and min(result.costs) > 0


def test_records_say_how_they_were_timed_and_old_logs_read_as_warm():
    result = _measure(True)
    wl = parse_conv(SMALL_CONV)
    rec = search._record(wl, host_target(), {"algorithm": "direct"}, result, "study", 0)
    again = Record.from_json(rec.to_json())
    assert again.cache == "cold" and again.extra["cache"] == "cold"
    old = json.loads(rec.to_json())
    del old["extra"]
    assert Record.from_json(json.dumps(old)).cache == "warm"


def test_convtune_tune_passes_warm_to_the_measurement(tmp_path, monkeypatch):
    seen = []

    def fake_tune(wl, **kw):
        seen.append(kw["options"].cold)
        return search.TuneResult(wl, "study", 0, 0, None, "budget")

    monkeypatch.setattr(search, "tune", fake_tune)
    log = str(tmp_path / "x.jsonl")
    assert main(["tune", "--conv", SMALL_CONV, "--log", log]) == 0
    assert main(["tune", "--conv", SMALL_CONV, "--log", log, "--warm"]) == 0
    assert seen == [True, False]


def test_the_bench_times_every_contender_warm_and_cold(tmp_path, monkeypatch):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"one": [{"name": "t3x3", "N": 1, "C": 8, "H": 9, "W": 7, "K": 16, "R": 3,
                                         "stride": 1, "pad": 1}]}))

    def numpy_peer(wl, x, w, threads):
        from convtune.ir.reference import conv2d_reference

        return lambda: conv2d_reference(wl, x, w)

    monkeypatch.setattr(bench, "PEERS", {"numpy_ref": numpy_peer})
    report = bench.run_bench(str(path), threads=1, rounds=2, min_block_seconds=0.001)
    layer = report.layers[0]
    assert set(layer.cold_gflops) == set(layer.gflops) == {bench.CONVTUNE, "numpy_ref"}
    assert min(layer.cold_gflops.values()) > 0 and report.cold
    assert json.loads(report.to_json())["geomean_cold"][bench.CONVTUNE] == pytest.approx(
        layer.cold_gflops[bench.CONVTUNE])
    warm = bench.run_bench(str(path), threads=1, rounds=1, min_block_seconds=0.001, warm_only=True)
    assert warm.layers[0].cold_gflops == {} and not warm.cold


def test_a_log_mixing_cold_and_warm_records_picks_among_the_cold_ones(tmp_path):
    """Warm costs flatter (weights in cache): a faster warm record must not
    beat the cold ones, in best_records nor in dispatch."""
    from convtune.schedules.templates import invalid_reason
    from convtune.tuner import records
    from convtune.tuner.dispatch import ApplyHistoryBest

    wl = parse_conv(SMALL_CONV)
    target = host_target()
    config, other = DIRECT, {**DIRECT, "owb": 2}
    assert invalid_reason(wl, config, target) is None and invalid_reason(wl, other, target) is None
    log = tmp_path / "mixed.jsonl"
    for cfg, cost, cache in ((config, 2e-4, "cold"), (other, 1e-4, "warm")):
        records.append(log, Record(wl.to_dict(), target.to_dict(), cfg, [cost], extra={"cache": cache}))
    (best,) = records.best_records(records.read(log)).values()
    assert best.cache == "cold" and best.config == config
    assert ApplyHistoryBest(str(log)).config_for(wl) == (config, "tuned")
