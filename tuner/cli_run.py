"""``convtune run MODEL --log LOG --input IN.npy|IN.npz --output OUT.npy|OUT.npz [--batch N] [--target cuda]``.

Everything that can be checked before the model runs is (the model, the
input file, the output path), so a mistake costs no compile; the output is
written to a temporary file beside it and renamed into place, so an
interrupted or failed run never leaves a half-written output behind.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a model (an .onnx file or a zoo model) with tuned kernels on inputs "
                                     "from a .npy/.npz file")
    run.add_argument("model", help="an .onnx file or a zoo model name")
    run.add_argument("--log", action="append", help="tuning log (repeatable; none: untuned defaults, with a warning)")
    run.add_argument("--input", required=True, help=".npy (a one-input model) or .npz keyed by input name")
    run.add_argument("--output", required=True, help=".npy (a one-output model) or .npz keyed by output name")
    run.add_argument("--batch", type=int, help="batch size, for a model whose batch axis is dynamic")
    run.add_argument("--target", default="cpu", choices=("cpu", "cuda"),
                     help="cpu, or cuda (the GPU: tensors stay on the device from the input to the output)")
    run.set_defaults(run=run_command)


def _model_path(model: str) -> Path:
    try:
        from convtune.tuner.zoo import resolve_model
    except ImportError:  # a checkout without the zoo: paths only
        return Path(model)
    return resolve_model(model)


def _read_inputs(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"--input {path}: expected a .npy or .npz file")
    if not path.is_file():
        raise ValueError(f"--input {path}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"--input {path}: not a readable numpy file ({e})") from None
    if len(names) != 1:
        raise ValueError(f"--input {path}: the model has {len(names)} inputs ({', '.join(names)}); "
                         "give an .npz keyed by input name")
    return {names[0]: value}


def _check_output(path: Path, names: list[str]) -> None:
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"--output {path}: expected a .npy or .npz file")
    if not path.parent.is_dir():
        raise ValueError(f"--output {path}: directory {path.parent} does not exist")
    if path.suffix == ".npy" and len(names) != 1:
        raise ValueError(f"--output {path}: the model has {len(names)} outputs ({', '.join(names)}); "
                         "write an .npz")


def write_atomically(path: Path, outputs: dict[str, np.ndarray]) -> None:
    """``path`` holds all of the outputs or is untouched."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if path.suffix == ".npz":
                np.savez(f, **outputs)
            else:
                np.save(f, next(iter(outputs.values())))
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the output is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_command(args: argparse.Namespace) -> int:
    from convtune.ir.onnx_frontend import import_model
    from convtune.tuner.cli import _target
    from convtune.tuner.session import Session, check_feeds

    _target(args.target)  # no GPU (nor the simulator): one line, before the model is read
    graph = import_model(_model_path(args.model), batch=args.batch)
    output = Path(args.output)
    _check_output(output, graph.outputs)
    feeds = _read_inputs(Path(args.input), graph.inputs)
    check_feeds(graph, feeds)
    for log in args.log or ():
        if not Path(log).is_file():
            raise ValueError(f"--log {log}: no such file")
    session = Session(graph, logs=args.log, target=args.target)
    try:
        values = session.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - the inputs were checked: a failure inside the model, exit 1
        print(f"convtune run: the model failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        write_atomically(output, dict(zip(graph.outputs, values)))
    except OSError as e:
        print(f"convtune run: cannot write {output}: {e}", file=sys.stderr)
        return 1
    print(f"{args.model}: {', '.join(f'{n} {v.dtype}{list(v.shape)}' for n, v in zip(graph.outputs, values))} "
          f"written to {output}")
    return 0
