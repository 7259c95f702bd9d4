"""A model's conv chain: its convs timed as the model's runtime runs them.

The chain is not a model of the runtime but the runtime itself: the convs of
a ``Session``'s plan, with the plan's layouts, its shared buffers and scratch
arena and its kernels. Every step of the model runs in order (pools, adds
and heads too, so each conv finds the caches as the model leaves them) and
the convs among them are timed one by one (``timed``, from Python), or run
back to back by one compiled driver of the plan's conv steps (``chain``: the
convs as the model's driver runs them, without Python between them). Two
ways to run it:

- ``nchw``: ``Session(blocked=False)``: every conv takes and writes NCHW,
  packing its input and unpacking its output on every call (each kernel as
  ``PreparedConv`` does alone);
- ``blocked``: the model's own plan: activations passed from conv to conv
  stay in NCHW[x]c (``codegen.layout_plan``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from convtune.codegen.kernel import BoundConv
from convtune.codegen.model_driver import Driver
from convtune.codegen.model_plan import Plan, PlannedStep, run_plan, time_steps
from convtune.ir.graph import ModelGraph
from convtune.ir.reference import conv2d_reference, relative_error
from convtune.ir.workload import Conv2D
from convtune.schedules.layout import from_blocked
from convtune.tuner.model_bench import random_feeds
from convtune.tuner.session import Session

MODES = ("nchw", "blocked")
Logs = str | Path | Iterable[str | Path] | None


@dataclass
class ChainRun:
    """One Session of the model, fed once; its conv steps are the chain."""

    mode: str
    session: Session
    feeds: dict[str, np.ndarray]
    indices: list[int] = field(init=False)
    """Positions of the conv steps among the plan's steps."""
    driver: Driver = field(init=False)
    """The conv steps alone, in order, in one compiled call (``chain``)."""

    def __post_init__(self) -> None:
        self.indices = [i for i, s in enumerate(self.plan.steps) if isinstance(s.run, BoundConv)]
        self.driver = Driver([s.run for s in self.convs])

    @property
    def plan(self) -> Plan:
        assert isinstance(self.session.plan, Plan)
        return self.session.plan

    @property
    def convs(self) -> list[PlannedStep]:
        return [self.plan.steps[i] for i in self.indices]

    @property
    def names(self) -> list[str]:
        return [s.node.name for s in self.convs]

    @property
    def calls(self) -> list[Callable[[], object]]:
        """Each conv alone, bound to its buffers (what the isolated timings call)."""
        return [s.run for s in self.convs]

    def model(self) -> None:
        """The whole model through its compiled driver."""
        run_plan(self.plan)

    def chain(self) -> None:
        """Every conv of the model in order, on the plan's buffers, through
        one compiled driver (the model's driver minus its other steps)."""
        self.driver()

    def timed(self) -> list[float]:
        """Run every step of the model once, in order, from Python; the
        seconds each conv took inside it."""
        times = time_steps(self.plan)
        return [times[i] for i in self.indices]

    def nchw(self, tensor: str) -> np.ndarray:
        """A tensor of the plan as an NCHW array (as it is now)."""
        layout = self.plan.layouts.get(tensor)
        value = self.plan.values[tensor]
        return value if layout is None else from_blocked(layout, value)

    def check(self) -> float:
        """Run the model step by step; the largest relative error of any
        conv against the float64 reference on the inputs it was given
        (checked as it runs: buffers are reused by later tensors)."""
        worst, convs = 0.0, set(self.indices)
        for i, step in enumerate(self.plan.steps):
            if i not in convs:
                step.run()
                continue
            wl: Conv2D = step.node.attrs["workload"]
            ins = [t for t in step.node.inputs if t]
            data, weight = self.nchw(ins[0]).copy(), self.plan.values[ins[1]]
            bias = self.plan.values[ins[2]] if wl.bias else None
            residual = self.nchw(ins[-1]).copy() if wl.residual else None
            step.run()
            want = conv2d_reference(wl, data, weight, bias, residual)
            worst = max(worst, relative_error(self.nchw(step.node.outputs[0]), want))
        return worst


def prepare_chain(model: str | Path | ModelGraph, mode: str, logs: Logs = None,
                  feeds: dict[str, np.ndarray] | None = None) -> ChainRun:
    """The model's Session for ``mode`` (configs from ``logs``, else the
    defaults), run once on ``feeds`` (fresh random inputs when None). Give
    an imported ``ModelGraph`` to prepare several modes from one import."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    session = Session(model, logs=logs, blocked=mode == "blocked")
    feeds = random_feeds(session) if feeds is None else feeds
    session.run(None, feeds)
    return ChainRun(mode, session, feeds)
