"""ONNX's own backend node tests for every supported operator, run through a Session.

The onnx wheel ships the cases as code (``collect_testcases``); each is one
node with its inputs and expected outputs. Inputs that convtune requires to be
constant (Reshape's shape, Slice's bounds, Clip's bounds, ...) become
initializers, as exporters write them, and inputs with symbolic dimensions
get the test data's shape. Outputs must match onnxruntime (where it runs the
case's opset) within the project tolerance and ONNX's expected outputs within
the case's own tolerance. The cases convtune does not support are listed
below, with why, and must fail at import with a GraphError.
"""
from __future__ import annotations

import re
import warnings
from functools import lru_cache

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx_models import assert_close, ort_run

from convtune.ir.graph import GraphError
from convtune.ir.onnx_frontend import SUPPORTED_OPS, import_model
from convtune.tuner.dispatch import FallbackWarning
from convtune.tuner.session import Session

CONSTANT_INPUTS = {
    "Clip": (1, 2), "Pad": (1, 2, 3), "Reshape": (1,), "Resize": (1, 2, 3), "Slice": (1, 2, 3, 4),
    "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "ReduceMean": (1,), "Dropout": (1, 2),
    "ConvTranspose": (1, 2), "ConstantOfShape": (0,),
}
"""Input slots that must be constant (attributes in the model graph); and
ConvTranspose's weight and bias, as exporters write them, so its 2-D cases
run as convtune's kernels (``FusedConvTranspose``), not the numpy fallback."""

UNSUPPORTED = {
    "test_batchnorm_example_training_mode": "training_mode",
    "test_batchnorm_epsilon_training_mode": "training_mode",
    "test_dropout_default_mask": "mask",
    "test_dropout_default_mask_ratio": "mask",
    "test_training_dropout": "training mode",
    "test_training_dropout_default": "training mode",
    "test_training_dropout_default_mask": "training mode",
    "test_training_dropout_mask": "training mode",
    "test_training_dropout_zero_ratio": "training mode",
    "test_training_dropout_zero_ratio_mask": "training mode",
    "test_identity_sequence": "only tensor inputs",
    "test_identity_opt": "only tensor inputs",
    "test_maxpool_with_argmax_2d_precomputed_pads": "Indices",
    "test_maxpool_with_argmax_2d_precomputed_strides": "Indices",
    "test_resize_tf_crop_and_resize": "tf_crop_and_resize",
    "test_resize_tf_crop_and_resize_extrapolation_value": "tf_crop_and_resize",
    "test_resize_tf_crop_and_resize_axes_2_3": "tf_crop_and_resize",
    "test_resize_tf_crop_and_resize_axes_3_2": "tf_crop_and_resize",
    "test_causal_conv_with_state_decode_step_expanded": "only 2-D convolutions",
    "test_causal_conv_with_state_with_bias_and_past_state_expanded": "only 2-D convolutions",
    "test_causal_conv_with_state_with_past_state_expanded": "only 2-D convolutions",
    "test_resize_downsample_scales_linear_antialias": "antialias",
    "test_resize_downsample_sizes_linear_antialias": "antialias",
}
"""Case -> a word the GraphError must contain. Cubic Resize and the element
types numpy has no dtype for (CAST_UNSUPPORTED) are refused too: see below."""
ONNX_REFERENCE_DIFFERS = {
    "test_resize_downsample_scales_linear_align_corners":
        "onnxruntime (and convtune) map align_corners with the output size, ONNX's reference with in * scale",
}
"""Cases whose expected outputs onnxruntime does not reproduce: convtune follows onnxruntime."""
CAST_UNSUPPORTED = re.compile(r"FLOAT8|INT4|FLOAT4|INT2|BFLOAT16|STRING")
CUBIC = re.compile(r"^test_resize_.*cubic")


@lru_cache(maxsize=1)
def _cases() -> dict[str, object]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return {c.name: c for c in cases  # single nodes, and functions expanded into supported operators
            if all(n.op_type in SUPPORTED_OPS for n in c.model.graph.node)
            and not c.name.startswith("test_castlike")}  # CastLike's expansions: another operator


def _as_array(value: object) -> np.ndarray:
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def _expected_error(name: str) -> str | None:
    if name in UNSUPPORTED:
        return UNSUPPORTED[name]
    if CUBIC.match(name):
        return "cubic"
    if name.startswith("test_cast") and CAST_UNSUPPORTED.search(name):
        return "not supported"
    return None


def _prepared(case: object) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
    """The case's model with constant-slot inputs made initializers and
    symbolic input dimensions fixed to the data's; the remaining feeds."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    constant = {name for node in model.graph.node for i, name in enumerate(node.input)
                if i in CONSTANT_INPUTS.get(node.op_type, ()) and name}
    feeds = {}
    for value, data in zip(list(model.graph.input), inputs):
        array = _as_array(data)
        if value.name in constant:
            model.graph.initializer.append(numpy_helper.from_array(array, value.name))
            model.graph.input.remove(value)
            continue
        feeds[value.name] = array
        if value.type.HasField("tensor_type"):
            for dim, size in zip(value.type.tensor_type.shape.dim, array.shape):
                dim.dim_value = size
    return model, feeds, [_as_array(o) for o in outputs]


@pytest.mark.parametrize("name", sorted(_cases()))
def test_node_case(name: str) -> None:
    case = _cases()[name]
    model, feeds, expected = _prepared(case)
    why = _expected_error(name)
    if why is not None:
        with pytest.raises(GraphError, match=re.escape(why)):
            import_model(model)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        got = Session(model).run(None, feeds)
    if name not in ONNX_REFERENCE_DIFFERS:
        for g, want in zip(got, expected):  # ONNX's expected outputs, at the case's tolerance
            np.testing.assert_allclose(g, want, rtol=case.rtol, atol=case.atol)
    try:
        reference = ort_run(model, feeds)
    except Exception as e:  # noqa: BLE001 - onnxruntime may not run the case's opset; checked above
        assert name not in ONNX_REFERENCE_DIFFERS, f"onnxruntime must run {name}: {e}"
        print(f"onnxruntime cannot run {name}: {str(e).splitlines()[0]}")
        return
    assert_close(got, reference, name)


def _with_explicit_defaults(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` with every attribute its nodes leave out written with the
    schema's default value, as some exporters write them (torch.onnx's
    dynamo exporter sets ReduceMean's noop_with_empty_axes=0); and how many
    were added."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    added = 0
    for node in out.graph.node:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        present = {a.name for a in node.attribute}
        for name, attr in schema.attributes.items():
            if name not in present and attr.default_value.type != onnx.AttributeProto.UNDEFINED:
                default = onnx.AttributeProto()
                default.CopyFrom(attr.default_value)
                default.name = name
                node.attribute.append(default)
                added += 1
    return out, added


def _normalised(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(n.op, repr(n.attrs)) for n in import_model(model).nodes()]


@lru_cache(maxsize=1)
def _cases_with_defaults_left_out() -> list[str]:
    """The importable cases that leave out at least one attribute with a default."""
    return sorted(name for name, case in _cases().items()
                  if _expected_error(name) is None and _with_explicit_defaults(case.model)[1])


@pytest.mark.parametrize("name", _cases_with_defaults_left_out())
def test_attributes_written_at_their_defaults_mean_what_their_absence_means(name: str) -> None:
    model, _, _ = _prepared(_cases()[name])
    explicit, _ = _with_explicit_defaults(model)
    assert _normalised(explicit) == _normalised(model)
