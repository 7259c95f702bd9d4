"""The tuning log: one JSON object per line, one line per measured candidate.

Appends take an exclusive lock and write the whole line in one ``write``
followed by ``fsync``, so a killed run loses at most the line being written
and workers sharing a log never interleave. Readers skip a corrupt line with a
warning naming the file and line, and keep going.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from convtune.ir.workload import Conv2D
from convtune.schedules.target import target_key
from convtune.tuner.timing import median

FORMAT_VERSION = 1


MODEL_CACHE = "model"
"""``extra.cache`` of records timed inside runs of a whole model (``tuner.model_refine``)."""


class ErrorCode(IntEnum):
    OK = 0
    BUILD_ERROR = 1
    """Lowering or compilation raised."""
    WRONG_ANSWER = 2
    """The kernel ran but disagreed with the float64 reference."""
    RUNTIME_ERROR = 3
    """The kernel raised while running."""
    TIMEOUT = 4
    """Build or run exceeded its time limit; the worker was killed."""
    CRASH = 5
    """The worker process died (e.g. a segfault)."""


class LogWarning(UserWarning):
    pass


@dataclass
class Record:
    workload: dict[str, Any]
    target: dict[str, Any]
    config: dict[str, Any]
    costs: list[float]
    """Seconds per call, one per repeat (empty when the candidate failed)."""
    error_code: int = 0
    error: str = ""
    compile_seconds: float = 0.0
    timestamp: float = field(default_factory=time.time)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def ok(self) -> bool:
        return self.error_code == ErrorCode.OK and bool(self.costs)

    @property
    def cost(self) -> float:
        """Median seconds per call (inf for a failed candidate); the true
        median, so an even number of repeats is not biased towards the slower."""
        return median(self.costs) if self.ok else float("inf")

    @property
    def cache(self) -> str:
        """How the caches were when the costs were timed: "cold" (flushed
        before each call, the tuner's default), "warm", or "model" (inside
        runs of a whole model: ``tuner.model_refine``); logs written before
        cold timing existed say nothing and were timed warm."""
        return str(self.extra.get("cache", "warm"))

    @property
    def rank(self) -> tuple[int, float]:
        """Sort key for "best": a model refinement's choice first (the latest
        one: its costs come from a model, not comparable with other runs'),
        then records timed cold (as in a model) before those timed warm,
        which look faster than they run in a model; then by cost. A log that
        mixes cold and warm picks among its cold records."""
        if self.cache == MODEL_CACHE:
            return (0, -self.timestamp)
        return (1 if self.cache == "cold" else 2, self.cost)

    @property
    def gflops(self) -> float:
        return self.workload_obj.flops / self.cost / 1e9 if self.ok else 0.0

    @property
    def workload_obj(self) -> Conv2D:
        return Conv2D.from_dict(self.workload)

    @property
    def workload_key(self) -> str:
        return self.workload_obj.key

    @property
    def target_key(self) -> str:
        return target_key(self.target)

    @property
    def config_key(self) -> str:
        return json.dumps(self.config, sort_keys=True)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> Record:
        d = json.loads(line)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        missing = {"workload", "target", "config", "costs"} - set(d)
        if missing:
            raise ValueError(f"missing fields {sorted(missing)}")
        if d.get("version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(f"written by a newer convtune (format {d['version']})")
        rec = Record(**{k: v for k, v in d.items() if k in Record.__dataclass_fields__})
        rec.workload_obj  # validates the workload  # noqa: B018
        _check_fields(rec)
        return rec


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_fields(rec: Record) -> None:
    """Refuse a record whose fields have the wrong types, so a line that is
    valid JSON but not a record is skipped as corrupt when the log is read,
    rather than crashing ``show``, ``tune`` or ``apply_history_best`` later."""
    target = rec.target
    if isinstance(target, dict) and target.get("kind") == "cuda":
        cc = target.get("compute_capability")
        if not (isinstance(target.get("name"), str) and isinstance(cc, list) and len(cc) == 2
                and all(isinstance(i, int) for i in cc)):
            raise ValueError("target: a cuda target needs a name (string) and compute_capability ([major, minor])")
    elif not (isinstance(target, dict) and isinstance(target.get("kind"), str) and isinstance(target.get("cpu"), str)
              and isinstance(target.get("isa"), list) and all(isinstance(i, str) for i in target["isa"])):
        raise ValueError("target: needs kind and cpu (strings) and isa (a list of strings)")
    if not (isinstance(rec.config, dict) and isinstance(rec.config.get("algorithm"), str)):
        raise ValueError(f"config: {rec.config!r} is not an object naming its algorithm")
    if not (isinstance(rec.costs, list) and all(_is_number(c) and 0 < c < float("inf") for c in rec.costs)):
        raise ValueError(f"costs: {rec.costs!r} is not a list of positive seconds")
    if not (isinstance(rec.error_code, int) and not isinstance(rec.error_code, bool)
            and rec.error_code in list(ErrorCode)):
        raise ValueError(f"error_code: {rec.error_code!r} is not one of {[int(c) for c in ErrorCode]}")
    for name, kind in (("error", str), ("versions", dict), ("extra", dict)):
        if not isinstance(getattr(rec, name), kind):
            raise ValueError(f"{name}: {getattr(rec, name)!r} is not a {kind.__name__}")
    for name in ("compile_seconds", "timestamp"):
        if not _is_number(getattr(rec, name)):
            raise ValueError(f"{name}: {getattr(rec, name)!r} is not a number")


def versions() -> dict[str, str]:
    """convtune's version and those of the packages that compile its kernels."""
    from importlib.metadata import PackageNotFoundError, version

    import convtune

    out = {"convtune": convtune.__version__}
    for pkg in ("numba", "llvmlite", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def append(path: str | Path, record: Record) -> None:
    """Append one record durably (locked, one write, fsync)."""
    append_line(path, record.to_json())


def append_line(path: str | Path, line: str) -> None:
    """Append one line durably: under an exclusive lock, in one ``write``,
    then ``fsync``, so concurrent writers never interleave and a kill loses
    at most this line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


T = TypeVar("T")


def read_lines(path: str | Path, parse: Callable[[str], T], what: str = "record") -> Iterator[T]:
    """``parse`` of each non-blank line of a JSONL file; a line it refuses
    (ValueError, TypeError, KeyError) is skipped with a LogWarning naming it,
    so one corrupt line loses nothing else."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                yield parse(line)
            except (ValueError, TypeError, KeyError) as e:
                warnings.warn(f"{path}:{lineno}: skipped corrupt {what} ({e})", LogWarning, stacklevel=2)


def read(path: str | Path) -> Iterator[Record]:
    """Records of a log, skipping (with a LogWarning) lines that do not parse."""
    return read_lines(path, Record.from_json)


def read_many(paths: Iterable[str | Path]) -> list[Record]:
    out: list[Record] = []
    for p in paths:
        out.extend(read(p))
    return out


def best_records(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """The best successful record per (workload key, target key): the
    fastest, cold-timed records first (``Record.rank``)."""
    best: dict[tuple[str, str], Record] = {}
    for r in records:
        if not r.ok:
            continue
        key = (r.workload_key, r.target_key)
        if key not in best or r.rank < best[key].rank:
            best[key] = r
    return best


@dataclass(frozen=True)
class Pace:
    """How fast a workload was tuned, from its records."""

    seconds_per_trial: float
    """Median wall time from the record before each of the workload's:
    search, compile and measurement together, robust to the pauses of a
    resumed run."""
    compile_seconds: float
    """Median build time of a candidate (lowering and Numba/LLVM)."""
    measure_seconds: float
    """Median time to check and time a built candidate."""


def pace(records: Iterable[Record], log: Iterable[Record] = ()) -> Pace:
    """``records``' pace; ``log``: the whole log they come from, whose
    records of other workloads come between theirs when a model's tasks
    take turns (the gap before a trial is then from the other task's last
    record, not from this task's previous round)."""
    recs = sorted(records, key=lambda r: r.timestamp)
    timeline = sorted(log, key=lambda r: r.timestamp) or recs
    before = {id(b): b.timestamp - a.timestamp for a, b in zip(timeline, timeline[1:])}
    gaps = [before[id(r)] for r in recs if id(r) in before]
    return Pace(median(gaps) if gaps else float("nan"), median([r.compile_seconds for r in recs]),
                median([r.extra.get("measure_seconds", 0.0) for r in recs]))
