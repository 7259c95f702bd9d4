"""Which lowering runs each transposed conv fastest: the ``.lowerings.jsonl`` next to a tuning log.

A transposed conv's lowering (``ir.conv_transpose_lowering``) is its own
algorithm knob, chosen after its sub-convs are tuned by timing the whole
layer with each lowering (``tuner.conv_transpose_timing``). The choice is
kept beside the log (``logs/x.jsonl`` -> ``logs/x.lowerings.jsonl``), one
JSON line per measurement, not in the log itself: every reader of the log
expects ``Conv2D`` records. The latest line of a workload and target wins;
a corrupt line is skipped with a warning, like a log's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from convtune.ir.conv_transpose_lowering import LOWERINGS
from convtune.ir.workload_transpose import ConvTranspose2D
from convtune.schedules.target import target_key
from convtune.tuner import records
from convtune.tuner.records import read_lines


def lowerings_path(log: str | Path) -> Path:
    log = Path(log)
    return log.with_name(log.name.removesuffix(".jsonl") + ".lowerings.jsonl")


def append_choice(log: str | Path, wl: ConvTranspose2D, target: dict, seconds: dict[str, float]) -> str:
    """Record the measured seconds per call of each lowering; returns the fastest."""
    best = min(seconds, key=seconds.__getitem__)
    line = {"workload": wl.to_dict(), "target": target, "seconds": seconds, "lowering": best}
    records.append_line(lowerings_path(log), json.dumps(line, sort_keys=True))
    return best


def read_choices(logs: Iterable[str | Path], target: str) -> dict[str, str]:
    """Workload key -> lowering, from the lowering files of ``logs`` (for ``target``'s key)."""
    choices: dict[str, str] = {}
    for log in logs:
        path = lowerings_path(log)
        if not path.exists():
            continue
        for workload, lowering, target_of in read_lines(path, _choice, what="line"):
            if target_of == target:
                choices[workload] = lowering
    return choices


def _choice(line: str) -> tuple[str, str, str]:
    """(workload key, lowering, target key) of one line of a lowerings file."""
    d = json.loads(line)
    if d["lowering"] not in LOWERINGS:
        raise ValueError(f"unknown lowering {d['lowering']!r}")
    return ConvTranspose2D.from_dict(d["workload"]).key, d["lowering"], target_key(d["target"])
