"""CPU targets the tests name, so that a config sized for one ISA means the
same on every host: a schedule built for AVX-512 (32 registers of 16
floats) still runs right on an AVX2 machine (LLVM legalises the vectors;
``test_templates`` checks it), only slower. Tests that pin knob values
(register tiles, channel blocks) build for ``AVX512``; tests about the
host's own spaces use ``host_target()``."""
from __future__ import annotations

from convtune.ir.workload import Conv2D
from convtune.schedules.schedule import Schedule
from convtune.schedules.space import Config
from convtune.schedules.target import CpuTarget
from convtune.schedules.templates import invalid_reason, schedule_from_config

AVX2 = CpuTarget("haswell", ("avx2", "fma", "avx"), vector_lanes=8, vector_registers=16, cores=2)
AVX512 = CpuTarget("znver5", ("avx512f", "avx512bw", "avx512vl", "avx2", "fma", "avx"), vector_lanes=16,
                   vector_registers=32, cores=2)


def avx512_schedule(wl: Conv2D, config: Config) -> Schedule:
    """``config``'s schedule, built for AVX-512 whatever the host."""
    return schedule_from_config(wl, config, AVX512)


def avx512_invalid_reason(wl: Conv2D, config: Config) -> str | None:
    return invalid_reason(wl, config, AVX512)
