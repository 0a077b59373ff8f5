"""The exported shape of the detector's postprocessing: fixed-size tensors from end to end.

:class:`ExportableDetector` wraps a :class:`models.detector.GeneralizedRCNN` (its modules, not its
``forward``) and computes upstream's inference with the arithmetic of
:mod:`models.detection_ops`, reshaped for a static graph:

- per-level top-k on scores padded with -1 (a level with fewer anchors than k gets invalid
  entries, so k is a constant and every TopK has ``K <= 3840`` for TensorRT);
- NMS per level and per class folded into the first dimension
  (:func:`exporter.onnx.detector_ops.nms_keep`), invalid entries carrying score -1 under a score
  threshold that drops them;
- FPN pooling runs ROIAlign on every level and keeps each ROI's own level (a fixed-shape ``Where``
  instead of upstream's gather and scatter);
- results cut to fixed sizes by TopK on scores, where -1 marks empty rows.

Inputs: ``images`` [B, 3, H, W] (preprocessed and padded) and ``image_sizes`` [B, 2] int32
(unpadded height, width). Outputs: ``num_detections`` [B, 1] int32, ``detection_boxes`` [B, D, 4],
``detection_scores`` [B, D], ``detection_classes`` [B, D] int32 and, for Mask R-CNN,
``detection_masks`` [B, D, M, M]; rows past ``num_detections`` are zero. With ``debug_outputs``
also the stages (see :data:`DEBUG_OUTPUTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from exporter.onnx.detector_ops import nms_keep, roi_align_op
from models.detection_ops import (RPN_BOX_WEIGHTS, anchors_at, clip_boxes, decode_boxes, flatten_predictions,
                                  large_enough, map_levels)
from models.detector import MASK_RCNN, RETINANET, RPN_ONLY, GeneralizedRCNN

INVALID = -1.0  # score of an empty entry; every real score is a probability >= 0
_NMS_SCORE_FLOOR = -0.5  # drops INVALID entries from NMS without touching probabilities

DETECTION_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
MASK_OUTPUT = "detection_masks"
# Stage outputs added by debug_outputs (two-stage models / RetinaNet).
DEBUG_OUTPUTS = ("pre_nms_boxes", "pre_nms_scores", "pre_nms_indices", "proposals", "proposal_scores")
RETINANET_DEBUG_OUTPUTS = ("pre_nms_boxes", "pre_nms_scores", "pre_nms_indices")


@dataclass(frozen=True)
class DetectorShape:
    """The fixed sizes of an exported detector (derived from the config's settings)."""

    kind: str
    levels: int  # pyramid levels the RPN / RetinaNet runs on
    pre_nms: int  # candidates per level before NMS
    proposals: int  # proposals per image (two-stage and RPN-only)
    detections: int  # rows of the detection outputs
    num_classes: int  # including background
    mask_size: int = 0

    def output_names(self, debug_outputs: bool = False) -> list[str]:
        names = list(DETECTION_OUTPUTS) + ([MASK_OUTPUT] if self.kind == MASK_RCNN else [])
        if debug_outputs:
            names += list(RETINANET_DEBUG_OUTPUTS if self.kind == RETINANET else DEBUG_OUTPUTS)
        return names


def _topk_padded(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` of ``scores`` [B, N] (sorted) with N possibly < k: padded with INVALID."""
    padded = torch.cat([scores, scores.new_full((scores.shape[0], k), INVALID)], 1)
    values, index = padded.topk(k, dim=1, sorted=True)
    return values, torch.minimum(index, torch.full_like(index, scores.shape[1] - 1))


def _gather_rows(t: Tensor, index: Tensor) -> Tensor:
    """``t`` [B, N, C] at ``index`` [B, K] -> [B, K, C]."""
    return t.gather(1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


class ExportableDetector(nn.Module):
    """Fixed-shape inference of ``detector`` (see the module docstring)."""

    def __init__(self, detector: GeneralizedRCNN, shape: DetectorShape, debug_outputs: bool = False):
        super().__init__()
        self.detector = detector
        self.shape = shape
        self.debug_outputs = debug_outputs

    # -- stages ------------------------------------------------------------------------------

    def _pool(self, pooler, features: Sequence[Tensor], rois: Tensor, batch_index: Tensor) -> Tensor:
        size = pooler.output_size[0]
        if len(pooler.scales) == 1:
            return roi_align_op(features[0], rois, batch_index, size, pooler.scales[0], pooler.sampling_ratio)
        levels = map_levels(rois, pooler.k_min, pooler.k_max).reshape(-1, 1, 1, 1)
        result = None
        for level, scale in enumerate(pooler.scales):
            pooled = roi_align_op(features[level], rois, batch_index, size, scale, pooler.sampling_ratio)
            result = pooled if result is None else torch.where(levels == level, pooled, result)
        return result

    def _level_anchors(self, anchor_generator, features, index: Tensor) -> Tensor:
        """The anchors at ``index`` [B, L, K] (each level's flattened anchor order) -> [B, L, K, 4],
        computed from the indices for all levels at once (:func:`models.detection_ops.anchors_at`
        with per-level widths, strides and cells), never as a grid."""
        cells = list(anchor_generator.cell_anchors)
        widths = torch.stack([torch.scalar_tensor(f.shape[-1], dtype=torch.int64) for f in features]).reshape(1, -1, 1)
        strides = torch.tensor(anchor_generator.strides, dtype=torch.float32).reshape(1, -1, 1)
        a = cells[0].shape[0]  # upstream's shared head predicts the same anchors per location on every level
        level = torch.arange(len(cells), device=index.device).reshape(1, -1, 1)
        return anchors_at(torch.cat(cells), index, widths, strides, a, offset=level * a)

    def _rpn(self, features, image_sizes):
        rpn, s = self.detector.rpn, self.detector.rpn.settings
        logits, deltas = rpn.head(features)
        b = image_sizes.shape[0]
        top_l, index_l, deltas_l = [], [], []
        for level_logits, level_deltas in zip(logits, deltas):
            scores = flatten_predictions(level_logits, 1).reshape(b, -1).sigmoid()
            top, index = _topk_padded(scores, s.pre_nms_top_n)
            top_l.append(top)
            index_l.append(index)
            deltas_l.append(_gather_rows(flatten_predictions(level_deltas, 4), index))
        # Every level now has k candidates: the rest runs once on [B, L, K(, 4)].
        top, index = torch.stack(top_l, 1), torch.stack(index_l, 1)
        anchors = self._level_anchors(rpn.anchor_generator, features, index)
        boxes = clip_boxes(decode_boxes(torch.stack(deltas_l, 1), anchors, RPN_BOX_WEIGHTS), image_sizes)
        valid = (top >= 0) & large_enough(boxes, s.min_size)
        scores = torch.where(valid, top, torch.full_like(top, INVALID))
        index = torch.where(valid, index, torch.full_like(index, -1))
        levels, k = boxes.shape[1], boxes.shape[2]
        keep = nms_keep(boxes.reshape(b * levels, k, 4), scores.reshape(b * levels, k), s.nms_thresh,
                        s.post_nms_top_n, _NMS_SCORE_FLOOR).reshape(b, levels, k)
        kept = torch.where(keep, scores, torch.full_like(scores, INVALID)).reshape(b, levels * k)
        top, order = kept.topk(min(self.shape.proposals, levels * k), dim=1, sorted=True)
        proposals = _gather_rows(boxes.reshape(b, levels * k, 4), order)
        debug = (boxes, scores, index, proposals, top)
        return proposals, top, debug

    def _box_head(self, features, proposals, proposal_scores, image_sizes):
        head = self.detector.roi_heads["box"]
        s, extractor = head.settings, head.feature_extractor
        b, r = proposals.shape[:2]
        rois = proposals.reshape(b * r, 4)
        batch_index = torch.arange(b, device=rois.device).repeat_interleave(r)
        x = extractor.from_pooled(self._pool(extractor.pooler, features, rois, batch_index))
        class_logits, box_regression = head.predictor(x)
        probs = torch.softmax(class_logits, -1)
        c = probs.shape[1]
        if s.cls_agnostic_bbox_reg:
            box_regression = box_regression[:, -4:]
        boxes = decode_boxes(box_regression, rois, s.weights)
        boxes = boxes.reshape(b, r, -1, 4).expand(b, r, c, 4) if s.cls_agnostic_bbox_reg else boxes.reshape(b, r, c, 4)
        boxes = clip_boxes(boxes, image_sizes)
        scores = torch.where((proposal_scores >= 0).reshape(b, r, 1), probs.reshape(b, r, c),
                             torch.full_like(probs.reshape(b, r, c), INVALID))
        # Foreground classes folded into NMS's batch: [B*(C-1), R].
        fold_boxes = boxes[:, :, 1:].permute(0, 2, 1, 3).reshape(b * (c - 1), r, 4)
        fold_scores = scores[:, :, 1:].permute(0, 2, 1).reshape(b * (c - 1), r)
        keep = nms_keep(fold_boxes, fold_scores, s.nms_thresh, r, s.score_thresh)
        kept = torch.where(keep, fold_scores, torch.full_like(fold_scores, INVALID)).reshape(b, (c - 1) * r)
        top, index = kept.topk(min(self.shape.detections, (c - 1) * r), dim=1, sorted=True)
        labels = torch.div(index, r, rounding_mode="floor") + 1
        return _gather_rows(fold_boxes.reshape(b, (c - 1) * r, 4), index), top, labels

    def _mask_head(self, features, boxes, labels):
        head = self.detector.roi_heads["mask"]
        b, d = boxes.shape[:2]
        rois = boxes.reshape(b * d, 4)
        batch_index = torch.arange(b, device=rois.device).repeat_interleave(d)
        extractor = head.feature_extractor
        logits = head.predictor(extractor.from_pooled(self._pool(extractor.pooler, features, rois, batch_index)))
        m = logits.shape[-1]
        picked = logits.gather(1, labels.reshape(b * d, 1, 1, 1).expand(-1, 1, m, m))
        return picked.sigmoid().reshape(b, d, m, m)

    def _retinanet(self, features, image_sizes):
        net = self.detector.rpn
        s = net.settings
        box_cls, box_regression = net.head(features)
        b = image_sizes.shape[0]
        top_l, index_l, deltas_l = [], [], []
        c = 1
        for cls, regression in zip(box_cls, box_regression):
            a = regression.shape[1] // 4
            c = cls.shape[1] // a
            scores = flatten_predictions(cls, c).sigmoid().reshape(b, -1)  # [B, HWA*C], anchor-major
            candidates = torch.where(scores > s.pre_nms_thresh, scores, torch.full_like(scores, INVALID))
            top, index = _topk_padded(candidates, s.pre_nms_top_n)
            top_l.append(top)
            index_l.append(index)
            deltas_l.append(_gather_rows(flatten_predictions(regression, 4), torch.div(index, c, rounding_mode="floor")))
        # Every level now has k candidates: the rest runs once on [B, L, K(, 4)].
        top, index = torch.stack(top_l, 1), torch.stack(index_l, 1)
        location = torch.div(index, c, rounding_mode="floor")
        anchors = self._level_anchors(net.anchor_generator, features, location)
        boxes = clip_boxes(decode_boxes(torch.stack(deltas_l, 1), anchors, s.weights), image_sizes)
        valid = (top > s.pre_nms_thresh) & large_enough(boxes, s.min_size)
        level_scores = torch.where(valid, top, torch.full_like(top, INVALID))
        level_index = torch.where(valid, index, torch.full_like(index, -1))
        k = s.pre_nms_top_n
        boxes, scores = boxes.reshape(b, -1, 4), level_scores.reshape(b, -1)  # [B, N(, 4)], N = L * k
        labels = (index - location * c + 1).reshape(b, -1)
        n = boxes.shape[1]
        classes = self.shape.num_classes - 1
        wanted = torch.arange(1, classes + 1, device=labels.device).reshape(1, classes, 1)
        fold_scores = torch.where(labels.unsqueeze(1) == wanted, scores.unsqueeze(1),
                                  torch.full_like(scores.unsqueeze(1), INVALID)).reshape(b * classes, n)
        fold_boxes = boxes.unsqueeze(1).expand(b, classes, n, 4).reshape(b * classes, n, 4)
        keep = nms_keep(fold_boxes, fold_scores, s.nms_thresh, n, _NMS_SCORE_FLOOR)
        kept = torch.where(keep, fold_scores, torch.full_like(fold_scores, INVALID)).reshape(b, classes * n)
        top, order = kept.topk(min(self.shape.detections, classes * n), dim=1, sorted=True)
        within = order - torch.div(order, n, rounding_mode="floor") * n
        debug = (boxes.reshape(b, -1, k, 4), level_scores, level_index)
        return _gather_rows(boxes, within), top, torch.div(order, n, rounding_mode="floor") + 1, debug

    # -- the graph ---------------------------------------------------------------------------

    def forward(self, images: Tensor, image_sizes: Tensor):
        sizes = image_sizes.to(torch.float32)
        features = self.detector.backbone(images)
        kind = self.shape.kind
        debug: tuple = ()
        if kind == RETINANET:
            boxes, scores, labels, debug = self._retinanet(features, sizes)
        else:
            proposals, proposal_scores, debug = self._rpn(features, sizes)
            if kind == RPN_ONLY:
                boxes, scores = proposals, proposal_scores
                labels = torch.ones_like(scores, dtype=torch.int64)
            else:
                pooled = features[: len(self.detector.roi_heads["box"].feature_extractor.pooler.scales)]
                boxes, scores, labels = self._box_head(pooled, proposals, proposal_scores, sizes)
        valid = scores >= 0
        outputs = [valid.sum(1, keepdim=True).to(torch.int32),
                   torch.where(valid.unsqueeze(-1), boxes, torch.zeros_like(boxes)),
                   torch.where(valid, scores, torch.zeros_like(scores)),
                   torch.where(valid, labels, torch.zeros_like(labels)).to(torch.int32)]
        if kind == MASK_RCNN:
            head = self.detector.roi_heads["mask"]
            mask_features = features[: len(head.feature_extractor.pooler.scales)]
            masks = self._mask_head(mask_features, boxes, torch.where(valid, labels, torch.ones_like(labels)))
            outputs.append(torch.where(valid.reshape(*valid.shape, 1, 1), masks, torch.zeros_like(masks)))
        if self.debug_outputs:
            outputs += list(debug)
        return tuple(outputs)


def detector_shape(cfg) -> DetectorShape:
    """The fixed sizes the config gives the exported graph (no model needed)."""
    from models.detector import meta_architecture
    from models.rpn import rpn_settings

    kind = meta_architecture(cfg)
    if kind == RETINANET:
        r = cfg.MODEL.RETINANET
        return DetectorShape(kind, len(r.ANCHOR_STRIDES), r.PRE_NMS_TOP_N, 0, cfg.TEST.DETECTIONS_PER_IMG,
                             r.NUM_CLASSES)
    s = rpn_settings(cfg)
    levels = len(cfg.MODEL.RPN.ANCHOR_STRIDE)
    proposals = min(s.proposals_per_image, levels * s.pre_nms_top_n)
    if kind == RPN_ONLY:
        return DetectorShape(kind, levels, s.pre_nms_top_n, proposals, proposals, 2)
    mask = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION if kind == MASK_RCNN else 0
    return DetectorShape(kind, levels, s.pre_nms_top_n, proposals, cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG,
                         cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, mask)


def trt_limit_problems(shape: DetectorShape, cfg) -> list[str]:
    """Where the config exceeds what TensorRT's layers take (TopK's K < 3840, at most 5000 boxes
    into one NMS batch item), each as 'KEY=value exceeds ...; override with KEY N'."""
    top_k, nms_boxes = 3840, 5000
    problems = []
    if shape.kind == RETINANET:
        key, value = "MODEL.RETINANET.PRE_NMS_TOP_N", shape.pre_nms
        if value > top_k:
            problems.append(f"{key}={value} exceeds TensorRT's TopK limit of {top_k}; override with {key} {top_k}")
        if value * shape.levels > nms_boxes:
            problems.append(f"{key}={value} x {shape.levels} levels = {value * shape.levels} boxes into one NMS "
                            f"exceeds TensorRT's {nms_boxes}; override with {key} {nms_boxes // shape.levels}")
        return problems
    key = "MODEL.RPN.PRE_NMS_TOP_N_TEST"
    if shape.pre_nms > min(top_k, nms_boxes):
        limit = min(top_k, nms_boxes)
        problems.append(f"{key}={shape.pre_nms} exceeds TensorRT's TopK limit of {top_k} (and its {nms_boxes} "
                        f"boxes per NMS); override with {key} {limit}")
    out_key = "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST" if shape.levels > 1 else "MODEL.RPN.POST_NMS_TOP_N_TEST"
    if shape.proposals > top_k:
        problems.append(f"{out_key}={shape.proposals} exceeds TensorRT's TopK limit of {top_k}; override with "
                        f"{out_key} {top_k}")
    if shape.detections > top_k:
        problems.append(f"MODEL.ROI_HEADS.DETECTIONS_PER_IMG={shape.detections} exceeds TensorRT's TopK limit of "
                        f"{top_k}; override with MODEL.ROI_HEADS.DETECTIONS_PER_IMG {top_k}")
    return problems
