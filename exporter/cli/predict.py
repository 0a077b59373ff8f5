"""`deformrt predict`: a thin command over :mod:`exporter.evaluation.predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli import options as o
from models.errors import DeformRTError


def register(app: typer.Typer) -> None:
    """Add ``predict`` to ``app``."""

    @app.command(
        "predict",
        epilog="Example: deformrt predict mask-dcn.onnx street.jpg park.png -o predictions --json-file results.json",
    )
    def predict(
        model: Annotated[Path, typer.Argument(metavar=o.ONNX, help="A file from `deformrt export --detector`.")],
        images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="PNG or JPEG images.")],
        output: Annotated[Path, o.output_option(
            "Folder for one PNG per image with boxes, names, scores and masks (default: predictions; created if "
            "missing; an existing PNG of the same name is kept unless --force).", metavar=o.DIR)] = Path("predictions"),
        engine: Annotated[Optional[Path], typer.Option(
            "--engine", metavar=o.FILE, help="Run this TensorRT engine of the file instead of ONNX Runtime.")] = None,
        plugin: Annotated[Optional[Path], typer.Option(
            "--plugin", metavar=o.FILE, help="deformrt's plugin library for --engine (DCN models).")] = None,
        score_threshold: Annotated[float, typer.Option(
            "--score-threshold", metavar=o.X, help="Draw and report detections scoring at least X.")] = 0.0,
        force: Annotated[bool, typer.Option("--force", help="Replace existing PNGs.")] = False,
        as_json: o.JsonFlag = False,
        json_file: o.JsonFileOpt = None,
    ) -> None:
        """Detect objects in images with an exported detector; write annotated PNGs and COCO-style results
        (--json, --json-file: bbox xywh, score, category_id, RLE segmentation)."""
        from exporter.evaluation.predict import coco_results, predict as run_predict, prediction_summary
        from exporter.util.progress import Progress

        o.check_report_file(json_file, inputs=[model, engine, plugin, *images])
        if plugin is not None and engine is None:  # else it would be ignored without a word
            raise DeformRTError("--plugin is for --engine: add --engine FILE (without it ONNX Runtime runs the file)")
        results = run_predict(model, images, output, engine=engine, plugin=plugin, score_threshold=score_threshold,
                              force=force, progress=Progress())
        o.emit(as_json, lambda: coco_results(results, score_threshold),
               lambda: prediction_summary(results, output, score_threshold), json_file=json_file)
