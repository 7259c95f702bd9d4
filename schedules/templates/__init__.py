"""Schedule templates and the ``algorithm`` knob that chooses among them.

A template is a function from (workload, config) to a ``Schedule`` plus the
``Space`` of configs it accepts. The full search space of a workload is the
union of the spaces of the templates that apply to it, tagged by
``config["algorithm"]``; ``default_config`` is what an untuned workload gets.
The target decides the templates: CPU ones for a ``CpuTarget``, CUDA ones
(``CUDA_TEMPLATES``) for a ``CudaTarget``; neither sees the other's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config, Space
from convtune.schedules.state import ScheduleError
from convtune.schedules.target import CudaTarget, Target, host_target
from convtune.schedules.templates import cuda_depthwise, cuda_direct, cuda_gemm, depthwise, direct, gemm, winograd
from convtune.schedules.templates import indirect
from convtune.schedules.templates import rows, toeplitz


@dataclass(frozen=True)
class Template:
    name: str
    applies: Callable[[Conv2D], bool]
    space: Callable[[Conv2D, Target], Space]
    schedule: Callable[[Conv2D, Config, Target], Schedule]


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template(direct.NAME, direct.applies, direct.space, direct.schedule),
    Template(gemm.NAME, gemm.applies, gemm.space, gemm.schedule),
    Template(depthwise.CHANNELS, depthwise.applies, depthwise.channels_space, depthwise.channels_schedule),
    Template(depthwise.WIDTH, depthwise.applies, depthwise.width_space, rows.row_schedule),
    Template(winograd.NAME, winograd.applies, winograd.space, winograd.schedule),
    Template(indirect.NAME, indirect.applies, indirect.space, indirect.schedule),
    Template(toeplitz.NAME, toeplitz.applies, toeplitz.space, toeplitz.schedule),
    Template(rows.DIRECT_W, rows.direct_w_applies, rows.direct_w_space, rows.row_schedule),
    Template(rows.POINTWISE_W, rows.pointwise_w_applies, rows.pointwise_w_space, rows.row_schedule),
)}
BUILTIN = tuple(TEMPLATES)
"""Names of the templates shipped with convtune (plugins may register more)."""
CUDA_TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template(cuda_direct.NAME, cuda_direct.applies, cuda_direct.space, cuda_direct.schedule),
    Template(cuda_depthwise.NAME, cuda_depthwise.applies, cuda_depthwise.space, cuda_depthwise.schedule),
    Template(cuda_gemm.NAME, cuda_gemm.applies, cuda_gemm.space, cuda_gemm.schedule),
)}


def templates_for(target: Target) -> dict[str, Template]:
    """The templates a target offers."""
    return CUDA_TEMPLATES if isinstance(target, CudaTarget) else TEMPLATES


def search_space(wl: Conv2D, target: Target | None = None) -> dict[str, Space]:
    """algorithm name -> its knob space, for every template that applies."""
    target = target or host_target()
    return {name: t.space(wl, target) for name, t in templates_for(target).items() if t.applies(wl)}


def default_algorithm(wl: Conv2D) -> str:
    if depthwise.applies(wl):
        return depthwise.WIDTH
    if wl.R == wl.S == 1:
        return gemm.NAME
    if winograd.applies(wl):
        return winograd.NAME
    return direct.NAME


def default_config(wl: Conv2D, target: Target | None = None) -> Config:
    """The config an untuned workload gets: a heuristic choice, no measurement."""
    target = target or host_target()
    if isinstance(target, CudaTarget):
        algorithm = cuda_depthwise.NAME if cuda_depthwise.applies(wl) else cuda_direct.NAME
    else:
        algorithm = default_algorithm(wl)
    return {"algorithm": algorithm, **templates_for(target)[algorithm].space(wl, target).default}


def _template_space(wl: Conv2D, config: Config, target: Target) -> tuple[Template, Space] | str:
    """The config's template and its space for ``wl``, or why there is none."""
    templates = templates_for(target)
    name = config.get("algorithm")
    if name not in templates:
        return f"unknown algorithm {name!r} (one of {', '.join(templates)})"
    if not templates[name].applies(wl):
        return f"algorithm {name!r} does not apply to {wl.short()}"
    return templates[name], templates[name].space(wl, target)


def invalid_reason(wl: Conv2D, config: Config, target: Target | None = None) -> str | None:
    """None when ``config`` is valid for ``wl`` on ``target``, else why not."""
    found = _template_space(wl, config, target or host_target())
    return found if isinstance(found, str) else found[1].invalid_reason(config)


def schedule_from_config(wl: Conv2D, config: Config, target: Target | None = None) -> Schedule:
    """The schedule a config describes; ScheduleError if the config is invalid.
    A config logged before a knob existed gets the value its absence means."""
    target = target or host_target()
    found = _template_space(wl, config, target)
    reason = found if isinstance(found, str) else found[1].invalid_reason(config)
    if reason:
        raise ScheduleError(f"config: {reason}")
    template, space = found  # type: ignore[misc]
    return template.schedule(wl, space.complete(config), target)


def complete_config(wl: Conv2D, config: Config, target: Target | None = None) -> Config:
    """``config`` with each knob it predates at the value its absence means
    (configs that differ only so build the same schedule); as given if invalid."""
    found = _template_space(wl, config, target or host_target())
    return config if isinstance(found, str) else found[1].complete(config)
