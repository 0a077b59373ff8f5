"""fp32 -> mixed fp16 ONNX conversion: structure, ONNX checker and shape inference, and ONNX Runtime
numerics against the fp32 graph (ONNX Runtime's CPU provider runs fp16 Conv and DeformConv)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter.onnx import passes as graph_passes
from exporter.onnx import schema as onnx_schema
from exporter.onnx import op_contract as oc
from exporter.onnx.fp16 import FP16_MAX, KEEP_FP32_OPS, convert_to_fp16, model_precision
from models.errors import DeformRTError

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
C = 8


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _dcn_graph(seed: int = 0, flavour: str = "onnx") -> onnx.ModelProto:
    """conv -> relu -> offset conv -> slice offset / sigmoid mask -> modulated DCN -> instance norm
    (kept fp32) -> mul by a Constant -> add -> nearest resize (fp32 scales) -> pool. Outputs: the
    pool and the ReLU, which is also read inside the graph."""
    rng = np.random.default_rng(seed)
    f = lambda *s, scale=1.0: (rng.standard_normal(s) * scale).astype(np.float32)  # noqa: E731
    inits = [_init("W1", f(C, 4, 3, 3, scale=0.3)), _init("B1", f(C)), _init("Wo", f(27, C, 3, 3, scale=0.05)),
             _init("Bo", f(27, scale=0.1)), _init("Wd", f(C, C, 3, 3, scale=0.2)), _init("Bd", f(C)),
             _init("s0", np.array([0], np.int64)), _init("s18", np.array([18], np.int64)),
             _init("s27", np.array([27], np.int64)), _init("ax", np.array([1], np.int64)),
             _init("gs", f(C)), _init("gb", f(C)), _init("scales", np.array([1, 1, 2, 2], np.float32))]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "Wo", "Bo"], ["om"], pads=[1, 1, 1, 1], name="offset_conv"),
        helper.make_node("Slice", ["om", "s0", "s18", "ax"], ["off"], name="offset"),
        helper.make_node("Slice", ["om", "s18", "s27", "ax"], ["ml"], name="mask_logits"),
        helper.make_node("Sigmoid", ["ml"], ["mask"], name="sigmoid"),
        helper.make_node("DeformConv", ["r1", "Wd", "off", "Bd", "mask"], ["d"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1], group=1, offset_group=1, name="dcn"),
        helper.make_node("InstanceNormalization", ["d", "gs", "gb"], ["n"], name="inorm"),
        helper.make_node("Constant", [], ["half"], value=_init("v", np.array(0.5, np.float32)), name="half"),
        helper.make_node("Mul", ["n", "half"], ["nm"], name="mul"),
        helper.make_node("Add", ["nm", "d"], ["a"], name="add"),
        helper.make_node("Resize", ["a", "", "scales"], ["up"], mode="nearest", name="resize"),
        helper.make_node("MaxPool", ["up"], ["out"], kernel_shape=[1, 1], strides=[2, 2], name="pool"),
    ]
    graph = helper.make_graph(nodes, "dcn", [helper.make_tensor_value_info("x", F32, ["N", 4, 12, 12])],
                              [helper.make_tensor_value_info("out", F32, ["N", C, 12, 12]),
                               helper.make_tensor_value_info("r1", F32, ["N", C, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    if flavour == "plugin":
        onnx_schema.register()
        assert graph_passes.to_plugin_op(model) == 1
    return model


def _types(model: onnx.ModelProto) -> dict[str, int]:
    onnx_schema.register()
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    if any(graph_passes.is_plugin_deform_conv(n) for n in model.graph.node):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        graph_passes.to_onnx_op(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _rel_to_peak(expected: np.ndarray, got: np.ndarray) -> float:
    e, g = expected.astype(np.float64), got.astype(np.float64)
    return float(np.max(np.abs(e - g)) / np.max(np.abs(e)))


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


@pytest.mark.parametrize("flavour", ["onnx", "plugin"])
def test_converted_graph_is_valid_and_typed_as_documented(flavour):
    model = _dcn_graph(flavour=flavour)
    result = convert_to_fp16(model)
    fp16 = result.model
    onnx_schema.register()
    onnx.checker.check_model(fp16, full_check=True)
    types = _types(fp16)
    # The interface is unchanged: fp32 in, fp32 out, same names.
    assert [(i.name, i.type.tensor_type.elem_type) for i in fp16.graph.input] == [("x", F32)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in fp16.graph.output] == [("out", F32), ("r1", F32)]
    # Compute nodes read fp16, weights included; the DCN node (either flavour) too.
    dcn = next(n for n in fp16.graph.node if n.name == "dcn")
    for name in ("conv1", "offset_conv", "relu1", "sigmoid", "mul", "add", "pool"):
        node = _node(fp16, name)
        assert all(types[t] == F16 for t in node.input if t), name
    assert all(types[t] == F16 for t in dcn.input)
    # Kept ops and fixed-type inputs stay fp32; index inputs keep their integer type.
    assert all(types[t] == F32 for t in _node(fp16, "inorm").input)
    resize = _node(fp16, "resize")
    assert types[resize.input[0]] == F16 and types[resize.input[2]] == F32
    assert all(types[t] == TensorProto.INT64 for t in _node(fp16, "offset").input[1:])
    # Only the kept op's parameters and Resize's scales remain fp32 initializers.
    fp32_inits = {t.name for t in fp16.graph.initializer if t.data_type == F32}
    assert fp32_inits == {"gs", "gb", "scales"}
    assert result.fp16_nodes == 11 and result.kept_fp32 == {"InstanceNormalization": 1}
    assert result.initializers == 7  # W1 B1 Wo Bo Wd Bd and the Constant
    assert result.casts == 5  # input, around the norm (2), the two outputs
    assert model_precision(fp16) == "fp16" and model_precision(model) == "fp32"


def test_graph_output_read_inside_the_graph_keeps_fp16_internally():
    fp16 = convert_to_fp16(_dcn_graph()).model
    producers = {o: n for n in fp16.graph.node for o in n.output}
    # "r1" is now the fp32 cast of the ReLU's fp16 output, and no node reads the fp32 copy.
    cast = producers["r1"]
    assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == F32
    assert producers[cast.input[0]].name == "relu1"
    assert not any("r1" in n.input for n in fp16.graph.node)


def test_conversion_leaves_the_input_model_untouched():
    model = _dcn_graph()
    before = model.SerializeToString()
    convert_to_fp16(model)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("flavour", ["onnx", "plugin"])
@pytest.mark.parametrize("seed", [1, 2])
def test_onnxruntime_fp16_agrees_with_fp32_within_fp16_tolerance(flavour, seed):
    model = _dcn_graph(seed=seed, flavour=flavour)
    x = np.random.default_rng(100 + seed).standard_normal((2, 4, 12, 12)).astype(np.float32)
    expected = _run(model, x)
    got = _run(convert_to_fp16(model).model, x)
    for e, g in zip(expected, got):
        assert g.dtype == np.float32 and g.shape == e.shape
        rel = _rel_to_peak(e, g)
        # Within fp16 tolerance, and not fp32 in disguise (fp32 would agree to ~1e-7).
        assert 1e-5 < rel < 1e-2, rel


def test_keep_fp32_ops_is_honoured_and_numerics_still_agree():
    model = _dcn_graph(seed=3)
    result = convert_to_fp16(model, keep_fp32_ops=KEEP_FP32_OPS | {"Conv"})
    types = _types(result.model)
    for name in ("conv1", "offset_conv"):
        assert all(types[t] == F32 for t in _node(result.model, name).input)
    assert all(types[t] == F16 for t in _node(result.model, "dcn").input)
    assert result.kept_fp32 == {"Conv": 2, "InstanceNormalization": 1}
    x = np.random.default_rng(7).standard_normal((1, 4, 12, 12)).astype(np.float32)
    for e, g in zip(_run(model, x), _run(result.model, x)):
        assert _rel_to_peak(e, g) < 1e-2


def _scale_graph(value: float) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Cast", ["r"], ["rc"], to=F32),
             helper.make_node("Mul", ["rc", "k"], ["y"])]
    graph = helper.make_graph(nodes, "scale", [helper.make_tensor_value_info("x", F32, [5])],
                              [helper.make_tensor_value_info("y", F32, [5])],
                              [_init("k", np.full(5, value, np.float32))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def test_out_of_range_initializers_are_clipped_and_counted():
    result = convert_to_fp16(_scale_graph(1e6))
    assert result.clipped == 5
    k = next(t for t in result.model.graph.initializer if t.data_type == F16)
    np.testing.assert_array_equal(numpy_helper.to_array(k), np.full(5, FP16_MAX, np.float16))


def test_existing_float_cast_is_retargeted_to_fp16():
    result = convert_to_fp16(_scale_graph(0.25))
    cast = next(n for n in result.model.graph.node if n.input == ["r"] or n.output == ["rc"])
    assert helper.get_attribute_value(cast.attribute[0]) == F16
    x = np.array([-2.0, -0.5, 0.0, 0.75, 3.0], np.float32)
    got = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], np.maximum(x, 0) * 0.25)  # exact in fp16


def test_control_flow_is_rejected():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", F32, [1])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then, name="branch")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", F32, [1])],
                              [helper.make_tensor_value_info("y", F32, [1])])
    with pytest.raises(DeformRTError, match="control flow.*branch"):
        convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))


def test_unknown_op_of_another_domain_is_reported():
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example", name="mystery")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F32, [2])],
                              [helper.make_tensor_value_info("z", F32, [2])])
    graph.node.append(helper.make_node("Relu", ["y"], ["z"]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.example", 1)])
    with pytest.raises(DeformRTError, match="'y'.*mystery.*Mystery"):
        convert_to_fp16(model)


def test_our_op_keeps_contract_attributes():
    fp16 = convert_to_fp16(_dcn_graph(flavour="plugin")).model
    dcn = next(n for n in fp16.graph.node if graph_passes.is_plugin_deform_conv(n))
    names = {a.name for a in dcn.attribute}
    assert set(oc.ATTRIBUTE_NAMES) <= names
    assert {oc.TRT_PLUGIN_VERSION_ATTR, oc.TRT_PLUGIN_NAMESPACE_ATTR} <= names
