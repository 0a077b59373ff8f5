"""``deformrt predict``: detections on image files from a detector file, in ONNX Runtime or TensorRT.

Per image, as upstream's test-time pipeline: resize so the short side is INPUT.MIN_SIZE_TEST and
the long side at most MAX_SIZE_TEST (upstream's ``Resize.get_size``, bilinear with Pillow), colour
order and scale, mean/std, zero padding to the size divisibility
(:func:`exporter.evaluation.inputs.preprocess`); the file's fixed-size outputs cut to
``num_detections``; boxes mapped back to the original image (upstream's ``BoxList.resize``); masks
pasted there (:func:`exporter.evaluation.detections.paste_mask`). Results: a PNG per image
(boxes, names, scores, translucent masks) and COCO-style records.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from exporter.evaluation.detections import ImageDetections, class_name, coco_records, draw_detections
from exporter.evaluation.inputs import preprocess, read_image
from exporter.onnx.metadata import DetectorMetadata, ExportMetadata
from exporter.util.fsutil import atomic_write_bytes, check_output_directory, check_output_path
from models.errors import DeformRTError, require_finite


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(height, width) after upstream's test-time resize (``Resize.get_size``)."""
    size = min_size
    short, long = float(min(width, height)), float(max(width, height))
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


@dataclass
class Prediction:
    path: Path
    image: np.ndarray  # original RGB
    detections: ImageDetections  # in original pixels

    def records(self, image_id: int, score_threshold: float = 0.0) -> list[dict]:
        kept = self.above(score_threshold)
        records = coco_records(kept, image_id, *self.image.shape[:2])
        for r in records:
            r["file_name"] = self.path.name
        return records

    def above(self, score_threshold: float) -> ImageDetections:
        d = self.detections
        keep = d.scores >= score_threshold
        return ImageDetections(d.boxes[keep], d.scores[keep], d.labels[keep], None if d.masks is None else d.masks[keep])


Runner = Callable[[dict], dict]


def ort_runner(model_path: Path, provider: str = "cpu") -> Runner:
    from exporter.evaluation.ort import ort_session

    session = ort_session(Path(model_path).read_bytes(), provider, provider_flag="--ort-provider")
    names = [o.name for o in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(None, feed)))


def trt_runner(engine_path: Path, plugin: Optional[Path] = None) -> Runner:
    from exporter.trt.engine import load_engine
    from exporter.trt.session import TrtSession

    session = TrtSession(load_engine(Path(engine_path), plugin))
    return session.run


def load_detector_metadata(model_path: Path) -> tuple[ExportMetadata, DetectorMetadata]:
    meta = ExportMetadata.from_model(model_path)
    detector = DetectorMetadata.from_model(model_path)
    if detector is None:
        raise DeformRTError(f"{model_path} is a backbone file, not a detector: export one with "
                            "`deformrt export --config-file CFG --detector --onnx`")
    return meta, detector


def image_feed(image: np.ndarray, meta: ExportMetadata, detector: DetectorMetadata) -> tuple[dict, np.ndarray]:
    """The detector's inputs for one RGB image (upstream's test resize, preprocessing, padding) and
    the (x, y, x, y) factors that take its boxes back to the image's own pixels."""
    h, w = image.shape[:2]
    rh, rw = resized_size(h, w, detector.min_size_test, detector.max_size_test)
    batch = preprocess([resize_image(image, rh, rw).astype(np.float64)], meta)
    if not meta.dynamic:
        _, _, eh, ew = meta.export_shape
        if batch.shape[2] > eh or batch.shape[3] > ew:
            raise DeformRTError(f"an image of {h}x{w} resizes to {rh}x{rw}, larger than this static model's "
                                f"{eh}x{ew}")
        padded = np.zeros((1, 3, eh, ew), np.float32)
        padded[:, :, :batch.shape[2], :batch.shape[3]] = batch
        batch = padded
    ratio = np.array([w / rw, h / rh, w / rw, h / rh], dtype=np.float32)
    return {"images": batch, "image_sizes": np.array([[rh, rw]], np.int32)}, ratio


def in_image_pixels(found: ImageDetections, ratio: np.ndarray) -> ImageDetections:
    """Detections of the resized input with boxes scaled back to the original image."""
    return ImageDetections(found.boxes * ratio, found.scores, found.labels, found.masks)


def predict_image(path: Path, run: Runner, meta: ExportMetadata, detector: DetectorMetadata) -> Prediction:
    image = read_image(path)
    feed, ratio = image_feed(image, meta, detector)
    found = ImageDetections.from_outputs(run(feed), 0)
    return Prediction(Path(path), image, in_image_pixels(found, ratio))


def check_output_folder(out_dir: Path, images: Sequence[Path], force: bool) -> None:
    """Before any work: ``out_dir`` is a folder (or can be created in a writable one) and none of
    the PNGs to write exists, unless ``force``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DeformRTError(f"output {out_dir} is a file; give a folder")
    if not out_dir.exists():
        check_output_directory(out_dir)
        return
    for path in images:
        check_output_path(out_dir / f"{Path(path).stem}.png", force)


def predict(model_path: Path, images: Sequence[Path], out_dir: Optional[Path], *, engine: Optional[Path] = None,
            plugin: Optional[Path] = None, score_threshold: float = 0.0, force: bool = False,
            progress=None) -> list[Prediction]:
    """Run every image and write ``OUTDIR/<stem>.png`` for each (``out_dir`` None: no pictures).
    The output folder is checked first, then the file and every image, before anything runs."""
    require_finite(score_threshold, "--score-threshold")
    if out_dir is not None:
        check_output_folder(out_dir, images, force)
    meta, detector = load_detector_metadata(Path(model_path))
    for path in images:
        read_image(path)  # every image checked before any work
    run = trt_runner(engine, plugin) if engine is not None else ort_runner(Path(model_path))
    results = []
    for path in images:
        if progress is not None:
            with progress.step(f"detecting in {Path(path).name}"):
                prediction = predict_image(Path(path), run, meta, detector)
        else:
            prediction = predict_image(Path(path), run, meta, detector)
        results.append(prediction)
        if out_dir is not None:
            write_picture(prediction, out_dir, score_threshold, force)
    return results


def write_picture(prediction: Prediction, out_dir: Path, score_threshold: float = 0.0, force: bool = False) -> None:
    """``OUTDIR/<stem>.png``: the image with its detections at or above ``score_threshold`` drawn."""
    picture = draw_detections(prediction.image, prediction.above(score_threshold))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    Path(out_dir).mkdir(exist_ok=True)
    atomic_write_bytes(Path(out_dir) / f"{prediction.path.stem}.png", buffer.getvalue(), force)


def coco_results(predictions: Sequence[Prediction], score_threshold: float = 0.0) -> list[dict]:
    """COCO-style result records of every image (``image_id`` = its position), as ``--json`` prints them."""
    return [r for i, p in enumerate(predictions) for r in p.records(i, score_threshold)]


def prediction_summary(predictions: Sequence[Prediction], out_dir: Optional[Path], score_threshold: float = 0.0,
                       shown: int = 8) -> str:
    """One line per image: the detections at or above ``score_threshold`` (the first ``shown`` by
    name and score) and the picture written."""
    lines = []
    for p in predictions:
        kept = p.above(score_threshold)
        names = ", ".join(f"{class_name(int(label))} {score:.2f}"
                          for label, score in zip(kept.labels[:shown], kept.scores[:shown]))
        more = f" (+{len(kept) - shown} more)" if len(kept) > shown else ""
        picture = f" -> {Path(out_dir) / (p.path.stem + '.png')}" if out_dir is not None else ""
        lines.append(f"{p.path.name}: {len(kept)} detections{': ' + names + more if len(kept) else ''}{picture}")
    return "\n".join(lines)
