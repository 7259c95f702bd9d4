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
from convtune.ir.workload_transpose import ConvTranspose2D

Runner = Callable[[], np.ndarray]


class PeerUnavailable(RuntimeError):
    pass


def onnxruntime_session(model: bytes | str, threads: int, profile_prefix: str | None = None):  # type: ignore[no-untyped-def]
    """An onnxruntime session (of ONNX bytes or a file path) as convtune is
    compared with it: ``threads`` intra-op threads, one inter-op thread, every
    graph optimisation; with ``profile_prefix``, profiling every node into a
    file of that prefix (``tuner.peer_profile``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _onnxruntime_node(node, data: np.ndarray, weight: np.ndarray, out_shape: tuple[int, ...],  # type: ignore[no-untyped-def]
                      threads: int) -> Runner:
    """A one-node ONNX model of ``node`` (inputs x and the initializer w) in onnxruntime."""
    try:
        import onnx
        import onnxruntime  # noqa: F401 - here only to report a missing one as PeerUnavailable
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise PeerUnavailable(f"onnxruntime: {e} (pip install '.[bench]')") from None
    graph = helper.make_graph(
        [node], node.op_type.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(data.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime_session(model.SerializeToString(), threads)
    onnx.checker.check_model(model)
    feed = {"x": data}
    return lambda: session.run(None, feed)[0]


def onnxruntime_conv(wl: Conv2D, data: np.ndarray, weight: np.ndarray, threads: int) -> Runner:
    """A one-node ONNX Conv model (weights as an initializer) in onnxruntime."""
    from onnx import helper

    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], kernel_shape=[wl.R, wl.S], strides=list(wl.stride),
        pads=list(wl.padding), dilations=list(wl.dilation), group=wl.groups)
    return _onnxruntime_node(node, data, weight, wl.out_shape, threads)


def onnxruntime_conv_transpose(wl: ConvTranspose2D, data: np.ndarray, weight: np.ndarray, threads: int) -> Runner:
    """A one-node ONNX ConvTranspose model (weights as an initializer) in onnxruntime."""
    from onnx import helper

    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["y"], kernel_shape=[wl.R, wl.S], strides=list(wl.stride),
        pads=list(wl.padding), output_padding=list(wl.output_padding), dilations=list(wl.dilation),
        group=wl.groups)
    return _onnxruntime_node(node, data, weight, wl.out_shape, threads)


def torch_modules(threads: int):  # type: ignore[no-untyped-def]
    """``torch`` and ``torch.nn.functional`` on ``threads`` threads, or
    ``PeerUnavailable`` saying how to install it."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        raise PeerUnavailable(f"torch: not installed ({e}); install a CPU build: pip install torch==2.13.0") from None
    torch.set_num_threads(threads)
    return torch, F


def torch_conv(wl: Conv2D, data: np.ndarray, weight: np.ndarray, threads: int, channels_last: bool) -> Runner:
    """``torch.nn.functional.conv2d`` (oneDNN on x86), NCHW or channels_last."""
    torch, F = torch_modules(threads)
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


def torch_conv_transpose(wl: ConvTranspose2D, data: np.ndarray, weight: np.ndarray, threads: int) -> Runner:
    """``torch.nn.functional.conv_transpose2d`` (oneDNN on x86), NCHW. Its
    padding is symmetric: the smaller pad of each axis goes to torch, the
    rest is cropped off its output, with torch's output padding reaching as
    far as the crop needs (past the scatter, an ONNX output shape's rows are zeros)."""
    torch, F = torch_modules(threads)
    x, w = torch.from_numpy(data), torch.from_numpy(weight)
    pt, pl, pb, pr = wl.padding
    low = (min(pt, pb), min(pl, pr))
    extra = tuple(max(0, min(e - (end - lo), max(s, d) - 1))
                  for e, end, lo, s, d in zip(wl.output_padding, (pb, pr), low, wl.stride, wl.dilation))
    top, left = pt - low[0], pl - low[1]

    def run() -> np.ndarray:
        with torch.no_grad():
            y = F.conv_transpose2d(x, w, None, wl.stride, low, extra, wl.groups, wl.dilation).numpy()
        y = y[:, :, top:top + wl.P, left:left + wl.Q]
        return np.pad(y, ((0, 0), (0, 0), (0, wl.P - y.shape[2]), (0, wl.Q - y.shape[3])))

    return run


TRANSPOSE_PEERS: dict[str, Callable[[ConvTranspose2D, np.ndarray, np.ndarray, int], Runner]] = {
    "onnxruntime": onnxruntime_conv_transpose,
    "torch_nchw": torch_conv_transpose,
}
"""The peers of a transposed conv (``convtune bench --transpose``)."""
