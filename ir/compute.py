"""The conv2d compute definition over spatial and reduction axes.

Like ``te.compute``, it says what each output element is, in terms of index
variables, and nothing about loop order or layout:

    out[n, k, p, q] = act(sum_{c, r, s} pad(data)[n, g*Cg + c, p*sh + r*dh - pt,
                      q*sw + s*dw - pl] * weight[k, c, r, s] + bias[k] + residual[n, k, p, q])

with ``g = k // Kg``. Padding is part of the definition: an element read
outside the input is zero (``valid`` below). Schedules and lowering substitute
their own loop variables for the axes.
"""
from __future__ import annotations

from dataclasses import dataclass

from convtune.ir.expr import BinOp, Call, Cmp, Const, Expr, Load, Select, Var, conj, emax, emin, fconst
from convtune.ir.loopnest import Buffer
from convtune.ir.workload import Activation, Conv2D

SPATIAL = "spatial"
REDUCE = "reduce"


def _clamp(x: Expr, lo: float, hi: float) -> Expr:
    return emin(emax(x, fconst(lo)), fconst(hi))


def activate(act: Activation, y: Expr) -> Expr:
    """``act(y)`` as an expression. Piecewise-linear kinds are min/max/select
    (exact in fp32); sigmoid and tanh are ``Call`` nodes, which the renderer
    turns into branch-free vector code."""
    if act.kind == "relu":
        return emax(y, fconst(0.0))
    if act.kind == "clip":
        return _clamp(y, act.lo, act.hi)
    if act.kind == "leaky_relu":
        return Select(Cmp(">", y, fconst(0.0)), y, BinOp("*", y, fconst(act.alpha)))
    if act.kind == "hardsigmoid":
        return _clamp(y * fconst(act.alpha) + fconst(act.beta), 0.0, 1.0)
    if act.kind == "hardswish":
        return y * (_clamp(y + fconst(3.0), 0.0, 6.0) * fconst(1 / 6))
    if act.kind == "silu":
        return y * Call("sigmoid", y)
    return Call(act.kind, y)  # sigmoid, tanh


@dataclass(frozen=True)
class Axis:
    name: str
    extent: int
    kind: str  # SPATIAL or REDUCE


@dataclass(frozen=True)
class ComputeDef:
    workload: Conv2D

    @property
    def spatial(self) -> tuple[Axis, ...]:
        w = self.workload
        return (Axis("n", w.N, SPATIAL), Axis("k", w.K, SPATIAL), Axis("p", w.P, SPATIAL), Axis("q", w.Q, SPATIAL))

    @property
    def reduce(self) -> tuple[Axis, ...]:
        w = self.workload
        return (Axis("c", w.Cg, REDUCE), Axis("r", w.R, REDUCE), Axis("s", w.S, REDUCE))

    @property
    def axes(self) -> tuple[Axis, ...]:
        return self.spatial + self.reduce

    # Logical tensors (NCHW / KCRS), the kernel's arguments.
    @property
    def data(self) -> Buffer:
        return Buffer("data", self.workload.data_shape)

    @property
    def weight(self) -> Buffer:
        return Buffer("weight", self.workload.weight_shape)

    @property
    def out(self) -> Buffer:
        return Buffer("out", self.workload.out_shape)

    @property
    def bias(self) -> Buffer | None:
        return Buffer("bias", (self.workload.K,)) if self.workload.bias else None

    @property
    def residual(self) -> Buffer | None:
        return Buffer("residual", self.workload.out_shape) if self.workload.residual else None

    def data_coords(self, ax: dict[str, Expr]) -> tuple[Expr, Expr, Expr, Expr]:
        """Logical NCHW coordinates of the input element an iteration reads
        (before padding is applied: they may fall outside the input)."""
        w = self.workload
        channel = ax["c"] if w.groups == 1 else (ax["k"] // w.Kg) * w.Cg + ax["c"]
        h = ax["p"] * w.stride[0] + ax["r"] * w.dilation[0] - w.padding[0]
        x = ax["q"] * w.stride[1] + ax["s"] * w.dilation[1] - w.padding[1]
        return (ax["n"], channel, h, x)

    def in_input(self, coords: tuple[Expr, ...]) -> Expr:
        """True where the read is inside the input (not in the zero padding)."""
        w = self.workload
        _, _, h, x = coords
        return conj(Cmp(">=", h, Const(0)), Cmp("<", h, Const(w.H)), Cmp(">=", x, Const(0)), Cmp("<", x, Const(w.W)))  # type: ignore[return-value]

    def weight_coords(self, ax: dict[str, Expr]) -> tuple[Expr, Expr, Expr, Expr]:
        return (ax["k"], ax["c"], ax["r"], ax["s"])

    def finalize(self, acc: Expr, ax: dict[str, Expr]) -> Expr:
        """The fused epilogue applied to a finished accumulator."""
        w = self.workload
        y = acc
        if w.bias:
            y = y + Load("bias", (ax["k"],))
        if w.residual:
            y = y + Load("residual", (ax["n"], ax["k"], ax["p"], ax["q"]))
        return y if w.activation is None else activate(w.activation, y)

    def __str__(self) -> str:
        ax = {a.name: Var(a.name) for a in self.axes}
        coords = self.data_coords(ax)
        read = Load("data", coords)
        prod = Select(self.in_input(coords), read, fconst(0.0)) * Load("weight", self.weight_coords(ax))
        red = ", ".join(f"{a.name}<{a.extent}" for a in self.reduce)
        body = self.finalize(Var(f"sum[{red}]({prod})", "float"), ax)
        spatial = ", ".join(f"{a.name}<{a.extent}" for a in self.spatial)
        return f"out[{spatial}] = {body}"


@dataclass(frozen=True)
class AlgorithmCompute:
    """The compute definition of an algorithm that rewrites a conv (Winograd's
    GEMM, Toeplitz matrices): axes of its own, ``spatial + reduce``, over the
    conv's buffers and epilogue, which stay those of ``conv``."""

    workload: Conv2D

    @property
    def spatial(self) -> tuple[Axis, ...]:
        raise NotImplementedError

    @property
    def reduce(self) -> tuple[Axis, ...]:
        raise NotImplementedError

    @property
    def axes(self) -> tuple[Axis, ...]:
        return self.spatial + self.reduce

    @property
    def conv(self) -> ComputeDef:
        """The convolution this computes (its buffers and epilogue)."""
        return ComputeDef(self.workload)

    @property
    def out(self) -> Buffer:
        return self.conv.out
