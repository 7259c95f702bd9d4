"""What a CPU target offers a schedule: vector width, registers, cores.

Templates size register tiles from this (AVX2: 16 ymm registers of 8 floats;
AVX-512: 32 zmm of 16), and tuning logs record ``key`` so results measured on
one machine are never applied to another.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache


@dataclass(frozen=True)
class CpuTarget:
    cpu: str
    """LLVM's name for the microarchitecture (e.g. znver3, skylake-avx512)."""
    isa: tuple[str, ...]
    """The SIMD extensions that matter to code generation, e.g. ('avx2', 'fma')."""
    vector_lanes: int
    """float32 lanes per native vector register."""
    vector_registers: int
    cores: int
    kind: str = "cpu"

    @property
    def key(self) -> str:
        return target_key(self.to_dict())

    def to_dict(self) -> dict:
        return asdict(self)


def target_key(target: dict) -> str:
    """Identity of a target in tuning logs. Cores are left out: the same CPU
    model with another thread count is still the same target."""
    return json.dumps({"kind": target["kind"], "cpu": target["cpu"], "isa": list(target["isa"])}, sort_keys=True)


_ISA = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx2", "fma", "avx", "sse4.2", "neon", "asimd")


@lru_cache(maxsize=1)
def host_target() -> CpuTarget:
    """The machine this process runs on."""
    import llvmlite.binding as llvm

    features = {f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+")}
    isa = tuple(f for f in _ISA if f in features)
    if "avx512f" in features:
        lanes, regs = 16, 32
    elif "avx2" in features or "avx" in features:
        lanes, regs = 8, 16
    else:  # SSE / NEON
        lanes, regs = 4, 16 if platform.machine() == "x86_64" else 32
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuTarget(llvm.get_host_cpu_name(), isa, lanes, regs, cores)
