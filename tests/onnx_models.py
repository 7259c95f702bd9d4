"""Small ONNX models built with onnx.helper, and onnxruntime as the reference they are checked against."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from convtune.ir import relative_error

TOLERANCE = 1e-4


def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Sequence[int | str]],
               outputs: dict[str, Sequence[int | str] | None], initializers: dict[str, np.ndarray] | None = None,
               opset: int = 17, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A checked model; an output shape of None lets shape inference fill it."""
    graph = helper.make_graph(
        list(nodes), "test",
        [helper.make_tensor_value_info(n, dtype, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, dtype, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime reads
    model = onnx.shape_inference.infer_shapes(model)  # fills the output shapes left as None
    onnx.checker.check_model(model)
    return model


def weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_close(got: Sequence[np.ndarray], want: Sequence[np.ndarray], what: str = "") -> None:
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        if np.issubdtype(w.dtype, np.floating):
            assert np.array_equal(np.isfinite(g), np.isfinite(w)), what
            finite = np.isfinite(w)
            err = relative_error(g[finite], w[finite].astype(np.float64)) if finite.any() else 0.0
            assert err < TOLERANCE, f"{what}: relative error {err:.3g}"
        else:
            assert np.array_equal(g, w), what
