import json

import numpy as np
import pytest

from convtune.ir import Conv2D, WorkloadError, conv2d
from convtune.ir.workload import same_padding


def test_output_size_and_flops():
    wl = conv2d(1, 64, 56, 56, 128, 3, stride=2, padding=1)
    assert (wl.P, wl.Q) == (28, 28)
    assert wl.flops == 2 * 128 * 28 * 28 * 64 * 9


def test_grouped_flops_count_only_group_channels():
    wl = conv2d(1, 32, 10, 10, 32, 3, padding=1, groups=32)
    assert wl.is_depthwise and wl.Cg == 1
    assert wl.flops == 2 * 32 * 10 * 10 * 9


@pytest.mark.parametrize("size,k,s,d",
                         [(7, 3, 2, 1), (8, 3, 2, 1), (224, 7, 2, 1), (5, 4, 1, 1), (9, 3, 1, 2), (6, 2, 3, 1)])
def test_same_padding_gives_ceil_output(size, k, s, d):
    for mode in ("same", "same_lower"):
        wl = conv2d(1, 1, size, size, 1, k, stride=s, dilation=d, padding=mode)
        assert wl.P == wl.Q == -(-size // s)


def test_same_upper_puts_extra_padding_at_the_end():
    assert same_padding(8, 4, 1, 1, upper=True) == (1, 2)
    assert same_padding(8, 4, 1, 1, upper=False) == (2, 1)
    wl = conv2d(1, 1, 8, 8, 1, 4, padding="same")
    assert wl.padding == (1, 1, 2, 2)


@pytest.mark.parametrize("padding,expected", [(2, (2, 2, 2, 2)), ((1, 2), (1, 2, 1, 2)), ((0, 1, 2, 3), (0, 1, 2, 3)),
                                              ("valid", (0, 0, 0, 0))])
def test_padding_forms(padding, expected):
    assert conv2d(1, 1, 9, 9, 1, 3, padding=padding).padding == expected


def test_key_is_canonical_and_round_trips():
    wl = conv2d(2, 8, 9, 7, 4, 3, 1, stride=(2, 1), padding=(0, 1, 2, 0), groups=2, bias=True,
                activation="leaky_relu", alpha=0.2, residual=True)
    again = conv2d(2, 8, 9, 7, 4, 3, 1, stride=(2, 1), padding=(0, 1, 2, 0), groups=2, bias=True,
                   activation="leaky_relu", alpha=0.2, residual=True)
    assert wl.key == again.key
    assert json.loads(wl.key)["padding"] == [0, 1, 2, 0]
    assert Conv2D.from_key(wl.key) == wl
    assert conv2d(2, 8, 9, 7, 4, 3, 1).key != wl.key


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(C=6, groups=4), "groups"),
        (dict(K=6, groups=4, C=8), "groups"),
        (dict(H=0), "H"),
        (dict(N=-1), "N"),
        (dict(R=2.0), "R"),
        (dict(C="64"), "C"),
        (dict(stride=0), "stride"),
        (dict(dilation=(1, 0)), "dilation"),
        (dict(padding=-1), "padding"),
        (dict(padding="full"), "padding"),
        (dict(padding=(1, 2, 3)), "padding"),
        (dict(R=9, H=4, padding=1), "R"),
        (dict(S=5, W=3, R=1), "S"),
        (dict(R=3, H=5, dilation=3), "R"),
        (dict(activation="gelu"), "activation"),
        (dict(activation="clip", lo=2.0, hi=1.0), "activation"),
        (dict(bias=1), "bias"),
        (dict(groups=True), "groups"),
        (dict(stride=(1, True)), "stride"),
        (dict(activation=3), "activation"),
        (dict(activation="leaky_relu", alpha=float("nan")), "alpha"),
        (dict(activation="clip", lo="0", hi=1.0), "lo"),
        (dict(activation="clip", lo=0.0, hi=True), "hi"),
        (dict(activation="leaky_relu", lo=0.0), "lo"),
        (dict(alpha=0.2), "alpha"),
        (dict(pading=1), "pading"),
    ],
)
def test_invalid_workloads_name_the_field(kwargs, field):
    args = dict(N=1, C=8, H=8, W=8, K=8, R=3)
    args.update(kwargs)
    with pytest.raises(WorkloadError, match=rf"^{field}"):
        conv2d(**args)
    assert issubclass(WorkloadError, ValueError)


def test_numpy_integers_are_accepted_and_stored_as_int():
    """Shapes often come from numpy arrays; the key must still be JSON."""
    i = np.int64
    wl = conv2d(i(1), np.int32(8), i(9), i(7), i(4), i(3), i(1), stride=(i(2), 1), padding=(np.uint8(1), i(0)),
                dilation=i(1), groups=i(2))
    assert wl == conv2d(1, 8, 9, 7, 4, 3, 1, stride=(2, 1), padding=(1, 0), groups=2)
    for v in (wl.N, wl.C, wl.H, wl.W, wl.K, wl.R, wl.S, *wl.stride, *wl.padding, *wl.dilation, wl.groups):
        assert type(v) is int
    assert Conv2D.from_key(wl.key) == wl
    assert conv2d(1, 1, 5, 5, 1, 3, padding=i(2)).padding == (2, 2, 2, 2)


def test_activation_parameters_are_stored_as_float():
    wl = conv2d(1, 1, 5, 5, 1, 3, activation="leaky_relu", alpha=np.float32(0.5))
    assert type(wl.activation.alpha) is float and wl.activation.alpha == 0.5
    assert Conv2D.from_key(wl.key) == wl


@pytest.mark.parametrize("activation,params,message", [
    ("relu", dict(alpha=0.2), r"^alpha: only activation leaky_relu or hardsigmoid takes it, not 'relu'"),
    ("relu6", dict(lo=-1.0), r"^lo: only activation clip takes it, not 'relu6'"),
    (None, dict(hi=1.0), r"^hi: only activation clip takes it, not None"),
    ("leaky_relu", dict(alpha="x"), r"^alpha: expected a finite number, got str 'x'"),
])
def test_activation_parameters_that_would_be_ignored_or_are_not_numbers(activation, params, message):
    with pytest.raises(WorkloadError, match=message):
        conv2d(1, 1, 5, 5, 1, 3, activation=activation, **params)
