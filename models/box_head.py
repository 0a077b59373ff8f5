"""The ROI box head: feature extractors and predictors of upstream's registries, config-free.

Module and parameter names follow upstream (``feature_extractor.head.layer4.*`` for the C4 res5
head, ``feature_extractor.fc6`` / ``fc7``, ``feature_extractor.xconvs.*``, ``predictor.cls_score`` /
``bbox_pred``), so the detector's ``roi_heads.box.*`` keys match upstream checkpoints. Each
feature extractor owns a :class:`models.poolers.Pooler` (``pooler``) and maps pooled ROI features
to a representation with :meth:`from_pooled`, so a caller can pool another way (the ONNX export
does) and reuse the rest. Builders registered at the bottom read the config.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from models.backbone import group_norm_factory
from models.detection_ops import BoxSettings, box_detections
from models.layers import NormFactory
from models.poolers import Pooler
from models.registry import BLOCKS, ROI_BOX_FEATURE_EXTRACTORS, ROI_BOX_PREDICTORS
from models.resnet import BlockFactory


def make_fc(in_features: int, out_features: int, norm: Optional[NormFactory] = None) -> nn.Module:
    """Upstream's ``make_fc``: kaiming-uniform (a=1) Linear; with ``norm``, a bias-free Linear then
    ``norm(out_features)`` as ``Sequential`` (keys ``.0`` / ``.1``)."""
    fc = nn.Linear(in_features, out_features, bias=norm is None)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    if norm is None:
        nn.init.zeros_(fc.bias)
        return fc
    return nn.Sequential(fc, norm(out_features))


class ResNetHead(nn.Module):
    """Upstream's C4 ROI head: res5 (``layer4``) as blocks of ``block``; first stride 2."""

    def __init__(self, block: BlockFactory, block_count: int, in_channels: int, bottleneck_channels: int,
                 out_channels: int):
        super().__init__()
        blocks = []
        for i in range(block_count):
            blocks.append(block(in_channels, bottleneck_channels, out_channels, 2 if i == 0 else 1, dcn=None))
            in_channels = out_channels
        self.layer4 = nn.Sequential(*blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(x)


class PooledFeatureExtractor(nn.Module):
    """A feature extractor: ``pooler``, then :meth:`from_pooled` on the pooled ROI features."""

    pooler: Pooler

    def from_pooled(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        return self.from_pooled(self.pooler(features, boxes))


class ResNet50Conv5ROIFeatureExtractor(PooledFeatureExtractor):
    """Pool, then the res5 head: [R, 2048, S/2, S/2] features (C4 bodies)."""

    def __init__(self, pooler: Pooler, head: ResNetHead):
        super().__init__()
        self.pooler = pooler
        self.head = head
        self.out_channels = head.out_channels

    def from_pooled(self, x: Tensor) -> Tensor:
        return self.head(x)


class FPN2MLPFeatureExtractor(PooledFeatureExtractor):
    """Pool, flatten, fc6 + ReLU, fc7 + ReLU."""

    def __init__(self, pooler: Pooler, in_channels: int, representation_size: int, norm: Optional[NormFactory] = None):
        super().__init__()
        self.pooler = pooler
        resolution = pooler.output_size[0]
        self.fc6 = make_fc(in_channels * resolution ** 2, representation_size, norm)
        self.fc7 = make_fc(representation_size, representation_size, norm)
        self.out_channels = representation_size

    def from_pooled(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FPNXconv1fcFeatureExtractor(PooledFeatureExtractor):
    """Pool, ``num_convs`` 3x3 convs (each + optional norm + ReLU) in ``xconvs``, flatten, fc6 + ReLU."""

    def __init__(self, pooler: Pooler, in_channels: int, conv_dim: int, num_convs: int, dilation: int,
                 representation_size: int, norm: Optional[NormFactory] = None):
        super().__init__()
        self.pooler = pooler
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            conv = nn.Conv2d(in_channels, conv_dim, 3, padding=dilation, dilation=dilation, bias=norm is None)
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if norm is not None:
                layers.append(norm(conv_dim))
            layers.append(nn.ReLU(inplace=True))
            in_channels = conv_dim
        self.xconvs = nn.Sequential(*layers)
        self.fc6 = make_fc(conv_dim * pooler.output_size[0] ** 2, representation_size)
        self.out_channels = representation_size

    def from_pooled(self, x: Tensor) -> Tensor:
        return F.relu(self.fc6(self.xconvs(x).flatten(1)))


class FPNPredictor(nn.Module):
    """``cls_score`` and ``bbox_pred`` on the representation (FPN heads)."""

    def __init__(self, in_channels: int, num_classes: int, num_bbox_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_bbox_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class FastRCNNPredictor(FPNPredictor):
    """Global average pool first (C4 heads' res5 features), then as :class:`FPNPredictor`."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(x.mean(dim=(2, 3)) if x.dim() == 4 else x)


class ROIBoxHead(nn.Module):
    """``feature_extractor`` + ``predictor``; ``forward`` returns the extractor's features and, per
    image, (boxes, scores, labels) after upstream's postprocessing."""

    def __init__(self, feature_extractor: nn.Module, predictor: nn.Module, settings: BoxSettings):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.settings = settings

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor], image_sizes: Tensor,
                stages: dict | None = None):
        x = self.feature_extractor(features, proposals)
        class_logits, box_regression = self.predictor(x)
        if stages is not None:
            stages["box_class_logits"], stages["box_regression"] = class_logits, box_regression
        return x, box_detections(class_logits, box_regression, proposals, image_sizes, self.settings)


# ----------------------------------------------------------------------------------------------
# Builders


def make_pooler(head_cfg) -> Pooler:
    return Pooler(head_cfg.POOLER_RESOLUTION, head_cfg.POOLER_SCALES, head_cfg.POOLER_SAMPLING_RATIO)


def build_res5_head(cfg) -> ResNetHead:
    r = cfg.MODEL.RESNETS
    return ResNetHead(BLOCKS.get(r.TRANS_FUNC)(cfg), 3, r.RES2_OUT_CHANNELS * 4, r.NUM_GROUPS * r.WIDTH_PER_GROUP * 8,
                      r.RES2_OUT_CHANNELS * 8)


@ROI_BOX_FEATURE_EXTRACTORS.register("ResNet50Conv5ROIFeatureExtractor")
def _res5_extractor(cfg, in_channels: int) -> nn.Module:
    # Upstream reads ROI_BOX_HEAD's pooler settings even when the mask head builds this extractor.
    return ResNet50Conv5ROIFeatureExtractor(make_pooler(cfg.MODEL.ROI_BOX_HEAD), build_res5_head(cfg))


@ROI_BOX_FEATURE_EXTRACTORS.register("FPN2MLPFeatureExtractor")
def _fpn_2mlp_extractor(cfg, in_channels: int) -> nn.Module:
    h = cfg.MODEL.ROI_BOX_HEAD
    return FPN2MLPFeatureExtractor(make_pooler(h), in_channels, h.MLP_HEAD_DIM,
                                   group_norm_factory(cfg) if h.USE_GN else None)


@ROI_BOX_FEATURE_EXTRACTORS.register("FPNXconv1fcFeatureExtractor")
def _fpn_xconv1fc_extractor(cfg, in_channels: int) -> nn.Module:
    h = cfg.MODEL.ROI_BOX_HEAD
    return FPNXconv1fcFeatureExtractor(make_pooler(h), in_channels, h.CONV_HEAD_DIM, h.NUM_STACKED_CONVS, h.DILATION,
                                       h.MLP_HEAD_DIM, group_norm_factory(cfg) if h.USE_GN else None)


def _bbox_classes(cfg) -> int:
    return 2 if cfg.MODEL.CLS_AGNOSTIC_BBOX_REG else cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES


@ROI_BOX_PREDICTORS.register("FastRCNNPredictor")
def _fast_rcnn_predictor(cfg, in_channels: int) -> nn.Module:
    return FastRCNNPredictor(in_channels, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, _bbox_classes(cfg))


@ROI_BOX_PREDICTORS.register("FPNPredictor")
def _fpn_predictor(cfg, in_channels: int) -> nn.Module:
    return FPNPredictor(in_channels, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, _bbox_classes(cfg))


def box_settings(cfg) -> BoxSettings:
    h = cfg.MODEL.ROI_HEADS
    return BoxSettings(score_thresh=h.SCORE_THRESH, nms_thresh=h.NMS, detections_per_img=h.DETECTIONS_PER_IMG,
                       weights=tuple(h.BBOX_REG_WEIGHTS), cls_agnostic_bbox_reg=cfg.MODEL.CLS_AGNOSTIC_BBOX_REG)


def build_box_head(cfg, in_channels: int) -> ROIBoxHead:
    h = cfg.MODEL.ROI_BOX_HEAD
    extractor = ROI_BOX_FEATURE_EXTRACTORS.get(h.FEATURE_EXTRACTOR)(cfg, in_channels)
    predictor = ROI_BOX_PREDICTORS.get(h.PREDICTOR)(cfg, extractor.out_channels)
    return ROIBoxHead(extractor, predictor, box_settings(cfg))
