"""The deformable-convolution op contract: defined here once, shared by exporter and plugin.

The exporter writes nodes that follow this contract; the TensorRT plugin in ``plugins/`` reads
the same names from ``plugins/include/deformrt/opContract.h``, a header generated from this
module (``python -m exporter.onnx.op_contract --write-header``). ``tests/test_op_contract.py``
fails when the committed header and this module drift apart.

Node layout (ONNX input order, as standard ``DeformConv``; optional inputs present only when
their flag attribute says so, never as empty names)::

    Y = deformrt.DeformConv2d(X, W, offset[, B][, mask])

- X      [N, C_in, H, W]
- W      [C_out, C_in / group, kH, kW] (weight_layout "OIHW", the default when the attribute is absent) or
         [C_out, kH, kW, C_in / group] (weight_layout "OHWI", channels-last: what the exporter writes, so the
         plugin's fp16 tensor-core kernel reads it in place)
- offset [N, offset_group * 2 * kH * kW, H_out, W_out]; channel g*2K + 2k + d, d=0 for dy, 1 for dx
- B      [C_out]                                    (has_bias = 1)
- mask   [N, offset_group * kH * kW, H_out, W_out]   (modulated = 1), already sigmoid-ed
- Y      [N, C_out, H_out, W_out]; H_out = (H + pad_top + pad_bottom - (dil_h*(kH-1)+1)) // s_h + 1

Sampling is bilinear over a zero-padded image (ONNX DeformConv / torchvision semantics).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

OP_NAME = "DeformConv2d"
OP_DOMAIN = "deformrt"
OP_DOMAIN_VERSION = 1
PLUGIN_NAME = OP_NAME
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "deformrt"
# Node attributes TensorRT's ONNX parser reads to pick the plugin creator.
TRT_PLUGIN_VERSION_ATTR = "plugin_version"
TRT_PLUGIN_NAMESPACE_ATTR = "plugin_namespace"


WEIGHT_LAYOUT_OIHW = "OIHW"
WEIGHT_LAYOUT_OHWI = "OHWI"
WEIGHT_LAYOUTS = (WEIGHT_LAYOUT_OIHW, WEIGHT_LAYOUT_OHWI)
# What the exporter writes: the layout the fp16 tensor-core kernel reads (plugins/include/deformrt/deformConvDesc.h).
EXPORTED_WEIGHT_LAYOUT = WEIGHT_LAYOUT_OHWI


@dataclass(frozen=True)
class Attribute:
    name: str
    kind: str  # "int", "ints" or "string"
    length: int  # number of values (1 for "int" and "string")
    doc: str
    required: bool = True
    default: object = None  # the value an absent optional attribute means
    values: tuple = ()  # the allowed values of a "string" attribute


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("kernel_shape", "ints", 2, "[kH, kW]"),
    Attribute("strides", "ints", 2, "[stride_h, stride_w], each >= 1"),
    Attribute("pads", "ints", 4, "[top, left, bottom, right], each >= 0 (ONNX order)"),
    Attribute("dilations", "ints", 2, "[dil_h, dil_w], each >= 1"),
    Attribute("group", "int", 1, "convolution groups; divides C_in and C_out"),
    Attribute("offset_group", "int", 1, "deformable groups; divides C_in"),
    Attribute("modulated", "int", 1, "1: a mask input follows (DCNv2); 0: DCNv1"),
    Attribute("has_bias", "int", 1, "1: a bias input B follows offset"),
    Attribute("weight_layout", "string", 1, "layout of W: OIHW [C_out, C_in/group, kH, kW] or OHWI "
              "[C_out, kH, kW, C_in/group]; absent: OIHW", required=False, default=WEIGHT_LAYOUT_OIHW,
              values=WEIGHT_LAYOUTS),
)
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
INT_ATTRIBUTES: tuple[Attribute, ...] = tuple(a for a in ATTRIBUTES if a.kind in ("int", "ints"))

INPUT_X, INPUT_W, INPUT_OFFSET = "X", "W", "offset"
INPUT_B, INPUT_MASK = "B", "mask"


def input_names(has_bias: bool, modulated: bool) -> list[str]:
    """The node's inputs in order for the given flags."""
    names = [INPUT_X, INPUT_W, INPUT_OFFSET]
    if has_bias:
        names.append(INPUT_B)
    if modulated:
        names.append(INPUT_MASK)
    return names


def output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int) -> int:
    """Spatial output size along one axis (the plugin computes the same expression)."""
    return (size + pad_begin + pad_end - (dilation * (kernel - 1) + 1)) // stride + 1


def weight_layout(attrs: dict) -> str:
    """The node's weight layout (the default, OIHW, when the attribute is absent)."""
    return attrs.get("weight_layout", WEIGHT_LAYOUT_OIHW)


# Axis orders between the layouts (numpy transpose / torch permute).
_OHWI_TO_OIHW = (0, 3, 1, 2)
_OIHW_TO_OHWI = (0, 2, 3, 1)


def _reorder(weight, axes: tuple[int, ...]):
    return weight.permute(*axes) if hasattr(weight, "permute") else weight.transpose(axes)


def weight_to_oihw(weight, layout: str):
    """``weight`` (a numpy array or torch tensor in ``layout``) as [C_out, C_in/group, kH, kW] (a view)."""
    return weight if layout == WEIGHT_LAYOUT_OIHW else _reorder(weight, _OHWI_TO_OIHW)


def weight_from_oihw(weight, layout: str):
    """An OIHW ``weight`` (a numpy array or torch tensor) in ``layout`` (a view)."""
    return weight if layout == WEIGHT_LAYOUT_OIHW else _reorder(weight, _OIHW_TO_OHWI)


def validate_attributes(attrs: dict) -> None:
    """Raise ValueError naming the attribute when ``attrs`` breaks the contract."""
    for a in ATTRIBUTES:
        if a.name not in attrs:
            if not a.required:
                continue
            raise ValueError(f"{OP_NAME}: attribute '{a.name}' is missing ({a.doc})")
        v = attrs[a.name]
        if a.kind == "string":
            if v not in a.values:
                raise ValueError(f"{OP_NAME}: attribute '{a.name}' must be one of {', '.join(a.values)}, got {v!r}")
            continue
        vals = list(v) if a.kind == "ints" else [v]
        if len(vals) != a.length or not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
            raise ValueError(f"{OP_NAME}: attribute '{a.name}' must be {a.length} integer(s) ({a.doc}), got {v!r}")
    if any(x < 1 for x in attrs["kernel_shape"]):
        raise ValueError(f"{OP_NAME}: attribute 'kernel_shape' must be >= 1, got {attrs['kernel_shape']}")
    if any(x < 1 for x in attrs["strides"]):
        raise ValueError(f"{OP_NAME}: attribute 'strides' must be >= 1, got {attrs['strides']}")
    if any(x < 0 for x in attrs["pads"]):
        raise ValueError(f"{OP_NAME}: attribute 'pads' must be >= 0, got {attrs['pads']}")
    if any(x < 1 for x in attrs["dilations"]):
        raise ValueError(f"{OP_NAME}: attribute 'dilations' must be >= 1, got {attrs['dilations']}")
    for name in ("group", "offset_group"):
        if attrs[name] < 1:
            raise ValueError(f"{OP_NAME}: attribute '{name}' must be >= 1, got {attrs[name]}")
    for name in ("modulated", "has_bias"):
        if attrs[name] not in (0, 1):
            raise ValueError(f"{OP_NAME}: attribute '{name}' must be 0 or 1, got {attrs[name]}")


# ----------------------------------------------------------------------------------------------
# C++ header generation


def _cpp_ident(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def render_header() -> str:
    """The C++ header the plugin compiles against, generated from this module."""
    lines = [
        "// Generated by `python -m exporter.onnx.op_contract --write-header` from exporter/onnx/op_contract.py.",
        "// Do not edit: change the Python module and regenerate (tests/test_op_contract.py checks it).",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace deformrt",
        "{",
        "namespace contract",
        "{",
        f'constexpr char const* kOpName = "{OP_NAME}";',
        f'constexpr char const* kOpDomain = "{OP_DOMAIN}";',
        f"constexpr int32_t kOpDomainVersion = {OP_DOMAIN_VERSION};",
        f'constexpr char const* kPluginName = "{PLUGIN_NAME}";',
        f'constexpr char const* kPluginVersion = "{PLUGIN_VERSION}";',
        f'constexpr char const* kPluginNamespace = "{PLUGIN_NAMESPACE}";',
        "",
        "// Attributes (plugin fields), in contract order.",
    ]
    for a in ATTRIBUTES:
        ident = _cpp_ident(a.name)
        lines.append(f'constexpr char const* kAttr{ident} = "{a.name}"; // {a.doc}')
        if a.kind == "string":
            lines.append(f"// {a.name}: a STRING attribute (a kCHAR field), optional.")
        else:
            lines.append(f"constexpr int32_t kAttr{ident}Length = {a.length};")
    lines += [
        f"constexpr int32_t kNumAttributes = {len(ATTRIBUTES)};",
        f"constexpr int32_t kNumIntAttributes = {len(INT_ATTRIBUTES)}; // the integer attributes come first",
        "",
        "// Values of weight_layout (the weight's memory layout; deformrt/deformConvDesc.h).",
        f'constexpr char const* kWeightLayoutOIHW = "{WEIGHT_LAYOUT_OIHW}"; // the default when the attribute is absent',
        f'constexpr char const* kWeightLayoutOHWI = "{WEIGHT_LAYOUT_OHWI}"; // what the exporter writes',
        "",
        "// Inputs: X, W, offset, then B when has_bias, then mask when modulated.",
        "constexpr int32_t kInputX = 0;",
        "constexpr int32_t kInputW = 1;",
        "constexpr int32_t kInputOffset = 2;",
        "constexpr int32_t kMinInputs = 3;",
        "constexpr int32_t kMaxInputs = 5;",
        "constexpr int32_t biasInputIndex(bool hasBias) { return hasBias ? 3 : -1; }",
        "constexpr int32_t maskInputIndex(bool hasBias, bool modulated) { return modulated ? (hasBias ? 4 : 3) : -1; }",
        "constexpr int32_t numInputs(bool hasBias, bool modulated) { return 3 + (hasBias ? 1 : 0) + (modulated ? 1 : 0); }",
        "",
        "} // namespace contract",
        "} // namespace deformrt",
        "",
    ]
    return "\n".join(lines)


HEADER_PATH = Path(__file__).resolve().parents[2] / "plugins" / "include" / "deformrt" / "opContract.h"


def main(argv: list[str] | None = None) -> int:
    from exporter.util.usage import ScriptParser, first_paragraph

    parser = ScriptParser(prog="python -m exporter.onnx.op_contract", description=first_paragraph(__doc__))
    parser.add_argument("--write-header", action="store_true", help=f"write {HEADER_PATH}")
    args = parser.parse_args(argv)
    text = render_header()
    if args.write_header:
        HEADER_PATH.parent.mkdir(parents=True, exist_ok=True)
        tmp = HEADER_PATH.with_suffix(".h.tmp")
        tmp.write_text(text)
        tmp.replace(HEADER_PATH)
        print(HEADER_PATH)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
