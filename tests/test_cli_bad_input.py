"""Bad input to the README's ``deformrt`` commands as users produce it: one ``error:`` line on stderr, exit
status 1, nothing on stdout and nothing written (README: "Command-line conventions")."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from unittest import mock

import pytest
import torch


def one_error_line(*args, cwd: Path) -> str:
    """``deformrt ARGS`` run in ``cwd`` through the console script's entry point (``exporter.cli.main``: usage
    errors are handled there, not in the typer app), in this process; its one stderr line."""
    from exporter import cli

    out, err, here = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(cwd)
    try:
        with mock.patch.dict(os.environ), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                pytest.raises(SystemExit) as exit_info:
            os.environ.pop(cli.DEBUG_ENV, None)
            cli.main([str(a) for a in args])
    finally:
        os.chdir(here)
    text = err.getvalue().strip()
    assert exit_info.value.code == 1 and out.getvalue() == "", (exit_info.value.code, out.getvalue(), text)
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("command", [["info"], ["compare"], ["bench"], ["build-engine"], ["predict", "x.png"]])
def test_an_empty_onnx_file_is_refused(command, tmp_path):
    """An empty file parses as an empty ModelProto: `deformrt info` printed it and exited 0."""
    (tmp_path / "model.onnx").write_bytes(b"")
    args = [command[0], "model.onnx", *command[1:]]
    assert one_error_line(*args, cwd=tmp_path) == \
        "error: model.onnx is not a readable ONNX model (it holds no graph; the file is empty)"


@pytest.mark.parametrize("command", [["info"], ["compare"], ["build-engine"], ["deploy", "-o", "bundle"]])
def test_a_folder_given_as_the_onnx_file_is_named_a_directory(command, tmp_path):
    (tmp_path / "exported").mkdir()
    args = [command[0], "exported", *command[1:]]
    assert one_error_line(*args, cwd=tmp_path) == "error: ONNX file exported is a directory, not a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


@pytest.mark.parametrize("args, message", [
    (["export", "R-50-FPN", "--onnx", "--weights", "inputs"], "checkpoint inputs is a directory, not a file"),
    (["export", "--onnx", "--config-file", "inputs"], "config file inputs is a directory, not a file"),
    (["synthetic-checkpoint", "--config-file", "inputs"], "config file inputs is a directory, not a file"),
])
def test_a_folder_given_as_an_input_file_is_named_a_directory(args, message, tmp_path):
    """They said 'checkpoint not found' and "config file 'inputs' not found" of a directory that is there."""
    (tmp_path / "inputs").mkdir()
    assert one_error_line(*args, cwd=tmp_path) == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


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


def test_every_reader_of_an_input_file_names_a_folder(tmp_path):
    """The readers behind --images, --engine and a checkpoint (the commands reach them after loading a model)."""
    from exporter.evaluation.inputs import load_image, read_image
    from exporter.trt.sidecar import read_sidecar
    from models.checkpoint import load_checkpoint
    from models.errors import DeformRTError

    folder = tmp_path / "inputs"
    folder.mkdir()
    for read, what in ((load_image, "image"), (read_image, "image"), (read_sidecar, "engine file"),
                       (lambda path: load_checkpoint(torch.nn.Linear(1, 1), path), "checkpoint")):
        with pytest.raises(DeformRTError) as exc:
            read(folder)
        assert str(exc.value) == f"{what} {folder} is a directory, not a file"
        with pytest.raises(DeformRTError) as exc:
            read(tmp_path / "absent")
        assert str(exc.value) == f"{what} not found: {tmp_path / 'absent'}"


def test_a_key_without_its_value_is_named_in_command_line_words(tmp_path):
    """It said 'opts must be KEY VALUE pairs', naming the Python argument."""
    assert one_error_line("export", "R-50-FPN", "--onnx", "MODEL.RESNETS.STAGE_WITH_DCN", cwd=tmp_path) == (
        "error: config overrides must be KEY VALUE pairs, got an odd number of items (1): "
        "MODEL.RESNETS.STAGE_WITH_DCN")


def test_a_corrupt_or_truncated_image_is_one_line(tmp_path):
    """--images of compare, bench and deploy (load_image): a corrupt or truncated PNG was Pillow's
    UnidentifiedImageError / OSError traceback, and an empty .npy numpy's EOFError."""
    import io

    import numpy as np
    from PIL import Image

    from exporter.evaluation.inputs import load_image
    from models.errors import DeformRTError

    picture = np.random.default_rng().integers(0, 256, (40, 50, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(picture).save(png, format="PNG")
    (tmp_path / "good.png").write_bytes(png.getvalue())
    np.testing.assert_array_equal(load_image(tmp_path / "good.png"), picture.astype(np.float64))
    (tmp_path / "cut.png").write_bytes(png.getvalue()[:len(png.getvalue()) // 2])
    (tmp_path / "text.jpg").write_bytes(b"not a picture")
    (tmp_path / "empty.npy").write_bytes(b"")
    for name, message in (("cut.png", "cannot read image {}: image file is truncated"),
                          ("text.jpg", "cannot read image {}: cannot identify image file"),
                          ("empty.npy", "{} is not a readable .npy array (No data left in file)")):
        with pytest.raises(DeformRTError) as exc:
            load_image(tmp_path / name)
        assert str(exc.value).startswith(message.format(tmp_path / name)), exc.value


@pytest.mark.parametrize("args, flag, source", [
    # --json-file replaces a report without --force: `compare` wrote its JSON over the 108 MB model, exit 0
    (["compare", "model.onnx", "--json-file", "model.onnx"], "--json-file", "model.onnx"),
    (["bench", "model.onnx", "--weights", "w.pth", "--json-file", "./w.pth"], "--json-file", "w.pth"),
    (["predict", "model.onnx", "a.png", "--json-file", "a.png"], "--json-file", "a.png"),
    (["eval", "model.onnx", "--coco", "coco.json", "--images", ".", "--json-file", "coco.json"], "--json-file",
     "coco.json"),
    # --force is for an old result, not for the file the command reads
    (["build-engine", "model.onnx", "-o", "model.onnx", "--force"], "--output", "model.onnx"),
    (["export", "R-50-C4", "--onnx", "--weights", "w.pth", "-o", "w.pth", "--force"], "--output", "w.pth"),
])
def test_an_output_that_is_one_of_the_inputs_is_refused(args, flag, source, tmp_path):
    files = {name: name.encode() * 3 for name in ("model.onnx", "w.pth", "a.png", "coco.json")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    output = Path(args[args.index(flag if flag in args else "-o") + 1])
    assert one_error_line(*args, cwd=tmp_path) == \
        f"error: {flag} {output} is the input {source}: the result would replace it; give another file"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


@pytest.mark.parametrize("args, message", [
    # nan passed the `<= 0` checks: a checkpoint of nan offsets, a compare that passed whatever the difference
    (["synthetic-checkpoint", "R-50-FPN", "--offset-std", "nan"], "--offset-std must be positive and finite, got nan"),
    (["synthetic-checkpoint", "R-50-FPN", "--offset-std", "inf"], "--offset-std must be positive and finite, got inf"),
    (["predict", "model.onnx", "a.png", "--score-threshold", "nan"],
     "--score-threshold must be a finite number, got nan"),
    # torch's and numpy's own ValueError tracebacks (an overflow, a negative seed)
    (["export", "R-50-C4", "--onnx", "--seed", "99999999999999999999"],
     "Invalid value for '--seed': Input should be less than or equal to 4294967295"),
    (["compare", "model.onnx", "--seed", "-5"],
     "Invalid value for '--seed': Input should be greater than or equal to 0"),
])
def test_numbers_out_of_range(args, message, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"model")
    (tmp_path / "a.png").write_bytes(b"png")
    assert one_error_line(*args, cwd=tmp_path) == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "model.onnx"]


def test_a_tolerance_must_be_positive_and_finite():
    from exporter.deploy.check import tolerance_for
    from exporter.evaluation.compare import comparison_tolerance
    from models.errors import DeformRTError

    for bad in (0.0, -1e-3, float("nan"), float("inf")):
        for check in (lambda x: comparison_tolerance(["fp32"], x), lambda x: tolerance_for({}, "fp32", x)):
            with pytest.raises(DeformRTError, match=f"--tolerance must be positive and finite, got {bad:g}"):
                check(bad)
    assert comparison_tolerance(["fp32"], 2e-3) == tolerance_for({}, "fp32", 2e-3) == 2e-3


def test_eval_images_must_be_a_folder(tmp_path):
    """It said 'images folder not found' of the image file given."""
    (tmp_path / "model.onnx").write_bytes(b"model")
    (tmp_path / "coco.json").write_text('{"images": [], "annotations": [], "categories": []}')
    (tmp_path / "a.png").write_bytes(b"png")
    assert one_error_line("eval", "model.onnx", "--coco", "coco.json", "--images", "a.png", cwd=tmp_path) == \
        "error: --images a.png is a file; give the folder that holds the annotation file's images"


@pytest.mark.parametrize("args, message", [
    (["compare", "model.onnx", "--plugin", "lib.so"],
     "--plugin is for the trt backend: add --engine FILE, or trt to --backends"),
    (["bench", "model.onnx", "--backends", "torch,ort", "--plugin", "lib.so"],
     "--plugin is for the trt backend: add --engine FILE, or trt to --backends"),
    (["predict", "model.onnx", "a.png", "--plugin", "lib.so"],
     "--plugin is for --engine: add --engine FILE (without it ONNX Runtime runs the file)"),
])
def test_a_plugin_without_tensorrt_is_refused(args, message, tmp_path):
    """--plugin without a TensorRT backend was ignored without a word (compare exited 0 on ONNX Runtime)."""
    for name in ("model.onnx", "a.png", "lib.so"):
        (tmp_path / name).write_bytes(b"x")
    assert one_error_line(*args, cwd=tmp_path) == f"error: {message}"
