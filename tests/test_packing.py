"""Data packing to NCHW[x]c is vector code: masked row loads, a register
transpose, contiguous stores; and it stays correct at every edge (channels
that do not fill the last block, asymmetric padding, odd widths)."""
import pytest

from convtune.codegen import source
from conftest import assert_correct, packed_schedule
from convtune.ir import conv2d


@pytest.mark.parametrize("channels,block", [(20, 1), (20, 3), (20, 4), (20, 8), (20, 16), (40, 32)])
def test_packing_stage_is_vectorized_and_correct(channels, block):
    wl = conv2d(1, channels, 9, 21, 16, 3, padding=(1, 2, 0, 1))
    sch = packed_schedule(wl, cb=block, kb=16, qb=4)
    pack = source(sch).split("def stage0", 1)[1].split("def stage1", 1)[0]
    assert "vldmask(data," in pack and " st(" not in pack
    if block & (block - 1) == 0:  # powers of two interleave; others scatter lane by lane
        assert "vscatter" not in pack
        assert ("vinterleave(" in pack) == (block > 1)
    assert_correct(sch)
