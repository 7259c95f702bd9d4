"""The ``convtune`` command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tuner.bench import render_table, run_bench

    console = Console(width=None if sys.stdout.isatty() else 200)
    configs = None
    if args.log:
        from tuner.dispatch import ApplyHistoryBest

        best = ApplyHistoryBest(args.log)
        configs = best.config_for
    report = run_bench(args.suite, configs=configs, threads=args.threads, rounds=args.rounds,
                       peers=args.peers.split(",") if args.peers is not None else None,
                       on_layer=lambda r: console.print(f"  {r.name}: " + ", ".join(
                           f"{k} {v:.1f}" for k, v in r.gflops.items()), highlight=False))
    console.print(render_table(report))
    for peer, why in report.unavailable.items():
        console.print(f"[yellow]{peer} skipped: {why}[/yellow]")
    if args.json:
        Path(args.json).write_text(report.to_json())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convtune", description="Autotune and benchmark conv2d kernels.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="compare convtune with onnxruntime and PyTorch on a suite of layers")
    bench.add_argument("suite", help="built-in suite (resnet18, mobilenetv2_dw, resnet50_b32) or FILE.json[:NAME]")
    bench.add_argument("--log", help="tuning log: use each layer's best config (else the untuned default)")
    bench.add_argument("--threads", type=int, help="threads for every contender (default: all cores)")
    bench.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per layer (default 7)")
    bench.add_argument("--peers", help="comma-separated peers (default: onnxruntime,torch_nchw,torch_cl)")
    bench.add_argument("--json", help="also write the numbers to this JSON file")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"convtune {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convtune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
