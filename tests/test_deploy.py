"""``deformrt deploy``: the bundle's contents, its references reproduced by ONNX Runtime, the device-side
Python without torch, onnx or onnxruntime, the bundle's plugin sources against every TensorRT header set,
and the command's one-line errors.

One real export (R-50-FPN, modulated DCN in res3-res5, 64x96) is bundled once for the module."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from exporter import cli
from exporter.deploy import layout
from exporter.deploy.check import check_outputs, compare_output, parse_conf, read_conf
from exporter.evaluation.compare import TOLERANCES
from exporter.evaluation.inputs import preprocess, random_images
from exporter.onnx.metadata import ExportMetadata
from exporter.onnx.passes import is_onnx_deform_conv, is_plugin_deform_conv
from models.errors import DeformRTError
from models.native import PLUGINS_DIR
from trt_headers import HEADER_SETS_DIR, cuda_include, header_sets

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
EXPORT_SIZE = (64, 96)
SEED = 0
DEVICE_MODULES = ("exporter.deploy.check", "exporter.deploy.predict", "exporter.trt.engine", "exporter.trt.session",
                  "exporter.trt.plugin",
                  "exporter.trt.sidecar")
# What the device lacks; the device-side Python must not need any of it.
BLOCKED = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "polygraphy", "typer", "yaml")


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def one_error_line(result, *fragments) -> str:
    """Exit status 1, nothing on stdout, exactly one ``error:`` line naming ``fragments``, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from exporter.onnx.export import ExportOptions, build_model, export_model, load_config

    cfg = load_config(config_file="e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml")
    proto = export_model(build_model(cfg, seed=3), ExportOptions(dcn_op="plugin", input_size=EXPORT_SIZE))
    path = tmp_path_factory.mktemp("deploy") / "r50-fpn-mdcn.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.fixture(scope="module")
def deployed(exported):
    """The bundle, written over an existing folder: refused without --force (folder untouched), then
    replaced with --force --json. Returns (bundle dir, CLI result, the refusal)."""
    bundle = exported.parent / "bundle"
    bundle.mkdir()
    (bundle / "keep.txt").write_text("previous")
    refused = invoke("deploy", exported, "-o", bundle)
    assert (bundle / "keep.txt").read_text() == "previous"
    result = invoke("deploy", exported, "-o", bundle, "--force", "--json")
    assert result.exit_code == 0, result.output
    return bundle, result, refused


@pytest.fixture(scope="module")
def conf(deployed) -> dict:
    return read_conf(deployed[0])


MODELS = [layout.onnx_model(dcn, precision) for dcn in ("plugin", "onnx") for precision in ("fp32", "fp16")]


# ----------------------------------------------------------------------------------------------
# Contents


def test_existing_folder_is_refused_without_force_and_replaced_with_it(deployed):
    bundle, _, refused = deployed
    one_error_line(refused, f"output {bundle} already exists", "--force")
    assert not (bundle / "keep.txt").exists()
    leftovers = [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "temporary folders left beside the bundle"


def test_bundle_holds_every_file(deployed, conf):
    bundle, result, _ = deployed
    for name in (layout.BUILD_SCRIPT, layout.README, layout.CONF, layout.METADATA, layout.CHECKSUMS, *MODELS,
                 f"{layout.REFERENCE_INPUTS}/images.npy"):
        assert (bundle / name).is_file(), name
    for name in ("P2", "P3", "P4", "P5", "P6"):
        assert (bundle / layout.REFERENCE_OUTPUTS / f"{name}.npy").is_file()
    mode = (bundle / layout.BUILD_SCRIPT).stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXOTH, oct(mode)
    assert (bundle / layout.BUILD_SCRIPT).read_bytes() == (PLUGINS_DIR / "deploy" / "build.sh").read_bytes()
    # The bundle's README is plugins/deploy/bundle-README.md with the bundle's own folder name in its `cd`.
    template = (PLUGINS_DIR / "deploy" / "bundle-README.md").read_text()
    assert f"cd {layout.README_BUNDLE_MARKER}\n" in template
    readme = (bundle / layout.README).read_text()
    assert readme == template.replace(layout.README_BUNDLE_MARKER, bundle.name)
    assert f"\ncd {bundle.name}\n./build.sh " in readme
    # Progress on stderr, the stable JSON on stdout.
    assert "[deformrt] computing PyTorch fp32 references at 1x3x64x96" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["path"] == str(bundle.resolve()) and summary["body"] == "R-50-FPN" and summary["dcn_nodes"] == 13
    assert sorted(summary["models"].values()) == sorted(MODELS) and summary["precision"] == "fp16"
    assert summary["tolerances"] == {"fp32": TOLERANCES["fp32"], "fp16": TOLERANCES["fp16"]}
    assert summary["reference"] == {"shape": [1, 3, *EXPORT_SIZE], "source": "random", "seed": SEED, "images": [],
                                    "computed_by": conf["reference_by"]}
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert summary["files"] == len(files) and summary["size_bytes"] == sum(p.stat().st_size for p in files)


def test_checksums_cover_every_file(deployed):
    import hashlib

    bundle = deployed[0]
    listed = {}
    for line in (bundle / layout.CHECKSUMS).read_text().splitlines():
        digest, name = line.split("  ", 1)  # sha256sum's format, so `sha256sum -c SHA256SUMS` checks a copy
        listed[name] = digest
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert set(listed) == files - {layout.CHECKSUMS}
    for name, digest in listed.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name


def test_plugin_project_is_copied_without_build_outputs(deployed):
    bundle = deployed[0]
    listed = subprocess.run(["git", "ls-files", "plugins"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("git ls-files is needed to list the plugin sources")
    tracked = {Path(p).relative_to("plugins") for p in listed.stdout.split()}
    expected = {p for p in tracked if p.parts[0] != "deploy" and (PLUGINS_DIR / p).is_file()}
    copied = {p.relative_to(bundle / layout.PLUGINS_DIR) for p in (bundle / layout.PLUGINS_DIR).rglob("*")
              if p.is_file()}
    assert expected <= copied, sorted(map(str, expected - copied))
    assert {"CMakeLists.txt", "include", "src"} <= {p.parts[0] for p in copied}
    assert not any(part.startswith("build") for p in copied for part in p.parts[:-1])
    assert not any(p.suffix in (".o", ".so") for p in copied)
    for rel in expected:
        assert (bundle / layout.PLUGINS_DIR / rel).read_bytes() == (PLUGINS_DIR / rel).read_bytes(), rel


def test_deploy_conf_and_metadata(deployed, conf, exported):
    bundle = deployed[0]
    meta = ExportMetadata.from_model(exported)
    text = (bundle / layout.CONF).read_text()
    keys = [line.split("=", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert keys == list(layout.CONF_KEYS) and text.startswith("# written by deformrt deploy")
    assert conf["format"] == "1" and conf["precision"] == "fp16" and conf["tensorrt_majors"] == "10 11"
    assert (conf["body"], conf["weights"]) == ("R-50-FPN", "seed:3")
    assert conf["inputs"] == "images" and conf["outputs"].split() == list(meta.output_names)
    assert float(conf["tolerance_fp32"]) == TOLERANCES["fp32"] and float(conf["tolerance_fp16"]) == TOLERANCES["fp16"]
    assert conf["opt_shapes"] == "images:1x3x64x96"
    lo, hi = (tuple(int(d) for d in conf[k].split(":")[1].split("x")) for k in ("min_shapes", "max_shapes"))
    assert lo[:2] == (1, 3) and all(a <= b for a, b in zip(lo, (1, 3, *EXPORT_SIZE)))
    assert hi[1] == 3 and all(a >= b for a, b in zip(hi, (1, 3, *EXPORT_SIZE)))
    assert all(d % meta.size_divisibility == 0 for d in (*lo[2:], *hi[2:]))
    assert conf["reference_shape"] == "1x3x64x96" and conf["reference_source"] == "random"
    assert conf["reference_seed"] == str(SEED) and conf["reference_images"] == ""
    assert re.fullmatch(r"PyTorch \d+\.\d+\.\d+ fp32 CPU", conf["reference_by"])
    # every key of build.sh's reference example, each documented by a comment line
    example = parse_conf((PLUGINS_DIR / "deploy" / "deploy.conf.example").read_text())
    assert set(example) <= set(conf), set(example) - set(conf)
    lines = text.splitlines()
    for key in layout.CONF_KEYS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[index - 1].startswith("# ") or lines[index - 1].split("=")[0] in layout.CONF_KEYS
    # build.sh copies metadata.json into the engine's sidecar as onnx_metadata: deformrt.* -> string
    assert json.loads((bundle / layout.METADATA).read_text()) == meta.to_props()


def test_every_file_and_key_build_sh_reads_is_there(deployed, conf):
    """The contract with plugins/deploy/build.sh, read from the script itself: every deploy.conf key it
    asks for, and the model file of every --dcn / precision it can be run with."""
    bundle = deployed[0]
    script = (bundle / layout.BUILD_SCRIPT).read_text()
    asked = set(re.findall(r'\bconf "?([A-Za-z_]+)(\$precision)?"?\)', script))
    assert asked, "build.sh reads no deploy.conf key?"
    for key, per_precision in asked:
        for name in ([key + p for p in layout.PRECISIONS] if per_precision else [key]):
            assert name in conf, f"build.sh reads {name} from deploy.conf"
    assert "onnx/$dcn-$precision.onnx" in script and "metadata.json" in script
    for model in MODELS:
        assert (bundle / model).is_file()
    for folder in ("reference/inputs", "reference/outputs", "plugins/CMakeLists.txt"):
        assert folder in script and (bundle / folder).exists()


def test_model_flavours(deployed, exported):
    bundle = deployed[0]
    source = onnx.load(str(exported))
    for name in MODELS:
        model = onnx.load(str(bundle / name))
        dcn, precision = Path(name).stem.split("-")
        op_check = is_plugin_deform_conv if dcn == "plugin" else is_onnx_deform_conv
        assert sum(map(op_check, model.graph.node)) == 13, name
        assert not any(is_onnx_deform_conv(n) or is_plugin_deform_conv(n)
                       for n in model.graph.node if not op_check(n)), name
        assert ExportMetadata.from_model(model).dcn_op == dcn
        assert any(o.domain == "deformrt" for o in model.opset_import) == (dcn == "plugin")
        fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        assert fp16 == (precision == "fp16"), name
        # fp32 at the boundary in every flavour: the same reference arrays feed and check them all
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                   for v in [*model.graph.input, *model.graph.output]), name
        if name == layout.onnx_model("plugin", "fp32"):  # the export was the plugin flavour already
            assert model.graph.SerializeToString() == source.graph.SerializeToString()
            assert ExportMetadata.from_model(model) == ExportMetadata.from_model(source)
        if dcn == "onnx":  # as `deformrt export --dcn-op onnx` writes it
            assert ExportMetadata.from_model(model).dcn_op_version == "ai.onnx.DeformConv/19"


# ----------------------------------------------------------------------------------------------
# References


def test_reference_input_is_the_documented_deterministic_one(deployed, exported):
    bundle = deployed[0]
    meta = ExportMetadata.from_model(exported)
    expected = preprocess(random_images(1, *EXPORT_SIZE, seed=SEED), meta)
    stored = np.load(bundle / layout.REFERENCE_INPUTS / "images.npy")
    assert stored.dtype == np.float32 and stored.flags.c_contiguous
    np.testing.assert_array_equal(stored, expected)
    assert stored.std() > 10  # real pixels, not zeros


@pytest.mark.parametrize("flavour", [m for m in MODELS if m != layout.onnx_model("plugin", "fp32")])
def test_onnxruntime_reproduces_the_references(deployed, conf, flavour):
    """ONNX Runtime, a second implementation, on the bundle's own files: the standard flavour within the
    fp32 tolerance, the mixed-fp16 flavours within fp16's (the plugin flavour run as standard DeformConv).
    plugin-fp32 is the exported graph itself (test_model_flavours)."""
    from exporter.evaluation.ort import ort_session

    bundle = deployed[0]
    precision = Path(flavour).stem.split("-")[1]
    names = conf["outputs"].split()
    session = ort_session(onnx.load(str(bundle / flavour)))
    feed = {"images": np.load(bundle / layout.REFERENCE_INPUTS / "images.npy")}
    outputs = dict(zip(names, session.run(names, feed)))
    report = check_outputs(outputs, bundle, precision)
    assert report.passed, report.table()
    assert all(o.max_abs > 0 or precision == "fp32" for o in report.outputs)
    for o in report.outputs:
        assert o.tolerance == TOLERANCES[precision] and o.shape == tuple(np.load(
            bundle / layout.REFERENCE_OUTPUTS / f"{o.name}.npy").shape)


def test_images_and_fp32(exported, tmp_path):
    """--images: the reference input is the given image preprocessed and padded as the model expects
    (its own shape, not the export shape); --fp32 is recorded as the bundle's precision."""
    from exporter.evaluation.inputs import load_image

    meta = ExportMetadata.from_model(exported)
    image = tmp_path / "street.npy"
    np.save(image, np.random.default_rng().uniform(0, 255, (50, 70, 3)))
    bundle = tmp_path / "b"
    result = invoke("deploy", exported, "-o", bundle, "--images", image, "--fp32", "--json")
    assert result.exit_code == 0, result.output
    conf = read_conf(bundle)
    assert (conf["precision"], conf["reference_source"], conf["reference_images"], conf["reference_seed"]) == (
        "fp32", "images", "street.npy", "")
    assert conf["reference_shape"] == "1x3x64x96"  # 50x70 padded to multiples of 32
    stored = np.load(bundle / layout.REFERENCE_INPUTS / "images.npy")
    np.testing.assert_array_equal(stored, preprocess([load_image(image)], meta))
    assert np.all(stored[:, :, 50:, :] == 0) and np.all(stored[:, :, :, 70:] == 0) and stored[:, :, :50, :70].std() > 10
    assert json.loads(result.stdout)["reference"]["images"] == ["street.npy"]


# ----------------------------------------------------------------------------------------------
# The numpy-only check


def test_compare_output_against_a_direct_float64_computation():
    rng = np.random.default_rng()
    reference = rng.standard_normal((2, 8, 5, 7)).astype(np.float32)
    output = (reference + rng.standard_normal(reference.shape) * 1e-3).astype(np.float16)
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    got = compare_output("P3", output, reference, 1e-2)
    assert got.max_abs == pytest.approx(diff.max(), rel=1e-12)
    assert got.max_rel == pytest.approx(diff.max() / np.abs(reference.astype(np.float64)).max(), rel=1e-12)
    assert got.passed and got.max_rel > 0
    assert not compare_output("P3", output, reference, got.max_rel * 0.99).passed
    assert compare_output("P3", output, reference, got.max_rel).passed  # the bound is inclusive

    bad = output.astype(np.float32)
    bad.flat[rng.integers(bad.size)] = np.nan
    nan = compare_output("P3", bad, reference, 1.0)
    assert not nan.passed and not nan.finite and nan.verdict() == "FAIL (NaN or Inf)" and nan.max_abs < 1
    shape = compare_output("P3", output[:1], reference, 1.0)
    assert not shape.passed and shape.verdict() == "FAIL (reference shape 2x8x5x7)"
    zeros = np.zeros((3, 4), np.float32)
    assert compare_output("Z", zeros, zeros, 1e-3).passed
    assert compare_output("Z", zeros + 1e-6, zeros, 1e3).max_rel == np.inf


def test_check_outputs_passes_fails_and_names_a_missing_output(deployed, conf):
    bundle = deployed[0]
    rng = np.random.default_rng()
    references = {n: np.load(bundle / layout.REFERENCE_OUTPUTS / f"{n}.npy") for n in conf["outputs"].split()}
    scale = {n: np.abs(r).max() for n, r in references.items()}
    close = {n: r + rng.uniform(-1, 1, r.shape).astype(np.float32) * 2e-4 * scale[n] for n, r in references.items()}
    assert check_outputs(close, bundle, "fp32").passed
    off = dict(close, P4=references["P4"] + 3e-3 * scale["P4"])
    report = check_outputs(off, bundle, "fp32")
    assert not report.passed and [o.name for o in report.outputs if not o.passed] == ["P4"]
    assert check_outputs(off, bundle, "fp16").passed
    assert "FAIL" in report.table().splitlines()[-1]
    with pytest.raises(DeformRTError, match="no output named P6"):
        check_outputs({n: a for n, a in close.items() if n != "P6"}, bundle, "fp32")
    with pytest.raises(DeformRTError, match="no tolerance for 'int8'"):
        check_outputs(close, bundle, "int8")


def test_deploy_conf_is_read_as_build_sh_reads_it(tmp_path):
    assert parse_conf("# a comment=1\nformat=1\nkey=a=b c\nkey=last\n spaced=no\nempty=\n") == {
        "format": "1", "key": "last", "empty": ""}
    with pytest.raises(DeformRTError, match="not a deformrt deploy bundle"):
        read_conf(tmp_path)
    (tmp_path / layout.CONF).write_text("format=99\n")
    with pytest.raises(DeformRTError, match="has format '99'"):
        read_conf(tmp_path)
    (tmp_path / layout.CONF).write_text("format=1\ninputs=images\n")
    with pytest.raises(DeformRTError, match="lacks deformrt_version, body"):
        read_conf(tmp_path)


# ----------------------------------------------------------------------------------------------
# deformrt's Python on the device: numpy and tensorrt only

_BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        # The device has none of these: importing one fails as it would there.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on the device)")
            return None

    sys.meta_path.insert(0, Blocker())
""")


def run_on_device_python(bundle: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that sees only the bundle's python/ of this project, with every
    package the device lacks unimportable. ``-S`` keeps site's .pth hooks (an editable install of this
    project among them) out; numpy's folder is put on the path instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(bundle / layout.PYTHON_DIR), str(Path(np.__file__).parent.parent)])
    script = _BLOCKER.format(blocked=BLOCKED) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-S", "-c", script, *args], cwd=bundle.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_device_modules_import_from_the_bundle_with_numpy_only(deployed):
    bundle = deployed[0]
    result = run_on_device_python(bundle, f"""
        import importlib, json, sys
        for blocked in {BLOCKED!r}:  # the blocker works, so the imports below prove something
            try:
                importlib.import_module(blocked)
            except ModuleNotFoundError:
                pass
            else:
                raise SystemExit(f"{{blocked}} imported despite the blocker")
        for name in {DEVICE_MODULES!r}:
            importlib.import_module(name)
        project = {{n: m.__file__ for n, m in sys.modules.items() if n.split(".")[0] in ("exporter", "models")}}
        third_party = sorted({{n.split(".")[0] for n in sys.modules}} - set(sys.stdlib_module_names)
                             - {{"exporter", "models", "__main__"}})
        print(json.dumps({{"project": project, "third_party": third_party}}))
    """)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["third_party"] == ["numpy"], found["third_party"]
    python_dir = str((bundle / layout.PYTHON_DIR).resolve())
    assert all(Path(f).resolve().as_posix().startswith(python_dir) for f in found["project"].values()), found
    assert set(DEVICE_MODULES) <= set(found["project"])


def test_device_check_command_passes_and_fails_on_the_bundle_references(deployed, conf, tmp_path):
    bundle = deployed[0]
    rng = np.random.default_rng()
    close, far = tmp_path / "close", tmp_path / "far"
    close.mkdir(), far.mkdir()
    for name in conf["outputs"].split():
        ref = np.load(bundle / layout.REFERENCE_OUTPUTS / f"{name}.npy")
        noise = rng.uniform(-1, 1, ref.shape) * np.abs(ref).max()
        np.save(close / f"{name}.npy", (ref + 1e-3 * noise).astype(np.float16))  # within fp16's 1e-2
        np.save(far / f"{name}.npy", (ref + (5e-2 if name == "P5" else 1e-3) * noise).astype(np.float32))
    main = "import sys\nfrom exporter.deploy.check import main\nsys.exit(main(sys.argv[1:]))\n"
    passed = run_on_device_python(bundle, main, str(bundle), "--outputs", str(close))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.strip().splitlines()[-1].startswith("PASS (fp16;")
    failed = run_on_device_python(bundle, main, str(bundle), "--outputs", str(far), "--json")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    report = json.loads(failed.stdout)
    assert report["passed"] is False and [o["name"] for o in report["outputs"] if not o["passed"]] == ["P5"]
    assert report["tolerance"] == TOLERANCES["fp16"]
    strict = run_on_device_python(bundle, main, str(bundle), "--outputs", str(close), "--precision", "fp32")
    assert strict.returncode == 1 and strict.stdout.strip().splitlines()[-1].startswith("FAIL (fp32;")
    missing = run_on_device_python(bundle, main, str(bundle), "--outputs", str(tmp_path))
    assert missing.returncode == 1 and missing.stdout == ""
    assert re.fullmatch(r"error: .*P2\.npy not found.*\n", missing.stderr), missing.stderr


@pytest.mark.parametrize("module, required, bad_value", [
    ("exporter.deploy.check", ["--outputs", "."], ["--tolerance", "tight"]),
    ("exporter.deploy.predict", ["img.png", "-o", "out", "--engine", "e.plan"], ["--score-threshold", "high"]),
])
def test_device_tools_usage_errors_are_one_line_and_status_1(deployed, module, required, bad_value):
    """The device-side tools follow the command line's convention (README: exit status 1 and one
    ``error:`` line for bad input), usage errors included: argparse's own would be usage text and 2."""
    bundle = deployed[0]
    main = f"import sys\nfrom {module} import main\nsys.exit(main(sys.argv[1:]))\n"
    for extra, message in ((["--no-such-option"], "unrecognized arguments: --no-such-option"),
                           (bad_value, f"argument {bad_value[0]}: invalid float value: '{bad_value[1]}'")):
        result = run_on_device_python(bundle, main, str(bundle), *required, *extra)
        assert result.returncode == 1 and result.stdout == "", (extra, result.stdout + result.stderr)
        assert result.stderr == f"error: {message}\n", result.stderr


def test_engine_environment_is_read_without_torch(deployed):
    """Reading the GPU for an engine's sidecar check must not need torch: here (no GPU) it is a one-line
    DeformRTError, not an ImportError. The stand-in ``tensorrt`` module carries only ``__version__``,
    the one attribute ``current_env`` documents reading."""
    bundle = deployed[0]
    result = run_on_device_python(bundle, """
        import types
        from exporter.trt.env import current_env
        from models.errors import DeformRTError
        try:
            current_env(types.SimpleNamespace(__version__="10.3.0.30"))
        except DeformRTError as exc:
            print("DeformRTError:", exc)
    """)
    assert result.returncode == 0 and result.stdout.startswith("DeformRTError:"), result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------
# The bundle's plugin sources against every TensorRT header set


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to compile the plugin sources")
def test_bundled_plugin_sources_compile_against_every_header_set(deployed):
    include_dirs = header_sets()
    if not include_dirs:
        pytest.skip(f"no TensorRT header sets in {HEADER_SETS_DIR} or TENSORRT_INCLUDE_DIR")
    assert len(include_dirs) >= 3 or os.environ.get("TENSORRT_INCLUDE_DIR") is not None or len(
        list(HEADER_SETS_DIR.iterdir())) < 3
    project = deployed[0] / layout.PLUGINS_DIR
    sources = sorted((project / "src").glob("*.cpp"))
    assert {"deformConvPlugin.cpp", "pluginEntry.cpp", "tensorrtRuntime.cpp"} <= {s.name for s in sources}
    cuda = cuda_include()
    if cuda is None:
        pytest.skip("no CUDA headers (cuda_runtime_api.h; TensorRT's headers need it)")

    def compile_one(job):
        include, source = job
        cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", f"-I{project / 'include'}",
               f"-I{project / 'src'}", "-isystem", str(include), "-isystem", str(cuda), str(source)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        return include, source.name, done.returncode, done.stderr[-2000:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, [(i, s) for i in include_dirs for s in sources]))
    failures = [f"{name} against {include}:\n{err}" for include, name, rc, err in results if rc != 0]
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------------------------
# Errors


def test_atomic_directory_leaves_nothing_behind_on_failure_and_replaces_with_force(tmp_path):
    from exporter.util.fsutil import atomic_directory

    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_directory(out) as tmp:
            (tmp / "part.bin").write_bytes(b"x")
            raise RuntimeError("half-way")
    assert list(tmp_path.iterdir()) == []
    out.write_text("a file in the way")
    with pytest.raises(DeformRTError, match="already exists; pass --force"):
        with atomic_directory(out):
            pass
    with atomic_directory(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert out.read_text() == "a file in the way"  # replaced only once complete
    assert out.is_dir() and [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # the usual permissions, not mkdtemp's
    with pytest.raises(DeformRTError, match="does not exist"):
        with atomic_directory(tmp_path / "missing" / "bundle"):
            pass


def test_missing_onnx_is_one_line(tmp_path):
    one_error_line(invoke("deploy", tmp_path / "absent.onnx", "-o", tmp_path / "b"), "ONNX file not found",
                   "absent.onnx")
    assert not (tmp_path / "b").exists()


def test_model_without_deformrt_metadata_is_one_line(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "plain",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "plain.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    one_error_line(invoke("deploy", path, "-o", tmp_path / "b"), "not written by deformrt export")
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


def test_checkpoint_model_without_weights_and_bad_shapes_are_one_line(exported, tmp_path):
    model = onnx.load(str(exported), load_external_data=False)
    meta = ExportMetadata.from_model(model)
    import dataclasses

    dataclasses.replace(meta, weights="model_final.pth", weights_sha256="ab" * 32).apply(model)
    path = tmp_path / "trained.onnx"
    onnx.save_model(model, str(path))
    one_error_line(invoke("deploy", path, "-o", tmp_path / "b"), "model_final.pth", "--weights")
    one_error_line(invoke("deploy", exported, "-o", tmp_path / "b", "--opt-shape", "1x3x64x80"),
                   "not a multiple of the model's size divisibility 32")
    one_error_line(invoke("deploy", exported, "-o", tmp_path / "b", "--weights", tmp_path / "none.pth"),
                   "checkpoint not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trained.onnx"]
