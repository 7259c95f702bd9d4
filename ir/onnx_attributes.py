"""ONNX attributes -> the model graph's normalised attributes, one function per operator.

Each normaliser reads an ONNX node's attributes (with the schema's defaults)
and its constant inputs (Clip min/max, Pad pads, Reshape shape, ...: inputs
in newer opsets, attributes in older ones) and returns the node's data inputs
and attributes in one opset-free form: pads resolved from ``auto_pad``,
negative axes made positive, Slice as explicit (start, stop, step) triples,
Reshape/Flatten/Squeeze/Unsqueeze as the output shape. An attribute the
normaliser did not read, or a value it cannot honour, is a ``GraphError``
naming the node, its operator and the attribute, so no attribute is ever
silently ignored.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from convtune.ir.graph import GraphError
from convtune.ir.op_semantics_spatial import pool_output_size
from convtune.ir.workload import same_padding

SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (
    np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_))


def numpy_dtype(elem_type: int, what: str) -> np.dtype:
    """The numpy dtype of an ONNX element type, or a ``GraphError`` naming ``what``."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype not in SUPPORTED_DTYPES:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() \
            else str(elem_type)
        raise GraphError(f"{what}: element type {name} is not supported")
    return dtype


class OnnxNode:
    """An ONNX node being imported: attribute and constant-input access that
    records what was read, and errors that name the node."""

    def __init__(self, proto: onnx.NodeProto, name: str, opset: int,
                 shapes: Callable[[str], tuple[int, ...]], constant: Callable[[str], np.ndarray | None]) -> None:
        self.proto, self.name, self.opset, self.op = proto, name, opset, proto.op_type
        self._attrs = {a.name: a for a in proto.attribute}
        self._read: set[str] = set()
        self._shapes, self._constant = shapes, constant
        self.inputs = list(proto.input)
        while self.inputs and not self.inputs[-1]:
            self.inputs.pop()

    def error(self, what: str, message: str) -> GraphError:
        return GraphError(f"node {self.name!r} ({self.op}): {what}: {message}")

    def attr(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        if name not in self._attrs:  # ONNX's FLOAT attributes are 32-bit: so is a default left out
            return float(np.float32(default)) if isinstance(default, float) else default
        value = helper.get_attribute_value(self._attrs[name])
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, onnx.TensorProto):
            return numpy_helper.to_array(value)
        return list(value) if isinstance(value, (list, tuple)) else value

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def shape(self, i: int) -> tuple[int, ...]:
        return self._shapes(self.inputs[i])

    def const_input(self, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` as a constant, None when absent (or an empty tensor,
        which opset 11's Resize uses for 'not given')."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        value = self._constant(self.inputs[i])
        if value is None:
            raise self.error(f"input {what!r}", f"must be a constant (tensor {self.inputs[i]!r} is computed)")
        return None if value.size == 0 and what in ("scales", "sizes", "roi") else value

    def unread_attributes(self) -> list[str]:
        return sorted(set(self._attrs) - self._read)

    def output_used(self, i: int) -> bool:
        return i < len(self.proto.output) and bool(self.proto.output[i])


Normalised = tuple[list[str], dict[str, Any]]


def _positive_axis(node: OnnxNode, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise node.error(f"attribute {what!r}", f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes_from(node: OnnxNode, index: int, rank: int) -> list[int] | None:
    """Axes from an attribute (old opsets) or a constant input (new ones)."""
    axes = node.attr("axes")
    if axes is None and index < len(node.inputs):
        value = node.const_input(index, "axes")
        axes = None if value is None else value.tolist()
    return None if axes is None else [_positive_axis(node, int(a), rank, "axes") for a in axes]


def _window_pads(node: OnnxNode, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int]) -> list[int]:
    """ONNX pads (begins then ends) after ``auto_pad``."""
    nd = len(spatial)
    mode = node.attr("auto_pad", "NOTSET")
    pads = node.attr("pads", [0] * 2 * nd)
    if mode == "NOTSET":
        if len(pads) != 2 * nd or min(pads) < 0:
            raise node.error("attribute 'pads'", f"expected {2 * nd} non-negative values, got {pads}")
        return [int(p) for p in pads]
    if mode == "VALID":
        return [0] * 2 * nd
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_padding(i, k, s, d, mode == "SAME_UPPER") for i, k, s, d in zip(spatial, kernel, strides,
                                                                                         dilations)]
        return [p[0] for p in pairs] + [p[1] for p in pairs]
    raise node.error("attribute 'auto_pad'", f"{mode!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")


def _window(node: OnnxNode, kernel: Sequence[int]) -> dict[str, Any]:
    """kernel_shape, strides, dilations and pads of a conv or pool node."""
    spatial = node.shape(0)[2:]
    nd = len(spatial)
    if len(kernel) != nd:
        raise node.error("attribute 'kernel_shape'", f"has {len(kernel)} values for {nd} spatial axes")
    strides = [int(s) for s in node.attr("strides", [1] * nd)]
    dilations = [int(d) for d in node.attr("dilations", [1] * nd)]
    for what, values in (("strides", strides), ("dilations", dilations)):
        if len(values) != nd or min(values) < 1:
            raise node.error(f"attribute {what!r}", f"expected {nd} positive values, got {values}")
    return {"kernel_shape": [int(k) for k in kernel], "strides": strides, "dilations": dilations,
            "pads": _window_pads(node, spatial, kernel, strides, dilations)}


def conv(node: OnnxNode) -> Normalised:
    if len(node.shape(0)) != 4:
        raise node.error("input 'X'", f"only 2-D convolutions are supported (input has rank {len(node.shape(0))})")
    attrs = _window(node, node.attr("kernel_shape", list(node.shape(1)[2:])))
    attrs["group"] = int(node.attr("group", 1))
    return node.inputs, attrs


def conv_transpose(node: OnnxNode) -> Normalised:
    x_shape, w_shape = node.shape(0), node.shape(1)
    spatial, nd = x_shape[2:], len(x_shape) - 2
    kernel = [int(k) for k in node.attr("kernel_shape", list(w_shape[2:]))]
    strides = [int(s) for s in node.attr("strides", [1] * nd)]
    dilations = [int(d) for d in node.attr("dilations", [1] * nd)]
    extra = [int(p) for p in node.attr("output_padding", [0] * nd)]
    mode = node.attr("auto_pad", "NOTSET")
    given = node.attr("output_shape")
    full = [s * (i - 1) + e + (k - 1) * d + 1 for i, s, k, d, e in zip(spatial, strides, kernel, dilations, extra)]
    if given is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
        out = [int(o) for o in given[-nd:]] if given is not None else [i * s for i, s in zip(spatial, strides)]
        total = [f - o for f, o in zip(full, out)]
        upper = mode == "SAME_UPPER"
        # an output larger than the full one is zero-extended at the end
        begins = [0 if t < 0 else t // 2 if upper else t - t // 2 for t in total]
        pads = begins + [t - b for t, b in zip(total, begins)]
    elif mode in ("NOTSET", "VALID"):
        pads = [0] * 2 * nd if mode == "VALID" else [int(p) for p in node.attr("pads", [0] * 2 * nd)]
        out = [f - pads[i] - pads[nd + i] for i, f in enumerate(full)]
    else:
        raise node.error("attribute 'auto_pad'", f"{mode!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    node.attr("pads")
    return node.inputs, {"strides": strides, "dilations": dilations, "group": int(node.attr("group", 1)),
                         "pads": pads, "output_shape": out}


def pool(node: OnnxNode) -> Normalised:
    kernel = node.attr("kernel_shape")
    if kernel is None:
        raise node.error("attribute 'kernel_shape'", "is required")
    attrs = _window(node, kernel)
    attrs["ceil_mode"] = bool(node.attr("ceil_mode", 0))
    if node.op == "AveragePool":
        attrs["count_include_pad"] = bool(node.attr("count_include_pad", 0))
    else:
        node.attr("storage_order")  # only shapes the Indices output, refused below
        if node.output_used(1):
            raise node.error("output 'Indices'", "MaxPool's indices output is not supported")
    spatial = node.shape(0)[2:]
    nd = len(spatial)
    for i, size in enumerate(spatial):
        out = pool_output_size(size, attrs["kernel_shape"][i], attrs["strides"][i], attrs["dilations"][i],
                               attrs["pads"][i], attrs["pads"][nd + i], attrs["ceil_mode"])
        if out < 1:
            raise node.error("attribute 'kernel_shape'", f"the window does not fit spatial axis {i} ({size})")
    return node.inputs, attrs


def batch_norm(node: OnnxNode) -> Normalised:
    node.attr("momentum")  # a training parameter: no effect at inference
    if node.attr("training_mode", 0):
        raise node.error("attribute 'training_mode'", "training mode is not supported (inference only)")
    if any(node.output_used(i) for i in range(1, 5)):
        raise node.error("outputs", "the running mean/variance outputs (training) are not supported")
    return node.inputs, {"epsilon": float(node.attr("epsilon", 1e-5))}


def no_attributes(node: OnnxNode) -> Normalised:
    return node.inputs, {}


def leaky_relu(node: OnnxNode) -> Normalised:
    return node.inputs, {"alpha": float(node.attr("alpha", 0.01))}


def hard_sigmoid(node: OnnxNode) -> Normalised:
    return node.inputs, {"alpha": float(node.attr("alpha", 0.2)), "beta": float(node.attr("beta", 0.5))}


def _scalar(value: np.ndarray | None) -> float | int | None:
    return None if value is None else value.reshape(-1)[0].item()


def clip(node: OnnxNode) -> Normalised:
    if node.opset < 11:
        return node.inputs[:1], {"min": node.attr("min"), "max": node.attr("max")}
    return node.inputs[:1], {"min": _scalar(node.const_input(1, "min")), "max": _scalar(node.const_input(2, "max"))}


def concat(node: OnnxNode) -> Normalised:
    return node.inputs, {"axis": _positive_axis(node, int(node.attr("axis")), len(node.shape(0)))}


def split(node: OnnxNode) -> Normalised:
    shape = node.shape(0)
    axis = _positive_axis(node, int(node.attr("axis", 0)), len(shape))
    sizes = node.attr("split")
    if sizes is None and len(node.inputs) > 1:
        sizes = node.const_input(1, "split").tolist()
    parts = node.attr("num_outputs", len(node.proto.output))
    if sizes is None:
        step = math.ceil(shape[axis] / parts)
        sizes = [min(step, shape[axis] - i * step) for i in range(parts)]
    if sum(sizes) != shape[axis] or len(sizes) != len(node.proto.output) or min(sizes) < 0:
        raise node.error("attribute 'split'", f"sizes {sizes} do not split axis {axis} ({shape[axis]}) "
                                              f"into {len(node.proto.output)} outputs")
    return node.inputs[:1], {"axis": axis, "split": [int(s) for s in sizes]}


def slice_(node: OnnxNode) -> Normalised:
    shape = node.shape(0)
    starts, ends = node.const_input(1, "starts").tolist(), node.const_input(2, "ends").tolist()
    axes_value = node.const_input(3, "axes")
    axes = list(range(len(starts))) if axes_value is None else axes_value.tolist()
    steps_value = node.const_input(4, "steps")
    steps = [1] * len(starts) if steps_value is None else steps_value.tolist()
    slices = [(0, d, 1) for d in shape]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _positive_axis(node, int(axis), len(shape), "axes")
        if step == 0:
            raise node.error("input 'steps'", "a step of 0 is invalid")
        dim = shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:  # ONNX's end -1 means "before index 0", Python's None does
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        slices[axis] = (int(start), None if end < 0 else int(end), int(step))
    return node.inputs[:1], {"slices": slices}


def gather(node: OnnxNode) -> Normalised:
    return node.inputs, {"axis": _positive_axis(node, int(node.attr("axis", 0)), len(node.shape(0)))}


def reduce_mean(node: OnnxNode) -> Normalised:
    rank = len(node.shape(0))
    axes = _axes_from(node, 1, rank)
    noop = node.attr("noop_with_empty_axes", 0)  # read even beside axes: exporters write it there
    if not axes:
        axes = [] if noop else list(range(rank))
    return node.inputs[:1], {"axes": sorted(set(axes)), "keepdims": bool(node.attr("keepdims", 1))}


def _reshaped(node: OnnxNode, shape: list[int]) -> Normalised:
    return node.inputs[:1], {"shape": tuple(int(d) for d in shape)}


def flatten(node: OnnxNode) -> Normalised:
    shape = node.shape(0)
    axis = int(node.attr("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise node.error("attribute 'axis'", f"{axis} is out of range for rank {len(shape)}")
    return _reshaped(node, [math.prod(shape[:axis]), math.prod(shape[axis:])])


def reshape(node: OnnxNode) -> Normalised:
    shape = node.shape(0)
    target = [int(d) for d in node.const_input(1, "shape").tolist()]
    if not node.attr("allowzero", 0):
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise node.error("input 'shape'", f"{target} has more than one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(shape) // known if known else 0
    if math.prod(target) != math.prod(shape) or min(target, default=0) < 0:
        raise node.error("input 'shape'", f"cannot reshape {list(shape)} to {target}")
    return _reshaped(node, target)


def squeeze(node: OnnxNode) -> Normalised:
    shape = node.shape(0)
    axes = _axes_from(node, 1, len(shape))
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else axes
    if any(shape[a] != 1 for a in axes):
        raise node.error("attribute 'axes'", f"{axes} includes an axis of {list(shape)} whose size is not 1")
    return _reshaped(node, [d for i, d in enumerate(shape) if i not in axes])


def unsqueeze(node: OnnxNode) -> Normalised:
    shape = list(node.shape(0))
    rank = len(shape) + len(node.attr("axes") or node.const_input(1, "axes").tolist())
    for axis in sorted(_axes_from(node, 1, rank) or []):
        shape.insert(axis, 1)
    return _reshaped(node, shape)


def transpose(node: OnnxNode) -> Normalised:
    rank = len(node.shape(0))
    perm = node.attr("perm", list(range(rank))[::-1])
    if sorted(perm) != list(range(rank)):
        raise node.error("attribute 'perm'", f"{perm} is not a permutation of {rank} axes")
    return node.inputs, {"perm": [int(p) for p in perm]}


def gemm(node: OnnxNode) -> Normalised:
    return node.inputs, {"alpha": float(node.attr("alpha", 1.0)), "beta": float(node.attr("beta", 1.0)),
                         "transA": bool(node.attr("transA", 0)), "transB": bool(node.attr("transB", 0))}


def softmax(node: OnnxNode) -> Normalised:
    """Before opset 13 Softmax normalised over all axes from ``axis`` on."""
    rank = len(node.shape(0))
    if node.opset < 13:
        axis = _positive_axis(node, int(node.attr("axis", 1)), rank)
        return node.inputs, {"axes": list(range(axis, rank))}
    return node.inputs, {"axes": [_positive_axis(node, int(node.attr("axis", -1)), rank)]}


def layer_norm(node: OnnxNode) -> Normalised:
    """Normalised over the axes from ``axis`` on. ``stash_type`` names the
    precision of the mean and variance; convtune computes them in float64
    whatever it asks (more exact than float32, never less)."""
    node.attr("stash_type")
    axis = _positive_axis(node, int(node.attr("axis", -1)), len(node.shape(0)))
    return node.inputs, {"axis": axis, "epsilon": float(node.attr("epsilon", 1e-5))}


def gelu(node: OnnxNode) -> Normalised:
    approximate = node.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise node.error("attribute 'approximate'", f"{approximate!r} is not supported (none, tanh)")
    return node.inputs, {"tanh": approximate == "tanh"}


def pad(node: OnnxNode) -> Normalised:
    rank = len(node.shape(0))
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.error("attribute 'mode'", f"{mode!r} is not one of constant, reflect, edge, wrap")
    given = node.attr("pads") if node.opset < 11 else node.const_input(1, "pads").tolist()
    value = node.attr("value", 0.0) if node.opset < 11 else (_scalar(node.const_input(2, "constant_value")) or 0)
    axes = _axes_from(node, 3, rank) or list(range(rank))
    if len(given) != 2 * len(axes):
        raise node.error("input 'pads'", f"expected {2 * len(axes)} values, got {len(given)}")
    pads = [0] * 2 * rank
    for i, axis in enumerate(axes):
        pads[axis], pads[rank + axis] = int(given[i]), int(given[len(axes) + i])
    return node.inputs[:1], {"mode": mode, "pads": pads, "value": value}


RESIZE_COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")


def resize(node: OnnxNode) -> Normalised:
    shape = node.shape(0)
    rank = len(shape)
    mode = node.attr("mode", "nearest")
    coordinates = node.attr("coordinate_transformation_mode", "half_pixel")
    nearest = node.attr("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear"):
        raise node.error("attribute 'mode'", f"{mode!r} is not supported (nearest or linear)")
    if coordinates not in RESIZE_COORDINATES:
        raise node.error("attribute 'coordinate_transformation_mode'",
                         f"{coordinates!r} is not supported (one of {', '.join(RESIZE_COORDINATES)})")
    if nearest not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        raise node.error("attribute 'nearest_mode'", f"{nearest!r} is not a nearest mode")
    if node.attr("antialias", 0) and mode == "linear":
        raise node.error("attribute 'antialias'", "antialiased linear resizing is not supported")
    for unused in ("cubic_coeff_a", "exclude_outside", "extrapolation_value"):  # cubic / tf_crop_and_resize only
        node.attr(unused)
    node.const_input(1, "roi")  # only tf_crop_and_resize reads it
    axes = _axes_from(node, 99, rank) or list(range(rank))
    scales_in, sizes_in = node.const_input(2, "scales"), node.const_input(3, "sizes")
    scales, sizes = [1.0] * rank, list(shape)
    if scales_in is not None:
        for axis, scale in zip(axes, scales_in.tolist()):
            if scale <= 0:
                raise node.error("input 'scales'", f"scale {scale} must be positive")
            scales[axis], sizes[axis] = float(scale), int(math.floor(shape[axis] * scale))
    elif sizes_in is not None:
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        ratios = [s / shape[a] for a, s in zip(axes, sizes_in.tolist())]
        if policy in ("not_larger", "not_smaller"):
            keep = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [keep] * len(axes)
            sizes_in = np.array([math.floor(shape[a] * keep + 0.5) for a in axes])
        elif policy != "stretch":
            raise node.error("attribute 'keep_aspect_ratio_policy'", f"{policy!r} is not a policy")
        for axis, size, ratio in zip(axes, sizes_in.tolist(), ratios):
            scales[axis], sizes[axis] = ratio, int(size)
    else:
        raise node.error("inputs", "Resize needs scales or sizes")
    node.attr("keep_aspect_ratio_policy")
    return node.inputs[:1], {"mode": mode, "coordinate_transformation_mode": coordinates, "nearest_mode": nearest,
                             "scales": scales, "sizes": sizes}


def constant(node: OnnxNode) -> Normalised:
    for name, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if node.has_attr(name):
            return [], {"value": np.asarray(node.attr(name), dtype=dtype)}
    unsupported = [a.name for a in node.proto.attribute]
    raise node.error(f"attribute {unsupported[0]!r}" if unsupported else "attributes",
                     "only numeric tensor constants are supported")


def constant_of_shape(node: OnnxNode) -> Normalised:
    """A constant, like ``Constant``'s, once its shape (the Shape arithmetic
    that feeds it, folded on import) is known: torch's TorchScript export of
    ``F.pad`` builds its pads so."""
    shape = node.const_input(0, "input")
    value = node.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.size != 1:
        raise node.error("attribute 'value'", f"must hold one element, not {value.size}")
    return [], {"value": np.full(tuple(int(d) for d in shape), value.reshape(()))}


def dropout(node: OnnxNode) -> Normalised:
    node.attr("ratio")
    node.attr("seed")
    training = node.const_input(2, "training_mode") if node.opset >= 12 else None
    if training is not None and bool(training.reshape(-1)[0]):
        raise node.error("input 'training_mode'", "training mode is not supported (inference only)")
    if node.output_used(1):
        raise node.error("output 'mask'", "Dropout's mask output is not supported")
    return node.inputs[:1], {}


def shape_(node: OnnxNode) -> Normalised:
    start, end = node.attr("start", 0), node.attr("end")
    return node.inputs, {"start": int(start), "end": None if end is None else int(end)}


def cast(node: OnnxNode) -> Normalised:
    node.attr("saturate")  # only affects float8 targets, which are refused
    node.attr("round_mode")
    return node.inputs, {"to": numpy_dtype(int(node.attr("to")), f"node {node.name!r} (Cast): attribute 'to'")}


NORMALISERS: dict[str, Callable[[OnnxNode], Normalised]] = {
    "Conv": conv, "ConvTranspose": conv_transpose, "BatchNormalization": batch_norm,
    "MaxPool": pool, "AveragePool": pool,
    "Relu": no_attributes, "Sigmoid": no_attributes, "Tanh": no_attributes, "HardSwish": no_attributes,
    "LeakyRelu": leaky_relu, "HardSigmoid": hard_sigmoid, "Clip": clip,
    "Add": no_attributes, "Sub": no_attributes, "Mul": no_attributes, "Div": no_attributes,
    "Concat": concat, "Split": split, "Slice": slice_, "Gather": gather,
    "GlobalAveragePool": no_attributes, "GlobalMaxPool": no_attributes, "ReduceMean": reduce_mean,
    "Flatten": flatten, "Reshape": reshape, "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Transpose": transpose,
    "Gemm": gemm, "MatMul": no_attributes, "Softmax": softmax, "Pad": pad, "Resize": resize,
    "LayerNormalization": layer_norm, "Erf": no_attributes, "Gelu": gelu,
    "Constant": constant, "ConstantOfShape": constant_of_shape, "Identity": no_attributes, "Dropout": dropout,
    "Shape": shape_, "Cast": cast,
}
