"""The hot loop of the packed direct template compiles to packed FMAs with the
register tile held in registers, and so does the FMA ceiling's probe (skipped
only on CPUs without FMA)."""
import re

import numpy as np
import pytest

from convtune.codegen import build
from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import schedule_from_config
from convtune.tuner.ceilings import CHAINS, fma_chains


@pytest.mark.skipif("fma" not in host_target().isa, reason="this CPU has no FMA instructions")
def test_direct_template_hot_loop_is_packed_fma(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVTUNE_CACHE_DIR", str(tmp_path))  # numba cannot inspect code loaded from its cache
    target = host_target()
    lanes, wide = target.vector_lanes, "zmm" if target.vector_lanes == 16 else "ymm"
    kb, owb = 2 * lanes, 5
    wl = conv2d(1, 24, 13, 15, 2 * kb, 3, padding=1)  # a shape no other test builds
    config = {"algorithm": "direct", "cb": 8, "kb": kb, "owb": owb, "ohb": 1, "reduction_order": "c_rs",
              "unroll_s": False, "parallel": "nkp"}
    kernel = build(schedule_from_config(wl, config, target))
    compute = kernel.compiled.stages[-1]
    asm = "\n".join(compute.inspect_asm().values())
    packed = [line for line in asm.splitlines() if re.search(rf"vfmadd\d+ps\s+.*%{wide}", line)]
    # One FMA per accumulator (owb columns x kb/lanes vectors) per input channel step, at least.
    assert len(packed) >= owb * (kb // lanes), asm[:2000]
    scalar = [line for line in asm.splitlines() if re.search(r"vfmadd\d+ss", line)]
    assert not scalar, scalar[:3]



@pytest.mark.skipif("fma" not in host_target().isa, reason="this CPU has no FMA instructions")
def test_fma_ceiling_probe_is_packed_fma_on_the_native_vector():
    """The ceiling the bench divides by must be what the machine can do:
    CHAINS packed FMAs a loop iteration on the widest vector, none scalar."""
    target = host_target()
    wide = "zmm" if target.vector_lanes == 16 else "ymm"
    chains = fma_chains(target.vector_lanes)
    chains(np.float32(1.0), 1)
    asm = "\n".join(chains.inspect_asm().values())
    assert len([line for line in asm.splitlines() if re.search(rf"vfmadd\d+ps\s+.*%{wide}", line)]) >= CHAINS, asm
    assert not re.search(r"vfmadd\d+ss", asm)
