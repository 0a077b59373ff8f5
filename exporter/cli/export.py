"""`deformrt export`, `deformrt list-models` and `deformrt info`: thin commands over
:mod:`exporter.onnx.export`, :mod:`models.backbone` and :mod:`exporter.onnx.info`."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli import options as o
from exporter.onnx.metadata import DCN_OP_ONNX, DCN_OP_PLUGIN
from models.errors import DeformRTError

# A config key such as MODEL.RESNETS.WITH_MODULATED_DCN (never a body name: those have no dots).
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*\.")
ALLOW_UNEXPECTED_HINT = "--allow-unexpected loads the rest and lists them"


class DcnOp(str, Enum):
    plugin = DCN_OP_PLUGIN
    onnx = DCN_OP_ONNX


# The model to build, as `export` and `synthetic-checkpoint` take it.
BodyArg = Annotated[Optional[str], typer.Argument(
    metavar="BODY", show_default=False,
    help="Backbone body, e.g. R-101-FPN (see `deformrt list-models`); optional with --config-file, which names it.")]
OptsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="KEY VALUE", show_default=False, help="Config overrides as in maskrcnn-benchmark's tools.")]
ConfigFileOpt = Annotated[Optional[str], typer.Option(
    "--config-file", metavar=o.FILE, help="maskrcnn-benchmark YAML config (or a bundled config's name); it names "
                                          "the body, so BODY may be left out.")]
MODEL_CONTEXT = {"ignore_unknown_options": True}  # dash-tokens go to KEY VALUE (a value may be negative)


def body_and_opts(body: Optional[str], opts: Optional[list[str]], config_file: Optional[str],
                  detector: bool = False) -> tuple[Optional[str], list[str]]:
    """BODY and the KEY VALUE pairs as typed. BODY is optional, so when it is left out the first
    config key lands in BODY's place: it is moved back to the pairs. A leftover option-looking key is
    a typo of an option (config keys never start with a dash). Which body the model has is
    :func:`exporter.onnx.export.resolve_body`'s to decide (``detector``: from the config file)."""
    pairs = list(opts or [])
    if body is not None and _CONFIG_KEY.match(body):
        body, pairs = None, [body, *pairs]
    for key in pairs[0::2]:
        if key.startswith("-"):
            raise DeformRTError(f"unknown option {key!r} (config overrides are KEY VALUE pairs such as "
                                "MODEL.RESNETS.WITH_MODULATED_DCN True)")
    if body is None and config_file is None and not detector:
        raise DeformRTError("say which body: BODY (e.g. R-50-FPN; see `deformrt list-models`), or --config-file "
                            "with a config that names it")
    return body, pairs


def cli_checkpoint_errors(run):
    """Run ``run()`` with a checkpoint-of-another-model error phrased for the command line."""
    from models.checkpoint import CheckpointMismatchError

    try:
        return run()
    except CheckpointMismatchError as exc:
        raise DeformRTError(exc.with_hint(ALLOW_UNEXPECTED_HINT if exc.kind == "unexpected" else None)) from None


def register(app: typer.Typer) -> None:
    """Add ``export``, ``list-models`` and ``info`` to ``app``."""

    @app.command(
        "export",
        context_settings=MODEL_CONTEXT,
        epilog="Example: deformrt export R-101-FPN --onnx MODEL.RESNETS.STAGE_WITH_DCN '(False, True, True, True)' "
               "MODEL.RESNETS.WITH_MODULATED_DCN True",
    )
    def export(
        body: BodyArg = None,
        opts: OptsArg = None,
        onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (required: the export format).")] = False,
        output: Annotated[Optional[Path], o.output_option(
            "Output file (default: BODY[-dcn][-onnxdcn].onnx in the current directory; with --detector, the config "
            "file's name with .onnx).")] = None,
        config_file: ConfigFileOpt = None,
        weights: Annotated[Optional[str], typer.Option(
            "--weights", metavar=o.FILE, help="Checkpoint (.pth, .pkl, .safetensors); default: seeded random init "
                                              "(see `deformrt synthetic-checkpoint` for a calibrated one).")] = None,
        allow_unexpected: Annotated[bool, typer.Option(
            "--allow-unexpected", help="Load a checkpoint that has tensors this model lacks (normally refused: a "
                                       "checkpoint for another depth or DCN setting, or with --detector for other "
                                       "heads). Heads in a file given to a backbone export are always skipped.")
        ] = False,
        seed: Annotated[int, typer.Option(
            "--seed", metavar=o.N, **o.SEED_RANGE, help="Seed for random init (and for tensors a checkpoint lacks).")] = 0,
        dcn_op: Annotated[DcnOp, typer.Option(
            "--dcn-op", metavar=o.choices(DCN_OP_PLUGIN, DCN_OP_ONNX),
            help="plugin: deformrt.DeformConv2d for deformrt's TensorRT plugin; onnx: standard DeformConv "
                 "(opset >= 19).")] = DcnOp.plugin,
        opset: Annotated[int, typer.Option("--opset", metavar=o.N, help="ONNX opset (>= 19).")] = 19,
        shape: Annotated[str, typer.Option(
            "--shape", metavar=o.HW, help="Example input height and width, e.g. 800x1344.")] = "800x1344",
        batch: Annotated[int, typer.Option("--batch", metavar=o.N, help="Example batch size.")] = 1,
        dynamic: Annotated[bool, typer.Option(
            "--dynamic/--static", help="Dynamic batch, height and width, or the example shape fixed.")] = True,
        verify: Annotated[bool, typer.Option(
            "--verify/--no-verify", help="Check ONNX Runtime against PyTorch at two shapes before writing.")] = True,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
        detector: Annotated[bool, typer.Option(
            "--detector", help="Export the whole detector of --config-file (heads, NMS, ROIAlign, masks); random "
                               "init is calibrated so that it detects.")] = False,
        debug_outputs: Annotated[bool, typer.Option(
            "--debug-outputs", help="Detector: also output the pre-NMS candidates and proposals.")] = False,
        trt_limits: Annotated[bool, typer.Option(
            "--trt-limits/--no-trt-limits",
            help="Detector: refuse a config beyond TensorRT's TopK/NMS limits (--no-trt-limits: ONNX Runtime "
                 "only).")] = True,
        as_json: o.JsonFlag = False,
    ) -> None:
        """Export a backbone (or, with --detector, the whole detector) to a verified ONNX file."""
        from exporter.util.progress import Progress

        if not onnx:
            raise DeformRTError("say which format to export: --onnx (the only one `deformrt export` writes)")
        o.check_output_file(output, force, inputs=[weights, config_file])
        body, pairs = body_and_opts(body, opts, config_file, detector=detector)
        if not detector and (debug_outputs or not trt_limits):
            raise DeformRTError(f"{'--debug-outputs' if debug_outputs else '--no-trt-limits'} applies to whole "
                                "detectors: add --detector (with the detector's --config-file)")
        if detector:
            from exporter.evaluation.detector_verify import verify as verify_detector
            from exporter.onnx.detector_export import DetectorExportOptions, export_detector

            options = DetectorExportOptions(dcn_op=dcn_op.value, opset=opset, input_size=o.parse_shape(shape),
                                            batch=batch, dynamic=dynamic, debug_outputs=debug_outputs,
                                            trt_limits=trt_limits)
            result = cli_checkpoint_errors(lambda: export_detector(
                config_file, str(output) if output else None, body=body, opts=pairs, weights=weights, seed=seed,
                options=options, verify=verify_detector if verify else None, force=force, progress=Progress(),
                allow_unexpected=allow_unexpected))
        else:
            from exporter.evaluation.verify import verify as verify_onnx
            from exporter.onnx.export import ExportOptions, export_body

            options = ExportOptions(dcn_op=dcn_op.value, opset=opset, input_size=o.parse_shape(shape), batch=batch,
                                    dynamic=dynamic)
            result = cli_checkpoint_errors(lambda: export_body(
                body, str(output) if output else None, config_file=config_file, opts=pairs, weights=weights,
                seed=seed, options=options, verify=verify_onnx if verify else None, force=force, progress=Progress(),
                allow_unexpected=allow_unexpected))
        o.emit(as_json, result.to_dict, result.summary)

    @app.command("list-models")
    def list_models(as_json: o.JsonFlag = False) -> None:
        """List the backbone bodies: outputs, strides, channels, DCN support."""
        from models.backbone import body_info, list_bodies

        infos = [body_info(name) for name in list_bodies()]

        def table() -> str:
            rows = [("body", "outputs", "strides", "channels", "DCN")]
            rows += [(i["name"], ",".join(i["outputs"]), ",".join(map(str, i["strides"])),
                      ",".join(map(str, i["channels"])),
                      ("yes (" + ",".join(i["dcn_stages"]) + ")") if i["dcn_capable"] else "no") for i in infos]
            widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)

        o.emit(as_json, lambda: [{k: i[k] for k in ("name", "outputs", "strides", "channels", "dcn_capable",
                                                    "dcn_stages")} for i in infos], table, text_with_json=False)

    @app.command("info")
    def info(
        path: Annotated[str, typer.Argument(
            metavar=o.ONNX, help="An ONNX file (any; deformrt exports also show their metadata).")],
        as_json: o.JsonFlag = False,
    ) -> None:
        """Describe an ONNX file: inputs, outputs, opsets, custom ops, metadata, parameters."""
        from exporter.onnx.info import format_info, inspect_model

        described = inspect_model(path)
        o.emit(as_json, lambda: described, lambda: format_info(described), text_with_json=False)
