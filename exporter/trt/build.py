"""Build a TensorRT engine from an exported ONNX file: checks, parsing, builder config, sidecar.

``deformrt build-engine`` is :func:`build_engine_file`; ``compare``/``bench`` without ``--engine``
use :func:`build_in_memory`. Decisions that need no TensorRT (precision plan, parser-error
wording, the progress bar) live in their own modules and are tested without it.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

from exporter.onnx import op_contract as oc
from exporter.trt.engine import LoadedEngine, deserialize
from exporter.trt.env import current_env, import_tensorrt, init_trt_plugins, logger, tensorrt_version
from exporter.trt.plugin import load_plugin, resolve_plugin, uses_plugin
from exporter.trt.precision import (PrecisionPlan, constrain_detector_layers, constrain_plugin_layers,
                                    layer_precision_summary, network_flags, plan_precision)
from exporter.trt.profiles import ShapeProfile, format_shape
from exporter.trt.progress_bar import BuildProgressBar
from exporter.trt.sidecar import EngineMeta, sidecar_path
from exporter.util.fsutil import sha256_file
from models.errors import DeformRTError
from models.version import __version__

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


def tensorrt_unavailable_reason(model) -> Optional[str]:
    """Why an engine cannot be built for ``model`` here (no TensorRT, no GPU, no plugin library),
    or None when it can."""
    from exporter.trt import cuda

    try:
        import_tensorrt()
        reason = cuda.no_device_reason()
        if reason is not None:
            return reason
        if uses_plugin(model):
            resolve_plugin(None)
    except DeformRTError as exc:
        return str(exc)
    return None


@dataclass
class BuildOptions:
    """What ``deformrt build-engine`` asks for (see its --help)."""

    fp16: bool = False
    fp16_method: str = "auto"
    tf32: bool = False
    plugin: Optional[Path] = None
    min_shape: Optional[str] = None  # "images:1x3x320x320" (see exporter.trt.profiles)
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
    from exporter.onnx.fp16 import KEEP_FP32_OPS

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
    """The serialized ONNX TensorRT parses: the model itself, or its fp16 conversion (a whole
    detector's keeps its postprocessing in fp32: :func:`convert_detector_to_fp16`)."""
    if plan.fp16_method == "deformrt":
        if is_detector(model):
            from exporter.onnx.detector_export import convert_detector_to_fp16

            model = convert_detector_to_fp16(model).model
        else:
            from exporter.onnx.fp16 import convert_to_fp16

            model = convert_to_fp16(model).model
    elif plan.fp16_method == "modelopt":
        if is_detector(model):
            raise DeformRTError("--fp16-via modelopt is for backbone files: ModelOpt does not know which of a "
                                "detector's layers must stay fp32; use --fp16-via deformrt (or auto)")
        model = _modelopt_fp16(onnx_path, plugin)
    return model.SerializeToString()


def is_detector(model) -> bool:
    """True for a whole-detector file (it carries ``deformrt.detector`` metadata)."""
    from exporter.onnx.metadata import DETECTOR_KEY

    return any(p.key == DETECTOR_KEY for p in model.metadata_props)


# ONNX ops the parser turns into one of libnvinfer_plugin's plugins (TensorRT 10.1+), so
# init_libnvinfer_plugins must have registered it: op type -> plugin name.
TRT_LIBRARY_PLUGINS = {"RoiAlign": "ROIAlign_TRT", "DeformConv": "ModulatedDeformConv2d"}


def trt_library_plugins(model) -> list[str]:
    """The libnvinfer_plugin plugins (:data:`TRT_LIBRARY_PLUGINS`) parsing ``model`` needs, sorted."""
    return sorted({TRT_LIBRARY_PLUGINS[n.op_type] for n in model.graph.node
                   if n.op_type in TRT_LIBRARY_PLUGINS and n.domain in ("", "ai.onnx")})


# Versions the libnvinfer_plugin creators above have had (ROIAlign_TRT: 1 = IPluginV2DynamicExt,
# 2 = IPluginV3; ModulatedDeformConv2d likewise).
TRT_LIBRARY_PLUGIN_VERSIONS = ("1", "2")


def missing_plugins(needed: Sequence[str], registered: Callable[[str], bool]) -> list[str]:
    """Which of ``needed`` TensorRT's plugin registry lacks (``registered(name)``: any version)."""
    return [name for name in needed if not registered(name)]


def _registry_has(trt, name: str) -> bool:
    """Whether TensorRT's registry has a creator called ``name`` (namespace "", any known version).
    A registry this TensorRT cannot query this way answers True: the parser then reports it."""
    try:
        registry = trt.get_plugin_registry()
        return any(registry.get_creator(name, version, "") is not None for version in TRT_LIBRARY_PLUGIN_VERSIONS)
    except Exception:  # noqa: BLE001 - a binding without get_creator must not cost the build
        return True


def output_descriptions(model) -> list[dict]:
    """The ONNX file's outputs for the sidecar: name, shape (an int per static axis, the symbol's
    name per dynamic one) and element type (numpy's name)."""
    from onnx import helper

    out = []
    for vi in model.graph.output:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        out.append({"name": vi.name, "shape": dims, "dtype": str(helper.tensor_dtype_to_np_dtype(t.elem_type))})
    return out


def load_onnx(onnx_path: Path):
    """The exported ``onnx.ModelProto`` and its :class:`ExportMetadata`, the file parsed once;
    DeformRTError (the metadata reader's) for a missing or unreadable file."""
    from exporter.onnx.metadata import ExportMetadata, read_onnx

    model = read_onnx(Path(onnx_path))
    return model, ExportMetadata.from_model(model)


def prepare_build(onnx_path: Path, options: BuildOptions, model=None):
    """Everything checkable before TensorRT is touched: the ONNX file and its metadata, the shape
    profiles, the plugin library when the model needs one. ``model``: the file's ModelProto when
    the caller has it loaded already. Returns (model, profiles, plugin)."""
    from exporter.onnx.metadata import DetectorMetadata, ExportMetadata
    from exporter.trt.profiles import DEFAULT_MAX_SIDE, detector_max_side, input_dims, resolve_profiles

    if model is None:
        model, meta = load_onnx(onnx_path)
    else:
        meta = ExportMetadata.from_model(model)
    detector = DetectorMetadata.from_model(model)
    max_side = detector_max_side(detector.max_size_test) if detector is not None else DEFAULT_MAX_SIDE
    profiles = resolve_profiles(input_dims(model), meta.export_shape, meta.size_divisibility, meta.dynamic_axes,
                                options.min_shape, options.opt_shape, options.max_shape, max_side)
    plugin = resolve_plugin(options.plugin) if uses_plugin(model) else None
    return model, profiles, plugin


def build_serialized(model, onnx_path: Path, options: BuildOptions, profiles: Sequence[ShapeProfile],
                     plugin: Optional[Path], progress_stream: Optional[TextIO] = None,
                     warn: Optional[TextIO] = None) -> tuple[bytes, EngineMeta]:
    """Build an engine from an ``onnx.ModelProto``; return the plan bytes and its sidecar content.

    ``plugin`` must be given when the model uses our custom op (see :func:`prepare_build`).
    The timing cache, when set, is read before and written (atomically) after the build; cache
    problems are warnings on ``warn`` (stderr), never a lost build. fp16 on weakly typed TensorRT
    constrains the plugin layers to fp16, and the sidecar records the element types the engine's
    plugin layers really have (engine inspector).
    """
    from exporter.onnx.metadata import PREFIX

    trt = import_tensorrt()
    version = tensorrt_version(trt.__version__)
    plan = plan_precision(version, options.fp16, options.fp16_method, options.tf32)
    env = current_env(trt)
    log = logger(trt, options.verbose)
    if plugin is not None:
        load_plugin(trt, log, plugin)
    else:
        init_trt_plugins(trt, log)
    missing = missing_plugins(trt_library_plugins(model), lambda name: _registry_has(trt, name))
    if missing:
        raise DeformRTError(f"{onnx_path} needs TensorRT's own plugin(s) {', '.join(missing)} (libnvinfer_plugin, "
                            f"TensorRT 10.1 or newer), which this TensorRT {trt.__version__} does not register")

    builder = trt.Builder(log)
    network = builder.create_network(network_flags(trt, version[0], plan.strongly_typed))
    parser = trt.OnnxParser(network, log)
    if not parser.parse(network_bytes(model, onnx_path, plan, plugin)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise DeformRTError(format_parser_errors(errors, str(onnx_path), plugin))
    constrained = None
    if plan.constrain_plugin_layers and is_detector(model):
        from exporter.onnx.detector_export import detector_node_precisions

        constrained = constrain_detector_layers(trt, network, detector_node_precisions(model))
    elif plan.constrain_plugin_layers:
        constrain_plugin_layers(trt, network)

    config = builder.create_builder_config()
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace))
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = int(options.builder_optimization_level)
    if hasattr(trt, "ProfilingVerbosity"):  # layer detail for the engine inspector (what precision ran)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    if config.add_optimization_profile(profile) < 0:
        raise DeformRTError("TensorRT rejected the shape profile " +
                            "; ".join(f"{p.name} {format_shape(p.min)}..{format_shape(p.max)}" for p in profiles))
    cache_path = options.timing_cache
    if cache_path is not None:
        attach_timing_cache(config, cache_path, warn)
    bar = BuildProgressBar(progress_stream, enabled=options.progress)
    monitor = _progress_monitor(trt, bar)
    config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeformRTError("TensorRT failed to build the engine; rerun with --verbose to see TensorRT's log")
    serialized = bytes(serialized)
    if cache_path is not None:
        save_timing_cache(config, cache_path, warn)
    dcn_nodes = ({n.name for n in model.graph.node if n.op_type in (oc.OP_NAME, "DeformConv")}
                 if is_detector(model) else None)
    layer_types = engine_layer_precisions(trt, log, serialized, dcn_nodes)
    if plan.precision == "fp16" and layer_types and set(layer_types) != {"fp16"}:
        print(f"warning: fp16 engine, but its DCN plugin layers have outputs {layer_types}", file=warn or sys.stderr)

    meta = EngineMeta(
        deformrt_version=__version__, tensorrt_version=env.tensorrt_version, gpu_name=env.gpu_name,
        compute_capability=env.compute_capability, precision=plan.precision, fp16_method=plan.fp16_method,
        profiles=list(profiles), onnx_path=str(Path(onnx_path).resolve()), onnx_sha256=sha256_file(onnx_path),
        onnx_metadata={p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)},
        plugin_path=str(plugin) if plugin else None, plugin_sha256=sha256_file(plugin) if plugin else None,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        build_options={"workspace": options.workspace, "builder_optimization_level": options.builder_optimization_level,
                       "strongly_typed": plan.strongly_typed, "timing_cache": str(cache_path) if cache_path else None,
                       "trt_library_plugins": trt_library_plugins(model),
                       "constrained_layers": constrained},
        plugin_layer_types=layer_types or None,
        outputs=output_descriptions(model),
        detector=_detector_dict(model),
    )
    return serialized, meta


def _detector_dict(model) -> Optional[dict]:
    from exporter.onnx.metadata import DetectorMetadata

    detector = DetectorMetadata.from_model(model)
    return detector.to_dict() if detector is not None else None


def attach_timing_cache(config, path: Path, warn: Optional[TextIO] = None) -> None:
    """Give ``config`` the timing cache in ``path``. A cache TensorRT cannot read, or one made on
    another GPU or TensorRT release, is replaced by a fresh one with a warning (never silently)."""
    data = b""
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"warning: cannot read timing cache {path} ({exc.strerror}); starting a fresh one",
                  file=warn or sys.stderr)
    cache = config.create_timing_cache(data)
    if cache is None and data:
        print(f"warning: timing cache {path} is not readable by this TensorRT; starting a fresh one",
              file=warn or sys.stderr)
        data, cache = b"", config.create_timing_cache(b"")
    if cache is None:
        raise DeformRTError("TensorRT could not create a timing cache")
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return
    print(f"warning: timing cache {path} was made on another GPU or TensorRT release; starting a fresh one",
          file=warn or sys.stderr)
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise DeformRTError("TensorRT could not use a fresh timing cache")


def save_timing_cache(config, path: Path, warn: Optional[TextIO] = None) -> None:
    """Write ``config``'s timing cache to ``path`` atomically. Runs after a finished build, so a
    failure only warns: the engine is never lost over its cache."""
    from exporter.util.fsutil import atomic_write_bytes

    try:
        cache = config.get_timing_cache()
        if cache is None:
            raise DeformRTError("TensorRT returned no timing cache")
        atomic_write_bytes(path, bytes(cache.serialize()), force=True)
    except Exception as exc:  # noqa: BLE001 - any failure here must not cost the build
        print(f"warning: the engine is built, but its timing cache was not saved to {path} ({exc})",
              file=warn or sys.stderr)


def engine_layer_precisions(trt, log, serialized: bytes, nodes=None) -> dict[str, int]:
    """Output element types of the engine's plugin layers, read with the engine inspector; empty
    where this TensorRT has no inspector or the engine carries no layer detail."""
    if not hasattr(trt, "LayerInformationFormat"):
        return {}
    engine = trt.Runtime(log).deserialize_cuda_engine(serialized)
    if engine is None:
        return {}
    inspector = engine.create_engine_inspector()
    if inspector is None:
        return {}
    return layer_precision_summary(inspector.get_engine_information(trt.LayerInformationFormat.JSON), nodes)


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
    from exporter.util.fsutil import check_output_path

    model, profiles, plugin = prepare_build(Path(onnx_path), options)
    check_output_path(output, force)
    check_output_path(sidecar_path(output), force)
    plan, meta = build_serialized(model, Path(onnx_path), options, profiles, plugin, progress_stream)
    write_engine(Path(output), plan, meta, force)
    return meta


def write_engine(output: Path, plan: bytes, meta: EngineMeta, force: bool = False) -> None:
    """Write the engine and its sidecar, each atomically; neither is replaced unless both are ready."""
    from exporter.util.fsutil import atomic_path

    with atomic_path(output, force) as tmp_engine, atomic_path(sidecar_path(output), force) as tmp_side:
        tmp_engine.write_bytes(plan)
        tmp_side.write_text(meta.to_json(), encoding="utf-8")


def build_in_memory(onnx_path: Path, options: BuildOptions, model=None) -> LoadedEngine:
    """Build an engine from ``onnx_path`` (``model``: its ModelProto, when already loaded) and
    deserialize it, without writing files."""
    model, profiles, plugin = prepare_build(Path(onnx_path), options, model)
    plan, meta = build_serialized(model, Path(onnx_path), options, profiles, plugin)
    return deserialize(plan, meta, plugin, options.verbose, name=f"the engine built from {onnx_path}")

