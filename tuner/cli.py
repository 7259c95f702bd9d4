"""The ``convtune`` command line."""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from convtune.tuner.suites import suite_names

if TYPE_CHECKING:
    from rich.console import Console

    from convtune.tuner.measure import MeasureOptions
    from convtune.tuner.search import TuneResult


def _search_bench(args: argparse.Namespace, console) -> int:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from convtune.tuner.search_bench import plot, run_search_bench, to_json

    workdir = Path(args.search_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    tol = 0.05
    results = run_search_bench(workdir, seeds=args.seeds, tolerance=tol, on_layer=lambda r: console.print(
        f"  {r.name}: grid of {r.grid_size} measured, best {r.grid_best:.1f} GFLOP/s", highlight=False))
    table = Table(title=f"trials to reach {100 - 100 * tol:.0f}% of the exhaustive grid's best "
                        f"(median over {args.seeds} seeds; grid measured once, strategies replayed on it)")
    for col in ("layer", "grid size", "grid best GFLOP/s", "random", "tpe", "tpe / grid"):
        table.add_column(col, justify="right")
    for r in results:
        rnd, tpe = r.median_trials("random", tol), r.median_trials("tpe", tol)
        table.add_row(r.name, str(r.grid_size), f"{r.grid_best:.1f}", f"{rnd:g}", f"{tpe:g}",
                      f"{100 * tpe / r.grid_size:.0f}%")
    console.print(table)
    plot(results, workdir / "search_efficiency.png")
    (workdir / "search_efficiency.json").write_text(to_json(results, tol))
    console.print(f"plot: {workdir / 'search_efficiency.png'}; numbers: {workdir / 'search_efficiency.json'}")
    return 0


def _transpose_bench(args: argparse.Namespace, console) -> int:  # type: ignore[no-untyped-def]
    from convtune.tuner.transpose_bench import render_transpose_table, run_transpose_bench

    report = run_transpose_bench(args.suite or "upsampling", log=args.log, threads=args.threads, rounds=args.rounds,
                                 warm_only=args.warm, on_layer=lambda r: console.print(f"  {r.name}: " + ", ".join(
                                     f"{k} {1e3 * v:.3f} ms" for k, v in r.seconds.items()), highlight=False))
    return _show_report(console, render_transpose_table(report), report.unavailable, report.to_json, args.json)


def _show_report(console, table, unavailable: dict[str, str], to_json, path: str | None) -> int:  # type: ignore[no-untyped-def]
    """Print a bench's table and the peers it skipped; write its JSON to ``path`` if given."""
    console.print(table)
    for peer, why in unavailable.items():
        console.print(f"[yellow]{peer} skipped: {why}[/yellow]")
    if path:
        Path(path).write_text(to_json())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from convtune.tuner.bench import render_table, run_bench

    console = Console(width=None if sys.stdout.isatty() else 200)
    if args.search:
        return _search_bench(args, console)
    if args.chain:
        from convtune.tuner.chain_bench import chain_bench_command

        return chain_bench_command(args, console)
    if args.transpose:
        return _transpose_bench(args, console)
    if not args.suite:
        raise ValueError("give a suite (or --search)")
    from convtune.tuner.cli_model import bench_model_command, names_a_model

    if args.model or names_a_model(args.suite):
        return bench_model_command(args, console)
    configs = None
    if args.log:
        from convtune.tuner.dispatch import ApplyHistoryBest

        best = ApplyHistoryBest(args.log)
        configs = best.config_for
    report = run_bench(args.suite, configs=configs, threads=args.threads, rounds=args.rounds, peers=args.peers,
                       warm_only=args.warm,
                       on_layer=lambda r: console.print(f"  {r.name}: " + ", ".join(
                           f"{k} {v:.1f}" for k, v in r.gflops.items()), highlight=False))
    return _show_report(console, render_table(report), report.unavailable, report.to_json, args.json)


CONV_KEYS = ("N", "C", "H", "W", "K", "R", "S", "stride", "pad", "dilation", "groups", "bias", "residual", "act")


def parse_conv(spec: str):  # type: ignore[no-untyped-def]
    """``N=1,C=64,H=56,W=56,K=64,R=3,S=3,stride=1,pad=1[,dilation=1,groups=1,bias=1,residual=1,act=relu]``;
    pairs as ``1:2``, padding also as ``same``/``valid`` or ``top:left:bottom:right``. ``act`` is one of
    ``ir.workload.ACTIVATIONS`` (relu, relu6, clip, leaky_relu, sigmoid, hardsigmoid, hardswish, silu,
    tanh) with its default parameters."""
    from convtune.ir.workload import conv2d

    fields: dict[str, object] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in CONV_KEYS:
            raise ValueError(f"--conv: expected KEY=VALUE with KEY in {', '.join(CONV_KEYS)}, got {part!r}")
        if (key == "pad" and value in ("same", "valid", "same_lower")) or key == "act":
            fields[key] = value
            continue
        try:
            nums = tuple(int(v) for v in value.split(":"))
        except ValueError:
            raise ValueError(f"--conv: {key}={value!r} is not an integer (or a:b pair)") from None
        fields[key] = nums[0] if len(nums) == 1 else nums
    missing = [k for k in ("N", "C", "H", "W", "K", "R") if k not in fields]
    if missing:
        raise ValueError(f"--conv: missing {', '.join(missing)}")
    return conv2d(fields["N"], fields["C"], fields["H"], fields["W"], fields["K"], fields["R"], fields.get("S"),
                  stride=fields.get("stride", 1), padding=fields.get("pad", 0),
                  dilation=fields.get("dilation", 1), groups=fields.get("groups", 1), bias=bool(fields.get("bias", 0)),
                  residual=bool(fields.get("residual", 0)), activation=fields.get("act"))


def _workloads(args: argparse.Namespace) -> list[tuple[str, object]]:
    from convtune.tuner.suites import load_suite

    if args.conv:
        return [(spec, parse_conv(spec)) for spec in args.conv]
    name, layers = load_suite(args.suite)
    wanted = set(args.layers.split(",")) if args.layers else None
    if wanted:
        unknown = wanted - {layer.name for layer in layers}
        if unknown:
            raise ValueError(f"--layers: {', '.join(sorted(unknown))} not in suite {name}")
    return [(layer.name, layer.workload) for layer in layers if not wanted or layer.name in wanted]


def _import_plugins(modules: Sequence[str]) -> None:
    """Import ``--plugin`` modules here, not only in the measurement worker:
    the search space is built in this process from the registered templates.
    Any error of the plugin's own code is reported in one line."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - a plugin is user code and may raise anything
            hint = " (is it on PYTHONPATH?)" if isinstance(e, ModuleNotFoundError) else ""
            first = str(e).splitlines()[0] if str(e) else ""
            raise ValueError(f"--plugin {module}: {type(e).__name__}: {first}{hint}") from None


def _storage_problem(e: Exception, args: argparse.Namespace) -> int:
    """One line for a storage URL that does not parse or a database that
    cannot be reached, instead of SQLAlchemy's traceback; 2 for a malformed
    URL (a bad argument), 1 for a database that failed."""
    import sqlalchemy.exc

    from convtune.tuner.search import default_storage

    url = args.storage or default_storage(args.log)
    why = str(getattr(e, "orig", None) or e).splitlines()[0]
    print(f"convtune tune: storage {url!r}: {why}", file=sys.stderr)
    return 2 if isinstance(e, sqlalchemy.exc.ArgumentError) else 1


def _tune(args: argparse.Namespace) -> int:
    if (args.refine or args.refine_only) and not args.model:
        raise ValueError("--refine and --refine-only need a MODEL (they judge configs by the model's time)")
    if args.model:
        from convtune.tuner.cli_model import tune_model_command

        return tune_model_command(args)
    import sqlalchemy.exc
    from rich.console import Console

    from convtune.tuner.measure import MeasureOptions

    target = _target(args.target)
    _import_plugins(args.plugin)
    workloads = _workloads(args)
    console = Console(width=None if sys.stdout.isatty() else 160)
    options = MeasureOptions(repeats=args.repeats, timeout=args.timeout, plugins=tuple(args.plugin),
                             cold=not args.warm, target=args.target)
    try:
        results = _tune_workloads(args, workloads, options, console, target)
    except sqlalchemy.exc.SQLAlchemyError as e:
        return _storage_problem(e, args)
    if results is None:
        return 130
    for name, r in results:
        best = f"{r.best.gflops:.1f} GFLOP/s {r.best.config}" if r.best else "no successful candidate"
        console.print(f"{name}: {r.measured} measured ({r.failures} failed, stopped: {r.stopped_reason}); best {best}",
                      highlight=False)
    return 0


def _target(name: str):  # type: ignore[no-untyped-def]
    """The target ``--target`` names; for cuda, one line when there is no GPU (nor the simulator)."""
    if name == "cpu":
        from convtune.schedules.target import host_target

        return host_target()
    from convtune.codegen.cuda_build import cuda_target, cuda_unavailable

    reason = cuda_unavailable()
    if reason:
        raise ValueError(f"--target cuda: {reason}")
    return cuda_target()


def _tune_workloads(args: argparse.Namespace, workloads: list[tuple[str, object]], options: MeasureOptions,
                    console: Console, target: object) -> list[tuple[str, TuneResult]] | None:
    """Tune each workload under a progress bar: (name, TuneResult) pairs, or
    None after Ctrl-C (said on the console)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from convtune.tuner.measure import Measurer
    from convtune.tuner.search import tune

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("trial {task.completed}/{task.total}"),
               TextColumn("best {task.fields[best]:.1f} GFLOP/s"), TextColumn("failures {task.fields[failures]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    results = []
    with Measurer(options) as measurer, Progress(*columns, console=console) as progress:
        for name, wl in workloads:
            task = progress.add_task(name, total=args.trials, best=0.0, failures=0)

            def update(p, task=task):  # type: ignore[no-untyped-def]
                progress.update(task, completed=p.measured, best=p.best_gflops, failures=p.failures)

            try:
                result = tune(wl, log=args.log, strategy=args.strategy, n_trials=args.trials, storage=args.storage,
                              seed=args.seed, options=options, on_progress=update, measurer=measurer,
                              target=target)
            except KeyboardInterrupt:
                progress.stop()
                console.print(f"interrupted: {args.log} and the study are intact; rerun the same command to resume")
                return None
            progress.update(task, completed=result.measured)
            results.append((name, result))
    return results


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from convtune.schedules.target import host_target
    from convtune.tuner import records

    recs = list(records.read(args.log))
    here = host_target().key
    best = records.best_records(recs)
    table = Table(title=f"{args.log}: best record per workload")
    numbers = ("GFLOP/s", "trials", "failed", "s/trial", "compile s", "measure s")
    for col in ("workload", "target", *numbers, "config"):
        table.add_column(col, justify="right" if col in numbers else "left")
    for (wkey, tkey), rec in sorted(best.items(), key=lambda kv: kv[1].workload_obj.short()):
        if tkey != here and not args.all_targets:
            continue
        same = [r for r in recs if r.workload_key == wkey and r.target_key == tkey]
        p = records.pace(same, recs)
        table.add_row(rec.workload_obj.short(), "this machine" if tkey == here else rec.target.get("cpu", rec.target.get("name")),
                      f"{rec.gflops:.1f}", str(len(same)), str(sum(1 for r in same if not r.ok)),
                      f"{p.seconds_per_trial:.1f}", f"{p.compile_seconds:.2f}", f"{p.measure_seconds:.2f}",
                      " ".join(f"{k}={v}" for k, v in rec.config.items()))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    others = sum(1 for (_, tkey) in best if tkey != here)
    if others and not args.all_targets:
        print(f"({others} workload(s) tuned on other targets hidden; --all-targets shows them)")
    return 0


def _log_best(args: argparse.Namespace) -> int:
    from convtune.tuner import records

    best = records.best_records(records.read(args.input))
    out = Path(args.output)
    if out.exists():
        raise ValueError(f"{out} exists; not overwriting it")
    if not best:
        print(f"convtune log best: no successful record in {args.input}; {out} not written", file=sys.stderr)
        return 1
    for rec in best.values():
        records.append(out, rec)
    print(f"{len(best)} best record(s) written to {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Errors in one line, as the README promises, not argparse's usage block
    followed by the error (subparsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a finite number of ``kind`` above zero (a zero
    timeout or repeat count would log every candidate as failed, or time
    nothing, instead of telling the user)."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def _peer_names(text: str) -> list[str]:
    """``--peers``: comma-separated names of known peers (empty: none)."""
    from convtune.tuner.peers import PEERS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(unknown)} (peers: {', '.join(PEERS)})")
    return names


def _version_line() -> str:
    """convtune's version and those of the compiler stack its kernels depend on."""
    from convtune.tuner.records import versions

    return ", ".join(f"{name} {v}" for name, v in versions().items())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convtune", description="Autotune and benchmark conv2d kernels.")
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="compare convtune with onnxruntime and PyTorch on a suite of layers")
    bench.add_argument("suite", nargs="?", help=f"built-in suite ({', '.join(suite_names())}) or FILE.json[:NAME]")
    bench.add_argument("--log", help="tuning log: use each layer's best config (else the untuned default)")
    bench.add_argument("--threads", type=_positive(int), help="threads for every contender (default: all cores)")
    bench.add_argument("--rounds", type=_positive(int), default=7,
                       help="interleaved timing rounds per layer (default 7)")
    bench.add_argument("--peers", type=_peer_names,
                       help="comma-separated peers (default: onnxruntime,torch_nchw,torch_cl)")
    bench.add_argument("--json", help="also write the numbers to this JSON file")
    bench.add_argument("--model", action="store_true", help="the positional is a model (an .onnx file or a zoo "
                       "model), benchmarked end to end; needed only for resnet18, also a layer suite")
    bench.add_argument("--no-startup", action="store_true", help="with a model: skip timing cold and warm start")
    bench.add_argument("--warm", action="store_true", help="time warm only (default: warm and with the caches "
                       "flushed before each call, side by side)")
    bench.add_argument("--chain", metavar="MODEL", help="instead: a model's convs (zoo name or .onnx) in sequence "
                       "against the sum of their isolated times, and onnxruntime's whole model")
    bench.add_argument("--transpose", action="store_true", help="instead: transposed convs (suite 'upsampling' "
                       "or a JSON file), both lowerings side by side with onnxruntime's and PyTorch's")
    bench.add_argument("--search", action="store_true", help="instead: search efficiency of grid / random / TPE "
                       "on r18_c2, r18_c5, r18_c8")
    bench.add_argument("--seeds", type=_positive(int), default=5, help="seeds per strategy for --search (default 5)")
    bench.add_argument("--search-dir", default="logs/search", help="where --search writes logs, JSON and plot")
    bench.set_defaults(run=_bench)

    tune = sub.add_parser("tune", help="tune conv layers and append every measured candidate to a log")
    tune.add_argument("model", nargs="?", help="an .onnx file or a zoo model: tune its convs, the budget spread "
                      "by share of latency (instead of --suite or --conv)")
    what = tune.add_mutually_exclusive_group()
    what.add_argument("--conv", action="append", help="a workload, e.g. N=1,C=64,H=56,W=56,K=64,R=3,S=3,stride=1,pad=1 "
                      "(repeatable)")
    what.add_argument("--suite", default="resnet18", help="a built-in suite or FILE.json[:NAME] (default resnet18)")
    tune.add_argument("--layers", help="comma-separated layer names of the suite (default: all)")
    tune.add_argument("--target", default="cpu", choices=("cpu", "cuda"),
                      help="cpu, or cuda (the GPU; numba's simulator with NUMBA_ENABLE_CUDASIM=1)")
    tune.add_argument("--strategy", default="tpe", choices=("grid", "random", "tpe"))
    tune.add_argument("--trials", type=_positive(int), default=100,
                      help="measured candidates per workload, with MODEL per task on average (default 100)")
    tune.add_argument("--log", default="logs/convtune.jsonl", help="tuning log (default logs/convtune.jsonl)")
    tune.add_argument("--storage", help="Optuna storage URL shared by workers, e.g. postgresql://user@host/db "
                      "(default: a SQLite file next to the log)")
    tune.add_argument("--seed", type=int, help="sampler seed (reproducible search)")
    tune.add_argument("--timeout", type=_positive(float), default=120.0,
                      help="seconds allowed per candidate (default 120)")
    tune.add_argument("--repeats", type=_positive(int), default=5, help="timed repeats per candidate (default 5)")
    tune.add_argument("--warm", action="store_true", help="time calls back to back with warm caches (default: "
                      "caches flushed before each timed call, as a layer finds them in a model)")
    tune.add_argument("--refine", action="store_true", help="with a MODEL: then choose each task's config among "
                      "its best of every algorithm by the whole model's time (layouts depend on the neighbours' "
                      "configs), and log the choices (extra.cache 'model'; resumable)")
    tune.add_argument("--refine-only", action="store_true", help="with a MODEL: refine the tasks the log already "
                      "has (as --refine) without tuning them further")
    tune.add_argument("--plugin", action="append", default=[], help="module to import first, e.g. one that "
                      "registers extra templates (repeatable)")
    tune.set_defaults(run=_tune)

    show = sub.add_parser("show", help="the best record per workload of a tuning log")
    show.add_argument("log")
    show.add_argument("--all-targets", action="store_true", help="include records of other machines")
    show.set_defaults(run=_show)

    log = sub.add_parser("log", help="tuning-log utilities")
    log_sub = log.add_subparsers(dest="log_command", required=True)
    best = log_sub.add_parser("best", help="distil a log to its best record per workload and target")
    best.add_argument("input")
    best.add_argument("output")
    best.set_defaults(run=_log_best)

    from convtune.tuner.cli_model import add_model_parsers

    add_model_parsers(sub)
    from convtune.tuner.cli_run import add_run_parser

    add_run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, IsADirectoryError) as e:
        print(f"convtune {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convtune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
