"""``convtune bench --chain MODEL``: a model's convs timed inside runs of
the model against the same kernels timed alone, and onnxruntime's whole model.

Per-layer benchmarks time each kernel on its own, called back to back, with
its weights and scratch in cache; in a model they are not, and ResNet-18's
20 convs took 1.86x the sum of their isolated times in sequence
(shared/NOTES.md). This bench runs the model's own ``Session`` (its plan,
buffers and kernels: ``tuner.chain``) and reports, side by side in one run
and interleaved round by round (so drift hits all alike):

- the convs run back to back by one compiled driver over the model's plan
  (``sequence``: as the model's driver runs them, no Python between them), in
  NCHW mode (every kernel packs its input and unpacks its output) and in
  blocked mode (the model's plan: activations stay NCHW[x]c);
- each conv's time inside runs of the whole model stepped from Python (which
  layers lose in sequence), and their sum (``stepped``: a few microseconds of
  Python dispatch per conv more than the driver pays);
- the sum of each conv's isolated time, warm and cold (caches flushed), and
  sequence / warm sum: how much the isolated numbers flatter;
- the whole model through its compiled driver, and onnxruntime's whole model
  (convs and everything else), with the convs' and the model's time over it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable, Optional

import numba

from convtune.codegen.verify import TOLERANCE
from convtune.ir.onnx_frontend import import_model
from convtune.schedules.target import host_target
from convtune.tuner.cache_flush import CacheFlusher
from convtune.tuner.chain import MODES, ChainRun, Logs, prepare_chain
from convtune.tuner.model_bench import TOLERANCE as MODEL_TOLERANCE
from convtune.tuner.model_bench import outputs_error
from convtune.tuner.peers import PeerUnavailable, onnxruntime_session
from convtune.tuner.zoo import resolve_model
from convtune.tuner.timing import PEER_SETTLE_SECONDS, calls_per_block, median, time_calls

ORT = "onnxruntime"


@dataclass
class ModeResult:
    """One way of running the model: its convs in sequence and each alone."""

    sequence: float
    """Median seconds of the model's convs run back to back by one compiled driver."""
    isolated_warm: list[float]
    in_sequence: list[float]
    """Median seconds of each conv timed inside the model's run (stepped from
    Python): with the isolated times, shows which layers lose in sequence."""
    isolated_cold: list[float] = field(default_factory=list)
    error: float = 0.0
    """Largest relative error of a conv against the float64 reference."""
    blocked_tensors: int = 0
    model: float = 0.0
    """Seconds of the whole model through its compiled driver (convs and
    everything else, no Python between steps)."""

    @property
    def stepped(self) -> float:
        """The sum of ``in_sequence``: the convs timed one by one inside runs of the model."""
        return sum(self.in_sequence)

    @property
    def warm_sum(self) -> float:
        return sum(self.isolated_warm)

    @property
    def cold_sum(self) -> float:
        return sum(self.isolated_cold) if self.isolated_cold else float("nan")

    @property
    def slowdown(self) -> float:
        """Sequence time over the sum of warm isolated times."""
        return self.sequence / self.warm_sum


@dataclass
class ChainReport:
    model: str
    threads: int
    convs: list[str]
    modes: dict[str, ModeResult]
    onnxruntime: Optional[float] = None
    """Seconds of onnxruntime's whole model (None when it is unavailable)."""
    unavailable: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        for name, mode in self.modes.items():
            d["modes"][name].update(warm_sum=mode.warm_sum, cold_sum=mode.cold_sum, slowdown=mode.slowdown,
                                    stepped=mode.stepped)
        return json.dumps(d, indent=1)


def onnxruntime_model(path: str, run: ChainRun, threads: int) -> Callable[[], list]:
    """onnxruntime's session on the model file, as a call on the chain's
    feeds, checked against convtune's outputs on them."""
    try:
        session = onnxruntime_session(path, threads)
    except ImportError as e:
        raise PeerUnavailable(f"onnxruntime: {e} (pip install '.[bench]')") from None
    err = outputs_error(run.session.run(None, run.feeds), session.run(None, run.feeds))
    if not err < MODEL_TOLERANCE:
        raise AssertionError(f"{path}: convtune's outputs differ from onnxruntime's (relative error {err:.2g})")
    return lambda: session.run(None, run.feeds)


def run_chain_bench(model: str, logs: Logs = None, threads: Optional[int] = None,
                    rounds: int = 7, min_block_seconds: float = 0.02, cold: bool = True,
                    peers: bool = True) -> ChainReport:
    """Time ``model``'s conv chain in every mode, its whole model and
    onnxruntime's, interleaved over ``rounds``; each conv is checked first."""
    threads = threads or host_target().cores
    numba.set_num_threads(threads)
    path = str(resolve_model(model))
    graph = import_model(path)  # once: each mode's Session optimizes its own copy
    first = prepare_chain(graph, MODES[0], logs)
    runs = {MODES[0]: first, **{mode: prepare_chain(graph, mode, logs, first.feeds) for mode in MODES[1:]}}
    errors = {}
    for mode, run in runs.items():
        errors[mode] = run.check()
        if errors[mode] >= TOLERANCE:
            raise AssertionError(f"{mode} chain: a kernel is wrong (relative error {errors[mode]:.2g})")
    in_sequence: dict[str, list[list[float]]] = {m: [[] for _ in first.convs] for m in MODES}

    def stepped(run: ChainRun, per_conv: list[list[float]]) -> None:
        for samples, seconds in zip(per_conv, run.timed()):
            samples.append(seconds)

    contenders: dict[str, Callable[[], object]] = {f"sequence {m}": r.chain for m, r in runs.items()}
    contenders.update({f"stepped {m}": partial(stepped, r, in_sequence[m]) for m, r in runs.items()})
    contenders.update({f"model {m}": r.model for m, r in runs.items()})
    for mode, run in runs.items():
        contenders.update({f"{mode} {i}": call for i, call in enumerate(run.calls)})
    report = ChainReport(model, threads, first.names, {})
    if peers:
        try:
            contenders[ORT] = onnxruntime_model(path, first, threads)
        except PeerUnavailable as e:
            report.unavailable = str(e)
    flush = CacheFlusher(threads) if cold else None
    isolated = {f"{m} {i}" for m, r in runs.items() for i in range(len(r.calls))}
    warm, cold_s = _interleaved(contenders, rounds, min_block_seconds, flush, cold_names=isolated)
    n = len(first.convs)
    for mode, run in runs.items():
        report.modes[mode] = ModeResult(warm[f"sequence {mode}"], [warm[f"{mode} {i}"] for i in range(n)],
                                        [median(s) for s in in_sequence[mode]],
                                        [cold_s[f"{mode} {i}"] for i in range(n)] if cold else [], errors[mode],
                                        len(run.plan.layouts), warm[f"model {mode}"])
    report.onnxruntime = warm.get(ORT)
    return report


def _interleaved(contenders: dict[str, Callable[[], object]], rounds: int, min_block_seconds: float,
                 flush: Optional[Callable[[], object]],
                 cold_names: set[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of every contender warm, and of ``cold_names``
    with ``flush`` before each call: one block of each per round."""
    numbers = {n: calls_per_block(fn, min_block_seconds) for n, fn in contenders.items()}
    warm: dict[str, list[float]] = {n: [] for n in contenders}
    cold: dict[str, list[float]] = {n: [] for n in cold_names if flush}
    previous = list(contenders)[-1]  # calls_per_block ran them all, in order
    for _ in range(rounds):
        for name, fn in contenders.items():
            # onnxruntime's pool spins after a run and starves whatever runs next: pause around it
            settle = PEER_SETTLE_SECONDS if ORT in (name, previous) else 0.0
            previous = name
            warm[name].append(median(time_calls(fn, numbers[name], settle=settle)))
            if name in cold:
                cold[name].append(median(time_calls(fn, min(numbers[name], 3), settle=0.0, warmup=0, before=flush)))
    return {n: median(s) for n, s in warm.items()}, {n: median(s) for n, s in cold.items()}


def render_chain_table(report: ChainReport):  # type: ignore[no-untyped-def]
    """A rich Table: per mode, the convs in sequence against their isolated
    sums, the whole model, and both against onnxruntime's whole model."""
    from rich.table import Table

    ort = report.onnxruntime
    table = Table(title=f"{report.model}: {len(report.convs)} convs, {report.threads} threads, ms (median over rounds)",
                  caption="sequence: the convs back to back through one compiled driver, as the model runs them; "
                          "stepped: each conv timed inside runs of the model from Python, summed; sequence / warm "
                          f"sum: how much timing kernels alone flatters them; x {ORT}: over {ORT}'s whole model")
    for col in ("mode", "sequence", "stepped", "sum warm", "sum cold", "sequence / warm sum", "model", f"{ORT} model",
                f"sequence x {ORT}", f"model x {ORT}", "blocked tensors", "max error"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for name, mode in report.modes.items():
        table.add_row(name, f"{1e3 * mode.sequence:.2f}", f"{1e3 * mode.stepped:.2f}", f"{1e3 * mode.warm_sum:.2f}",
                      f"{1e3 * mode.cold_sum:.2f}",
                      f"{mode.slowdown:.2f}", f"{1e3 * mode.model:.2f}", f"{1e3 * ort:.2f}" if ort else "-",
                      f"{mode.sequence / ort:.2f}" if ort else "-", f"{mode.model / ort:.2f}" if ort else "-",
                      str(mode.blocked_tensors), f"{mode.error:.1e}")
    return table


def render_layer_table(report: ChainReport):  # type: ignore[no-untyped-def]
    """Per conv and mode: isolated warm and cold, and inside the sequence (us)."""
    from rich.table import Table

    table = Table(title=f"{report.model}: each conv alone (warm, cold) and inside the sequence, us")
    table.add_column("conv")
    for name in report.modes:
        for col in ("warm", "cold", "in sequence", "x warm"):
            table.add_column(f"{name} {col}", justify="right")
    for i, conv in enumerate(report.convs):
        cells = []
        for mode in report.modes.values():
            cold = f"{1e6 * mode.isolated_cold[i]:.0f}" if mode.isolated_cold else "-"
            cells += [f"{1e6 * mode.isolated_warm[i]:.0f}", cold, f"{1e6 * mode.in_sequence[i]:.0f}",
                      f"{mode.in_sequence[i] / mode.isolated_warm[i]:.2f}"]
        table.add_row(conv, *cells)
    return table


def chain_bench_command(args, console) -> int:  # type: ignore[no-untyped-def]
    """``convtune bench --chain MODEL [--log L] [--threads T] [--rounds R] [--warm] [--json F]``."""
    from pathlib import Path

    report = run_chain_bench(args.chain, logs=args.log, threads=args.threads, rounds=args.rounds,
                             cold=not args.warm, peers=args.peers is None or ORT in args.peers)
    console.print(render_layer_table(report))
    console.print(render_chain_table(report))
    if report.unavailable:
        console.print(f"[yellow]{ORT} skipped: {report.unavailable}[/yellow]")
    if args.json:
        Path(args.json).write_text(report.to_json())
    return 0
