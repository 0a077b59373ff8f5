"""``deformrt eval``: COCO box and mask AP of a detector file per backend, side by side.

What a user checks after conversion: the same images through PyTorch (the eager detector the file
came from), ONNX Runtime and TensorRT, each scored with pycocotools against a COCO-format
annotation file, and the AP difference of each backend from the first.

Each image listed in the annotations is read from the images folder, resized and preprocessed as
upstream's test transform (:func:`exporter.evaluation.predict.image_feed`, what ``deformrt predict``
does), run as a batch of one, its boxes scaled back to the image and its masks pasted at the
image's resolution (:func:`exporter.evaluation.detections.coco_records`). Labels map to COCO's
category ids for an 81-class (COCO) model, else the label is the category id.

Reported per backend: box AP, AP50, AP75 and (Mask R-CNN) mask AP, AP50, AP75 (COCOeval's
``stats[0:3]``), the number of detections, and each AP minus the first backend's.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from exporter.evaluation.compare import BackendOptions, load_model_file
from exporter.evaluation.detections import COCO_CATEGORY_IDS, coco_records
from models.errors import DeformRTError, require_file

METRICS = ("AP", "AP50", "AP75")


@dataclass
class BackendScores:
    backend: str
    precision: str
    detections: int
    box: dict[str, float]
    mask: Optional[dict[str, float]] = None

    def to_dict(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "detections": self.detections,
                "box": self.box, "mask": self.mask}


@dataclass
class EvalReport:
    onnx_path: str
    annotations: str
    images: int
    results: list[BackendScores]
    skipped: dict[str, str] = field(default_factory=dict)

    def differences(self) -> list[dict]:
        """Each backend's AP minus the first backend's (box and mask, per metric)."""
        first = self.results[0]
        out = []
        for r in self.results[1:]:
            diff = {"backend": r.backend, "vs": first.backend,
                    "box": {m: r.box[m] - first.box[m] for m in METRICS}}
            if r.mask is not None and first.mask is not None:
                diff["mask"] = {m: r.mask[m] - first.mask[m] for m in METRICS}
            out.append(diff)
        return out

    def to_dict(self) -> dict:
        """Stable ``--json`` content."""
        return {"onnx": self.onnx_path, "annotations": self.annotations, "images": self.images,
                "results": [r.to_dict() for r in self.results], "differences": self.differences(),
                "skipped": dict(self.skipped)}

    def table(self) -> str:
        header = ["backend", "detections"] + [f"box {m}" for m in METRICS]
        masks = any(r.mask is not None for r in self.results)
        if masks:
            header += [f"mask {m}" for m in METRICS]
        first = self.results[0]
        header.append(f"box AP - {first.backend}")
        if masks:
            header.append(f"mask AP - {first.backend}")
        rows = []
        for r in self.results:
            row = [f"{r.backend} ({r.precision})", str(r.detections)] + [f"{r.box[m]:.4f}" for m in METRICS]
            if masks:
                row += [f"{r.mask[m]:.4f}" if r.mask else "-" for m in METRICS]
            row.append("-" if r is first else f"{r.box['AP'] - first.box['AP']:+.4f}")
            if masks:
                row.append("-" if r is first or not (r.mask and first.mask)
                           else f"{r.mask['AP'] - first.mask['AP']:+.4f}")
            rows.append(row)
        widths = [max(len(x[i]) for x in (header, *rows)) for i in range(len(header))]
        lines = [f"COCO AP on {self.images} images of {self.annotations} (pycocotools; inputs resized as upstream's "
                 f"test transform)"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
        lines += [f"{b} skipped: {why}" for b, why in self.skipped.items()]
        return "\n".join(lines)


def _coco_api():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DeformRTError("deformrt eval needs pycocotools (pip install pycocotools)") from None
    return COCO, COCOeval


def load_annotations(path: Path):
    """A pycocotools ``COCO`` of ``path``; one-line DeformRTError for a missing or malformed file."""
    COCO, _ = _coco_api()
    path = require_file(path, "annotation file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeformRTError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise DeformRTError(f"{path} is not a COCO annotation file (it needs 'images' and 'annotations')")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index... index created!": no news to a user
        coco.createIndex()
    return coco


def image_files(coco, images_dir: Path) -> list[tuple[int, Path]]:
    """(image id, file) for every image of the annotations, all checked to exist before any work."""
    images_dir = Path(images_dir)
    if images_dir.is_file():
        raise DeformRTError(f"--images {images_dir} is a file; give the folder that holds the annotation file's "
                            "images")
    if not images_dir.is_dir():
        raise DeformRTError(f"images folder not found: {images_dir}")
    out = []
    for info in sorted(coco.dataset["images"], key=lambda i: i["id"]):
        path = images_dir / info["file_name"]
        if not path.is_file():
            raise DeformRTError(f"{info['file_name']} (image id {info['id']}) is not in {images_dir}")
        out.append((int(info["id"]), path))
    if not out:
        raise DeformRTError("the annotation file lists no images")
    return out


def coco_stats(coco, records: list[dict], iou_type: str) -> dict[str, float]:
    """COCOeval's AP, AP50 and AP75 of ``records`` (pycocotools' printout goes to stderr)."""
    _, COCOeval = _coco_api()
    if not records:
        return {m: 0.0 for m in METRICS}
    with contextlib.redirect_stdout(sys.stderr):
        found = coco.loadRes(records)
        evaluation = COCOeval(coco, found, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {m: max(0.0, float(v)) for m, v in zip(METRICS, evaluation.stats[:3])}


def backend_records(backends: Sequence, files: Sequence[tuple[int, Path]], meta, detector,
                    progress) -> dict[str, list[dict]]:
    """COCO result records of every backend over every image, by backend name: each image is read
    and preprocessed once, then run by every backend."""
    from exporter.evaluation.inputs import read_image
    from exporter.evaluation.predict import image_feed, in_image_pixels

    categories = COCO_CATEGORY_IDS if detector.num_classes == len(COCO_CATEGORY_IDS) + 1 else None
    records: dict[str, list[dict]] = {backend.name: [] for backend in backends}
    with progress.loop(f"running {', '.join(records)} on {len(files)} images", len(files)) as tick:
        for image_id, path in files:
            image = read_image(path)
            feed, ratio = image_feed(image, meta, detector)
            for backend in backends:
                found = in_image_pixels(backend.detections(feed)[0], ratio)
                records[backend.name] += coco_records(found, image_id, *image.shape[:2], category_ids=categories)
            tick()
    return records


@dataclass
class EvalOptions(BackendOptions):
    """What ``deformrt eval`` asks for (see its --help): the backends; the images come from the
    annotation file."""


def evaluate(onnx_path: Path, annotations: Path, images_dir: Path, options: EvalOptions = EvalOptions(),
             progress=None) -> EvalReport:
    """COCO AP of ``onnx_path`` per backend (module docstring); trt is skipped with its reason where
    TensorRT or a GPU is missing."""
    from exporter.evaluation.detector_backends import DETECTOR_BACKENDS, make_backend
    from exporter.util.progress import Progress

    progress = progress or Progress.quiet()
    backends = list(options.backends)
    unknown = [b for b in backends if b not in DETECTOR_BACKENDS]
    if unknown or not backends or len(set(backends)) != len(backends):
        raise DeformRTError(f"--backends takes distinct names from {', '.join(DETECTOR_BACKENDS)}, got "
                            f"{', '.join(backends) or 'none'}")
    coco = load_annotations(annotations)
    files = image_files(coco, images_dir)
    model, meta, detector = load_model_file(onnx_path)
    if detector is None:
        raise DeformRTError(f"{onnx_path} is a backbone file; deformrt eval scores detector files (export one with "
                            "`deformrt export --config-file CFG --detector --onnx`)")
    skipped = {}
    if "trt" in backends and options.engine is None:
        from exporter.trt.build import tensorrt_unavailable_reason

        why = tensorrt_unavailable_reason(model)
        if why is not None:
            progress.info(f"TensorRT left out: {why}")
            skipped["trt"] = why
            backends.remove("trt")
    if not backends:
        raise DeformRTError(f"no backend can run here ({'; '.join(skipped.values())})")
    prepared = []
    for name in backends:
        with progress.step(f"preparing {name}"):
            prepared.append(make_backend(name, onnx_path=Path(onnx_path), model=model, meta=meta,
                                         weights=options.weights, device=options.device,
                                         ort_provider=options.ort_provider, engine=options.engine,
                                         plugin=options.plugin, fp16=options.fp16, verbose=options.verbose))
    all_records = backend_records(prepared, files, meta, detector, progress)
    results = []
    for backend in prepared:
        name, records = backend.name, all_records[backend.name]
        with progress.step(f"scoring {name} with pycocotools"):
            box = coco_stats(coco, [{k: v for k, v in r.items() if k != "segmentation"} for r in records], "bbox")
            mask = coco_stats(coco, records, "segm") if detector.kind == "mask_rcnn" else None
        results.append(BackendScores(name, backend.precision, len(records), box, mask))
    return EvalReport(str(onnx_path), str(annotations), len(files), results, skipped)
