"""Illegal schedules raise ScheduleError naming the primitive and the reason."""
import pytest

from conftest import assert_correct
from convtune.codegen import build, lower_schedule
from convtune.ir import conv2d
from convtune.schedules import Schedule, ScheduleError

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


@pytest.mark.parametrize("args, error", [
    (("p", "z", 2, 2), r"^tile: 'z' is not an axis of this schedule \(axes: n, k_o, k_i, p, q, c, r, s\)"),
    (("p", "q", 2, 0), r"^tile: factor must be a positive int, got 0"),
    (("p", "q", 2, 20), r"^tile: factor 20 exceeds the extent 12 of 'q'"),
    (("p", "p", 2, 2), r"^tile: the two axes must differ, got 'p' twice"),
])
def test_a_rejected_tile_names_tile_and_leaves_no_partial_split(args, error):
    s = sch()
    s.split("k", 4)
    before = s.state
    with pytest.raises(ScheduleError, match=error):
        s.tile(*args)
    assert s.state is before
    assert s.axes == ("n", "k_o", "k_i", "p", "q", "c", "r", "s")


def test_tile_that_would_break_an_annotation_is_rejected_whole():
    s = sch()
    s.reorder("n", "k", "p", "c", "r", "s", "q")
    s.vectorize("q")
    before = s.state
    with pytest.raises(ScheduleError, match=r"^tile: axis 'q' is already vectorized"):
        s.tile("p", "q", 2, 4)
    assert s.state is before


def test_tile_orders_outer_then_inner_and_builds_a_correct_kernel():
    s = Schedule(conv2d(1, 6, 10, 9, 8, 3, padding=1, bias=True, activation="relu"))
    assert s.tile("p", "q", 4, 3) == ("p_o", "q_o", "p_i", "q_i")
    assert s.axes == ("n", "k", "p_o", "q_o", "p_i", "q_i", "c", "r", "s")
    assert (s.extent("p_o"), s.extent("q_o"), s.extent("p_i"), s.extent("q_i")) == (3, 3, 4, 3)
    assert s.state.trace == ("tile(p, q, 4, 3) -> p_o, q_o, p_i, q_i",)
    assert_correct(s)  # p = 10 is not a multiple of 4: the overhang is guarded


def test_unknown_target():
    with pytest.raises(ValueError, match=r"^target: 'tpu' is not supported"):
        build(sch(), target="tpu")
