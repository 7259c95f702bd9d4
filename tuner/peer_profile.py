"""onnxruntime's own time for each layer inside its whole-model run, matched
to a Session's plan nodes.

Why: a model that loses to onnxruntime end to end loses somewhere, and
convtune's profile alone does not say where; each layer timed alone does not
either (in a model its weights and inputs are cold, NOTES.md). onnxruntime's
profiler times every node of its optimised graph as it runs the whole model,
so the bench puts that time beside convtune's for the same layer. Its nodes
are not convtune's (it fuses and renames: ``relu_3_nchwc`` is a conv with
its ReLU and residual), so a node is matched by what it computes: the
operator, a conv's weight shape (``BLOCK``) and the output's spatial shape,
the k-th such node of one runtime to the k-th of the other in run order
(both run a topological order of the same graph). The profiler adds a little to each
node's time; its layout reorders (``ReorderInput``/``ReorderOutput``) have
no convtune node and are summed apart.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

Key = tuple[str, Optional[tuple[int, ...]], tuple[int, ...]]
"""(operator without a "Fused" prefix, a conv's weight shape or None, output shape past batch and channels)"""


BLOCK = 16
"""onnxruntime's NCHWc transform pads a conv's channel counts to its block (8
with AVX2, 16 with AVX-512: a 3->8 conv shows weights 16x3x3x3): keys round
both runtimes' counts up to a multiple of 16."""


def node_key(op: str, weight_shape: Optional[Iterable[int]], out_shape: Iterable[int]) -> Key:
    """What a node computes, as both runtimes can name it."""
    op = op.removeprefix("Fused")
    shape = tuple(out_shape)
    weight = None
    if op == "Conv" and weight_shape is not None:
        k, c, *taps = weight_shape
        weight = (-(-k // BLOCK) * BLOCK, -(-c // BLOCK) * BLOCK, *taps)
    return op, weight, shape[2:] if len(shape) == 4 else shape


def _dims(shapes: list[dict[str, list[int]]], index: int) -> Optional[list[int]]:
    """The ``index``-th of a profiler event's ``input_type_shape`` / ``output_type_shape`` ([{dtype: dims}])."""
    return list(shapes[index].values())[0] if index < len(shapes) else None


def node_seconds(events: list[dict], skip: int = 1) -> tuple[dict[Key, list[float]], float]:
    """From onnxruntime profiler ``events``: per key, each matching node's
    median seconds over the runs (its first ``skip`` runs left out), in run
    order; and the median seconds per run of its layout reorders."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            runs[e["name"]].append(e)
    per_key: dict[Key, list[float]] = defaultdict(list)
    reorders = 0.0
    for name, es in sorted(runs.items(), key=lambda kv: kv[1][0]["ts"]):
        args = es[0]["args"]
        seconds = statistics.median(e["dur"] for e in (es[skip:] or es)) / 1e6
        if args["op_name"].startswith("Reorder"):
            reorders += seconds
            continue
        out = _dims(args.get("output_type_shape", []), 0)
        if out is not None:
            per_key[node_key(args["op_name"], _dims(args.get("input_type_shape", []), 1), out)].append(seconds)
    return dict(per_key), reorders


class OnnxruntimeProfile:
    """A profiling onnxruntime session of the model at ``path`` (its own: the
    timed one runs unprofiled), run in blocks between other work (``run``),
    then ``node_seconds`` over all its runs (``close``); the profile file
    goes to a temporary directory. One session for every block: each would
    otherwise optimise the graph again."""

    def __init__(self, path: str | Path, threads: int) -> None:
        from convtune.tuner.peers import onnxruntime_session

        self._work = tempfile.TemporaryDirectory(prefix="convtune-ort-profile-")
        self._session = onnxruntime_session(str(path), threads, profile_prefix=str(Path(self._work.name) / "ort"))

    def run(self, feeds: Mapping[str, np.ndarray], runs: int) -> None:
        for _ in range(runs):
            self._session.run(None, dict(feeds))

    def close(self) -> tuple[dict[Key, list[float]], float]:
        """``node_seconds`` of every run (the first left out)."""
        try:
            return node_seconds(json.loads(Path(self._session.end_profiling()).read_text()))
        finally:
            self._work.cleanup()


def match(nodes: Iterable[tuple[str, Key]], peer: Mapping[Key, list[float]]) -> dict[str, float]:
    """Node name -> the peer's seconds for the node computing the same, the
    k-th node of a key getting the peer's k-th; a key whose count differs
    between the runtimes is left unmatched (the pairing would be a guess)."""
    ours: dict[Key, list[str]] = defaultdict(list)
    for name, key in nodes:
        ours[key].append(name)
    return {name: seconds for key, names in ours.items() if len(peer.get(key, ())) == len(names)
            for name, seconds in zip(names, peer[key])}
