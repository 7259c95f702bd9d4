from hypothesis import given, settings
from hypothesis import strategies as st

from convtune.ir.expr import BinOp, Cmp, Const, Var
from convtune.ir.simplify import FALSE, TRUE, bounds, simplify, simplify_cond

co, ci, x, y = Var("co"), Var("ci"), Var("x"), Var("y")
R = {"co": (0, 7), "ci": (0, 7), "x": (0, 99), "y": (0, 5)}


def test_blocked_index_folds():
    assert simplify((co * 8 + ci) // 8, R) == co
    assert simplify((co * 8 + ci) % 8, R) == ci
    assert simplify((co * 16 + ci) // 8, R) == co * 2


def test_constant_offsets_fold_into_quotient():
    assert simplify((co * 8 + ci + 8) // 8, R) == co + 1
    assert simplify((co * 8 + 3) % 8, R) == Const(3)


def test_fused_axis_index_recombines():
    f = Var("f")
    assert simplify((f // 7) * 7 + f % 7, {"f": (0, 48)}) == f
    assert simplify(((f // 7) * 7 + f % 7) * 4 + 3, {"f": (0, 48)}) == f * 4 + 3
    assert simplify((f // 7) * 14 + (f % 7) * 2 + x, R | {"f": (0, 48)}) == f * 2 + x


def test_a_block_within_a_larger_divisor_folds():
    """A vector of 8 output channels within a group of 32: every lane is in
    group co // 4 (grouped convs once gathered such vectors lane by lane)."""
    assert simplify((co * 8 + ci) // 32, R) == co // 4
    assert simplify((co * 8 + ci) % 32, R) == co % 4 * 8 + ci
    assert simplify((co * 8 + ci + 1) // 32, R) == (co * 8 + ci + 1) // 32  # ci + 1 may carry past the block


def test_nested_division():
    assert simplify((x // 4) // 5, R) == x // 20


def test_conditions_decided_by_ranges():
    assert simplify_cond(co * 8 + ci < 64, R) == TRUE
    assert simplify_cond(co * 8 + ci < 60, R) not in (TRUE, FALSE)
    assert simplify_cond(co * 8 + ci > 70, R) == FALSE


def test_a_row_guard_of_fused_pixels_is_undivided():
    """``(f + 36) // 14 < 14`` (a 1x1's pixel f = p*14 + q in its last tile)
    is ``f < 160``: affine in the lane, one masked load."""
    f = Var("f")
    assert simplify_cond((f + 36) // 14 < 14, {"f": (0, 200)}) == (f < 160)
    assert simplify_cond(f // 14 >= 3, {"f": (0, 200)}) == (f >= 42)


def test_bounds():
    assert bounds(simplify(co * 8 + ci - 3, R), R) == (-3, 60)
    assert bounds(x % 7, R) == (0, 6)


def _eval(e, env):
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Var):
        return env[e.name]
    a, b = _eval(e.a, env), _eval(e.b, env)
    return {"+": a + b, "-": a - b, "*": a * b, "//": a // b if b else 0, "%": a % b if b else 0,
            "min": min(a, b), "max": max(a, b)}[e.op]


_COMPARE = {"<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__, "==": int.__eq__, "!=": int.__ne__}


leaf = st.one_of(st.sampled_from([co, ci, x, y]), st.integers(-5, 20).map(Const))
exprs = st.recursive(
    leaf,
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*"]), sub, sub).map(lambda t: BinOp(*t)),
        st.tuples(st.sampled_from(["//", "%"]), sub, st.integers(1, 17).map(Const)).map(lambda t: BinOp(*t)),
        st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(lambda t: BinOp(*t)),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(exprs, st.fixed_dictionaries({n: st.integers(lo, hi) for n, (lo, hi) in R.items()}))
def test_simplify_preserves_value(e, env):
    assert _eval(simplify(e, R), env) == _eval(e, env)


@settings(max_examples=300, deadline=None)
@given(exprs, st.fixed_dictionaries({n: st.integers(lo, hi) for n, (lo, hi) in R.items()}))
def test_bounds_contain_value(e, env):
    b = bounds(simplify(e, R), R)
    if b is not None:
        assert b[0] <= _eval(e, env) <= b[1]


@settings(max_examples=300, deadline=None)
@given(exprs, st.integers(1, 17), st.integers(-30, 30), st.sampled_from(sorted(_COMPARE)),
       st.fixed_dictionaries({n: st.integers(lo, hi) for n, (lo, hi) in R.items()}))
def test_comparisons_of_a_quotient_keep_their_truth(e, c, d, op, env):
    """Floor division by c > 0: ``e // c op d`` rewritten as a comparison of e itself."""
    got = simplify(Cmp(op, BinOp("//", e, Const(c)) + Const(3), Const(d)), R)
    want = _COMPARE[op](_eval(e, env) // c + 3, d)
    assert (bool(got.value) if isinstance(got, Const) else _truth(got, env)) == want


def _truth(cond, env):
    return _COMPARE[cond.op](_eval(cond.a, env), _eval(cond.b, env))
