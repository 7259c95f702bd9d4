"""PyTorch running an imported model (the bench's oneDNN column): every
translated operator agrees with onnxruntime, NCHW and channels_last."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx_models import assert_close, make_model, ort_run, weights

from convtune.ir.onnx_frontend import import_model

torch = pytest.importorskip("torch")
from convtune.tuner.torch_model import NotTranslated, torch_runner  # noqa: E402


def _model(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """A small CNN with the operators torchvision's models export to, in the
    forms that need care: asymmetric pads, groups, ceil_mode, counted pads."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[0, 1, 2, 1], strides=[2, 1], group=2),
        helper.make_node("BatchNormalization", ["c1", "s", "t", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"]),
        helper.make_node("MaxPool", ["r6"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
                         ceil_mode=1),
        helper.make_node("AveragePool", ["r6"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
                         ceil_mode=1, count_include_pad=1),
        helper.make_node("Add", ["mp", "ap"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r"]),
        helper.make_node("Concat", ["r", "mp"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    consts = {"w1": weights(rng, 6, 2, 3, 3), "b1": weights(rng, 6), "s": weights(rng, 6) + 2, "t": weights(rng, 6),
              "m": weights(rng, 6), "v": np.abs(weights(rng, 6)) + 0.5, "lo": np.float32(0), "hi": np.float32(6),
              "fc": weights(rng, 5, 12), "fb": weights(rng, 5)}
    return make_model(nodes, {"x": (2, 4, 13, 11)}, {"y": None}, consts)


@pytest.mark.parametrize("channels_last", [False, True])
def test_translated_operators_agree_with_onnxruntime(channels_last: bool, rng: np.random.Generator) -> None:
    model = _model(rng)
    x = weights(rng, 2, 4, 13, 11)
    run = torch_runner(import_model(model), threads=1, channels_last=channels_last)
    assert_close(run({"x": x}), ort_run(model, {"x": x}))


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0], group=2),
                                   dict(strides=[2, 1], dilations=[2, 1], output_shape=[9, 6])])
def test_conv_transpose_crops_the_full_scatter_as_onnx_does(attrs: dict, rng: np.random.Generator) -> None:
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], **attrs)
    consts = {"w": weights(rng, 4, 3, 3, 3), "b": weights(rng, 3 * attrs.get("group", 1))}
    model = make_model([node], {"x": (1, 4, 5, 4)}, {"y": None}, consts)
    x = weights(rng, 1, 4, 5, 4)
    run = torch_runner(import_model(model), threads=1, channels_last=False)
    assert_close(run({"x": x}), ort_run(model, {"x": x}))


def test_an_operator_without_a_translation_is_named_before_anything_runs(rng: np.random.Generator) -> None:
    model = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                       {"x": (1, 2, 3, 3)}, {"y": None}, {"scales": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(NotTranslated, match="Resize has no PyTorch translation"):
        torch_runner(import_model(model), threads=1, channels_last=False)
