"""apply_history_best: exact matches, nearest-shape transfer, defaults with a
warning per workload, other targets ignored, no recompilation on restart."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from convtune.codegen.verify import check_kernel
from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import default_config, invalid_reason, schedule_from_config
from convtune.tuner import records
from convtune.tuner.dispatch import FallbackWarning, apply_history_best, conv2d_kernel, current
from convtune.tuner.records import Record

TUNED = conv2d(1, 16, 12, 12, 32, 3, padding=1)
BEST = {"algorithm": "direct", "cb": 16, "kb": 16, "owb": 3, "ohb": 2, "reduction_order": "rs_c", "unroll_s": True,
        "parallel": "nkp"}
FOREIGN = dict(BEST, ohb=1)  # fewer registers than BEST: valid wherever BEST is
"""Logged on another machine for TUNED, faster than BEST and valid here too:
only the target filter keeps it out."""
ELSEWHERE = conv2d(1, 8, 8, 8, 8, 1)
"""Tuned only on another machine, with a config valid here."""
ANOTHER_TARGET = dict(host_target().to_dict(), cpu="another-cpu")


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "log.jsonl"
    slower = dict(BEST, owb=2)
    for config, cost in ((slower, 2e-4), (BEST, 1e-4)):
        records.append(path, Record(TUNED.to_dict(), host_target().to_dict(), config, [cost, cost]))
    records.append(path, Record(TUNED.to_dict(), ANOTHER_TARGET, FOREIGN, [1e-6]))
    records.append(path, Record(ELSEWHERE.to_dict(), ANOTHER_TARGET, default_config(ELSEWHERE), [1e-6]))
    return path


def test_exact_match_gives_the_best_config_and_a_correct_kernel(log, rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        with apply_history_best(log) as d:
            assert d.config_for(TUNED) == (BEST, "tuned")
            kernel = conv2d_kernel(TUNED)
    assert kernel.state.trace == schedule_from_config(TUNED, BEST).state.trace
    assert check_kernel(kernel, rng) < 1e-4


def test_nearest_tuned_shape_is_used_with_a_warning(log, rng):
    near = conv2d(1, 16, 24, 24, 32, 3, padding=1)  # same kind, larger image
    d = apply_history_best(log)
    with pytest.warns(FallbackWarning, match=r"N1 C16 24x24 K32 3x3 p1: not tuned; using the best config of the "
                                             r"nearest tuned workload \(N1 C16 12x12 K32 3x3 p1\)"):
        config, source = d.config_for(near)
    assert config == BEST and source.startswith("nearest")
    assert check_kernel(d.kernel(near), rng) < 1e-4


def test_untuned_shape_falls_back_to_default_once_per_workload(log):
    pointwise = conv2d(1, 16, 12, 12, 32, 1)
    d = apply_history_best(log)
    with pytest.warns(FallbackWarning, match=r"N1 C16 12x12 K32 1x1: not tuned and no similar tuned workload") as w:
        assert d.config_for(pointwise) == (default_config(pointwise), "default")
        d.config_for(pointwise)
        d.kernel(pointwise)
    assert len(w) == 1


def test_a_nearest_config_invalid_here_is_skipped(log):
    few_channels = conv2d(1, 4, 12, 12, 32, 3, padding=1)  # cb=16 is no block of 4 channels
    with pytest.warns(FallbackWarning, match="using the untuned default config"):
        assert apply_history_best(log).config_for(few_channels)[1] == "default"


def test_a_tuned_config_no_longer_valid_is_not_applied(log, rng):
    """A knob's values changed since the log was written: the exact record's
    config would fail to build. The best valid record of the workload is used
    instead, and a workload with none falls back with one warning."""
    stale = dict(BEST, owb=99)
    records.append(log, Record(TUNED.to_dict(), host_target().to_dict(), stale, [1e-6]))  # fastest, invalid
    near = conv2d(1, 16, 24, 24, 32, 3, padding=1)
    records.append(log, Record(near.to_dict(), host_target().to_dict(), stale, [1e-6]))  # its only record
    d = apply_history_best(log)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        assert d.config_for(TUNED) == (BEST, "tuned")
    with pytest.warns(FallbackWarning, match=r"N1 C16 24x24 K32 3x3 p1: tuned configs are not valid for the current "
                                             r"templates; using the best config of the nearest tuned workload") as w:
        assert d.config_for(near) == (BEST, "nearest N1 C16 12x12 K32 3x3 p1")
        d.config_for(near)
    assert len(w) == 1
    assert check_kernel(d.kernel(near), rng) < 1e-4


def test_records_of_another_target_are_not_applied(log):
    assert invalid_reason(TUNED, FOREIGN) is None and invalid_reason(ELSEWHERE, default_config(ELSEWHERE)) is None
    d = apply_history_best(log)
    assert d.other_targets == 2
    assert d.config_for(TUNED) == (BEST, "tuned")
    with pytest.warns(FallbackWarning, match="N1 C8 8x8 K8 1x1: not tuned"):
        assert d.config_for(ELSEWHERE)[1] == "default"


def test_current_dispatcher_is_scoped(log):
    assert current() is None
    with apply_history_best(log) as d:
        assert current() is d
    assert current() is None


SCRIPT = """
import json, sys
from convtune.tuner.dispatch import apply_history_best
from convtune.ir import conv2d
k = apply_history_best(sys.argv[1]).kernel(conv2d(1, 16, 12, 12, 32, 3, padding=1))
print(json.dumps({"hit": k.compiled.disk_cache_hit}))
"""


def test_second_start_loads_kernels_from_disk(log, tmp_path):
    env = dict(os.environ, CONVTUNE_CACHE_DIR=str(tmp_path / "cache"))
    root = Path(__file__).resolve().parent.parent
    hits = [json.loads(subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=root, env=env, check=True,
                                      capture_output=True, text=True).stdout)["hit"] for _ in range(2)]
    assert hits == [False, True]
