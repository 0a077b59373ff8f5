"""fp32 ONNX -> mixed-precision fp16 ONNX, for strongly typed TensorRT builds.

TensorRT 11 has no FP16 builder flag: an fp16 engine is built from a network whose tensors are
already fp16. :func:`convert_to_fp16` produces that network from deformrt's fp32 export:

- graph inputs and outputs stay fp32; a ``Cast`` after each input and before each output moves
  between the two precisions, so callers feed and read the same arrays as with the fp32 model;
- every floating-point initializer a low-precision node reads is stored as fp16 (values beyond
  fp16's range are clipped and counted in the report), and nodes compute in fp16, our
  ``deformrt.DeformConv2d`` op and standard ``DeformConv`` included;
- ops in :data:`KEEP_FP32_OPS` stay fp32, with casts around them: normalisation layers and the
  reductions / powers / exponentials a decomposed normalisation is made of. They accumulate
  statistics over whole feature maps, and a square or a sum of activations easily passes fp16's
  maximum of 65504; TensorRT builds a strongly typed network exactly as typed, so it would not
  rescue them. Conv, DCN, ReLU, pooling, resize, add/mul (frozen BN) and sigmoid are safe in fp16.

Which node inputs change type is read from the ONNX op schemas: an input shares the node's compute
precision when its type variable also types an output (``X`` of Resize, every input of Conv);
inputs with a fixed type (Resize ``scales``) or an independent type variable (Resize ``roi``,
the input of Cast or Shape) keep theirs. Ops from other custom domains are left in fp32.

The conversion is pure ONNX work (no TensorRT), so it is tested on CPU with ONNX Runtime, which
runs fp16 Conv and DeformConv kernels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporter.onnx import op_contract as oc
from exporter.onnx.passes import is_plugin_deform_conv
from models.errors import DeformRTError

FP16_MAX = float(np.finfo(np.float16).max)

KEEP_FP32_OPS: frozenset[str] = frozenset({
    "BatchNormalization", "GroupNormalization", "InstanceNormalization", "LayerNormalization",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Softmax", "LogSoftmax",
})

# Domains whose ops we convert; nodes from any other custom domain keep fp32.
_CONVERTIBLE_DOMAINS = ("", "ai.onnx", oc.OP_DOMAIN)
_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16
_SUFFIX = {_FLOAT: "fp32", _HALF: "fp16"}

# How a node input relates to the node's compute precision.
_FOLLOW, _ANY, _FIXED = "follow", "any", "fixed"


@dataclass
class Fp16Conversion:
    """The converted model and what the conversion did."""

    model: onnx.ModelProto
    fp16_nodes: int = 0
    kept_fp32: Counter = field(default_factory=Counter)  # op type -> nodes left in fp32
    casts: int = 0
    initializers: int = 0  # float initializers stored as fp16
    clipped: int = 0  # initializer values beyond fp16's range, clipped to +-65504

    def summary(self) -> str:
        kept = ", ".join(f"{op} x{n}" for op, n in sorted(self.kept_fp32.items())) or "none"
        return (f"fp16: {self.fp16_nodes} nodes, {self.initializers} initializers, {self.casts} casts; "
                f"kept fp32: {kept}; clipped values: {self.clipped}")


def _opset(model: onnx.ModelProto) -> dict[str, int]:
    return {(imp.domain or ""): imp.version for imp in model.opset_import}


def _schema(node: onnx.NodeProto, opsets: dict[str, int]) -> Optional[onnx.defs.OpSchema]:
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = opsets.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        return None


def _formal(params, index: int):
    """The formal parameter that actual input/output ``index`` binds to (variadic tails repeat)."""
    if index < len(params):
        return params[index]
    last = params[-1] if params else None
    if last is not None and last.option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return last
    return None


def _half_type_vars(schema: onnx.defs.OpSchema) -> set[str]:
    return {c.type_param_str for c in schema.type_constraints if "tensor(float16)" in c.allowed_type_strs}


def _input_roles(node: onnx.NodeProto, schema: Optional[onnx.defs.OpSchema]) -> list[str]:
    """Each input's relation to the compute precision (see the module docstring)."""
    if is_plugin_deform_conv(node):
        return [_FOLLOW] * len(node.input)  # every input of our DCN op shares its type
    if schema is None:
        return [_FIXED] * len(node.input)
    output_types = {p.type_str for p in schema.outputs}
    half = _half_type_vars(schema)
    roles = []
    for i in range(len(node.input)):
        param = _formal(schema.inputs, i)
        ts = param.type_str if param is not None else ""
        roles.append(_FIXED if ts not in half else _FOLLOW if ts in output_types else _ANY)
    return roles


def _output_follows(node: onnx.NodeProto, schema: Optional[onnx.defs.OpSchema], index: int) -> bool:
    """True when float output ``index`` takes the node's compute precision."""
    if is_plugin_deform_conv(node) or node.op_type == "Cast":
        return True  # a Cast's target type is rewritten with the node
    if schema is None:
        return False
    param = _formal(schema.outputs, index)
    input_types = {p.type_str for i in range(len(node.input)) if (p := _formal(schema.inputs, i)) is not None}
    return param is not None and param.type_str in _half_type_vars(schema) and param.type_str in input_types


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor (ONNX shape inference plus initializers and Constant nodes)."""
    from exporter.onnx import schema as onnx_schema

    onnx_schema.register()  # our op's type inference
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception as exc:  # onnx raises InferenceError and others for a broken graph
        raise DeformRTError(f"fp16 conversion: ONNX shape inference failed ({str(exc).splitlines()[0]})") from None
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)
             if vi.type.HasField("tensor_type")}
    types.update({name: t.data_type for name, t in _static_values(g).items()})
    return types


def _static_values(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Tensors whose values are known: initializers and ``Constant(value=...)`` outputs."""
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = a.t
    return values


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    taken.add(candidate)
    return candidate


def convert_to_fp16(model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS,
                    keep_fp32_node: Optional[Callable[[onnx.NodeProto], bool]] = None) -> Fp16Conversion:
    """Return a mixed-precision copy of ``model`` (see the module docstring); ``model`` is unchanged.

    ``keep_fp32_ops`` lists the op types that stay fp32; ``keep_fp32_node``, when given, keeps
    any node it returns True for in fp32 as well (a detector's postprocessing). Raises DeformRTError for graphs the
    conversion does not handle (control-flow subgraphs, tensors of unknown type).
    """
    keep = frozenset(keep_fp32_ops)
    src = model
    model = onnx.ModelProto()
    model.CopyFrom(src)
    graph = model.graph
    opsets = _opset(model)
    for node in graph.node:
        if _has_subgraph(node):
            raise DeformRTError(f"fp16 conversion does not handle control flow (node '{node.name}', op {node.op_type})")
    types = _elem_types(model)
    statics = _static_values(graph)
    report = Fp16Conversion(model=model)

    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {t.name for t in graph.initializer} | {vi.name for vi in graph.input}
    graph_outputs = {o.name for o in graph.output}

    # Pass 1: which nodes compute in fp16, and the precision each tensor is produced in.
    produced: dict[str, int] = {}  # tensor -> element type after conversion (dynamic tensors)
    plans = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output[0] in statics:
            plans.append(None)
            continue
        schema = _schema(node, opsets)
        float_io = any(types.get(t) == _FLOAT for t in (*node.input, *node.output) if t)
        low = (float_io and node.domain in _CONVERTIBLE_DOMAINS and node.op_type not in keep
               and not (keep_fp32_node is not None and keep_fp32_node(node))
               and (schema is not None or is_plugin_deform_conv(node)))
        if float_io and not low:
            report.kept_fp32[node.op_type] += 1
        elif low:
            report.fp16_nodes += 1
        for i, out in enumerate(node.output):
            if not out:
                continue
            if out not in types:
                raise DeformRTError(f"fp16 conversion: the type of tensor '{out}' (node '{node.name}', op "
                                    f"{node.op_type}) is unknown")
            follows = low and types[out] == _FLOAT and _output_follows(node, schema, i)
            produced[out] = _HALF if follows else types[out]
        plans.append((low, _input_roles(node, schema) if low else None))
    for vi in graph.input:
        produced.setdefault(vi.name, types.get(vi.name, 0))

    # Pass 2: rebuild the node list with casts and fp16 copies of static values.
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    available: dict[tuple[str, int], str] = {}  # (tensor, element type) -> name holding it

    def provide(name: str, want: int) -> str:
        key = (name, want)
        if key in available:
            return available[key]
        if name in statics and name not in produced:
            tensor = statics[name]
            if tensor.data_type == want:
                return name
            values = numpy_helper.to_array(tensor).astype(np.float64)
            if want == _HALF:
                report.clipped += int(np.count_nonzero(np.abs(values) > FP16_MAX))
                values = np.clip(values, -FP16_MAX, FP16_MAX)
                report.initializers += 1
            new_name = _unique(f"{name}_{_SUFFIX[want]}", taken)
            new_inits.append(numpy_helper.from_array(values.astype(helper.tensor_dtype_to_np_dtype(want)), new_name))
            available[key] = new_name
            return new_name
        have = produced.get(name, types.get(name))
        if have == want:
            return name
        new_name = _unique(f"{name}_to_{_SUFFIX[want]}", taken)
        new_nodes.append(helper.make_node("Cast", [name], [new_name], to=want, name=_unique(f"Cast_{new_name}", taken)))
        report.casts += 1
        available[key] = new_name
        return new_name

    for node, plan in zip(graph.node, plans):
        if plan is None:  # a Constant: kept as is, converted copies made on demand
            new_nodes.append(node)
            continue
        low, roles = plan
        for i, name in enumerate(node.input):
            if not name or types.get(name) != _FLOAT:
                continue
            if low and roles[i] == _FOLLOW:
                node.input[i] = provide(name, _HALF)
            elif not low or roles[i] == _FIXED:
                node.input[i] = provide(name, _FLOAT)
            # _ANY: the input is read in whatever precision it is produced in
        if low and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == _FLOAT:
                    a.i = _HALF
        boundary = []
        for i, out in enumerate(node.output):
            if out in graph_outputs and produced.get(out) == _HALF:
                inner = _unique(f"{out}_fp16", taken)
                node.output[i] = inner
                boundary.append(helper.make_node("Cast", [inner], [out], to=_FLOAT, name=_unique(f"Cast_{out}", taken)))
                available[(out, _HALF)] = inner
                available[(out, _FLOAT)] = out
            elif out:
                available[(out, produced[out])] = out
        new_nodes.append(node)
        new_nodes.extend(boundary)
        report.casts += len(boundary)

    # Drop static values nothing reads any more (fp32 originals replaced by fp16 copies).
    used = {n for node in new_nodes for n in node.input} | graph_outputs
    kept_nodes = [n for n in new_nodes if not (n.op_type == "Constant" and n.output[0] in statics
                                               and n.output[0] not in used)]
    inits = [t for t in graph.initializer if t.name in used] + new_inits
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]  # stale types; shape inference recomputes them
    return report


def model_precision(model: onnx.ModelProto) -> str:
    """``"fp16"`` when the graph computes in fp16 (fp16 initializers or casts to fp16), else ``"fp32"``."""
    graph = model.graph
    if any(t.data_type == _HALF for t in graph.initializer):
        return "fp16"
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == _HALF for a in node.attribute):
            return "fp16"
    return "fp32"
