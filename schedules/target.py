"""What a target offers a schedule: a CPU's vector width, registers and
cores; a GPU's per-block limits (``CudaTarget``, detected by
``codegen.cuda_build.cuda_target``).

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
from typing import Union


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
    model with another thread count is still the same target. A GPU is its
    name and compute capability."""
    if target["kind"] == "cuda":
        return json.dumps({"kind": "cuda", "name": target["name"],
                           "compute_capability": list(target["compute_capability"])}, sort_keys=True)
    return json.dumps({"kind": target["kind"], "cpu": target["cpu"], "isa": list(target["isa"])}, sort_keys=True)


@dataclass(frozen=True)
class CudaTarget:
    """A CUDA device and the per-block limits a schedule must respect
    (``schedules.gpu.check_limits`` refuses a schedule past them before it
    compiles)."""

    name: str
    compute_capability: tuple[int, int]
    max_threads_per_block: int = 1024
    max_block_dims: tuple[int, int, int] = (1024, 1024, 64)
    max_grid_dims: tuple[int, int, int] = (2**31 - 1, 65535, 65535)
    max_shared_memory_per_block: int = 48 * 1024
    """Bytes of static shared memory (more needs dynamic shared memory)."""
    max_registers_per_thread: int = 255
    registers_per_block: int = 65536
    multiprocessors: int = 1
    kind: str = "cuda"

    @property
    def key(self) -> str:
        return target_key(self.to_dict())

    def to_dict(self) -> dict:
        return asdict(self)


Target = Union[CpuTarget, CudaTarget]


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
