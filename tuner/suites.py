"""Benchmark suites: named lists of conv layers (built in, or a JSON file in
the same format: {"suite": [{"name", "N", "C", "H", "W", "K", "R", "S",
"stride", "pad", "dilation", "groups"}, ...]})."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from convtune.ir.workload import Conv2D, WorkloadError, conv2d

BUILTIN = Path(__file__).with_name("suites.json")


@dataclass(frozen=True)
class Layer:
    name: str
    workload: Conv2D


def _layer(entry: dict, where: str) -> Layer:
    try:
        wl = conv2d(entry["N"], entry["C"], entry["H"], entry["W"], entry["K"], entry["R"], entry.get("S", entry["R"]),
                    stride=entry.get("stride", 1), padding=entry.get("pad", 0), dilation=entry.get("dilation", 1),
                    groups=entry.get("groups", 1))
    except KeyError as e:
        raise ValueError(f"{where}: missing field {e}") from None
    except WorkloadError as e:
        raise ValueError(f"{where}: {e}") from None
    return Layer(entry.get("name", where), wl)


def suite_names() -> list[str]:
    return [k for k in json.loads(BUILTIN.read_text()) if not k.startswith("_")]


def load_suite(spec: str) -> tuple[str, list[Layer]]:
    """A built-in suite by name, or ``FILE.json`` (its only suite, or
    ``FILE.json:NAME``)."""
    path, name = spec.rsplit(":", 1) if ".json:" in spec else (spec, "")
    if spec in suite_names():
        data, name = json.loads(BUILTIN.read_text()), spec
    elif Path(path).is_file():
        data = json.loads(Path(path).read_text())
        names = [k for k in data if not k.startswith("_")]
        if not name:
            if len(names) != 1:
                raise ValueError(f"{path} holds suites {names}; pick one with {path}:NAME")
            name = names[0]
        if name not in data:
            raise ValueError(f"{path} has no suite {name!r} (it has {names})")
    else:
        raise ValueError(f"unknown suite {spec!r}: not a built-in ({', '.join(suite_names())}) nor a JSON file")
    return name, [_layer(e, f"{name}[{i}]") for i, e in enumerate(data[name])]
