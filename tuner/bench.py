"""``convtune bench``: convtune against its peers, side by side in one run.

For each layer of a suite, convtune's kernel (the best config of a tuning log,
else the untuned default) and every available peer run on the same inputs.
Contenders are interleaved: each round times one block of every contender,
in rotating order, and a contender's result is the median over rounds, so
drift on a shared machine hits all of them alike. GFLOP/s, ratios and the
fraction of the machine's measured FMA and sgemm ceilings are reported. The
FMA probe runs as one more contender in every layer's rounds, so a layer's
"% FMA" compares two timings taken under the same conditions.

Every contender is timed twice in each round: warm (calls back to back, as
kernels are usually benchmarked) and cold (caches flushed before each call,
the input re-read: how a layer finds the caches inside a model, where its
weights and scratch were last touched a network ago). ``warm_only`` skips
the cold timing.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numba
import numpy as np

from convtune.codegen import build
from convtune.codegen.verify import TOLERANCE
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import Conv2D
from convtune.schedules.space import Config
from convtune.schedules.target import CpuTarget, host_target
from convtune.schedules.templates import default_config, schedule_from_config
from convtune.tuner.cache_flush import CacheFlusher
from convtune.tuner.ceilings import fma_ceiling, fma_probe, sgemm_ceiling
from convtune.tuner.peers import PEERS, PeerUnavailable, Runner
from convtune.tuner.suites import load_suite
from convtune.tuner.timing import PEER_SETTLE_SECONDS, calls_per_block, median, time_calls

CONVTUNE = "convtune"
FMA_PROBE = "fma_probe"
COLD_CALLS = 5
"""Calls per cold block (each after a flush that reads twice the caches)."""
ConfigSource = Callable[[Conv2D], Optional[tuple[Config, str]]]
"""Workload -> (config, where it came from) or None for the default config."""


@dataclass
class LayerResult:
    name: str
    workload: str
    flops: int
    config: Config
    config_source: str
    error: float
    gflops: dict[str, float]
    fma_gflops: float
    """The FMA probe, timed in this layer's rounds."""
    cold_gflops: dict[str, float] = field(default_factory=dict)
    """Each contender timed with the caches flushed before each call (empty
    when the bench ran warm only)."""

    @property
    def fma_fraction(self) -> float:
        return self.gflops[CONVTUNE] / self.fma_gflops

    @property
    def best_peer(self) -> Optional[str]:
        peers = {k: v for k, v in self.gflops.items() if k != CONVTUNE}
        return max(peers, key=peers.get) if peers else None  # type: ignore[arg-type]


@dataclass
class BenchReport:
    suite: str
    target: dict
    threads: int
    fma_ceiling: float
    sgemm_ceiling: float
    layers: list[LayerResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def contenders(self) -> list[str]:
        names = [CONVTUNE]
        for layer in self.layers:
            names += [n for n in layer.gflops if n not in names]
        return names

    def geomean(self, name: str, cold: bool = False) -> float:
        return _geomean([_timed(layer, cold)[name] for layer in self.layers if name in _timed(layer, cold)])

    @property
    def cold(self) -> bool:
        """Whether the layers were also timed with cold caches."""
        return any(layer.cold_gflops for layer in self.layers)

    def best_peer_geomean(self) -> float:
        return _geomean([layer.gflops[layer.best_peer] for layer in self.layers if layer.best_peer])

    def fma_fraction_geomean(self) -> float:
        return _geomean([layer.fma_fraction for layer in self.layers])

    def to_json(self) -> str:
        d = asdict(self)
        d["geomean"] = {n: self.geomean(n) for n in self.contenders()}
        d["geomean"]["best_peer_per_layer"] = self.best_peer_geomean()
        d["geomean"]["fma_fraction"] = self.fma_fraction_geomean()
        d["geomean_cold"] = {n: self.geomean(n, cold=True) for n in self.contenders()} if self.cold else {}
        return json.dumps(d, indent=1)


def _timed(layer: LayerResult, cold: bool) -> dict[str, float]:
    return layer.cold_gflops if cold else layer.gflops


def _geomean(vals: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def _inputs(wl: Conv2D) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(wl.data_shape, dtype=np.float32),
            rng.standard_normal(wl.weight_shape, dtype=np.float32))


def bench_layer(contenders: dict[str, Callable[[], object]], rounds: int, min_block_seconds: float,
                flush: Optional[Callable[[], object]] = None) -> dict[str, dict[str, float]]:
    """Seconds per call of each contender, {"warm": {name: s}, "cold": ...}:
    median over rounds of the median call of one block each, contenders in
    rotating order. With ``flush``, each round also times a cold block of
    every contender (``flush`` before each call); else "cold" is empty."""
    numbers = {n: calls_per_block(fn, min_block_seconds) for n, fn in contenders.items()}
    modes: dict[str, Optional[Callable[[], object]]] = {"warm": None, **({"cold": flush} if flush else {})}
    samples: dict[str, dict[str, list[float]]] = {mode: {n: [] for n in contenders} for mode in modes}
    names = list(contenders)
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            for mode, before in modes.items():
                calls = numbers[n] if before is None else min(numbers[n], COLD_CALLS)
                samples[mode][n].append(median(time_calls(contenders[n], calls, settle=PEER_SETTLE_SECONDS,
                                                          before=before)))
    return {"warm": {}, "cold": {}} | {mode: {n: median(s) for n, s in by.items()} for mode, by in samples.items()}


def checked_peers(factories: dict[str, Callable[..., Runner]], args: tuple, ref: np.ndarray, layer: str,
                  unavailable: dict[str, str]) -> dict[str, Runner]:
    """The peers' runners for ``args`` (workload, data, weight, threads),
    each checked against the float64 reference ``ref``; a peer that is not
    installed goes to ``unavailable`` with why, one that disagrees is an
    ``AssertionError`` naming the layer."""
    runners = {}
    for peer, make in factories.items():
        try:
            run = make(*args)
        except PeerUnavailable as e:
            unavailable[peer] = str(e)
            continue
        error = relative_error(run(), ref)
        if error >= 1e-3:
            raise AssertionError(f"{layer}: peer {peer} disagrees with the reference ({error:.2g})")
        runners[peer] = run
    return runners


def run_bench(suite: str, configs: Optional[ConfigSource] = None, threads: Optional[int] = None,
              peers: Optional[list[str]] = None, rounds: int = 7, min_block_seconds: float = 0.03,
              target: Optional[CpuTarget] = None, on_layer: Callable[[LayerResult], None] = lambda r: None,
              warm_only: bool = False) -> BenchReport:
    unknown = [p for p in peers or () if p not in PEERS]
    if unknown:  # checked first: the ceilings take a while to measure
        raise ValueError(f"peers: unknown {', '.join(unknown)} (peers: {', '.join(PEERS)})")
    target = target or host_target()
    threads = threads or target.cores
    numba.set_num_threads(threads)
    suite_name, layers = load_suite(suite)
    report = BenchReport(suite_name, target.to_dict(), threads, fma_ceiling(threads), sgemm_ceiling())
    probe, probe_flops = fma_probe(threads, iterations=200_000)
    for layer in layers:
        wl = layer.workload
        found = configs(wl) if configs else None
        config, source = found if found else (default_config(wl, target), "default")
        kernel = build(schedule_from_config(wl, config, target))
        x, w = _inputs(wl)
        conv = kernel.prepare(w)
        out = np.empty(wl.out_shape, np.float32)
        ref = conv2d_reference(wl, x, w)
        error = relative_error(conv(x, out=out), ref)
        if error >= TOLERANCE:
            raise AssertionError(f"{layer.name}: convtune's kernel is wrong (relative error {error:.2g})")
        contenders: dict[str, Callable[[], object]] = {
            CONVTUNE: lambda conv=conv, x=x, out=out: conv(x, out=out), FMA_PROBE: probe}
        contenders.update(checked_peers({p: PEERS[p] for p in (peers if peers is not None else PEERS)},
                                        (wl, x, w, threads), ref, layer.name, report.unavailable))
        flush = None if warm_only else CacheFlusher(threads, keep=(x,))
        seconds = bench_layer(contenders, rounds, min_block_seconds, flush)
        probe_gflops = probe_flops / seconds["warm"].pop(FMA_PROBE) / 1e9
        seconds["cold"].pop(FMA_PROBE, None)
        result = LayerResult(layer.name, wl.key, wl.flops, config, source, error,
                             {n: wl.flops / t / 1e9 for n, t in seconds["warm"].items()}, probe_gflops,
                             {n: wl.flops / t / 1e9 for n, t in seconds["cold"].items()})
        report.layers.append(result)
        on_layer(result)
    return report


def render_table(report: BenchReport):  # type: ignore[no-untyped-def]
    """A rich Table: GFLOP/s per contender, convtune / peer ratios, fraction of ceilings."""
    from rich.table import Table

    names = report.contenders()
    peers = [n for n in names if n != CONVTUNE]
    table = Table(title=f"{report.suite}: GFLOP/s, {report.threads} threads on {report.target['cpu']} "
                        f"(FMA ceiling {report.fma_ceiling:.0f}, sgemm {report.sgemm_ceiling:.0f})",
                  caption="% FMA: of the FMA probe timed in the same rounds as the layer (column 'FMA probe')")
    table.add_column("layer")
    for n in names:
        table.add_column(n, justify="right")
    for p in peers:
        table.add_column(f"x{p}", justify="right")
    table.add_column("x best", justify="right")
    colds = names if report.cold else []
    for n in colds:
        table.add_column(f"{n} cold", justify="right")
    if colds:
        table.add_column("x best cold", justify="right")
    table.add_column("FMA probe", justify="right")
    table.add_column("% FMA", justify="right")
    table.add_column("% sgemm", justify="right")
    table.add_column("config")
    for layer in report.layers:
        ours = layer.gflops[CONVTUNE]
        best = layer.gflops[layer.best_peer] if layer.best_peer else float("nan")
        table.add_row(
            layer.name, *(f"{layer.gflops[n]:.1f}" if n in layer.gflops else "-" for n in names),
            *(f"{ours / layer.gflops[p]:.2f}" if p in layer.gflops else "-" for p in peers),
            f"{ours / best:.2f}", *_cold_cells(layer, colds), f"{layer.fma_gflops:.0f}",
            f"{100 * layer.fma_fraction:.0f}",
            f"{100 * ours / report.sgemm_ceiling:.0f}",
            f"{layer.config['algorithm']} ({layer.config_source})")
    geo = {n: report.geomean(n) for n in names}
    best = report.best_peer_geomean()
    table.add_row("geomean", *(f"{geo[n]:.1f}" for n in names), *(f"{geo[CONVTUNE] / geo[p]:.2f}" for p in peers),
                  f"{geo[CONVTUNE] / best:.2f}", *_cold_geomean_cells(report, colds),
                  f"{_geomean([la.fma_gflops for la in report.layers]):.0f}",
                  f"{100 * report.fma_fraction_geomean():.0f}",
                  f"{100 * geo[CONVTUNE] / report.sgemm_ceiling:.0f}", f"best peer per layer: {best:.1f}",
                  style="bold")
    return table


def _cold_cells(layer: LayerResult, colds: list[str]) -> list[str]:
    """Cold GFLOP/s per contender and convtune over the best cold peer."""
    if not colds:
        return []
    cold = layer.cold_gflops
    peers = [cold[n] for n in colds if n != CONVTUNE and n in cold]
    return [*(f"{cold[n]:.1f}" if n in cold else "-" for n in colds),
            f"{cold[CONVTUNE] / max(peers):.2f}" if peers else "-"]


def _cold_geomean_cells(report: BenchReport, colds: list[str]) -> list[str]:
    if not colds:
        return []
    best = _geomean([max(v for n, v in la.cold_gflops.items() if n != CONVTUNE) for la in report.layers
                     if len(la.cold_gflops) > 1])
    return [*(f"{report.geomean(n, cold=True):.1f}" for n in colds),
            f"{report.geomean(CONVTUNE, cold=True) / best:.2f}"]
