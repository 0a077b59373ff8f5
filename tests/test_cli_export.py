"""`deformrt export`, `list-models` and `info` through typer's runner: results and every user error."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from exporter import cli
from exporter.onnx.metadata import ExportMetadata
from exporter.onnx.export import build_model, load_config
from models.backbone import body_info, list_bodies

runner = CliRunner()
DCN_RES4 = ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, False, True, False)", "MODEL.RESNETS.WITH_MODULATED_DCN", "True"]
SMALL = ["--shape", "64x64"]


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def assert_user_error(result, *fragments):
    """Exit status 1, exactly one `error:` line on stderr naming ``fragments``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert result.stdout == ""


@pytest.fixture(scope="module")
def exported_file(tmp_path_factory):
    """One real export through the CLI (R-50-C4 with modulated DCN in res4, dynamic, 64x64)."""
    out = tmp_path_factory.mktemp("cli") / "r50c4.onnx"
    result = invoke("export", "R-50-C4", "--onnx", "-o", out, *SMALL, *DCN_RES4)
    return out, result


def test_export_writes_a_verified_plugin_model(exported_file):
    out, result = exported_file
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert f"wrote {out.resolve()}" in result.stdout
    assert "random init (seed 0)" in result.stdout and "random init (seed 0)" in result.stderr
    assert "6 x deformrt.DeformConv2d/1" in result.stdout
    assert "2x3x96x128" in result.stdout and "max rel err" in result.stdout  # the verification table
    assert "exporting R-50-C4 to ONNX" in result.stderr  # progress goes to stderr
    meta = ExportMetadata.from_model(out)
    assert (meta.body, meta.dcn_op, meta.weights, meta.export_shape) == ("R-50-C4", "plugin", "seed:0", (1, 3, 64, 64))
    assert not list(out.parent.glob(".*.tmp")), "temporary file left behind"


def test_export_refuses_to_overwrite_then_forces_with_json_and_polygraphy_runs_it(exported_file, tmp_path):
    out = tmp_path / "existing.onnx"
    shutil.copyfile(exported_file[0], out)
    before = out.read_bytes()
    assert_user_error(invoke("export", "R-50-C4", "--onnx", "-o", out, *SMALL, *DCN_RES4),
                      "already exists", "--force")
    assert out.read_bytes() == before
    result = invoke("export", "R-50-C4", "--onnx", "-o", out, "--force", "--dcn-op", "onnx", "--static",
                    "--batch", "2", "--json", *SMALL, *DCN_RES4)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["path"] == str(out.resolve()) and summary["dcn_op"] == "onnx" and summary["dcn_nodes"] == 6
    assert summary["export_shape"] == [2, 3, 64, 64] and summary["dynamic_axes"] == {}
    assert summary["verification"]["passed"] is True
    assert set(summary) == {"path", "size_bytes", "parameter_bytes", "body", "dcn_op", "dcn_op_version", "dcn_nodes",
                            "nodes", "weights", "weights_sha256", "dynamic_axes", "export_shape", "seconds",
                            "verification"}
    assert "TensorRT >= 10.1" not in result.stdout  # --json prints JSON only
    model = onnx.load(str(out))
    assert {o.domain for o in model.opset_import} == {""}
    polygraphy = Path(sys.executable).parent / "polygraphy"
    if not polygraphy.exists():
        pytest.skip("polygraphy CLI not installed in this environment")
    run = subprocess.run([str(polygraphy), "run", str(out), "--onnxrt", "--providers", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "PASSED" in run.stdout + run.stderr


def test_default_output_name_and_onnx_flavour_note(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "R-50-C4", "--onnx", "--dcn-op", "onnx", "--static", "--no-verify", *SMALL, *DCN_RES4)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "R-50-C4-dcn-onnxdcn.onnx").is_file()
    assert "not verified (--no-verify)" in result.stdout
    assert "TensorRT >= 10.1 parses it natively" in result.stdout


def test_config_file_and_weights_reach_the_model_and_metadata(tmp_path):
    config = tmp_path / "mdconv_c4.yaml"  # a config that leaves the body to BODY
    config.write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  RESNETS:\n"
                      "    STAGE_WITH_DCN: (False, True, True, True)\n    WITH_MODULATED_DCN: True\n")
    source = build_model(load_config("R-50-C4", str(config)), seed=4).model
    ckpt = tmp_path / "trained.pth"
    torch.save({"model": source.state_dict()}, ckpt)
    out = tmp_path / "m.onnx"
    result = invoke("export", "R-50-C4", "--onnx", "-o", out, "--config-file", config,
                    "--weights", ckpt, "--static", "--no-verify", *SMALL)
    assert result.exit_code == 0, result.output
    assert "weights: trained.pth (sha256 " in result.stdout and "random init" not in result.output
    assert "loaded " in result.stderr  # the checkpoint report
    meta = ExportMetadata.from_model(out)
    assert meta.weights == "trained.pth" and len(meta.weights_sha256) == 64 and meta.seed is None
    assert "WITH_MODULATED_DCN: true" in meta.config
    model = onnx.load(str(out))
    assert sum(n.op_type == "DeformConv2d" for n in model.graph.node) == 10  # res3 + res4 of R-50-C4
    conv1 = next(t for t in model.graph.initializer if list(t.dims) == [64, 3, 7, 7])
    np.testing.assert_allclose(numpy_helper.to_array(conv1), source.body.stem.conv1.weight.detach().numpy())


def test_info_text_and_json(exported_file):
    out, _ = exported_file
    text = invoke("info", out)
    assert text.exit_code == 0, text.output
    for fragment in ("images: float32 [batch, 3, height, width]", "C4: float32 [batch, 1024,",
                     "deformrt.DeformConv2d x6", "opsets:      ai.onnx 19, deformrt 1", "body: R-50-C4",
                     "dcn_op_version: deformrt.DeformConv2d/1"):
        assert fragment in text.stdout, fragment
    result = invoke("info", out, "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    model = onnx.load(str(out))
    expected_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == 1)
    assert info["parameters"] == expected_params
    assert info["opset_imports"] == {"ai.onnx": 19, "deformrt": 1}
    assert info["custom_ops"] == [{"domain": "deformrt", "op_type": "DeformConv2d", "count": 6}]
    assert info["dcn_weight_layouts"] == {"OHWI": 6}  # channels-last, as the plugin's fp16 kernel reads them
    assert info["inputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}]
    assert info["metadata"]["body"] == "R-50-C4" and info["metadata"]["output_names"] == ["C4"]
    assert sorted(info) == sorted(["file", "size_bytes", "ir_version", "producer", "opset_imports", "inputs",
                                   "outputs", "nodes", "op_counts", "custom_ops", "dcn_nodes", "dcn_weight_layouts", "parameters",
                                   "initializer_bytes", "metadata", "metadata_props"])
    assert invoke("info", out, "--json").stdout == result.stdout  # stable


def test_list_models_text_and_json():
    text = invoke("list-models")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["body", "outputs", "strides", "channels", "DCN"]
    for name in list_bodies():
        info = body_info(name)
        row = next(line for line in lines if line.split()[0] == name)
        assert ",".join(info["outputs"]) in row and ",".join(map(str, info["strides"])) in row
    result = invoke("list-models", "--json")
    listed = json.loads(result.stdout)
    assert [m["name"] for m in listed] == list_bodies()
    assert listed[0] == {k: body_info(listed[0]["name"])[k]
                         for k in ("name", "outputs", "strides", "channels", "dcn_capable", "dcn_stages")}


# ----------------------------------------------------------------------------------------------
# User errors: one line, exit 1, no traceback, nothing written.


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("args,fragments", [
    (["R-50-FPX", "--onnx"], ["R-50-FPX", "did you mean 'R-50-FPN'"]),
    (["R-50-C4"], ["--onnx"]),
    (["R-50-C4", "--onnx", "--weights", "no/such/file.pth"], ["checkpoint not found", "no/such/file.pth"]),
    (["R-50-C4", "--onnx", "MODEL.RESNETS.NUM_GRUOPS", "32"], ["MODEL.RESNETS.NUM_GRUOPS", "NUM_GROUPS"]),
    (["R-50-C4", "--onnx", "MODEL.RESNETS.NUM_GROUPS", "many"], ["MODEL.RESNETS.NUM_GROUPS"]),
    (["R-50-C4", "--onnx", "MODEL.RESNETS.NUM_GROUPS"], ["KEY VALUE", "odd"]),
    (["R-50-C4", "--onnx", "--verfiy", "1"], ["unknown option '--verfiy'"]),
    (["R-50-C4", "--onnx", "--opset", "17"], ["--opset 17", "19"]),
    (["R-50-FPN", "--onnx", "--shape", "100x128"], ["multiples of 32", "--shape 128x128"]),
    (["R-50-C4", "--onnx", "-o", "no/such/dir/x.onnx"], ["no/such/dir", "does not exist"]),
    (["R-50-C4", "--onnx", "--config-file", "nope.yaml"], ["nope.yaml", "not found"]),
    # A negative number is a config value, not an option: the config is accepted, the output is not.
    (["R-50-C4", "--onnx", "-o", "no/dir/x.onnx", "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "-1"], ["does not exist"]),
    (["R-50-C4", "--onnx", "--batch", "0"], ["--batch"]),
])
def test_export_user_errors(args, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(invoke("export", *args), *fragments)
    assert not list(tmp_path.rglob("*.onnx"))


def test_output_that_is_a_directory_is_refused(tmp_path):
    assert_user_error(invoke("export", "R-50-C4", "--onnx", "-o", tmp_path), "is a directory")


def test_unsafe_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pth"
    ckpt.write_bytes(pickle.dumps({"model": _Evil(marker)}))
    assert_user_error(invoke("export", "R-50-C4", "--onnx", "-o", tmp_path / "x.onnx", "--weights", ckpt), "evil.pth")
    assert not marker.exists()
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("content", [None, b"this is not an onnx model"])
def test_info_user_errors(tmp_path, content):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    assert_user_error(invoke("info", path), str(path))


def test_usage_errors_exit_1_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "R-50-C4", "--onnx", "--dcn-op", "trt"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--dcn-op" in err and "Traceback" not in err


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(cli.state, "debug", False)
    from models.errors import DeformRTError

    with pytest.raises(DeformRTError, match="R-50-FPX"):
        cli.main(["--debug", "export", "R-50-FPX", "--onnx"])


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("deformrt ")
