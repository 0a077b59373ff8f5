"""The engine sidecar: JSON round trip, reading next to an engine, and the TensorRT / GPU checks
(the running environment is simulated with RuntimeEnv values)."""

import io
import json

import pytest

from exporter.trt.sidecar import (SCHEMA, EngineMeta, RuntimeEnv, check_compatible, read_sidecar, sidecar_path)
from exporter.trt.profiles import ShapeProfile
from models.errors import DeformRTError


def _meta(**overrides) -> EngineMeta:
    values = dict(
        deformrt_version="0.1.0", tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
        precision="fp16", fp16_method="builder-flag",
        profiles=[ShapeProfile("images", (1, 3, 320, 320), (1, 3, 800, 1344), (4, 3, 1344, 1344))],
        onnx_path="/models/r50.onnx", onnx_sha256="ab" * 32,
        onnx_metadata={"deformrt.body": "R-50-FPN", "deformrt.dcn_op": "plugin"},
        plugin_path="/opt/libdeformrt_plugin.so", plugin_sha256="cd" * 32, built_at="2026-01-02T03:04:05+00:00",
        build_options={"workspace": 1 << 30, "builder_optimization_level": 3},
    )
    values.update(overrides)
    return EngineMeta(**values)


def test_plugin_layer_types_round_trip_and_older_sidecars_read():
    meta = _meta(plugin_layer_types={"fp16": 13})
    assert EngineMeta.from_json(meta.to_json()).plugin_layer_types == {"fp16": 13}
    older = json.loads(_meta().to_json())
    del older["plugin_layer_types"]  # sidecars written before the field existed
    assert EngineMeta.from_json(json.dumps(older)).plugin_layer_types is None
    older["plugin_layer_types"] = {"fp16": "many"}
    with pytest.raises(DeformRTError, match="malformed field"):
        EngineMeta.from_json(json.dumps(older))


def test_sidecar_path():
    assert str(sidecar_path("/a/model.plan")) == "/a/model.plan.json"


def test_json_round_trip_and_stable_keys():
    meta = _meta()
    text = meta.to_json()
    assert EngineMeta.from_json(text) == meta
    d = json.loads(text)
    assert list(d) == ["schema", "deformrt_version", "tensorrt_version", "gpu_name", "compute_capability",
                       "precision", "fp16_method", "profiles", "plugin_path", "plugin_sha256", "onnx_path",
                       "onnx_sha256", "onnx_metadata", "built_at", "build_options", "plugin_layer_types", "outputs",
                       "detector"]
    assert d["schema"] == SCHEMA
    assert d["profiles"] == [{"name": "images", "min": [1, 3, 320, 320], "opt": [1, 3, 800, 1344],
                              "max": [4, 3, 1344, 1344]}]


@pytest.mark.parametrize("text,match", [
    ("not json", "not valid JSON"),
    ("[1]", "not a JSON object"),
    ('{"schema": 99}', "schema 99"),
    ('{"schema": 1, "gpu_name": "x"}', "missing or has a malformed field"),
])
def test_malformed_sidecars(text, match):
    with pytest.raises(DeformRTError, match=match):
        EngineMeta.from_json(text)


def test_unknown_precision_is_rejected():
    d = json.loads(_meta().to_json())
    d["precision"] = "int4"
    with pytest.raises(DeformRTError, match="precision 'int4'"):
        EngineMeta.from_json(json.dumps(d))


def test_read_sidecar_next_to_engine(tmp_path):
    engine = tmp_path / "m.plan"
    with pytest.raises(DeformRTError, match="engine file not found"):
        read_sidecar(engine)
    engine.write_bytes(b"plan")
    with pytest.raises(DeformRTError, match="has no sidecar m.plan.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(_meta().to_json())
    assert read_sidecar(engine) == _meta()


def test_profile_lookup():
    assert _meta().profile("images").max == (4, 3, 1344, 1344)
    with pytest.raises(DeformRTError, match="no input 'x' .*images"):
        _meta().profile("x")


def test_same_release_and_gpu_is_compatible_and_build_number_is_ignored():
    warn = io.StringIO()
    check_compatible(_meta(), RuntimeEnv("10.3.0.26", "Orin", "8.7"), warn=warn)
    assert warn.getvalue() == ""


@pytest.mark.parametrize("version", ["10.4.0.1", "11.1.0", "10.3.1"])
def test_other_tensorrt_release_is_a_clear_error(version):
    expected = rf"built with TensorRT 10\.3\.0\.30, this is TensorRT {version}.*rebuild"
    with pytest.raises(DeformRTError, match=expected) as e:
        check_compatible(_meta(), RuntimeEnv(version, "Orin", "8.7"), engine="m.plan")
    assert "m.plan" in str(e.value) and "/models/r50.onnx" in str(e.value)


def test_other_compute_capability_is_a_clear_error():
    with pytest.raises(DeformRTError, match=r"built for Orin \(compute capability 8\.7\), this GPU is NVIDIA H100 "
                                            r"\(compute capability 9\.0\)"):
        check_compatible(_meta(), RuntimeEnv("10.3.0.30", "NVIDIA H100", "9.0"))


def test_same_capability_other_gpu_model_only_warns():
    warn = io.StringIO()
    meta = _meta(gpu_name="NVIDIA GeForce RTX 3090", compute_capability="8.6")
    check_compatible(meta, RuntimeEnv("10.3.0.30", "NVIDIA A40", "8.6"), warn=warn)
    assert "built on NVIDIA GeForce RTX 3090, running on NVIDIA A40" in warn.getvalue()
