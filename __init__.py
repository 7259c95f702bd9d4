"""convtune: an autotuning compiler for 2-D convolution.

The repository's top-level folders install as subpackages of this one
(``convtune.ir``, ``convtune.schedules``, ``convtune.codegen``,
``convtune.tuner``), so none of them shadows, or is shadowed by, another
distribution's ``ir`` or ``tuner``.

The main entry points are importable from here. They load on first use:
``import convtune`` stays cheap (no numba or optuna import) for a tool that
only wants the version.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_ENTRY_POINTS = {
    "conv2d": "convtune.ir",
    "Conv2D": "convtune.ir",
    "conv2d_reference": "convtune.ir",
    "Schedule": "convtune.schedules",
    "ScheduleError": "convtune.schedules",
    "default_schedule": "convtune.schedules",
    "build": "convtune.codegen",
    "source": "convtune.codegen",
    "tune": "convtune.tuner.search",
    "apply_history_best": "convtune.tuner.dispatch",
}

__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'convtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
