"""ONNX graph passes: the two DCN flavours and the cleanup every exported graph goes through.

Flavours. The exporter emits standard ``DeformConv`` (opset 19); :func:`to_plugin_op` rewrites each
of those nodes into our custom ``deformrt.DeformConv2d`` (exporter/onnx/op_contract.py) and
:func:`to_onnx_op` rewrites ours back (ONNX Runtime runs only the standard op). Both write every
attribute explicitly, so the standard flavour carries no defaults either. Our op takes its weight
channels-last (``weight_layout`` "OHWI", what the plugin's fp16 tensor-core kernel reads in place):
:func:`to_plugin_op` transposes each weight initializer once, :func:`to_onnx_op` transposes it back
to ONNX's OIHW. A round trip preserves node names, inputs, outputs, attributes and weights exactly.

Cleanup (:func:`cleanup`): fold a per-channel ``Mul``/``Add`` by constants (FrozenBatchNorm's
scale and shift) into the preceding ``Conv`` / ``DeformConv`` weight and bias, drop nodes that no
graph output depends on, drop unused initializers and merge initializers with identical contents,
so each weight is stored once.

All passes work on ``graph.node`` of the main graph (exported backbones have no subgraphs or
local functions), modify the model in place and return how many things they changed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from exporter.onnx import op_contract as oc

ONNX_DEFORM_CONV = "DeformConv"
ONNX_DEFORM_CONV_OPSET = 19
_ONNX_DOMAINS = ("", "ai.onnx")


def is_onnx_deform_conv(node: onnx.NodeProto) -> bool:
    return node.op_type == ONNX_DEFORM_CONV and node.domain in _ONNX_DOMAINS


def is_plugin_deform_conv(node: onnx.NodeProto) -> bool:
    return node.op_type == oc.OP_NAME and node.domain == oc.OP_DOMAIN


def onnx_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version (0 when not imported)."""
    return max((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS), default=0)


def _set_opset(model: onnx.ModelProto, domain: str, version: Optional[int]) -> None:
    """Import ``domain`` at ``version`` (None: remove the import)."""
    keep = [o for o in model.opset_import if o.domain != domain]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    if version is not None:
        model.opset_import.append(helper.make_opsetid(domain, version))


def _initializer_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for vi in list(model.graph.value_info) + list(model.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if vi.name not in shapes and dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _present(inputs, index: int) -> bool:
    return len(inputs) > index and inputs[index] != ""


def _contract_attrs_of_onnx(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> dict:
    """The contract's attributes for a standard DeformConv node (ONNX defaults made explicit)."""
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    w_shape = shapes.get(node.input[1])
    kernel = list(got["kernel_shape"]) if "kernel_shape" in got else (list(w_shape[2:]) if w_shape else None)
    if kernel is None:
        raise ValueError(f"DeformConv node '{node.name}': kernel_shape is not set and the shape of W "
                         f"'{node.input[1]}' is unknown")
    attrs = {
        "kernel_shape": kernel,
        "strides": list(got.get("strides", [1, 1])),
        "pads": list(got.get("pads", [0, 0, 0, 0])),
        "dilations": list(got.get("dilations", [1, 1])),
        "group": int(got.get("group", 1)),
        "offset_group": int(got.get("offset_group", 1)),
        "modulated": int(_present(node.input, 4)),
        "has_bias": int(_present(node.input, 3)),
    }
    oc.validate_attributes(attrs)
    return attrs


def _contract_attrs_of_plugin(node: onnx.NodeProto) -> dict:
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs = {a.name: (list(got[a.name]) if a.kind == "ints" else got[a.name].decode() if a.kind == "string"
                      else got[a.name])
             for a in oc.ATTRIBUTES if a.name in got}
    oc.validate_attributes(attrs)
    expected = len(oc.input_names(bool(attrs["has_bias"]), bool(attrs["modulated"])))
    if len(node.input) != expected or "" in node.input:
        raise ValueError(f"{oc.OP_NAME} node '{node.name}' has inputs {list(node.input)}; its flags need {expected}")
    return attrs


def _plugin_node(node: onnx.NodeProto, attrs: dict) -> onnx.NodeProto:
    inputs = list(node.input[:3])
    if attrs["has_bias"]:
        inputs.append(node.input[3])
    if attrs["modulated"]:
        inputs.append(node.input[4])
    return helper.make_node(
        oc.OP_NAME, inputs, list(node.output), name=node.name, domain=oc.OP_DOMAIN,
        **{a.name: attrs[a.name] for a in oc.ATTRIBUTES if a.name in attrs},
        **{oc.TRT_PLUGIN_VERSION_ATTR: oc.PLUGIN_VERSION, oc.TRT_PLUGIN_NAMESPACE_ATTR: oc.PLUGIN_NAMESPACE},
    )


def _onnx_node(node: onnx.NodeProto, attrs: dict, inputs: list[str]) -> onnx.NodeProto:
    """A standard DeformConv with inputs X, W, offset[, B or ""][, mask] and explicit attributes."""
    return helper.make_node(
        ONNX_DEFORM_CONV, inputs, list(node.output), name=node.name,
        kernel_shape=attrs["kernel_shape"], strides=attrs["strides"], pads=attrs["pads"],
        dilations=attrs["dilations"], group=attrs["group"], offset_group=attrs["offset_group"],
    )


def _plugin_inputs_to_onnx(node: onnx.NodeProto, attrs: dict) -> list[str]:
    inputs = list(node.input[:3])
    rest = list(node.input[3:])
    bias = rest.pop(0) if attrs["has_bias"] else ""
    if attrs["modulated"]:
        inputs += [bias, rest.pop(0)]
    elif bias:
        inputs.append(bias)
    return inputs


def _set_nodes(model: onnx.ModelProto, new_nodes: list, old_nodes: list) -> int:
    """Make ``new_nodes`` the graph's nodes; return how many differ from ``old_nodes`` (the rewrites)."""
    count = sum(1 for new, old in zip(new_nodes, old_nodes) if new is not old)
    copies = [onnx.NodeProto() for _ in new_nodes]
    for copy, node in zip(copies, new_nodes):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    return count


def _relayout_weights(model: onnx.ModelProto, names: list[str], source: str, target: str) -> dict[str, str]:
    """Each initializer in ``names`` (the W inputs of the nodes being rewritten, in ``source`` layout) in the
    ``target`` layout: transposed in place once when only those nodes read it, else copied under a new name.
    Returns old name -> name of the ``target``-layout weight; a W that is not a 4-D initializer is left out."""
    inits = {t.name: t for t in model.graph.initializer}
    readers = Counter(i for n in model.graph.node for i in n.input)
    rewritten = Counter(names)
    graph_io = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    taken = set(inits) | {o for n in model.graph.node for o in n.output} | graph_io
    renamed: dict[str, str] = {}
    for name in dict.fromkeys(names):
        tensor = inits.get(name)
        if tensor is None or len(tensor.dims) != 4:
            continue
        weight = np.ascontiguousarray(oc.weight_from_oihw(oc.weight_to_oihw(numpy_helper.to_array(tensor), source),
                                                          target))
        if readers[name] == rewritten[name] and name not in graph_io:
            tensor.CopyFrom(numpy_helper.from_array(weight, name))
            renamed[name] = name
        else:
            new = _unique_name(taken, f"{name}.{target.lower()}")
            taken.add(new)
            model.graph.initializer.append(numpy_helper.from_array(weight, new))
            renamed[name] = new
    stale = set(renamed)  # shapes recorded for the old layout
    kept = [v for v in model.graph.value_info if v.name not in stale]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return renamed


def _with_weight(node: onnx.NodeProto, name: str) -> onnx.NodeProto:
    node.input[1] = name
    return node


def to_plugin_op(model: onnx.ModelProto) -> int:
    """Rewrite every standard DeformConv into ``deformrt.DeformConv2d`` (contract attributes plus
    ``plugin_version``/``plugin_namespace``) with its weight in the exported layout (OHWI; a weight that
    is not an initializer stays OIHW, which the plugin transposes on every run); import the ``deformrt``
    domain when any node uses it."""
    shapes = _initializer_shapes(model)
    nodes = list(model.graph.node)
    attrs = [_contract_attrs_of_onnx(n, shapes) if is_onnx_deform_conv(n) else None for n in nodes]
    renamed = _relayout_weights(model, [n.input[1] for n, a in zip(nodes, attrs) if a is not None],
                                oc.WEIGHT_LAYOUT_OIHW, oc.EXPORTED_WEIGHT_LAYOUT)
    new_nodes = []
    for node, node_attrs in zip(nodes, attrs):
        if node_attrs is None:
            new_nodes.append(node)
            continue
        layout = oc.EXPORTED_WEIGHT_LAYOUT if node.input[1] in renamed else oc.WEIGHT_LAYOUT_OIHW
        new = _plugin_node(node, {**node_attrs, "weight_layout": layout})
        new_nodes.append(_with_weight(new, renamed.get(node.input[1], node.input[1])))
    count = _set_nodes(model, new_nodes, nodes)
    if any(is_plugin_deform_conv(n) for n in model.graph.node):
        _set_opset(model, oc.OP_DOMAIN, oc.OP_DOMAIN_VERSION)
    return count


def to_onnx_op(model: onnx.ModelProto) -> int:
    """Rewrite every ``deformrt.DeformConv2d`` into standard DeformConv, and normalise existing
    standard DeformConv nodes to explicit attributes; drop the ``deformrt`` domain import when no
    node needs it. A weight in another layout than ONNX's OIHW is transposed back. Raises ValueError when
    the model's opset is below 19 and DeformConv is used, or such a weight is not an initializer."""
    shapes = _initializer_shapes(model)
    nodes = list(model.graph.node)
    attrs = [_contract_attrs_of_plugin(n) if is_plugin_deform_conv(n) else None for n in nodes]
    moved = {n.input[1]: oc.weight_layout(a) for n, a in zip(nodes, attrs)
             if a is not None and oc.weight_layout(a) != oc.WEIGHT_LAYOUT_OIHW}
    renamed: dict[str, str] = {}
    for layout in sorted(set(moved.values())):
        names = [n.input[1] for n, a in zip(nodes, attrs) if a is not None and moved.get(n.input[1]) == layout]
        renamed.update(_relayout_weights(model, names, layout, oc.WEIGHT_LAYOUT_OIHW))
    missing = sorted(set(moved) - set(renamed))
    if missing:
        raise ValueError(f"{oc.OP_NAME}: the weight {missing[0]!r} is {moved[missing[0]]} and not an initializer; "
                         "it cannot be transposed to ONNX's OIHW")
    new_nodes = []
    for node, node_attrs in zip(nodes, attrs):
        if node_attrs is not None:
            new = _onnx_node(node, node_attrs, _plugin_inputs_to_onnx(node, node_attrs))
            new_nodes.append(_with_weight(new, renamed.get(node.input[1], node.input[1])))
        elif is_onnx_deform_conv(node):
            new_nodes.append(_onnx_node(node, _contract_attrs_of_onnx(node, shapes), list(node.input)))
        else:
            new_nodes.append(node)
    count = _set_nodes(model, new_nodes, nodes)
    if count and onnx_opset(model) < ONNX_DEFORM_CONV_OPSET:
        raise ValueError(f"DeformConv needs opset >= {ONNX_DEFORM_CONV_OPSET}; the model imports "
                         f"opset {onnx_opset(model)}")
    if not any(n.domain == oc.OP_DOMAIN for n in model.graph.node):
        _set_opset(model, oc.OP_DOMAIN, None)
    return count


# ----------------------------------------------------------------------------------------------
# Cleanup


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Drop nodes none of whose outputs reach a graph output."""
    needed = {o.name for o in model.graph.output}
    live = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    removed = len(model.graph.node) - len(live)
    if removed:
        del model.graph.node[:]
        model.graph.node.extend(reversed(live))
    return removed


def remove_unused_initializers(model: onnx.ModelProto) -> int:
    """Drop initializers no node (and no graph output) reads, and value_info of vanished tensors."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    removed = len(model.graph.initializer) - len(keep)
    if removed:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    produced = used | {o for n in model.graph.node for o in n.output}
    vis = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(vis)
    return removed


def _tensor_key(t: onnx.TensorProto) -> tuple:
    return (t.data_type, tuple(t.dims), hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest())


def dedupe_initializers(model: onnx.ModelProto) -> int:
    """Merge initializers with the same dtype, shape and contents into the first one."""
    graph_io = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    keep = []
    for t in model.graph.initializer:
        key = _tensor_key(t)
        if key in first and t.name not in graph_io:
            rename[t.name] = first[key]
        else:
            first.setdefault(key, t.name)
            keep.append(t)
    if rename:
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return len(rename)


def _channel_vector(t: Optional[onnx.TensorProto], channels: int) -> Optional[np.ndarray]:
    """A constant broadcastable as [1, C, 1, 1] (or a scalar) as a length-C vector, else None."""
    if t is None:
        return None
    a = numpy_helper.to_array(t)
    if a.dtype not in (np.float32, np.float64) or a.size not in (1, channels):
        return None
    if a.size == channels and channels > 1:
        shape = list(a.shape)
        if shape not in ([1, channels, 1, 1], [channels, 1, 1]):
            return None
    return np.broadcast_to(a.reshape(-1), (channels,)).astype(a.dtype)


def _is_conv(node: onnx.NodeProto) -> bool:
    return (node.op_type == "Conv" and node.domain in _ONNX_DOMAINS) or is_onnx_deform_conv(node) \
        or is_plugin_deform_conv(node)


def fold_scale_shift(model: onnx.ModelProto) -> int:
    """Fold ``Mul`` by a per-output-channel constant and ``Add`` of one (any chain of them) into
    the preceding Conv / DeformConv / DeformConv2d weight and bias: FrozenBatchNorm's
    ``x * scale + shift``.

    A step is folded only when the conv output feeds nothing else and is not a graph output, and
    the conv's weight and bias are initializers no other node reads. Returns the folds done."""
    nodes = list(model.graph.node)
    inits = {t.name: t for t in model.graph.initializer}
    reads = Counter(i for n in nodes for i in n.input)
    users: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for name in node.input:
            users[name].append(index)
    graph_outputs = {o.name for o in model.graph.output}
    taken = set(inits) | {o for n in nodes for o in n.output} | {i.name for i in model.graph.input}
    removed: set[int] = set()
    for conv in nodes:
        if not _is_conv(conv):
            continue
        w_name, b_name = conv.input[1], _bias_name(conv)
        if w_name not in inits or reads[w_name] != 1 or (b_name and (b_name not in inits or reads[b_name] != 1)):
            continue
        w = b = None
        steps = 0
        while True:
            out = conv.output[0]
            nxt = users.get(out, [])
            if len(nxt) != 1 or out in graph_outputs:
                break
            op = nodes[nxt[0]]
            if op.op_type not in ("Mul", "Add") or op.domain not in _ONNX_DOMAINS or list(op.input).count(out) != 1:
                break
            other = op.input[1] if op.input[0] == out else op.input[0]
            if w is None:
                w = numpy_helper.to_array(inits[w_name])
                b = numpy_helper.to_array(inits[b_name]) if b_name else np.zeros(w.shape[0], w.dtype)
            vec = _channel_vector(inits.get(other), w.shape[0])
            if vec is None:
                break
            if op.op_type == "Mul":
                w = w * vec.astype(w.dtype).reshape(-1, 1, 1, 1)
                b = b * vec.astype(b.dtype)
            else:
                b = b + vec.astype(b.dtype)
            conv.output[0] = op.output[0]  # the conv now produces the Mul/Add output directly
            removed.add(nxt[0])
            steps += 1
        if steps:
            inits[w_name].CopyFrom(numpy_helper.from_array(w, w_name))
            if b_name:
                inits[b_name].CopyFrom(numpy_helper.from_array(b, b_name))
            else:
                b_name = _unique_name(taken, f"{conv.name or conv.output[0]}.bias")
                taken.add(b_name)
                model.graph.initializer.append(numpy_helper.from_array(b, b_name))
                _set_bias(conv, b_name)
    if removed:
        del model.graph.node[:]
        model.graph.node.extend(n for i, n in enumerate(nodes) if i not in removed)
    return len(removed)


def _bias_name(conv: onnx.NodeProto) -> str:
    if is_plugin_deform_conv(conv):
        has_bias = any(a.name == "has_bias" and a.i for a in conv.attribute)
        return conv.input[3] if has_bias else ""
    return conv.input[2 if conv.op_type == "Conv" else 3] if _present(
        conv.input, 2 if conv.op_type == "Conv" else 3) else ""


def _set_bias(conv: onnx.NodeProto, name: str) -> None:
    if is_plugin_deform_conv(conv):
        inputs = list(conv.input)
        inputs.insert(3, name)
        del conv.input[:]
        conv.input.extend(inputs)
        for a in conv.attribute:
            if a.name == "has_bias":
                a.i = 1
        return
    index = 2 if conv.op_type == "Conv" else 3
    inputs = list(conv.input) + [""] * max(0, index + 1 - len(conv.input))
    inputs[index] = name
    del conv.input[:]
    conv.input.extend(inputs)


def _unique_name(taken: set[str], base: str) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def cleanup(model: onnx.ModelProto) -> dict[str, int]:
    """Fold scale/shift into convs, remove dead nodes and unused initializers, merge duplicate
    initializers. Returns what each step changed."""
    report = {"folded_scale_shift": fold_scale_shift(model)}
    report["dead_nodes"] = remove_dead_nodes(model)
    report["unused_initializers"] = remove_unused_initializers(model)
    report["duplicate_initializers"] = dedupe_initializers(model)
    return report


def custom_ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(domain, op_type) of every node outside the ai.onnx domains, sorted, without repeats."""
    return sorted({(n.domain, n.op_type) for n in model.graph.node if n.domain not in _ONNX_DOMAINS})
