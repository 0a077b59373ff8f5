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
