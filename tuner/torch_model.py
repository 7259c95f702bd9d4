"""PyTorch running an imported model, for ``convtune bench MODEL``'s oneDNN column.

PyTorch cannot load an ONNX file, and the usual converter (onnx2torch) pulls
in torchvision. But the frontend has already done the hard part: the imported
``ModelGraph`` has static shapes and each node's attributes in one canonical
form, so each operator becomes one ``torch.nn.functional`` call, run in eager
mode as a PyTorch user runs a model (``torch.inference_mode``, the same
threads, weights and input in NCHW or channels_last). An operator without a
translation here raises ``NotTranslated``, and the bench leaves PyTorch out.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from convtune.ir.graph import ModelGraph, Node


class NotTranslated(ValueError):
    """The model has an operator this module does not run in PyTorch."""


Op = Callable[..., Any]


def _ops(torch: Any, F: Any) -> dict[str, Callable[[dict[str, Any]], Op]]:
    """ONNX operator -> (canonical attributes -> function of the input tensors)."""

    def padded(x: Any, pads: list[int], value: float = 0.0) -> tuple[Any, tuple[int, int]]:
        """``x`` padded where the ONNX pads are asymmetric (functional convs
        and pools only pad symmetrically), and the symmetric padding left."""
        top, left, bottom, right = pads
        if (top, left) == (bottom, right):
            return x, (top, left)
        return F.pad(x, (left, right, top, bottom), value=value), (0, 0)

    def conv(a: dict[str, Any]) -> Op:
        def run(x: Any, w: Any, b: Any = None) -> Any:
            x, padding = padded(x, a["pads"])
            return F.conv2d(x, w, b, a["strides"], padding, a["dilations"], a["group"])
        return run

    def conv_transpose(a: dict[str, Any]) -> Op:
        """The full transposed conv, then ONNX's pads cropped off (an output
        shape past the full one, zero-extended in ONNX, has no torch form)."""
        if len(a["strides"]) != 2 or any(p < 0 for p in a["pads"]):
            raise NotTranslated("ConvTranspose: not 2-D, or an output larger than the full scatter")
        top, left = a["pads"][:2]
        height, width = a["output_shape"]

        def run(x: Any, w: Any, b: Any = None) -> Any:
            full = F.conv_transpose2d(x, w, b, a["strides"], 0, 0, a["group"], a["dilations"])
            return full[:, :, top:top + height, left:left + width]
        return run

    def max_pool(a: dict[str, Any]) -> Op:
        def run(x: Any) -> Any:
            x, padding = padded(x, a["pads"], value=-np.inf)
            return F.max_pool2d(x, a["kernel_shape"], a["strides"], padding, a["dilations"], a["ceil_mode"])
        return run

    def average_pool(a: dict[str, Any]) -> Op:
        if any(d != 1 for d in a["dilations"]):
            raise NotTranslated("AveragePool: dilations (torch's avg_pool2d has none)")
        if any(a["pads"]) and not a["count_include_pad"]:
            raise NotTranslated("AveragePool: pads left out of the average (count_include_pad=0)")

        def run(x: Any) -> Any:
            x, padding = padded(x, a["pads"])
            return F.avg_pool2d(x, a["kernel_shape"], a["strides"], padding, a["ceil_mode"], count_include_pad=True)
        return run

    def gemm(a: dict[str, Any]) -> Op:
        def run(x: Any, w: Any, c: Any = None) -> Any:
            x = x.t() if a["transA"] else x
            y = a["alpha"] * (x @ (w.t() if a["transB"] else w))
            return y if c is None else y + a["beta"] * c
        return run

    def softmax(a: dict[str, Any]) -> Op:
        if len(a["axes"]) != 1:
            raise NotTranslated("Softmax over several axes (opset < 13's coerced 2-D form)")
        return lambda x: torch.softmax(x, a["axes"][0])

    def reshaped(a: dict[str, Any]) -> Op:
        return lambda x: x.reshape(a["shape"])

    return {
        "Conv": conv,
        "ConvTranspose": conv_transpose,
        "BatchNormalization": lambda a: lambda x, scale, bias, mean, var: F.batch_norm(
            x, mean, var, scale, bias, False, 0.0, a["epsilon"]),
        "Relu": lambda a: F.relu,
        "LeakyRelu": lambda a: lambda x: F.leaky_relu(x, a["alpha"]),
        "Clip": lambda a: lambda x: torch.clamp(x, a["min"], a["max"]),
        "Sigmoid": lambda a: torch.sigmoid,
        "Tanh": lambda a: torch.tanh,
        "HardSigmoid": lambda a: lambda x: torch.clamp(a["alpha"] * x + a["beta"], 0.0, 1.0),
        "HardSwish": lambda a: F.hardswish,
        "Add": lambda a: torch.add,
        "Sub": lambda a: torch.sub,
        "Mul": lambda a: torch.mul,
        "Div": lambda a: torch.div,
        "MaxPool": max_pool,
        "AveragePool": average_pool,
        "GlobalAveragePool": lambda a: lambda x: F.adaptive_avg_pool2d(x, 1),
        "GlobalMaxPool": lambda a: lambda x: F.adaptive_max_pool2d(x, 1),
        "Flatten": reshaped, "Reshape": reshaped, "Squeeze": reshaped, "Unsqueeze": reshaped,
        "Transpose": lambda a: lambda x: x.permute(a["perm"]),
        "ReduceMean": lambda a: lambda x: x.mean(dim=a["axes"], keepdim=a["keepdims"]),
        "Softmax": softmax,
        "Gemm": gemm,
        "MatMul": lambda a: torch.matmul,
        "Concat": lambda a: lambda *xs: torch.cat(xs, a["axis"]),
        "Identity": lambda a: lambda x: x,
        "Dropout": lambda a: lambda x, *rest: x,
    }


def torch_runner(graph: ModelGraph, threads: int,
                 channels_last: bool) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
    """A function from feeds to the model's outputs, run by PyTorch eager.

    Raises ``NotTranslated`` (naming the node and operator) before anything
    runs if the graph has an operator without a translation, and
    ``PeerUnavailable`` if torch is not installed."""
    from convtune.tuner.peers import torch_modules

    torch, F = torch_modules(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    table = _ops(torch, F)
    steps: list[tuple[Node, Op]] = []
    for node in graph.nodes():
        if node.op not in table or len([t for t in node.outputs if t]) > 1:
            raise NotTranslated(f"node {node.name!r}: {node.op} has no PyTorch translation here")
        try:
            steps.append((node, table[node.op](node.attrs)))
        except NotTranslated as e:
            raise NotTranslated(f"node {node.name!r}: {e}") from None

    def tensor(a: np.ndarray) -> Any:
        t = torch.from_numpy(np.require(a, requirements=("C", "W")))  # torch wants writable memory
        return t.contiguous(memory_format=fmt) if t.dim() == 4 else t

    constants = {name: tensor(value) for name, value in graph.constants.items()}

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        env = dict(constants)
        env.update((name, tensor(feeds[name])) for name in graph.inputs)
        with torch.inference_mode():
            for node, op in steps:
                out = op(*(env[t] if t else None for t in node.inputs))
                env[node.outputs[0]] = out
        return [env[t].contiguous().numpy() for t in graph.outputs]

    return run
