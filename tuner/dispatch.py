"""Use tuning logs at inference: ``apply_history_best``.

For a workload and the host target, the config comes from, in order:
1. the best record of exactly this workload in the logs, else of its conv
   without the fused epilogue (``tuning_workload``: what model tuning tunes);
2. the best config of the *nearest* tuned workload of the same kind (same
   kernel size, stride, dilation and grouping; nearest in log-scale channels,
   size and batch), when that config is valid for this workload;
3. the template default.
A transposed conv (``ConvTranspose2D``) runs as ordinary convs, each
dispatched as above, with the lowering its tuning measured fastest
(``tuner.lowering_log``), else sub-pixel.
Only records whose config is still valid for the current templates count (a
template's knobs may have changed since the log was written, or a plugin
template may be missing): such a config would fail to build. Cases 2 and 3
warn once per workload, naming it, so a user knows which shapes run untuned.
Kernels are built through the disk cache: a second process starting the same
model does not recompile.
"""
from __future__ import annotations

import contextvars
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Iterable, Optional, TypeVar

from convtune.codegen import CompiledKernel, build
from convtune.codegen.conv_transpose import PreparedConvTranspose
from convtune.ir.conv_transpose_lowering import default_lowering
from convtune.ir.workload import Conv2D
from convtune.ir.workload_transpose import ConvTranspose2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config
from convtune.schedules.target import CpuTarget, host_target
from convtune.schedules.templates import default_config, invalid_reason, schedule_from_config
from convtune.tuner import lowering_log, records
from convtune.tuner.records import Record

_current: contextvars.ContextVar[Optional[ApplyHistoryBest]] = contextvars.ContextVar("convtune_dispatch", default=None)


class FallbackWarning(UserWarning):
    """A workload runs with a config that was not tuned for it."""


Workload = TypeVar("Workload", Conv2D, ConvTranspose2D)


def tuning_workload(wl: Workload) -> Workload:
    """The workload a config (or a transposed conv's lowering) is tuned
    under: the conv without its fused epilogue (bias, residual, activation).
    The epilogue is elementwise work at the output tile's store, so one config
    serves every variant: a model whose 3x3 layer appears with and without a
    residual tunes it once."""
    residual = {"residual": False} if isinstance(wl, Conv2D) else {}  # a transposed conv has none
    return dataclasses.replace(wl, bias=False, activation=None, **residual)


def _kind(wl: Conv2D) -> tuple:
    return (wl.R, wl.S, wl.stride, wl.dilation, "dw" if wl.is_depthwise else wl.groups > 1)


def _distance(a: Conv2D, b: Conv2D) -> float:
    return sum(abs(math.log(x / y)) for x, y in ((a.C, b.C), (a.K, b.K), (a.H, b.H), (a.W, b.W), (a.N, b.N)))


class ApplyHistoryBest:
    """Best configs of tuning logs, for this target. Use as a context manager
    to make it the dispatcher ``current()`` returns."""

    def __init__(self, logs: str | Path | Iterable[str | Path], target: Optional[CpuTarget] = None) -> None:
        paths = [logs] if isinstance(logs, (str, Path)) else list(logs)
        self.target = target or host_target()
        recs = records.read_many(paths)
        here = [r for r in recs if r.target_key == self.target.key and r.ok]
        self.other_targets = sum(1 for r in recs if r.target_key != self.target.key)
        self.best: dict[str, Record] = {}
        for r in sorted(here, key=lambda r: r.rank):  # best first: usually one validity check a workload
            if r.workload_key not in self.best and invalid_reason(r.workload_obj, r.config, self.target) is None:
                self.best[r.workload_key] = r
        # workloads tuned here whose every successful config is invalid now
        self._stale = {r.workload_key for r in here} - set(self.best)
        self.lowerings = lowering_log.read_choices(paths, self.target.key)
        """Transposed conv workload key -> the lowering measured fastest."""
        self._warned: set[str] = set()
        self._kernels: dict[str, CompiledKernel] = {}
        self._token: Optional[contextvars.Token] = None

    def _warn(self, wl: Conv2D, message: str) -> None:
        if wl.key not in self._warned:
            self._warned.add(wl.key)
            warnings.warn(f"{wl.short()}: {message}", FallbackWarning, stacklevel=3)

    def config_for(self, wl: Conv2D) -> tuple[Config, str]:
        """(config, source) with source 'tuned', 'nearest <workload>' or 'default'."""
        for tuned in (self.best.get(wl.key), self.best.get(tuning_workload(wl).key)):
            if tuned is not None and invalid_reason(wl, tuned.config, self.target) is None:
                return tuned.config, "tuned"
        why = "tuned configs are not valid for the current templates" if wl.key in self._stale else "not tuned"
        candidates = sorted((r for r in self.best.values() if _kind(r.workload_obj) == _kind(wl)),
                            key=lambda r: _distance(r.workload_obj, wl))
        for rec in candidates:
            if invalid_reason(wl, rec.config, self.target) is None:
                near = rec.workload_obj.short()
                self._warn(wl, f"{why}; using the best config of the nearest tuned workload ({near})")
                return rec.config, f"nearest {near}"
        self._warn(wl, f"{why} and no similar tuned workload; using the untuned default config")
        return default_config(wl, self.target), "default"

    def schedule_for(self, wl: Conv2D) -> Schedule:
        """A fresh schedule of ``wl`` with its config (``config_for``)."""
        return schedule_from_config(wl, self.config_for(wl)[0], self.target)

    def lowering_for(self, wl: ConvTranspose2D) -> str:
        """The lowering measured fastest for ``wl`` (or for it without its
        epilogue, as model tuning measures it), else the untuned default (sub-pixel)."""
        return self.lowerings.get(wl.key) or self.lowerings.get(tuning_workload(wl).key) or default_lowering(wl)

    def conv_transpose(self, wl: ConvTranspose2D, weight: object, bias: object = None,
                       lowering: Optional[str] = None) -> PreparedConvTranspose:
        """``wl`` ready to run (weights transformed and packed once), its
        sub-convs dispatched like any conv; ``lowering`` overrides ``lowering_for``."""
        return PreparedConvTranspose(wl, lowering or self.lowering_for(wl), weight, bias, self.schedule_for)

    def kernel(self, wl: Conv2D) -> CompiledKernel:
        """The compiled kernel for ``wl`` (memory, then disk cache, then compile)."""
        if wl.key not in self._kernels:
            config, _ = self.config_for(wl)
            self._kernels[wl.key] = build(schedule_from_config(wl, config, self.target), target=self.target.kind)
        return self._kernels[wl.key]

    def __enter__(self) -> ApplyHistoryBest:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


def apply_history_best(logs: str | Path | Iterable[str | Path], target: Optional[CpuTarget] = None) -> ApplyHistoryBest:
    """``with apply_history_best("logs/x.jsonl"): ...`` (TVM's name for it)."""
    return ApplyHistoryBest(logs, target)


def current() -> Optional[ApplyHistoryBest]:
    """The dispatcher of the innermost ``with apply_history_best(...)``, if any."""
    return _current.get()


def conv2d_kernel(wl: Conv2D) -> CompiledKernel:
    """The kernel to run ``wl`` with: from the current dispatcher, else the
    untuned default config (with a warning)."""
    dispatcher = current()
    if dispatcher is None:
        warnings.warn(f"{wl.short()}: no tuning log applied; using the untuned default config", FallbackWarning,
                      stacklevel=2)
        return build(schedule_from_config(wl, default_config(wl)))
    return dispatcher.kernel(wl)
