"""The transposed 2-D convolution workload (``conv2d_transpose``), what ONNX ConvTranspose computes.

Every input pixel ``x[n, c, i, j]`` scatters its channel's kernel slice
``w[c, k, :, :]`` into the output, ``stride`` pixels apart, taps ``dilation``
apart; the full scattered plane is then cropped by ``padding`` (ONNX's pads
remove output rows and columns, they do not add input ones) and extended by
``output_padding`` zero rows and columns at its bottom and right, before the
fused epilogue ``y = act(conv_transpose(x, w) + bias)``. Weights are ONNX's
and PyTorch's ``(C, K / groups, R, S)``: input channels first.

A ``ConvTranspose2D`` is immutable, validated on construction, and has a
canonical JSON key and a FLOP count, like ``Conv2D``; it is never compiled
itself: ``ir.conv_transpose_lowering`` rewrites it into ordinary ``Conv2D``
workloads, which every template can tune and run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, Union

from convtune.ir.workload import Activation, ConvShape, WorkloadError, _check_int, _is_int, _pair, checked_sizes


@dataclass(frozen=True)
class ConvTranspose2D(ConvShape):
    """Its key is marked ``"transpose": true``, so it never equals a ``Conv2D`` key."""

    output_padding: tuple[int, int] = (0, 0)
    """Zero rows (bottom) and columns (right) added after the crop. The
    shared fields: C is the input channels, K the output channels (``groups``
    times the weight's second dimension), padding the rows and columns
    cropped off the scattered output."""

    _PAIRS: ClassVar[tuple[str, ...]] = ("stride", "padding", "output_padding", "dilation")

    @property
    def full(self) -> tuple[int, int]:
        """Height and width of the scattered output before cropping and output padding."""
        return tuple((size - 1) * s + (k - 1) * d + 1  # type: ignore[return-value]
                     for size, s, k, d in zip((self.H, self.W), self.stride, (self.R, self.S), self.dilation))

    @property
    def P(self) -> int:
        """Output height."""
        return self.full[0] - self.padding[0] - self.padding[2] + self.output_padding[0]

    @property
    def Q(self) -> int:
        """Output width."""
        return self.full[1] - self.padding[1] - self.padding[3] + self.output_padding[1]

    @property
    def flops(self) -> int:
        """Every input pixel's multiply-add with every tap of its group's
        kernel, 2 FLOPs each: the count of the scatter (and of PyTorch's and
        onnxruntime's profilers), whichever lowering runs it."""
        return 2 * self.N * self.C * self.Kg * self.H * self.W * self.R * self.S

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.C, self.Kg, self.R, self.S)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "transpose": True}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ConvTranspose2D:
        """The workload of ``to_dict`` (its output padding may exceed what
        ``conv2d_transpose(output_padding=)`` accepts, as an ONNX output_shape's can)."""
        act = d.get("activation")
        return _validated(
            d["N"], d["C"], d["H"], d["W"], d["K"], d["R"], d["S"], d.get("stride", 1), _pads(d.get("padding", 0)),
            _nonnegative_pair("output_padding", d.get("output_padding", 0)), d.get("dilation", 1),
            d.get("groups", 1), d.get("bias", False),
            Activation.parse(Activation(**act) if isinstance(act, dict) else act))

    @staticmethod
    def from_key(key: str) -> ConvTranspose2D:
        return ConvTranspose2D.from_dict(json.loads(key))

    def short(self) -> str:
        """A compact one-line description for tables and warnings."""
        parts = self._short_parts("T ")
        if any(self.output_padding):
            parts.append(f"op{self.output_padding[0]},{self.output_padding[1]}")
        if self.dilation != (1, 1):
            parts.append(f"d{self.dilation}")
        if self.groups > 1:
            parts.append(f"g{self.groups}")
        return " ".join(parts)


def _pads(padding: Union[int, Sequence[int]]) -> tuple[int, int, int, int]:
    if _is_int(padding):
        pads: tuple = (padding,) * 4
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = (padding[0], padding[1], padding[0], padding[1])
    elif isinstance(padding, (tuple, list)) and len(padding) == 4:
        pads = tuple(padding)
    else:
        raise WorkloadError(f"padding: expected int, (h, w) or (top, left, bottom, right), got {padding!r}")
    return tuple(_check_int(f"padding ({side})", p, 0)  # type: ignore[return-value]
                 for side, p in zip(("top", "left", "bottom", "right"), pads))


def _nonnegative_pair(name: str, v: Union[int, Sequence[int]]) -> tuple[int, int]:
    if _is_int(v):
        v = (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return (_check_int(name, v[0], 0), _check_int(name, v[1], 0))
    raise WorkloadError(f"{name}: expected an int or a pair of ints, got {v!r}")


def conv2d_transpose(
    N: int, C: int, H: int, W: int, K: int, R: int, S: int | None = None, *,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    output_padding: Union[int, Sequence[int]] = 0,
    output_shape: Sequence[int] | None = None,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    bias: bool = False,
    activation: Union[str, Activation, None] = None,
    **activation_params: float,
) -> ConvTranspose2D:
    """Describe a transposed 2-D convolution (ONNX ConvTranspose, PyTorch
    ``conv_transpose2d``); raises ``WorkloadError`` naming the field.

    ``K`` is the number of output channels (all groups). ``padding`` is an
    int, ``(h, w)`` or ``(top, left, bottom, right)``. ``output_padding``
    must be smaller than the stride or the dilation (PyTorch's rule: more
    would only add zeros). ``output_shape=(P, Q)`` instead fixes the output
    size, as ONNX's attribute does: the top and left padding stay as given,
    the bottom and right ones follow, and an output larger than the full
    scatter is zero-extended at the bottom and right (ONNX allows any size).
    The activation is one of ``conv2d``'s. Bottom (right) padding and
    output padding that cancel are stored as their difference: PyTorch's
    ``padding=1, output_padding=1`` is ``padding=(1, 1, 0, 0)``, as ONNX
    output shapes give it, so both have one key.
    """
    S = R if S is None else S
    st, dil = _pair("stride", stride), _pair("dilation", dilation)
    pads, extra = _pads(padding), _nonnegative_pair("output_padding", output_padding)
    if output_shape is not None:
        if any(extra):
            raise WorkloadError("output_padding: give output_padding or output_shape, not both")
        pads, extra = _fit_output(output_shape, (_check_int("H", H, 1), _check_int("W", W, 1)),
                                  (_check_int("R", R, 1), _check_int("S", S, 1)), st, dil, pads)
    else:
        for axis, e in enumerate(extra):
            if e >= max(st[axis], dil[axis]):
                raise WorkloadError(f"output_padding: {e} on axis {axis} must be smaller than the stride "
                                    f"({st[axis]}) or the dilation ({dil[axis]})")
    return _validated(N, C, H, W, K, R, S, st, pads, extra, dil, groups, bias,
                      Activation.parse(activation, **activation_params))


def _validated(N: int, C: int, H: int, W: int, K: int, R: int, S: int, stride: Union[int, Sequence[int]],
               pads: tuple[int, int, int, int], extra: tuple[int, int], dilation: Union[int, Sequence[int]],
               groups: int, bias: bool, act: Activation | None) -> ConvTranspose2D:
    """The workload, its sizes and grouping checked (what every constructor shares)."""
    N, C, H, W, K, R, S, groups = checked_sizes(N, C, H, W, K, R, S, groups, bias=bias)
    # bottom padding crops what output padding adds back: keep only the difference, so equal workloads have one key
    cancel = (min(pads[2], extra[0]), min(pads[3], extra[1]))
    pads = (pads[0], pads[1], pads[2] - cancel[0], pads[3] - cancel[1])
    extra = (extra[0] - cancel[0], extra[1] - cancel[1])
    wl = ConvTranspose2D(N, C, H, W, K, R, S, _pair("stride", stride), pads, _pair("dilation", dilation),
                         groups, bias, act, output_padding=extra)
    for name, out, full in (("padding (top + bottom)", wl.P, wl.full[0]), ("padding (left + right)", wl.Q, wl.full[1])):
        if out < 1:
            raise WorkloadError(f"{name}: crops the whole {full}-pixel scattered output (output size {out})")
    return wl


def _fit_output(output_shape: Sequence[int], spatial: tuple[int, int], kernel: tuple[int, int],
                stride: tuple[int, int], dilation: tuple[int, int],
                pads: tuple[int, int, int, int]) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Bottom/right padding and output padding giving ``output_shape`` with the top/left padding kept."""
    if not (isinstance(output_shape, (tuple, list)) and len(output_shape) == 2):
        raise WorkloadError(f"output_shape: expected (P, Q), got {output_shape!r}")
    out = [_check_int("output_shape", o, 1) for o in output_shape]
    ends, extra = [], []
    for axis in range(2):
        full = (spatial[axis] - 1) * stride[axis] + (kernel[axis] - 1) * dilation[axis] + 1
        end = full - pads[axis] - out[axis]
        if pads[axis] >= full:
            raise WorkloadError(f"padding: the {'top' if axis == 0 else 'left'} padding {pads[axis]} crops "
                                f"the whole {full}-pixel scattered output")
        ends.append(max(end, 0))
        extra.append(max(-end, 0))
    return (pads[0], pads[1], ends[0], ends[1]), (extra[0], extra[1])
