"""Export a registry backbone to a clean, checked ONNX file in one of two DCN flavours.

Route. ``torch.onnx.export(dynamo=True)`` traces the model once; a custom translation turns each
``torch.ops.deformrt.deform_conv2d`` call into standard ONNX ``DeformConv`` (opset 19) with its
``group`` / ``offset_group`` read from the traced shapes. Everything after that is an ONNX pass
(:mod:`exporter.onnx.passes`): cleanup, explicit attributes, and for ``--dcn-op plugin`` the
rewrite into our ``deformrt.DeformConv2d``. Both flavours come from the same traced graph, so they differ
only in the DCN nodes, and the reverse pass lets ONNX Runtime verify the plugin flavour. (Emitting the
custom-domain node straight from the translation would need the schema registered before tracing
and would give the plugin flavour a code path of its own that ONNX Runtime could never run.)

The graph: input ``images`` [N, 3, H, W]; outputs named by level as the body returns them;
dynamic batch, height and width by default (height and width as multiples of the body's size
divisibility, so the export never specialises on the example size); constants folded, FrozenBN
scale/shift folded into conv weights, no dead nodes or unused/duplicate initializers; metadata as
:mod:`exporter.onnx.metadata` defines. ``onnx.checker`` (full check, custom domain included) must pass
before anything is written; the write is atomic and verification runs on the written bytes
before the file is moved into place, so a failed verification leaves no file behind.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import onnx
import torch
from torch import nn

from exporter.onnx import passes as gp
from exporter.onnx import schema as onnx_schema
from exporter.onnx import op_contract as oc
from exporter.util.fsutil import sha256_file
from exporter.util.fsutil import atomic_path, check_output_path
from exporter.onnx.metadata import DCN_OP_ONNX, DCN_OP_PLUGIN, DCN_OPS, SEED_PREFIX, ExportMetadata
from exporter.util.progress import Progress
from models.backbone import body_info, build_backbone
from models.checkpoint import load_checkpoint
from models.config import config_from_yaml, get_cfg
from models.errors import DeformRTError, require_file
from models.layers import FrozenBatchNorm2d
from models.version import __version__

INPUT_NAME = "images"
# Checks serialized ONNX bytes against the PyTorch model; returns a report with .passed, .table(),
# .worst_line() and .to_dict() (the evaluation layer supplies it, so ONNX never imports evaluation).
Verifier = Callable[..., object]
MIN_OPSET = gp.ONNX_DEFORM_CONV_OPSET
DEFAULT_INPUT_SIZE = (800, 1344)
DEFAULT_SEED = 0
ONNX_FLAVOUR_NOTE = ("note: standard DeformConv runs in ONNX Runtime, and TensorRT >= 10.1 parses it natively "
                     "(with TensorRT's own plugin); --dcn-op plugin uses deformrt's kernels instead")
# Upper bounds the dynamic dims are traced with (not written to the ONNX file).
_MAX_BATCH = 1024
_MAX_SIDE = 8192


@dataclass(frozen=True)
class ExportOptions:
    """How to export: DCN flavour, opset, example input shape and whether axes are dynamic."""

    dcn_op: str = DCN_OP_PLUGIN
    opset: int = MIN_OPSET
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    batch: int = 1
    dynamic: bool = True

    def check(self, size_divisibility: Optional[int] = None) -> None:
        """DeformRTError (one line) for an option the export cannot honour; the input size is
        checked against ``size_divisibility`` when it is given (it comes from the built model)."""
        if self.dcn_op not in DCN_OPS:
            raise DeformRTError(f"--dcn-op must be one of {', '.join(DCN_OPS)}, got {self.dcn_op!r}")
        if self.opset < MIN_OPSET:
            raise DeformRTError(f"--opset {self.opset} is too low: deformable convolution needs opset >= {MIN_OPSET} "
                                f"(standard ONNX DeformConv appeared in opset {MIN_OPSET})")
        newest = onnx.defs.onnx_opset_version()
        if self.opset > newest:
            raise DeformRTError(f"--opset {self.opset} is newer than this onnx package supports ({newest})")
        if self.batch < 1:
            raise DeformRTError(f"--batch must be >= 1, got {self.batch}")
        h, w = self.input_size
        if min(h, w) < 32 or max(h, w) > _MAX_SIDE:
            raise DeformRTError(f"--shape {h}x{w}: height and width must be between 32 and {_MAX_SIDE}")
        d = max(1, size_divisibility or 1)
        if h % d or w % d:
            raise DeformRTError(f"--shape {h}x{w}: height and width must be multiples of {d} for this body; "
                                f"use --shape {-(-h // d) * d}x{-(-w // d) * d}")

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, *self.input_size)


@dataclass
class BuiltModel:
    """A backbone ready to export, with where its weights came from."""

    model: nn.Module
    cfg: object
    weights: str  # "seed:<N>" or the checkpoint file name
    weights_sha256: str = ""
    load_summary: str = ""
    seed: int = DEFAULT_SEED  # torch.manual_seed before building (random init, or init of tensors a file lacks)

def config_has_dcn(cfg) -> bool:
    """True when some stage of the configured body is deformable (STAGE_WITH_DCN)."""
    stages = len(body_info(cfg.MODEL.BACKBONE.CONV_BODY)["blocks"])
    return any(cfg.MODEL.RESNETS.STAGE_WITH_DCN[:stages])


CONV_BODY_KEY = "MODEL.BACKBONE.CONV_BODY"


def resolve_body(body: Optional[str], config_file: Optional[str] = None, opts: Sequence = (), *,
                 detector: bool = False) -> tuple[str, list]:
    """The body to build and the ``KEY VALUE`` opts left, from ``BODY``, the config file's
    MODEL.BACKBONE.CONV_BODY and a MODEL.BACKBONE.CONV_BODY among ``opts``: each may be left out,
    but two that name different bodies are a DeformRTError (upstream's tools take the body from the
    config; a BODY that silently replaced it would export another model than the config describes).

    ``detector``: the config file describes a whole detector and is required; one that sets no body
    names upstream's default (R-50-C4, as upstream's C4 configs rely on), so its heads and its body
    can never be two different models."""
    from models.config import config_file_body, default_conv_body

    if detector and config_file is None:
        raise DeformRTError("--detector needs --config-file: the detector's maskrcnn-benchmark YAML (e.g. "
                            "e2e_mask_rcnn_R_50_FPN_1x.yaml) describes its heads as well as its body")
    opts = list(opts)
    named = []  # (where, body)
    if body is not None:
        named.append(("BODY", body))
    if config_file is not None:
        in_file = config_file_body(config_file)
        if in_file is not None:
            named.append((f"{CONV_BODY_KEY} in {Path(config_file).name}", in_file))
        elif detector:
            named.append((f"{Path(config_file).name} (no {CONV_BODY_KEY}: upstream's default)", default_conv_body()))
    for i in range(0, len(opts) - 1, 2):
        if opts[i] == CONV_BODY_KEY:
            named.append((f"KEY VALUE {CONV_BODY_KEY}", str(opts[i + 1])))
    opts = [item for i in range(0, len(opts) - 1, 2) if opts[i] != CONV_BODY_KEY
            for item in opts[i:i + 2]] + opts[len(opts) - len(opts) % 2:]
    if not named:
        raise DeformRTError("say which body to export: BODY (e.g. R-50-FPN; see `deformrt list-models`)"
                            + (f", or a config file that sets {CONV_BODY_KEY}" if config_file is None else
                               f"; {Path(config_file).name} does not set {CONV_BODY_KEY}"))
    first_where, first = named[0]
    for where, other in named[1:]:
        if other != first:
            hint = (f"leave BODY out to export the config's {other}, or give a config file for {first}"
                    if first_where == "BODY" and "KEY VALUE" not in where else "name the body once")
            raise DeformRTError(f"{first_where} is {first} but {where} is {other}: {hint}")
    return first, opts


def load_config(body: Optional[str] = None, config_file: Optional[str] = None, opts: Sequence = (), *,
                detector: bool = False):
    """The frozen config for ``body`` (models.config.get_cfg: defaults, file, body preset, opts).

    With a config file ``body`` may be None: the file's MODEL.BACKBONE.CONV_BODY is used, with its
    preset, exactly as if it had been given (see :func:`resolve_body`, which also refuses two
    different bodies). Without either, upstream's default body is built. ``detector``: the whole
    detector's config (``get_cfg(detector=True)``), from a config file (required)."""
    if (not detector and body is None and config_file is None
            and not any(str(o) == CONV_BODY_KEY for o in list(opts)[0::2])):
        return get_cfg(opts=list(opts))
    body, opts = resolve_body(body, config_file, opts, detector=detector)
    return get_cfg(conv_body=body, config_file=config_file, opts=opts, detector=detector)


def build_model(cfg, weights: Optional[str] = None, seed: int = DEFAULT_SEED,
                progress: Optional[Progress] = None, allow_unexpected: bool = False) -> BuiltModel:
    """Build the configured backbone in eval mode: seeded random init (``torch.manual_seed(seed)``
    right before building, so one seed always gives the same weights), then, when ``weights`` is
    given, the checkpoint loaded strictly over it (``allow_unexpected``: backbone tensors the model
    does not have are listed instead of refused). Checkpoint problems raise DeformRTError
    (:class:`models.checkpoint.CheckpointMismatchError` for a checkpoint of another model)."""
    progress = progress or Progress.quiet()
    if weights is not None:
        require_file(weights, "checkpoint")
    with progress.step(f"building {cfg.MODEL.BACKBONE.CONV_BODY}"):
        torch.manual_seed(seed)
        model = build_backbone(cfg).eval()
    if weights is None:
        return BuiltModel(model, cfg, f"{SEED_PREFIX}{seed}", seed=seed)
    with progress.step(f"loading weights from {weights}"):
        report = load_checkpoint(model, weights, strict=True, cfg=cfg, allow_unexpected=allow_unexpected)
        sha = sha256_file(weights)
    return BuiltModel(model, cfg, Path(weights).name, sha, report.summary(), seed)


def config_from_metadata(meta: ExportMetadata, detector: bool = False):
    """The exact config an export was made with (its ``deformrt.config`` YAML read back;
    ``detector``: a whole detector's)."""
    return config_from_yaml(meta.config, detector)


def rebuild_model(meta: ExportMetadata, weights: Optional[str] = None) -> nn.Module:
    """The PyTorch model an export came from, rebuilt from its metadata (eval mode).

    Random-init exports are reseeded from ``deformrt.weights`` (``seed:<N>``). For a checkpoint
    export pass the checkpoint file as ``weights``; its SHA-256 must match the recorded one (so it is
    the very file the export accepted, unexpected tensors included)."""
    meta.check_rebuild_weights(weights)
    return build_model(config_from_metadata(meta), weights=weights, seed=meta.init_seed, allow_unexpected=True).model


def default_output_name(cfg, dcn_op: str) -> str:
    """``<body>[-dcn][-onnxdcn].onnx``: ``-dcn`` when some stage is deformable, ``-onnxdcn`` for
    the standard-DeformConv flavour of such a model (so both flavours can sit side by side)."""
    name = cfg.MODEL.BACKBONE.CONV_BODY
    if config_has_dcn(cfg):
        name += "-dcn" + ("-onnxdcn" if dcn_op == DCN_OP_ONNX else "")
    return f"{name}.onnx"


# ----------------------------------------------------------------------------------------------
# Tracing


def _deform_conv_translation(input, offset, weight, bias, mask, stride, padding, dilation):
    """onnxscript translation of deformrt::deform_conv2d into standard DeformConv (opset 19)."""
    from onnxscript import opset19 as op

    c_in, c_per_group, kh, kw = input.shape[1], weight.shape[1], weight.shape[2], weight.shape[3]
    offset_channels = offset.shape[1]
    if not all(isinstance(v, int) for v in (c_in, c_per_group, kh, kw, offset_channels)):
        raise DeformRTError("deformable conv with a dynamic channel count or kernel size cannot be exported")
    return op.DeformConv(
        input, weight, offset, bias, mask,
        kernel_shape=[kh, kw], strides=list(stride), pads=[padding[0], padding[1], padding[0], padding[1]],
        dilations=list(dilation), group=c_in // c_per_group, offset_group=offset_channels // (2 * kh * kw),
    )


@contextlib.contextmanager
def _quiet_exporter():
    """Silence torch.onnx's informational logging and deprecation chatter during one export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # A detector's images and image_sizes share one batch Dim on purpose; torch says so for each export.
            warnings.filterwarnings("ignore", message=".*The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _dynamic_shapes(size_divisibility: int):
    from torch.export import Dim

    d = max(1, size_divisibility)
    batch = Dim("batch", min=1, max=_MAX_BATCH)
    if d > 1:
        height = d * Dim(f"h{d}", min=1, max=_MAX_SIDE // d)
        width = d * Dim(f"w{d}", min=1, max=_MAX_SIDE // d)
    else:
        height = Dim("height", min=32, max=_MAX_SIDE)
        width = Dim("width", min=32, max=_MAX_SIDE)
    return ({0: batch, 2: height, 3: width},)


class _ScaleShift(nn.Module):
    """FrozenBatchNorm2d with its scale and shift precomputed (same arithmetic, two ops)."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        scale = bn.weight * bn.running_var.rsqrt()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1))
        self.register_buffer("shift", (bn.bias - bn.running_mean * scale).reshape(1, -1, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for tracing: each FrozenBatchNorm2d becomes a precomputed
    ``x * scale + shift``. Same values; about half the traced ops, which halves the time the
    dynamic-shape export spends on symbolic shapes. (The cleanup pass then folds scale and shift
    into the conv weights.) ``model`` itself is left untouched."""
    prepared = copy.deepcopy(model).eval()
    for module in list(prepared.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                setattr(module, name, _ScaleShift(child))
    return prepared


_SYMBOL = re.compile(r"[A-Za-z_]\w*")


def _rename_symbols(proto: onnx.ModelProto, program) -> None:
    """Name output dims after the user's Dims: torch names derived dims' roots ``s39`` inside
    the graph while the input reads ``32*h32``; align the two so every dim_param uses ``h32``."""
    exported = program.exported_program
    user_inputs = set(exported.graph_signature.user_inputs)
    user_input = next(n for n in exported.graph.nodes if n.op == "placeholder" and n.name in user_inputs)
    mapping = {}
    onnx_dims = proto.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(onnx_dims, user_input.meta["val"].shape):
        if dim.dim_param and isinstance(size, torch.SymInt):
            internal, named = _SYMBOL.findall(str(size)), _SYMBOL.findall(dim.dim_param)
            if len(internal) == len(named):
                mapping.update({a: b for a, b in zip(internal, named) if a != b})
    if not mapping:
        return
    rename = lambda text: _SYMBOL.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)  # noqa: E731
    for vi in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = rename(dim.dim_param)


def trace_to_onnx(model: nn.Module, output_names: Sequence[str], options: ExportOptions,
                  size_divisibility: int) -> onnx.ModelProto:
    """The raw dynamo export of ``model`` (prepared by :func:`prepare_for_export`): standard
    DeformConv, constants folded by torch's ONNX optimizer, dims named after the user's Dims."""
    example = torch.randn(*options.input_shape)
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=options.opset,
                custom_translation_table={torch.ops.deformrt.deform_conv2d.default: _deform_conv_translation},
                input_names=[INPUT_NAME], output_names=list(output_names),
                dynamic_shapes=_dynamic_shapes(size_divisibility) if options.dynamic else None,
                optimize=True, verbose=False, report=False,
            )
        except DeformRTError:
            raise
        except Exception as exc:  # torch.onnx wraps everything in its own error types
            raise RuntimeError(f"torch.onnx.export failed: {exc}") from exc
    proto = program.model_proto
    if options.dynamic:
        _rename_symbols(proto, program)
    return proto


def dynamic_axes_of(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """{tensor name: {axis: dim name}} for the graph's inputs and outputs (symbolic axes only)."""
    axes = {}
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = {str(i): d.dim_param for i, d in enumerate(vi.type.tensor_type.shape.dim) if d.dim_param}
        if dims:
            axes[vi.name] = dims
    return axes


def trace(built: BuiltModel, options: ExportOptions, progress: Optional[Progress] = None) -> onnx.ModelProto:
    """Step 1 of an export: check the options and trace ``built`` to a raw ONNX graph (standard
    DeformConv, any flavour can be finished from it by :func:`finish_export`)."""
    progress = progress or Progress.quiet()
    model = built.model
    options.check(model.size_divisibility)
    shape = "x".join(map(str, options.input_shape))
    with progress.step(f"exporting {model.body_name} to ONNX (opset {options.opset}, "
                       f"{'dynamic' if options.dynamic else 'static'} {shape})"):
        return trace_to_onnx(prepare_for_export(model), model.output_names, options, model.size_divisibility)


def clean_graph(proto: onnx.ModelProto, dcn_op: str) -> str:
    """The passes every export goes through, in place: cleanup, then the DCN nodes in ``dcn_op``'s
    flavour. Returns the DCN op's version string for the metadata."""
    gp.cleanup(proto)
    gp.to_onnx_op(proto)
    if dcn_op == DCN_OP_PLUGIN:
        onnx_schema.register()
        gp.to_plugin_op(proto)
        return f"{oc.OP_DOMAIN}.{oc.OP_NAME}/{oc.OP_DOMAIN_VERSION}"
    return f"ai.onnx.{gp.ONNX_DEFORM_CONV}/{MIN_OPSET}"


def preprocessing_metadata(cfg) -> dict:
    """The metadata fields that say how inputs are preprocessed (mean, std, colour order, scale)."""
    return {"pixel_mean": tuple(float(v) for v in cfg.INPUT.PIXEL_MEAN),
            "pixel_std": tuple(float(v) for v in cfg.INPUT.PIXEL_STD), "to_bgr255": bool(cfg.INPUT.TO_BGR255),
            "color_order": "BGR" if cfg.INPUT.TO_BGR255 else "RGB"}


def finish_export(proto: onnx.ModelProto, built: BuiltModel, options: ExportOptions,
                  progress: Optional[Progress] = None) -> onnx.ModelProto:
    """Step 2 of an export, in place on a raw graph from :func:`trace`: clean up, write the DCN
    nodes in the ``options.dcn_op`` flavour, attach metadata and check. Returns ``proto``."""
    progress = progress or Progress.quiet()
    model, cfg = built.model, built.cfg
    with progress.step("cleaning the graph"):
        op_version = clean_graph(proto, options.dcn_op)
    proto.producer_name, proto.producer_version = "deformrt", __version__
    proto.graph.name = model.body_name
    proto.graph.doc_string = (f"{model.body_name} backbone exported by deformrt {__version__} "
                              f"with torch {torch.__version__}")
    ExportMetadata(
        version=__version__, body=model.body_name, config=cfg.dump(), weights=built.weights,
        weights_sha256=built.weights_sha256, output_names=tuple(model.output_names),
        output_strides=tuple(model.output_strides), output_channels=tuple(model.output_channels),
        **preprocessing_metadata(cfg), size_divisibility=int(model.size_divisibility), dcn_op=options.dcn_op, dcn_op_version=op_version,
        dynamic_axes=dynamic_axes_of(proto), export_shape=options.input_shape, init_seed=built.seed,
    ).apply(proto)
    with progress.step("checking the graph (onnx.checker, shape inference)"):
        check_model(proto)
    return proto


def export_model(built: BuiltModel, options: ExportOptions, progress: Optional[Progress] = None) -> onnx.ModelProto:
    """Trace, clean, convert to the requested flavour, attach metadata and check; in memory."""
    return finish_export(trace(built, options, progress), built, options, progress)


def check_model(proto: onnx.ModelProto) -> None:
    """onnx.checker with full shape inference, our custom domain included."""
    onnx_schema.register()
    onnx.checker.check_model(proto, full_check=True, check_custom_domain=True)


# ----------------------------------------------------------------------------------------------
# The whole job


@dataclass
class ExportResult:
    """What ``deformrt export`` produced (``to_dict`` is the stable ``--json`` form)."""

    path: Path
    size_bytes: int
    parameter_bytes: int
    metadata: ExportMetadata
    dcn_nodes: int
    nodes: int
    seconds: dict[str, float] = field(default_factory=dict)
    load_summary: str = ""
    verification: Optional[object] = None  # what the verifier returned (exporter.evaluation.verify.VerifyReport)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "parameter_bytes": self.parameter_bytes,
            "body": self.metadata.body,
            "dcn_op": self.metadata.dcn_op,
            "dcn_op_version": self.metadata.dcn_op_version,
            "dcn_nodes": self.dcn_nodes,
            "nodes": self.nodes,
            "weights": self.metadata.weights,
            "weights_sha256": self.metadata.weights_sha256,
            "dynamic_axes": self.metadata.dynamic_axes,
            "export_shape": list(self.metadata.export_shape),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "verification": self.verification.to_dict() if self.verification is not None else None,
        }

    def summary(self) -> str:
        """Several lines for people: file, body, DCN nodes, input dims, weights, timings, then the
        verification table (and, for the standard-DeformConv flavour, where it runs)."""
        meta = self.metadata
        flavour = "deformrt plugin op" if meta.dcn_op == DCN_OP_PLUGIN else "standard ONNX op"
        weights = (f"random init (seed {meta.seed})" if meta.seed is not None
                   else f"{meta.weights} (sha256 {meta.weights_sha256[:16]}...)")
        axes = meta.dynamic_axes.get(INPUT_NAME, {})
        dims = ", ".join(axes.get(str(i), str(v)) for i, v in enumerate(meta.export_shape))
        lines = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB; parameters {self.parameter_bytes / 1e6:.1f} MB)",
            f"  body:    {meta.body}; outputs {', '.join(meta.output_names)} "
            f"(strides {', '.join(map(str, meta.output_strides))})",
            f"  DCN:     {self.dcn_nodes} x {meta.dcn_op_version} ({flavour})",
            f"  input:   {INPUT_NAME} [{dims}] ({'dynamic' if meta.dynamic else 'static'}; exported at "
            f"{'x'.join(map(str, meta.export_shape))})",
            f"  weights: {weights}",
            "  time:    " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()),
            self.verification.table() if self.verification is not None else "not verified (--no-verify)",
        ]
        if meta.dcn_op == DCN_OP_ONNX and self.dcn_nodes:
            lines.append(ONNX_FLAVOUR_NOTE)
        return "\n".join(lines)


def export_to_file(built: BuiltModel, out: Path, options: ExportOptions, *, verify: Optional[Verifier] = None,
                   force: bool = False, progress: Optional[Progress] = None) -> ExportResult:
    """Export ``built`` to ``out``, check the written bytes with ``verify`` when given (the
    evaluation layer's :func:`exporter.evaluation.verify.verify`: ONNX Runtime against PyTorch),
    then move the file into place. DeformRTError for user errors and for a failed verification
    (which leaves no file)."""
    progress = progress or Progress.quiet()
    out = Path(out)
    check_output_path(out, force)
    seconds = {}
    start = time.perf_counter()
    proto = export_model(built, options, progress)
    seconds["export"] = time.perf_counter() - start
    meta = ExportMetadata.from_model(proto)
    dcn_nodes = sum(1 for n in proto.graph.node if gp.is_plugin_deform_conv(n) or gp.is_onnx_deform_conv(n))
    nodes = len(proto.graph.node)
    parameter_bytes = sum(p.numel() * p.element_size() for p in built.model.parameters())
    report = None
    with atomic_path(out, force) as tmp:
        with progress.step(f"writing {out}"):
            data = proto.SerializeToString()
            del proto
            tmp.write_bytes(data)
        if verify is not None:
            report = run_verification(lambda: verify(data, built.model, meta, progress=progress), seconds, progress)
    return ExportResult(path=out.resolve(), size_bytes=len(data), parameter_bytes=parameter_bytes, metadata=meta,
                        dcn_nodes=dcn_nodes, nodes=nodes, seconds=seconds, load_summary=built.load_summary,
                        verification=report)


def run_verification(check: Callable[[], Any], seconds: dict, progress) -> Any:
    """Run an export's verification (``check`` returns a report with ``passed``, ``table()`` and
    ``worst_line()``), timed into ``seconds["verify"]``; a failed one prints its table and stops the
    export before anything is written."""
    start = time.perf_counter()
    report = check()
    seconds["verify"] = time.perf_counter() - start
    if not report.passed:
        progress.info(report.table())
        raise DeformRTError(f"verification failed: {report.worst_line()}; the file was not written "
                            "(--no-verify writes it anyway)")
    return report


def export_body(body: Optional[str], output: Optional[str] = None, *, config_file: Optional[str] = None,
                opts: Sequence = (), weights: Optional[str] = None, seed: int = DEFAULT_SEED,
                options: ExportOptions = ExportOptions(), verify: Optional[Verifier] = None, force: bool = False,
                progress: Optional[Progress] = None, allow_unexpected: bool = False) -> ExportResult:
    """The whole ``deformrt export [BODY] --onnx`` job: config (``body`` may be None with a config
    file that names it, see :func:`resolve_body`), output check (before any slow step), build
    (seeded random init or ``weights``), export, verify (when a verifier is given), atomic write."""
    progress = progress or Progress.quiet()
    options.check()
    body, opts = resolve_body(body, config_file, opts)
    cfg = load_config(body, config_file, opts)
    out = Path(output) if output else Path(default_output_name(cfg, options.dcn_op))
    check_output_path(out, force)
    if weights is None:
        progress.info(f"weights: random init (seed {seed})")
    built = build_model(cfg, weights=weights, seed=seed, progress=progress, allow_unexpected=allow_unexpected)
    if built.load_summary:
        progress.info(built.load_summary)
    return export_to_file(built, out, options, verify=verify, force=force, progress=progress)
