"""The deformrt.* ONNX metadata schema, and rebuilding a PyTorch model from it."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from exporter.onnx import export as oe
from exporter.onnx.metadata import ExportMetadata
from models.errors import DeformRTError

KEYS = {
    "deformrt.version", "deformrt.body", "deformrt.config", "deformrt.weights", "deformrt.weights_sha256",
    "deformrt.output_names", "deformrt.output_strides", "deformrt.output_channels", "deformrt.pixel_mean",
    "deformrt.pixel_std", "deformrt.to_bgr255", "deformrt.color_order", "deformrt.size_divisibility",
    "deformrt.dcn_op", "deformrt.dcn_op_version", "deformrt.dynamic_axes", "deformrt.export_shape",
    "deformrt.init_seed",
}


def _meta(**over) -> ExportMetadata:
    values = dict(
        version="0.1.0", body="R-50-FPN", config="MODEL:\n  BACKBONE: {CONV_BODY: R-50-FPN}\n", weights="seed:7",
        weights_sha256="", output_names=("P2", "P3"), output_strides=(4, 8), output_channels=(256, 256),
        pixel_mean=(102.9801, 115.9465, 122.7717), pixel_std=(1.0, 1.0, 1.0), to_bgr255=True, color_order="BGR",
        size_divisibility=32, dcn_op="plugin", dcn_op_version="deformrt.DeformConv2d/1",
        dynamic_axes={"images": {"0": "batch", "2": "32*h32"}}, export_shape=(1, 3, 800, 1344), init_seed=7,
    )
    values.update(over)
    return ExportMetadata(**values)


def test_props_round_trip_with_the_documented_keys():
    meta = _meta()
    props = meta.to_props()
    assert set(props) == KEYS
    assert all(isinstance(v, str) for v in props.values())
    assert json.loads(props["deformrt.output_strides"]) == [4, 8]
    assert json.loads(props["deformrt.to_bgr255"]) is True
    assert props["deformrt.size_divisibility"] == "32"
    assert ExportMetadata.from_props(props) == meta
    assert meta.seed == 7 and meta.dynamic
    assert _meta(weights="model_final.pth", weights_sha256="ab" * 32).seed is None
    assert not _meta(dynamic_axes={}).dynamic


def test_apply_replaces_ours_and_keeps_other_props():
    model = onnx.ModelProto()
    onnx.helper.set_model_props(model, {"author": "someone", "deformrt.body": "stale"})
    _meta().apply(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["author"] == "someone" and props["deformrt.body"] == "R-50-FPN"
    assert len([p for p in model.metadata_props if p.key == "deformrt.body"]) == 1
    assert ExportMetadata.from_model(model) == _meta()


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p.pop("deformrt.body"), "deformrt.body"),
    (lambda p: p.update({"deformrt.output_strides": "[4, 8"}), "deformrt.output_strides"),
    (lambda p: p.update({"deformrt.size_divisibility": "x"}), "deformrt.size_divisibility"),
    (lambda p: p.update({"deformrt.dcn_op": "tensorrt"}), "deformrt.dcn_op"),
])
def test_bad_props_are_user_errors(mutate, message):
    props = _meta().to_props()
    mutate(props)
    with pytest.raises(DeformRTError, match=message):
        ExportMetadata.from_props(props)


def test_from_model_reads_files_and_rejects_others(tmp_path):
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    _meta().apply(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert ExportMetadata.from_model(path) == _meta()
    with pytest.raises(DeformRTError, match="not found"):
        ExportMetadata.from_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk" * 10)
    with pytest.raises(DeformRTError, match="not a readable ONNX model"):
        ExportMetadata.from_model(tmp_path / "junk.onnx")
    bare = tmp_path / "bare.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(bare))
    with pytest.raises(DeformRTError, match="not written by deformrt export"):
        ExportMetadata.from_model(bare)


def _metadata_for(built: oe.BuiltModel) -> ExportMetadata:
    return _meta(body=built.model.body_name, config=built.cfg.dump(), weights=built.weights,
                 weights_sha256=built.weights_sha256, init_seed=built.seed)


def test_seeded_init_is_deterministic_and_rebuilds():
    cfg = oe.load_config("R-50-C4", None, ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, False, False)"])
    a = oe.build_model(cfg, seed=11)
    b = oe.build_model(cfg, seed=11)
    c = oe.build_model(cfg, seed=12)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["body.layer2.0.conv2.offset.weight"], sc["body.layer2.0.conv2.offset.weight"])
    rebuilt = oe.rebuild_model(_metadata_for(a)).state_dict()
    assert all(torch.equal(sa[k], rebuilt[k]) for k in sa)


def test_rebuild_with_the_checkpoint_it_was_exported_with(tmp_path):
    cfg = oe.load_config("R-50-C4", None, [])
    source = oe.build_model(cfg, seed=5).model
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": source.state_dict()}, ckpt)
    built = oe.build_model(cfg, weights=str(ckpt), seed=0)
    assert built.weights == "model_final.pth" and len(built.weights_sha256) == 64
    assert "loaded" in built.load_summary
    meta = _metadata_for(built)
    with pytest.raises(DeformRTError, match="pass that checkpoint"):
        oe.rebuild_model(meta)
    rebuilt = oe.rebuild_model(meta, weights=str(ckpt)).state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in source.state_dict().items())
    other = tmp_path / "other.pth"
    torch.save({"model": oe.build_model(cfg, seed=6).model.state_dict()}, other)
    with pytest.raises(DeformRTError, match="not the one this model was exported with"):
        oe.rebuild_model(meta, weights=str(other))
