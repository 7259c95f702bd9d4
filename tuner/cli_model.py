"""The whole-model commands of ``convtune``: ``zoo``, ``tune MODEL``,
``bench MODEL`` and ``report``. Kept apart from ``cli.py`` (which parses the
arguments and dispatches here) so the per-layer commands stay one screen."""
from __future__ import annotations

import argparse
import sys

from convtune.tuner.zoo import ZOO


def add_model_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``zoo`` and ``report`` subcommands (``tune`` and ``bench`` take a
    MODEL in their own parsers)."""
    add_zoo_parser(sub)
    report = sub.add_parser("report", help="plot a tuning log: tuning curves and per-layer speed vs the FMA ceiling")
    report.add_argument("log")
    report.add_argument("-o", "--output", default="report", help="directory for the PNGs (default report/)")
    report.set_defaults(run=report_command)


def names_a_model(text: str) -> bool:
    """Whether ``convtune bench``'s positional names a model: an .onnx file or
    a zoo model that is not also a layer suite (``resnet18`` is both: the
    suite unless ``--model``)."""
    from convtune.tuner.suites import suite_names

    return text.endswith(".onnx") or (text in ZOO and text not in suite_names())


def add_zoo_parser(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser("zoo", help="write a zoo model (torchvision architecture, random weights) as ONNX")
    zoo.add_argument("name", nargs="?", help=f"one of {', '.join(ZOO)} (none: list them)")
    zoo.add_argument("-o", "--output", help="ONNX file to write (default NAME.onnx)")
    zoo.add_argument("--no-fold-bn", action="store_true",
                     help="keep explicit BatchNormalization nodes (default: folded into Conv, as PyTorch exports)")
    zoo.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    zoo.add_argument("--batch", type=int, default=1, help="batch size of the input (default 1)")
    zoo.set_defaults(run=zoo_command)


def zoo_command(args: argparse.Namespace) -> int:
    from convtune.tuner.zoo import build_model, save_model

    if args.name is None:
        print("\n".join(ZOO))
        return 0
    model = build_model(args.name, fold_bn=not args.no_fold_bn, seed=args.seed, batch=args.batch)
    path = save_model(model, args.output or f"{args.name}.onnx")
    print(f"{args.name}: {len(model.graph.node)} nodes written to {path}")
    return 0


def tune_model_command(args: argparse.Namespace) -> int:
    """``convtune tune MODEL``: the model's conv tasks under one progress
    display (a bar per task and one overall), then the per-task table."""
    import sqlalchemy.exc
    from rich.console import Console

    from convtune.tuner.cli import _import_plugins, _storage_problem, _target
    from convtune.tuner.measure import MeasureOptions

    target = _target(args.target)
    _import_plugins(args.plugin)
    console = Console(width=None if sys.stdout.isatty() else 160)
    options = MeasureOptions(repeats=args.repeats, timeout=args.timeout, plugins=tuple(args.plugin),
                             cold=not args.warm, target=args.target)
    try:
        return _tune_model(args, options, console, target)
    except sqlalchemy.exc.SQLAlchemyError as e:
        return _storage_problem(e, args)


def _tune_model(args: argparse.Namespace, options, console, target) -> int:  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from convtune.ir.model_passes import optimize
    from convtune.ir.onnx_frontend import import_model
    from convtune.tuner.measure import Measurer
    from convtune.tuner.model_tuning import tune_model
    from convtune.tuner.tasks import extract_tasks
    from convtune.tuner.zoo import resolve_model

    if args.conv:
        raise ValueError("give a MODEL or --conv/--suite, not both")
    if (args.refine or args.refine_only) and target.kind != "cpu":
        raise ValueError("--refine: the cpu target only (a cuda model plan has no blocked layouts to choose)")
    if args.refine_only:
        return _refine(args, console)
    tasks = extract_tasks(optimize(import_model(resolve_model(args.model))))
    console.print(f"{args.model}: {len(tasks)} conv tasks ({sum(t.count for t in tasks)} convs), "
                  f"{args.trials} trials a task on average on {target.kind}, log {args.log}", highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("trial {task.completed}/{task.total}"),
               TextColumn("best {task.fields[best]:.1f} GFLOP/s"), TextColumn("failures {task.fields[failures]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Measurer(options) as measurer, Progress(*columns, console=console) as progress:
        overall = progress.add_task("all tasks", total=args.trials * len(tasks), best=0.0, failures=0)
        rows = {t.workload.key: progress.add_task(f"  {t.name} x{t.count}", total=0, best=0.0, failures=0)
                for t in tasks}
        done = {t.workload.key: 0 for t in tasks}

        def show(task, measured: int, **fields: object) -> None:  # type: ignore[no-untyped-def]
            done[task.workload.key] = measured
            progress.update(rows[task.workload.key], completed=measured, **fields)
            progress.update(overall, completed=sum(done.values()))

        try:
            result = tune_model(
                tasks, log=args.log, trials_per_task=args.trials, strategy=args.strategy, storage=args.storage,
                seed=args.seed, options=options, measurer=measurer, device=target,
                on_target=lambda task, n: progress.update(rows[task.workload.key], total=n),
                on_progress=lambda task, p: show(task, p.measured, best=p.best_gflops, failures=p.failures),
                on_done=lambda task, r: show(task, r.measured, best=r.best.gflops if r.best else 0.0,
                                             failures=r.failures))
        except KeyboardInterrupt:
            progress.stop()
            console.print(f"interrupted: {args.log} and the studies are intact; rerun the same command to resume")
            return 130
    console.print(task_table(result, target.kind == "cpu"))
    if args.refine:
        return _refine(args, console)
    if result.lowerings:
        from convtune.ir.workload_transpose import ConvTranspose2D
        from convtune.tuner.lowering_log import lowerings_path

        for key, lowering in result.lowerings.items():
            console.print(f"transposed {ConvTranspose2D.from_key(key).short()}: the {lowering} lowering is faster "
                          f"(timed whole, recorded in {lowerings_path(args.log)})", highlight=False)
    return 0


def _refine(args: argparse.Namespace, console) -> int:  # type: ignore[no-untyped-def]
    """``--refine``: the tuned tasks' configs chosen by the model's time."""
    from convtune.ir.model_passes import optimize
    from convtune.ir.onnx_frontend import import_model
    from convtune.tuner.model_bench import random_feeds
    from convtune.tuner.model_refine import refine_model
    from convtune.tuner.zoo import resolve_model

    graph = optimize(import_model(resolve_model(args.model)))  # refine_model builds the plans it times
    console.print(f"refining: each task's best config of every algorithm, judged by {args.model}'s whole model time")
    try:
        choices = refine_model(graph, [args.log], args.log, random_feeds(graph),
                               progress=lambda line: console.print(f"  {line}", highlight=False))
    except KeyboardInterrupt:
        console.print(f"interrupted: the choices made are in {args.log}; rerun the same command to resume")
        return 130
    changed = sum(c.chosen != c.candidates[0] for c in choices)
    console.print(f"refined {len(choices)} tasks: {changed} changed algorithm or config", highlight=False)
    return 0


def task_table(result, cpu: bool = True):  # type: ignore[no-untyped-def]
    """Per task: convs, trials, best GFLOP/s, on the CPU % of the FMA ceiling
    (measured now, on the cores the kernels use; a GPU has no such probe)
    and share of the model's conv time."""
    from rich.table import Table

    from convtune.schedules.target import host_target
    from convtune.tuner.ceilings import fma_ceiling

    threads = host_target().cores
    ceiling = fma_ceiling(threads) if cpu else None
    title = f"{len(result.tasks)} tasks, {result.measured} trials measured"
    table = Table(title=title + (f" (FMA ceiling {ceiling:.0f} GFLOP/s on {threads} threads)" if ceiling else ""))
    numbers = ("convs", "trials", "GFLOP/s", *(("% FMA",) if ceiling else ()), "share of time")
    for col in ("task", *numbers, "config"):
        table.add_column(col, justify="right" if col in numbers else "left")
    for task in sorted(result.tasks, key=lambda t: -t.share):
        r = result.result(task)
        gflops = r.best.gflops if r.best else 0.0
        config = " ".join(f"{k}={v}" for k, v in r.best.config.items()) if r.best else "no successful candidate"
        fma = (f"{100 * gflops / ceiling:.0f}",) if ceiling else ()
        table.add_row(task.name, str(task.count), str(r.measured), f"{gflops:.1f}", *fma,
                      f"{100 * task.share:.1f}%", config)
    return table


def bench_model_command(args: argparse.Namespace, console) -> int:  # type: ignore[no-untyped-def]
    """``convtune bench MODEL``: end to end against onnxruntime, the slowest
    layers, cold and warm start."""
    from convtune.schedules.target import host_target
    from convtune.tuner.model_bench import bench_model, render
    from convtune.tuner.zoo import resolve_model

    path = resolve_model(args.suite)
    try:
        report = bench_model(path, args.log, args.threads or host_target().cores, rounds=args.rounds,
                             startup=not args.no_startup)
    except (AssertionError, RuntimeError) as e:
        print(f"convtune bench: {e}", file=sys.stderr)
        return 1
    console.print(render(report))
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(report.to_json())
    return 0


def report_command(args: argparse.Namespace) -> int:
    from convtune.tuner.report import write_report

    for path in write_report(args.log, args.output):
        print(path)
    return 0
