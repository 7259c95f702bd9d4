"""The search-efficiency benchmark: the grid is measured once, random and TPE
are replayed over those very measurements, and the report is built from the
curves (here on a fake machine, so the test checks the method, not speed)."""
import json

import pytest

from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.tuner import records
from convtune.tuner.measure import MeasureResult
from convtune.tuner.search_bench import plot, restricted_space, run_search_bench, to_json

WL = conv2d(1, 16, 6, 4, 64, 3, padding=1)


BEST_KB = 2 * host_target().vector_lanes
"""Two vectors of output channels: a tile that fits the host's registers with owb=3 (AVX2's 16 or AVX-512's 32)."""


def landscape_cost(config):
    """A deterministic cost (seconds) with one best config and many near-misses."""
    return 1e-3 * (1 + abs(config["owb"] - 3) + abs(config["cb"] - 8) / 8 + (config["kb"] != BEST_KB) * 0.4
                   + (config["ohb"] == 2) * 0.2 + (config["reduction_order"] == "rs_c") * 0.1)


class LandscapeMeasurer:
    """Times every config at its ``landscape_cost``."""

    def __init__(self):
        self.calls = 0

    def measure(self, workload, config):
        self.calls += 1
        cost = landscape_cost(config)
        return MeasureResult([cost, cost], compile_seconds=0.5)


def test_grid_is_measured_once_and_replays_reach_its_best(tmp_path):
    measurer = LandscapeMeasurer()
    [layer] = run_search_bench(tmp_path, seeds=2, layers={"tiny": WL}, measurer=measurer)
    configs = list(restricted_space(WL, host_target())["direct"].configs())
    size = len(configs)
    assert measurer.calls == layer.grid_size == size  # replays never measure again
    # The optimum from the landscape itself, not from the tuner's records of it.
    best_cost = min(landscape_cost(c) for c in configs)
    [optimum] = [c for c in configs if landscape_cost(c) == best_cost]
    assert layer.grid_best == pytest.approx(WL.flops / best_cost / 1e9, rel=1e-12), (
        f"grid best {layer.grid_best} GFLOP/s, but the landscape's fastest config {optimum} "
        f"({best_cost} s) runs at {WL.flops / best_cost / 1e9} GFLOP/s")
    logged_best = max(records.read(tmp_path / "tiny.grid.jsonl"), key=lambda r: r.gflops)
    assert logged_best.config == {"algorithm": "direct", **optimum}, (
        f"the grid log's best record is {logged_best.config}, the landscape's fastest config is {optimum}")
    grid_curve = next(c for c in layer.curves if c.strategy == "grid")
    assert grid_curve.best_so_far[-1] == layer.grid_best
    for strategy in ("random", "tpe"):
        curves = [c for c in layer.curves if c.strategy == strategy]
        assert len(curves) == 2
        for c in curves:  # a replay with the grid's budget measures every config, so it ends at the grid's best
            assert c.best_so_far == sorted(c.best_so_far) and c.best_so_far[-1] == layer.grid_best
        assert 1 <= layer.median_trials(strategy, 0.05) <= size
    report = json.loads(to_json([layer], 0.05))
    assert report[0]["median_trials"]["tpe"] == layer.median_trials("tpe", 0.05)
    plot([layer], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
