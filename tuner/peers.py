"""The tools convtune competes with, run on the same layer and inputs.

Each peer turns (workload, data, weight) into a zero-argument callable that
computes the convolution; setup (model building, weight layout conversion)
happens outside it, as it would in the peer's own inference path. Peers are
optional dependencies: a missing one is reported, not fatal.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from convtune.ir.workload import Conv2D

Runner = Callable[[], np.ndarray]


class PeerUnavailable(RuntimeError):
    pass


def onnxruntime_session(model: bytes | str, threads: int):  # type: ignore[no-untyped-def]
    """An onnxruntime session (of ONNX bytes or a file path) as convtune is
    compared with it: ``threads`` intra-op threads, one inter-op thread, every
    graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def onnxruntime_conv(wl: Conv2D, data: np.ndarray, weight: np.ndarray, threads: int) -> Runner:
    """A one-node ONNX Conv model (weights as an initializer) in onnxruntime."""
    try:
        import onnx
        import onnxruntime  # noqa: F401 - here only to report a missing one as PeerUnavailable
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise PeerUnavailable(f"onnxruntime: {e} (pip install '.[bench]')") from None
    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], kernel_shape=[wl.R, wl.S], strides=list(wl.stride),
        pads=list(wl.padding), dilations=list(wl.dilation), group=wl.groups)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(wl.data_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(wl.out_shape))],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime_session(model.SerializeToString(), threads)
    onnx.checker.check_model(model)
    feed = {"x": data}
    return lambda: session.run(None, feed)[0]


def torch_conv(wl: Conv2D, data: np.ndarray, weight: np.ndarray, threads: int, channels_last: bool) -> Runner:
    """``torch.nn.functional.conv2d`` (oneDNN on x86), NCHW or channels_last."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        raise PeerUnavailable(f"torch: {e} (install a CPU build: pip install torch==2.13.0)") from None
    torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(data).contiguous(memory_format=fmt)
    w = torch.from_numpy(weight).contiguous(memory_format=fmt)
    pt, pl, pb, pr = wl.padding
    symmetric = pt == pb and pl == pr

    def run() -> np.ndarray:
        with torch.no_grad():
            inp = x if symmetric else F.pad(x, (pl, pr, pt, pb))
            y = F.conv2d(inp, w, None, wl.stride, (pt, pl) if symmetric else 0, wl.dilation, wl.groups)
        return y.numpy()

    return run


PEERS: dict[str, Callable[[Conv2D, np.ndarray, np.ndarray, int], Runner]] = {
    "onnxruntime": onnxruntime_conv,
    "torch_nchw": lambda wl, x, w, t: torch_conv(wl, x, w, t, channels_last=False),
    "torch_cl": lambda wl, x, w, t: torch_conv(wl, x, w, t, channels_last=True),
}
"""Peer name -> runner factory. 'torch_cl' is oneDNN with channels_last."""
