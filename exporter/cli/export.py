"""`deformrt export`, `deformrt list-models` and `deformrt info`: thin commands over
:mod:`exporter.onnx.export`, :mod:`models.backbone` and :mod:`exporter.onnx.info`."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Optional

import typer

from exporter.onnx.metadata import DCN_OP_ONNX, DCN_OP_PLUGIN
from models.errors import DeformRTError

JsonOption = Annotated[bool, typer.Option("--json", help="Print one stable JSON object instead of text.")]


class DcnOp(str, Enum):
    plugin = DCN_OP_PLUGIN
    onnx = DCN_OP_ONNX


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def _check_pairs(pairs) -> None:
    for key in pairs[0::2]:
        if key.startswith("-"):
            raise DeformRTError(f"unknown option {key!r} (config overrides are KEY VALUE pairs such as "
                                "MODEL.RESNETS.WITH_MODULATED_DCN True)")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``list-models`` and ``info`` to ``app``."""

    @app.command(
        "export",
        # Unknown dash-tokens go to KEY VALUE (a value may be a negative number); keys are checked.
        context_settings={"ignore_unknown_options": True},
        epilog="Example: deformrt export R-101-FPN --onnx MODEL.RESNETS.STAGE_WITH_DCN '(False, True, True, True)' "
               "MODEL.RESNETS.WITH_MODULATED_DCN True",
    )
    def export(
        body: Annotated[Optional[str], typer.Argument(
            metavar="[BODY]", help="Backbone body, e.g. R-101-FPN (see `deformrt list-models`); optional with "
                                   "--config-file.")] = None,
        opts: Annotated[Optional[list[str]], typer.Argument(
            metavar="KEY VALUE", help="Config overrides as in maskrcnn-benchmark's tools.")] = None,
        onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (required: the export format).")] = False,
        output: Annotated[Optional[str], typer.Option(
            "-o", "--output",
            help="Output file (default: <body>[-dcn][-onnxdcn].onnx in the current directory).")] = None,
        config_file: Annotated[Optional[str], typer.Option(
            "--config-file", help="maskrcnn-benchmark YAML config (or a bundled config's name).")] = None,
        weights: Annotated[Optional[str], typer.Option(
            "--weights", help="Checkpoint (.pth, .pkl, .safetensors); default: seeded random init.")] = None,
        seed: Annotated[int, typer.Option(
            "--seed", help="Seed for random init (and for tensors a checkpoint lacks).")] = 0,
        dcn_op: Annotated[DcnOp, typer.Option(
            "--dcn-op", help="plugin: deformrt.DeformConv2d for deformrt's TensorRT plugin; "
                             "onnx: standard DeformConv (opset >= 19).")] = DcnOp.plugin,
        opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 19).")] = 19,
        input_size: Annotated[tuple[int, int], typer.Option(
            "--input-size", metavar="H W", help="Example input height and width.")] = (800, 1344),
        batch: Annotated[int, typer.Option("--batch", help="Example batch size.")] = 1,
        dynamic: Annotated[bool, typer.Option(
            "--dynamic/--static", help="Dynamic batch, height and width, or the example shape fixed.")] = True,
        verify: Annotated[bool, typer.Option(
            "--verify/--no-verify", help="Check ONNX Runtime against PyTorch at two shapes before writing.")] = True,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
        detector: Annotated[bool, typer.Option(
            "--detector", help="Export the whole detector of --config-file (heads, NMS, ROIAlign, masks).")] = False,
        debug_outputs: Annotated[bool, typer.Option(
            "--debug-outputs", help="Detector: also output the pre-NMS candidates and proposals.")] = False,
        trt_limits: Annotated[bool, typer.Option(
            "--trt-limits/--no-trt-limits",
            help="Detector: refuse a config beyond TensorRT's TopK/NMS limits (--no-trt-limits: ONNX Runtime "
                 "only).")] = True,
        as_json: JsonOption = False,
    ) -> None:
        """Export a backbone (or, with --detector, the whole detector) to a verified ONNX file."""
        from exporter.util.progress import Progress

        if not onnx:
            raise DeformRTError("say which format to export: --onnx (the only one `deformrt export` writes)")
        pairs = list(opts or [])
        if body is not None and "." in body and config_file is not None:  # no BODY: the first KEY of KEY VALUE
            pairs, body = [body, *pairs], None
        if detector:
            result = _export_detector(body, config_file, pairs, output, weights, seed, dcn_op.value, opset,
                                      input_size, batch, dynamic, verify, force, debug_outputs, trt_limits)
            typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True) if as_json else result.summary())
            return
        if body is None and config_file is None:
            raise DeformRTError("name a BODY (see `deformrt list-models`) or give --config-file")
        from exporter.evaluation.verify import verify as verify_onnx
        from exporter.onnx.export import ExportOptions, export_body

        _check_pairs(pairs)
        options = ExportOptions(dcn_op=dcn_op.value, opset=opset, input_size=tuple(input_size), batch=batch,
                                dynamic=dynamic)
        result = export_body(body, output, config_file=config_file, opts=pairs, weights=weights, seed=seed,
                             options=options, verify=verify_onnx if verify else None, force=force, progress=Progress())
        if as_json:
            _print_json(result.to_dict())
        else:
            typer.echo(result.summary())

    def _export_detector(body, config_file, pairs, output, weights, seed, dcn_op, opset, input_size, batch, dynamic,
                         verify, force, debug_outputs, trt_limits):
        from exporter.evaluation.detector_verify import verify as verify_detector
        from exporter.onnx.detector_export import DetectorExportOptions, export_detector
        from exporter.util.progress import Progress

        if config_file is None:
            raise DeformRTError("--detector needs --config-file (the detector's maskrcnn-benchmark YAML)")
        _check_pairs(pairs)
        options = DetectorExportOptions(dcn_op=dcn_op, opset=opset, input_size=tuple(input_size), batch=batch,
                                        dynamic=dynamic, debug_outputs=debug_outputs, trt_limits=trt_limits)
        return export_detector(config_file, output, body=body, opts=pairs, weights=weights, seed=seed,
                               options=options, verify=verify_detector if verify else None, force=force,
                               progress=Progress())

    @app.command("list-models")
    def list_models(as_json: JsonOption = False) -> None:
        """List the backbone bodies: outputs, strides, channels, DCN support."""
        from models.backbone import body_info, list_bodies

        infos = [body_info(name) for name in list_bodies()]
        if as_json:
            _print_json([{k: i[k] for k in ("name", "outputs", "strides", "channels", "dcn_capable", "dcn_stages")}
                         for i in infos])
            return
        rows = [("body", "outputs", "strides", "channels", "DCN")]
        rows += [(i["name"], ",".join(i["outputs"]), ",".join(map(str, i["strides"])),
                  ",".join(map(str, i["channels"])),
                  ("yes (" + ",".join(i["dcn_stages"]) + ")") if i["dcn_capable"] else "no") for i in infos]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        for r in rows:
            typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())

    @app.command("info")
    def info(
        path: Annotated[str, typer.Argument(
            metavar="MODEL.onnx", help="An ONNX file (any; deformrt exports also show their metadata).")],
        as_json: JsonOption = False,
    ) -> None:
        """Describe an ONNX file: inputs, outputs, opsets, custom ops, metadata, parameters."""
        from exporter.onnx.info import format_info, inspect_model

        described = inspect_model(path)
        if as_json:
            _print_json(described)
        else:
            typer.echo(format_info(described))
