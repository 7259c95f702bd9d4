"""``convtune bench --search``: how fast each strategy finds a good config.

For each layer an exhaustive grid over a restricted knob space is measured
once, for real. Random and TPE search are then replayed over exactly those
measurements (the tuner's measurer is swapped for a table lookup), several
seeds each: every strategy faces the same costs, so the comparison measures
the search, not the noise of the machine. Reported: trials each needs to get
within ``tolerance`` of the grid's best (median over seeds), and a plot of
best-so-far GFLOP/s against trials.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import optuna

from convtune.ir.workload import Conv2D
from convtune.schedules.space import Space
from convtune.schedules.target import CpuTarget, host_target
from convtune.schedules.templates import TEMPLATES
from convtune.tuner import records
from convtune.tuner.measure import MeasureOptions, MeasureResult, Measurer
from convtune.tuner.search import tune
from convtune.tuner.suites import load_suite

LAYERS = ("r18_c2", "r18_c5", "r18_c8")


def restricted_space(wl: Conv2D, target: CpuTarget) -> dict[str, Space]:
    """The direct template over the knobs that matter most (about 150 configs)."""
    v = target.vector_lanes
    space = TEMPLATES["direct"].space(wl, target)
    return {"direct": space.restrict(
        cb=tuple(b for b in (4, 8, 16) if b in space.knobs[0].values),
        kb=tuple(b for b in (v, 2 * v, 4 * v) if b in space.knobs[1].values),
        owb=tuple(w for w in range(2, 8) if w <= wl.Q), ohb=(1, 2), unroll_s=(False,), parallel=("nkp",))}


class ReplayMeasurer:
    """Answers with the grid's measurement of each config."""

    def __init__(self, table: dict[str, records.Record]) -> None:
        self.table = table

    def measure(self, workload: dict, config: dict) -> MeasureResult:
        rec = self.table[json.dumps(config, sort_keys=True)]
        return MeasureResult(rec.costs, rec.error_code, rec.error, rec.compile_seconds)


@dataclass
class StrategyCurve:
    strategy: str
    seed: int
    best_so_far: list[float]
    """Best GFLOP/s after each measured trial."""

    def trials_to(self, target: float) -> Optional[int]:
        return next((i + 1 for i, g in enumerate(self.best_so_far) if g >= target), None)


@dataclass
class LayerSearch:
    name: str
    grid_size: int
    grid_best: float
    measure_seconds: float
    compile_seconds: float
    curves: list[StrategyCurve] = field(default_factory=list)

    def median_trials(self, strategy: str, tolerance: float) -> Optional[float]:
        hits = [c.trials_to(self.grid_best * (1 - tolerance)) for c in self.curves if c.strategy == strategy]
        hits = [h if h is not None else self.grid_size + 1 for h in hits]
        return statistics.median(hits) if hits else None


def _curve(log: Path) -> list[float]:
    best, out = 0.0, []
    for rec in records.read(log):
        best = max(best, rec.gflops)
        out.append(best)
    return out


def resnet18_layers(names: tuple[str, ...] = LAYERS) -> dict[str, Conv2D]:
    by_name = {layer.name: layer.workload for layer in load_suite("resnet18")[1]}
    return {name: by_name[name] for name in names}


def run_search_bench(workdir: Path, seeds: int = 5, tolerance: float = 0.05,
                     layers: Optional[dict[str, Conv2D]] = None, measurer: Optional[Measurer] = None,
                     on_layer: Callable[[LayerSearch], None] = lambda r: None) -> list[LayerSearch]:
    """Measure each layer's restricted grid with ``measurer`` (default: the
    real, sandboxed one), then replay random and TPE search on it."""
    target = host_target()
    results = []
    with contextlib.ExitStack() as stack:
        measurer = measurer or stack.enter_context(Measurer(MeasureOptions()))
        for name, wl in (layers or resnet18_layers()).items():
            spaces = restricted_space(wl, target)
            grid_log = workdir / f"{name}.grid.jsonl"
            size = len(list(spaces["direct"].configs()))
            tune(wl, log=grid_log, strategy="grid", n_trials=size, spaces=spaces, seed=0, measurer=measurer)
            table = {r.config_key: r for r in records.read(grid_log)}
            ok = [r for r in table.values() if r.ok]
            result = LayerSearch(name, size, max(r.gflops for r in ok),
                                 sum(r.extra.get("measure_seconds", 0.0) for r in table.values()),
                                 sum(r.compile_seconds for r in table.values()))
            replay = ReplayMeasurer(table)
            for strategy in ("random", "tpe"):
                for seed in range(seeds):
                    with tempfile.TemporaryDirectory() as tmp:
                        log = Path(tmp) / "replay.jsonl"
                        # A replay is a simulation: an in-memory study (a SQLite commit
                        # a suggestion made TPE's 100-trial replays 0.2 s a trial).
                        tune(wl, log=log, strategy=strategy, n_trials=size, spaces=spaces, seed=seed, measurer=replay,
                             storage=optuna.storages.InMemoryStorage())
                        result.curves.append(StrategyCurve(strategy, seed, _curve(log)))
            result.curves.append(StrategyCurve("grid", 0, _curve(grid_log)))
            results.append(result)
            on_layer(result)
    return results


def plot(results: list[LayerSearch], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, layer in zip(axes[0], results):
        for strategy, color in (("grid", "gray"), ("random", "tab:blue"), ("tpe", "tab:orange")):
            curves = [c.best_so_far for c in layer.curves if c.strategy == strategy]
            n = min(len(c) for c in curves)
            med = [statistics.median(c[i] for c in curves) for i in range(n)]
            ax.plot(range(1, n + 1), med, label=f"{strategy} (median of {len(curves)})", color=color)
        ax.axhline(layer.grid_best * 0.95, color="black", linestyle=":", label="95% of grid best")
        ax.set_title(f"{layer.name}: grid of {layer.grid_size}")
        ax.set_xlabel("measured trials")
        ax.set_ylabel("best GFLOP/s so far")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def to_json(results: list[LayerSearch], tolerance: float) -> str:
    return json.dumps([{**asdict(r), "median_trials": {s: r.median_trials(s, tolerance) for s in ("random", "tpe")}}
                       for r in results], indent=1)
