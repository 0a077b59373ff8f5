"""Detections as numpy data: matching two sets, pasting masks, COCO records and drawings.

Imports only numpy at module level (pycocotools and Pillow lazily, where used), so the
evaluation layer, ``deformrt predict`` and a numpy-only script on a device can all use it.

Conventions are upstream maskrcnn-benchmark's: boxes are (x1, y1, x2, y2) in pixels with the
legacy "+1" (width = x2 - x1 + 1); labels are the model's class ids (0 = background, never
reported); masks are [M, M] probabilities of the box's class, pasted into the image with
:func:`paste_mask` (upstream's ``paste_mask_in_image``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from models.errors import DeformRTError

# COCO's 80 category names in maskrcnn-benchmark's contiguous label order (label i -> name i-1).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
# COCO's category ids for those 80 labels (the dataset skips some numbers).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


@dataclass
class ImageDetections:
    """One image's detections: boxes [D, 4], scores [D], labels [D] and optional masks [D, M, M]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_outputs(cls, outputs: dict, index: int = 0) -> "ImageDetections":
        """Image ``index`` of a detector file's fixed-size outputs (``num_detections``,
        ``detection_boxes``, ``detection_scores``, ``detection_classes`` and optionally
        ``detection_masks``), cut to its number of detections."""
        n = int(np.asarray(outputs["num_detections"])[index].reshape(-1)[0])
        masks = outputs.get("detection_masks")
        return cls(np.asarray(outputs["detection_boxes"][index][:n], dtype=np.float32),
                   np.asarray(outputs["detection_scores"][index][:n], dtype=np.float32),
                   np.asarray(outputs["detection_classes"][index][:n], dtype=np.int64),
                   None if masks is None else np.asarray(masks[index][:n], dtype=np.float32))


def legacy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] of boxes [N, 4] and [M, 4] with upstream's +1 widths, in float64."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + 1, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0] + 1) * (x[:, 3] - x[:, 1] + 1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class Match:
    """How two detection sets correspond: ``pairs`` of (index in reference, index in other) with
    the same label and IoU >= the threshold, matched greedily by descending reference score; the
    indices left over on each side."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    unmatched_reference: list[int] = field(default_factory=list)
    unmatched_other: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unmatched_reference and not self.unmatched_other


def match_detections(reference: ImageDetections, other: ImageDetections, iou_threshold: float = 0.99) -> Match:
    """Match ``other`` to ``reference`` by label and legacy IoU (each detection used once)."""
    iou = legacy_iou(reference.boxes, other.boxes)
    same = reference.labels.reshape(-1, 1) == other.labels.reshape(1, -1)
    iou = np.where(same, iou, -1.0)
    taken = np.zeros(len(other), dtype=bool)
    result = Match()
    for i in np.argsort(-reference.scores, kind="stable"):
        if len(other) == 0:
            result.unmatched_reference.append(int(i))
            continue
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            taken[j] = True
            result.pairs.append((int(i), j))
        else:
            result.unmatched_reference.append(int(i))
    result.unmatched_other = [int(j) for j in np.nonzero(~taken)[0]]
    return result


def matched_errors(reference: ImageDetections, other: ImageDetections,
                   match: Match) -> tuple[float, float, Optional[float]]:
    """The largest differences over ``match``'s pairs: box corner (px), score and mask probability
    (None unless both sides have masks); 0 where nothing matched."""
    pairs = np.array(match.pairs, dtype=np.int64).reshape(-1, 2)
    want, got = pairs[:, 0], pairs[:, 1]

    def largest(a, b) -> float:
        return float(np.abs(a[want] - b[got]).max()) if len(pairs) else 0.0

    mask = None
    if reference.masks is not None and other.masks is not None:
        mask = largest(reference.masks, other.masks)
    return largest(reference.boxes, other.boxes), largest(reference.scores, other.scores), mask


# ----------------------------------------------------------------------------------------------
# Masks at image resolution


def _resize_bilinear(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array with half-pixel centres (PyTorch's ``interpolate(...,
    mode="bilinear", align_corners=False)``), in float32."""
    in_h, in_w = mask.shape

    def axis(out_size: int, in_size: int):
        scale = in_size / out_size
        src = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * np.float32(scale) - 0.5, 0)
        low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        high = np.minimum(low + 1, in_size - 1)
        frac = (src - low).astype(np.float32)
        return low, high, frac

    y0, y1, fy = axis(height, in_h)
    x0, x1, fx = axis(width, in_w)
    m = mask.astype(np.float32)
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bottom = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def paste_mask(mask: np.ndarray, box: Sequence[float], image_height: int, image_width: int,
               threshold: float = 0.5, padding: int = 1) -> np.ndarray:
    """A boolean [H, W] image mask from an [M, M] probability mask and its box: upstream's
    ``paste_mask_in_image`` (pad the mask by ``padding`` cells, grow the box by the same factor,
    truncate it to integers, resize bilinearly to the box, threshold, place, crop to the image)."""
    m = np.asarray(mask, dtype=np.float32)
    size = m.shape[-1]
    padded = np.zeros((size + 2 * padding, size + 2 * padding), dtype=np.float32)
    padded[padding:padding + size, padding:padding + size] = m
    scale = np.float32((size + 2 * padding) / size)
    b = np.asarray(box, dtype=np.float32)
    w_half, h_half = (b[2] - b[0]) * np.float32(0.5) * scale, (b[3] - b[1]) * np.float32(0.5) * scale
    x_c, y_c = (b[2] + b[0]) * np.float32(0.5), (b[3] + b[1]) * np.float32(0.5)
    x0, y0 = int(np.float32(x_c - w_half)), int(np.float32(y_c - h_half))  # truncation, as .to(int32)
    x1, y1 = int(np.float32(x_c + w_half)), int(np.float32(y_c + h_half))
    w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    resized = _resize_bilinear(padded, h, w)
    binary = resized > threshold if threshold >= 0 else (resized * 255).astype(bool)
    out = np.zeros((image_height, image_width), dtype=bool)
    ix0, ix1 = max(x0, 0), min(x1 + 1, image_width)
    iy0, iy1 = max(y0, 0), min(y1 + 1, image_height)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0:iy1, ix0:ix1] = binary[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return out


# ----------------------------------------------------------------------------------------------
# COCO results and drawings


def class_name(label: int, names: Sequence[str] = COCO_CLASSES) -> str:
    return names[label - 1] if 1 <= label <= len(names) else f"class {label}"


def coco_records(detections: ImageDetections, image_id: int, image_height: int, image_width: int,
                 category_ids: Optional[Sequence[int]] = COCO_CATEGORY_IDS) -> list[dict]:
    """COCO-style result records: ``image_id``, ``category_id`` (label mapped through
    ``category_ids``, or the label itself), ``bbox`` [x, y, w, h] with upstream's +1 widths,
    ``score`` and, with masks, ``segmentation`` as RLE of the pasted mask (pycocotools', or where it
    is missing, as on a device, :func:`encode_rle`'s: the same strings)."""
    records = []
    rles = None
    if detections.masks is not None and len(detections):
        pasted = [paste_mask(m, b, image_height, image_width) for m, b in zip(detections.masks, detections.boxes)]
        try:
            from pycocotools import mask as mask_util
        except ImportError:
            rles = [encode_rle(m) for m in pasted]
        else:
            rles = [{**rle, "counts": rle["counts"].decode("ascii")}
                    for rle in mask_util.encode(np.asfortranarray(np.stack(pasted, axis=-1).astype(np.uint8)))]
    for i in range(len(detections)):
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        label = int(detections.labels[i])
        category = category_ids[label - 1] if category_ids and 1 <= label <= len(category_ids) else label
        record = {"image_id": int(image_id), "category_id": int(category), "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                  "score": float(detections.scores[i])}
        if rles is not None:
            record["segmentation"] = rles[i]
        records.append(record)
    return records


_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40))


def draw_detections(image: np.ndarray, detections: ImageDetections, names: Sequence[str] = COCO_CLASSES,
                    mask_alpha: float = 0.45):
    """A Pillow image of ``image`` (HxWx3 uint8 RGB) with each detection's translucent pasted mask,
    box and "name score" label."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise DeformRTError("drawing detections needs Pillow (pip install pillow)") from None
    canvas = np.asarray(image, dtype=np.float32).copy()
    h, w = canvas.shape[:2]
    colours = [_PALETTE[int(label) % len(_PALETTE)] for label in detections.labels]
    if detections.masks is not None:
        for mask, box, colour in zip(detections.masks, detections.boxes, colours):
            pasted = paste_mask(mask, box, h, w)
            canvas[pasted] = canvas[pasted] * (1 - mask_alpha) + np.asarray(colour, np.float32) * mask_alpha
    picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for box, score, label, colour in zip(detections.boxes, detections.scores, detections.labels, colours):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{class_name(int(label), names)} {float(score):.2f}"
        tx, ty = x1, max(0.0, y1 - 12)
        draw.rectangle(draw.textbbox((tx, ty), text), fill=colour)
        draw.text((tx, ty), text, fill=(255, 255, 255))
    return picture


# ----------------------------------------------------------------------------------------------
# COCO's compressed RLE without pycocotools (a device with numpy only)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of a boolean [H, W] mask, as pycocotools' ``mask.encode`` writes it
    (``{"size": [H, W], "counts": str}``): run lengths in column-major order starting with a run
    of zeros, each stored as the difference to the run two before (from the third on), in 5-bit
    groups with a continuation bit, offset by 48 into printable characters."""
    m = np.asarray(mask, dtype=bool)
    flat = m.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)  # the first run counts zeros
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences end at -1
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr(c + 48 + (0x20 if more else 0)))
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": "".join(chars)}
