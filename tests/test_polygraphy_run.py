"""``polygraphy run`` with deformrt's extension (exporter/polygraphy_ext), through the real CLI in a
subprocess: the ``polygraphy`` console script next to this Python, which finds the extension
through the ``polygraphy.run.plugins`` entry point of the installed project (``pip install -e .``).

One small model (R-50-FPN, modulated DCN, narrow widths, dynamic shapes, export size 64x64) with a
saved checkpoint, exported in both DCN flavours from one trace. The PyTorch runner, ONNX Runtime on
both flavours, saved and reloaded outputs, and the errors; every number Polygraphy passed is also
checked here against an fp64 PyTorch reference computed in this process on the same saved inputs.
"""

import copy
import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
POLYGRAPHY = Path(sys.executable).parent / "polygraphy"
EXPORT_SIZE = (64, 64)
SLIM = ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64"]
# Polygraphy's tolerance for every comparison here: the largest absolute difference per output.
# This model's outputs peak at ~100-800 on these inputs, where fp32 backends differ by < 1e-3
# (test_saved_outputs_match_an_fp64_reference); an error of 1e-4 of the peak fails (tamper test).
TOLERANCE = ["--check-error-stat", "max", "--atol", "1e-2", "--rtol", "0"]


def _extension_installed() -> bool:
    return any(ep.value.startswith("exporter.polygraphy_ext")
               for ep in metadata.entry_points(group="polygraphy.run.plugins"))


pytestmark = pytest.mark.skipif(
    not POLYGRAPHY.is_file() or not _extension_installed(),
    reason="needs the polygraphy console script beside this Python and deformrt installed (pip install -e .) "
           "so that `polygraphy run` finds the extension")


def polygraphy_run(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``polygraphy run ARGS`` on this checkout (PYTHONPATH), stdout and stderr merged."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([str(POLYGRAPHY), "run", *map(str, args)], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


def _critical_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("[!]")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Checkpoint A (the export's) and B (A with one offset conv changed), both flavours exported
    with A from one trace, and the standard flavour without its deformrt metadata."""
    import onnx

    from exporter.onnx.export import ExportOptions, build_model, finish_export, load_config, trace

    out = tmp_path_factory.mktemp("polygraphy_run")
    cfg = load_config(config_file="e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml", opts=SLIM)
    state = build_model(cfg, seed=3).model.state_dict()
    torch.save({"model": state}, out / "a.pth")
    offset = next(k for k in state if k.endswith("conv2.offset.weight"))
    torch.save({"model": {**state, offset: state[offset] + 0.01}}, out / "b.pth")
    built = build_model(cfg, weights=str(out / "a.pth"), seed=0)
    raw = trace(built, ExportOptions(input_size=EXPORT_SIZE))
    paths = {"dir": out, "a": out / "a.pth", "b": out / "b.pth"}
    for flavour in ("onnx", "plugin"):
        proto = finish_export(copy.deepcopy(raw), built, ExportOptions(dcn_op=flavour, input_size=EXPORT_SIZE))
        paths[flavour] = out / f"{flavour}.onnx"
        paths[flavour].write_bytes(proto.SerializeToString())
    del proto.metadata_props[:]
    paths["plain"] = out / "plain.onnx"
    onnx.save(proto, str(paths["plain"]))
    return paths


@pytest.fixture(scope="module")
def plugin_run(models):
    """The PyTorch runner against ONNX Runtime on the plugin flavour, on Polygraphy's random data
    with deformrt's defaults; inputs and outputs saved for the tests that reload them."""
    d = models["dir"]
    result = polygraphy_run(models["plugin"], "--deformrt-torch", "--deformrt-weights", models["a"],
                            "--deformrt-onnxrt", "--seed", 7, "--save-inputs", d / "inputs.json",
                            "--save-outputs", d / "outputs.json", *TOLERANCE, cwd=d)
    return result, d / "inputs.json", d / "outputs.json"


def _fp64_reference(models, inputs: dict) -> dict:
    from exporter.onnx.export import rebuild_model
    from exporter.onnx.metadata import ExportMetadata

    meta = ExportMetadata.from_model(models["plugin"])
    model = rebuild_model(meta, str(models["a"])).double()
    with torch.inference_mode():
        outputs = model(torch.from_numpy(inputs["images"]).double())
    return {name: t.numpy() for name, t in zip(meta.output_names, outputs)}


def test_pytorch_runner_against_onnxruntime_on_the_plugin_flavour(models, plugin_run):
    result, _, _ = plugin_run
    assert result.returncode == 0, result.stdout[-3000:]
    log = result.stdout
    assert "deformrt: random inputs of shape images:[1, 3, 64, 64] (the export shape" in log
    assert "--val-range images:[-122.8,152]" in log  # BGR 0..255 minus the config's pixel means
    summary = [line for line in log.splitlines() if "Accuracy Summary" in line]
    assert len(summary) == 1 and "pytorch-runner" in summary[0] and "deformrt-onnxrt-runner" in summary[0]
    assert "Pass Rate: 100.00%" in summary[0] and "PASSED | Runtime" in log


def test_saved_outputs_match_an_fp64_reference(models, plugin_run):
    """What Polygraphy compared is right: the saved inputs follow deformrt's defaults, and both
    runners' saved outputs match PyTorch in fp64 computed here on those inputs."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    from exporter.onnx.metadata import ExportMetadata
    from exporter.polygraphy_ext.args import pixel_value_range

    result, inputs_path, outputs_path = plugin_run
    assert result.returncode == 0, result.stdout[-3000:]
    [inputs] = load_json(inputs_path)
    images = inputs["images"]
    low, high = pixel_value_range(ExportMetadata.from_model(models["plugin"]))
    assert images.shape == (1, 3, *EXPORT_SIZE) and images.dtype == np.float32
    assert low <= images.min() < low + 0.05 * (high - low) and high - 0.05 * (high - low) < images.max() <= high
    reference = _fp64_reference(models, inputs)
    results = RunResults.load(str(outputs_path))
    assert len(results) == 2
    for runner_name, [iteration] in results.items():
        assert list(iteration.keys()) == list(reference)
        for name, expected in reference.items():
            peak = np.abs(expected).max()
            assert 10 < peak < 1e4
            assert np.abs(iteration[name] - expected).max() <= 1e-5 * peak, (runner_name, name)


def test_onnxrt_on_the_standard_flavour_and_fp64_pytorch_against_saved_outputs(models, plugin_run):
    """Polygraphy's own --onnxrt on the standard flavour and the PyTorch runner in fp64, on the saved
    inputs, each compared in turn and against the plugin flavour's saved outputs: all pass."""
    _, inputs, outputs = plugin_run
    result = polygraphy_run(models["onnx"], "--onnxrt", "--deformrt-torch", "--deformrt-torch-precision", "fp64",
                            "--deformrt-weights", models["a"], "--load-inputs", inputs, "--load-outputs", outputs,
                            *TOLERANCE, cwd=models["dir"])
    assert result.returncode == 0, result.stdout[-3000:]
    summary = [line for line in result.stdout.splitlines() if "Accuracy Summary" in line]
    assert len(summary) == 3 and all("Pass Rate: 100.00%" in line for line in summary)
    assert "onnxrt-runner" in summary[0] and "pytorch-runner" in summary[0]


def test_a_real_difference_fails_the_comparison(models, plugin_run):
    """The tolerance used above catches an error of 1e-4 of an output's peak in one element: reloaded
    outputs with one value changed fail against ONNX Runtime on the same inputs, exit status 1."""
    from polygraphy.comparator import RunResults

    _, inputs, outputs = plugin_run
    results = RunResults.load(str(outputs))
    runner_name, [iteration] = next(iter(results.items()))
    p3 = iteration["P3"]
    p3.flat[p3.size // 2] += 1e-4 * np.abs(p3).max()
    results = RunResults()
    results.append((runner_name, [iteration]))
    tampered = models["dir"] / "tampered.json"
    results.save(str(tampered))
    result = polygraphy_run(models["plugin"], "--deformrt-onnxrt", "--load-inputs", inputs, "--load-outputs", tampered,
                            *TOLERANCE, cwd=models["dir"])
    assert result.returncode == 1
    assert "Mismatched outputs: ['P3']" in result.stdout and "FAILED | Runtime" in result.stdout


@pytest.mark.parametrize("case", ["other checkpoint", "no checkpoint", "no metadata"])
def test_errors_are_one_critical_line_and_exit_status_1(models, case):
    args, expected = {
        "other checkpoint": ([models["plugin"], "--deformrt-weights", models["b"]],
                             f"--deformrt-torch: checkpoint {models['b']} is not the one this model was exported "
                             f"with (a.pth, sha256 "),
        "no checkpoint": ([models["plugin"]], "--deformrt-torch: this model was exported with weights from a.pth; "
                                              "pass that checkpoint to rebuild it (--deformrt-weights)"),
        "no metadata": ([models["plain"], "--deformrt-weights", models["a"]],
                        f"--deformrt-torch needs an ONNX model exported by deformrt: {models['plain']}: ONNX metadata "
                        f"has no 'deformrt.version'"),
    }[case]
    result = polygraphy_run(*args, "--deformrt-torch", "--deformrt-onnxrt", cwd=models["dir"])
    assert result.returncode == 1
    [line] = _critical_lines(result.stdout)
    assert line.startswith(f"[!] {expected}"), result.stdout[-2000:]
    assert "Traceback" not in result.stdout


def test_generated_script_and_opting_out_of_the_defaults(models):
    """--gen-script writes the runners and deformrt's data loader defaults into a script Python can
    compile; --no-deformrt-defaults leaves Polygraphy's own defaults."""
    d = models["dir"]
    common = [models["plugin"], "--deformrt-torch", "--deformrt-weights", models["a"], "--deformrt-onnxrt",
              "--deformrt-onnxrt-provider", "cpu", "--deformrt-torch-precision", "fp64"]
    assert polygraphy_run(*common, "--gen-script", d / "with.py", cwd=d).returncode == 0
    assert polygraphy_run(*common, "--no-deformrt-defaults", "--gen-script", d / "without.py", cwd=d).returncode == 0
    with_defaults, without = (d / "with.py").read_text(), (d / "without.py").read_text()
    compile(with_defaults, "with.py", "exec")
    assert "from exporter.polygraphy_ext.runners import deformrt_onnxrt_runner, deformrt_torch_runner" in with_defaults
    assert (f"deformrt_torch_runner({str(models['plugin'])!r}, weights={str(models['a'])!r}, device='cpu', "
            f"precision='fp64')") in with_defaults
    assert f"deformrt_onnxrt_runner({str(models['plugin'])!r}, provider='cpu')" in with_defaults
    assert "val_range={'images': (-122.77" in with_defaults and "[1, 3, 64, 64]" in with_defaults
    assert "val_range" not in without and "[1, 3, 64, 64]" not in without
    assert "deformrt_torch_runner(" in without


def test_inputs_writer_matches_deformrt_compare_inputs(models, capsys):
    """``python -m exporter.polygraphy_ext.inputs`` (its main, in this process) writes the batch
    ``deformrt compare`` would make (random images, preprocessed), in the format --load-inputs reads;
    an existing file is kept."""
    from polygraphy.json import load_json

    from exporter.evaluation.compare import make_inputs
    from exporter.onnx.metadata import ExportMetadata
    from exporter.polygraphy_ext.inputs import main

    out = models["dir"] / "batch2.json"
    argv = list(map(str, [models["onnx"], "-o", out, "--batch", 2, "--shape", "96x64", "--seed", 5]))
    assert main(argv) == 0
    assert "images 2x3x96x64 (random, seed 5)" in capsys.readouterr().err
    [feed] = load_json(out)
    expected, _ = make_inputs(ExportMetadata.from_model(models["onnx"]), (), 2, (96, 64), 5)
    np.testing.assert_array_equal(feed["images"], expected)
    assert main(argv) == 1 and "already exists; pass --force" in capsys.readouterr().err


def test_readme_reference_outputs_lines_as_written(models, tmp_path):
    """The README's "reference outputs once" lines, as processes with exactly its flags: the inputs writer on
    a JPEG, then Polygraphy's PyTorch runner on those inputs saving its outputs. The feed is the one
    ``deformrt compare`` makes from that image; the saved outputs are the runner's on it."""
    import shutil

    from PIL import Image
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    from exporter.evaluation.compare import make_inputs
    from exporter.onnx.metadata import ExportMetadata

    shutil.copyfile(models["plugin"], tmp_path / "R-101-FPN-dcn.onnx")
    shutil.copyfile(models["a"], tmp_path / "model_final.pth")
    pixels = np.random.default_rng().integers(0, 256, (EXPORT_SIZE[0], EXPORT_SIZE[1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "street.jpg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    written = subprocess.run([sys.executable, "-m", "exporter.polygraphy_ext.inputs", "R-101-FPN-dcn.onnx", "-o",
                              "inputs.json", "--images", "street.jpg"], cwd=tmp_path, env=env, text=True,
                             capture_output=True, timeout=600)
    assert written.returncode == 0 and "wrote inputs.json" in written.stderr, written.stderr
    [feed] = load_json(str(tmp_path / "inputs.json"))
    expected, _ = make_inputs(ExportMetadata.from_model(tmp_path / "R-101-FPN-dcn.onnx"), [tmp_path / "street.jpg"],
                              1, None, None)
    np.testing.assert_array_equal(feed["images"], expected)
    saved = polygraphy_run("R-101-FPN-dcn.onnx", "--deformrt-torch", "--deformrt-weights", "model_final.pth",
                           "--load-inputs", "inputs.json", "--save-outputs", "torch-outputs.json", cwd=tmp_path)
    assert saved.returncode == 0 and not _critical_lines(saved.stdout), saved.stdout[-3000:]
    [(_, [iteration])] = RunResults.load(str(tmp_path / "torch-outputs.json")).items()
    reference = _fp64_reference(models, feed)  # checkpoint A in float64 on the written feed
    assert list(iteration.keys()) == list(reference)
    for name, want in reference.items():
        assert np.abs(iteration[name] - want).max() <= 1e-5 * np.abs(want).max(), name


# ----------------------------------------------------------------------------------------------
# The same comparisons with TensorRT: need TensorRT, a GPU and, for the plugin flavour, our plugin.


def _tensorrt_plugin() -> Path:
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT's Python package is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from models.errors import DeformRTError
    from models.native import AUTOLOAD_PLUGIN_LIBRARY, find_plugin_library

    try:
        library = find_plugin_library()
    except DeformRTError as exc:
        pytest.skip(f"deformrt's TensorRT plugin is not built: {exc}")
    # Polygraphy's --plugins dlopens the file (ctypes): the self-registering file is the one for it.
    autoload = library.with_name(AUTOLOAD_PLUGIN_LIBRARY)
    if not autoload.is_file():
        pytest.skip(f"{autoload} is not built")
    return autoload


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("flavour", ["plugin", "onnx"])
def test_tensorrt_against_the_pytorch_runner_and_saved_outputs(models, plugin_run, flavour):
    """--trt (with our plugin for the plugin flavour; TensorRT's own DeformConv for the standard one)
    against the PyTorch runner on CUDA and the saved outputs."""
    plugin = _tensorrt_plugin()
    _, inputs, outputs = plugin_run
    plugins = ["--plugins", plugin] if flavour == "plugin" else []
    result = polygraphy_run(models[flavour], "--trt", *plugins, "--deformrt-torch", "--deformrt-weights", models["a"],
                            "--deformrt-torch-device", "cuda", "--load-inputs", inputs, "--load-outputs", outputs,
                            *TOLERANCE, cwd=models["dir"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert sum("Pass Rate: 100.00%" in line for line in result.stdout.splitlines()) == 3


@pytest.mark.gpu
def test_cuda_pytorch_and_onnxruntime_against_saved_outputs(models, plugin_run):
    """Both deformrt runners on CUDA against the CPU run's saved outputs, on the same inputs."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _, inputs, outputs = plugin_run
    result = polygraphy_run(models["plugin"], "--deformrt-torch", "--deformrt-weights", models["a"],
                            "--deformrt-torch-device", "cuda", "--deformrt-onnxrt",
                            "--deformrt-onnxrt-provider", "cuda",
                            "--load-inputs", inputs, "--load-outputs", outputs, *TOLERANCE, cwd=models["dir"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert sum("Pass Rate: 100.00%" in line for line in result.stdout.splitlines()) == 3
