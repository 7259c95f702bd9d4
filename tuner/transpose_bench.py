"""``convtune bench --transpose``: transposed convs, both lowerings side by side with the peers.

Each layer runs as convtune runs it in a model (``codegen.conv_transpose``:
input placement, the sub-convs with the log's configs or the defaults, the
interleave) once per lowering, and as onnxruntime's ConvTranspose and
PyTorch's ``conv_transpose2d`` where installed, all on the same inputs,
checked against the float64 reference, timed interleaved warm and cold
(``bench.bench_layer``). Suites are JSON like ``bench``'s, with the
transposed conv's fields (``pad``, ``output_padding``, ...); the built-in
``upsampling`` holds DCGAN and U-Net decoder layers.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numba

from convtune.ir.conv_transpose_lowering import LOWERINGS
from convtune.ir.reference_transpose import conv2d_transpose_reference
from convtune.ir.workload import WorkloadError
from convtune.ir.workload_transpose import ConvTranspose2D, conv2d_transpose
from convtune.schedules.target import host_target
from convtune.tuner.bench import bench_layer, checked_peers
from convtune.tuner.cache_flush import CacheFlusher
from convtune.tuner.conv_transpose_timing import checked_lowerings, layer_inputs
from convtune.tuner.dispatch import ApplyHistoryBest, FallbackWarning
from convtune.tuner.peers import TRANSPOSE_PEERS

UPSAMPLING = [
    {"name": "dcgan_4x4_s2", "N": 1, "C": 64, "H": 16, "W": 16, "K": 32, "R": 4, "stride": 2, "pad": 1},
    {"name": "unet_3x3_s2_op1", "N": 1, "C": 64, "H": 16, "W": 16, "K": 32, "R": 3, "stride": 2, "pad": 1,
     "output_padding": 1},
    {"name": "unet_2x2_s2", "N": 1, "C": 128, "H": 14, "W": 14, "K": 64, "R": 2, "stride": 2},
    {"name": "fcn_4x4_s2_g2", "N": 1, "C": 32, "H": 28, "W": 28, "K": 32, "R": 4, "stride": 2, "pad": 1,
     "groups": 2},
]
"""The built-in suite ``upsampling``."""


@dataclass
class TransposeLayerResult:
    name: str
    workload: str
    flops: int
    lowering: str
    """What dispatch runs: the lowering measured fastest in tuning, else "subpixel (default)"."""
    seconds: dict[str, float]
    cold_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class TransposeBenchReport:
    suite: str
    threads: int
    layers: list[TransposeLayerResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _layer(entry: dict, where: str) -> tuple[str, ConvTranspose2D]:
    try:
        return entry.get("name", where), conv2d_transpose(
            entry["N"], entry["C"], entry["H"], entry["W"], entry["K"], entry["R"], entry.get("S", entry["R"]),
            stride=entry.get("stride", 1), padding=entry.get("pad", 0),
            output_padding=entry.get("output_padding", 0), dilation=entry.get("dilation", 1),
            groups=entry.get("groups", 1))
    except KeyError as e:
        raise ValueError(f"{where}: missing field {e}") from None
    except WorkloadError as e:
        raise ValueError(f"{where}: {e}") from None


def load_transpose_suite(spec: str) -> tuple[str, list[tuple[str, ConvTranspose2D]]]:
    """``upsampling`` (built in), or a JSON file holding one suite of transposed layers."""
    if spec == "upsampling":
        entries = UPSAMPLING
    elif Path(spec).is_file():
        data = json.loads(Path(spec).read_text())
        if not (isinstance(data, dict) and len(data) == 1):
            raise ValueError(f"{spec}: expected one suite, {{\"name\": [layers]}}")
        spec, entries = next(iter(data.items()))
    else:
        raise ValueError(f"unknown transposed suite {spec!r}: not 'upsampling' nor a JSON file")
    return spec, [_layer(e, f"{spec}[{i}]") for i, e in enumerate(entries)]


def run_transpose_bench(suite: str = "upsampling", log: Optional[str] = None, threads: Optional[int] = None,
                        rounds: int = 7, min_block_seconds: float = 0.03, warm_only: bool = False,
                        on_layer: Callable[[TransposeLayerResult], None] = lambda r: None) -> TransposeBenchReport:
    threads = threads or host_target().cores
    numba.set_num_threads(threads)
    name, layers = load_transpose_suite(suite)
    dispatcher = ApplyHistoryBest([] if log is None else log)
    report = TransposeBenchReport(name, threads)
    for layer_name, wl in layers:
        x, w, b = layer_inputs(wl)
        with warnings.catch_warnings():  # without a log every sub-conv is untuned: the table says "default"
            if log is None:
                warnings.simplefilter("ignore", FallbackWarning)
            ref = conv2d_transpose_reference(wl, x, w, b)
            convs = checked_lowerings(wl, dispatcher, x, w, b, ref)
        contenders: dict[str, Callable[[], object]] = {f"convtune {n}": (lambda c=c: c(x)) for n, c in convs.items()}
        contenders.update(checked_peers(TRANSPOSE_PEERS, (wl, x, w, threads), ref, layer_name, report.unavailable))
        flush = None if warm_only else CacheFlusher(threads, keep=(x,))
        seconds = bench_layer(contenders, rounds, min_block_seconds, flush)
        measured = wl.key in dispatcher.lowerings
        result = TransposeLayerResult(layer_name, wl.key, wl.flops,
                                      dispatcher.lowering_for(wl) + ("" if measured else " (default)"),
                                      seconds["warm"], seconds["cold"])
        report.layers.append(result)
        on_layer(result)
    return report


def render_transpose_table(report: TransposeBenchReport):  # type: ignore[no-untyped-def]
    """Milliseconds per contender, and onnxruntime's time over each lowering's (> 1: convtune is faster)."""
    from rich.table import Table

    names = list(report.layers[0].seconds) if report.layers else []
    lowerings = [f"convtune {n}" for n in LOWERINGS]
    peers = [n for n in names if n not in lowerings]
    table = Table(title=f"{report.suite}: transposed convs, ms per call (warm; cold after /), "
                        f"{report.threads} threads",
                  caption="xPEER: the peer's time over the lowering's (> 1: convtune faster)")
    table.add_column("layer")
    for n in names:
        table.add_column(n, justify="right")
    for low in lowerings:
        for p in peers:
            table.add_column(f"{low.split()[1]} x{p}", justify="right")
    table.add_column("dispatch runs")
    for layer in report.layers:
        cold = layer.cold_seconds

        def cell(n: str) -> str:
            return f"{1e3 * layer.seconds[n]:.3f}" + (f" / {1e3 * cold[n]:.3f}" if n in cold else "")

        ratios = [f"{layer.seconds[p] / layer.seconds[low]:.2f}" for low in lowerings for p in peers]
        table.add_row(layer.name, *(cell(n) for n in names), *ratios, layer.lowering)
    return table
