"""``convtune bench MODEL``: a whole model end to end, convtune's ``Session``
side by side with onnxruntime in one run, on the same threads and inputs.

The runtimes are timed in interleaved rounds (``bench.bench_layer``: blocks
in rotating order, a pause between runtimes so onnxruntime's spinning pool
goes idle), after checking that convtune's outputs match onnxruntime's. The
per-layer breakdown comes from the Session's profile, each node beside
onnxruntime's time for the same layer inside its own run (its profiler,
``tuner.peer_profile``), the two profiled in alternating blocks. Start-up is timed in
fresh processes (``python -m convtune.tuner.model_bench``): cold, with an
empty kernel cache directory (every kernel compiled), then warm, a second
process on the same directory (kernels loaded from disk): seconds from
process start to the first output. The same probes give each runtime's peak
memory: the largest resident set of a fresh process that loads the model and
runs it once (the interpreter, the runtime's libraries, the weights and the
activation buffers all count, as they do for a user's process).

PyTorch (oneDNN, eager; NCHW and channels_last) joins where it is installed
and ``convtune.tuner.torch_model`` translates every operator of the model;
otherwise the report says why it is left out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from convtune.tuner.peer_profile import Key, OnnxruntimeProfile, match, node_key

if TYPE_CHECKING:
    from convtune.ir.graph import ModelGraph

CONVTUNE, ONNXRUNTIME = "convtune", "onnxruntime"
PYTORCH, PYTORCH_CL = "pytorch", "pytorch channels_last"
TOLERANCE = 1e-4
"""Relative error allowed between convtune's and onnxruntime's outputs."""


@dataclass
class LayerTime:
    node: str
    op: str
    seconds: float
    workload: str = ""
    """``Conv2D.short()`` for a conv; empty for other operators."""
    gflops: float = 0.0
    peer_seconds: Optional[float] = None
    """onnxruntime's time for the node computing the same inside its own
    whole-model run (its profiler, ``tuner.peer_profile``); None where none matched."""


@dataclass
class ModelBenchReport:
    model: str
    threads: int
    seconds: dict[str, float]
    """Median seconds per inference, per runtime."""
    error: float
    """convtune's relative error against onnxruntime (max over outputs)."""
    layers: list[LayerTime]
    profile_total: float
    startup: dict[str, float] = field(default_factory=dict)
    """"cold" / "warm": seconds from process start to the first output."""
    left_out: dict[str, str] = field(default_factory=dict)
    """Runtime -> why it was not compared (PyTorch not installed, an operator
    without a translation)."""
    peak_mb: dict[str, float] = field(default_factory=dict)
    """Per runtime: peak resident MiB of a process that loads the model and
    runs it once (convtune's from the warm start)."""
    peer_reorder_seconds: float = 0.0
    """onnxruntime's layout reorders per run (nodes with no convtune counterpart)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def random_feeds(model) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Fresh standard-normal inputs for anything with ``get_inputs`` (a
    Session, an onnxruntime InferenceSession) or a ModelGraph's inputs:
    outputs are checked on new values each run."""
    shapes = ([(s.name, s.shape) for s in model.get_inputs()] if hasattr(model, "get_inputs")
              else [(t, model.tensors[t].shape) for t in model.inputs])
    rng = np.random.default_rng()
    return {name: rng.standard_normal([d if isinstance(d, int) else 1 for d in shape]).astype(np.float32)
            for name, shape in shapes}


def _plan_keys(session) -> list[tuple[str, Key]]:  # type: ignore[no-untyped-def]
    """Each plan node's name and ``peer_profile.node_key``."""
    keys = []
    for step in session.plan.steps:
        node = step.node
        wl = node.attrs.get("workload") if node.op == "FusedConv" else None
        if wl is not None:
            keys.append((node.name, node_key("Conv", wl.weight_shape, wl.out_shape)))
        elif node.outputs and node.outputs[0] in session.graph.tensors:
            keys.append((node.name, node_key(node.op, None, session.graph.tensors[node.outputs[0]].shape)))
    return keys


PROFILE_BLOCKS = 3
"""Alternating blocks of convtune's profile and onnxruntime's. Taken one
pass apart, in a VM whose speed drifted 2x between stretches of an hour,
the two per-node columns had come from different stretches: mobilenet_v2's
32->16 1x1 at 112x112 read 3.06x onnxruntime's time from one pass of each,
2.00x from interleaved blocks."""


def _layers(session, path: str | Path, feeds: dict[str, np.ndarray], threads: int,  # type: ignore[no-untyped-def]
            rounds: int) -> tuple[list[LayerTime], float, float]:
    """Each plan node's time (the median over ``PROFILE_BLOCKS`` profiles of
    ``rounds`` runs) beside onnxruntime's for the same layer (its median over
    the runs of the blocks between); the model's profiled end-to-end time;
    onnxruntime's layout reorders."""
    ours, totals = [], []
    peer_profile = OnnxruntimeProfile(path, threads)
    for block in range(PROFILE_BLOCKS):
        profile = session.profile(feeds, rounds=rounds)
        ours.append(profile.per_node)
        totals.append(profile.total)
        peer_profile.run(feeds, rounds + (block == 0))  # its first run is left out
    nodes, reorders = peer_profile.close()
    peer = match(_plan_keys(session), nodes)
    planned = {s.node.name: s.node for s in session.plan.steps}  # transposed convs' sub-convs are plan nodes only
    layers = []
    for i, (name, op, _) in enumerate(ours[0]):
        seconds = statistics.median(block[i][2] for block in ours)
        wl = planned[name].attrs.get("workload") if op == "FusedConv" else None
        layers.append(LayerTime(name, op, seconds, wl.short() if wl else "",
                                wl.flops / seconds / 1e9 if wl and seconds > 0 else 0.0, peer.get(name)))
    return layers, statistics.median(totals), reorders


def outputs_error(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """The largest relative error of a runtime's outputs against another's."""
    from convtune.ir.reference import relative_error

    return max(relative_error(g, r.astype(np.float64)) for g, r in zip(got, ref))


def bench_model(path: str | Path, log: Optional[str], threads: int, rounds: int = 7, min_block_seconds: float = 0.05,
                startup: bool = True) -> ModelBenchReport:
    """Time the model at ``path`` (convtune with ``log``'s configs, else
    defaults) against onnxruntime; raise ``AssertionError`` if they disagree."""
    import numba

    from convtune.ir.onnx_frontend import import_model
    from convtune.tuner.bench import bench_layer
    from convtune.tuner.peers import onnxruntime_session
    from convtune.tuner.session import Session

    numba.set_num_threads(threads)
    graph = import_model(path)  # once: the Session's optimized copy and PyTorch's runners share its weights
    session = Session(graph, logs=log)
    feeds = random_feeds(session)
    peer = onnxruntime_session(str(path), threads)
    pytorch, left_out = _pytorch_runners(graph, threads)
    runners = {CONVTUNE: lambda: session.run(None, feeds), ONNXRUNTIME: lambda: peer.run(None, feeds),
               **{name: lambda run=run: run(feeds) for name, run in pytorch.items()}}
    expected = runners[ONNXRUNTIME]()
    errors = {name: outputs_error(run(), expected) for name, run in runners.items() if name != ONNXRUNTIME}
    for name, error in errors.items():
        if not error < TOLERANCE:
            raise AssertionError(f"{path}: {name}'s outputs differ from onnxruntime's (relative error {error:.2g})")
    seconds = bench_layer(runners, rounds, min_block_seconds)["warm"]
    layers, total, reorders = _layers(session, path, feeds, threads, rounds)
    report = ModelBenchReport(str(path), threads, seconds, errors[CONVTUNE], layers, total, left_out=left_out,
                              peer_reorder_seconds=reorders)
    if startup:
        report.startup, report.peak_mb = start_up(path, log, threads)
    return report


def _pytorch_runners(graph: ModelGraph, threads: int) -> tuple[dict[str, Callable], dict[str, str]]:
    """PyTorch's runners (NCHW, channels_last) of the imported ``graph``, or
    why there are none."""
    from convtune.tuner.peers import PeerUnavailable
    from convtune.tuner.torch_model import NotTranslated, torch_runner

    try:
        return {name: torch_runner(graph, threads, channels_last)
                for name, channels_last in ((PYTORCH, False), (PYTORCH_CL, True))}, {}
    except (PeerUnavailable, NotTranslated) as e:
        return {}, {PYTORCH: str(e)}


def start_up(path: str | Path, log: Optional[str], threads: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds to the first output of a fresh process, "cold" with an empty
    kernel cache directory, then "warm", a second process on it; and each
    runtime's peak resident MiB (convtune's warm process, then an
    onnxruntime process doing the same)."""
    seconds, peak = {}, {}
    with tempfile.TemporaryDirectory(prefix="convtune-cold-") as cache:
        env = dict(os.environ, CONVTUNE_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads))
        command = [sys.executable, "-m", "convtune.tuner.model_bench", str(path), "--threads", str(threads)]
        command += ["--log", log] if log else []
        for kind, runtime in (("cold", CONVTUNE), ("warm", CONVTUNE), ("peer", ONNXRUNTIME)):
            start = time.perf_counter()
            done = subprocess.run([*command, "--runtime", runtime], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"{kind} start of {path} failed (exit {done.returncode}): {last}")
            if runtime == CONVTUNE:
                seconds[kind] = elapsed
            if kind != "cold":  # compiling's own memory is not the loaded model's
                peak[runtime] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
    return seconds, peak


def render(report: ModelBenchReport, top: int = 15):  # type: ignore[no-untyped-def]
    """Rich tables: end to end per runtime, then the slowest layers."""
    from rich.console import Group
    from rich.table import Table

    ours = report.seconds[CONVTUNE]
    e2e = Table(title=f"{report.model}: end to end, {report.threads} threads (relative error vs onnxruntime "
                      f"{report.error:.1e})")
    columns = ("runtime", "ms", "convtune / it", *(("peak MiB",) if report.peak_mb else ()))
    for col in columns:
        e2e.add_column(col, justify="right" if col != "runtime" else "left")
    for name, s in report.seconds.items():
        memory = (f"{report.peak_mb[name]:.0f}",) if name in report.peak_mb else ("",) * (len(columns) - 3)
        e2e.add_row(name, f"{1e3 * s:.2f}", f"{ours / s:.2f}x", *memory)
    for kind, s in report.startup.items():
        e2e.add_row(f"convtune {kind} start (to first output)", f"{1e3 * s:.0f}", "", *("",) * (len(columns) - 3))
    if report.left_out:
        e2e.caption = "; ".join(f"{name} not compared: {why}" for name, why in report.left_out.items())
    layers = Table(title=f"slowest {top} of {len(report.layers)} nodes (profile: {1e3 * report.profile_total:.2f} ms "
                         f"end to end, {1e3 * sum(layer.seconds for layer in report.layers):.2f} ms in nodes)")
    for col in ("node", "op", "workload", "ms", "GFLOP/s", "% of nodes", "onnxruntime ms", "convtune / it"):
        layers.add_column(col, justify="left" if col in ("node", "op", "workload") else "right")
    in_nodes = sum(layer.seconds for layer in report.layers) or 1.0
    for layer in sorted(report.layers, key=lambda x: -x.seconds)[:top]:
        peer = layer.peer_seconds
        layers.add_row(layer.node, layer.op, layer.workload, f"{1e3 * layer.seconds:.3f}",
                       f"{layer.gflops:.1f}" if layer.workload else "", f"{100 * layer.seconds / in_nodes:.1f}",
                       f"{1e3 * peer:.3f}" if peer else "", f"{layer.seconds / peer:.2f}x" if peer else "")
    matched = [layer for layer in report.layers if layer.peer_seconds]
    layers.caption = (f"onnxruntime column: its profiler inside its own whole-model run, matched by operator and "
                      f"shapes ({len(matched)} of {len(report.layers)} nodes: convtune "
                      f"{1e3 * sum(la.seconds for la in matched):.2f} ms, onnxruntime "
                      f"{1e3 * sum(la.peer_seconds or 0.0 for la in matched):.2f} ms; its layout reorders "
                      f"{1e3 * report.peer_reorder_seconds:.2f} ms more)")
    return Group(e2e, layers)


def peak_resident_mib() -> float:
    """This process image's peak resident set (``VmHWM``). Not ``getrusage``'s
    ``ru_maxrss``: Linux carries that across ``exec`` from the forked parent,
    so a probe started by a 900 MiB bench would report 900 MiB whatever it
    loaded."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kib / 1024


def _first_output(argv: list[str]) -> int:
    """The start-up probe: load the model in one runtime and run it once, then
    print the process's peak resident MiB as JSON and exit."""
    parser = argparse.ArgumentParser(prog="python -m convtune.tuner.model_bench")
    parser.add_argument("model")
    parser.add_argument("--log")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runtime", choices=(CONVTUNE, ONNXRUNTIME), default=CONVTUNE)
    args = parser.parse_args(argv)
    if args.runtime == ONNXRUNTIME:
        from convtune.tuner.peers import onnxruntime_session

        session = onnxruntime_session(args.model, args.threads)
    else:
        import warnings

        import numba

        from convtune.tuner.session import Session

        numba.set_num_threads(args.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untuned fallbacks were reported by the parent
            session = Session(args.model, logs=args.log)
    outputs = session.run(None, random_feeds(session))
    print(json.dumps({"peak_mb": peak_resident_mib()}))
    return 0 if all(np.all(np.isfinite(o)) for o in outputs) else 1


if __name__ == "__main__":
    sys.exit(_first_output(sys.argv[1:]))
