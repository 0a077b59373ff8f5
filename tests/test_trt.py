"""The TensorRT layer.

Unmarked tests check deformrt's decisions around TensorRT without it: precision plan and network
flags per TensorRT major version, parser-error wording, the build progress bar, dtype mapping and
plugin-loading errors (with tiny stand-ins for the few ``tensorrt`` attributes involved).

Tests marked ``trt`` need the TensorRT Python package, an NVIDIA GPU and the built plugin
library; they build fp32 and fp16 engines of R-50-FPN with modulated DCN, compare them with
PyTorch and reload them from their sidecars. They skip with the reason where that is missing.
"""

import enum
import io
import json
import types
from pathlib import Path

import pytest

from exporter.onnx import op_contract as oc
from exporter.trt import build, engine, env, plugin, precision, progress_bar, session
from exporter.trt.sidecar import sidecar_path
from models.errors import DeformRTError

# ----------------------------------------------------------------------------------------------
# Decisions, without TensorRT


@pytest.mark.parametrize("major,fp16,method,expected", [
    (10, False, "auto", precision.PrecisionPlan("fp32", None, False, clear_flags=("TF32",))),
    (11, False, "auto", precision.PrecisionPlan("fp32", None, True, clear_flags=("TF32",))),
    (10, True, "auto", precision.PrecisionPlan("fp16", "builder-flag", False, set_flags=("FP16",))),
    (11, True, "auto", precision.PrecisionPlan("fp16", "deformrt", True)),
    (10, True, "deformrt", precision.PrecisionPlan("fp16", "deformrt", True)),
    (10, True, "modelopt", precision.PrecisionPlan("fp16", "modelopt", True)),
    (11, True, "modelopt", precision.PrecisionPlan("fp16", "modelopt", True)),
])
def test_precision_plan_by_tensorrt_major(major, fp16, method, expected):
    plan = precision.plan_precision(major, fp16, method)
    assert plan == expected
    assert plan.converts_onnx == (method in ("deformrt", "modelopt") or (major >= 11 and fp16))


def test_precision_plan_tf32_and_errors():
    assert precision.plan_precision(10, False, tf32=True) == precision.PrecisionPlan("tf32", None, False, set_flags=("TF32",))
    with pytest.raises(DeformRTError, match="TensorRT 11 is strongly typed only.*--fp16-via deformrt"):
        precision.plan_precision(11, True, "builder-flag")
    with pytest.raises(DeformRTError, match="needs --fp16"):
        precision.plan_precision(10, False, "deformrt")
    with pytest.raises(DeformRTError, match="--tf32 applies to fp32"):
        precision.plan_precision(10, True, tf32=True)
    with pytest.raises(DeformRTError, match="unknown fp16 method 'bf16'"):
        precision.plan_precision(10, True, "bf16")


def test_tensorrt_major():
    assert env.tensorrt_major("10.3.0.30") == 10 and env.tensorrt_major("11.1.0") == 11
    with pytest.raises(DeformRTError, match="cannot read the TensorRT version"):
        env.tensorrt_major("dev")


def _fake_trt(version: str, strongly_typed: bool = True):
    """The two attributes network_flags reads (members numbered as in NvInfer.h of 10.x)."""
    members = {"EXPLICIT_BATCH": 0}
    if strongly_typed:
        members["STRONGLY_TYPED"] = 1
    return types.SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=enum.IntEnum("Flag", members))


def test_network_flags():
    assert precision.network_flags(_fake_trt("10.3.0"), 10, strongly_typed=True) == 1 << 1
    assert precision.network_flags(_fake_trt("10.3.0"), 10, strongly_typed=False) == 0
    # TensorRT 11: always strongly typed; the deprecated flag is not passed.
    assert precision.network_flags(_fake_trt("11.1.0"), 11, strongly_typed=True) == 0
    with pytest.raises(DeformRTError, match="no strongly typed networks"):
        precision.network_flags(_fake_trt("9.3.0", strongly_typed=False), 9, strongly_typed=True)


class _ParserError:
    def __init__(self, desc, node=-1, name="", op=""):
        self._desc, self._node, self._name, self._op = desc, node, name, op

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


def test_parser_errors_name_node_and_op_in_one_line():
    errors = [_ParserError("Plugin not found,\n are the plugin name, version\tand namespace correct?", 12,
                           "layer2.0.conv2", oc.OP_NAME)]
    text = build.format_parser_errors(errors, "m.onnx", Path("/p/libdeformrt_plugin.so"))
    assert text == ("TensorRT could not parse m.onnx: node 'layer2.0.conv2' (op DeformConv2d): Plugin not found, are "
                    "the plugin name, version and namespace correct? [plugin library: /p/libdeformrt_plugin.so; is it "
                    "built for this TensorRT version?]")
    text = build.format_parser_errors(errors, "m.onnx", None)
    assert text.endswith("[no deformrt plugin library was loaded]")


def test_parser_errors_without_node_and_many_errors():
    errors = [_ParserError("bad graph")] + [_ParserError("x", i, f"n{i}", "Conv") for i in range(4)]
    text = build.format_parser_errors(errors, "m.onnx", None)
    assert text == ("TensorRT could not parse m.onnx: the graph: bad graph; node 'n0' (op Conv): x; node 'n1' "
                    "(op Conv): x (and 2 more)")
    # Older bindings without node_name/node_operator: the node index is used.
    old = types.SimpleNamespace(desc=lambda: "unsupported", node=lambda: 7)
    assert build.format_parser_errors([old], "m.onnx", None) == "TensorRT could not parse m.onnx: node #7: unsupported"


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_redraws_nested_phases():
    stream, now = _Tty(), [0.0]
    bar = progress_bar.BuildProgressBar(stream, max_fps=10, clock=lambda: now[0])
    bar.phase_start("Building engine", None, 3)
    bar.phase_start("Tactic selection", "Building engine", 40)
    now[0] = 0.2
    assert bar.step_complete("Tactic selection", 0) is True
    now[0] = 0.25
    bar.step_complete("Tactic selection", 1)  # within 100 ms of the last draw: not redrawn
    now[0] = 0.5
    bar.step_complete("Tactic selection", 9)
    assert bar.line() == "Building engine 0/3 > Tactic selection 10/40"
    bar.phase_finish("Building engine")  # ends its child too
    frames = stream.getvalue().split("\r\x1b[2K")
    assert frames == ["", "[deformrt] Building engine 0/3", "[deformrt] Building engine 0/3 > Tactic selection 0/40",
                      "[deformrt] Building engine 0/3 > Tactic selection 1/40",
                      "[deformrt] Building engine 0/3 > Tactic selection 10/40", ""]  # last: the line cleared
    assert bar.line() == ""


def test_progress_bar_in_a_log_prints_top_level_phases_only():
    stream = io.StringIO()
    bar = progress_bar.BuildProgressBar(stream)
    bar.phase_start("Building engine", None, 2)
    bar.phase_start("Tactic selection", "Building engine", 40)
    bar.step_complete("Tactic selection", 5)
    bar.phase_finish("Tactic selection")
    bar.phase_finish("Building engine")
    bar.phase_finish("never started")
    assert stream.getvalue() == "[deformrt] Building engine (2 steps) ...\n[deformrt] Building engine: done\n"
    bar.cancelled = True
    assert bar.step_complete("x", 0) is False
    quiet = io.StringIO()
    silent = progress_bar.BuildProgressBar(quiet, enabled=False)
    silent.phase_start("Building engine", None, 1)
    silent.phase_finish("Building engine")
    assert quiet.getvalue() == ""


def test_torch_dtype_by_member_name():
    import torch

    DataType = enum.Enum("DataType", "FLOAT HALF INT32 INT64 BOOL FP8")
    assert session.torch_dtype(DataType.FLOAT) is torch.float32 and session.torch_dtype(DataType.HALF) is torch.float16
    assert session.torch_dtype(DataType.INT64) is torch.int64
    with pytest.raises(DeformRTError, match="FP8 is not supported"):
        session.torch_dtype(DataType.FP8)


class _Registry:
    def __init__(self, handle, creator):
        self.handle, self.creator, self.loaded = handle, creator, []

    def load_library(self, path):
        self.loaded.append(path)
        if isinstance(self.handle, Exception):
            raise self.handle
        return self.handle

    def get_creator(self, name, version, namespace):
        return self.creator if (name, version, namespace) == (oc.PLUGIN_NAME, oc.PLUGIN_VERSION,
                                                              oc.PLUGIN_NAMESPACE) else None


def _plugin_trt(registry):
    calls = []
    return types.SimpleNamespace(init_libnvinfer_plugins=lambda logger, ns: calls.append(ns),
                                 get_plugin_registry=lambda: registry), calls


def test_load_plugin_registers_and_checks_our_creator():
    registry = _Registry(handle=object(), creator=object())
    trt, calls = _plugin_trt(registry)
    plugin.load_plugin(trt, None, Path("/lib/libdeformrt_plugin.so"))
    assert registry.loaded == ["/lib/libdeformrt_plugin.so"] and calls == [""]


@pytest.mark.parametrize("handle,creator,match", [
    (None, object(), "could not load the plugin library /lib/x.so"),
    (RuntimeError("undefined symbol: getCreators"), object(), r"could not load .*\(undefined symbol: getCreators\)"),
    (object(), None, "registers no deformrt::DeformConv2d version 1 creator"),
])
def test_load_plugin_errors(handle, creator, match):
    trt, _ = _plugin_trt(_Registry(handle, creator))
    with pytest.raises(DeformRTError, match=match):
        plugin.load_plugin(trt, None, Path("/lib/x.so"))


def test_missing_tensorrt_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(DeformRTError, match="TensorRT is not available here .*install TensorRT 10.x or 11.x") as e:
        env.import_tensorrt()
    assert "\n" not in str(e.value)


def test_resolve_plugin_prefers_explicit_then_recorded(tmp_path, monkeypatch):
    recorded = tmp_path / "recorded.so"
    recorded.write_bytes(b"x")
    explicit = tmp_path / "explicit.so"
    explicit.write_bytes(b"y")
    monkeypatch.delenv("DEFORMRT_PLUGIN_LIB", raising=False)
    assert plugin.resolve_plugin(explicit, str(recorded)) == explicit.resolve()
    assert plugin.resolve_plugin(None, str(recorded)) == recorded
    with pytest.raises(DeformRTError, match="uses deformrt.DeformConv2d, which needs the deformrt TensorRT plugin: "
                                            ".*not found: looked for .*missing.so"):
        plugin.resolve_plugin(tmp_path / "missing.so")


# ----------------------------------------------------------------------------------------------
# With TensorRT and a GPU


def _trt_skip_reason():
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return f"TensorRT Python package not importable ({type(exc).__name__})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    from models.native import find_plugin_library

    try:
        find_plugin_library()
    except DeformRTError:
        return "deformrt plugin library not built (run: deformrt build-plugin)"
    return None


_REASON = _trt_skip_reason()
needs_trt = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
SIZE = (256, 320)


@pytest.fixture(scope="module")
def r50_mdcn(tmp_path_factory):
    """R-50-FPN with modulated DCN in res3-res5, seeded weights, plugin and standard flavours."""
    from exporter.onnx.export import ExportOptions, build_model, export_model, load_config

    out = tmp_path_factory.mktemp("trt")
    built = build_model(load_config(config_file="e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml"), seed=3)
    paths = {}
    for flavour in ("plugin", "onnx"):
        proto = export_model(built, ExportOptions(dcn_op=flavour, input_size=SIZE))
        paths[flavour] = out / f"r50-{flavour}.onnx"
        paths[flavour].write_bytes(proto.SerializeToString())
    return paths


def _compare(onnx_path, backends, shape, batch, **kwargs):
    from exporter.evaluation.compare import CompareOptions, compare_models

    return compare_models(onnx_path, CompareOptions(backends=backends, device="cuda", shape=shape, batch=batch,
                                                    seed=11, **kwargs))


@pytest.mark.trt
@needs_trt
@pytest.mark.parametrize("fp16,method", [(False, "auto"), (True, "auto"), (True, "deformrt")])
@pytest.mark.parametrize("flavour", ["plugin", "onnx"])
def test_engine_matches_pytorch(r50_mdcn, tmp_path, fp16, method, flavour):
    """fp32: max rel <= 1e-3 on every P-level. fp16: <= 1e-2, or within 1.5x of the error of the same
    fp16 network evaluated with exactly rounded fp16 arithmetic (ONNX Runtime CPU, fp32 accumulation):
    with seeded random weights R-50-FPN amplifies fp16 rounding (the input's rounding alone gives
    3-6e-3 at 256x320), so that floor can itself reach 1e-2."""
    plan = tmp_path / "m.plan"
    options = build.BuildOptions(fp16=fp16, fp16_method=method, progress=False)
    meta = build.build_engine_file(r50_mdcn[flavour], plan, options)
    side = json.loads(sidecar_path(plan).read_text())
    assert side["precision"] == ("fp16" if fp16 else "fp32") and side["tensorrt_version"] == meta.tensorrt_version
    assert (side["plugin_sha256"] is not None) == (flavour == "plugin")
    for shape, batch in ((SIZE, 1), ((320, 384), 2)):  # the export shape, and another inside the profile
        report = _compare(r50_mdcn[flavour], ("torch", "trt"), shape, batch, engine=plan)
        [trt] = report.comparisons
        if not fp16:
            assert all(o.max_rel <= 1e-3 for o in trt.outputs), report.table()
            continue
        floor = _compare(r50_mdcn[flavour], ("torch", "ort"), shape, batch, fp16=True).comparisons[0]
        for got, exact in zip(trt.outputs, floor.outputs):
            assert got.max_rel <= max(1e-2, 1.5 * exact.max_rel), (report.table(), exact)


@pytest.mark.trt
@needs_trt
def test_engine_reload_from_sidecar_and_mismatch(r50_mdcn, tmp_path):
    import numpy as np

    plan = tmp_path / "m.plan"
    build.build_engine_file(r50_mdcn["plugin"], plan, build.BuildOptions(progress=False))
    x = np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)
    first = session.TrtSession(engine.load_engine(plan)).run({"images": x})
    again = session.TrtSession(engine.load_engine(plan)).run({"images": x})
    assert first.keys() == again.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    with pytest.raises(DeformRTError, match="outside the engine's profile"):
        session.TrtSession(engine.load_engine(plan)).run({"images": np.zeros((1, 3, 2048, 320), np.float32)})
    side = json.loads(sidecar_path(plan).read_text())
    side["tensorrt_version"] = "9.0.0"
    sidecar_path(plan).write_text(json.dumps(side))
    with pytest.raises(DeformRTError, match="built with TensorRT 9.0.0"):
        engine.load_engine(plan)
