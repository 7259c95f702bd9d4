"""Tunable knobs of a schedule template, like AutoTVM's ``define_knob``.

A ``Space`` is the product of its knobs' candidate values, filtered by
constraints between knobs (so the tuner never compiles a config that would
spill the register file, say). Configs are plain JSON-serialisable dicts.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

Config = dict[str, Any]


_REQUIRED = object()


@dataclass(frozen=True)
class Knob:
    name: str
    values: tuple[Any, ...]
    doc: str = ""
    absent: Any = field(default=_REQUIRED, repr=False)
    """For a knob added after configs were logged: the value a config without
    it means (what the schedule did before), so old tuning logs stay valid.
    Not in the repr: a study's name digests the knobs' reprs, and the
    sentinel's would differ from process to process."""


@dataclass(frozen=True)
class Constraint:
    doc: str
    """Why a config is refused, e.g. 'register tile must fit 16 registers'."""
    holds: Callable[[Config], bool]


@dataclass(frozen=True)
class Space:
    template: str
    knobs: tuple[Knob, ...]
    constraints: tuple[Constraint, ...]
    default: Config

    def __post_init__(self) -> None:
        reason = self.invalid_reason(self.default)
        if reason:
            raise ValueError(f"{self.template}: default config {self.default} is invalid: {reason}")

    def invalid_reason(self, config: Config) -> str | None:
        """None when ``config`` is a valid point of this space, else why not."""
        names = {k.name for k in self.knobs}
        extra = set(config) - names - {"algorithm"}
        if extra:
            return f"unknown knob(s) {sorted(extra)} for template {self.template}"
        for knob in self.knobs:
            if knob.name not in config:
                if knob.absent is not _REQUIRED:
                    continue
                return f"knob {knob.name!r} is missing"
            if config[knob.name] not in knob.values:
                return f"{knob.name}={config[knob.name]!r} is not one of {list(knob.values)}"
        complete = self.complete(config)
        for c in self.constraints:
            if not c.holds(complete):
                return c.doc
        return None

    def complete(self, config: Config) -> Config:
        """``config`` with each knob it predates set to the value its absence means."""
        return {**{k.name: k.absent for k in self.knobs if k.absent is not _REQUIRED and k.name not in config}, **config}

    def restrict(self, **values: tuple[Any, ...]) -> Space:
        """The same space with fewer candidate values for some knobs (for a
        small exhaustive grid, say). The default is kept if it survives, else
        the first valid config becomes the default."""
        for name, vals in values.items():
            knob = next((k for k in self.knobs if k.name == name), None)
            if knob is None or not set(vals) <= set(knob.values):
                raise ValueError(f"restrict: {name}={vals!r} is not a subset of the knob's values")
        knobs = tuple(replace(k, values=tuple(values.get(k.name, k.values))) for k in self.knobs)
        kept = all(self.default[k.name] in k.values for k in knobs)
        default = self.default if kept else next(_product(knobs, self.constraints), None)
        if default is None:
            raise ValueError(f"restrict: no valid config of {self.template} is left")
        return Space(self.template, knobs, self.constraints, default)

    def size(self) -> int:
        """Points in the unconstrained product."""
        n = 1
        for k in self.knobs:
            n *= len(k.values)
        return n

    def configs(self) -> Iterator[Config]:
        """Every valid config, in knob order."""
        return _product(self.knobs, self.constraints)

    def sample(self, rnd: random.Random, attempts: int = 10_000) -> Config:
        """A random valid config: each knob drawn uniformly, the whole draw
        repeated until the constraints hold (so every valid config is equally
        likely, unlike fixing knobs one at a time)."""
        for _ in range(attempts):
            config = {k.name: rnd.choice(k.values) for k in self.knobs}
            if all(c.holds(config) for c in self.constraints):
                return config
        raise ValueError(f"{self.template}: no valid config in {attempts} random draws")


def _product(knobs: tuple[Knob, ...], constraints: tuple[Constraint, ...]) -> Iterator[Config]:
    for values in itertools.product(*(k.values for k in knobs)):
        config = dict(zip((k.name for k in knobs), values))
        if all(c.holds(config) for c in constraints):
            yield config
