"""Every conv variant, under three schedule shapes, matches the float64
reference: the default schedule, a register-tiled vectorized schedule over the
original buffers (guards, gathers) and the packed NCHW[x]c schedule."""
import pytest

from conftest import assert_correct, gemm_schedule, packed_schedule, tiled_schedule
from convtune.ir import conv2d
from convtune.schedules import default_schedule

CASES = {
    "stride2": conv2d(1, 8, 11, 11, 8, 3, stride=2, padding=1),
    "stride3": conv2d(1, 4, 13, 13, 8, 3, stride=3),
    "unequal_strides": conv2d(1, 4, 9, 12, 8, 3, stride=(1, 2), padding=1),
    "valid": conv2d(1, 6, 8, 8, 10, 3, padding="valid"),
    "same_upper_even_kernel": conv2d(1, 4, 9, 9, 8, 4, padding="same"),
    "same_lower_strided": conv2d(1, 4, 10, 10, 8, 3, stride=2, padding="same_lower"),
    "asymmetric_padding": conv2d(1, 4, 7, 9, 8, 3, padding=(0, 2, 1, 0)),
    "dilation2": conv2d(1, 4, 12, 12, 8, 3, dilation=2, padding=2),
    "dilation3_rect": conv2d(1, 4, 14, 13, 8, 3, 2, dilation=(3, 2), padding=1),
    "groups2": conv2d(1, 8, 8, 8, 12, 3, padding=1, groups=2),
    "groups4": conv2d(1, 16, 7, 7, 8, 3, padding=1, groups=4),
    "depthwise": conv2d(1, 12, 9, 9, 12, 3, padding=1, groups=12),
    "depthwise_multiplier2_stride2": conv2d(1, 6, 9, 9, 12, 3, stride=2, padding=1, groups=6),
    "kernel_1x7": conv2d(1, 4, 9, 11, 8, 1, 7, padding=(0, 3)),
    "kernel_7x1": conv2d(1, 4, 11, 9, 8, 7, 1, padding=(3, 0)),
    "kernel_5x3": conv2d(1, 4, 10, 8, 8, 5, 3, padding=(2, 1)),
    "kernel_7x7_stride2": conv2d(1, 3, 20, 20, 8, 7, stride=2, padding=3),
    "batch3_nonsquare": conv2d(3, 5, 7, 10, 6, 3, padding=1),
    "odd_channels": conv2d(1, 7, 9, 9, 13, 3, padding=1),
    "pointwise": conv2d(1, 12, 6, 6, 20, 1),
    "pointwise_stride2": conv2d(2, 10, 9, 9, 12, 1, stride=2),
    "bias_relu": conv2d(1, 8, 8, 8, 16, 3, padding=1, bias=True, activation="relu"),
    "relu6": conv2d(1, 8, 6, 6, 8, 3, padding=1, activation="relu6"),
    "clip": conv2d(1, 8, 6, 6, 8, 1, activation="clip", lo=-0.2, hi=0.3),
    "leaky_relu_residual": conv2d(1, 8, 6, 6, 8, 3, padding=1, bias=True, residual=True,
                                  activation="leaky_relu", alpha=0.1),
    "residual_depthwise": conv2d(2, 8, 6, 6, 8, 3, padding=1, groups=8, residual=True, bias=True),
}

SCHEDULES = {"default": default_schedule, "tiled": tiled_schedule, "packed": packed_schedule, "im2col": gemm_schedule}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("case", CASES)
def test_variant_matches_reference(case, schedule):
    assert_correct(SCHEDULES[schedule](CASES[case]))


def test_epilogue_changes_the_result(rng):
    """Guards against an epilogue that the kernel silently drops: with relu
    the reference differs from the plain conv, and the kernel follows it."""
    import numpy as np

    from convtune.codegen import build
    from convtune.codegen.verify import random_inputs
    from convtune.ir import conv2d_reference

    wl = CASES["bias_relu"]
    x = random_inputs(wl, rng)
    y = build(packed_schedule(wl))(x.data, x.weight, x.bias)
    plain = conv2d_reference(conv2d(1, 8, 8, 8, 16, 3, padding=1), x.data, x.weight)
    assert (y == 0).mean() > 0.2 and (plain < 0).mean() > 0.2
    assert np.allclose(y, np.maximum(plain + x.bias[None, :, None, None], 0), atol=1e-4)
