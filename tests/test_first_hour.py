"""The first hour of a new user (issue 21), each item run as the user types it: the ``deformrt``
command in a shell (subprocess, the virtual environment's bin/ on PATH), the demo's printed next
steps, the README's quick start.

- wrong-body checkpoints refused; BODY vs --config-file;
- random weights: export's verification and ``deformrt compare`` tell one story, and the synthetic
  checkpoint the note names gives a clean check;
- the first five minutes: how to get the command after ``make demo``, the demo's next steps, progress
  with the time left;
- one command line: help, --debug anywhere, outputs checked first, one shape syntax, one --json, one
  placeholder style, old spellings.

The expensive part is one random-weight export that is ill-conditioned (R-50-C4, narrow, DCN in
res2-res4, 384x384, static: PyTorch fp32 is ~1e-2 away from float64 there). The demo's next steps
are in tests/test_demo.py (a file of their own, so the two slow parts run on different workers).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_shell import BARE_PATH, ROOT, deformrt, deformrt_process, shell, table_rows
from exporter.cli import options as cli_options
from exporter.onnx.metadata import ExportMetadata
from models import build_backbone, get_cfg

def commands() -> dict:
    """Every ``deformrt`` command (click objects by name), including ones added later."""
    import typer

    from exporter import cli

    return typer.main.get_command(cli.app).commands


# A whole detector's config that names no body (upstream's C4 configs rely on the default, R-50-C4).
RPN_C4_CONFIG = "MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  RPN_ONLY: True\n"

# Random weights that make the model ill-conditioned at 384x384, cheaply (narrow widths, C4).
ILL_KEY_VALUES = ["MODEL.RESNETS.STAGE_WITH_DCN", "(True, True, True, False)", "MODEL.RESNETS.WITH_MODULATED_DCN",
                  "True", "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
                  "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "256"]


def one_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 1, one `error:` line naming ``fragments`` (warnings aside), no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder this process cannot write: a read-only tmp folder, or (as root, who may write anywhere
    mode bits allow nothing) /proc/sys, which nobody can create files in."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        yield folder
    elif not os.access("/proc/sys", os.W_OK):
        yield Path("/proc/sys")
    else:
        pytest.skip("no folder here is read-only for this user")
    folder.chmod(0o755)


# ----------------------------------------------------------------------------------------------
# One command line


def test_bare_deformrt_prints_help_and_exits_0():
    proc = deformrt_process()
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("Usage: deformrt [OPTIONS] COMMAND [ARGS]...")
    for command in commands():
        assert re.search(rf"^  {re.escape(command)} +\S", proc.stdout, re.M), command


def test_help_is_plain_complete_and_uses_one_placeholder_style():
    """Every command's --help at 80 columns: every option name whole (never cut or broken at a
    hyphen), no `<bool>`-style types, and every value placeholder in the one documented style."""
    for name, command in commands().items():
        proc = deformrt_process(name, "--help")
        assert proc.returncode == 0 and proc.stderr == "", (name, proc.stderr)
        text = proc.stdout
        assert "…" not in text and not re.search(r"<(bool|str|int|float|path)", text), (name, text)
        assert not re.search(r"\bH W\b", text), (name, text)  # one shape syntax: HxW
        for param in command.params:
            if param.param_type_name == "argument":
                assert cli_options.PLACEHOLDER_PATTERN.match(param.metavar), (name, param.metavar)
                assert param.metavar in text.splitlines()[0], (name, text.splitlines()[0])
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (name, opt)
            if param.is_flag:
                assert param.metavar is None, (name, param.opts)
            else:
                assert param.metavar and cli_options.PLACEHOLDER_PATTERN.match(param.metavar), (name, param.opts)
                assert any(f"{opt} {param.metavar}" in text for opt in param.opts), (name, param.opts)
            if param.name == "as_json":
                assert param.is_flag and "one JSON document" in param.help, name
            if param.name == "shape":
                assert param.metavar == cli_options.HW, name
            if param.name.endswith("_shape") and param.name != "shape":
                assert param.metavar == cli_options.PROFILE_SHAPE, name


@pytest.mark.parametrize("typed, env, traceback", [
    (["info", "missing.onnx", "--debug"], {}, True),
    (["info", "missing.onnx"], {"DEFORMRT_DEBUG": "1"}, True),
])
def test_debug_anywhere_and_from_the_environment(tmp_path, typed, env, traceback):
    proc = deformrt_process(*typed, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    if traceback:
        assert "Traceback" in proc.stderr and "DeformRTError" in proc.stderr, proc.stderr
    else:
        one_error(proc, "missing.onnx")


@pytest.mark.parametrize("typed, env", [
    (["--debug", "info", "missing.onnx"], {}),
    (["info", "--debug", "missing.onnx"], {}),
    (["export", "R-50-FPX", "--onnx", "--debug"], {}),  # export takes unknown dash tokens as KEY VALUE
    (["info", "missing.onnx"], {"DEFORMRT_DEBUG": "yes"}),
])
def test_debug_raises_wherever_it_is_given(tmp_path, typed, env):
    from typer.testing import CliRunner

    from exporter import cli
    from models.errors import DeformRTError

    result = CliRunner().invoke(cli.app, typed, env=env)
    assert isinstance(result.exception, DeformRTError) and "error:" not in result.stderr
    for quiet in ({}, {"DEFORMRT_DEBUG": "0"}):  # without either: one line
        one_error(deformrt("info", "missing.onnx", cwd=tmp_path, env=quiet), "missing.onnx")


@pytest.mark.parametrize("typed, fragment", [
    (["deploy", "model.onnx", "-o", "{ro}/bundle"], "{ro} is not writable"),
    (["compare", "model.onnx", "--json-file", "{ro}/report.json"], "{ro} is not writable"),
    (["bench", "model.onnx", "--json-file", "{ro}/report.json"], "{ro} is not writable"),
    (["export", "R-50-C4", "--onnx", "-o", "{ro}/r50.onnx"], "{ro} is not writable"),
    (["synthetic-checkpoint", "R-50-C4", "-o", "{ro}/r50.pth"], "{ro} is not writable"),
    (["build-engine", "model.onnx", "-o", "{ro}/model.plan"], "{ro} is not writable"),
    (["compare", "model.onnx", "--json-file", "no/such/folder/report.json"], "no/such/folder does not exist"),
    (["export", "--config-file", "{cfg}", "--detector", "--onnx", "-o", "{ro}/d.onnx"], "{ro} is not writable"),
    (["synthetic-checkpoint", "--config-file", "{cfg}", "--detector", "-o", "{ro}/d.pth"], "{ro} is not writable"),
    (["predict", "model.onnx", "street.png", "--json-file", "{ro}/results.json"], "{ro} is not writable"),
    (["predict", "model.onnx", "street.png", "-o", "{ro}/predictions"], "{ro} is not writable"),
])
def test_outputs_are_checked_before_any_work(tmp_path, read_only_dir, typed, fragment):
    """Before reading the model (model.onnx does not even exist) or building anything: one error line
    about the output, no progress, nothing printed as a result. ({cfg}: a whole detector's config.)"""
    cfg = tmp_path / "rpn_c4.yaml"
    cfg.write_text(RPN_C4_CONFIG)
    proc = deformrt(*[a.format(ro=read_only_dir, cfg=cfg) for a in typed], cwd=tmp_path)
    one_error(proc, fragment.format(ro=read_only_dir))
    assert proc.stdout == "" and "[deformrt]" not in proc.stderr


def test_old_spellings_work_with_one_notice(tmp_path):
    proc = deformrt("export", "R-50-FPN", "--onnx", "--input-size", "100", "128", cwd=tmp_path)
    assert "warning: deprecated: `--input-size 100 128` is now `--shape 100x128`" in proc.stderr
    one_error(proc, "--shape 100x128", "multiples of 32", "--shape 128x128")
    assert cli_options.rewrite_deprecated(["compare", "m.onnx", "--json", "-"], notify=lambda _: None) == [
        "compare", "m.onnx", "--json"]
    assert cli_options.rewrite_deprecated(["bench", "m.onnx", "--json", "out.json", "--batch", "2"],
                                          notify=lambda _: None) == ["bench", "m.onnx", "--json-file", "out.json",
                                                                     "--batch", "2"]
    assert cli_options.rewrite_deprecated(["compare", "--json", "m.onnx"], notify=lambda _: None) == [
        "compare", "--json", "m.onnx"]


# ----------------------------------------------------------------------------------------------
# Wrong results that exited 0


def _detector_checkpoint(body: str, path: Path) -> Path:
    """A whole maskrcnn-benchmark detector checkpoint of ``body`` (backbone + heads), as training writes it."""
    model = build_backbone(get_cfg(body))
    state = {f"module.backbone.{k}": v for k, v in model.state_dict().items()}
    state["module.rpn.head.conv.weight"] = torch.randn(4, 4, 3, 3)
    state["module.roi_heads.box.predictor.cls_score.weight"] = torch.randn(81, 8)
    torch.save({"model": state, "iteration": 90000}, path)
    return path


def test_checkpoint_of_another_depth_is_refused(tmp_path):
    """The issue's case: an R-101-FPN detector checkpoint given to an R-50-FPN export."""
    r101 = _detector_checkpoint("R-101-FPN", tmp_path / "r101_model_final.pth")
    line = one_error(deformrt("export", "R-50-FPN", "--onnx", "--weights", r101, cwd=tmp_path),
                     "r101_model_final.pth", "body.layer3.6.", "it looks like a checkpoint for R-101-FPN",
                     "3-4-23-3 blocks per stage", "--allow-unexpected")
    assert "allow_unexpected" not in line and "strict=" not in line  # no Python-only spelling on the command line
    assert not list(tmp_path.glob("*.onnx"))
    # Deliberately: --allow-unexpected loads what fits and lists the rest; the export goes on (here to
    # its next check, the input size, which fails at once instead of exporting for minutes).
    unexpected = sum(1 for k in torch.load(r101, weights_only=True)["model"]
                     if re.match(r"module\.backbone\.body\.layer3\.([6-9]|1\d|2\d)\.", k))
    proc = deformrt("export", "R-50-FPN", "--onnx", "--weights", r101, "--allow-unexpected", "--shape", "100x128",
                    cwd=tmp_path)
    assert f"{unexpected} unexpected" in proc.stderr, proc.stderr
    one_error(proc, "--shape 100x128", "multiples of 32")
    # The other way round: an R-50 checkpoint for an R-101 body misses tensors, and says whose it is.
    r50 = _detector_checkpoint("R-50-FPN", tmp_path / "r50.pth")
    line = one_error(deformrt("export", "R-101-FPN", "--onnx", "--weights", r50, cwd=tmp_path),
                     "are not in it: body.layer3.6.", "it looks like a checkpoint for R-50-FPN")
    assert "strict=False" not in line and "--allow-unexpected" not in line


def test_body_and_config_file_never_disagree_silently(tmp_path):
    config = tmp_path / "r101.yaml"
    config.write_text("MODEL:\n  BACKBONE:\n    CONV_BODY: R-101-FPN\n  RESNETS:\n    WITH_MODULATED_DCN: True\n")
    one_error(deformrt("export", "R-50-FPN", "--onnx", "--config-file", config, cwd=tmp_path),
              "BODY is R-50-FPN but MODEL.BACKBONE.CONV_BODY in r101.yaml is R-101-FPN",
              "leave BODY out to export the config's R-101-FPN")
    one_error(deformrt("export", "R-50-FPN", "--onnx", "MODEL.BACKBONE.CONV_BODY", "R-101-FPN", cwd=tmp_path),
              "BODY is R-50-FPN but KEY VALUE MODEL.BACKBONE.CONV_BODY is R-101-FPN: name the body once")
    # With the config naming the body, BODY is left out; the first KEY VALUE is not taken for a body.
    one_error(deformrt("export", "--onnx", "--config-file", config, "MODEL.RESNETS.STAGE_WITH_DCN",
                       "(False, False, True, True)", "-o", "no/such/dir/x.onnx", cwd=tmp_path), "does not exist")
    c4 = tmp_path / "c4.yaml"
    c4.write_text("MODEL:\n  BACKBONE:\n    CONV_BODY: R-50-C4\n")
    proc = deformrt("synthetic-checkpoint", "--config-file", c4, "-o", "c4.pth", "--shape", "64x64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "model:   R-50-C4" in proc.stdout
    one_error(deformrt("export", "--onnx", cwd=tmp_path), "say which body: BODY")


def test_detector_export_takes_the_backbone_export_s_command_line(tmp_path):
    """--detector: the config file is required, BODY optional by the same rule (a config without a
    body is upstream's R-50-C4), and the detector-only options are refused without --detector."""
    from exporter.onnx.export import resolve_body
    from models.errors import DeformRTError

    cfg = tmp_path / "rpn_c4.yaml"
    cfg.write_text(RPN_C4_CONFIG)
    assert resolve_body(None, str(cfg), ["MODEL.RPN.NMS_THRESH", "0.6"], detector=True) == (
        "R-50-C4", ["MODEL.RPN.NMS_THRESH", "0.6"])
    with pytest.raises(DeformRTError, match="rpn_c4.yaml does not set MODEL.BACKBONE.CONV_BODY"):
        resolve_body(None, str(cfg))  # a backbone export asks which body, as before
    one_error(deformrt("export", "R-50-FPN", "--config-file", cfg, "--detector", "--onnx", cwd=tmp_path),
              "BODY is R-50-FPN but rpn_c4.yaml (no MODEL.BACKBONE.CONV_BODY: upstream's default) is R-50-C4")
    one_error(deformrt("export", "--onnx", "--detector", cwd=tmp_path), "--detector needs --config-file")
    one_error(deformrt("synthetic-checkpoint", "R-50-FPN", "--detector", cwd=tmp_path), "--detector needs --config-file")
    for flag in ("--debug-outputs", "--no-trt-limits"):
        one_error(deformrt("export", "R-50-FPN", "--onnx", flag, cwd=tmp_path),
                  f"{flag} applies to whole detectors: add --detector")
    assert not list(tmp_path.glob("*.onnx"))


# ----------------------------------------------------------------------------------------------
# Random weights: one story


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """`deformrt export` of an ill-conditioned random-weight model, as a user types it."""
    folder = tmp_path_factory.mktemp("random")
    proc = deformrt("export", "R-50-C4", "--onnx", "-o", "random.onnx", "--shape", "384x384", "--static",
                    *ILL_KEY_VALUES, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc


def test_export_verification_explains_random_weights(random_export):
    folder, proc = random_export
    rows = table_rows(proc.stdout, "yes")
    assert rows and all(row.endswith("yes (fp64)") for row in rows), proc.stdout  # no bare "yes" beside a big error
    for sentence in ("note: the model is ill-conditioned at these inputs", "px away on average",
                     "with random weights (seed 0)", "judged against float64 PyTorch",
                     "deformrt synthetic-checkpoint R-50-C4 -o R-50-C4-synthetic.pth"):
        assert sentence in proc.stdout, sentence
    # Progress says how long the runs will take once the first has run.
    assert re.search(r"\(about [\d.]+ (s|min)", proc.stderr) and "left" in proc.stderr, proc.stderr


def test_compare_tells_the_same_story(random_export):
    folder, exported = random_export
    proc = deformrt("compare", "random.onnx", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the same verdict as the verification: passed
    assert proc.stdout.strip().endswith("PASSED")
    assert "PASS (vs fp64)" in proc.stdout and "torch fp32 vs fp64" in proc.stdout
    note = [line.strip() for line in proc.stdout.splitlines() if "synthetic-checkpoint" in line]
    same = [line.strip() for line in exported.stdout.splitlines() if "synthetic-checkpoint" in line]
    assert note and note == [s.replace("1e-04", "1e-03") for s in same]
    assert "note: the model is ill-conditioned at these inputs" in proc.stdout
    assert "running PyTorch in float64" in proc.stderr


def test_the_note_s_synthetic_checkpoint_gives_a_clean_check(random_export):
    """The note's command, as printed (with the export's KEY VALUE pairs, as it says), saves weights
    whose DCN offsets are a trained model's few pixels, on which PyTorch fp32 is back within fp32
    rounding of float64: the strict tolerance holds again. (The whole flow, synthetic checkpoint ->
    export -> strict verification and compare, is what the demo runs: see the demo test.)"""
    from exporter.evaluation.conditioning import relative_error, run_torch
    from exporter.evaluation.verify import random_images
    from exporter.onnx.export import build_model, load_config

    folder, exported = random_export
    [line] = [line for line in exported.stdout.splitlines() if "deformrt synthetic-checkpoint" in line]
    command = re.search(r"(deformrt synthetic-checkpoint \S+ -o \S+) \[KEY VALUE \.\.\.\]", line).group(1)
    typed = f"{command} {shlex.join(ILL_KEY_VALUES)}"  # "[KEY VALUE ...] (as exported)"
    proc = deformrt(*shlex.split(typed)[1:], cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "offset convs rescaled to 2 px std" in proc.stdout

    meta = ExportMetadata.from_model(folder / "random.onnx")
    clean = build_model(load_config("R-50-C4", opts=ILL_KEY_VALUES), weights=str(folder / "R-50-C4-synthetic.pth"))
    images = [random_images(meta.export_shape, meta, np.random.default_rng(7))]
    (fp32,), offsets = run_torch(clean.model, images, torch.float32)
    (fp64,), _ = run_torch(clean.model, images, torch.float64)
    assert offsets < 4.0  # a trained model's scale (the random export's: tens of px, see its note)
    assert relative_error(fp64[0], fp32[0])[1] < 1e-5  # well inside verify's 1e-4: a clean check


def test_bench_shows_the_time_left_and_json_is_one_document(random_export):
    folder, _ = random_export
    proc = deformrt("bench", "random.onnx", "--backends", "ort", "--warmup", "1", "--iterations", "3", "--json",
                    cwd=folder)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is one JSON document, the table went to stderr
    assert [r["backend"] for r in report["results"]] == ["ort"] and "p50 vs ort" in proc.stderr
    assert re.search(r"timing ort .*: 1/4 runs, [\d.]+ s each, about [\d.]+ s left", proc.stderr), proc.stderr
    assert re.search(r"timing ort .*: done in [\d.]+ s \(4 runs", proc.stderr)
    # The old spelling still works, with one notice.
    proc = deformrt("bench", "random.onnx", "--backends", "ort", "--warmup", "0", "--iterations", "1", "--json",
                    "old.json", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "deprecated: `--json FILE` is now `--json-file FILE`" in proc.stderr
    assert json.loads((folder / "old.json").read_text())["results"][0]["backend"] == "ort"
    info = deformrt("info", "random.onnx", "--json", cwd=folder)
    assert info.returncode == 0 and info.stderr == "" and json.loads(info.stdout)["metadata"]["body"] == "R-50-C4"


# ----------------------------------------------------------------------------------------------
# The first five minutes


def test_readme_quick_start_gets_the_command():
    """The README's quick start, its shell lines as written (the make targets aside: they are this
    test suite and the demo, run below with small arguments)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", readme, re.S).group(1)
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    typed = [line for line in lines if line and not line.startswith("make ")]
    assert "source .venv/bin/activate" in typed and "deformrt --help" in typed
    assert shell("command -v deformrt", path=BARE_PATH).returncode != 0  # not on PATH before activating
    proc = shell(" && ".join(typed), path=BARE_PATH)
    assert proc.returncode == 0 and "Usage: deformrt" in proc.stdout, proc.stderr
