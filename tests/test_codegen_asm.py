"""The hot loop of the packed direct template compiles to packed FMAs with the
register tile held in registers (no stack access in the loops it lives
through), and the FMA ceiling's probe to packed FMAs on the native vector
(skipped only on CPUs without FMA)."""
import re

import numpy as np
import pytest

from convtune.codegen import build
from convtune.ir import conv2d
from convtune.schedules.target import host_target
from convtune.schedules.templates import schedule_from_config
from convtune.tuner.ceilings import CHAINS, fma_chains

LABEL = re.compile(r"(\.LBB\w+):")
BRANCH = re.compile(r"\s+j\w+\s+(\.LBB\w+)")
VECTOR_STORE = re.compile(r"vmov\w*\s+%[xyz]mm\d+,\s*[^%\s]")
"""A vector register stored to memory (the destination is not a register)."""


def loops(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line of every loop: a label and a branch back to it."""
    labels = {m[1]: i for i, line in enumerate(lines) if (m := LABEL.match(line))}
    return [(labels[m[1]], i) for i, line in enumerate(lines)
            if (m := BRANCH.match(line)) and labels.get(m[1], i) < i]


def reduction_nest(asm: str, fma: re.Pattern) -> list[str]:
    """The lines of the loops the register tile lives through: the innermost
    loop with the most packed FMAs (not a remainder loop) and the loops
    around it up to, not including, the first that stores a vector to memory
    other than the stack, i.e. writes the tile out."""
    lines = asm.splitlines()
    with_fma = [loop for loop in loops(lines) if any(fma.search(line) for line in lines[loop[0]:loop[1]])]
    assert with_fma, "no loop holds a packed FMA"

    def inside(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
        return outer[0] <= inner[0] and inner[1] <= outer[1]

    innermost = [loop for loop in with_fma if not any(other != loop and inside(other, loop) for other in with_fma)]
    hot = max(innermost, key=lambda loop: sum(bool(fma.search(line)) for line in lines[loop[0]:loop[1]]))
    nest = hot
    for loop in sorted((loop for loop in with_fma if inside(hot, loop)), key=lambda loop: loop[1] - loop[0]):
        if any(VECTOR_STORE.search(line) and "%rsp" not in line for line in lines[loop[0]:loop[1]]):
            break
        nest = loop
    return lines[nest[0]:nest[1] + 1]


@pytest.mark.skipif("fma" not in host_target().isa, reason="this CPU has no FMA instructions")
def test_direct_template_hot_loop_is_packed_fma(monkeypatch, tmp_path):
    """A 4 x 2-vector tile: 11 registers with its operands, within AVX2's 16.
    (5 x 2, 13 by the spaces' count, spills on AVX2: LLVM interleaves two
    reduction steps' weight loads. The spaces' register bound keeps tiles
    feasible; it does not promise that no tile spills.)"""
    monkeypatch.setenv("CONVTUNE_CACHE_DIR", str(tmp_path))  # numba cannot inspect code loaded from its cache
    target = host_target()
    lanes, wide = target.vector_lanes, "zmm" if target.vector_lanes == 16 else "ymm"
    kb, owb = 2 * lanes, 4
    wl = conv2d(1, 24, 13, 15, 2 * kb, 3, padding=1)  # a shape no other test builds
    config = {"algorithm": "direct", "cb": 8, "kb": kb, "owb": owb, "ohb": 1, "reduction_order": "c_rs",
              "unroll_s": False, "parallel": "nkp"}
    kernel = build(schedule_from_config(wl, config, target))
    compute = kernel.compiled.stages[-1]
    asm = "\n".join(compute.inspect_asm().values())
    fma = re.compile(rf"vfmadd\d+ps\s+.*%{wide}")
    packed = [line for line in asm.splitlines() if fma.search(line)]
    # One FMA per accumulator (owb columns x kb/lanes vectors) per input channel step, at least.
    assert len(packed) >= owb * (kb // lanes), asm[:2000]
    scalar = [line for line in asm.splitlines() if re.search(r"vfmadd\d+ss", line)]
    assert not scalar, scalar[:3]
    # The tile stays in registers: nothing in its loops goes through the stack.
    nest = reduction_nest(asm, fma)
    spills = [line for line in nest if "%rsp" in line]
    assert not spills, "\n".join(spills[:5] + ["in the loops:"] + nest[:40])


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
