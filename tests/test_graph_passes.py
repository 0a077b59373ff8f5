"""Graph passes: DeformConv <-> deformrt.DeformConv2d round trips and the cleanup passes.

Numerics are checked with ONNX Runtime (standard DeformConv) against models.deform_conv2d in
float64, an independent implementation, on fresh random inputs with offsets of several pixels.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from exporter.onnx import passes as gp
from exporter.onnx import schema as onnx_schema
from exporter.onnx import op_contract as oc
from models import deform_conv2d

onnx_schema.register()

# (C_in, C_out, kernel, strides, pads [t, l, b, r], dilations, group, offset_group, bias, mask)
CASES = [
    (4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, False),
    (4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, True, False),
    (4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, True),
    (4, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2, 2, True, True),
    (6, 4, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 2, 3, True, True),
    (8, 8, (3, 2), (2, 1), (1, 0, 1, 0), (2, 1), 4, 2, False, True),
    (4, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 4, True, False),
    (4, 6, (3, 3), (1, 1), (0, 1, 2, 1), (1, 1), 2, 1, True, True),  # asymmetric pads
]


def _case_id(case):
    c_in, c_out, k, s, p, d, g, dg, bias, mask = case
    return f"k{k[0]}x{k[1]}-s{s[0]}{s[1]}-p{''.join(map(str, p))}-d{d[0]}{d[1]}-g{g}-dg{dg}-b{int(bias)}-m{int(mask)}"


def _out(size, k, s, p0, p1, d):
    return oc.output_size(size, k, s, p0, p1, d)


def _standard_model(case, rng, with_defaults_omitted=False, n=2, h=7, w=9):
    """A one-node standard DeformConv model and fresh random feeds (offsets of several pixels)."""
    c_in, c_out, (kh, kw), s, p, d, g, dg, bias, mask = case
    ho, wo = _out(h, kh, s[0], p[0], p[2], d[0]), _out(w, kw, s[1], p[1], p[3], d[1])
    inits = [numpy_helper.from_array(rng.standard_normal((c_out, c_in // g, kh, kw)).astype(np.float32), "W")]
    inputs = ["x", "W", "offset"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "B"))
    if bias or mask:
        inputs.append("B" if bias else "")
    if mask:
        inputs.append("mask")
    attrs = dict(kernel_shape=list((kh, kw)), strides=list(s), pads=list(p), dilations=list(d),
                 group=g, offset_group=dg)
    if with_defaults_omitted:
        attrs = {k: v for k, v in attrs.items() if v not in ([1, 1], [0, 0, 0, 0], 1) and k != "kernel_shape"}
    node = helper.make_node("DeformConv", inputs, ["y"], name="dcn", **attrs)
    graph_inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", c_in, "H", "W_"]),
                    helper.make_tensor_value_info("offset", onnx.TensorProto.FLOAT, ["N", dg * 2 * kh * kw, ho, wo])]
    if mask:
        graph_inputs.append(helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["N", dg * kh * kw, ho, wo]))
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", c_out, ho, wo])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    feeds = {"x": rng.standard_normal((n, c_in, h, w)).astype(np.float32),
             "offset": (4.0 * rng.standard_normal((n, dg * 2 * kh * kw, ho, wo))).astype(np.float32)}
    if mask:
        feeds["mask"] = rng.random((n, dg * kh * kw, ho, wo)).astype(np.float32)
    return model, feeds


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _torch_reference(model, feeds, case):
    """models.deform_conv2d in float64; asymmetric pads applied by zero-padding the input."""
    c_in, c_out, k, s, p, d, g, dg, bias, mask = case
    inits = {t.name: torch.tensor(numpy_helper.to_array(t), dtype=torch.float64) for t in model.graph.initializer}
    x = F.pad(torch.from_numpy(feeds["x"]).double(), (p[1], p[3], p[0], p[2]))
    return deform_conv2d(x, torch.from_numpy(feeds["offset"]).double(), inits["W"], inits.get("B"),
                         stride=s, padding=0, dilation=d,
                         mask=torch.from_numpy(feeds["mask"]).double() if mask else None).numpy()


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_round_trip_preserves_graph_and_numerics(case):
    rng = np.random.default_rng(zlib.crc32(_case_id(case).encode()))
    model, feeds = _standard_model(case, rng)
    c_in, c_out, k, s, p, d, g, dg, bias, mask = case
    (y_before,) = _run(model, feeds)
    np.testing.assert_allclose(y_before, _torch_reference(model, feeds, case), rtol=1e-4, atol=1e-4)
    w_oihw = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W")).copy()

    assert gp.to_plugin_op(model) == 1
    (node,) = model.graph.node
    assert (node.domain, node.op_type, node.name) == (oc.OP_DOMAIN, oc.OP_NAME, "dcn")
    expected_inputs = ["x", "W", "offset"] + (["B"] if bias else []) + (["mask"] if mask else [])
    assert list(node.input) == expected_inputs
    assert len(expected_inputs) == len(oc.input_names(bias, mask))
    attrs = _attrs(node)
    assert attrs == {
        "kernel_shape": list(k), "strides": list(s), "pads": list(p), "dilations": list(d), "group": g,
        "offset_group": dg, "modulated": int(mask), "has_bias": int(bias), "weight_layout": b"OHWI",
        oc.TRT_PLUGIN_VERSION_ATTR: oc.PLUGIN_VERSION.encode(),
        oc.TRT_PLUGIN_NAMESPACE_ATTR: oc.PLUGIN_NAMESPACE.encode(),
    }
    # The weight channels-last, [C_out, kH, kW, C_in/group], transposed once in place.
    (w_ohwi,) = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "W"]
    np.testing.assert_array_equal(w_ohwi, w_oihw.transpose(0, 2, 3, 1))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 19), (oc.OP_DOMAIN, oc.OP_DOMAIN_VERSION)}
    onnx.checker.check_model(model, full_check=True)

    assert gp.to_onnx_op(model) == 1
    (back,) = model.graph.node
    assert (back.domain, back.op_type, back.name, list(back.output)) == ("", "DeformConv", "dcn", ["y"])
    assert list(back.input) == ["x", "W", "offset"] + (["B" if bias else ""] if bias or mask else []) + (
        ["mask"] if mask else [])
    assert _attrs(back) == {"kernel_shape": list(k), "strides": list(s), "pads": list(p), "dilations": list(d),
                            "group": g, "offset_group": dg}
    assert [o.domain for o in model.opset_import] == [""]
    (w_back,) = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "W"]
    np.testing.assert_array_equal(w_back, w_oihw)
    (y_after,) = _run(model, feeds)
    np.testing.assert_array_equal(y_after, y_before)


def test_a_weight_shared_with_another_reader_is_copied_and_one_shared_by_two_dcns_moves_once():
    case = (4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, False)
    model, feeds = _standard_model(case, np.random.default_rng(5))
    (y_before,) = _run(model, feeds)
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    # A second DCN on the same weight, and an Identity reading it too (a graph output).
    second = onnx.NodeProto()
    second.CopyFrom(model.graph.node[0])
    second.name, second.output[0] = "dcn2", "y2"
    model.graph.node.append(second)
    model.graph.output.append(helper.make_tensor_value_info("y2", onnx.TensorProto.FLOAT, None))
    assert gp.to_plugin_op(model) == 2
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert [n.input[1] for n in model.graph.node] == ["W", "W"]
    np.testing.assert_array_equal(weights["W"], w.transpose(0, 2, 3, 1))  # once, not twice
    gp.to_onnx_op(model)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), w)
    ys = _run(model, feeds)
    np.testing.assert_array_equal(ys[0], y_before)
    np.testing.assert_array_equal(ys[1], y_before)

    model, feeds = _standard_model(case, np.random.default_rng(5))
    model.graph.node.append(helper.make_node("Identity", ["W"], ["w_out"]))
    model.graph.output.append(helper.make_tensor_value_info("w_out", onnx.TensorProto.FLOAT, None))
    gp.to_plugin_op(model)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert model.graph.node[0].input[1] == "W.ohwi" and model.graph.node[1].input[0] == "W"
    np.testing.assert_array_equal(weights["W"], w)
    np.testing.assert_array_equal(weights["W.ohwi"], w.transpose(0, 2, 3, 1))


def test_a_weight_computed_in_the_graph_stays_oihw_and_files_without_the_attribute_are_oihw():
    case = (4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 1, False, False)
    model, feeds = _standard_model(case, np.random.default_rng(6))
    (y_before,) = _run(model, feeds)
    model.graph.initializer[0].name = "W0"
    model.graph.node.insert(0, helper.make_node("Identity", ["W0"], ["W"]))
    gp.to_plugin_op(model)
    dcn = next(n for n in model.graph.node if gp.is_plugin_deform_conv(n))
    assert _attrs(dcn)["weight_layout"] == b"OIHW"  # the plugin transposes such a weight on every run
    onnx.checker.check_model(model, full_check=True)
    # A file from before weight_layout: no attribute means OIHW; to_onnx_op leaves the weight as it is.
    kept = [a for a in dcn.attribute if a.name != "weight_layout"]
    del dcn.attribute[:]
    dcn.attribute.extend(kept)
    onnx.checker.check_model(model, full_check=True)
    gp.to_onnx_op(model)
    np.testing.assert_array_equal(_run(model, feeds)[0], y_before)


def test_defaults_are_made_explicit():
    case = (4, 6, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1, True, False)
    rng = np.random.default_rng(1)
    model, feeds = _standard_model(case, rng, with_defaults_omitted=True)
    assert {a.name for a in model.graph.node[0].attribute} == set()
    (y0,) = _run(model, feeds)
    gp.to_onnx_op(model)
    assert _attrs(model.graph.node[0]) == {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [0, 0, 0, 0],
                                           "dilations": [1, 1], "group": 1, "offset_group": 1}
    np.testing.assert_array_equal(_run(model, feeds)[0], y0)
    gp.to_plugin_op(model)
    assert _attrs(model.graph.node[0])["kernel_shape"] == [3, 3]


def test_kernel_shape_unknown_is_an_error():
    rng = np.random.default_rng(2)
    model, _ = _standard_model(CASES[0], rng, with_defaults_omitted=True)
    model.graph.initializer[0].name = "W_elsewhere"  # W's shape can no longer be found
    with pytest.raises(ValueError, match="kernel_shape"):
        gp.to_plugin_op(model)


def test_opset_below_19_is_an_error():
    model, _ = _standard_model(CASES[0], np.random.default_rng(3))
    gp.to_plugin_op(model)
    model.opset_import[0].version = 18
    with pytest.raises(ValueError, match="19"):
        gp.to_onnx_op(model)


def test_plugin_node_with_wrong_input_count_is_rejected():
    model, _ = _standard_model(CASES[3], np.random.default_rng(4))
    gp.to_plugin_op(model)
    node = model.graph.node[0]
    del node.input[-1]  # drop the mask although modulated=1
    with pytest.raises(ValueError, match="inputs"):
        gp.to_onnx_op(model)


# ----------------------------------------------------------------------------------------------
# Cleanup


def _conv_scale_shift_model(rng, shared_conv_output=False, kind="Conv"):
    """x -> Conv (no bias) -> Mul(scale[1,C,1,1]) -> Add(shift[1,C,1,1]) -> Relu -> y, plus clutter:
    a dead branch, an unused initializer and two convs reading identical weights (w2, w2_copy)."""
    c = 6
    w = rng.standard_normal((c, 4, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((c, 4, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(rng.uniform(0.5, 2, (1, c, 1, 1)).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal((1, c, 1, 1)).astype(np.float32), "shift"),
        numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "unused"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(w2.copy(), "w2_copy"),
    ]
    nodes = []
    if kind == "Conv":
        nodes.append(helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]))
    else:
        inits.append(numpy_helper.from_array((3 * rng.standard_normal((1, 18, 5, 5))).astype(np.float32), "off"))
        nodes.append(helper.make_node("DeformConv", ["x", "w", "off"], ["c"], name="conv", pads=[1, 1, 1, 1]))
    nodes += [
        helper.make_node("Mul", ["c", "scale"], ["m"]),
        helper.make_node("Add", ["shift", "m"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
        helper.make_node("Conv", ["x", "w2"], ["y2"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2_copy"], ["y3"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["x"], ["dead"], name="dead"),
    ]
    outputs = ["y", "y2", "y3"] + (["c"] if shared_conv_output else [])
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs], inits)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, [1, c, 5, 5]) for o in outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    return model, {"x": rng.standard_normal((1, 4, 5, 5)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["Conv", "DeformConv", "plugin"])
def test_cleanup_folds_scale_shift_and_removes_clutter(kind):
    rng = np.random.default_rng(5)
    model, feeds = _conv_scale_shift_model(rng, kind="Conv" if kind == "Conv" else "DeformConv")
    expected = _run(model, feeds)
    if kind == "plugin":
        gp.to_plugin_op(model)
    report = gp.cleanup(model)
    assert report == {"folded_scale_shift": 2, "dead_nodes": 1, "unused_initializers": 3,
                      "duplicate_initializers": 1}
    assert [n.op_type for n in model.graph.node] == [
        {"Conv": "Conv", "DeformConv": "DeformConv", "plugin": oc.OP_NAME}[kind], "Relu", "Conv", "Conv"]
    names = {t.name for t in model.graph.initializer}
    assert not names & {"unused", "w2_copy", "scale", "shift"}
    assert [n.input[1] for n in model.graph.node[2:]] == ["w2", "w2"]  # duplicate merged into the first
    if kind == "plugin":
        assert _attrs(model.graph.node[0])["has_bias"] == 1
        onnx.checker.check_model(model, full_check=True)
        gp.to_onnx_op(model)
    got = _run(model, feeds)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())


def test_cleanup_leaves_a_shared_conv_output_alone():
    model, feeds = _conv_scale_shift_model(np.random.default_rng(6), shared_conv_output=True)
    expected = _run(model, feeds)
    report = gp.cleanup(model)
    assert report["folded_scale_shift"] == 0
    assert [n.op_type for n in model.graph.node][:3] == ["Conv", "Mul", "Add"]
    for g, e in zip(_run(model, feeds), expected):
        np.testing.assert_array_equal(g, e)


def test_scale_not_per_channel_is_not_folded():
    model, feeds = _conv_scale_shift_model(np.random.default_rng(7))
    scale = next(t for t in model.graph.initializer if t.name == "scale")
    scale.CopyFrom(numpy_helper.from_array(np.full((1, 1, 5, 5), 2, np.float32), "scale"))  # spatial, not channel
    expected = _run(model, feeds)
    report = gp.cleanup(model)
    assert report["folded_scale_shift"] == 0
    np.testing.assert_array_equal(_run(model, feeds)[0], expected[0])


def test_custom_ops_lists_our_domain():
    model, _ = _standard_model(CASES[1], np.random.default_rng(8))
    assert gp.custom_ops(model) == []
    gp.to_plugin_op(model)
    assert gp.custom_ops(model) == [(oc.OP_DOMAIN, oc.OP_NAME)]
