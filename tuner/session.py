"""Run a whole model with tuned kernels: ``Session``, shaped like onnxruntime's InferenceSession.

``Session(model, logs=None, batch=None)`` imports the model, optimises the
graph (BN folding, conv epilogue fusion), picks each conv's kernel from the
tuning logs (``ApplyHistoryBest``; untuned workloads fall back with a
warning) and builds the execution plan once: kernels prepared, buffers
preallocated, activations kept in blocked layouts from conv to conv.
``run`` only copies the feeds in, runs the plan's steps and copies the
outputs out. ``target="cuda"`` plans the model for the GPU instead
(``codegen.cuda_model``: CUDA conv kernels tuned for this GPU, every tensor
in device memory, one copy in and one copy out a run).
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from convtune.codegen.model_plan import Plan, build_plan, run_plan, time_steps
from convtune.ir.graph import ModelGraph
from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.schedules.target import CpuTarget, CudaTarget, host_target
from convtune.tuner.dispatch import ApplyHistoryBest, FallbackWarning

if TYPE_CHECKING:
    from convtune.codegen.cuda_model import CudaPlan

TARGETS = ("cpu", "cuda")


class InputError(ValueError):
    """A feed or an output name that does not fit the model; the message names it."""


@dataclass(frozen=True)
class TensorSpec:
    """What ``get_inputs`` / ``get_outputs`` return (onnxruntime's NodeArg)."""

    name: str
    shape: tuple[int, ...]
    type: str
    """ONNX's type string, as onnxruntime writes it: ``tensor(float)``."""


@dataclass
class Profile:
    """Median seconds over the rounds: per node (in run order), end to end
    (runs timed only as a whole, like ``run``: the plan's compiled driver),
    and ``overhead``: in the rounds timed node by node (the Python loop),
    the round's time minus its nodes' times, i.e. what that loop spends
    between operators. ``packs``: per conv node, its input-packing stages
    (layout transforms, padding, im2col) timed on their own."""

    per_node: list[tuple[str, str, float]]
    """(node name, operator, seconds)"""
    total: float
    overhead: float
    rounds: int
    packs: dict[str, float] = field(default_factory=dict)

    @property
    def ops(self) -> float:
        return sum(t for _, _, t in self.per_node)

    @property
    def transforms(self) -> float:
        return sum(self.packs.values())

    def __str__(self) -> str:
        lines = [f"{name:<32} {op:<18} {1e3 * t:9.3f} ms" for name, op, t in self.per_node]
        lines.append(f"end to end {1e3 * self.total:.3f} ms, operators {1e3 * self.ops:.3f} ms, "
                     f"between operators {1e3 * self.overhead:.3f} ms "
                     f"({100 * self.overhead / self.total:.1f} % of end to end), input packing in convs "
                     f"{1e3 * self.transforms:.3f} ms ({100 * self.transforms / self.total:.1f} %), "
                     f"median of {self.rounds} rounds")
        return "\n".join(lines)


def _type_string(dtype: np.dtype) -> str:
    name = onnx.TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    return f"tensor({name.lower()})"


def check_feeds(graph: ModelGraph, feeds: Mapping[str, object]) -> None:
    """Every input of ``graph`` fed, with its exact dtype and shape, and nothing else."""
    names = ", ".join(graph.inputs)
    for name in feeds:
        if name not in graph.inputs:
            raise InputError(f"input {name!r}: the model has no such input (inputs: {names})")
    for name in graph.inputs:
        if name not in feeds:
            raise InputError(f"input {name!r}: missing (the model's inputs: {names})")
        value, info = np.asarray(feeds[name]), graph.tensors[name]
        if value.dtype != info.dtype:
            raise InputError(f"input {name!r}: expected {np.dtype(info.dtype).name}, got {value.dtype.name}")
        if value.shape != info.shape:
            raise InputError(f"input {name!r}: expected shape {info.shape}, got {value.shape}")


def session_target(name: str) -> CpuTarget | CudaTarget:
    """The target ``name`` runs on: this CPU, or this GPU (a ``CudaUnavailable``
    saying in one line why not, where there is no GPU and no simulator)."""
    if name not in TARGETS:
        raise InputError(f"target: expected one of {', '.join(TARGETS)}, got {name!r}")
    if name == "cpu":
        return host_target()
    from convtune.codegen.cuda_build import cuda_target, require_cuda

    require_cuda()
    return cuda_target()


class Session:
    """A model ready to run: ``Session("model.onnx", logs="logs/x.jsonl").run(None, {"input": x})``.

    Its buffers are preallocated and reused by every run, so one Session must
    not run from two threads at once (make one per thread).
    """

    def __init__(self, model: str | Path | onnx.ModelProto | ModelGraph,
                 logs: str | Path | Iterable[str | Path] | None = None, batch: int | None = None,
                 blocked: bool = True, target: str = "cpu") -> None:
        """``blocked=False`` keeps every activation NCHW (for comparison; the
        GPU's always are); ``target``: "cpu" or "cuda"."""
        device = session_target(target)
        if isinstance(model, ModelGraph) and batch is not None:
            raise InputError("batch: an imported ModelGraph has its batch already (import_model(..., batch=))")
        graph = model if isinstance(model, ModelGraph) else import_model(model, batch)
        self.graph = optimize(graph)
        self.plan: Plan | CudaPlan = self._plan(logs, blocked, device)
        self._specs = {t: TensorSpec(t, self.graph.tensors[t].shape, _type_string(self.graph.tensors[t].dtype))
                       for t in (*self.graph.inputs, *self.graph.outputs)}

    def _plan(self, logs: str | Path | Iterable[str | Path] | None, blocked: bool,
              device: CpuTarget | CudaTarget) -> Plan | CudaPlan:
        dispatcher = ApplyHistoryBest([] if logs is None else logs, device)

        def build() -> Plan | CudaPlan:
            if isinstance(device, CudaTarget):
                from convtune.codegen.cuda_model import build_cuda_plan

                return build_cuda_plan(self.graph, dispatcher.schedule_for, lowering_for=dispatcher.lowering_for)
            return build_plan(self.graph, dispatcher.schedule_for, blocked, lowering_for=dispatcher.lowering_for)

        if logs is not None:
            return build()
        with warnings.catch_warnings():  # one warning for the model, not one per conv
            warnings.simplefilter("ignore", FallbackWarning)
            plan = build()
        convs = {n.attrs["workload"] for n in self.graph.nodes() if n.op in ("FusedConv", "FusedConvTranspose")}
        if convs:
            warnings.warn(f"no tuning log given: the model's {len(convs)} conv workloads run with untuned "
                          "default configs", FallbackWarning, stacklevel=3)
        return plan

    def get_inputs(self) -> list[TensorSpec]:
        return [self._specs[t] for t in self.graph.inputs]

    def get_outputs(self) -> list[TensorSpec]:
        return [self._specs[t] for t in self.graph.outputs]

    def _feed(self, feeds: Mapping[str, object]) -> None:
        check_feeds(self.graph, feeds)
        if not isinstance(self.plan, Plan):
            from convtune.codegen.cuda_model import copy_in

            copy_in(self.plan, feeds)  # type: ignore[arg-type]
            return
        for name, buffer in self.plan.inputs.items():
            np.copyto(buffer, feeds[name])

    def _fetch(self, output_names: Sequence[str] | None) -> list[np.ndarray]:
        names = list(self.graph.outputs) if output_names is None else list(output_names)
        for name in names:
            if name not in self.graph.outputs:
                raise InputError(f"output {name!r}: the model has no such output "
                                 f"(outputs: {', '.join(self.graph.outputs)})")
        if not isinstance(self.plan, Plan):
            from convtune.codegen.cuda_model import copy_out

            return copy_out(self.plan, names)
        return [np.array(self.plan.values[name]) for name in names]  # copies: buffers are reused by the next run

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, object]) -> list[np.ndarray]:
        """The outputs named (all when None), for ``feeds`` {input name: array}."""
        self._feed(feeds)
        if isinstance(self.plan, Plan):
            run_plan(self.plan)
        else:
            from convtune.codegen.cuda_model import run_cuda_plan

            run_cuda_plan(self.plan)
        return self._fetch(output_names)

    def profile(self, feeds: Mapping[str, object], rounds: int = 10) -> Profile:
        """Per-node, end-to-end and between-operator medians over ``rounds``
        runs of each kind (after one warm-up run)."""
        if rounds < 1:
            raise InputError(f"rounds: expected a positive int, got {rounds}")
        if not isinstance(self.plan, Plan):
            raise InputError("profile: times the cpu target's plan only (a cuda Session runs as a whole)")
        self._feed(feeds)
        run_plan(self.plan)
        totals, gaps, per_step = [], [], [[] for _ in self.plan.steps]
        clock = time.perf_counter
        packing = [s for s in self.plan.steps if s.packs]
        packs: dict[str, list[float]] = {s.node.name: [] for s in packing}
        for _ in range(rounds):
            start = clock()
            run_plan(self.plan)
            totals.append(clock() - start)
            start = clock()
            for times, seconds in zip(per_step, time_steps(self.plan)):
                times.append(seconds)
            gaps.append(clock() - start - sum(t[-1] for t in per_step))
            with np.errstate(all="ignore"):
                for step in packing:
                    t0 = clock()
                    step.run_packs()
                    packs[step.node.name].append(clock() - t0)
        per_node = [(s.node.name, s.node.op, statistics.median(t)) for s, t in zip(self.plan.steps, per_step)]
        return Profile(per_node, statistics.median(totals), statistics.median(gaps), rounds,
                       {name: statistics.median(t) for name, t in packs.items()})
