"""Bad input to the README's ``deformrt`` commands as users produce it: one ``error:`` line on stderr, exit
status 1, nothing on stdout and nothing written (README: "Command-line conventions")."""

from __future__ import annotations

import pytest

from cli_shell import deformrt


def one_error_line(*args, cwd) -> str:
    ran = deformrt(*args, cwd=cwd)
    err = ran.stderr.strip()
    assert ran.returncode == 1 and ran.stdout == "", (ran.returncode, ran.stdout, ran.stderr)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", [["info"], ["compare"], ["bench"], ["build-engine"], ["predict", "x.png"]])
def test_an_empty_onnx_file_is_refused(command, tmp_path):
    """An empty file parses as an empty ModelProto: `deformrt info` printed it and exited 0."""
    (tmp_path / "model.onnx").write_bytes(b"")
    args = [command[0], "model.onnx", *command[1:]]
    assert one_error_line(*args, cwd=tmp_path) == \
        "error: model.onnx is not a readable ONNX model (it holds no graph; the file is empty)"


@pytest.mark.parametrize("command", [["info"], ["compare"], ["build-engine"], ["deploy", "-o", "bundle"]])
def test_a_folder_given_as_the_onnx_file_is_named_a_folder(command, tmp_path):
    (tmp_path / "exported").mkdir()
    args = [command[0], "exported", *command[1:]]
    assert one_error_line(*args, cwd=tmp_path) == "error: exported is a folder; give an ONNX file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_build_plugin_refuses_a_tensorrt_root_without_headers_before_building(tmp_path, monkeypatch):
    """Before the fix the kernels were compiled (minutes) and only then 'the build finished without
    libdeformrt_plugin.so'."""
    import exporter.trt.plugin_build as plugin_build

    def no_build(*args, **kwargs):
        raise AssertionError("CMake ran")

    monkeypatch.setattr(plugin_build, "cmake_build", no_build)
    (tmp_path / "TensorRT" / "lib").mkdir(parents=True)
    assert one_error_line("build-plugin", "--tensorrt-root", "TensorRT", cwd=tmp_path) == (
        "error: TensorRT root TensorRT has no include/NvInferRuntime.h: give the folder of a TensorRT install "
        "(include/, lib/), or --tensorrt-include-dir for the headers alone")


@pytest.mark.parametrize("command, shape", [
    (["export", "R-50-FPN", "--onnx"], "0x0"),
    (["export", "R-50-FPN", "--onnx"], "-32x64"),
    (["synthetic-checkpoint", "R-50-FPN"], "800x0"),
])
def test_a_non_positive_shape_is_named_as_such(command, shape, tmp_path):
    """It was told to 'write the height and width as HxW', which it had done."""
    assert one_error_line(*command, "--shape", shape, cwd=tmp_path) == \
        f"error: --shape '{shape}': height and width must be at least 1, e.g. 800x1344"
    assert list(tmp_path.iterdir()) == []
