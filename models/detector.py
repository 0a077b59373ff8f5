"""The whole detector: upstream's ``GeneralizedRCNN`` at inference, built from a detector config.

:func:`build_detector` assembles ``backbone`` (:func:`models.backbone.build_backbone`), ``rpn``
(the RPN, or RetinaNet, which upstream also keeps in the ``rpn`` slot) and ``roi_heads`` (``box``
and, for Mask R-CNN, ``mask``), so ``state_dict()`` keys are exactly upstream's. RPN-only models and
RetinaNet have no ROI heads (and no ``roi_heads.*`` keys), as upstream.

``forward(images, image_sizes)`` takes a padded, normalised batch [N, 3, H, W] and the unpadded
(height, width) of each image ([N, 2]) and returns one :class:`Detections` per image with
upstream's test-time results: boxes in input pixels, scores, labels (upstream's ids; RPN-only
proposals get label 1) and, for Mask R-CNN, the [D, M, M] mask probabilities of each box's class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

import models.box_head  # noqa: F401  (fills the head registries)
import models.mask_head  # noqa: F401
from models.backbone import Backbone, build_backbone
from models.box_head import build_box_head
from models.errors import DeformRTError
from models.mask_head import build_mask_head
from models.retinanet import build_retinanet
from models.rpn import build_rpn

RPN_ONLY, FASTER_RCNN, MASK_RCNN, RETINANET = "rpn", "faster_rcnn", "mask_rcnn", "retinanet"
META_ARCHITECTURES = (RPN_ONLY, FASTER_RCNN, MASK_RCNN, RETINANET)


@dataclass
class Detections:
    """One image's results. ``masks`` is None unless the model predicts masks."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.scores)


def meta_architecture(cfg) -> str:
    """Which kind of detector a config describes: rpn, faster_rcnn, mask_rcnn or retinanet."""
    m = cfg.MODEL
    if m.RETINANET_ON:
        return RETINANET
    if m.RPN_ONLY:
        return RPN_ONLY
    return MASK_RCNN if m.MASK_ON else FASTER_RCNN


class GeneralizedRCNN(nn.Module):
    """``backbone``, ``rpn`` and (two-stage models) ``roi_heads`` = ModuleDict(box[, mask])."""

    def __init__(self, backbone: Backbone, rpn: nn.Module, roi_heads: Optional[nn.ModuleDict], kind: str):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        if roi_heads is not None:
            self.roi_heads = roi_heads
        else:
            self.roi_heads = None
        self.kind = kind

    @property
    def size_divisibility(self) -> int:
        return self.backbone.size_divisibility

    @torch.no_grad()
    def forward(self, images: Tensor, image_sizes: Tensor, stages: Optional[dict] = None) -> list[Detections]:
        """Upstream's test-time results per image. ``stages`` (a dict), when given, receives the
        intermediate results: ``rpn_levels`` (pre-NMS candidates per image and level),
        ``proposals`` (per image: boxes, objectness) and the box head's raw outputs."""
        image_sizes = torch.as_tensor(image_sizes, dtype=torch.int64).reshape(-1, 2)
        if image_sizes.shape[0] != images.shape[0]:
            raise DeformRTError(f"{images.shape[0]} images but {image_sizes.shape[0]} image sizes")
        features = self.backbone(images)
        if self.kind == RETINANET:
            return [Detections(b, s, l) for b, s, l in self.rpn(features, image_sizes, stages)]
        proposals = self.rpn(features, image_sizes, stages)
        if stages is not None:
            stages["proposals"] = proposals
        if self.kind == RPN_ONLY:
            return [Detections(b, s, torch.ones(len(s), dtype=torch.int64)) for b, s in proposals]
        box_features = [f for f in features[: len(self.roi_heads["box"].feature_extractor.pooler.scales)]]
        _, detections = self.roi_heads["box"](box_features, [p[0] for p in proposals], image_sizes, stages)
        results = [Detections(b, s, l) for b, s, l in detections]
        if self.kind == MASK_RCNN:
            mask_head = self.roi_heads["mask"]
            mask_features = features[: len(mask_head.feature_extractor.pooler.scales)]
            masks = mask_head(mask_features, [r.boxes for r in results], [r.labels for r in results])
            for r, m in zip(results, masks):
                r.masks = m
        return results


def build_detector(cfg) -> GeneralizedRCNN:
    """The detector a config from ``models.config.get_cfg(..., detector=True)`` describes, with
    upstream's random init; load trained weights with :func:`models.checkpoint.load_checkpoint`."""
    if "RPN" not in cfg.MODEL:
        raise DeformRTError("build_detector needs a detector config: get_cfg(..., detector=True)")
    kind = meta_architecture(cfg)
    backbone = build_backbone(cfg)
    channels = backbone.output_channels[0]
    if kind == RETINANET:
        return GeneralizedRCNN(backbone, build_retinanet(cfg, channels), None, kind)
    rpn = build_rpn(cfg, channels)
    if kind == RPN_ONLY:
        return GeneralizedRCNN(backbone, rpn, None, kind)
    heads = nn.ModuleDict({"box": build_box_head(cfg, channels)})
    if kind == MASK_RCNN:
        heads["mask"] = build_mask_head(cfg, channels, heads["box"].feature_extractor)
    return GeneralizedRCNN(backbone, rpn, heads, kind)
