"""Two sets of detections compared: the one rule of ``deformrt compare``, the bundle's device
self-check (:mod:`exporter.deploy.check`) and ``deformrt-run --check`` (its C++ mirror,
plugins/runtime/src/detections.cpp ``checkDetections``).

Imports numpy and this project's torch-free modules only: the deploy bundle ships it to the device.

Per image, the other side's detections are matched to the reference's
(:func:`exporter.evaluation.detections.match_detections`: same class, legacy IoU >= ``tolerance.iou``,
greedily by reference score). The matched pairs give the largest box corner (px), score and mask
probability differences, over their finite elements (a NaN or Inf fails the image). Every detection
left unmatched on either side is classified, within ``tolerance.margin`` (the score tolerance unless a
bundle's deploy.conf says otherwise):

- ``score threshold``: its score is that close to the model's score threshold (when it has one);
- ``top-k cut``: a side returned all ``D`` rows and its score is that close to that side's lowest
  score (the ``D``-th detection of a side was a near-tie with what it dropped);
- ``NMS tie``: (a model with NMS) the other side has an unmatched detection of the same class
  overlapping it by at least the NMS threshold minus :data:`NMS_IOU_SLACK` with a score that close
  (the two kept different members of a near-tied pair), or a same-class detection on either side
  overlaps it with an IoU that close to the NMS threshold (one side suppressed it, the other not);
- otherwise ``unexplained``.

An image passes when everything compared is finite, nothing is unexplained and the pairs' box,
score and mask errors are within the tolerance. A box moved far with an unchanged score may look like
an NMS tie from the outputs alone; the pairs' box errors tell such a backend apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from exporter.evaluation.detections import ImageDetections, legacy_iou, match_detections

# How far below the NMS threshold two swapped members of a near-tied pair may overlap (boxes move too).
NMS_IOU_SLACK = 0.05


@dataclass(frozen=True)
class DetectionTolerance:
    """How close two backends' detections must be: match IoU, then per matched pair the largest
    box-corner difference (px), score difference and mask-probability difference; ``borderline``,
    how near a cut an unmatched detection counts as a near-tie (default: the score tolerance)."""

    iou: float
    box_px: float
    score: float
    mask: float
    borderline: Optional[float] = None

    @property
    def margin(self) -> float:
        return self.score if self.borderline is None else self.borderline

    def to_dict(self) -> dict:
        return {"iou": self.iou, "box_px": self.box_px, "score": self.score, "mask": self.mask}


# fp32: what `deformrt export --verify` holds PyTorch and ONNX Runtime to (1e-3 px, 1e-4) with room
# for another kernel library's summation order (TensorRT's tactics); fp16: convolutions in fp16
# move boxes by a fraction of a pixel and scores by ~1e-2, while decoding/NMS stay fp32.
DETECTION_TOLERANCES = {
    "fp32": DetectionTolerance(iou=0.99, box_px=0.05, score=1e-3, mask=1e-3),
    "tf32": DetectionTolerance(iou=0.95, box_px=1.0, score=1e-2, mask=2e-2),
    "fp16": DetectionTolerance(iou=0.9, box_px=2.0, score=3e-2, mask=5e-2),
}
_RANK = {"fp32": 0, "tf32": 1, "fp16": 2}


def pair_tolerance(precisions: Sequence[str]) -> DetectionTolerance:
    """The tolerance of the least precise of the backends (an unknown precision counts as fp16)."""
    return DETECTION_TOLERANCES[max(precisions, key=lambda p: _RANK.get(p, 2))]


@dataclass(frozen=True)
class Cuts:
    """Where a detection can fall off: the score threshold (0: none), the NMS IoU threshold (0: no
    NMS), the row count D (0: unknown)."""

    score_threshold: float
    nms_iou: float
    detections: int


BORDERLINE_KINDS = ("score threshold", "top-k cut", "NMS tie")


@dataclass
class ImageComparison:
    """One image's detections against the reference's (module docstring)."""

    reference_count: int
    other_count: int
    matched: int
    # The kind (BORDERLINE_KINDS or "unexplained") of each unmatched detection, by its index.
    unmatched_reference: dict[int, str]
    unmatched_other: dict[int, str]
    max_box_err: float
    max_score_err: float
    max_mask_err: Optional[float]  # None when neither side has masks; inf when they cannot be compared
    finite: bool

    def kinds(self) -> list[str]:
        return list(self.unmatched_reference.values()) + list(self.unmatched_other.values())

    @property
    def borderline(self) -> int:
        return sum(1 for k in self.kinds() if k != "unexplained")

    @property
    def unexplained(self) -> int:
        return sum(1 for k in self.kinds() if k == "unexplained")

    def passed(self, tolerance: DetectionTolerance) -> bool:
        return (self.finite and self.unexplained == 0 and self.max_box_err <= tolerance.box_px
                and self.max_score_err <= tolerance.score
                and (self.max_mask_err is None or self.max_mask_err <= tolerance.mask))


def _largest_difference(a, b, pairs: np.ndarray) -> tuple[float, bool]:
    """The largest |a - b| over the pairs' finite elements, and whether all were finite."""
    if not len(pairs):
        return 0.0, True
    x, y = np.asarray(a, np.float64)[pairs[:, 0]], np.asarray(b, np.float64)[pairs[:, 1]]
    finite = np.isfinite(x) & np.isfinite(y)
    diff = np.abs(x - y)[finite]
    return (float(diff.max()) if diff.size else 0.0), bool(finite.all())


def classify_unmatched(side: ImageDetections, other: ImageDetections, lost_side: Sequence[int],
                       lost_other: Sequence[int], cuts: Cuts, margin: float) -> list[str]:
    """For each index in ``lost_side`` (unmatched detections of ``side``): which borderline case it
    is (:data:`BORDERLINE_KINDS`), or ``"unexplained"`` (module docstring). ``lost_other``: the other
    side's unmatched indices (a swapped NMS pair pairs with one of them)."""
    lowest = [float(np.min(d.scores)) for d in (side, other) if cuts.detections > 0 and len(d) >= cuts.detections]
    kinds = []
    for i in lost_side:
        score = float(side.scores[i])
        if cuts.score_threshold > 0 and abs(score - cuts.score_threshold) <= margin:
            kinds.append("score threshold")
        elif any(abs(score - cut) <= margin for cut in lowest):
            kinds.append("top-k cut")
        elif cuts.nms_iou > 0 and _nms_tie(side, other, i, lost_other, cuts.nms_iou, margin):
            kinds.append("NMS tie")
        else:
            kinds.append("unexplained")
    return kinds


def _nms_tie(side: ImageDetections, other: ImageDetections, index: int, lost_other: Sequence[int],
             nms_iou: float, margin: float) -> bool:
    box, label, score = side.boxes[index:index + 1], int(side.labels[index]), float(side.scores[index])
    partners = [j for j in lost_other
                if int(other.labels[j]) == label and abs(float(other.scores[j]) - score) <= margin]
    if partners and float(legacy_iou(box, other.boxes[partners]).max()) >= nms_iou - NMS_IOU_SLACK:
        return True
    for neighbours in (side, other):
        same = np.asarray(neighbours.labels).reshape(-1) == label
        if neighbours is side:
            same[index] = False
        if np.any(same & (np.abs(legacy_iou(box, neighbours.boxes)[0] - nms_iou) <= margin)):
            return True
    return False


def compare_image_detections(reference: ImageDetections, other: ImageDetections, tolerance: DetectionTolerance,
                             cuts: Cuts) -> ImageComparison:
    """``other`` against ``reference`` as sets (module docstring)."""
    match = match_detections(reference, other, tolerance.iou)
    pairs = np.array(match.pairs, dtype=np.int64).reshape(-1, 2)
    box, box_ok = _largest_difference(reference.boxes, other.boxes, pairs)
    score, score_ok = _largest_difference(reference.scores, other.scores, pairs)
    mask, mask_ok = None, True
    if reference.masks is not None or other.masks is not None:
        comparable = (reference.masks is not None and other.masks is not None
                      and reference.masks.shape[1:] == other.masks.shape[1:])
        mask, mask_ok = _largest_difference(reference.masks, other.masks, pairs) if comparable else (math.inf, True)
    margin = tolerance.margin
    lost_reference = classify_unmatched(reference, other, match.unmatched_reference, match.unmatched_other, cuts,
                                        margin)
    lost_other = classify_unmatched(other, reference, match.unmatched_other, match.unmatched_reference, cuts, margin)
    return ImageComparison(len(reference), len(other), len(match.pairs),
                           dict(zip(match.unmatched_reference, lost_reference)),
                           dict(zip(match.unmatched_other, lost_other)), box, score, mask,
                           box_ok and score_ok and mask_ok)
