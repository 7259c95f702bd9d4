"""The whole-model commands of ``convtune``: ``zoo``, ``tune MODEL``,
``bench MODEL`` and ``report``. Kept apart from ``cli.py`` (which parses the
arguments and dispatches here) so the per-layer commands stay one screen."""
from __future__ import annotations

import argparse
import sys

from convtune.tuner.zoo import ZOO


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
    print(f"{args.name}: {len(model.graph.node)} nodes written to {path}", file=sys.stdout)
    return 0
