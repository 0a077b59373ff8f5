"""Bad input to scripts/*.py as users type it: one ``error:`` line on stderr and exit status 1, before any
long work (exporter.util.usage: ScriptParser and whole_number; exporter.cli.options.run_script). Each case is
checked in process (the scripts' ``main`` under ``run_script``, as their ``__main__`` runs it); one runs the
script itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_shell import load_script
from exporter.cli.options import run_script
from models.errors import DeformRTError

REPO = Path(__file__).resolve().parents[1]


def script_error(name: str, argv: list[str], capsys) -> str:
    """The one stderr line of ``scripts/<name>.py ARGV``, asserting exit status 1 and an empty stdout."""
    try:
        status = run_script(load_script(name).main, argv)
    except SystemExit as exc:  # argparse's usage errors exit from inside parse_args
        status = exc.code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert status == 1, captured
    assert captured.out == "" and "\n" not in err and "Traceback" not in err, captured
    assert err.startswith("error: "), err
    return err


@pytest.mark.parametrize("name, argv, message", [
    ("bench_export", ["--bodies", "R-50-FPN", "R-999"], "unknown MODEL.BACKBONE.CONV_BODY 'R-999'"),
    ("bench_export", ["--iterations", "0"], "argument --iterations: must be >= 1, got 0"),
    ("bench_export", ["--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
    ("bench_detector", ["--configs", "rpn_R_50_FPN_1x.yaml", "nosuch.yaml"], "nosuch.yaml' not found"),
    ("bench_detector", ["--iterations", "0"], "argument --iterations: must be >= 1, got 0"),
    ("bench_models", ["--bodies", "R-50-C4", "--repeat", "0"], "argument --repeat: must be >= 1, got 0"),
    ("bench_models", ["--repeat", "three"], "argument --repeat: expected a whole number, got 'three'"),
    # before the minutes-long host-library build
    ("fp16_accuracy", ["--gpus", "H999"], "--gpus: unknown GPU 'H999'; choose from H100 SXM, A100, Jetson AGX Orin"),
    ("fp16_accuracy", ["--layers", "res3,res9"], "--layers: unknown layer 'res9' (did you mean 'res5'?)"),
    ("kernel_model", ["--gpus", "A100,orin"], "--gpus: unknown GPU 'orin' (did you mean 'Jetson AGX Orin'?)"),
    # before nvcc (which fails with its own "Unsupported gpu architecture" traceback) or minutes of PTX builds
    ("kernel_resources", ["--arch", "80", "99"],
     "argument --arch: invalid choice: 99 (choose from 75, 80, 86, 87, 89, 90)"),
    ("sass_loop", ["--arch", "-1"], "argument --arch: invalid choice: -1 (choose from 75, 80, 86, 87, 89, 90)"),
    ("ptx_check", ["--cases", "wgmma("], "argument --cases: 'wgmma(' is not a regular expression (missing ),"),
    ("ptx_check", ["--ptx-arch", "sm_99"], "--ptx-arch must be one of sm_75, sm_80, sm_86, sm_87, sm_89, sm_90, sm_90a"),
    ("bench_dcn", ["--iters", "0"], "argument --iters: must be >= 1, got 0"),  # a CUDA graph of no calls
    ("demo", ["--seed", "-1"], "argument --seed: must be >= 0, got -1"),  # torch took -1, no other --seed does
    ("demo", ["--seed", str(2**32)], "argument --seed: must be <= 4294967295, got 4294967296"),
    ("dcn_sanitize", ["--racecheck"], "unrecognized arguments: --racecheck"),
])
def test_bad_script_input_is_one_line(name, argv, message, capsys):
    assert message in script_error(name, argv, capsys)


@pytest.mark.parametrize("module, argv, message", [
    ("exporter.polygraphy_ext.inputs", ["m.onnx", "-o", "in.json", "--batch", "0"],
     "argument --batch: must be >= 1, got 0"),
    ("exporter.polygraphy_ext.inputs", ["m.onnx", "-o", "in.json", "--seed", "-3"],
     "argument --seed: must be >= 0, got -3"),  # as every --seed
    ("exporter.polygraphy_ext.inputs", ["m.onnx", "-o", "in.json", "--shape", "0x64"],
     "--shape '0x64': height and width must be at least 1"),  # before reading the model
    ("exporter.onnx.op_contract", ["--write-headers"], "unrecognized arguments: --write-headers"),
])
def test_module_tools_bad_input_is_one_line(module, argv, message, capsys):
    """The ``python -m`` tools the README names follow the scripts' rules (they used plain argparse:
    usage text and status 2, and took --batch 0 and a negative --seed)."""
    import importlib

    try:
        status = importlib.import_module(module).main(argv)
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    assert status == 1 and captured.out == "", captured
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err


SCRIPTS = sorted(p.stem for p in (REPO / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help_describes_it_in_whole_sentences(name, capsys, monkeypatch):
    """``--help`` of every script: status 0 and its docstring's whole first paragraph as the description
    (the first line alone stopped mid-sentence in six of them)."""
    # argparse wraps help to the terminal's width ($COLUMNS first) and may break a line after a hyphen
    # ("whole-" / "detector" below 70 columns), which joining on whitespace cannot undo: one line per paragraph
    monkeypatch.setenv("COLUMNS", "10000")
    module = load_script(name)
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    description = " ".join(module.__doc__.strip().split("\n\n")[0].split())
    assert description.endswith(".") and description in " ".join(capsys.readouterr().out.split())


def test_demo_refuses_an_out_dir_it_cannot_create_before_building(tmp_path, capsys):
    """Before the fix the model was built and run (a minute at the default size), then mkdir raised."""
    blocker = tmp_path / "demo.onnx"
    blocker.write_bytes(b"not a folder")
    assert script_error("demo", ["--out-dir", str(blocker)], capsys) == \
        f"error: --out-dir {blocker} is a file; give a folder"
    inside = blocker / "out"
    assert script_error("demo", ["--out-dir", str(inside)], capsys) == \
        f"error: --out-dir {inside}: cannot create the folder (Not a directory)"
    assert blocker.read_bytes() == b"not a folder"


def test_debug_shows_the_traceback():
    with pytest.raises(DeformRTError, match="R-999"):
        run_script(load_script("bench_export").main, ["--debug", "--bodies", "R-999"])


def test_a_script_run_as_typed_exits_1_with_one_line():
    proc = subprocess.run([sys.executable, "scripts/bench_export.py", "--bodies", "R-50-FPN", "R-999"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert proc.stderr.startswith("error: unknown MODEL.BACKBONE.CONV_BODY 'R-999'") and proc.stderr.count("\n") == 1


def test_fp16_accuracy_host_build_leaves_no_folder(monkeypatch):
    """host_library builds in a temporary folder and removes it once the library is loaded."""
    import exporter.trt.plugin_build as plugin_build
    import models.ops.cuda_kernels as cuda_kernels

    fp16_accuracy = load_script("fp16_accuracy")
    build_dirs = []

    def fake_build(build_dir, definitions, targets):  # stands in for CMake: the folder it was given
        build_dirs.append(build_dir)
        assert build_dir.is_dir() and targets == ["deformrt_host"]
        return build_dir

    monkeypatch.setattr(plugin_build, "cmake_build", fake_build)
    monkeypatch.setattr(fp16_accuracy.ctypes, "CDLL", lambda path: path)
    monkeypatch.setattr(cuda_kernels, "declare_host_api", lambda lib: lib)
    assert fp16_accuracy.host_library().endswith("libdeformrt_host.so")
    assert len(build_dirs) == 1 and not build_dirs[0].exists()


def gpu_check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    # taken for the results file: minutes of checks, then a JSON file named --help
    (["--help-me"], "error: unknown option --help-me; usage: bash scripts/gpu_check.sh [results.json]"),
    (["a.json", "b.json"], "error: one argument at most (the results file), got 2"),
    (["out"], "error: {cwd}/out is a directory; give a file for the results"),
    (["no/such/r.json"],
     "error: cannot write {cwd}/no/such/r.json: directory {cwd}/no/such is missing or not writable"),
])
def test_gpu_check_refuses_bad_arguments_before_any_work(args, message, tmp_path):
    (tmp_path / "out").mkdir()
    done = gpu_check(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", message.format(cwd=tmp_path) + "\n")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_gpu_check_help_and_no_gpu(tmp_path):
    done = gpu_check("--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("Every check that needs a GPU")
    assert "bash scripts/gpu_check.sh [results.json]" in done.stdout and "set -euo" not in done.stdout
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("nvidia-smi is here: the no-GPU message is checked on a machine without one")
    done = gpu_check("r.json", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "") and done.stderr == (
        "error: no NVIDIA GPU here (neither nvidia-smi nor torch sees one); gpu_check runs the checks that need one\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the no-GPU message is checked without one")
@pytest.mark.parametrize("name, message", [
    ("bench_dcn", "error: no CUDA GPU available; bench_dcn has nothing to benchmark"),
    ("dcn_sanitize", "error: no CUDA GPU; dcn_sanitize runs the kernels on one"),
])
def test_gpu_scripts_say_in_one_line_that_there_is_no_gpu(name, message, capsys):
    assert script_error(name, [], capsys) == message
