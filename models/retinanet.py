"""RetinaNet's head and module (upstream's ``RetinaNetHead`` / ``RetinaNetModule``), config-free.

Keys follow upstream (``rpn.anchor_generator.cell_anchors.{i}``, ``rpn.head.cls_tower.{2k}``,
``rpn.head.bbox_tower.{2k}``, ``rpn.head.cls_logits``, ``rpn.head.bbox_pred``): upstream builds
RetinaNet in the detector's ``rpn`` slot. The test-time postprocessing is
:func:`models.detection_ops.retinanet_detections`.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from models.detection_ops import RetinaNetSettings, retinanet_detections
from models.rpn import AnchorGenerator


class RetinaNetHead(nn.Module):
    """Two towers of ``num_convs`` 3x3 conv + ReLU, then a 3x3 conv with ``num_anchors *
    num_classes`` logits (background excluded) and one with ``num_anchors * 4`` deltas."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int, prior_prob: float):
        super().__init__()
        cls_tower, bbox_tower = [], []
        for _ in range(num_convs):
            cls_tower += [nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU()]
            bbox_tower += [nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU()]
        self.cls_tower = nn.Sequential(*cls_tower)
        self.bbox_tower = nn.Sequential(*bbox_tower)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        return ([self.cls_logits(self.cls_tower(f)) for f in features],
                [self.bbox_pred(self.bbox_tower(f)) for f in features])


class RetinaNet(nn.Module):
    """``anchor_generator`` + ``head``; ``forward`` returns per image (boxes, scores, labels)."""

    def __init__(self, anchor_generator: AnchorGenerator, head: RetinaNetHead, settings: RetinaNetSettings):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.settings = settings

    def forward(self, features: Sequence[Tensor], image_sizes: Tensor, stages: dict | None = None):
        box_cls, box_regression = self.head(features)
        anchors = self.anchor_generator(features)
        return retinanet_detections(anchors, box_cls, box_regression, image_sizes, self.settings, stages)


def retinanet_settings(cfg) -> RetinaNetSettings:
    r = cfg.MODEL.RETINANET
    return RetinaNetSettings(pre_nms_thresh=r.INFERENCE_TH, pre_nms_top_n=r.PRE_NMS_TOP_N, nms_thresh=r.NMS_TH,
                             detections_per_img=cfg.TEST.DETECTIONS_PER_IMG)


def build_retinanet(cfg, in_channels: int) -> RetinaNet:
    """RetinaNet from MODEL.RETINANET: SCALES_PER_OCTAVE sizes per level (size * OCTAVE^(i/n))."""
    r = cfg.MODEL.RETINANET
    sizes = [tuple(size * r.OCTAVE ** (i / float(r.SCALES_PER_OCTAVE)) for i in range(r.SCALES_PER_OCTAVE))
             for size in r.ANCHOR_SIZES]
    anchors = AnchorGenerator(sizes, r.ASPECT_RATIOS, r.ANCHOR_STRIDES)
    head = RetinaNetHead(in_channels, len(r.ASPECT_RATIOS) * r.SCALES_PER_OCTAVE, r.NUM_CLASSES - 1, r.NUM_CONVS,
                         r.PRIOR_PROB)
    return RetinaNet(anchors, head, retinanet_settings(cfg))
