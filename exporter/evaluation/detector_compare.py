"""``deformrt compare`` on a whole-detector file: detections compared as sets, backend by backend.

Element-wise comparison means nothing for detections: two correct backends may list the same
boxes in another order (upstream returns them class by class, the file sorted by score), and a
score a hair's breadth from a cut may fall on either side of it. So each backend's detections of
an image are matched to the reference's (:func:`exporter.evaluation.detections.match_detections`:
same class, legacy IoU >= ``tolerance.iou``, greedily by reference score). The rule (pairs' errors,
borderline cases of the unmatched ones, PASS) is that of :mod:`exporter.evaluation.detection_sets`,
the same as the deploy bundle's device self-check; the tolerance is that of the pair's less precise backend
(:data:`exporter.evaluation.detection_sets.DETECTION_TOLERANCES`), summed up here over the images.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from exporter.evaluation.detection_sets import (BORDERLINE_KINDS, Cuts, DetectionTolerance, compare_image_detections,
                                                pair_tolerance)
from exporter.evaluation.detections import ImageDetections
from models.errors import DeformRTError, require_positive


def detector_cuts(config_yaml: str, kind: str, detections: int) -> Cuts:
    """The cuts of a detector from its file's config (``deformrt.config``, a YAML dump, read through
    :func:`models.config.config_from_yaml`, so upstream's defaults fill what it lacks): the ROI heads', the
    RetinaNet head's, or for RPN-only the proposals' (no score threshold)."""
    from models.config import config_from_yaml

    cfg = config_from_yaml(config_yaml, detector=True)
    if kind == "retinanet":
        return Cuts(float(cfg.MODEL.RETINANET.INFERENCE_TH), float(cfg.MODEL.RETINANET.NMS_TH), detections)
    if kind == "rpn":
        return Cuts(0.0, float(cfg.MODEL.RPN.NMS_THRESH), detections)
    return Cuts(float(cfg.MODEL.ROI_HEADS.SCORE_THRESH), float(cfg.MODEL.ROI_HEADS.NMS), detections)


@dataclass
class SetComparison:
    """One backend against the reference over all images of the input."""

    backend: str
    precision: str
    tolerance: DetectionTolerance
    reference_count: int = 0
    other_count: int = 0
    matched: int = 0
    unmatched_reference: int = 0
    unmatched_other: int = 0
    borderline: dict[str, int] = field(default_factory=lambda: {k: 0 for k in BORDERLINE_KINDS})
    unexplained: int = 0
    max_box_err: float = 0.0
    max_score_err: float = 0.0
    max_mask_err: Optional[float] = None
    finite: bool = True  # no NaN or Inf in the pairs' boxes, scores and masks
    # The first unexplained detections, to say what differs: (side, image, label, score).
    examples: list[tuple[str, int, int, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        t = self.tolerance
        return (self.finite and self.unexplained == 0 and self.max_box_err <= t.box_px and self.max_score_err <= t.score
                and (self.max_mask_err is None or self.max_mask_err <= t.mask))

    def to_dict(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "tolerance": self.tolerance.to_dict(),
                "reference_count": self.reference_count, "count": self.other_count, "matched": self.matched,
                "unmatched_reference": self.unmatched_reference, "unmatched_other": self.unmatched_other,
                "borderline": dict(self.borderline), "unexplained": self.unexplained,
                "max_box_err_px": self.max_box_err, "max_score_err": self.max_score_err,
                "max_mask_err": self.max_mask_err, "passed": self.passed,
                "unexplained_examples": [{"side": s, "image": i, "label": lb, "score": sc}
                                         for s, i, lb, sc in self.examples]}


def compare_detection_sets(reference: Sequence[ImageDetections], other: Sequence[ImageDetections],
                           result: SetComparison, cuts: Cuts) -> SetComparison:
    """Add the comparison of ``other`` with ``reference`` (per image, same order) to ``result``."""
    if len(reference) != len(other):
        raise DeformRTError(f"{result.backend} returned {len(other)} images of detections, the reference "
                            f"{len(reference)}")
    for image, (want, got) in enumerate(zip(reference, other)):
        found = compare_image_detections(want, got, result.tolerance, cuts)
        result.reference_count += found.reference_count
        result.other_count += found.other_count
        result.matched += found.matched
        result.unmatched_reference += len(found.unmatched_reference)
        result.unmatched_other += len(found.unmatched_other)
        result.finite = result.finite and found.finite
        result.max_box_err = max(result.max_box_err, found.max_box_err)
        result.max_score_err = max(result.max_score_err, found.max_score_err)
        if found.max_mask_err is not None:
            result.max_mask_err = max(result.max_mask_err or 0.0, found.max_mask_err)
        for name, side, lost in (("reference", want, found.unmatched_reference),
                                 (result.backend, got, found.unmatched_other)):
            for index, kind in lost.items():
                if kind == "unexplained":
                    result.unexplained += 1
                    if len(result.examples) < 5:
                        result.examples.append((name, image, int(side.labels[index]), float(side.scores[index])))
                else:
                    result.borderline[kind] += 1
    return result


# ----------------------------------------------------------------------------------------------
# The command


@dataclass
class DetectorCompareReport:
    onnx_path: str
    input_shape: tuple[int, ...]
    image_sizes: list[list[int]]
    source: str
    seed: Optional[int]
    images: list[str]
    reference: str
    reference_precision: str
    reference_count: int
    cuts: Cuts
    comparisons: list[SetComparison]
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it did not run

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def to_dict(self) -> dict:
        """Stable ``--json`` content."""
        return {
            "onnx": self.onnx_path, "kind": "detector",
            "input": {"name": "images", "shape": list(self.input_shape), "image_sizes": self.image_sizes,
                      "source": self.source, "seed": self.seed, "images": list(self.images)},
            "reference": {"backend": self.reference, "precision": self.reference_precision,
                          "count": self.reference_count},
            "cuts": {"score_threshold": self.cuts.score_threshold, "nms_iou": self.cuts.nms_iou,
                     "detections": self.cuts.detections},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "skipped": dict(self.skipped),
            "passed": self.passed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        """The backends side by side, one column each (the reference first)."""
        from exporter.trt.profiles import format_shape

        where = f"random, seed {self.seed}" if self.source == "random" else ", ".join(self.images)
        fmt = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
        columns = [(f"{self.reference} ({self.reference_precision})", [str(self.reference_count)] + ["-"] * 10)]
        for c in self.comparisons:
            t = c.tolerance
            columns.append((f"{c.backend} ({c.precision})", [
                str(c.other_count), str(c.matched), f"{c.unmatched_reference} / {c.unmatched_other}",
                str(c.borderline["score threshold"]), str(c.borderline["top-k cut"]), str(c.borderline["NMS tie"]),
                str(c.unexplained), f"{fmt(c.max_box_err)} (<= {t.box_px:g})",
                f"{fmt(c.max_score_err)} (<= {t.score:g})",
                f"{fmt(c.max_mask_err)} (<= {t.mask:g})" if c.max_mask_err is not None else "-",
                "PASS" if c.passed else "FAIL"]))
        labels = ["detections", f"matched (IoU >= {min((c.tolerance.iou for c in self.comparisons), default=0.99):g})",
                  "unmatched ref / this", "  near score threshold", "  at the top-k cut", "  NMS ties",
                  "unexplained", "max box err px", "max score err", "max mask err", "result"]
        widths = [max(len(x) for x in labels)] + [max(len(h), *(len(v) for v in vals)) for h, vals in columns]
        lines = [f"input images {format_shape(self.input_shape)} ({where}); reference: {self.reference}; detections "
                 f"matched by class and IoU, borderline = within the score tolerance of a cut "
                 f"(score threshold {self.cuts.score_threshold:g}, NMS IoU {self.cuts.nms_iou:g}, "
                 f"{self.cuts.detections} rows)"]
        lines.append("  ".join(h.ljust(w) for h, w in zip([""] + [h for h, _ in columns], widths)).rstrip())
        for row, label in enumerate(labels):
            cells = [label] + [vals[row] for _, vals in columns]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        for c in self.comparisons:
            for side, image, label, score in c.examples:
                lines.append(f"  unexplained: {c.backend} vs {self.reference}: image {image}, only in {side}: "
                             f"class {label}, score {score:.4f}")
        lines += [f"{backend} skipped: {why}" for backend, why in self.skipped.items()]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def detector_inputs(meta, detector, images: Sequence[Path] = (), batch: int = 1,
                    shape: Optional[tuple[int, int]] = None, seed: Optional[int] = None):
    """(feed, seed): real ``images`` resized as upstream's test transform (``predict``'s) and
    padded to one batch, else ``batch`` random images of ``shape`` (the export size by default)."""
    from exporter.evaluation.compare import check_hw
    from exporter.evaluation.inputs import preprocess, random_images

    if images:
        from exporter.evaluation.inputs import read_image
        from exporter.evaluation.predict import resize_image, resized_size

        pixels, sizes = [], []
        for path in images:
            image = read_image(Path(path))
            rh, rw = resized_size(*image.shape[:2], detector.min_size_test, detector.max_size_test)
            pixels.append(resize_image(image, rh, rw).astype(np.float64))
            sizes.append((rh, rw))
        return {"images": preprocess(pixels, meta), "image_sizes": np.asarray(sizes, np.int32)}, None
    if batch < 1:
        raise DeformRTError(f"--batch must be at least 1, got {batch}")
    height, width = shape or tuple(meta.export_shape[2:4])
    check_hw(height, width, meta.size_divisibility)
    seed = seed if seed is not None else secrets.randbits(31)
    return {"images": preprocess(random_images(batch, height, width, seed), meta),
            "image_sizes": np.full((batch, 2), (height, width), np.int32)}, seed


def compare_detector(onnx_path: Path, model, meta, detector, options, progress=None) -> DetectorCompareReport:
    """``deformrt compare`` for a detector file (``options``: :class:`CompareOptions`)."""
    from exporter.evaluation.detector_backends import make_backend
    from exporter.util.progress import Progress

    progress = progress or Progress.quiet()
    backends = list(options.backends)
    feed, seed = detector_inputs(meta, detector, options.images, options.batch, options.shape, options.seed)
    if not meta.dynamic and tuple(feed["images"].shape) != tuple(meta.export_shape):
        raise DeformRTError(f"this static detector takes {'x'.join(map(str, meta.export_shape))} inputs only")
    cuts = detector_cuts(meta.config, detector.kind, detector.detections)
    results, precisions, skipped = {}, {}, {}
    if "trt" in backends and backends[0] != "trt" and options.engine is None:  # an --engine must run
        from exporter.trt.build import tensorrt_unavailable_reason

        why = tensorrt_unavailable_reason(model)
        if why is not None:
            progress.info(f"TensorRT left out of the comparison: {why}")
            skipped["trt"] = why
            backends.remove("trt")
    if len(backends) < 2:
        raise DeformRTError(f"compare needs at least two backends that run here; only {backends[0]} does")
    for name in backends:
        with progress.step(f"running {name}"):
            backend = make_backend(name, onnx_path=Path(onnx_path), model=model, meta=meta, weights=options.weights,
                                   device=options.device, ort_provider=options.ort_provider, engine=options.engine,
                                   plugin=options.plugin, fp16=options.fp16, static_shape=feed["images"].shape,
                                   verbose=options.verbose)
            results[name] = backend.detections(feed)
            precisions[name] = backend.precision
    reference = backends[0]
    comparisons = []
    for name in backends[1:]:
        tolerance = pair_tolerance([precisions[reference], precisions[name]])
        if options.tolerance is not None:  # --tolerance X: the score and mask tolerance
            require_positive(options.tolerance, "--tolerance")
            tolerance = DetectionTolerance(tolerance.iou, tolerance.box_px, options.tolerance, options.tolerance)
        comparisons.append(compare_detection_sets(results[reference], results[name],
                                                  SetComparison(name, precisions[name], tolerance), cuts))
    return DetectorCompareReport(str(onnx_path), tuple(feed["images"].shape), feed["image_sizes"].tolist(),
                                 "images" if options.images else "random", seed, [str(p) for p in options.images],
                                 reference, precisions[reference], sum(len(d) for d in results[reference]), cuts,
                                 comparisons, skipped)
