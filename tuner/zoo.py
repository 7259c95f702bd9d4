"""The model zoo: torchvision's classification networks as ONNX, built in code.

No downloads: each model is written with ``onnx.helper`` with seeded random
weights, as PyTorch's exporter emits it in eval mode (opset 17): Conv with a
bias where BatchNormalization was folded into it, ReLU6 as Clip with min and
max as inputs, AdaptiveAvgPool2d(1) as GlobalAveragePool, Flatten + Gemm
heads. ``fold_bn=False`` keeps explicit BatchNormalization nodes (after
bias-free convs, as torchvision writes them) so a frontend's own folding is
exercised; both forms compute the same function.

Random weights make activations explode or vanish within a few dozen layers,
and a relative-error check on values of 1e30 or 1e-30 says nothing. So the
builder evaluates each layer on a calibration input as it emits it:
BatchNormalization's running mean and variance are the statistics the layer's
output really has (as in a trained network), and a conv or Gemm with no
BatchNormalization after it is scaled to unit output variance (LSUV, Mishkin
and Matas 2015). Activations stay O(1) at every depth, for any random input.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from convtune.ir.reference import conv2d_reference
from convtune.ir.workload import conv2d

OPSET = 17
IR_VERSION = 8
"""ONNX IR version 8 (opset 17's), which every onnxruntime since 1.12 reads."""
ZOO_VERSION = 1
"""Part of cached file names: bump it when a model's graph or weights change."""
BN_EPSILON = 1e-5
INPUT, OUTPUT = "input", "output"
IMAGE = 224
CLASSES = 1000
RESIDUAL_GAMMA = 0.4
"""Scale of the last BatchNormalization of a residual branch: each block adds
its branch's variance to the identity's, so unit-variance branches would grow
the activations with depth (torchvision's zero_init_residual is the limit)."""


class ZooError(ValueError):
    """An unknown model name or an unreadable model file."""


class _Builder:
    """Emits ONNX nodes and evaluates each on the calibration input as it goes,
    so every layer's weights can be normalised against real activations."""

    def __init__(self, name: str, seed: int, fold_bn: bool, batch: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.fold_bn = fold_bn
        self.batch = batch
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[str, np.ndarray] = {
            INPUT: self.rng.standard_normal((batch, 3, IMAGE, IMAGE))}
        self._counts: dict[str, int] = {}

    def _fresh(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def _const(self, prefix: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def _emit(self, op: str, inputs: Sequence[str], value: np.ndarray, **attrs: object) -> str:
        from onnx import helper

        out = self._fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"/{out}/{op}", **attrs))
        self.values[out] = value
        return out

    # -- layers ---------------------------------------------------------------
    def conv(self, x: str, k: int, kernel: int, stride: int = 1, pad: int = 0, groups: int = 1,
             bn: bool = True, gamma: float = 1.0) -> str:
        """Conv (+ BatchNormalization when ``bn``), before any activation.
        With ``bn`` the conv has no bias of its own (torchvision's), and
        BatchNormalization gets the measured statistics of the conv's output;
        without, the weights are scaled to unit output variance and a bias added."""
        data = self.values[x]
        n, c, h, w = data.shape
        wl = conv2d(n, c, h, w, k, kernel, stride=stride, padding=pad, groups=groups)
        weight = self.rng.standard_normal(wl.weight_shape) * np.sqrt(2.0 / (wl.Cg * kernel * kernel))
        y = conv2d_reference(wl, data, weight)
        attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4, group=groups,
                     dilations=[1, 1])
        if not bn:
            weight /= y.std()
            bias = self.rng.normal(0.0, 0.1, k)
            value = y / y.std() + bias[None, :, None, None]
            return self._emit("Conv", [x, self._const("conv.weight", weight), self._const("conv.bias", bias)], value,
                              **attrs)
        mean, var = y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))
        scale = gamma * self.rng.uniform(0.5, 1.5, k)
        shift = gamma * self.rng.normal(0.0, 0.25, k)
        factor = scale / np.sqrt(var + BN_EPSILON)
        value = (y - mean[None, :, None, None]) * factor[None, :, None, None] + shift[None, :, None, None]
        if self.fold_bn:
            folded = weight * factor[:, None, None, None]
            return self._emit("Conv", [x, self._const("conv.weight", folded),
                                       self._const("conv.bias", shift - mean * factor)], value, **attrs)
        raw = self._emit("Conv", [x, self._const("conv.weight", weight)], y, **attrs)
        params = [self._const(f"bn.{p}", v) for p, v in (("weight", scale), ("bias", shift), ("running_mean", mean),
                                                         ("running_var", var))]
        return self._emit("BatchNormalization", [raw, *params], value, epsilon=BN_EPSILON, momentum=0.9)

    def relu(self, x: str) -> str:
        return self._emit("Relu", [x], np.maximum(self.values[x], 0.0))

    def relu6(self, x: str) -> str:
        """ReLU6 as the exporter writes it: Clip with min and max as inputs."""
        lo, hi = self._const("clip.min", np.float32(0.0)), self._const("clip.max", np.float32(6.0))
        return self._emit("Clip", [x, lo, hi], np.clip(self.values[x], 0.0, 6.0))

    def add(self, a: str, b: str) -> str:
        return self._emit("Add", [a, b], self.values[a] + self.values[b])

    def concat(self, xs: Sequence[str]) -> str:
        return self._emit("Concat", list(xs), np.concatenate([self.values[x] for x in xs], axis=1), axis=1)

    def maxpool(self, x: str, kernel: int, stride: int, pad: int = 0, ceil_mode: bool = False) -> str:
        data = self.values[x]
        h = data.shape[2]
        span = h + 2 * pad - kernel
        out = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (out - 1) * stride >= h + pad:  # the last window must start inside the input
            out -= 1
        extra = (out - 1) * stride + kernel - (h + 2 * pad)
        padded = np.pad(data, ((0, 0), (0, 0), (pad, pad + extra), (pad, pad + extra)), constant_values=-np.inf)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
        value = windows[:, :, ::stride, ::stride].max(axis=(4, 5))
        return self._emit("MaxPool", [x], value, kernel_shape=[kernel, kernel], strides=[stride, stride],
                          pads=[pad] * 4, ceil_mode=int(ceil_mode))

    def identity_avgpool(self, x: str) -> str:
        """AdaptiveAvgPool2d((7, 7)) on a 7x7 map, as the exporter writes it:
        an AveragePool of kernel 1 (VGG's head)."""
        return self._emit("AveragePool", [x], self.values[x], kernel_shape=[1, 1], strides=[1, 1])

    def global_avgpool(self, x: str) -> str:
        return self._emit("GlobalAveragePool", [x], self.values[x].mean(axis=(2, 3), keepdims=True))

    def flatten(self, x: str) -> str:
        return self._emit("Flatten", [x], self.values[x].reshape(self.batch, -1), axis=1)

    def gemm(self, x: str, n: int) -> str:
        """Linear as Gemm(x, W, b, transB=1), scaled to unit output variance."""
        data = self.values[x]
        weight = self.rng.standard_normal((n, data.shape[1]), dtype=np.float32)
        y = data.astype(np.float32) @ weight.T
        weight /= y.std()
        bias = self.rng.normal(0.0, 0.1, n)
        return self._emit("Gemm", [x, self._const("fc.weight", weight), self._const("fc.bias", bias)],
                          y / y.std() + bias, alpha=1.0, beta=1.0, transB=1)

    def model(self, out: str):  # type: ignore[no-untyped-def]
        """The ``onnx.ModelProto`` whose output is tensor ``out``."""
        from onnx import TensorProto, helper

        self.nodes.append(helper.make_node("Identity", [out], [OUTPUT], name="/output/Identity"))
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [self.batch, 3, IMAGE, IMAGE])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, list(self.values[out].shape))],
            self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                 producer_name="convtune.zoo")


# -- architectures (torchvision's, layer for layer) ---------------------------
def _resnet(b: _Builder, blocks: Sequence[int], bottleneck: bool) -> str:
    x = b.maxpool(b.relu(b.conv(INPUT, 64, 7, stride=2, pad=3)), 3, 2, pad=1)
    width = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            out_width = planes * 4 if bottleneck else planes
            if bottleneck:
                y = b.relu(b.conv(x, planes, 1))
                y = b.relu(b.conv(y, planes, 3, stride=stride, pad=1))
                y = b.conv(y, out_width, 1, gamma=RESIDUAL_GAMMA)
            else:
                y = b.relu(b.conv(x, planes, 3, stride=stride, pad=1))
                y = b.conv(y, planes, 3, pad=1, gamma=RESIDUAL_GAMMA)
            identity = b.conv(x, out_width, 1, stride=stride) if stride != 1 or width != out_width else x
            x = b.relu(b.add(y, identity))
            width = out_width
    return b.gemm(b.flatten(b.global_avgpool(x)), CLASSES)


def resnet18(b: _Builder) -> str:
    return _resnet(b, (2, 2, 2, 2), bottleneck=False)


def resnet50(b: _Builder) -> str:
    return _resnet(b, (3, 4, 6, 3), bottleneck=True)


MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))
"""(expansion t, channels c, repeats n, first stride s), torchvision's table."""


def mobilenet_v2(b: _Builder) -> str:
    x = b.relu6(b.conv(INPUT, 32, 3, stride=2, pad=1))
    width = 32
    for t, c, n, s in MOBILENET_V2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = width * t
            y = b.relu6(b.conv(x, hidden, 1)) if t != 1 else x
            y = b.relu6(b.conv(y, hidden, 3, stride=stride, pad=1, groups=hidden))
            y = b.conv(y, c, 1, gamma=RESIDUAL_GAMMA if stride == 1 and width == c else 1.0)
            x = b.add(y, x) if stride == 1 and width == c else y
            width = c
    x = b.relu6(b.conv(x, 1280, 1))
    return b.gemm(b.flatten(b.global_avgpool(x)), CLASSES)


SQUEEZENET1_1_FIRES = ((16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192), (64, 256),
                       (64, 256))
"""(squeeze, expand) per Fire module, "M" a ceil-mode MaxPool."""


def squeezenet1_1(b: _Builder) -> str:
    x = b.maxpool(b.relu(b.conv(INPUT, 64, 3, stride=2, bn=False)), 3, 2, ceil_mode=True)
    for fire in SQUEEZENET1_1_FIRES:
        if fire == "M":
            x = b.maxpool(x, 3, 2, ceil_mode=True)
            continue
        squeeze, expand = fire
        s = b.relu(b.conv(x, squeeze, 1, bn=False))
        x = b.concat([b.relu(b.conv(s, expand, 1, bn=False)), b.relu(b.conv(s, expand, 3, pad=1, bn=False))])
    x = b.relu(b.conv(x, CLASSES, 1, bn=False))
    return b.flatten(b.global_avgpool(x))


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(b: _Builder) -> str:
    x = INPUT
    for layer in VGG16_LAYERS:
        x = b.maxpool(x, 2, 2) if layer == "M" else b.relu(b.conv(x, int(layer), 3, pad=1, bn=False))
    x = b.flatten(b.identity_avgpool(x))
    x = b.relu(b.gemm(x, 4096))
    x = b.relu(b.gemm(x, 4096))
    return b.gemm(x, CLASSES)


ZOO: dict[str, Callable[[_Builder], str]] = {
    f.__name__: f for f in (resnet18, resnet50, mobilenet_v2, squeezenet1_1, vgg16)}


def _check_name(name: str) -> None:
    if name not in ZOO:
        raise ZooError(f"{name!r} is not a zoo model (zoo: {', '.join(ZOO)})")


def build_model(name: str, *, fold_bn: bool = True, seed: int = 0, batch: int = 1):  # type: ignore[no-untyped-def]
    """The zoo model ``name`` as an ``onnx.ModelProto`` (input ``input``,
    batch x 3 x 224 x 224; output ``output``, batch x 1000)."""
    _check_name(name)
    if batch < 1:
        raise ZooError(f"batch: expected a positive int, got {batch!r}")
    builder = _Builder(name, seed, fold_bn, batch)
    return builder.model(ZOO[name](builder))


def save_model(model, path: str | Path) -> Path:  # type: ignore[no-untyped-def]
    """Write ``model`` atomically: a concurrent reader never sees half a file."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def zoo_dir() -> Path:
    """``$CONVTUNE_ZOO_DIR``, else ``~/.cache/convtune/zoo``."""
    return Path(os.environ.get("CONVTUNE_ZOO_DIR") or Path.home() / ".cache" / "convtune" / "zoo")


def resolve_model(name_or_path: str | Path) -> Path:
    """The ONNX file of a zoo name (built once, then cached in ``zoo_dir()``)
    or of a path, checked to be a readable ONNX model. Every CLI command that
    takes a model takes either."""
    import onnx
    from google.protobuf.message import DecodeError

    text = str(name_or_path)
    if text in ZOO:
        path = zoo_dir() / f"{text}-v{ZOO_VERSION}.onnx"
        return path if path.exists() else save_model(build_model(text), path)
    path = Path(text)
    if not path.exists():
        raise ZooError(f"{text!r} is neither a zoo model ({', '.join(ZOO)}) nor an existing file")
    if path.is_dir():
        raise ZooError(f"{text}: is a directory, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise ZooError(f"{text}: not a readable ONNX model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    if not model.graph.node:
        raise ZooError(f"{text}: not an ONNX model (no graph nodes)")
    return path
