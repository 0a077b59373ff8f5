"""The deformrt.DeformConv2d ONNX schema: checker acceptance and shape inference of its output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.shape_inference import InferenceError

from exporter.onnx import schema as onnx_schema
from exporter.onnx import op_contract as oc

onnx_schema.register()


def _attrs(**over):
    a = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1, offset_group=1,
             modulated=1, has_bias=0)
    a.update(over)
    a[oc.TRT_PLUGIN_VERSION_ATTR] = oc.PLUGIN_VERSION
    a[oc.TRT_PLUGIN_NAMESPACE_ATTR] = oc.PLUGIN_NAMESPACE
    return a


def _model(x_shape, offset_shape, mask_shape=None, c_out=8, c_in_per_group=4, kernel=(3, 3), bias=False, **attrs):
    """One DeformConv2d node; the output's value_info is left empty for shape inference to fill."""
    inits = [numpy_helper.from_array(np.ones((c_out, c_in_per_group, *kernel), np.float32), "W")]
    inputs = ["x", "W", "offset"]
    if bias:
        inits.append(numpy_helper.from_array(np.ones(c_out, np.float32), "B"))
        inputs.append("B")
    graph_inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape),
                    helper.make_tensor_value_info("offset", onnx.TensorProto.FLOAT, offset_shape)]
    if mask_shape is not None:
        inputs.append("mask")
        graph_inputs.append(helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, mask_shape))
    attrs = _attrs(kernel_shape=list(kernel), modulated=int(mask_shape is not None), has_bias=int(bias), **attrs)
    node = helper.make_node(oc.OP_NAME, inputs, ["mid"], domain=oc.OP_DOMAIN, name="dcn", **attrs)
    relu = helper.make_node("Relu", ["mid"], ["y"])
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([node, relu], "g", graph_inputs, [out], inits)
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 19), helper.make_opsetid(oc.OP_DOMAIN, oc.OP_DOMAIN_VERSION)])


def _shape_of(model, name):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == name:
            return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in vi.type.tensor_type.shape.dim]
    raise AssertionError(f"no shape inferred for {name}")


def test_register_is_idempotent_and_schema_matches_contract():
    onnx_schema.register()
    schema = onnx.defs.get_schema(oc.OP_NAME, oc.OP_DOMAIN_VERSION, oc.OP_DOMAIN)
    assert set(schema.attributes) == set(oc.ATTRIBUTE_NAMES) | {oc.TRT_PLUGIN_VERSION_ATTR,
                                                               oc.TRT_PLUGIN_NAMESPACE_ATTR}
    assert all(schema.attributes[a.name].required == a.required for a in oc.ATTRIBUTES)
    assert not schema.attributes["weight_layout"].required  # files from before it was added still check
    assert [p.name for p in schema.inputs][:3] == ["X", "W", "offset"]
    assert schema.has_type_and_shape_inference_function


@pytest.mark.parametrize("stride,pad,dil,h,w", [(1, 1, 1, 10, 12), (2, 1, 1, 9, 12), (1, 2, 2, 7, 5), (2, 0, 1, 8, 8)])
def test_static_shape_inference_matches_the_contract_formula(stride, pad, dil, h, w):
    ho, wo = (oc.output_size(s, 3, stride, pad, pad, dil) for s in (h, w))
    model = _model([2, 4, h, w], [2, 18, ho, wo], [2, 9, ho, wo], bias=True,
                   strides=[stride, stride], pads=[pad] * 4, dilations=[dil, dil])
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(model), full_check=True, check_custom_domain=True)
    assert _shape_of(model, "mid") == [2, 8, ho, wo]
    assert _shape_of(model, "y") == [2, 8, ho, wo]  # flows on through standard ops


def test_symbolic_shapes_flow_through():
    # Size-preserving conv: H/W symbols copied from X; batch symbol kept.
    model = _model(["N", 4, "H", "W"], ["N", 18, None, None], None)
    assert _shape_of(model, "mid") == ["N", 8, "H", "W"]
    # Strided conv: spatial dims come from the offset input (same size as the output).
    model = _model(["N", 4, "H", "W"], ["N", 18, "Ho", "Wo"], ["N", 9, "Ho", "Wo"], strides=[2, 2])
    assert _shape_of(model, "mid") == ["N", 8, "Ho", "Wo"]


def test_grouped_conv_checks_channels():
    model = _model([1, 8, 6, 6], [1, 36, 6, 6], None, c_in_per_group=4, group=2, offset_group=2)
    assert _shape_of(model, "mid") == [1, 8, 6, 6]
    bad = _model([1, 8, 6, 6], [1, 36, 6, 6], None, c_in_per_group=4, group=1, offset_group=2)
    with pytest.raises(InferenceError, match="channels"):
        onnx.shape_inference.infer_shapes(bad, strict_mode=True)


@pytest.mark.parametrize("mutate,message", [
    (lambda n: n.input.pop(), "needs 5 inputs .* got 4"),
    (lambda n: [a for a in n.attribute if a.name == "strides"][0].ints.__setitem__(0, 0), "strides"),
    (lambda n: n.attribute.remove([a for a in n.attribute if a.name == "offset_group"][0]), "offset_group"),
])
def test_bad_nodes_fail_inference(mutate, message):
    model = _model([1, 4, 6, 6], [1, 18, 6, 6], [1, 9, 6, 6], bias=True)
    mutate(model.graph.node[0])
    with pytest.raises(InferenceError, match=message):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


def test_wrong_offset_channels_fail_inference():
    model = _model([1, 4, 6, 6], [1, 20, 6, 6], None)
    with pytest.raises(InferenceError, match="offset has 20 channels"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)


def test_checker_rejects_unknown_attribute_in_our_domain():
    model = onnx.shape_inference.infer_shapes(_model([1, 4, 6, 6], [1, 18, 6, 6], [1, 9, 6, 6]))
    onnx.checker.check_model(model, full_check=True, check_custom_domain=True)
    model.graph.node[0].attribute.append(helper.make_attribute("padding_mode", 1))
    with pytest.raises(onnx.checker.ValidationError, match="padding_mode"):
        onnx.checker.check_model(model, full_check=True, check_custom_domain=True)


def test_an_ohwi_weight_is_read_as_channels_last_and_a_bad_layout_fails_inference():
    # W [C_out=8, kH, kW, C_in/group=2] with group 2: 4 input channels. Read as OIHW it would be a 3x2 kernel.
    model = _model([1, 4, 6, 6], [1, 18, 6, 6], None, c_in_per_group=3, kernel=(2, 2), group=2, weight_layout="OHWI")
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(np.ones((8, 3, 3, 2), np.float32), "W"))
    [a for a in model.graph.node[0].attribute if a.name == "kernel_shape"][0].ints[:] = [3, 3]
    assert _shape_of(model, "mid") == [1, 8, 6, 6]
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(model), full_check=True, check_custom_domain=True)
    [a for a in model.graph.node[0].attribute if a.name == "weight_layout"][0].s = b"OIHW"
    with pytest.raises(InferenceError, match="kernel_shape"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    [a for a in model.graph.node[0].attribute if a.name == "weight_layout"][0].s = b"HWIO"
    with pytest.raises(InferenceError, match="weight_layout"):
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
