"""Tuning tasks of a model: its unique conv workloads, each with how often it
occurs and its estimated share of the model's conv time.

A task is keyed by the conv without its fused epilogue (``tuning_workload``):
ResNet's 3x3 layer with a ReLU and the same layer with a residual add are one
task, and dispatch applies the config tuned for the bare conv to both. A
transposed conv (``FusedConvTranspose``) gives a task for each distinct
sub-conv of each of its lowerings (``ir.conv_transpose_lowering.sub_convs``);
which lowering runs is decided after tuning, by timing the whole layer.

Shares start as FLOP shares, which underrate layers that run far below the
machine's peak (depthwise convs do 3% of MobileNet-V2's FLOPs and can take a
third of its time); once a task has a measured best time, its share is its
count times that time, and tasks not measured yet are costed at the measured
tasks' median speed, so estimates and measurements stay comparable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from convtune.ir.conv_transpose_lowering import sub_convs
from convtune.ir.graph import GraphError, ModelGraph
from convtune.ir.workload import Conv2D
from convtune.ir.workload_transpose import ConvTranspose2D
from convtune.tuner.dispatch import tuning_workload
from convtune.tuner.timing import median

CONV_OP = "FusedConv"
TRANSPOSED_OP = "FusedConvTranspose"


@dataclass
class Task:
    """One conv shape to tune, and where the model uses it."""

    workload: Conv2D
    """The tuning key: the conv without its epilogue."""
    nodes: list[str] = field(default_factory=list)
    """Names of the graph's conv nodes it serves."""
    variants: list[Conv2D] = field(default_factory=list)
    """The distinct fused workloads of those nodes (epilogue variants)."""
    share: float = 0.0
    """Estimated share of the model's conv time, in [0, 1]."""
    transposed: list[ConvTranspose2D] = field(default_factory=list)
    """The transposed convs (without their epilogue) this is a sub-conv of."""

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def flops(self) -> int:
        """FLOPs of every occurrence together."""
        return self.count * self.workload.flops

    @property
    def name(self) -> str:
        return self.workload.short()


def extract_tasks(graph: ModelGraph) -> list[Task]:
    """The unique conv workloads of an optimized model graph (its ``FusedConv``
    nodes), in order of first use, with FLOP-based shares."""
    tasks: dict[str, Task] = {}

    def add(node_name: str, wl: Conv2D) -> Task:
        task = tasks.setdefault(tuning_workload(wl).key, Task(tuning_workload(wl)))
        task.nodes.append(node_name)
        if wl not in task.variants:
            task.variants.append(wl)
        return task

    for node in graph.nodes():
        wl = node.attrs.get("workload")
        if node.op == TRANSPOSED_OP and isinstance(wl, ConvTranspose2D):
            bare = tuning_workload(wl)
            for sub in sub_convs(wl):
                task = add(node.name, sub)
                if bare not in task.transposed:
                    task.transposed.append(bare)
            continue
        if node.op != CONV_OP:
            continue
        if not isinstance(wl, Conv2D):
            raise GraphError(f"node {node.name!r} ({CONV_OP}): attrs['workload'] is not a Conv2D but {wl!r}")
        add(node.name, wl)
    if not tasks:
        raise GraphError(f"model {graph.name!r} has no {CONV_OP} node to tune (was it optimized?)")
    found = list(tasks.values())
    estimate_shares(found, lambda wl: None)
    return found


def estimate_shares(tasks: Sequence[Task], best_seconds: Callable[[Conv2D], Optional[float]]) -> None:
    """Set each task's ``share`` from ``best_seconds(workload)`` (the measured
    time of one call, or None where there is none yet): measured tasks by their
    time, the others by their FLOPs at the measured tasks' median speed (or all
    by FLOPs when nothing is measured)."""
    measured = {id(t): s for t in tasks if (s := best_seconds(t.workload)) is not None and s > 0}
    speeds = [t.workload.flops / measured[id(t)] for t in tasks if id(t) in measured]
    flops_per_second = median(speeds) if speeds else 1.0
    seconds = [t.count * measured[id(t)] if id(t) in measured else t.flops / flops_per_second for t in tasks]
    total = sum(seconds)
    for task, s in zip(tasks, seconds):
        task.share = s / total
