"""ONNX in: ``import_model(path_or_proto, batch=None) -> ModelGraph``.

The whole model is checked before anything is built from it: the file loads
(a truncated file or missing external data is one clear error), passes
``onnx.checker``, every operator is supported, and strict shape inference
gives every tensor a static shape once the batch is fixed. Nodes whose inputs
are all constant (the Shape/Gather/Concat arithmetic PyTorch's exporter emits
for reshapes) are evaluated on import with the operators' numpy semantics,
so the graph that comes out has constant Reshape shapes, Slice bounds and
Resize sizes as attributes (see ``convtune.ir.onnx_attributes``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper, numpy_helper

from convtune.ir.evaluate import evaluate
from convtune.ir.graph import GraphError, ModelGraph, Node, TensorInfo
from convtune.ir.onnx_attributes import NORMALISERS, OnnxNode, numpy_dtype

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()
SUPPORTED_OPS = tuple(sorted(NORMALISERS))


def _tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors that may keep their data in external files."""
    graph = proto.graph
    return [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.HasField("t"))]


def load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The model proto with its external data loaded, or one ``GraphError``."""
    if isinstance(model, onnx.ModelProto):
        for tensor in _tensors(model):
            if onnx.external_data_helper.uses_external_data(tensor):
                raise GraphError(f"initializer {tensor.name!r}: its data is in an external file that was not "
                                 "loaded; import the model from its path")
        return model
    path = Path(model)
    if not path.is_file():
        raise GraphError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a corrupt file
        raise GraphError(f"{path}: not a readable ONNX model (truncated or corrupt?): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    for tensor in _tensors(proto):
        if onnx.external_data_helper.uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if not (path.parent / location).is_file():
                raise GraphError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing")
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except Exception as e:  # noqa: BLE001
        raise GraphError(f"{path}: cannot load external data: {e}") from None
    return proto


def _opset(proto: onnx.ModelProto) -> int:
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise GraphError(f"model: ONNX opset {opset} is not supported (opsets {MIN_OPSET} to {MAX_OPSET})")
    return opset


def _check_operators(proto: onnx.ModelProto) -> None:
    """All unsupported operators at once, so one run tells the whole story:
    each operator once, with how many nodes use it and the first few names
    (a transformer block repeated 40 times is one line, not 40)."""
    bad: dict[str, list[str]] = {}
    for i, n in enumerate(proto.graph.node):
        if n.op_type not in NORMALISERS or n.domain not in ("", "ai.onnx"):
            op = f"{(n.domain + '.') if n.domain not in ('', 'ai.onnx') else ''}{n.op_type}"
            bad.setdefault(op, []).append(repr(n.name or f"#{i}"))
    if bad:
        shown = 3
        parts = [f"{op} ({len(names)} node{'s' if len(names) > 1 else ''}: {', '.join(names[:shown])}"
                 f"{', ...' if len(names) > shown else ''})" for op, names in bad.items()]
        raise GraphError(f"unsupported operator{'s' if len(bad) > 1 else ''}: {', '.join(parts)} "
                         f"(supported: {', '.join(SUPPORTED_OPS)})")


def _fix_batch(proto: onnx.ModelProto, batch: int | None) -> None:
    """Give every graph input a static shape: ``batch`` for a dynamic first
    axis; any other dynamic axis, or a missing batch, is an error."""
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise GraphError(f"batch: expected a positive int, got {batch!r}")
    initializers = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise GraphError(f"input {value.name!r}: only tensor inputs are supported")
        if not value.type.tensor_type.HasField("shape"):
            raise GraphError(f"input {value.name!r}: the model gives no shape for it")
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                if axis == 0 and batch is not None and dim.dim_value != batch:
                    raise GraphError(f"batch: input {value.name!r} has a static batch of {dim.dim_value}, "
                                     f"not {batch}")
                continue
            if axis > 0:
                raise GraphError(f"input {value.name!r}: axis {axis} ({dim.dim_param or '?'}) is dynamic; "
                                 "only the batch axis may be")
            if batch is None:
                raise GraphError(f"input {value.name!r}: the batch axis is dynamic ({dim.dim_param or '?'}); "
                                 "give a batch size (batch=N, --batch N)")
            dim.dim_value = batch


def _infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(proto)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        what = "invalid" if isinstance(e, onnx.checker.ValidationError) else "shape inference failed"
        raise GraphError(f"model: {what}: {first}") from None


LARGE_INITIALIZER = 1024
"""Elements above which a float initializer is a weight: converted to numpy on
its own and kept out of the proto that the checker and shape inference see.
Each of those serialises the whole model again (resnet50's 98 MB three times
over, on top of the loaded proto), and of a weight they only need the shape;
data propagation needs the values of small integer tensors alone."""
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _copy_fields(src: Message, dst: Message, skip: tuple[str, ...] = ()) -> None:
    """``dst.CopyFrom(src)`` but for the ``skip`` fields, which stay empty."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _split_weights(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model without its weights (each one a graph input of its type and
    shape instead, so the checker and shape inference still see it), and the
    weights as arrays. ``proto`` itself is left as it was."""
    skeleton = onnx.ModelProto()
    _copy_fields(proto, skeleton, skip=("graph",))
    _copy_fields(proto.graph, skeleton.graph, skip=("initializer",))
    inputs = {v.name for v in proto.graph.input}
    weights: dict[str, np.ndarray] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_type in _FLOATS and int(np.prod(tensor.dims)) > LARGE_INITIALIZER:
            weights[tensor.name] = _array(tensor, f"initializer {tensor.name!r}")
            if tensor.name not in inputs:
                skeleton.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
        else:
            skeleton.graph.initializer.append(tensor)
    return skeleton, weights


def _array(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    numpy_dtype(tensor.data_type, what)
    try:
        return numpy_helper.to_array(tensor)
    except ValueError as e:  # data that does not fill the tensor's dims
        raise GraphError(f"{what}: its data does not match its shape {tuple(tensor.dims)}: {e}") from None


class _Importer:
    def __init__(self, proto: onnx.ModelProto, weights: dict[str, np.ndarray]) -> None:
        self.proto, self.weights, self.opset = proto, weights, _opset(proto)
        self.graph = ModelGraph(proto.graph.name or "model")
        self.value_types = {v.name: v.type for v in (*proto.graph.value_info, *proto.graph.output,
                                                      *proto.graph.input)}
        self.names: set[str] = set()

    def run(self) -> ModelGraph:
        g = self.proto.graph
        for name, array in self.weights.items():
            self.graph.add_constant(name, array)
        for tensor in g.initializer:
            self.graph.add_constant(tensor.name, _array(tensor, f"initializer {tensor.name!r}"))
        for value in g.input:
            if value.name not in self.graph.constants:
                info = self._info(value.name, f"input {value.name!r}")
                self.graph.add_input(value.name, info.shape, info.dtype)
        for i, proto_node in enumerate(g.node):
            self._add(proto_node, i)
        self.graph.outputs = [v.name for v in g.output]
        return self.graph

    def _info(self, name: str, what: str) -> TensorInfo:
        tensor_type = self.value_types[name].tensor_type if name in self.value_types else None
        if tensor_type is None or not tensor_type.HasField("shape"):
            raise GraphError(f"{what}: shape inference gave no static shape")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if min(dims, default=0) < 0:
            raise GraphError(f"{what}: shape inference gave no static shape ({dims})")
        return TensorInfo(tuple(dims), numpy_dtype(tensor_type.elem_type, what))

    def _unique(self, proto_node: onnx.NodeProto, index: int) -> str:
        name = proto_node.name or f"{proto_node.op_type}_{index}"
        while name in self.names:
            name = f"{name}_{index}"
        self.names.add(name)
        return name

    def _add(self, proto_node: onnx.NodeProto, index: int) -> None:
        name = self._unique(proto_node, index)
        node = OnnxNode(proto_node, name, self.opset, self._shape, self.graph.constants.get)
        inputs, attrs = NORMALISERS[proto_node.op_type](node)
        unread = node.unread_attributes()
        if unread:
            raise node.error(f"attribute {unread[0]!r}", "is not supported")
        outputs = tuple(o for o in proto_node.output if o)
        if proto_node.op_type in ("Dropout", "MaxPool", "BatchNormalization"):
            outputs = outputs[:1]  # the optional outputs were refused if used
        new = Node(name, proto_node.op_type, tuple(inputs), outputs, attrs)
        if all(t in self.graph.constants for t in inputs if t) or proto_node.op_type == "Shape":
            self._fold(new)
        else:
            self.graph.add_node(new, {t: self._output_info(proto_node, t, f"node {name!r} ({new.op}): output {t!r}")
                                      for t in outputs})

    def _output_info(self, proto_node: onnx.NodeProto, tensor: str, what: str) -> TensorInfo:
        """From the model's shape inference; where its data propagation fell
        short (shape arithmetic it cannot follow), from the node's own
        inference given the inputs folded to constants here."""
        try:
            return self._info(tensor, what)
        except GraphError:
            pass
        known = [t for t in proto_node.input if t]
        types = {t: helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(self.graph.tensors[t].dtype),
                                                  self.graph.tensors[t].shape) for t in known}
        data = {t: numpy_helper.from_array(self.graph.constants[t], t) for t in known if t in self.graph.constants}
        schema = onnx.defs.get_schema(proto_node.op_type, self.opset, proto_node.domain)
        try:
            inferred = onnx.shape_inference.infer_node_outputs(schema, proto_node, types, data)
        except onnx.shape_inference.InferenceError as e:
            raise GraphError(f"{what}: shape inference failed: {str(e).splitlines()[0]}") from None
        if tensor in inferred:
            self.value_types[tensor] = inferred[tensor]
        return self._info(tensor, what)

    def _shape(self, tensor: str) -> tuple[int, ...]:
        return self.graph.tensors[tensor].shape

    def _fold(self, node: Node) -> None:
        if node.op == "Shape":
            values = [np.array(self._shape(node.inputs[0])[node.attrs["start"]:node.attrs["end"]], np.int64)]
        else:
            values = evaluate(node, [self.graph.constants[t] for t in node.inputs if t])
        for tensor, value in zip(node.outputs, values):
            self.graph.add_constant(tensor, value)


def import_model(model: str | Path | onnx.ModelProto, batch: int | None = None) -> ModelGraph:
    """The model's ``ModelGraph``; a ``GraphError`` naming what is wrong
    (file, operator, attribute, dynamic shape) when it cannot be imported."""
    proto = load_model(model)
    _opset(proto)
    _check_operators(proto)
    skeleton, weights = _split_weights(proto)
    del proto  # a model loaded here is freed before the graph is built
    _fix_batch(skeleton, batch)
    return _Importer(_infer_shapes(skeleton), weights).run()
