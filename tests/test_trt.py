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

import numpy as np

import pytest

from exporter.onnx import op_contract as oc
from exporter.trt import build, engine, env, plugin, precision, progress_bar, session
from exporter.trt.sidecar import sidecar_path
from models.errors import DeformRTError

# ----------------------------------------------------------------------------------------------
# Decisions, without TensorRT


_FLAG_FP16 = dict(set_flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"), constrain_plugin_layers=True)


@pytest.mark.parametrize("version,fp16,method,expected", [
    ((10, 3), False, "auto", precision.PrecisionPlan("fp32", None, False, clear_flags=("TF32",))),
    (11, False, "auto", precision.PrecisionPlan("fp32", None, True, clear_flags=("TF32",))),
    ((10, 3), True, "auto", precision.PrecisionPlan("fp16", "builder-flag", False, **_FLAG_FP16)),
    ((10, 11), True, "auto", precision.PrecisionPlan("fp16", "builder-flag", False, **_FLAG_FP16)),
    ((10, 12), True, "auto", precision.PrecisionPlan("fp16", "deformrt", True)),  # kFP16 deprecated from 10.12
    ((10, 13), True, "builder-flag", precision.PrecisionPlan("fp16", "builder-flag", False, **_FLAG_FP16)),
    (11, True, "auto", precision.PrecisionPlan("fp16", "deformrt", True)),
    ((10, 3), True, "deformrt", precision.PrecisionPlan("fp16", "deformrt", True)),
    ((10, 3), True, "modelopt", precision.PrecisionPlan("fp16", "modelopt", True)),
    ((11, 1), True, "modelopt", precision.PrecisionPlan("fp16", "modelopt", True)),
])
def test_precision_plan_by_tensorrt_version(version, fp16, method, expected):
    plan = precision.plan_precision(version, fp16, method)
    assert plan == expected
    assert plan.converts_onnx == (plan.fp16_method in ("deformrt", "modelopt"))
    # fp16 always ends up really fp16 in the DCN layers: typed network, or constrained plugin layers.
    assert not fp16 or plan.strongly_typed or plan.constrain_plugin_layers


class _Layer:
    def __init__(self, kind, outputs):
        self.type, self.num_outputs, self.precision, self.types = kind, outputs, None, {}

    def set_output_type(self, index, dtype):
        assert 0 <= index < self.num_outputs
        self.types[index] = dtype


def test_constrain_plugin_layers_sets_fp16_on_plugin_layers_only():
    LayerType = enum.Enum("LayerType", "CONVOLUTION PLUGIN_V3 ACTIVATION")
    trt = types.SimpleNamespace(LayerType=LayerType, float16="half")
    layers = [_Layer(LayerType.CONVOLUTION, 1), _Layer(LayerType.PLUGIN_V3, 1), _Layer(LayerType.ACTIVATION, 1),
              _Layer(LayerType.PLUGIN_V3, 2)]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    assert precision.constrain_plugin_layers(trt, network) == 2
    assert [layer.precision for layer in layers] == [None, "half", None, "half"]
    assert layers[3].types == {0: "half", 1: "half"} and layers[0].types == {}


def test_layer_precision_summary_reads_the_inspector_json():
    info = {"Layers": [
        {"Name": "conv1", "LayerType": "CaskConvolution",
         "Outputs": [{"Name": "a", "Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "dcn_0", "LayerType": "PluginV3",
         "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP16 format"}]},
        {"Name": "dcn_1", "LayerType": "PluginV3",
         "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}]},
        "a layer without detail"],
        "Bindings": ["images"]}
    assert precision.layer_precision_summary(json.dumps(info)) == {"fp16": 1, "fp32": 1}
    assert precision.layer_precision_summary({"Layers": ["conv1", "dcn_0"]}) == {}  # no DETAILED verbosity


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
    assert env.tensorrt_version("10.13.3.9") == (10, 13) and env.tensorrt_version("11") == (11, 0)
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
    """Stand-in for ``tensorrt.IPluginRegistry`` following its documented contract (NvInferRuntime
    loadLibrary docs): ``load_library`` registers the file's creators and returns a handle, or
    returns None when one of them is already registered; ``get_creator`` answers only for
    registered creators. ``result`` is what loading the file does: "creator" (registers ours),
    "empty" (loads, registers nothing), None (fails), or an exception to raise."""

    def __init__(self, result="creator"):
        self.result, self.loaded, self.creators = result, [], {}

    def load_library(self, path):
        self.loaded.append(path)
        if isinstance(self.result, Exception):
            raise self.result
        if self.result is None or (self.result == "creator" and self.creators):
            return None
        if self.result == "creator":
            self.creators[(oc.PLUGIN_NAME, oc.PLUGIN_VERSION, oc.PLUGIN_NAMESPACE)] = object()
        return object()

    def get_creator(self, name, version, namespace):
        return self.creators.get((name, version, namespace))


def _plugin_trt(registry):
    calls = []
    # init_libnvinfer_plugins returns True on success, as TensorRT's does.
    return types.SimpleNamespace(init_libnvinfer_plugins=lambda logger, ns: calls.append(ns) or True,
                                 get_plugin_registry=lambda: registry), calls


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    """Each test is a new process as far as TensorRT's one-time registrations go."""
    monkeypatch.setattr(env._ProcessLogger, "plugins_initialised", False)
    monkeypatch.setattr(env._ProcessLogger, "logger", None)


def test_load_plugin_registers_and_checks_our_creator():
    registry = _Registry()
    trt, calls = _plugin_trt(registry)
    plugin.load_plugin(trt, None, Path("/lib/libdeformrt_plugin.so"))
    assert registry.loaded == ["/lib/libdeformrt_plugin.so"] and calls == [""]
    assert plugin.registered_creator(registry) is not None


def test_load_plugin_twice_in_one_process_loads_once_and_reuses_the_creator():
    """A second load_library of the same file fails in TensorRT; deformrt must not make one (an
    in-memory build deserializes right after building; compare builds then loads)."""
    registry = _Registry()
    trt, calls = _plugin_trt(registry)
    for _ in range(3):
        plugin.load_plugin(trt, None, Path("/lib/libdeformrt_plugin.so"))
    assert registry.loaded == ["/lib/libdeformrt_plugin.so"] and calls == [""]


def test_load_plugin_reuses_a_creator_registered_another_way():
    """ctypes.CDLL / Polygraphy --plugins registered the creator already: no load_library at all."""
    registry = _Registry()
    registry.creators[(oc.PLUGIN_NAME, oc.PLUGIN_VERSION, oc.PLUGIN_NAMESPACE)] = object()
    trt, _ = _plugin_trt(registry)
    plugin.load_plugin(trt, None, Path("/lib/libdeformrt_plugin.so"))
    assert registry.loaded == []


@pytest.mark.parametrize("result,match", [
    (None, "could not load the plugin library /lib/x.so .*built for this TensorRT major"),
    (RuntimeError("undefined symbol: getCreators"), r"could not load .*\(undefined symbol: getCreators\)"),
    ("empty", "registers no deformrt::DeformConv2d version 1 creator"),
])
def test_load_plugin_errors(result, match):
    trt, _ = _plugin_trt(_Registry(result))
    with pytest.raises(DeformRTError, match=match):
        plugin.load_plugin(trt, None, Path("/lib/x.so"))


def test_one_logger_per_process_whose_level_can_be_raised():
    made = []

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, severity):
            self.min_severity = severity
            made.append(self)

    trt = types.SimpleNamespace(Logger=Logger)
    first = env.logger(trt)
    assert env.logger(trt, verbose=True) is first and first.min_severity == Logger.VERBOSE
    assert env.logger(trt) is first and len(made) == 1


class _TimingConfig:
    """Stand-in for the timing-cache part of ``tensorrt.IBuilderConfig`` as documented:
    ``create_timing_cache`` returns None for bytes it cannot read, ``set_timing_cache`` returns
    False for a cache from another device or version (ignore_mismatch=False)."""

    def __init__(self, readable=True, matches=True, saved=b"cache-v2"):
        self.readable, self.matches, self.saved, self.attached = readable, matches, saved, None

    def create_timing_cache(self, data):
        if data and not self.readable:
            return None
        return types.SimpleNamespace(data=data, serialize=lambda: self.saved)

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.data and not self.matches:
            return False
        self.attached = cache
        return True

    def get_timing_cache(self):
        return self.attached


@pytest.mark.parametrize("readable,matches,warning", [
    (True, True, ""),
    (False, True, "not readable by this TensorRT; starting a fresh one"),
    (True, False, "made on another GPU or TensorRT release; starting a fresh one"),
])
def test_timing_cache_falls_back_to_a_fresh_one_and_says_so(tmp_path, readable, matches, warning):
    path = tmp_path / "cache.bin"
    path.write_bytes(b"cache-v1")
    config, warn = _TimingConfig(readable, matches), io.StringIO()
    build.attach_timing_cache(config, path, warn)
    assert config.attached.data == (b"cache-v1" if not warning else b"")
    assert (warning in warn.getvalue()) if warning else warn.getvalue() == ""
    build.save_timing_cache(config, path, warn)
    assert path.read_bytes() == b"cache-v2"


def test_timing_cache_that_cannot_be_saved_only_warns(tmp_path):
    config, warn = _TimingConfig(), io.StringIO()
    build.attach_timing_cache(config, tmp_path / "new.bin", warn)
    target = tmp_path / "missing-dir" / "cache.bin"  # its directory does not exist
    build.save_timing_cache(config, target, warn)
    assert "engine is built, but its timing cache was not saved" in warn.getvalue() and not target.exists()


class _HostCuda:
    """Stand-in for :mod:`exporter.trt.cuda` keeping "device" buffers in host memory (same interface)."""

    memory: dict = {}

    class DeviceBuffer:
        def __init__(self, nbytes):
            self.nbytes, self.data = nbytes, bytearray(nbytes)
            self.address = 0x1000 + len(_HostCuda.memory) * 0x100000
            _HostCuda.memory[self.address] = self

        def upload(self, array, stream):
            self.data[:array.nbytes] = array.tobytes()

        def download(self, array, stream):
            array[...] = np.frombuffer(bytes(self.data[:array.nbytes]), array.dtype).reshape(array.shape)

        def free(self):
            pass

    class Stream:
        handle = 7

        def synchronize(self):
            pass

    use_device = staticmethod(lambda ordinal: None)
    current_device = staticmethod(lambda: 0)


class _DoublingContext:
    """Stand-in for ``IExecutionContext``: output "out" = 2 * input "images"; return values as
    documented (False for a rejected shape or address), execute reads and writes the bound buffers."""

    def __init__(self, reject_shape=False):
        self.shapes, self.addresses, self.reject_shape = {}, {}, reject_shape

    def set_input_shape(self, name, shape):
        if self.reject_shape:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return address != 0

    def get_tensor_shape(self, name):
        return self.shapes["images"] if name == "out" else self.shapes[name]

    def execute_async_v3(self, stream):
        src, dst = _HostCuda.memory[self.addresses["images"]], _HostCuda.memory[self.addresses["out"]]
        x = np.frombuffer(bytes(src.data), np.float32)[:int(np.prod(self.shapes["images"]))]
        dst.data[:x.nbytes] = (2 * x).astype(np.float32).tobytes()
        return stream == _HostCuda.Stream.handle


def _session(monkeypatch, context):
    from exporter.trt.profiles import ShapeProfile
    from exporter.trt.sidecar import EngineMeta

    Mode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    DataType = enum.Enum("DataType", "FLOAT HALF")
    monkeypatch.setattr(session, "cuda", _HostCuda)
    monkeypatch.setattr(session, "import_tensorrt", lambda: types.SimpleNamespace(TensorIOMode=Mode))
    names = ["images", "out"]
    trt_engine = types.SimpleNamespace(
        num_io_tensors=2, get_tensor_name=lambda i: names[i], create_execution_context=lambda: context,
        get_tensor_mode=lambda n: Mode.INPUT if n == "images" else Mode.OUTPUT,
        get_tensor_dtype=lambda n: DataType.FLOAT)
    meta = EngineMeta("0", "10.3.0", "gpu", "8.7", "fp32",
                      [ShapeProfile("images", (1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 16, 16))], "m.onnx", "0", {})
    return session.TrtSession(engine.LoadedEngine(trt_engine, meta))


def test_session_runs_numpy_through_bound_buffers_without_torch(monkeypatch):
    s = _session(monkeypatch, _DoublingContext())
    x = np.random.default_rng().standard_normal((2, 3, 16, 8)).astype(np.float32)
    out = s.run({"images": x})
    np.testing.assert_array_equal(out["out"], 2 * x)
    assert s.dtypes == {"images": np.float32, "out": np.float32}
    with pytest.raises(DeformRTError, match="outside the engine's profile"):
        s.run({"images": np.ones((4, 3, 8, 8), np.float32)})
    with pytest.raises(DeformRTError, match="no value for engine input 'images'"):
        s.run({})


def test_session_checks_every_tensorrt_answer(monkeypatch):
    with pytest.raises(DeformRTError, match="TensorRT rejected input shape 1x3x8x8 for 'images'"):
        _session(monkeypatch, _DoublingContext(reject_shape=True)).run({"images": np.ones((1, 3, 8, 8), np.float32)})


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
    # What the DCN plugin layers really run, from the engine inspector (fp16 must not fall back to fp32).
    assert side["plugin_layer_types"] and set(side["plugin_layer_types"]) == {"fp16" if fp16 else "fp32"}, side
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
