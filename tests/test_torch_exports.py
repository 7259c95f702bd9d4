"""Real PyTorch exports, run through a Session with the default kernels.

``tests/torch_exports`` holds one small network with the layer patterns of
today's CNNs, exported by both of PyTorch's exporters (see its
``generate.py``), and PyTorch's own output. Users hand convtune exactly such
files: the exporters' shape arithmetic, their ways of writing attributes and
their operator choices (ReduceMean for adaptive pooling, a ConstantOfShape
chain for ``F.pad``) must import, and every output must match PyTorch and
onnxruntime (where it can run the model) within the project tolerance.
No torch is needed to run these tests.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx_models import assert_close, ort_run

from convtune.ir.model_passes import optimize
from convtune.ir.onnx_frontend import import_model
from convtune.tuner.dispatch import FallbackWarning
from convtune.tuner.session import Session

EXPORTS = Path(__file__).parent / "torch_exports"
MODELS = sorted(p.name for p in EXPORTS.glob("*.onnx"))


def test_both_exporters_are_covered() -> None:
    assert MODELS == ["patterns_dynamo.onnx", "patterns_torchscript_opset17.onnx"]


@pytest.mark.parametrize("name", MODELS)
def test_export_runs_as_pytorch_computed_it(name: str) -> None:
    data = np.load(EXPORTS / "patterns.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        session = Session(EXPORTS / name, logs=None)
    got = session.run(None, {"x": data["x"]})
    assert_close(got, [data["logits"], data["image"]], f"{name} against PyTorch")
    try:
        reference = ort_run(onnx.load(EXPORTS / name), {"x": data["x"]})
    except Exception as e:  # noqa: BLE001 - onnxruntime refuses a dilated 'same' conv (SAME_UPPER)
        assert "Dilation not supported for AutoPadType" in str(e), e
        return
    assert_close(got, reference, f"{name} against onnxruntime")


@pytest.mark.parametrize("name", MODELS)
def test_every_conv_of_the_export_runs_as_a_fused_kernel(name: str) -> None:
    """Each Conv (with its BatchNorm, activation or residual Add) becomes a
    convtune kernel, and the adaptive pools become compiled pools."""
    model = onnx.load(EXPORTS / name)
    convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)
    nodes = list(optimize(import_model(model)).nodes())
    ops = [n.op for n in nodes]
    assert ops.count("FusedConv") + ops.count("FusedConvTranspose") == convs
    assert "BatchNormalization" not in ops
    assert [n.attrs["axes"] for n in nodes if n.op == "ReduceMean"] == [[1]]  # only the mean over channels
