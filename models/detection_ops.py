"""maskrcnn-benchmark's inference arithmetic as pure tensor functions: the one definition of the numerics.

The eager detector (:mod:`models.detector`) and the ONNX export (:mod:`exporter.onnx.detector_graph`)
both call these, so anchors, box decoding, clipping, level mapping and score handling are written
once. What only the eager path needs (NMS and ROIAlign on variable-length sets, upstream's
per-image selection) is here too; the export swaps those two primitives for ONNX operators and
keeps everything else.

Upstream's conventions, kept exactly:

- boxes are ``(x1, y1, x2, y2)`` in input pixels with the legacy "+1": width = x2 - x1 + 1 in
  decoding, areas, IoU and small-box tests;
- decoding clamps dw/dh at log(1000/16) before the exponential, and x2/y2 carry the "- 1";
- boxes are clipped to the *unpadded* image: x to [0, w - 1], y to [0, h - 1];
- FPN level of a box: floor(4 + log2(sqrt(area) / 224 + 1e-6)), clamped to the pooled levels;
- ROIAlign is ``aligned=False`` (no half-pixel shift; ROI sides at least 1; sample points outside
  [-1, size] give 0; an adaptive grid of ceil(roi side / bins) when the sampling ratio is <= 0);
- NMS keeps boxes in descending score order and suppresses a box whose legacy IoU with a kept one
  is above the threshold (upstream's CUDA kernel; its CPU kernel uses >=, which differs only on
  exact ties).

Image sizes are ``[N, 2]`` tensors of (height, width), as upstream's ``ImageList.image_sizes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

BOX_XFORM_CLIP = math.log(1000.0 / 16)
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
CANONICAL_SCALE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-6
# Elements per gather chunk in roi_align (bounds the memory of the eager path).
_ROI_ALIGN_CHUNK = 1 << 24


# ----------------------------------------------------------------------------------------------
# Settings (plain values read from the config by the builders)


@dataclass(frozen=True)
class RPNSettings:
    """Test-time RPN postprocessing: per-level top-k, NMS, per-level and per-image top-n."""

    pre_nms_top_n: int = 1000
    post_nms_top_n: int = 1000
    fpn_post_nms_top_n: int = 1000
    nms_thresh: float = 0.7
    min_size: int = 0
    multi_level: bool = True  # FPN: proposals of all levels are merged and cut to fpn_post_nms_top_n

    @property
    def proposals_per_image(self) -> int:
        """How many proposals an image gets at most (the fixed size of the exported proposals)."""
        return self.fpn_post_nms_top_n if self.multi_level else self.post_nms_top_n


@dataclass(frozen=True)
class BoxSettings:
    """Test-time box-head postprocessing (upstream's ``PostProcessor``)."""

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    cls_agnostic_bbox_reg: bool = False


@dataclass(frozen=True)
class RetinaNetSettings:
    """Test-time RetinaNet postprocessing (upstream's ``RetinaNetPostProcessor``)."""

    pre_nms_thresh: float = 0.05
    pre_nms_top_n: int = 1000
    nms_thresh: float = 0.4
    detections_per_img: int = 100
    min_size: int = 0
    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


# ----------------------------------------------------------------------------------------------
# Anchors


def cell_anchors(stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """The [A, 4] anchors of one location (upstream's ``generate_anchors``: a (stride x stride)
    base box, areas kept per aspect ratio with rounded sides, then scaled to each size), float32,
    ratio-major then size."""
    base = np.array([0.0, 0.0, stride - 1.0, stride - 1.0])
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    ws = np.round(np.sqrt(w * h / ratios))
    hs = np.round(ws * ratios)
    scales = np.asarray(sizes, dtype=np.float64) / stride
    rows = []
    for rw, rh in zip(ws, hs):
        sw, sh = rw * scales, rh * scales
        rows.append(np.stack([cx - 0.5 * (sw - 1), cy - 0.5 * (sh - 1), cx + 0.5 * (sw - 1), cy + 0.5 * (sh - 1)], 1))
    return torch.from_numpy(np.concatenate(rows, 0)).float()


def grid_anchors(cells: Tensor, height, width, stride: int) -> Tensor:
    """All anchors of a ``height x width`` feature map: [H*W*A, 4], location-major (row, column),
    then the cell's anchors, as upstream's ``grid_anchors``."""
    shifts_x = torch.arange(0, width, dtype=torch.float32, device=cells.device) * stride
    shifts_y = torch.arange(0, height, dtype=torch.float32, device=cells.device) * stride
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


def anchors_at(cells: Tensor, index: Tensor, width, stride, per_location: Optional[int] = None,
               offset=0) -> Tensor:
    """``grid_anchors(cells, H, width, stride)[index]`` without building the grid: the anchors at
    flattened indices ``index`` (any shape; location-major over a ``width``-wide map, then the
    cell's ``per_location`` anchors, default all of ``cells``) -> [..., 4]. ``width`` and
    ``stride`` may be tensors broadcasting with ``index`` (several levels at once, whose cells are
    stacked in ``cells`` from row ``offset`` on). The same float32 arithmetic (integer shift times
    the stride, plus the cell), so the same bits; it costs O(len(index)) instead of O(H*W*A), and
    its shapes do not depend on the feature map's (what the fixed-shape export needs)."""
    a = cells.shape[0] if per_location is None else per_location
    location = torch.div(index, a, rounding_mode="floor")
    y = torch.div(location, width, rounding_mode="floor")
    x = location - y * width
    shift_x = x.to(torch.float32) * stride
    shift_y = y.to(torch.float32) * stride
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1)
    return shifts + cells[index - location * a + offset]


def flatten_predictions(t: Tensor, channels_per_anchor: int) -> Tensor:
    """[N, A*C, H, W] head output -> [N, H*W*A, C], in the anchors' order (upstream's
    ``permute_and_flatten``)."""
    n, channels, h, w = t.shape
    a = channels // channels_per_anchor
    # Explicit sizes, no -1: a traced -1 becomes a symbolic division of products of the feature
    # map's (symbolic) sides, which the exporter's shape reasoning is slow to simplify.
    return t.view(n, a, channels_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, channels_per_anchor)


# ----------------------------------------------------------------------------------------------
# Boxes


def decode_boxes(deltas: Tensor, reference: Tensor, weights: Sequence[float], clip: float = BOX_XFORM_CLIP) -> Tensor:
    """Apply ``deltas`` [..., 4k] to ``reference`` boxes [..., 4] (broadcast over the leading dims;
    ``k`` boxes per reference, e.g. one per class): upstream's ``BoxCoder.decode`` with legacy
    widths, the dw/dh clamp and the "- 1" on x2/y2. Returns [..., 4k]."""
    reference = reference.to(deltas.dtype)
    widths = reference[..., 2:3] - reference[..., 0:1] + 1
    heights = reference[..., 3:4] - reference[..., 1:2] + 1
    ctr_x = reference[..., 0:1] + 0.5 * widths
    ctr_y = reference[..., 1:2] + 0.5 * heights
    wx, wy, ww, wh = weights
    d = deltas.unflatten(-1, (-1, 4))
    dx, dy = d[..., 0] / wx, d[..., 1] / wy
    dw = torch.clamp(d[..., 2] / ww, max=clip)
    dh = torch.clamp(d[..., 3] / wh, max=clip)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    boxes = torch.stack((pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                         pred_ctr_x + 0.5 * pred_w - 1, pred_ctr_y + 0.5 * pred_h - 1), dim=-1)
    return boxes.flatten(-2)


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """Clamp ``boxes`` [N, ..., 4] of image ``n`` to x in [0, w_n - 1], y in [0, h_n - 1]
    (``image_sizes`` [N, 2] of unpadded (h, w))."""
    sizes = image_sizes.to(boxes.dtype)
    shape = (boxes.shape[0],) + (1,) * (boxes.dim() - 2)
    x_max = (sizes[:, 1] - 1).reshape(shape)
    y_max = (sizes[:, 0] - 1).reshape(shape)
    zero = torch.zeros_like(x_max)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), x_max)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), y_max)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), x_max)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), y_max)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Legacy areas (x2 - x1 + 1) * (y2 - y1 + 1) of [..., 4] boxes."""
    return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """Boxes whose legacy width and height are both >= ``min_size`` (upstream's
    ``remove_small_boxes``; with min_size 0 every decoded box passes)."""
    return ((boxes[..., 2] - boxes[..., 0] + 1) >= min_size) & ((boxes[..., 3] - boxes[..., 1] + 1) >= min_size)


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """Legacy IoU matrix [N, M] of boxes [N, 4] and [M, 4]."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def nms(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Indices of the boxes greedy NMS keeps, in descending score order (legacy IoU; a box is
    suppressed when its IoU with a kept box is > ``threshold``)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True)[1]
    iou = pairwise_iou(boxes[order], boxes[order]).detach().cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > threshold
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


def map_levels(boxes: Tensor, k_min: int, k_max: int) -> Tensor:
    """FPN level index (0 = level ``k_min``) of each box [..., 4]: upstream's ``LevelMapper``."""
    s = torch.sqrt(box_area(boxes))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(s / CANONICAL_SCALE + LEVEL_EPS))
    return torch.clamp(levels, min=k_min, max=k_max).to(torch.int64) - k_min


def pooler_levels(scales: Sequence[float]) -> tuple[int, int]:
    """(k_min, k_max) of a pooler from its scales (1/4 .. 1/32 -> 2 .. 5), as upstream computes them."""
    first = -torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item()
    last = -torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item()
    return int(first), int(last)


# ----------------------------------------------------------------------------------------------
# ROIAlign (aligned=False)


def _sample_axis(start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, max_grid: int, size: int):
    """Per ROI, bin and sample along one axis: the two neighbour indices [R, bins*G, 2] and their
    weights (zero for samples outside [-1, size] and for grid slots beyond the ROI's own grid)."""
    device = start.device
    g = torch.arange(max_grid, device=device, dtype=start.dtype)
    p = torch.arange(bins, device=device, dtype=start.dtype)
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
           + (g[None, None, :] + 0.5) * bin_size[:, None, None] / grid[:, None, None].to(start.dtype))
    used = g[None, None, :] < grid[:, None, None]
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    frac = pos - low.to(pos.dtype)
    keep = (used & inside).to(pos.dtype)
    index = torch.stack((low, high), -1).reshape(len(start), -1, 2)
    weight = (torch.stack((1 - frac, frac), -1) * keep[..., None]).reshape(len(start), -1, 2)
    return index, weight


def roi_align(features: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int) -> Tensor:
    """Upstream's ROIAlign (``aligned=False``) of ``rois`` [R, 5] = (batch index, x1, y1, x2, y2)
    on ``features`` [N, C, H, W]: [R, C, oh, ow]. Computed in ``features``' dtype, in chunks of
    ROIs so that memory stays bounded."""
    n, c, h, w = features.shape
    oh, ow = output_size
    out = features.new_zeros((rois.shape[0], c, oh, ow))
    if rois.shape[0] == 0:
        return out
    rois = rois.to(features.dtype)
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
    start = 0
    while start < rois.shape[0]:
        # The chunk size follows the largest grid in the rest of the ROIs (adaptive grids vary).
        r = rois[start:]
        x1, y1 = r[:, 1] * spatial_scale, r[:, 2] * spatial_scale
        roi_w = torch.clamp(r[:, 3] * spatial_scale - x1, min=1.0)
        roi_h = torch.clamp(r[:, 4] * spatial_scale - y1, min=1.0)
        if sampling_ratio > 0:
            grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
            grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.int64)
        else:
            grid_h = torch.ceil(roi_h / oh).to(torch.int64)
            grid_w = torch.ceil(roi_w / ow).to(torch.int64)
        gh, gw = int(grid_h.max()), int(grid_w.max())
        per_roi = c * oh * gh * 2 * ow * gw * 2
        count = max(1, min(len(r), _ROI_ALIGN_CHUNK // per_roi))
        sl = slice(0, count)
        yi, yw = _sample_axis(y1[sl], roi_h[sl] / oh, grid_h[sl], oh, gh, h)
        xi, xw = _sample_axis(x1[sl], roi_w[sl] / ow, grid_w[sl], ow, gw, w)
        batch = r[sl, 0].to(torch.int64)
        index = (batch[:, None, None, None, None] * h + yi[:, :, :, None, None]) * w + xi[:, None, None, :, :]
        values = flat[index.reshape(-1)].reshape(count, oh * gh, 2, ow * gw, 2, c)
        weights = yw[:, :, :, None, None] * xw[:, None, None, :, :]
        summed = torch.einsum("rpaqbc,rpaqb->rcpq", values, weights)
        summed = summed.reshape(count, c, oh, gh, ow, gw).sum(dim=(3, 5))
        area = (grid_h[sl] * grid_w[sl]).to(features.dtype).reshape(-1, 1, 1, 1)
        out[start:start + count] = summed / area
        start += count
    return out


# ----------------------------------------------------------------------------------------------
# Eager postprocessing (variable-length results, upstream's per-image semantics)


@dataclass
class LevelCandidates:
    """One pyramid level's pre-NMS top-k of one image: anchor indices (in the level's flattened
    order), scores, decoded and clipped boxes, and each box's width + height before clipping (a
    decoded box can be far larger than the image; its fp32 coordinates are as coarse as its size)."""

    indices: Tensor
    scores: Tensor
    boxes: Tensor
    extent: Optional[Tensor] = None


def rpn_proposals(anchors: Sequence[Tensor], objectness: Sequence[Tensor], deltas: Sequence[Tensor],
                  image_sizes: Tensor, settings: RPNSettings, stages: Optional[dict] = None
                  ) -> list[tuple[Tensor, Tensor]]:
    """Upstream's ``RPNPostProcessor`` at test time: per image, (boxes [P, 4], objectness [P]).

    Per level: sigmoid objectness, top ``pre_nms_top_n``, decode (weights 1), clip, drop small
    boxes, NMS, keep ``post_nms_top_n``; then over all levels (FPN) the top ``fpn_post_nms_top_n``
    by objectness. ``stages`` (a dict), when given, receives ``"rpn_levels"``: per image, the
    :class:`LevelCandidates` of each level before NMS."""
    per_image: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(image_sizes.shape[0])]
    levels_out: list[list[LevelCandidates]] = [[] for _ in range(image_sizes.shape[0])]
    for level_anchors, logits, regression in zip(anchors, objectness, deltas):
        n = logits.shape[0]
        scores = flatten_predictions(logits, 1).reshape(n, -1).sigmoid()
        regression = flatten_predictions(regression, 4)
        k = min(settings.pre_nms_top_n, scores.shape[1])
        top_scores, top_idx = scores.topk(k, dim=1, sorted=True)
        boxes = decode_boxes(regression.gather(1, top_idx[..., None].expand(-1, -1, 4)), level_anchors[top_idx],
                             RPN_BOX_WEIGHTS)
        extent = boxes[..., 2] - boxes[..., 0] + boxes[..., 3] - boxes[..., 1]
        boxes = clip_boxes(boxes, image_sizes)
        for i in range(n):
            levels_out[i].append(LevelCandidates(top_idx[i], top_scores[i], boxes[i], extent[i]))
            ok = large_enough(boxes[i], settings.min_size)
            b, s = boxes[i][ok], top_scores[i][ok]
            keep = nms(b, s, settings.nms_thresh)[: settings.post_nms_top_n]
            per_image[i].append((b[keep], s[keep]))
    results = []
    for parts in per_image:
        boxes = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        if settings.multi_level:
            k = min(settings.fpn_post_nms_top_n, len(scores))
            scores, order = scores.topk(k, sorted=True)
            boxes = boxes[order]
        results.append((boxes, scores))
    if stages is not None:
        stages["rpn_levels"] = levels_out
    return results


def _keep_top(scores: Tensor, limit: int) -> Tensor:
    """Upstream's per-image detection limit: when more than ``limit`` remain, keep those scoring at
    least the ``limit``-th highest score (``kthvalue``, so ties at the limit are all kept)."""
    if limit <= 0 or len(scores) <= limit:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold, _ = torch.kthvalue(scores.cpu(), len(scores) - limit + 1)
    return scores >= threshold.item()


def box_detections(class_logits: Tensor, box_regression: Tensor, proposals: Sequence[Tensor], image_sizes: Tensor,
                   settings: BoxSettings) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Upstream's box ``PostProcessor``: softmax, class-specific (or agnostic) decoding of each
    proposal, clip, then per foreground class: scores > threshold, NMS; then the per-image limit.
    Returns per image (boxes [D, 4], scores [D], labels [D] int64), class by class as upstream."""
    probs = torch.softmax(class_logits, -1)
    num_classes = probs.shape[1]
    if settings.cls_agnostic_bbox_reg:
        box_regression = box_regression[:, -4:]
    counts = [len(p) for p in proposals]
    reference = torch.cat(list(proposals), 0)
    boxes = decode_boxes(box_regression, reference, settings.weights)
    if settings.cls_agnostic_bbox_reg:
        boxes = boxes.repeat(1, num_classes)
    results = []
    for i, (b, p) in enumerate(zip(boxes.split(counts), probs.split(counts))):
        b = clip_boxes(b.reshape(1, -1, num_classes, 4), image_sizes[i:i + 1])[0]
        out_boxes, out_scores, out_labels = [], [], []
        for j in range(1, num_classes):
            inds = torch.nonzero(p[:, j] > settings.score_thresh).squeeze(1)
            bj, sj = b[inds, j], p[inds, j]
            keep = nms(bj, sj, settings.nms_thresh)
            out_boxes.append(bj[keep])
            out_scores.append(sj[keep])
            out_labels.append(torch.full((len(keep),), j, dtype=torch.int64))
        bx, sc, lb = torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_labels)
        keep = _keep_top(sc, settings.detections_per_img)
        results.append((bx[keep], sc[keep], lb[keep]))
    return results


def retinanet_detections(anchors: Sequence[Tensor], box_cls: Sequence[Tensor], box_regression: Sequence[Tensor],
                         image_sizes: Tensor, settings: RetinaNetSettings, stages: Optional[dict] = None
                         ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Upstream's ``RetinaNetPostProcessor``: per level, sigmoid class scores above the threshold,
    the top ``pre_nms_top_n`` (anchor, class) pairs, decoded and clipped; over all levels, NMS per
    class, then the per-image limit. Returns per image (boxes, scores, labels), class by class.
    ``stages`` receives ``"retinanet_levels"``: per image and level, the candidates as
    :class:`LevelCandidates` whose indices are ``anchor * classes + (label - 1)``."""
    n = image_sizes.shape[0]
    levels_out: list[list[LevelCandidates]] = [[] for _ in range(n)]
    parts: list[list[tuple[Tensor, Tensor, Tensor]]] = [[] for _ in range(n)]
    for level_anchors, cls, regression in zip(anchors, box_cls, box_regression):
        a = regression.shape[1] // 4
        c = cls.shape[1] // a
        scores = flatten_predictions(cls, c).sigmoid()  # [N, HWA, C]
        regression = flatten_predictions(regression, 4)
        for i in range(n):
            candidates = scores[i] > settings.pre_nms_thresh
            top = min(int(candidates.sum()), settings.pre_nms_top_n)
            values, order = scores[i][candidates].topk(top, sorted=False)
            where = torch.nonzero(candidates)[order]
            loc, label = where[:, 0], where[:, 1] + 1
            boxes = decode_boxes(regression[i, loc], level_anchors[loc], settings.weights)
            extent = boxes[:, 2] - boxes[:, 0] + boxes[:, 3] - boxes[:, 1]
            boxes = clip_boxes(boxes[None], image_sizes[i:i + 1])[0]
            ok = large_enough(boxes, settings.min_size)
            parts[i].append((boxes[ok], values[ok], label[ok]))
            levels_out[i].append(LevelCandidates(loc * c + label - 1, values, boxes, extent))
    results = []
    for i in range(n):
        boxes = torch.cat([p[0] for p in parts[i]])
        scores = torch.cat([p[1] for p in parts[i]])
        labels = torch.cat([p[2] for p in parts[i]])
        out = []
        for j in range(1, int(labels.max()) + 1 if len(labels) else 1):
            inds = torch.nonzero(labels == j).squeeze(1)
            keep = inds[nms(boxes[inds], scores[inds], settings.nms_thresh)]
            out.append(keep)
        keep = torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        top = _keep_top(scores, settings.detections_per_img)
        results.append((boxes[top], scores[top], labels[top]))
    if stages is not None:
        stages["retinanet_levels"] = levels_out
    return results


def select_class_masks(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """Mask probabilities of each ROI's predicted class: sigmoid of ``mask_logits`` [R, C, M, M]
    at ``labels`` [R] -> [R, M, M]."""
    index = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    return mask_logits[index, labels].sigmoid()
