"""Export a whole maskrcnn-benchmark detector to one checked ONNX file.

Steps (each named, apart from the backbone export, which it reuses without changing):

1. config (:func:`exporter.onnx.export.load_config` with ``detector=True``: the body from the
   config when not named, and never two different bodies) and TensorRT limits (:func:`exporter.onnx.detector_graph.trt_limit_problems`, refused
   with the key, the limit and the override unless ``trt_limits=False``);
2. the model: :func:`models.detector.build_detector` with a checkpoint loaded strictly (heads
   included), or seeded random init calibrated to produce detections
   (:func:`models.calibrate.calibrate_synthetic_detector`);
3. one dynamo trace of :class:`exporter.onnx.detector_graph.ExportableDetector` (FrozenBN as
   scale/shift, as for backbones) with NMS and ROIAlign translated by
   :mod:`exporter.onnx.detector_ops`, always with the stage outputs;
4. the backbone export's passes (scale/shift folding, dead nodes, duplicate initializers) and DCN
   flavour; metadata (``deformrt.*`` plus ``deformrt.detector``); ``onnx.checker``;
5. the file: the stage outputs removed unless ``debug_outputs``; verification (by the caller's
   verifier) on the written bytes and on the staged graph; atomic write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import onnx
import torch

from exporter.onnx import passes as gp
from exporter.onnx.detector_graph import ExportableDetector, DetectorShape, detector_shape, trt_limit_problems
from exporter.onnx.detector_ops import TRANSLATIONS
from exporter.onnx.export import (DEFAULT_SEED, BuiltModel, ExportOptions, _deform_conv_translation,
                                  _quiet_exporter, check_model, clean_graph, config_from_metadata, config_has_dcn,
                                  dynamic_axes_of, load_config, prepare_for_export, preprocessing_metadata,
                                  run_verification)
from exporter.onnx.metadata import DCN_OP_ONNX, SEED_PREFIX, DetectorMetadata, ExportMetadata
from exporter.util.fsutil import atomic_path, check_output_path, sha256_file
from exporter.util.progress import Progress
from models.calibrate import DETECTOR_CALIBRATION_SHAPE, OFFSET_STD_PX, calibrate_synthetic_detector
from models.checkpoint import load_checkpoint
from models.detector import build_detector
from models.errors import DeformRTError, require_file
from models.version import __version__

INPUTS = ("images", "image_sizes")
DEFAULT_DETECTOR_SIZE = (800, 1344)
_MAX_BATCH, _MAX_SIDE = 1024, 8192  # as the backbone export traces its dims
# Verifies (onnx bytes of the file, onnx bytes with stage outputs, built model, metadata, progress=,
# config_file=).
DetectorVerifier = Callable[..., object]


@dataclass(frozen=True)
class DetectorExportOptions(ExportOptions):
    """The backbone export's options (and its :meth:`ExportOptions.check`), at upstream's test
    size by default, and what only a whole detector has."""

    input_size: tuple[int, int] = DEFAULT_DETECTOR_SIZE
    debug_outputs: bool = False
    trt_limits: bool = True


def random_detector(cfg, seed: int = DEFAULT_SEED, std_px: float = OFFSET_STD_PX,
                    shape: tuple[int, int] = DETECTOR_CALIBRATION_SHAPE,
                    progress: Optional[Progress] = None) -> tuple[torch.nn.Module, list[float]]:
    """Seeded random init (``torch.manual_seed(seed)`` right before building) calibrated so that it
    detects (:func:`models.calibrate.calibrate_synthetic_detector`: DCN offsets of ``std_px``, head
    outputs of a trained model's spread, on two random images of ``shape``), in eval mode, and its
    DCN layers' mean |offset|. ``export --detector`` without ``--weights`` builds this model and
    ``deformrt synthetic-checkpoint --detector`` saves it."""
    progress = progress or Progress.quiet()
    with progress.step(f"building the {cfg.MODEL.BACKBONE.CONV_BODY} detector"):
        torch.manual_seed(seed)
        model = build_detector(cfg).eval()
    with progress.step("calibrating the random weights so that it detects (synthetic weights)"):
        means = calibrate_synthetic_detector(model, std_px=std_px, shape=shape)
    return model, means


def build_detector_model(cfg, weights: Optional[str] = None, seed: int = DEFAULT_SEED,
                         progress: Optional[Progress] = None, allow_unexpected: bool = False) -> BuiltModel:
    """The detector in eval mode: ``weights`` loaded strictly, key for key (every head tensor
    required; ``allow_unexpected``: tensors the model lacks are listed instead of refused), or
    :func:`random_detector` (the export says so)."""
    progress = progress or Progress.quiet()
    if weights is not None:
        require_file(weights, "checkpoint")
    if weights is None:
        model, _ = random_detector(cfg, seed, progress=progress)
        return BuiltModel(model, cfg, f"{SEED_PREFIX}{seed}", seed=seed)
    with progress.step(f"building the {cfg.MODEL.BACKBONE.CONV_BODY} detector"):
        torch.manual_seed(seed)
        model = build_detector(cfg).eval()
    with progress.step(f"loading weights from {weights}"):
        report = load_checkpoint(model, weights, strict=True, cfg=cfg, allow_unexpected=allow_unexpected)
        sha = sha256_file(weights)
    return BuiltModel(model, cfg, Path(weights).name, sha, report.summary(), seed)


def rebuild_detector(meta: ExportMetadata, weights: Optional[str] = None):
    """The PyTorch detector a detector file came from (eval mode), from its metadata (the
    checkpoint, when given, must be the very file the export accepted: its SHA-256 is checked)."""
    meta.check_rebuild_weights(weights)
    cfg = config_from_metadata(meta, detector=True)
    return build_detector_model(cfg, weights, meta.init_seed, allow_unexpected=True).model


def default_detector_output_name(cfg, config_file: Optional[str], dcn_op: str) -> str:
    stem = Path(config_file).stem if config_file else cfg.MODEL.BACKBONE.CONV_BODY
    return f"{stem}{'-onnxdcn' if dcn_op == DCN_OP_ONNX and config_has_dcn(cfg) else ''}.onnx"


def _dynamic_shapes(size_divisibility: int):
    from torch.export import Dim

    d = max(1, size_divisibility)
    batch = Dim("batch", min=1, max=_MAX_BATCH)
    height = d * Dim(f"h{d}", min=1, max=_MAX_SIDE // d)
    width = d * Dim(f"w{d}", min=1, max=_MAX_SIDE // d)
    return ({0: batch, 2: height, 3: width}, {0: batch})


def trace_detector(built: BuiltModel, shape: DetectorShape, options: DetectorExportOptions) -> onnx.ModelProto:
    """The raw dynamo export of the detector, stage outputs included."""
    model = built.model
    wrapper = ExportableDetector(prepare_for_export(model), shape, debug_outputs=True).eval()
    n, (h, w) = options.batch, options.input_size
    example = (torch.randn(n, 3, h, w), torch.tensor([[h, w]] * n, dtype=torch.int32))
    table = {torch.ops.deformrt.deform_conv2d.default: _deform_conv_translation, **TRANSLATIONS}
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(
                wrapper, example, dynamo=True, opset_version=options.opset, custom_translation_table=table,
                input_names=list(INPUTS), output_names=shape.output_names(debug_outputs=True),
                dynamic_shapes=_dynamic_shapes(model.size_divisibility) if options.dynamic else None,
                optimize=True, verbose=False, report=False)
        except DeformRTError:
            raise
        except Exception as exc:  # torch.onnx wraps everything in its own error types
            raise RuntimeError(f"torch.onnx.export of the detector failed: {exc}") from exc
    return program.model_proto


def drop_outputs(proto: onnx.ModelProto, keep: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` with only the graph outputs in ``keep`` and no node that fed only the others."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    wanted = [o for o in out.graph.output if o.name in keep]
    del out.graph.output[:]
    out.graph.output.extend(wanted)
    gp.remove_dead_nodes(out)
    gp.remove_unused_initializers(out)
    return out


def op_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Node count per (domain-qualified) op type."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def finish_detector(proto: onnx.ModelProto, built: BuiltModel, shape: DetectorShape,
                    options: DetectorExportOptions) -> onnx.ModelProto:
    """Cleanup, DCN flavour, metadata and checks on the raw trace (in place; returns it)."""
    model, cfg = built.model, built.cfg
    op_version = clean_graph(proto, options.dcn_op)
    backbone = model.backbone
    proto.producer_name, proto.producer_version = "deformrt", __version__
    proto.graph.name = f"{backbone.body_name}-{shape.kind}"
    proto.graph.doc_string = (f"{shape.kind} detector on {backbone.body_name} exported by deformrt {__version__} "
                              f"with torch {torch.__version__}")
    ExportMetadata(
        version=__version__, body=backbone.body_name, config=cfg.dump(), weights=built.weights,
        weights_sha256=built.weights_sha256, output_names=tuple(o.name for o in proto.graph.output),
        output_strides=tuple(backbone.output_strides), output_channels=tuple(backbone.output_channels),
        **preprocessing_metadata(cfg), size_divisibility=int(backbone.size_divisibility), dcn_op=options.dcn_op, dcn_op_version=op_version,
        dynamic_axes=dynamic_axes_of(proto), export_shape=(options.batch, 3, *options.input_size),
        init_seed=built.seed,
    ).apply(proto)
    DetectorMetadata(kind=shape.kind, num_classes=shape.num_classes, detections=shape.detections,
                     proposals=shape.proposals, mask_size=shape.mask_size, min_size_test=cfg.INPUT.MIN_SIZE_TEST,
                     max_size_test=cfg.INPUT.MAX_SIZE_TEST, debug_outputs=True, trt_limits=options.trt_limits,
                     calibrated=built.weights.startswith(SEED_PREFIX)).apply(proto)
    check_model(proto)
    return proto


def _set_debug_flag(proto: onnx.ModelProto, debug_outputs: bool) -> None:
    meta = DetectorMetadata.from_model(proto)
    fields = meta.to_dict()
    fields["debug_outputs"] = debug_outputs
    DetectorMetadata(**fields).apply(proto)
    ExportMetadata.from_model(proto)  # still consistent
    for p in proto.metadata_props:
        if p.key == "deformrt.output_names":
            import json

            p.value = json.dumps([o.name for o in proto.graph.output])


def _check_trt_limits(shape: DetectorShape, cfg, options: DetectorExportOptions) -> None:
    problems = trt_limit_problems(shape, cfg)
    if problems and options.trt_limits:
        raise DeformRTError(f"{problems[0]} (or pass --no-trt-limits for a model that only ONNX Runtime runs)")


_HIERARCHY = "pkg.torch.onnx.class_hierarchy"


def is_postprocessing_node(node: onnx.NodeProto) -> bool:
    """True for a node the exporter traced from :class:`ExportableDetector`'s own code (anchors,
    decoding, clipping, top-k, NMS, ROIAlign, score handling, mask selection) rather than from a
    network module (backbone, heads' convs and FC layers), by the module hierarchy the dynamo
    exporter records on each node. Nodes without that record (rewritten DCN nodes) are network."""
    text = next((p.value for p in node.metadata_props if p.key == _HIERARCHY), None)
    if text is None:
        return False
    classes = [c.strip(" '\"") for c in text.strip("[]").split(",")]
    return len(classes) <= 2 and classes[0].endswith("ExportableDetector")


def is_backbone_node(node: onnx.NodeProto) -> bool:
    """True for a node traced from the detector's backbone (body and FPN) by its recorded module
    hierarchy; a rewritten DCN node (no record) is one too: DCN lives in the body."""
    text = next((p.value for p in node.metadata_props if p.key == _HIERARCHY), None)
    if text is None:
        return node.op_type in _DCN_OPS
    classes = [c.strip(" '\"") for c in text.strip("[]").split(",")]
    return len(classes) > 1 and classes[1] == "models.backbone.Backbone"


# Ops that stay fp32 wherever they are: the detector's geometry and selection.
FP32_DETECTOR_OPS = frozenset({"NonMaxSuppression", "RoiAlign", "TopK"})
# The deformable convolution in either flavour: fp16 in an fp16 engine.
_DCN_OPS = frozenset({"DeformConv2d", "DeformConv"})


def detector_node_precisions(proto: onnx.ModelProto) -> dict[str, str]:
    """Node name -> "fp32" or "fp16" for a weakly typed fp16 engine (TensorRT 10's FP16 flag with
    precision constraints): the postprocessing (:func:`is_postprocessing_node`) and NMS, ROIAlign
    and TopK in fp32, the DCN nodes in fp16; convolutions and FC layers are left out (the flag lets
    TensorRT pick fp16). The same split :func:`convert_detector_to_fp16` makes for strong typing."""
    decided = {}
    for node in proto.graph.node:
        if node.op_type in _DCN_OPS:
            decided[node.name] = "fp16"
        elif node.op_type in FP32_DETECTOR_OPS or is_postprocessing_node(node):
            decided[node.name] = "fp32"
    return decided


def convert_detector_to_fp16(proto: onnx.ModelProto):
    """The detector for strongly typed fp16 engines (:func:`exporter.onnx.fp16.convert_to_fp16`):
    convolutions, DCN and FC layers in fp16; box decoding, NMS, ROIAlign (features cast to fp32 at
    its input), scores, masks' sigmoid and everything else of the postprocessing in fp32, since
    fp16's spacing is 1 px above 1024 and a score's 1e-3."""
    from exporter.onnx.fp16 import convert_to_fp16

    return convert_to_fp16(proto, keep_fp32_node=is_postprocessing_node)


@dataclass
class DetectorExportResult:
    """What ``deformrt export --detector`` produced (``to_dict`` is the ``--json`` form)."""

    path: Path
    size_bytes: int
    metadata: ExportMetadata
    detector: DetectorMetadata
    nodes: int
    op_types: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    load_summary: str = ""
    verification: Optional[object] = None

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "size_bytes": self.size_bytes, "body": self.metadata.body,
            "detector": self.detector.to_dict(), "dcn_op": self.metadata.dcn_op, "nodes": self.nodes,
            "op_types": self.op_types, "outputs": list(self.metadata.output_names),
            "weights": self.metadata.weights, "weights_sha256": self.metadata.weights_sha256,
            "dynamic_axes": self.metadata.dynamic_axes, "export_shape": list(self.metadata.export_shape),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "verification": self.verification.to_dict() if self.verification is not None else None,
        }

    def summary(self) -> str:
        meta, det = self.metadata, self.detector
        weights = (f"random init (seed {meta.seed}) calibrated so that it detects (the weights `deformrt "
                   f"synthetic-checkpoint --detector --seed {meta.seed}` saves): synthetic, for checks only"
                   if meta.seed is not None else f"{meta.weights} (sha256 {meta.weights_sha256[:16]}...)")
        lines = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, {self.nodes} nodes)",
            f"  detector: {det.kind} on {meta.body}; {det.num_classes} classes incl. background; "
            f"{det.detections} detection rows" + (f", {det.mask_size}x{det.mask_size} masks" if det.mask_size else ""),
            f"  outputs:  {', '.join(meta.output_names)}",
            f"  ops:      {', '.join(f'{k} x{v}' for k, v in self.op_types.items())}",
            f"  weights:  {weights}",
            "  time:     " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()),
            self.verification.table() if self.verification is not None else "not verified (--no-verify)",
        ]
        if not det.trt_limits:
            lines.append("note: exported with --no-trt-limits: for ONNX Runtime only (TensorRT's TopK/NMS limits "
                         "are exceeded)")
        return "\n".join(lines)


def export_detector(config_file: str, output: Optional[str] = None, *, body: Optional[str] = None,
                    opts: Sequence = (), weights: Optional[str] = None, seed: int = DEFAULT_SEED,
                    options: DetectorExportOptions = DetectorExportOptions(),
                    verify: Optional[DetectorVerifier] = None, force: bool = False,
                    progress: Optional[Progress] = None, allow_unexpected: bool = False) -> DetectorExportResult:
    """The whole ``deformrt export [BODY] --config-file CFG --detector --onnx`` job (module
    docstring): the config as :func:`exporter.onnx.export.load_config` reads a detector's (BODY, the
    file and KEY VALUE must name one body), the output checked before anything slow, TensorRT's
    limits, build (``weights`` strictly, or calibrated random init), export, verify, write."""
    progress = progress or Progress.quiet()
    cfg = load_config(body, config_file, opts, detector=True)
    out = Path(output) if output else Path(default_detector_output_name(cfg, config_file, options.dcn_op))
    check_output_path(out, force)
    _check_trt_limits(detector_shape(cfg), cfg, options)
    built = build_detector_model(cfg, weights, seed, progress, allow_unexpected)
    return export_detector_to_file(built, out, options, verify=verify, force=force, progress=progress,
                                   config_file=config_file)


def export_detector_to_file(built: BuiltModel, out: Path, options: DetectorExportOptions, *,
                            verify: Optional[DetectorVerifier] = None, force: bool = False,
                            progress: Optional[Progress] = None, config_file: Optional[str] = None
                            ) -> DetectorExportResult:
    """Export ``built`` to ``out`` (steps 3-5 of the module docstring); ``config_file`` (the one the
    config came from) is handed to the verifier for its notes."""
    progress = progress or Progress.quiet()
    out = Path(out)
    check_output_path(out, force)
    cfg, model = built.cfg, built.model
    options.check(model.size_divisibility)
    shape = detector_shape(cfg)
    _check_trt_limits(shape, cfg, options)
    seconds = {}
    start = time.perf_counter()
    with progress.step(f"exporting the {shape.kind} detector to ONNX (opset {options.opset}, "
                       f"{'dynamic' if options.dynamic else 'static'} {options.batch}x3x"
                       f"{options.input_size[0]}x{options.input_size[1]})"):
        staged = trace_detector(built, shape, options)
    with progress.step("cleaning and checking the graph"):
        finish_detector(staged, built, shape, options)
        final = staged if options.debug_outputs else drop_outputs(staged, shape.output_names())
        _set_debug_flag(final, options.debug_outputs)
        check_model(final)
    seconds["export"] = time.perf_counter() - start
    meta = ExportMetadata.from_model(final)
    detector_meta = DetectorMetadata.from_model(final)
    report = None
    with atomic_path(out, force) as tmp:
        data = final.SerializeToString()
        tmp.write_bytes(data)
        if verify is not None:
            report = run_verification(lambda: verify(data, staged.SerializeToString(), model, meta,
                                                     progress=progress, config_file=config_file), seconds, progress)
    return DetectorExportResult(path=out.resolve(), size_bytes=len(data), metadata=meta, detector=detector_meta,
                                nodes=len(final.graph.node), op_types=op_types(final), seconds=seconds,
                                load_summary=built.load_summary, verification=report)
