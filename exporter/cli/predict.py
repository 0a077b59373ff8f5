"""`deformrt predict`: a thin command over :mod:`exporter.evaluation.predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add ``predict`` to ``app``."""

    @app.command("predict")
    def predict(
        model: Annotated[str, typer.Argument(metavar="DETECTOR.onnx", help="A file from `deformrt export --detector`.")],
        images: Annotated[list[str], typer.Argument(metavar="IMAGE...", help="PNG or JPEG images.")],
        output: Annotated[str, typer.Option("-o", "--output", metavar="OUTDIR",
                                            help="Folder for one PNG per image (boxes, names, scores, masks).")]
        = "predictions",
        engine: Annotated[Optional[str], typer.Option(
            "--engine", metavar="PLAN", help="Run this TensorRT engine of the file instead of ONNX Runtime.")] = None,
        plugin: Annotated[Optional[str], typer.Option(
            "--plugin", help="deformrt's plugin library for --engine (DCN models).")] = None,
        score_threshold: Annotated[float, typer.Option(
            "--score-threshold", metavar="T", help="Draw and report detections scoring at least T.")] = 0.0,
        force: Annotated[bool, typer.Option("--force", help="Overwrite existing PNGs.")] = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print COCO-style results (bbox xywh, score, category_id, RLE segmentation).")] = False,
    ) -> None:
        """Detect objects in images with an exported detector; write annotated PNGs."""
        from exporter.evaluation.detections import class_name
        from exporter.evaluation.predict import coco_json, predict as run_predict
        from exporter.util.progress import Progress

        results = run_predict(Path(model), [Path(i) for i in images], Path(output),
                              engine=Path(engine) if engine else None, plugin=Path(plugin) if plugin else None,
                              score_threshold=score_threshold, force=force, progress=Progress())
        if as_json:
            typer.echo(coco_json(results, score_threshold))
            return
        for r in results:
            kept = r.above(score_threshold)
            names = ", ".join(f"{class_name(int(lab))} {s:.2f}" for lab, s in zip(kept.labels[:8], kept.scores[:8]))
            more = f" (+{len(kept) - 8} more)" if len(kept) > 8 else ""
            typer.echo(f"{r.path.name}: {len(kept)} detections{': ' + names + more if len(kept) else ''} -> "
                       f"{Path(output) / (r.path.stem + '.png')}")
