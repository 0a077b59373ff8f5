"""``deformrt build-engine``, ``compare`` and ``bench`` from the command line: user errors are one line
with exit status 1 (before TensorRT is needed), a failed comparison exits 1, ``--json`` output."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter import cli
from exporter.cli.engine import parse_size
from exporter.cli.options import parse_list
from exporter.trt.sidecar import EngineMeta, sidecar_path
from exporter.trt.profiles import ShapeProfile
from models.errors import DeformRTError

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """R-50-C4 with DCN in res3/res4, plugin flavour, 64x64 export (dynamic shapes)."""
    from exporter.onnx.export import ExportOptions, build_model, export_model, load_config

    cfg = load_config(body="R-50-C4", opts=["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, False)"])
    proto = export_model(build_model(cfg, seed=2), ExportOptions(dcn_op="plugin", input_size=(64, 64)))
    path = tmp_path_factory.mktemp("cli") / "c4.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """An existing file where the plugin finder looks (enough for the checks made before TensorRT)."""
    lib = tmp_path / "libdeformrt_plugin.so"
    lib.write_bytes(b"\x7fELF")
    monkeypatch.setenv("DEFORMRT_PLUGIN_LIB", str(lib))
    return lib


def _tensorrt_missing():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return True
    return False


def _one_error_line(result, starts):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {starts}"), result.stderr
    return lines[0]


def test_parse_size_and_list():
    assert parse_size("1073741824") == 1 << 30
    assert parse_size("512M") == 512 << 20 and parse_size("4G") == 4 << 30 and parse_size("4GiB") == 4 << 30
    assert parse_size("1.5k") == 1536
    for bad in ("lots", "-1G", "0", "4Q"):
        with pytest.raises(DeformRTError, match="give a size such as 4G"):
            parse_size(bad)
    assert parse_list(["torch,ort", " trt ", ""]) == ["torch", "ort", "trt"] and parse_list(None) == []


def test_build_engine_missing_onnx(tmp_path):
    _one_error_line(runner.invoke(cli.app, ["build-engine", str(tmp_path / "none.onnx")]), "ONNX file not found")


def test_build_engine_missing_plugin_names_op_and_where_it_looked(model, tmp_path, monkeypatch):
    monkeypatch.setenv("DEFORMRT_PLUGIN_LIB", str(tmp_path / "nowhere" / "libdeformrt_plugin.so"))
    line = _one_error_line(runner.invoke(cli.app, ["build-engine", str(model), "-o", str(tmp_path / "m.plan")]),
                           "the model uses deformrt.DeformConv2d")
    assert "looked for" in line and "nowhere/libdeformrt_plugin.so" in line and "deformrt build-plugin" in line


@pytest.mark.parametrize("args,starts", [
    (["--max-shape", "1x3x2048x64x1"], "--max-shape images:1x3x2048x64x1: input 'images' has 4 dimensions"),
    (["--opt-shape", "1x4x64x64"], "--opt-shape images:1x4x64x64: channels is fixed at 3"),
    (["--min-shape", "1x3x256x256", "--max-shape", "1x3x128x128"],
     "shape profile of 'images': height needs min <= opt <= max, got 256, 128, 128"),
    (["--opt-shape", "other:1x3x64x64"], "--opt-shape: the model has no input 'other'"),
    (["--workspace", "lots"], "--workspace 'lots'"),
])
def test_build_engine_option_errors(model, tmp_path, fake_plugin, args, starts):
    result = runner.invoke(cli.app, ["build-engine", str(model), "-o", str(tmp_path / "m.plan"), *args])
    _one_error_line(result, starts)


def test_build_engine_refuses_to_overwrite(model, tmp_path, fake_plugin):
    out = tmp_path / "m.plan"
    out.write_bytes(b"old")
    result = runner.invoke(cli.app, ["build-engine", str(model), "-o", str(out)])
    _one_error_line(result, f"output {out} already exists")
    assert out.read_bytes() == b"old"


@pytest.mark.skipif(not _tensorrt_missing(), reason="TensorRT is installed here")
def test_build_engine_without_tensorrt(model, tmp_path, fake_plugin):
    result = runner.invoke(cli.app, ["build-engine", str(model), "-o", str(tmp_path / "m.plan"), "--fp16"])
    _one_error_line(result, "TensorRT is not available here")
    assert not (tmp_path / "m.plan").exists() and not (tmp_path / "m.plan.json").exists()


def test_usage_error_is_one_line_exit_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["build-engine", "m.onnx", "--fp16-via", "bf16"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--fp16-via" in err[0]


def test_compare_passes_and_writes_json(model, tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(cli.app, ["compare", str(model), "--seed", "5", "--batch", "2", "--shape", "64x96",
                                     "--json-file", str(out)])
    assert result.exit_code == 0, result.output
    assert "ort (fp32)" in result.stdout and result.stdout.strip().endswith("PASSED")
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["input"]["shape"] == [2, 3, 64, 96] and report["input"]["seed"] == 5


def test_compare_failure_exits_1_with_the_table_and_the_reason(model, tmp_path):
    """A real difference (one DCN node's pads broken): FAIL, exit 1, and the float64 run says the model
    is well-conditioned, so the difference is real (not rounding)."""
    import onnx

    from exporter.onnx import passes as gp

    proto = onnx.load(str(model))
    node = next(n for n in proto.graph.node if gp.is_plugin_deform_conv(n))
    next(a for a in node.attribute if a.name == "pads").ints[:] = [0, 2, 2, 0]
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    result = runner.invoke(cli.app, ["compare", str(broken), "--backends", "ort,torch", "--seed", "1"])
    assert result.exit_code == 1
    assert "reference: ort" in result.stdout and result.stdout.strip().endswith("FAILED")
    assert "torch fp32 vs fp64" in result.stdout and "FAIL" in result.stdout
    assert "well-conditioned here and an error above 1e-03 is a real difference" in result.stdout
    assert "error:" not in result.stderr
    assert "running PyTorch in float64" in result.stderr


def test_compare_json_to_stdout_and_images(model, tmp_path):
    image = tmp_path / "a.npy"
    np.save(image, np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8))
    result = runner.invoke(cli.app, ["compare", str(model), "--images", str(image), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds only the JSON; the table went to stderr
    assert report["input"]["source"] == "images" and report["input"]["shape"] == [1, 3, 40, 56]
    assert "PASSED" in result.stderr


def test_compare_engine_shape_outside_profile(model, tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(EngineMeta(
        "0.1.0", "10.3.0", "Orin", "8.7", "fp32", [ShapeProfile("images", (1, 3, 32, 32), (1, 3, 64, 64),
                                                                (1, 3, 64, 64))], str(model), "0" * 64, {}).to_json())
    result = runner.invoke(cli.app, ["compare", str(model), "--engine", str(engine), "--shape", "96x64"])
    _one_error_line(result, "input 'images' shape 1x3x96x64 is outside the engine's profile")


def test_compare_missing_engine_sidecar(model, tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"plan")
    _one_error_line(runner.invoke(cli.app, ["compare", str(model), "--engine", str(engine)]),
                    f"{engine} has no sidecar m.plan.json")


def test_bench_json(model):
    result = runner.invoke(cli.app, ["bench", str(model), "--backends", "torch,ort", "--warmup", "1",
                                     "--iterations", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["backend"] for r in report["results"]] == ["torch", "ort"]
    assert report["results"][0]["ratio_p50_vs_first"] == 1.0
    assert all(r["latency_ms"]["p50"] > 0 and r["throughput"] > 0 for r in report["results"])
    assert "p50 vs torch" in result.stderr
