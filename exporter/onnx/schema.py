"""ONNX schema and shape inference for our custom op ``deformrt.DeformConv2d``.

:func:`register` adds an ``onnx.defs`` OpSchema built from :mod:`exporter.onnx.op_contract` (same
names, same attributes) with a Python type-and-shape inference function, so
``onnx.checker.check_model(full_check=True)`` accepts our nodes and
``onnx.shape_inference.infer_shapes`` knows their output shapes, symbolic dimensions included.
Registration is process-wide and idempotent; modules that build or check plugin-flavour graphs
call it before touching them.

Input layout: ``X, W, offset`` then the optional inputs declared by the node's flags, ``B`` when
``has_bias=1`` and ``mask`` when ``modulated=1`` (never empty names). ONNX schemas cannot make an
input's position depend on an attribute, so the schema declares the two optional inputs as one
variadic tail and the inference function checks its length against the flags.
"""

from __future__ import annotations

import threading

import onnx
import onnx.defs
from onnx.shape_inference import InferenceError

from exporter.onnx import op_contract as oc

_S = onnx.defs.OpSchema
_lock = threading.Lock()

_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"]


def _attr_values(ctx) -> dict:
    """The node's contract attributes as python ints / int lists / strings (optional ones only when
    present); InferenceError when invalid."""
    attrs = {}
    for a in oc.ATTRIBUTES:
        proto = ctx.get_attribute(a.name)
        if proto is None:
            if not a.required:
                continue
            raise InferenceError(f"{oc.OP_NAME}: attribute '{a.name}' is missing ({a.doc})")
        attrs[a.name] = list(proto.ints) if a.kind == "ints" else proto.s.decode() if a.kind == "string" else proto.i
    try:
        oc.validate_attributes(attrs)
    except ValueError as exc:
        raise InferenceError(str(exc)) from None
    return attrs


def _dims(type_proto: onnx.TypeProto):
    """The shape's dims (TensorShapeProto.Dimension list) or None when the rank is unknown."""
    tensor = type_proto.tensor_type
    return list(tensor.shape.dim) if tensor.HasField("shape") else None


def _known(dim) -> bool:
    return dim.HasField("dim_value")


def _spatial_dim(out_dim, x_dim, offset_dim, kernel, stride, pad_begin, pad_end, dilation) -> None:
    """Fill one spatial output dim: computed from X when static, else taken from the offset
    input (same spatial size as Y), else X's symbol when the conv preserves size."""
    if _known(x_dim):
        out_dim.dim_value = oc.output_size(x_dim.dim_value, kernel, stride, pad_begin, pad_end, dilation)
    elif offset_dim is not None and (_known(offset_dim) or offset_dim.HasField("dim_param")):
        out_dim.CopyFrom(offset_dim)
    elif stride == 1 and pad_begin + pad_end == dilation * (kernel - 1) and x_dim.HasField("dim_param"):
        out_dim.CopyFrom(x_dim)


def _infer(ctx) -> None:
    """Type and shape inference for one DeformConv2d node (see the op contract for shapes)."""
    attrs = _attr_values(ctx)
    expected = len(oc.input_names(bool(attrs["has_bias"]), bool(attrs["modulated"])))
    if ctx.get_num_inputs() != expected:
        raise InferenceError(
            f"{oc.OP_NAME}: has_bias={attrs['has_bias']}, modulated={attrs['modulated']} needs {expected} inputs "
            f"({', '.join(oc.input_names(bool(attrs['has_bias']), bool(attrs['modulated'])))}), "
            f"got {ctx.get_num_inputs()}")
    x_type = ctx.get_input_type(0)
    out = onnx.TypeProto()
    out.tensor_type.elem_type = x_type.tensor_type.elem_type
    x, w = _dims(x_type), _dims(ctx.get_input_type(1))
    offset = _dims(ctx.get_input_type(2))
    for name, dims in (("X", x), ("W", w), ("offset", offset)):
        if dims is not None and len(dims) != 4:
            raise InferenceError(f"{oc.OP_NAME}: input {name} must be 4-D, got rank {len(dims)}")
    if x is None:
        ctx.set_output_type(0, out)
        return
    kh, kw = attrs["kernel_shape"]
    if w is not None:
        layout = oc.weight_layout(attrs)
        w_kh, w_kw, w_c = (w[1], w[2], w[3]) if layout == oc.WEIGHT_LAYOUT_OHWI else (w[2], w[3], w[1])
        if _known(w_kh) and _known(w_kw) and (w_kh.dim_value, w_kw.dim_value) != (kh, kw):
            raise InferenceError(f"{oc.OP_NAME}: W ({layout}) is {w_kh.dim_value}x{w_kw.dim_value} but kernel_shape "
                                 f"is {kh}x{kw}")
        if _known(x[1]) and _known(w_c) and x[1].dim_value != w_c.dim_value * attrs["group"]:
            raise InferenceError(f"{oc.OP_NAME}: X has {x[1].dim_value} channels, W ({layout}) expects "
                                 f"{w_c.dim_value} x group {attrs['group']}")
    offset_channels = attrs["offset_group"] * 2 * kh * kw
    if offset is not None and _known(offset[1]) and offset[1].dim_value != offset_channels:
        raise InferenceError(f"{oc.OP_NAME}: offset has {offset[1].dim_value} channels, expected "
                             f"offset_group*2*kH*kW = {offset_channels}")
    dims = out.tensor_type.shape.dim
    n, c, h, wd = (dims.add() for _ in range(4))
    n.CopyFrom(x[0])
    if w is not None:
        c.CopyFrom(w[0])
    s, p, d = attrs["strides"], attrs["pads"], attrs["dilations"]
    _spatial_dim(h, x[2], offset[2] if offset else None, kh, s[0], p[0], p[2], d[0])
    _spatial_dim(wd, x[3], offset[3] if offset else None, kw, s[1], p[1], p[3], d[1])
    ctx.set_output_type(0, out)


def _build_schema() -> onnx.defs.OpSchema:
    attr_type = {"int": _S.AttrType.INT, "ints": _S.AttrType.INTS, "string": _S.AttrType.STRING}
    attributes = [_S.Attribute(a.name, attr_type[a.kind], a.doc, required=a.required) for a in oc.ATTRIBUTES]
    attributes += [
        _S.Attribute(oc.TRT_PLUGIN_VERSION_ATTR, _S.AttrType.STRING,
                     f"TensorRT plugin version ({oc.PLUGIN_VERSION})", required=True),
        _S.Attribute(oc.TRT_PLUGIN_NAMESPACE_ATTR, _S.AttrType.STRING,
                     f"TensorRT plugin namespace ({oc.PLUGIN_NAMESPACE})", required=True),
    ]
    schema = _S(
        oc.OP_NAME, oc.OP_DOMAIN, oc.OP_DOMAIN_VERSION,
        doc="Deformable 2-D convolution, DCN v1 and modulated v2 (the contract: exporter/onnx/op_contract.py).",
        inputs=[
            _S.FormalParameter(oc.INPUT_X, "T", "input [N, C_in, H, W]"),
            _S.FormalParameter(oc.INPUT_W, "T", "weight [C_out, C_in/group, kH, kW] (weight_layout OIHW, the "
                               "default) or [C_out, kH, kW, C_in/group] (OHWI)"),
            _S.FormalParameter(oc.INPUT_OFFSET, "T", "offset [N, offset_group*2*kH*kW, H_out, W_out]"),
            _S.FormalParameter("B_then_mask", "T", "B [C_out] when has_bias=1, then mask "
                               "[N, offset_group*kH*kW, H_out, W_out] when modulated=1",
                               param_option=_S.FormalParameterOption.Variadic, min_arity=0),
        ],
        outputs=[_S.FormalParameter("Y", "T", "output [N, C_out, H_out, W_out]")],
        type_constraints=[("T", _FLOAT_TYPES, "floating-point tensors")],
        attributes=attributes,
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def register() -> None:
    """Register the ``deformrt.DeformConv2d`` schema with onnx (once per process)."""
    with _lock:
        if not onnx.defs.has(oc.OP_NAME, oc.OP_DOMAIN):
            onnx.defs.register_schema(_build_schema())
