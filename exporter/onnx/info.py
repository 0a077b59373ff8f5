"""What an ONNX file holds, for ``deformrt info``: inputs, outputs, opsets, custom ops, metadata.

:func:`inspect_model` returns a JSON-ready dict with stable keys (the ``--json`` output);
:func:`format_info` renders it for people. Any ONNX file works; files written by
``deformrt export`` also get their ``deformrt.*`` metadata decoded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Union

import onnx
from onnx import helper

from exporter.onnx import op_contract as oc
from exporter.onnx import passes as gp
from exporter.onnx.metadata import PREFIX, ExportMetadata, read_onnx

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _tensor(vi: onnx.ValueInfoProto) -> dict:
    t = vi.type.tensor_type
    shape = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
    return {"name": vi.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else None,
            "shape": shape}


def inspect_model(path: Union[str, Path]) -> dict:
    """Describe the ONNX file at ``path``. Keys: file, size_bytes, ir_version, producer,
    opset_imports {domain: version}, inputs/outputs [{name, dtype, shape}], nodes, op_counts,
    custom_ops [{domain, op_type, count}], parameters (elements in floating-point initializers),
    initializer_bytes, metadata (decoded ``deformrt.*`` or null), metadata_props (other keys)."""
    path = Path(path)
    model = read_onnx(path)
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    parameters = 0
    initializer_bytes = 0
    for t in graph.initializer:
        count = 1
        for d in t.dims:
            count *= d
        if t.data_type in _FLOAT_TYPES:
            parameters += count
        initializer_bytes += count * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    props = {p.key: p.value for p in model.metadata_props}
    metadata = ExportMetadata.from_props(props).to_dict() if any(k.startswith(PREFIX) for k in props) else None
    custom = Counter((n.domain, n.op_type) for n in graph.node if n.domain not in ("", "ai.onnx"))
    # Our op's weight layout per node (OIHW when the attribute is absent, as in files from before it).
    layouts = Counter(next((helper.get_attribute_value(a).decode() for a in n.attribute if a.name == "weight_layout"),
                           oc.WEIGHT_LAYOUT_OIHW) for n in graph.node if gp.is_plugin_deform_conv(n))
    return {
        "file": str(path.resolve()),
        "size_bytes": path.stat().st_size,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset_imports": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [_tensor(i) for i in graph.input if i.name not in initializer_names],
        "outputs": [_tensor(o) for o in graph.output],
        "nodes": len(graph.node),
        "op_counts": dict(sorted(Counter(n.op_type for n in graph.node).items())),
        "custom_ops": [{"domain": d, "op_type": op, "count": c} for (d, op), c in sorted(custom.items())],
        "dcn_nodes": sum(1 for n in graph.node if gp.is_onnx_deform_conv(n) or gp.is_plugin_deform_conv(n)),
        "dcn_weight_layouts": dict(sorted(layouts.items())),
        "parameters": parameters,
        "initializer_bytes": initializer_bytes,
        "metadata": metadata,
        "metadata_props": {k: v for k, v in sorted(props.items()) if not k.startswith(PREFIX)},
    }


def _shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def format_info(info: dict) -> str:
    """Human-readable rendering of :func:`inspect_model`'s dict."""
    lines = [
        f"file:        {info['file']} ({info['size_bytes'] / 1e6:.1f} MB)",
        f"producer:    {info['producer'] or '-'} (IR version {info['ir_version']})",
        "opsets:      " + ", ".join(f"{d} {v}" for d, v in info["opset_imports"].items()),
        f"parameters:  {info['parameters']:,} ({info['initializer_bytes'] / 1e6:.1f} MB of initializers)",
        f"nodes:       {info['nodes']} (" + ", ".join(f"{op} {c}" for op, c in info["op_counts"].items()) + ")",
        "custom ops:  " + (", ".join(f"{c['domain']}.{c['op_type']} x{c['count']}" for c in info["custom_ops"])
                           or "none"),
        *(["DCN weights: " + ", ".join(f"{layout} x{c}" for layout, c in info["dcn_weight_layouts"].items())]
          if info["dcn_weight_layouts"] else []),
        "inputs:",
        *(f"  {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in info["inputs"]),
        "outputs:",
        *(f"  {t['name']}: {t['dtype']} {_shape(t['shape'])}" for t in info["outputs"]),
    ]
    meta = info["metadata"]
    if meta is not None:
        lines.append("deformrt metadata:")
        for key, value in meta.items():
            if key == "config":
                value = f"({len(value.splitlines())} lines of YAML; --json shows it)"
            elif not isinstance(value, str):
                value = json.dumps(value)
            lines.append(f"  {key}: {value or '-'}")
    for key, value in info["metadata_props"].items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
