"""Model refinement: each conv task's config chosen by the whole model's time.

A config is tuned alone, NCHW in and out, but in a model its algorithm also
decides the layouts its neighbours read and write (``codegen.layout_plan``):
a channel-vector kernel whose input arrives blocked skips the packing it
paid for alone; a row-vector one (``depthwise_w``, ``direct_w``) keeps its
neighbours NCHW. Measured on mobilenet_v2: ``direct_w`` won alone on most of
its 14x14 and 28x28 1x1 layers and lost on them in the model. TVM's graph
tuner picks each layer's layout by dynamic programming over modelled
transform costs; here the model itself is the judge:

1. each task's candidates are its best record of every algorithm in the
   logs (the incumbent, dispatch's choice, among them), and for a 1x1 conv
   the gemm config that reads a row-vector neighbour's NCHW output in place
   (``in_place_variants``);
2. tasks in order of their time in the model, each alternative candidate is
   swapped in, the plan rebuilt and the whole model (its compiled driver)
   timed against the current plan, interleaved round by round; a candidate
   is taken only when it is faster in two such comparisons in a row;
3. each task's choice is logged with its time in the model as a record with
   ``extra.cache = "model"``, which dispatch prefers over isolated timings
   (``Record.rank``; the latest refinement wins). A rerun skips the tasks
   refined for this model since their last tuning: interrupted, it resumes;
   tuned further, the tasks with new records are judged again, the earlier
   choice as the incumbent.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from convtune.codegen.lower import input_layout_wanted
from convtune.codegen.model_plan import Plan, build_plan, run_plan, time_steps
from convtune.ir.graph import ModelGraph
from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config
from convtune.schedules.target import CpuTarget, host_target
from convtune.schedules.templates import TEMPLATES, complete_config, invalid_reason, schedule_from_config
from convtune.tuner import records
from convtune.tuner.dispatch import ApplyHistoryBest, tuning_workload
from convtune.tuner.records import MODEL_CACHE, Record
from convtune.tuner.timing import calls_per_block, median, time_calls

@dataclass
class TaskChoice:
    """One task's refinement: the configs tried and the one kept."""

    workload: Conv2D
    candidates: list[Config]
    chosen: Config
    seconds: float
    """Its nodes' seconds per call in the model with ``chosen`` (median)."""
    speedups: list[float] = field(default_factory=list)
    """Current plan's model time over each alternative's (> 1: it was faster)."""


def candidates(logs: Iterable[Record], target: CpuTarget) -> dict[str, list[Config]]:
    """Per tuning-workload key: the best config of each algorithm, best
    first (records timed in a model are the refinement's own output, not
    candidates)."""
    best: dict[tuple[str, str], Record] = {}
    for r in logs:
        if not r.ok or r.target_key != target.key or r.cache == MODEL_CACHE:
            continue
        key = (r.workload_key, str(r.config.get("algorithm")))
        if (key not in best or r.rank < best[key].rank) and invalid_reason(r.workload_obj, r.config, target) is None:
            best[key] = r
    out: dict[str, list[Record]] = {}
    for (wl_key, _), r in best.items():
        out.setdefault(wl_key, []).append(r)
    return {k: [r.config for r in sorted(rs, key=lambda r: r.rank)] for k, rs in out.items()}


def in_place_variants(wl: Conv2D, configs: list[Config], target: CpuTarget) -> list[Config]:
    """Its best gemm config (or gemm's default) with ``cb=1`` where that
    reads its input in place as NCHW1c (``codegen.lower.input_layout_wanted``:
    a 1x1, stride-1, unpadded conv), the layout a row-vector writer
    (``depthwise_w``) stores contiguously (``codegen.layout_plan``), where
    every other channel-vector config packs it. Alone it packs like the
    others, so tuning never prefers it; only the model can judge it.
    Measured on mobilenet_v2, six projection tasks after depthwise layers
    switched to it: the whole model 1.00-1.11x faster (four comparisons,
    one run)."""
    gemm = TEMPLATES["gemm"]
    if not gemm.applies(wl):
        return []
    base = next((c for c in configs if c["algorithm"] == "gemm"), None) or {
        "algorithm": "gemm", **gemm.space(wl, target).default}
    variant = {**base, "cb": 1}
    if base["cb"] == 1 or invalid_reason(wl, variant, target) is not None:
        return []
    wanted = input_layout_wanted(schedule_from_config(wl, variant, target).state)
    return [variant] if wanted is not None and wanted.block == 1 else []


class _Plans:
    """Plans of the model under config assignments (tuning key -> config)."""

    def __init__(self, graph: ModelGraph, dispatcher: ApplyHistoryBest, feeds: dict[str, np.ndarray]) -> None:
        self.graph, self.dispatcher, self.feeds = graph, dispatcher, feeds

    def build(self, assignment: dict[str, Config]) -> Plan:
        def schedule_for(wl: Conv2D) -> Schedule:
            config = assignment.get(tuning_workload(wl).key)
            if config is None or invalid_reason(wl, config, self.dispatcher.target) is not None:
                return self.dispatcher.schedule_for(wl)
            return schedule_from_config(wl, config, self.dispatcher.target)

        plan = build_plan(self.graph, schedule_for, lowering_for=self.dispatcher.lowering_for)
        for name, buffer in plan.inputs.items():
            np.copyto(buffer, self.feeds[name])
        run_plan(plan)
        return plan


def compare(current: Plan, candidate: Plan, rounds: int, min_block_seconds: float = 0.02) -> float:
    """Median seconds of ``current``'s whole model over ``candidate``'s,
    timed in interleaved blocks (drift hits both alike)."""
    runs = [lambda p=p: run_plan(p) for p in (current, candidate)]
    numbers = [calls_per_block(run, min_block_seconds) for run in runs]
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for samples, run, n in zip(times, runs, numbers):
            samples.append(median(time_calls(run, n, settle=0.0)))
    return median(times[0]) / median(times[1])


def node_seconds(plan: Plan, nodes: set[str], rounds: int = 5) -> float:
    """Median seconds per call of the steps of ``nodes`` inside runs of the plan."""
    index = [i for i, s in enumerate(plan.steps) if s.node.name in nodes]
    totals = [sum(t[i] for i in index) for t in (time_steps(plan) for _ in range(rounds))]
    return statistics.median(totals) / max(1, len(index))


Judge = Callable[[Plan, Plan, Config], float]
"""(current plan, trial plan, the trial's config) -> current's time over the trial's."""


def refine_model(graph: ModelGraph, logs: list[str | Path], out_log: str | Path, feeds: dict[str, np.ndarray],
                 rounds: int = 5, min_gain: float = 0.01, target: Optional[CpuTarget] = None,
                 progress: Callable[[str], None] = lambda _: None, judge: Optional[Judge] = None) -> list[TaskChoice]:
    """Choose each conv task's config of an optimized ``graph`` among its
    candidates by the whole model's time (``judge``: ``compare`` over
    ``rounds``); append the choices to ``out_log``. A candidate must make
    the model at least ``min_gain`` faster, twice."""
    judge = judge or (lambda current, trial, _: compare(current, trial, rounds))
    target = target or host_target()
    recs = records.read_many(logs)
    latest = {r.workload_key: r for r in sorted(recs, key=lambda r: r.timestamp)
              if r.cache == MODEL_CACHE and r.extra.get("model") == graph.name and r.target_key == target.key}
    refined = {key: r.config for key, r in latest.items()}
    options = candidates(recs, target)
    # A task refined before is judged again once tuning has logged something newer for it.
    newest = {}
    for r in recs:
        if r.ok and r.cache != MODEL_CACHE and r.target_key == target.key:
            newest[r.workload_key] = max(newest.get(r.workload_key, 0.0), r.timestamp)
    settled = {key for key, r in latest.items() if r.timestamp >= newest.get(key, 0.0)}
    plans = _Plans(graph, ApplyHistoryBest(logs, target), feeds)
    nodes: dict[str, set[str]] = {}
    workloads: dict[str, Conv2D] = {}
    for n in graph.nodes():
        if n.op == "FusedConv":
            wl = tuning_workload(n.attrs["workload"])
            nodes.setdefault(wl.key, set()).add(n.name)
            workloads[wl.key] = wl
    assignment = {key: refined.get(key, configs[0]) for key, configs in options.items() if key in nodes}
    plan = plans.build(assignment)
    steps = time_steps(plan)
    order = sorted(assignment, key=lambda k: -sum(t for s, t in zip(plan.steps, steps) if s.node.name in nodes[k]))
    choices = []
    for key in order:
        wl = workloads[key]
        # Configs differing only in a knob one of them predates build the same kernel: judged once.
        same = complete_config(wl, assignment[key], target)
        tried = [assignment[key]] + [c for c in options[key] + in_place_variants(wl, options[key], target)
                                     if complete_config(wl, c, target) != same]
        if key in settled or len(tried) < 2:  # refined since its last tuning (resuming), or nothing to choose
            continue
        choice = TaskChoice(wl, tried, assignment[key], 0.0)
        for config in tried[1:]:
            trial = plans.build({**assignment, key: config})
            gains = [judge(plan, trial, config)]
            if gains[0] > 1 + min_gain:
                gains.append(judge(plan, trial, config))
            choice.speedups.append(min(gains))
            if len(gains) == 2 and min(gains) > 1 + min_gain:
                assignment[key], plan, choice.chosen = config, trial, config
        choice.seconds = node_seconds(plan, nodes[key])
        records.append(out_log, Record(wl.to_dict(), target.to_dict(), choice.chosen, [choice.seconds],
                                       versions=records.versions(),
                                       extra={"cache": MODEL_CACHE, "model": graph.name, "study": "refine",
                                              "candidates": len(tried)}))
        progress(f"{wl.short()}: {choice.chosen['algorithm']}"
                 + (f" (from {tried[0]['algorithm']})" if choice.chosen != tried[0] else "")
                 + "".join(f", {c['algorithm']} x{s:.3f}" for c, s in zip(tried[1:], choice.speedups)))
        choices.append(choice)
    return choices
