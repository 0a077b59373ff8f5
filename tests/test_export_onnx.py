"""Every registry body exports in both DCN flavours and round-trips through ONNX Runtime.

Driven by the registry (``list_bodies()``): a new body is tested without editing this file. To
keep the matrix fast on 2 cores each body is traced once (64x64) and both flavours are finished
from that trace (they differ only in the DCN nodes), and both are checked against one set of
PyTorch reference outputs. The R-50 bodies are traced with dynamic axes; the deeper bodies repeat
one of those structures with more blocks, so they are traced static (a dynamic trace costs twice
as much in torch's symbolic-shape machinery) and checked at the export shape; most bodies get DCN in one stage only (R-50-FPN keeps the
c3-c5 setting of upstream's DCN configs). Offsets are made several pixels large (the offset convs
are rescaled on the verification input scale) so that sampling really leaves the integer grid and
crosses the image border.
"""

from __future__ import annotations

import copy
import zlib
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import helper, numpy_helper
import pytest
import torch

from exporter.onnx import passes as gp
from exporter.onnx import export as oe
from exporter.onnx import op_contract as oc
from exporter.evaluation import verify as vf
from exporter.onnx.metadata import ExportMetadata
from models.backbone import body_info, list_bodies
from models.calibrate import calibrate_offsets
from models.errors import DeformRTError
from models.layers import DFConv2d

SIZE = (64, 64)
OFFSET_STD_PX = 4.0

# DCN settings per body: variety across the matrix (v1/v2, deformable groups, grouped convs),
# fewer DCN stages for the deep bodies. A body not listed gets modulated DCN in its last stage.
DCN = {
    "R-50-C4": ("(False, False, True, False)", False, 2, []),
    "R-50-C5": ("(False, False, False, True)", True, 1, []),
    "R-101-C4": ("(False, True, False, False)", True, 1, []),
    "R-101-C5": ("(False, False, False, True)", False, 1, []),
    "R-50-FPN": ("(False, True, True, True)", True, 1, []),
    "R-50-FPN-RETINANET": ("(False, False, True, True)", True, 2,
                           ["MODEL.RESNETS.NUM_GROUPS", "4", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
                            "MODEL.RESNETS.STRIDE_IN_1X1", "False"]),
    "R-101-FPN": ("(False, False, False, True)", True, 1, []),
    "R-101-FPN-RETINANET": ("(False, False, False, True)", False, 1, []),
}


def dcn_opts(body: str) -> list:
    stages = len(body_info(body)["blocks"])
    last = "(" + ", ".join(["False"] * (stages - 1) + ["True"]) + ("" if stages > 1 else ",") + ")"
    stage_dcn, modulated, groups, extra = DCN.get(body, (last, True, 1, []))
    return ["MODEL.RESNETS.STAGE_WITH_DCN", stage_dcn, "MODEL.RESNETS.WITH_MODULATED_DCN", str(modulated),
            "MODEL.RESNETS.DEFORMABLE_GROUPS", str(groups), *extra]


def pixel_input(cfg, shape, seed: int) -> torch.Tensor:
    stats = SimpleNamespace(pixel_mean=cfg.INPUT.PIXEL_MEAN, pixel_std=cfg.INPUT.PIXEL_STD,
                            to_bgr255=cfg.INPUT.TO_BGR255, color_order=None, size_divisibility=0)
    return torch.from_numpy(vf.random_images(shape, stats, np.random.default_rng(seed)))


def traced_dynamic(body: str) -> bool:
    """Dynamic axes for the R-50 bodies: each body structure (C4, C5, FPN, RetinaNet FPN) once."""
    return body.startswith("R-50-")


def test_every_body_structure_is_traced_dynamic_once():
    dynamic = {b.split("-", 2)[2] for b in list_bodies() if traced_dynamic(b)}
    assert dynamic == {b.split("-", 2)[2] for b in list_bodies()}


@pytest.fixture(scope="module", params=list_bodies())
def exported(request):
    """One body with DCN: the model, one trace, and both flavours finished from it."""
    body = request.param
    cfg = oe.load_config(body, None, dcn_opts(body))
    built = oe.build_model(cfg, seed=zlib.crc32(body.encode()) % 1000)
    offsets = calibrate_offsets(built.model, pixel_input(cfg, (1, 3, *SIZE), seed=1), OFFSET_STD_PX)
    dynamic = traced_dynamic(body)
    raw = oe.trace(built, oe.ExportOptions(input_size=SIZE, dynamic=dynamic))
    flavours = {}
    for dcn_op in ("plugin", "onnx"):
        proto = copy.deepcopy(raw)
        oe.finish_export(proto, built, oe.ExportOptions(dcn_op=dcn_op, input_size=SIZE, dynamic=dynamic))
        flavours[dcn_op] = proto
    references = vf.torch_references(built.model, ExportMetadata.from_model(flavours["onnx"]))
    return SimpleNamespace(body=body, built=built, offsets=offsets, flavours=flavours, references=references,
                           dynamic=dynamic)


@pytest.mark.parametrize("dcn_op", ["plugin", "onnx"])
def test_body_round_trips_through_onnxruntime(exported, dcn_op):
    proto = exported.flavours[dcn_op]
    meta = ExportMetadata.from_model(proto)
    dcn_layers = sum(isinstance(m, DFConv2d) for m in exported.built.model.modules())
    assert dcn_layers > 0 and min(exported.offsets) > 1.0, exported.offsets  # several-pixel offsets
    report = vf.verify(proto.SerializeToString(), None, meta, references=exported.references)
    assert report.passed, report.table()
    shapes = {c.input_shape for c in report.checks}
    expected = {(1, 3, *SIZE), (2, 3, SIZE[0] + 32, SIZE[1] + 64)} if exported.dynamic else {(1, 3, *SIZE)}
    assert shapes == expected
    assert len(report.checks) == 2 * len(meta.output_names)  # a static model is checked twice at its shape
    for c in report.checks:  # outputs have the strides the metadata promises
        stride = meta.output_strides[meta.output_names.index(c.output)]
        assert c.output_shape[0] == c.input_shape[0]
        assert c.output_shape[2] == -(-c.input_shape[2] // stride)


def test_flavours_differ_only_in_dcn_nodes(exported):
    plugin, standard = exported.flavours["plugin"], exported.flavours["onnx"]
    dcn_layers = sum(isinstance(m, DFConv2d) for m in exported.built.model.modules())
    assert [n.op_type for n in plugin.graph.node if gp.is_plugin_deform_conv(n)] == [oc.OP_NAME] * dcn_layers
    assert not any(gp.is_onnx_deform_conv(n) for n in plugin.graph.node)
    assert sum(gp.is_onnx_deform_conv(n) for n in standard.graph.node) == dcn_layers
    assert {o.domain: o.version for o in plugin.opset_import} == {"": 19, oc.OP_DOMAIN: oc.OP_DOMAIN_VERSION}
    assert {o.domain: o.version for o in standard.opset_import} == {"": 19}
    back = copy.deepcopy(plugin)
    gp.to_onnx_op(back)
    assert [(n.op_type, list(n.input), list(n.output)) for n in back.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in standard.graph.node]
    # Our op's weights are channels-last (OHWI); the standard flavour's, and the round trip's, OIHW.
    std_weights = {t.name: numpy_helper.to_array(t) for t in standard.graph.initializer}
    back_weights = {t.name: numpy_helper.to_array(t) for t in back.graph.initializer}
    plugin_weights = {t.name: numpy_helper.to_array(t) for t in plugin.graph.initializer}
    for node in (n for n in plugin.graph.node if gp.is_plugin_deform_conv(n)):
        assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "weight_layout")) == b"OHWI"
        w = node.input[1]
        np.testing.assert_array_equal(plugin_weights[w], std_weights[w].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(back_weights[w], std_weights[w])
    meta_p, meta_o = ExportMetadata.from_model(plugin), ExportMetadata.from_model(standard)
    assert (meta_p.dcn_op, meta_p.dcn_op_version) == ("plugin", "deformrt.DeformConv2d/1")
    assert (meta_o.dcn_op, meta_o.dcn_op_version) == ("onnx", "ai.onnx.DeformConv/19")


def test_graph_is_clean_small_and_dynamic_where_traced_so(exported):
    proto = exported.flavours["plugin"]
    model = exported.built.model
    probe = copy.deepcopy(proto)
    assert gp.cleanup(probe) == {"folded_scale_shift": 0, "dead_nodes": 0, "unused_initializers": 0,
                                 "duplicate_initializers": 0}
    inits = {t.name for t in proto.graph.initializer}
    assert not any(n.op_type == "Constant" for n in proto.graph.node)
    assert not any(all(i in inits or i == "" for i in n.input) for n in proto.graph.node), "unfolded constants"
    # FrozenBN folded into the convs: no per-channel Mul left.
    assert not any(n.op_type == "Mul" for n in proto.graph.node)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ratio = proto.ByteSize() / param_bytes
    assert 0.99 < ratio < 1.02, ratio
    meta = ExportMetadata.from_model(proto)
    (images,) = proto.graph.input
    assert images.name == "images"
    assert [o.name for o in proto.graph.output] == list(model.output_names) == list(meta.output_names)
    assert meta.body == exported.body and meta.export_shape == (1, 3, *SIZE)
    assert meta.output_strides == tuple(model.output_strides)
    assert meta.output_channels == tuple(model.output_channels)
    assert meta.seed == exported.built.seed
    dims = images.type.tensor_type.shape.dim
    if not exported.dynamic:
        assert [d.dim_value for d in dims] == [1, 3, *SIZE] and meta.dynamic_axes == {}
        return
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param
    for out in proto.graph.output:
        odims = out.type.tensor_type.shape.dim
        assert odims[0].dim_param == "batch" and odims[2].dim_param and odims[3].dim_param, out
        assert meta.dynamic_axes[out.name]["0"] == "batch"
    # Output dims are expressed in the input's own symbols.
    symbols = {dims[2].dim_param.split("*")[-1], dims[3].dim_param.split("*")[-1]}
    for out in proto.graph.output:
        assert any(s in out.type.tensor_type.shape.dim[2].dim_param for s in symbols)


def test_plugin_flavour_checks_and_infers_custom_op_shapes(exported):
    proto = copy.deepcopy(exported.flavours["plugin"])
    oe.check_model(proto)
    del proto.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    shapes = {vi.name: vi.type.tensor_type.shape for vi in inferred.graph.value_info}
    inits = {t.name: t for t in proto.graph.initializer}
    dcn_nodes = [n for n in proto.graph.node if gp.is_plugin_deform_conv(n)]
    assert dcn_nodes
    for node in dcn_nodes:
        shape = shapes[node.output[0]]
        assert len(shape.dim) == 4, node.name
        assert shape.dim[1].dim_value == inits[node.input[1]].dims[0]
        assert shape.dim[0].dim_param == "batch" if exported.dynamic else shape.dim[0].dim_value == 1


def test_static_export_fixes_every_dim():
    body = "R-50-C4"
    cfg = oe.load_config(body, None, dcn_opts(body))
    built = oe.build_model(cfg)
    options = oe.ExportOptions(input_size=(64, 96), batch=2, dynamic=False, dcn_op="onnx")
    proto = oe.export_model(built, options)
    for vi in list(proto.graph.input) + list(proto.graph.output):
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 64, 96]
    meta = ExportMetadata.from_model(proto)
    assert meta.dynamic_axes == {} and not meta.dynamic
    report = vf.verify(proto, built.model, meta)
    assert report.passed and {c.input_shape for c in report.checks} == {(2, 3, 64, 96)}


def test_verification_catches_a_wrong_model():
    body = "R-50-C4"
    cfg = oe.load_config(body, None, dcn_opts(body))
    built = oe.build_model(cfg, seed=3)
    calibrate_offsets(built.model, pixel_input(cfg, (1, 3, *SIZE), seed=2), OFFSET_STD_PX)
    proto = oe.export_model(built, oe.ExportOptions(input_size=SIZE, dynamic=False))
    meta = ExportMetadata.from_model(proto)
    references = vf.torch_references(built.model, meta)  # PyTorch runs once for both checks
    assert vf.verify(proto, built.model, meta, references=references).passed
    # Swap the padding of one deformable conv: a plausible exporter bug, caught by verification.
    node = next(n for n in proto.graph.node if gp.is_plugin_deform_conv(n))
    pads = next(a for a in node.attribute if a.name == "pads")
    pads.ints[:] = [0, 2, 2, 0]
    report = vf.verify(proto, built.model, meta, references=references)
    assert not report.passed and report.worst().max_rel > 1e-3
    assert "max rel error" in report.worst_line()


def test_rebuild_model_from_metadata_reproduces_the_weights(exported):
    meta = ExportMetadata.from_model(exported.flavours["onnx"])
    rebuilt = oe.rebuild_model(meta).state_dict()
    original = exported.built.model.state_dict()
    assert rebuilt.keys() == original.keys()
    for name, tensor in original.items():
        if ".offset." not in name:  # the offset convs were rescaled by this test after building
            assert torch.equal(rebuilt[name], tensor), name


def test_ill_conditioned_model_is_judged_against_float64():
    # Upstream's random offset init on pixel-scale input: offsets of tens of pixels that amplify
    # rounding (PyTorch fp32 itself is ~1e-5..1e-4 away from float64 here). A tolerance below that
    # forces the float64 criterion; a real export bug must still fail it.
    cfg = oe.load_config("R-50-C4", None, ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, False)",
                                           "MODEL.RESNETS.WITH_MODULATED_DCN", "True"])
    built = oe.build_model(cfg, seed=0)
    proto = oe.export_model(built, oe.ExportOptions(input_size=(256, 256), dynamic=False))
    meta = ExportMetadata.from_model(proto)
    references = vf.torch_references(built.model, meta, seed=0)
    report = vf.verify(proto, built.model, meta, tolerance=1e-6, references=references)
    assert report.used_float64 and report.passed, report.table()
    for c in report.checks:
        assert c.floor > 1e-6 and c.max_rel_float64 <= vf.FLOOR_FACTOR * c.floor
    assert "torch fp32 vs fp64" in report.table()
    node = next(n for n in proto.graph.node if gp.is_plugin_deform_conv(n))
    next(a for a in node.attribute if a.name == "pads").ints[:] = [0, 2, 2, 0]
    broken = vf.verify(proto, built.model, meta, references=references)
    assert not broken.passed and broken.used_float64
    assert broken.worst().max_rel_float64 > 10 * vf.FLOOR_FACTOR * broken.worst().floor
    assert "against float64 PyTorch" in broken.worst_line()


def test_float64_criterion_on_synthetic_outputs():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((2, 8, 4, 4))
    noisy = lambda rel: exact + rel * np.abs(exact).max() * rng.uniform(-1, 1, exact.shape)  # noqa: E731
    torch32 = noisy(1e-2)  # an ill-conditioned model: fp32 PyTorch 1e-2 away from float64
    ok = vf._check((1, 3, 8, 8), "P", torch32, noisy(1.5e-2), 1e-4, exact)
    assert ok.passed and ok.max_rel > 1e-4 and ok.floor == pytest.approx(1e-2, rel=0.2)
    assert not vf._check((1, 3, 8, 8), "P", torch32, noisy(0.2), 1e-4, exact).passed
    well = noisy(1e-7)  # well-conditioned: the strict tolerance still rules
    assert not vf._check((1, 3, 8, 8), "P", well, noisy(1e-3), 1e-4, exact).passed
    assert vf._check((1, 3, 8, 8), "P", well, noisy(1e-5), 1e-4).passed


def test_a_model_onnxruntime_refuses_is_a_user_error():
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)], ir_version=10)
    with pytest.raises(DeformRTError, match="ONNX Runtime .* cannot load the model .*--opset.*NoSuchOp"):
        vf.ort_session(model)
