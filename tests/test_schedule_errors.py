"""Illegal schedules raise ScheduleError naming the primitive and the reason."""
import pytest

from codegen import build, lower_schedule
from ir import conv2d
from schedules import Schedule, ScheduleError

WL = conv2d(1, 16, 12, 12, 16, 3, padding=1)


def sch() -> Schedule:
    return Schedule(WL)


def test_split_of_an_axis_that_no_longer_exists():
    s = sch()
    s.split("q", 4)
    with pytest.raises(ScheduleError, match=r"^split: axis 'q' no longer exists: it was split into 'q_o' and 'q_i'"):
        s.split("q", 2)


def test_unknown_axis():
    with pytest.raises(ScheduleError, match=r"^reorder: 'z' is not an axis"):
        sch().reorder("z", "n")


def test_split_factor_must_be_positive_and_fit():
    with pytest.raises(ScheduleError, match=r"^split: factor must be a positive int"):
        sch().split("k", 0)
    with pytest.raises(ScheduleError, match=r"^split: factor 32 exceeds the extent 16"):
        sch().split("k", 32)


def test_vectorizing_a_loop_that_is_not_innermost():
    with pytest.raises(ScheduleError, match=r"^vectorize: vectorized axis 'k' must be the innermost loop"):
        sch().vectorize("k")


def test_reorder_that_moves_vectorized_axis_outward():
    s = sch()
    s.reorder("n", "p", "q", "c", "r", "s", "k")
    s.vectorize("k")
    with pytest.raises(ScheduleError, match=r"^reorder: vectorized axis 'k' must be the innermost"):
        s.reorder("k", "s")


def test_vectorizing_or_parallelizing_a_reduction():
    s = sch()
    with pytest.raises(ScheduleError, match=r"^vectorize: 's' is a reduction axis"):
        s.vectorize("s")
    with pytest.raises(ScheduleError, match=r"^parallel: 'c' is a reduction axis"):
        s.parallel("c")


def test_reduction_axis_moved_outside_the_cache_attach_point():
    s = sch()
    qo, qi = s.split("q", 4)
    s.reorder("n", "k", "p", qo, "c", "r", "s", qi)
    s.cache_write(qo)
    with pytest.raises(ScheduleError,
                       match=r"^reorder: reduction axis 'c' would be outside the cache_write attach point 'q_o'"):
        s.reorder("c", qo)


def test_cache_write_at_a_reduction_axis():
    with pytest.raises(ScheduleError, match=r"^cache_write: attach point 'r' is a reduction axis"):
        sch().cache_write("r")


def test_parallel_inside_the_cache_tile():
    s = sch()  # batch 1: the loop 'n' has extent 1, so 'k' is the outermost real loop
    s.cache_write("n")
    with pytest.raises(ScheduleError, match=r"^parallel: parallel axis 'k' is inside the cache_write attach point 'n'"):
        s.parallel("k")


def test_parallel_loop_must_be_outermost():
    with pytest.raises(ScheduleError,
                       match=r"^parallel: parallel axis 'p' must be the outermost loop, but 'k' is outside"):
        sch().parallel("p")


def test_fuse_needs_adjacent_axes_of_one_kind():
    with pytest.raises(ScheduleError, match=r"^fuse: 'n' and 'p' are not adjacent"):
        sch().fuse("n", "p")
    with pytest.raises(ScheduleError, match=r"^fuse: cannot fuse spatial axis 'q' with reduce axis 'c'"):
        sch().fuse("q", "c")


def test_two_parallel_loops():
    s = sch()
    s.parallel("n")
    with pytest.raises(ScheduleError, match=r"^parallel: 'n' is already parallel; only one loop can be"):
        s.parallel("k")


def test_annotating_twice_or_splitting_annotated():
    s = sch()
    s.unroll("s")
    with pytest.raises(ScheduleError, match=r"^split: axis 's' is already unrolled"):
        s.split("s", 2)


def test_vector_too_wide():
    s = Schedule(conv2d(1, 4, 100, 100, 4, 1))
    s.reorder("n", "k", "c", "r", "s", "p", "q")
    with pytest.raises(ScheduleError, match=r"^vectorize: 'q' has extent 100; split it"):
        s.vectorize("q")


def test_unroll_explosion_is_refused_at_build():
    s = Schedule(conv2d(1, 64, 8, 8, 64, 3, padding=1))
    s.reorder("n", "p", "q", "k", "c", "r", "s")
    s.unroll("k")
    s.unroll("c")
    with pytest.raises(ScheduleError, match=r"^unroll: unrolling 'k' would emit about \d+ statements"):
        build(s)


def test_packing_twice():
    s = sch()
    s.pack_data(8)
    with pytest.raises(ScheduleError, match=r"^pack_data: the input is already packed"):
        s.pack_data(4)
    with pytest.raises(ScheduleError, match=r"^pack_weights: in_block must be a positive int"):
        s.pack_weights(0, 8)


def test_the_state_is_unchanged_by_a_rejected_primitive():
    s = sch()
    before = s.state
    with pytest.raises(ScheduleError):
        s.fuse("n", "p")
    assert s.state is before
    lower_schedule(s)  # still a legal schedule


def test_unknown_target():
    with pytest.raises(ValueError, match=r"^target: 'tpu' is not supported"):
        build(sch(), target="tpu")
