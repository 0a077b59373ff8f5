"""On the device: ``deformrt predict`` with a detector bundle's engine, without torch, onnx or onnxruntime.

The same semantics as ``deformrt predict`` (:mod:`exporter.evaluation.predict`, whose
:func:`~exporter.evaluation.predict.predict_image` this runs): upstream's test-time resize and
preprocessing, the engine's fixed-size outputs cut to ``num_detections``, boxes mapped back to the
original image, masks pasted there. It writes ``OUTDIR/<stem>.png`` per image (boxes, class names,
scores, translucent masks) and ``OUTDIR/coco_results.json`` (COCO-style records: bbox xywh, score,
category_id, RLE segmentation). The model's metadata comes from the bundle's ``metadata.json``.

Needs numpy, Pillow (images; ``sudo apt install python3-pil`` on JetPack) and TensorRT's Python
bindings (``python3-libnvinfer``); pycocotools when present, else the masks' RLE is encoded with
numpy (:func:`exporter.evaluation.detections.encode_rle`, the same strings). From the bundle::

    PYTHONPATH=python python3 -m exporter.deploy.predict . IMAGES/ -o predictions/ \\
        --engine build/plugin-fp16.plan --plugin build/plugins/libdeformrt_plugin.so

Exit status 0, or 1 with one ``error:`` line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from exporter.deploy import layout
from exporter.evaluation.inputs import read_image
from exporter.evaluation.predict import (Prediction, Runner, check_output_folder, coco_results, predict_image,
                                         prediction_summary, trt_runner, write_picture)
from exporter.onnx.metadata import DETECTOR_KEY, DetectorMetadata, ExportMetadata
from exporter.util.fsutil import atomic_write_text, check_output_path
from exporter.util.usage import ScriptParser, print_error
from models.errors import DeformRTError, require_finite

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RESULTS = "coco_results.json"


def bundle_metadata(bundle: Path) -> tuple[ExportMetadata, DetectorMetadata]:
    """The model's metadata from the bundle's ``metadata.json``; DeformRTError for a backbone bundle."""
    path = Path(bundle) / layout.METADATA
    try:
        props = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeformRTError(f"{path} not found: {bundle} is not a deformrt deploy bundle") from None
    except (OSError, ValueError) as exc:
        raise DeformRTError(f"cannot read {path} ({exc})") from None
    meta = ExportMetadata.from_props(props)
    if DETECTOR_KEY not in props:
        raise DeformRTError(f"{bundle} holds a backbone ({meta.body}), not a detector: predict needs a bundle made "
                            f"from `deformrt export --detector`")
    try:
        detector = DetectorMetadata(**json.loads(props[DETECTOR_KEY]))
    except (ValueError, TypeError) as exc:
        raise DeformRTError(f"{path}: '{DETECTOR_KEY}' is malformed ({exc})") from None
    return meta, detector


def image_files(sources: Sequence[Path]) -> list[Path]:
    """Each source file, and the .jpg/.jpeg/.png files of each source folder (sorted)."""
    files = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise DeformRTError(f"{source} holds no .jpg, .jpeg or .png images")
            files.extend(found)
        else:
            files.append(source)
    if not files:
        raise DeformRTError("no images given")
    return files


def predict_folder(bundle: Path, images: Sequence[Path], out_dir: Path, run: Runner, score_threshold: float = 0.0,
                   force: bool = False, log=None) -> list[Prediction]:
    """Run ``run`` (an engine's, or any callable from input arrays to output arrays by name) on every
    image; write the PNGs and :data:`RESULTS` to ``out_dir``. The output folder, the bundle and every
    image are checked before the first inference."""
    require_finite(score_threshold, "--score-threshold")
    files = image_files(images)
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise DeformRTError("two images share a file name stem; their PNGs would overwrite each other")
    out_dir = Path(out_dir)
    check_output_folder(out_dir, files, force)
    if out_dir.is_dir():
        check_output_path(out_dir / RESULTS, force)
    meta, detector = bundle_metadata(bundle)
    for path in files:
        read_image(path)
    predictions = []
    for path in files:
        prediction = predict_image(path, run, meta, detector)
        predictions.append(prediction)
        write_picture(prediction, out_dir, score_threshold, force)
        if log is not None:
            print(prediction_summary([prediction], out_dir, score_threshold), file=log)
    results = coco_results(predictions, score_threshold)  # RLE by numpy where pycocotools is missing
    atomic_write_text(out_dir / RESULTS, json.dumps(results, indent=2, sort_keys=True) + "\n", force)
    return predictions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ScriptParser(
        prog="python3 -m exporter.deploy.predict",
        description="Detections on image files with a detector bundle's TensorRT engine: a PNG per image and "
                    f"{RESULTS} (COCO-style), as `deformrt predict` writes them.")
    parser.add_argument("bundle", type=Path, help="the bundle folder (with metadata.json)")
    parser.add_argument("images", type=Path, nargs="+", help="image files (.jpg, .png) or folders of them")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the PNGs and " + RESULTS)
    parser.add_argument("--engine", type=Path, required=True, help="engine built by build.sh (with its .json sidecar)")
    parser.add_argument("--plugin", type=Path, help="libdeformrt_plugin.so (engines of the plugin flavour)")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="drawn and written detections need at least this score (default: all)")
    parser.add_argument("--force", action="store_true", help="overwrite existing PNGs and results")
    parser.add_argument("--json", action="store_true", help="also print the COCO-style records on stdout")
    args = parser.parse_args(argv)
    try:
        bundle_metadata(args.bundle)  # user errors before TensorRT loads the engine
        image_files(args.images)
        run = trt_runner(args.engine, args.plugin)
        predict_folder(args.bundle, args.images, args.output, run, args.score_threshold, args.force, log=sys.stderr)
    except DeformRTError as exc:
        print_error(exc)
        return 1
    if args.json:
        print((args.output / RESULTS).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
