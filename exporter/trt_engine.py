"""The one module that talks to TensorRT: build an engine, load it, run it.

Written against the documented Python API shared by TensorRT 10.x and 11.x; ``tensorrt`` is
imported only when a function here needs it. Everything that is a decision rather than a TensorRT
call (precision plan per TensorRT major version, network flags, parser-error wording, the build
progress bar, dtype mapping) is a plain function or class, tested without TensorRT.

fp16. TensorRT 10 builds fp16 engines from the fp32 network with ``BuilderFlag.FP16`` (weak
typing). TensorRT 11 is strongly typed only and has no such flag: the network itself must be
fp16, so deformrt converts the fp32 ONNX to mixed fp16 (:mod:`exporter.fp16`) or, when asked,
with NVIDIA ModelOpt AutoCast, and builds it strongly typed. ``fp16_method`` picks the path:
``auto`` (the flag on 10, deformrt's conversion on 11), ``builder-flag`` (10 only), ``deformrt``
or ``modelopt`` (both work on 10 too, so a TensorRT 10 machine can test the 11 path).

fp32 engines are built without TF32 (TensorRT enables it by default on Ampere and newer) so an
"fp32" engine keeps fp32 accuracy; ``tf32=True`` allows it and records precision ``tf32``.
"""

from __future__ import annotations

import datetime
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, TextIO

import numpy as np

from exporter import op_contract as oc
from exporter.engine_meta import EngineMeta, RuntimeEnv, check_compatible, read_sidecar, sha256_file, sidecar_path
from exporter.profiles import ShapeProfile, check_in_profile, format_shape
from models.errors import DeformRTError
from models.version import __version__

FP16_METHODS = ("auto", "builder-flag", "deformrt", "modelopt")
INSTALL_HINT = ("install TensorRT 10.x or 11.x matching your CUDA (`pip install tensorrt` with NVIDIA's index, "
                "or JetPack on Jetson)")


def import_tensorrt():
    """The ``tensorrt`` module, or DeformRTError saying it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DeformRTError(f"TensorRT is not available here ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def tensorrt_major(version: str) -> int:
    """Major version from ``tensorrt.__version__`` (``"10.3.0.30"`` -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise DeformRTError(f"cannot read the TensorRT version {version!r}") from None


# ----------------------------------------------------------------------------------------------
# Decisions (pure)


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get the requested precision from a given TensorRT major version."""

    precision: str  # "fp32", "tf32" or "fp16" (recorded in the sidecar)
    fp16_method: Optional[str]  # "builder-flag", "deformrt", "modelopt"; None for fp32/tf32
    strongly_typed: bool  # build with NetworkDefinitionCreationFlag.STRONGLY_TYPED (always on in 11)
    set_flags: tuple[str, ...] = ()  # BuilderFlag names to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag names to clear

    @property
    def converts_onnx(self) -> bool:
        """True when the network is built from an fp16 ONNX made before parsing."""
        return self.fp16_method in ("deformrt", "modelopt")


def plan_precision(trt_major: int, fp16: bool, fp16_method: str = "auto", tf32: bool = False) -> PrecisionPlan:
    """Pick builder flags and network typing for ``fp16`` on TensorRT ``trt_major``."""
    if fp16_method not in FP16_METHODS:
        raise DeformRTError(f"unknown fp16 method {fp16_method!r}; choose from {', '.join(FP16_METHODS)}")
    strongly_typed_always = trt_major >= 11
    if not fp16:
        if fp16_method != "auto":
            raise DeformRTError(f"--fp16-via {fp16_method} needs --fp16")
        if tf32:
            return PrecisionPlan("tf32", None, strongly_typed_always, set_flags=("TF32",))
        return PrecisionPlan("fp32", None, strongly_typed_always, clear_flags=("TF32",))
    if tf32:
        raise DeformRTError("--tf32 applies to fp32 engines; drop it with --fp16")
    method = fp16_method if fp16_method != "auto" else ("deformrt" if strongly_typed_always else "builder-flag")
    if method == "builder-flag":
        if strongly_typed_always:
            raise DeformRTError(f"TensorRT {trt_major} is strongly typed only and has no FP16 builder flag; "
                                f"use --fp16-via deformrt or --fp16-via modelopt")
        return PrecisionPlan("fp16", method, False, set_flags=("FP16",))
    return PrecisionPlan("fp16", method, True)


def network_flags(trt, trt_major: int, strongly_typed: bool) -> int:
    """The ``create_network`` flag bits: STRONGLY_TYPED when asked on TensorRT 10 (on 11 the flag is
    deprecated and ignored because every network is strongly typed, so none is passed)."""
    if not strongly_typed or trt_major >= 11:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise DeformRTError(f"TensorRT {trt.__version__} has no strongly typed networks (needs 10.0 or newer)")
    return 1 << int(flag)


def _call(error, method: str, default=None):
    fn = getattr(error, method, None)
    return fn() if callable(fn) else default


def format_parser_errors(errors: Sequence, onnx_path: str, plugin: Optional[Path]) -> str:
    """One line for the ONNX parser's errors: node name, op and description of the first ones."""
    parts = []
    for err in errors[:3]:
        node, op = _call(err, "node_name", ""), _call(err, "node_operator", "")
        index = _call(err, "node", -1)
        where = f"node '{node}'" if node else (f"node #{index}" if index is not None and index >= 0 else "the graph")
        text = f"{where}{f' (op {op})' if op else ''}: {' '.join(str(_call(err, 'desc', err)).split())}"
        if op == oc.OP_NAME:
            text += (f" [plugin library: {plugin}; is it built for this TensorRT version?]" if plugin else
                     " [no deformrt plugin library was loaded]")
        parts.append(text)
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"TensorRT could not parse {onnx_path}: " + "; ".join(parts) + more


class BuildProgressBar:
    """Renders TensorRT's build phases (IProgressMonitor callbacks) as a progress line on stderr.

    On a terminal one line is redrawn (at most ``max_fps`` times a second) showing the nested phases
    with their step counts; elsewhere (logs, CI) a line is printed when a top-level phase starts
    and ends. Callbacks may arrive from several TensorRT threads, hence the lock.
    """

    def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, max_fps: float = 10.0,
                 clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._phases: dict[str, list] = {}  # name -> [parent, steps, done], insertion-ordered
        self._lock = threading.Lock()
        self._interval = 1.0 / max_fps
        self._clock = clock
        self._last_draw = -1e9
        self.cancelled = False

    def line(self) -> str:
        """The current status: ``phase 2/5 > sub-phase 10/40``."""
        return " > ".join(f"{name} {done}/{steps}" for name, (_, steps, done) in self._phases.items())

    def _emit(self, text: str, redraw: bool) -> None:
        if not self.enabled:
            return
        if self.tty and redraw:
            self.stream.write("\r\x1b[2K[deformrt] " + text[-150:])
        else:
            self.stream.write(f"[deformrt] {text}\n")
        self.stream.flush()

    def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
        with self._lock:
            self._phases[phase_name] = [parent_phase, num_steps, 0]
            if self.tty:
                self._draw(force=True)
            elif parent_phase is None:
                self._emit(f"{phase_name} ({num_steps} steps) ...", redraw=False)

    def step_complete(self, phase_name: str, step: int) -> bool:
        """Record a finished step; returns False to ask TensorRT to cancel the build."""
        with self._lock:
            if phase_name in self._phases:
                self._phases[phase_name][2] = step + 1
            if self.tty:
                self._draw(force=False)
        return not self.cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            entry = self._phases.pop(phase_name, None)
            if entry is None:
                return
            # A phase ends with its children (TensorRT may finish them implicitly).
            for name in [n for n, (parent, _, _) in self._phases.items() if parent == phase_name]:
                self._phases.pop(name)
            if self.tty and self._phases:
                self._draw(force=True)
            elif self.tty and self.enabled:  # the build is over: clear the status line
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
            elif entry[0] is None:
                self._emit(f"{phase_name}: done", redraw=False)

    def _draw(self, force: bool) -> None:
        now = self._clock()
        if force or now - self._last_draw >= self._interval:
            self._last_draw = now
            self._emit(self.line(), redraw=True)


_TORCH_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                      "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def torch_dtype(trt_dtype):
    """The torch dtype for a ``tensorrt.DataType`` (matched by member name)."""
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    if name not in _TORCH_DTYPE_NAMES:
        raise DeformRTError(f"engine tensor type {name} is not supported by deformrt's runner")
    return getattr(torch, _TORCH_DTYPE_NAMES[name])


# ----------------------------------------------------------------------------------------------
# Environment, plugin


def current_env(trt) -> RuntimeEnv:
    """TensorRT version and the current CUDA device (through torch)."""
    import torch

    if not torch.cuda.is_available():
        raise DeformRTError("TensorRT needs an NVIDIA GPU, and PyTorch sees no CUDA device here")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return RuntimeEnv(str(trt.__version__), torch.cuda.get_device_name(index), f"{major}.{minor}")


def _logger(trt, verbose: bool):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def load_plugin(trt, logger, library: Path) -> None:
    """Register TensorRT's own plugins and our library's creators; DeformRTError when the library
    does not load or registers no ``deformrt::DeformConv2d`` creator."""
    trt.init_libnvinfer_plugins(logger, "")
    registry = trt.get_plugin_registry()
    try:
        handle = registry.load_library(str(library))
    except Exception as exc:  # the bindings raise a plain RuntimeError/TypeError
        raise DeformRTError(f"TensorRT could not load the plugin library {library} ({exc})") from None
    if handle is None:
        raise DeformRTError(f"TensorRT could not load the plugin library {library} (see the TensorRT log above)")
    creator = registry.get_creator(oc.PLUGIN_NAME, oc.PLUGIN_VERSION, oc.PLUGIN_NAMESPACE)
    if creator is None:
        raise DeformRTError(f"{library} loaded but registers no {oc.PLUGIN_NAMESPACE}::{oc.PLUGIN_NAME} version "
                            f"{oc.PLUGIN_VERSION} creator; rebuild the plugin (deformrt build-plugin)")


def resolve_plugin(explicit: Optional[Path], recorded: Optional[str] = None) -> Path:
    """The plugin library to use: ``explicit``, else the one an engine recorded (when it still
    exists), else the plugin finder's answer (which raises naming where it looked)."""
    from exporter.plugin_lib import find_plugin_library

    if explicit is None and recorded and Path(recorded).is_file():
        return Path(recorded)
    try:
        return find_plugin_library(explicit)
    except DeformRTError as exc:
        raise DeformRTError(f"the model uses {oc.OP_DOMAIN}.{oc.OP_NAME}, which needs the deformrt TensorRT plugin: "
                            f"{exc}") from None


def uses_plugin(model) -> bool:
    """True when an ``onnx.ModelProto`` contains our custom DCN op."""
    from exporter.graph_passes import is_plugin_deform_conv

    return any(is_plugin_deform_conv(node) for node in model.graph.node)


def tensorrt_unavailable_reason(model) -> Optional[str]:
    """Why an engine cannot be built for ``model`` here (no TensorRT, no GPU, no plugin library),
    or None when it can."""
    import torch

    try:
        import_tensorrt()
        if not torch.cuda.is_available():
            return "no CUDA GPU"
        if uses_plugin(model):
            resolve_plugin(None)
    except DeformRTError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------------------------
# Build


@dataclass
class BuildOptions:
    """What ``deformrt build-engine`` asks for (see its --help)."""

    fp16: bool = False
    fp16_method: str = "auto"
    tf32: bool = False
    plugin: Optional[Path] = None
    min_shape: Optional[str] = None  # "images:1x3x320x320" (see exporter.profiles)
    opt_shape: Optional[str] = None
    max_shape: Optional[str] = None
    workspace: Optional[int] = None  # bytes
    timing_cache: Optional[Path] = None
    builder_optimization_level: Optional[int] = None
    verbose: bool = False
    progress: bool = True

    @classmethod
    def static(cls, input_name: str, shape: Sequence[int], **kwargs) -> "BuildOptions":
        """Options whose profile is exactly one input shape (for an in-memory engine)."""
        text = f"{input_name}:{format_shape(shape)}"
        return cls(min_shape=text, opt_shape=text, max_shape=text, **kwargs)


def _modelopt_fp16(onnx_path: Path, plugin: Optional[Path]):
    """fp16 ONNX through NVIDIA ModelOpt AutoCast, our DCN op included in fp16."""
    from exporter.fp16 import KEEP_FP32_OPS

    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError:
        raise DeformRTError("--fp16-via modelopt needs NVIDIA ModelOpt (pip install nvidia-modelopt[onnx]); "
                            "--fp16-via deformrt needs nothing extra") from None
    try:
        return convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True,
                                          op_types_to_exclude=sorted(KEEP_FP32_OPS), op_types_to_include=[oc.OP_NAME],
                                          trt_plugins=[str(plugin)] if plugin else None)
    except TypeError as exc:
        raise DeformRTError(f"the installed ModelOpt AutoCast does not take deformrt's options ({exc}); upgrade it "
                            f"or use --fp16-via deformrt") from None


def network_bytes(model, onnx_path: Path, plan: PrecisionPlan, plugin: Optional[Path]) -> bytes:
    """The serialized ONNX TensorRT parses: the model itself, or its fp16 conversion."""
    if plan.fp16_method == "deformrt":
        from exporter.fp16 import convert_to_fp16

        model = convert_to_fp16(model).model
    elif plan.fp16_method == "modelopt":
        model = _modelopt_fp16(onnx_path, plugin)
    return model.SerializeToString()


def load_onnx(onnx_path: Path):
    """The exported ``onnx.ModelProto`` and its :class:`ExportMetadata`, the file parsed once;
    DeformRTError (the metadata reader's) for a missing or unreadable file."""
    import onnx

    from exporter.metadata import ExportMetadata

    try:
        model = onnx.load_model(str(onnx_path))
    except Exception:
        ExportMetadata.from_model(Path(onnx_path))  # raises the user-facing error for a missing or non-ONNX file
        raise
    return model, ExportMetadata.from_model(model)


def prepare_build(onnx_path: Path, options: BuildOptions, model=None):
    """Everything checkable before TensorRT is touched: the ONNX file and its metadata, the shape
    profiles, the plugin library when the model needs one. ``model``: the file's ModelProto when
    the caller has it loaded already. Returns (model, profiles, plugin)."""
    from exporter.metadata import ExportMetadata
    from exporter.profiles import input_dims, resolve_profiles

    if model is None:
        model, meta = load_onnx(onnx_path)
    else:
        meta = ExportMetadata.from_model(model)
    profiles = resolve_profiles(input_dims(model), meta.export_shape, meta.size_divisibility, meta.dynamic_axes,
                                options.min_shape, options.opt_shape, options.max_shape)
    plugin = resolve_plugin(options.plugin) if uses_plugin(model) else None
    return model, profiles, plugin


def build_serialized(model, onnx_path: Path, options: BuildOptions, profiles: Sequence[ShapeProfile],
                     plugin: Optional[Path], progress_stream: Optional[TextIO] = None) -> tuple[bytes, EngineMeta]:
    """Build an engine from an ``onnx.ModelProto``; return the plan bytes and its sidecar content.

    ``plugin`` must be given when the model uses our custom op (see :func:`prepare_build`).
    The timing cache, when set, is read before and written (atomically) after the build.
    """
    from exporter.fsutil import atomic_write_bytes
    from exporter.metadata import PREFIX

    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    plan = plan_precision(major, options.fp16, options.fp16_method, options.tf32)
    env = current_env(trt)
    logger = _logger(trt, options.verbose)
    if plugin is not None:
        load_plugin(trt, logger, plugin)
    else:
        trt.init_libnvinfer_plugins(logger, "")

    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, major, plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(network_bytes(model, onnx_path, plan, plugin)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise DeformRTError(format_parser_errors(errors, str(onnx_path), plugin))

    config = builder.create_builder_config()
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace))
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = int(options.builder_optimization_level)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    cache_path = options.timing_cache
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    bar = BuildProgressBar(progress_stream, enabled=options.progress)
    monitor = _progress_monitor(trt, bar)
    config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeformRTError("TensorRT failed to build the engine; rerun with --verbose to see TensorRT's log")
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()), force=True)

    meta = EngineMeta(
        deformrt_version=__version__, tensorrt_version=env.tensorrt_version, gpu_name=env.gpu_name,
        compute_capability=env.compute_capability, precision=plan.precision, fp16_method=plan.fp16_method,
        profiles=list(profiles), onnx_path=str(Path(onnx_path).resolve()), onnx_sha256=sha256_file(onnx_path),
        onnx_metadata={p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)},
        plugin_path=str(plugin) if plugin else None, plugin_sha256=sha256_file(plugin) if plugin else None,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        build_options={"workspace": options.workspace, "builder_optimization_level": options.builder_optimization_level,
                       "strongly_typed": plan.strongly_typed, "timing_cache": str(cache_path) if cache_path else None},
    )
    return bytes(serialized), meta


def _progress_monitor(trt, bar: BuildProgressBar):
    """A ``trt.IProgressMonitor`` forwarding to ``bar`` (the class needs the imported module)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            bar.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return bar.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            bar.phase_finish(phase_name)

    return _Monitor()


def build_engine_file(onnx_path: Path, output: Path, options: BuildOptions, force: bool = False,
                      progress_stream: Optional[TextIO] = None) -> EngineMeta:
    """``deformrt build-engine``: check inputs and outputs first, build, write engine + sidecar."""
    from exporter.fsutil import check_output_path

    model, profiles, plugin = prepare_build(Path(onnx_path), options)
    check_output_path(output, force)
    check_output_path(sidecar_path(output), force)
    plan, meta = build_serialized(model, Path(onnx_path), options, profiles, plugin, progress_stream)
    write_engine(Path(output), plan, meta, force)
    return meta


def write_engine(output: Path, plan: bytes, meta: EngineMeta, force: bool = False) -> None:
    """Write the engine and its sidecar, each atomically; neither is replaced unless both are ready."""
    from exporter.fsutil import atomic_path

    with atomic_path(output, force) as tmp_engine, atomic_path(sidecar_path(output), force) as tmp_side:
        tmp_engine.write_bytes(plan)
        tmp_side.write_text(meta.to_json(), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Load and run


@dataclass
class LoadedEngine:
    """A deserialized engine with what keeps it valid (runtime, plugin) and its sidecar."""

    engine: object
    meta: EngineMeta
    runtime: object = None
    logger: object = None


def deserialize(plan: bytes, meta: EngineMeta, plugin: Optional[Path], verbose: bool = False,
                name: str = "the engine") -> LoadedEngine:
    """Deserialize plan bytes after checking ``meta`` against this machine."""
    trt = import_tensorrt()
    check_compatible(meta, current_env(trt), engine=name)
    logger = _logger(trt, verbose)
    if plugin is not None:
        load_plugin(trt, logger, plugin)
    else:
        trt.init_libnvinfer_plugins(logger, "")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise DeformRTError(f"TensorRT could not deserialize {name} (see its log above); rebuild it with "
                            f"`deformrt build-engine`")
    return LoadedEngine(engine, meta, runtime, logger)


def build_in_memory(onnx_path: Path, options: BuildOptions, model=None) -> LoadedEngine:
    """Build an engine from ``onnx_path`` (``model``: its ModelProto, when already loaded) and
    deserialize it, without writing files."""
    model, profiles, plugin = prepare_build(Path(onnx_path), options, model)
    plan, meta = build_serialized(model, Path(onnx_path), options, profiles, plugin)
    return deserialize(plan, meta, plugin, options.verbose, name=f"the engine built from {onnx_path}")


def load_engine(path: Path, plugin: Optional[Path] = None, verbose: bool = False,
                warn: Optional[TextIO] = None) -> LoadedEngine:
    """Load ``path`` using its sidecar: version/GPU check, plugin (``plugin``, else the recorded one,
    else the finder; a plugin whose hash differs from the recorded one only warns)."""
    meta = read_sidecar(path)
    library = None
    if meta.plugin_path:
        library = resolve_plugin(plugin, meta.plugin_path)
        if meta.plugin_sha256 and sha256_file(library) != meta.plugin_sha256:
            print(f"warning: plugin {library} differs from the one {path} was built with ({meta.plugin_path}); "
                  f"rebuild the engine if it fails to load", file=warn or sys.stderr)
    return deserialize(Path(path).read_bytes(), meta, library, verbose, name=str(path))


class TrtSession:
    """Runs an engine with ``execute_async_v3`` on a torch CUDA stream, buffers as torch tensors."""

    def __init__(self, loaded: LoadedEngine):
        import torch

        trt = import_tensorrt()
        self.engine = loaded.engine
        self.profiles = {p.name: p for p in loaded.meta.profiles}
        self._keep = loaded  # the runtime and logger must outlive the engine
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise DeformRTError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.dtypes = {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()

    def run_device(self, feed: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:  # noqa: F821
        """Enqueue one inference on :attr:`stream` with CUDA tensors; outputs are CUDA tensors,
        valid once the stream is synchronized (callers time it with CUDA events on the stream)."""
        import torch

        self.stream.wait_stream(torch.cuda.current_stream())
        for name in self.input_names:
            tensor = feed[name]
            if name in self.profiles:
                check_in_profile(self.profiles[name], tuple(tensor.shape))
            if tensor.dtype != self.dtypes[name] or not tensor.is_contiguous() or not tensor.is_cuda:
                raise DeformRTError(f"input {name!r} must be a contiguous CUDA {self.dtypes[name]} tensor")
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise DeformRTError("TensorRT failed to run the engine (see its log above)")
        return outputs

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous inference from and to numpy arrays."""
        import torch

        device_feed = {n: torch.from_numpy(np.ascontiguousarray(feed[n])).to("cuda", self.dtypes[n])
                       for n in self.input_names}
        outputs = self.run_device(device_feed)
        self.stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outputs.items()}
