"""The conv2d workload: what is computed, independent of how.

A ``Conv2D`` is immutable, validated on construction, and has a canonical JSON
key (used by tuning logs) and a FLOP count. Layout is NCHW in and out, fp32.
The fused epilogue is ``y = act(conv(x, w) + bias + residual)``, the order in
which ONNX graphs write Conv -> Add -> Relu.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence, Union

ACTIVATION_PARAMS: dict[str, tuple[str, ...]] = {
    "relu": (), "relu6": (), "clip": ("lo", "hi"), "leaky_relu": ("alpha",), "sigmoid": (),
    "hardsigmoid": ("alpha", "beta"), "hardswish": (), "silu": (), "tanh": (),
}
ACTIVATIONS = tuple(ACTIVATION_PARAMS)
_DEFAULTS: dict[str, dict[str, float]] = {
    "clip": {"lo": 0.0, "hi": 6.0}, "leaky_relu": {"alpha": 0.01}, "hardsigmoid": {"alpha": 0.2, "beta": 0.5},
}
"""Parameters not given take ONNX's defaults (clip's are relu6's)."""
KINDS = tuple(name for name in ACTIVATIONS if name != "relu6")
"""The kinds an ``Activation`` holds (relu6 is stored as clip to [0, 6])."""


class WorkloadError(ValueError):
    """An invalid workload; the message names the offending field."""


@dataclass(frozen=True)
class Activation:
    """``relu``; ``clip`` to [lo, hi] (relu6 is clip to [0, 6]); ``leaky_relu``
    with slope ``alpha`` for negative inputs; ``sigmoid``; ``hardsigmoid``,
    ``max(0, min(1, alpha * x + beta))`` (ONNX HardSigmoid; PyTorch's is
    alpha=1/6, beta=0.5); ``hardswish``, ``x * relu6(x + 3) / 6``; ``silu``,
    ``x * sigmoid(x)``; ``tanh``. Fields a kind does not use stay 0."""

    kind: str
    alpha: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise WorkloadError(f"activation: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @staticmethod
    def parse(spec: Union[str, Activation, None], **params: float) -> Activation | None:
        if spec is not None and not isinstance(spec, Activation) and spec not in ACTIVATIONS:
            raise WorkloadError(f"activation: {spec!r} is not one of {', '.join(ACTIVATIONS)}")
        values = _activation_params(spec, params)
        if spec is None or isinstance(spec, Activation):
            return spec
        if spec == "relu6":
            return Activation("clip", lo=0.0, hi=6.0)
        values = {**_DEFAULTS.get(spec, {}), **values}
        if spec == "clip" and not values["lo"] < values["hi"]:
            raise WorkloadError(f"activation: clip needs lo < hi, got lo={values['lo']}, hi={values['hi']}")
        return Activation(spec, **values)


def _activation_params(spec: Union[str, Activation, None], params: dict[str, Any]) -> dict[str, float]:
    """The parameters as plain floats (so the key stays JSON). Each must be one
    that ``spec`` uses: an ignored parameter is a typo or the wrong activation,
    and silently dropping it would tune and run a different workload."""
    takes = ACTIVATION_PARAMS[spec] if isinstance(spec, str) else ()
    values = {}
    for name, v in params.items():
        users = [kind for kind, names in ACTIVATION_PARAMS.items() if name in names]
        if not users:
            raise WorkloadError(f"{name}: not an argument of conv2d")
        if name not in takes:
            raise WorkloadError(f"{name}: only activation {' or '.join(users)} takes it, not {spec!r}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise WorkloadError(f"{name}: expected a finite number, got {type(v).__name__} {v!r}")
        values[name] = float(v)
    return values


@dataclass(frozen=True)
class ConvShape:
    """What a conv and a transposed conv (``ir.workload_transpose``) share:
    their fields but one, channel groups, NCHW input and output shapes, the
    dict and the canonical key. Each defines its output size (``P``, ``Q``)."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    """(top, left, bottom, right)"""
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    activation: Activation | None = None

    _PAIRS: ClassVar[tuple[str, ...]] = ("stride", "padding", "dilation")
    """The tuple fields, written as JSON lists."""

    @property
    def P(self) -> int:
        raise NotImplementedError

    @property
    def Q(self) -> int:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in self._PAIRS:
            d[name] = list(getattr(self, name))
        return d

    def _short_parts(self, prefix: str = "") -> list[str]:
        """``short()`` up to the padding: sizes, stride, padding."""
        pads = self.padding
        parts = [f"{prefix}N{self.N} C{self.C} {self.H}x{self.W} K{self.K} {self.R}x{self.S}"]
        if self.stride != (1, 1):
            parts.append(f"s{self.stride[0]}" if self.stride[0] == self.stride[1] else f"s{self.stride}")
        if any(pads):
            parts.append(f"p{pads[0]}" if len(set(pads)) == 1 else "p" + ",".join(map(str, pads)))
        return parts

    @property
    def Cg(self) -> int:
        """Input channels per group."""
        return self.C // self.groups

    @property
    def Kg(self) -> int:
        """Output channels per group."""
        return self.K // self.groups

    @property
    def data_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.K, self.P, self.Q)

    @property
    def key(self) -> str:
        """Canonical JSON: equal workloads have equal keys, across processes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Conv2D(ConvShape):
    residual: bool = False
    """A tensor of the output's shape added before the activation."""

    @property
    def P(self) -> int:
        """Output height."""
        eff = (self.R - 1) * self.dilation[0] + 1
        return (self.H + self.padding[0] + self.padding[2] - eff) // self.stride[0] + 1

    @property
    def Q(self) -> int:
        """Output width."""
        eff = (self.S - 1) * self.dilation[1] + 1
        return (self.W + self.padding[1] + self.padding[3] - eff) // self.stride[1] + 1

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.C and self.groups > 1

    @property
    def flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs, the convention of every peer."""
        return 2 * self.N * self.K * self.P * self.Q * self.Cg * self.R * self.S

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.K, self.Cg, self.R, self.S)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Conv2D:
        act = d.get("activation")
        return conv2d(
            N=d["N"], C=d["C"], H=d["H"], W=d["W"], K=d["K"], R=d["R"], S=d["S"],
            stride=tuple(d.get("stride", (1, 1))), padding=tuple(d.get("padding", (0, 0, 0, 0))),
            dilation=tuple(d.get("dilation", (1, 1))), groups=d.get("groups", 1),
            bias=d.get("bias", False), residual=d.get("residual", False),
            activation=Activation(**act) if isinstance(act, dict) else act,
        )

    @staticmethod
    def from_key(key: str) -> Conv2D:
        return Conv2D.from_dict(json.loads(key))

    def short(self) -> str:
        """A compact one-line description for tables and warnings."""
        parts = self._short_parts()
        if self.dilation != (1, 1):
            parts.append(f"d{self.dilation}")
        if self.groups > 1:
            parts.append("dw" if self.is_depthwise else f"g{self.groups}")
        return " ".join(parts)


def checked_sizes(N: Any, C: Any, H: Any, W: Any, K: Any, R: Any, S: Any, groups: Any,
                  **flags: Any) -> tuple[int, ...]:
    """The sizes as plain positive ints, the groups dividing both channel
    counts, and each of ``flags`` a bool (what every workload constructor checks)."""
    N, C, H, W, K, R, S, groups = (_check_int(name, v, 1) for name, v in (
        ("N", N), ("C", C), ("H", H), ("W", W), ("K", K), ("R", R), ("S", S), ("groups", groups)))
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise WorkloadError(f"{name}: expected a bool, got {flag!r}")
    if C % groups:
        raise WorkloadError(f"groups: {groups} does not divide the input channels C={C}")
    if K % groups:
        raise WorkloadError(f"groups: {groups} does not divide the output channels K={K}")
    return N, C, H, W, K, R, S, groups


def _is_int(v: Any) -> bool:
    """Any integer type (numpy's too: shapes often come from arrays), but not bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pair(name: str, v: Union[int, Sequence[int]]) -> tuple[int, int]:
    """A positive int or a pair of them (stride, dilation), as plain ints."""
    if _is_int(v):
        v = (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return (_check_int(name, v[0], 1), _check_int(name, v[1], 1))
    raise WorkloadError(f"{name}: expected an int or a pair of ints, got {v!r}")


def _check_int(name: str, v: Any, minimum: int) -> int:
    """``v`` as a plain int, so the canonical key stays JSON-serialisable."""
    if not _is_int(v):
        raise WorkloadError(f"{name}: expected an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise WorkloadError(f"{name}: must be >= {minimum}, got {v}")
    return int(v)


def same_padding(size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX SAME_UPPER / SAME_LOWER: output = ceil(size / stride); the odd pixel
    of padding goes at the end (upper) or the beginning (lower)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def _padding(
    padding: Union[int, str, Sequence[int]], H: int, W: int, R: int, S: int,
    stride: tuple[int, int], dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode in ("same", "same_upper", "same_lower"):
            upper = mode != "same_lower"
            top, bottom = same_padding(H, R, stride[0], dilation[0], upper)
            left, right = same_padding(W, S, stride[1], dilation[1], upper)
            return (top, left, bottom, right)
        raise WorkloadError(f"padding: unknown mode {padding!r} (use 'valid', 'same', 'same_upper', 'same_lower')")
    if _is_int(padding):
        pads: tuple = (padding,) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = (padding[0], padding[1], padding[0], padding[1])
    elif isinstance(padding, (tuple, list)) and len(padding) == 4:
        pads = tuple(padding)
    else:
        raise WorkloadError(f"padding: expected int, (h, w), (top, left, bottom, right) or a mode, got {padding!r}")
    top, left, bottom, right = (_check_int(f"padding ({side})", p, 0)
                                for side, p in zip(("top", "left", "bottom", "right"), pads))
    return (top, left, bottom, right)


def conv2d(
    N: int, C: int, H: int, W: int, K: int, R: int, S: int | None = None, *,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, str, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    bias: bool = False,
    residual: bool = False,
    activation: Union[str, Activation, None] = None,
    **activation_params: float,
) -> Conv2D:
    """Describe a 2-D convolution; raises ``WorkloadError`` (a ValueError)
    naming the field when the description is invalid.

    ``padding`` is an int, ``(h, w)``, ``(top, left, bottom, right)``, or
    'valid' / 'same' (= ONNX SAME_UPPER) / 'same_lower'. ``activation`` is one
    of relu, relu6, clip (``lo``, ``hi``), leaky_relu (``alpha``), sigmoid,
    hardsigmoid (``alpha``, ``beta``), hardswish, silu or tanh (see ``Activation``).
    """
    S = R if S is None else S
    N, C, H, W, K, R, S, groups = checked_sizes(N, C, H, W, K, R, S, groups, bias=bias, residual=residual)
    st, dil = _pair("stride", stride), _pair("dilation", dilation)
    pads = _padding(padding, H, W, R, S, st, dil)
    wl = Conv2D(N, C, H, W, K, R, S, st, pads, dil, groups, bias, Activation.parse(activation, **activation_params),
                residual=residual)
    for name, size, eff in (("R", H + pads[0] + pads[2], (R - 1) * dil[0] + 1),
                            ("S", W + pads[1] + pads[3], (S - 1) * dil[1] + 1)):
        if eff > size:
            raise WorkloadError(
                f"{name}: dilated kernel extent {eff} is larger than the padded input ({size})")
    return wl
