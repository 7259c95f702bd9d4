"""Transposed convolution rewritten as ordinary convolutions: two target-free lowerings.

Both turn a ``ConvTranspose2D`` into ``Conv2D`` workloads (``SubConv``), so
every conv template, the tuner and dispatch apply to them unchanged:

- ``zero_insertion`` (the seeds' formulation): dilate the input by the
  stride (``stride - 1`` zeros between pixels), pad it by ``(R - 1) * d``
  less the transposed conv's padding (a negative amount crops it), and run
  one direct conv with the flipped, channel-transposed kernel. Simple, but
  ``1 - 1 / (sh * sw)`` of the multiply-adds meet inserted zeros.
- ``subpixel``: output pixel ``o = ph + sh * m`` only meets the kernel rows
  ``r`` with ``r * dh = ph + top (mod sh)``, and those read input rows
  ``m + (ph + top - r * dh) / sh``: an ordinary stride-1 conv of the
  original input with that phase's flipped taps (``sh / gcd(sh, dh)`` rows
  apart, so the sub-conv's dilation is ``dh / gcd(sh, dh)``), written
  interleaved into ``out[:, :, ph::sh, pw::sw]``. ``sh * sw`` small convs
  that skip every inserted zero. A phase without taps (a dilation sharing a
  factor with the stride) holds only the epilogue of zero, ``act(bias)``;
  padding that would be negative crops the input instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convtune.ir.reference import activation_reference
from convtune.ir.workload import Conv2D, conv2d
from convtune.ir.workload_transpose import ConvTranspose2D

LOWERINGS = ("zero_insertion", "subpixel")


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of a sub-conv: which transposed-kernel taps it uses
    (in the sub-conv's kernel order), its dilation and padding, and where the
    input lands in the sub-conv's input (``x[i]`` at ``offset + i * step``
    of ``size`` pixels; what falls outside is dropped)."""

    taps: tuple[int, ...]
    dilation: int
    pad: tuple[int, int]
    offset: int
    step: int
    size: int


@dataclass(frozen=True)
class SubConv:
    """An ordinary conv computing the output pixels ``out[:, :, ph::sh, pw::sw]``
    of one phase (the whole output when ``Lowering.step`` is (1, 1))."""

    conv: Conv2D
    phase: tuple[int, int]
    taps: tuple[tuple[int, ...], tuple[int, ...]]
    """The transposed kernel's rows and columns, in the order of the conv's kernel."""
    input_offset: tuple[int, int]
    input_step: tuple[int, int]
    source_size: tuple[int, int]
    """Height and width of the transposed conv's input, placed into the conv's."""

    @property
    def reads_input_directly(self) -> bool:
        """True when the conv's input is the transposed conv's input itself (no copy)."""
        return (self.input_step == (1, 1) and self.input_offset == (0, 0)
                and (self.conv.H, self.conv.W) == self.source_size)

    def weight(self, weight: np.ndarray) -> np.ndarray:
        """The conv's (K, C / groups, R', S') weight from the transposed conv's
        (C, K / groups, R, S) one: this phase's taps, flipped, channels swapped per group."""
        wl = self.conv
        w = np.asarray(weight).reshape(wl.groups, wl.Cg, wl.Kg, *np.shape(weight)[2:])
        w = w[:, :, :, list(self.taps[0])][:, :, :, :, list(self.taps[1])]
        return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4).reshape(wl.weight_shape))


@dataclass(frozen=True)
class Lowering:
    """A transposed conv as ``convs``; with ``step`` (1, 1) a single conv
    writes the whole output, else each writes its phase of it, and the
    phases in ``fills`` hold only ``fill_value`` (no tap reaches them)."""

    name: str
    workload: ConvTranspose2D
    convs: tuple[SubConv, ...]
    fills: tuple[tuple[int, int], ...]
    step: tuple[int, int]

    @property
    def direct(self) -> bool:
        """One conv whose output is the transposed conv's output."""
        return self.step == (1, 1) and len(self.convs) == 1

    def fill_value(self, bias: np.ndarray | None) -> np.ndarray:
        """Per output channel, what a phase without taps holds: the epilogue of zero."""
        wl = self.workload
        y = np.zeros(wl.K) if bias is None else np.asarray(bias, np.float64).reshape(wl.K)
        return (y if wl.activation is None else activation_reference(wl.activation, y)).astype(np.float32)


def _zero_insertion_axis(_size: int, stride: int, kernel: int, dilation: int, begin: int, out: int) -> _Axis:
    """The conv axis over the zero-inserted input (``_axis_args``, as for
    ``_phase_axis``; the input size does not enter it)."""
    reach = (kernel - 1) * dilation
    return _Axis(tuple(range(kernel - 1, -1, -1)), dilation, (0, 0), reach - begin, stride, out + reach)


def _phase_axis(size: int, stride: int, kernel: int, dilation: int, begin: int, out: int,
                phase: int) -> _Axis | None:
    """The sub-conv axis of output phase ``phase``; None when no tap reaches
    it or every tap reads outside the input."""
    rows = -(-(out - phase) // stride)
    taps = tuple(r for r in range(kernel - 1, -1, -1) if (phase + begin - r * dilation) % stride == 0)
    if not taps:
        return None
    first = (phase + begin - taps[0] * dilation) // stride  # input row read by the first tap at m = 0
    step = dilation // math.gcd(stride, dilation)
    end_pad = rows - 1 + first + (len(taps) - 1) * step - (size - 1)
    crop_begin, crop_end = max(first, 0), max(-end_pad, 0)
    if size - crop_begin - crop_end <= 0:
        return None
    return _Axis(taps, step, (max(-first, 0), max(end_pad, 0)), -crop_begin, 1, size - crop_begin - crop_end)


def _sub_conv(wl: ConvTranspose2D, phase: tuple[int, int], h: _Axis, w: _Axis) -> SubConv:
    conv = conv2d(wl.N, wl.C, h.size, w.size, wl.K, len(h.taps), len(w.taps),
                  padding=(h.pad[0], w.pad[0], h.pad[1], w.pad[1]), dilation=(h.dilation, w.dilation),
                  groups=wl.groups, bias=wl.bias, activation=wl.activation)
    return SubConv(conv, phase, (h.taps, w.taps), (h.offset, w.offset), (h.step, w.step), (wl.H, wl.W))


def _axis_args(wl: ConvTranspose2D, axis: int) -> tuple[int, int, int, int, int, int]:
    return ((wl.H, wl.W)[axis], wl.stride[axis], (wl.R, wl.S)[axis], wl.dilation[axis], wl.padding[axis],
            (wl.P, wl.Q)[axis])


def lower(wl: ConvTranspose2D, name: str) -> Lowering:
    """``wl`` as the convs of lowering ``name`` (one of ``LOWERINGS``)."""
    if name == "zero_insertion":
        h, w = (_zero_insertion_axis(*_axis_args(wl, axis)) for axis in (0, 1))
        return Lowering(name, wl, (_sub_conv(wl, (0, 0), h, w),), (), (1, 1))
    if name != "subpixel":
        raise ValueError(f"lowering: {name!r} is not one of {', '.join(LOWERINGS)}")
    sh, sw = wl.stride
    rows, cols = _axis_args(wl, 0), _axis_args(wl, 1)
    convs, fills = [], []
    for ph in range(min(sh, wl.P)):
        for pw in range(min(sw, wl.Q)):
            h, w = _phase_axis(*rows, ph), _phase_axis(*cols, pw)
            if h is None or w is None:
                fills.append((ph, pw))
            else:
                convs.append(_sub_conv(wl, (ph, pw), h, w))
    return Lowering(name, wl, tuple(convs), tuple(fills), (sh, sw))


def default_lowering(wl: ConvTranspose2D) -> str:
    """What runs a transposed conv that was never measured: sub-pixel, which
    never does more multiply-adds (zero insertion's extra ones all meet zeros)."""
    return "subpixel"


def sub_convs(wl: ConvTranspose2D) -> list[Conv2D]:
    """The distinct convs of every lowering of ``wl``: what tuning it tunes."""
    seen: dict[str, Conv2D] = {}
    for name in LOWERINGS:
        for sub in lower(wl, name).convs:
            seen.setdefault(sub.conv.key, sub.conv)
    return list(seen.values())
