"""The ROI mask head: feature extractors and predictors of upstream's registries, config-free.

Names follow upstream (``feature_extractor.mask_fcn{i}``, ``predictor.conv5_mask``,
``predictor.mask_fcn_logits``), so ``roi_heads.mask.*`` keys match upstream checkpoints. With
SHARE_BOX_FEATURE_EXTRACTOR (upstream's C4 configs) the mask head uses the box head's extractor
module itself, and ``state_dict()`` lists its tensors under both heads, as upstream's does.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbone import group_norm_factory
from models.box_head import PooledFeatureExtractor, make_pooler
from models.detection_ops import select_class_masks
from models.layers import NormFactory
from models.poolers import Pooler
from models.registry import ROI_BOX_FEATURE_EXTRACTORS, ROI_MASK_FEATURE_EXTRACTORS, ROI_MASK_PREDICTORS


def make_conv3x3(in_channels: int, out_channels: int, dilation: int = 1,
                 norm: Optional[NormFactory] = None) -> nn.Module:
    """Upstream's ``make_conv3x3``: kaiming-normal (fan_out) 3x3 conv, bias unless ``norm``, which
    follows it in a ``Sequential``."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=norm is None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv if norm is None else nn.Sequential(conv, norm(out_channels))


class MaskRCNNFPNFeatureExtractor(PooledFeatureExtractor):
    """Pool, then ``mask_fcn1..n`` 3x3 convs, each followed by ReLU."""

    def __init__(self, pooler: Pooler, in_channels: int, layers: Sequence[int], dilation: int = 1,
                 norm: Optional[NormFactory] = None):
        super().__init__()
        self.pooler = pooler
        self.blocks = []
        for i, width in enumerate(layers, 1):
            name = f"mask_fcn{i}"
            self.add_module(name, make_conv3x3(in_channels, width, dilation, norm))
            self.blocks.append(name)
            in_channels = width
        self.out_channels = in_channels

    def from_pooled(self, x: Tensor) -> Tensor:
        for name in self.blocks:
            x = F.relu(getattr(self, name)(x))
        return x


def _msra_fill(module: nn.Module) -> None:
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.zeros_(param)
        else:
            nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")


class MaskRCNNC4Predictor(nn.Module):
    """2x2 stride-2 transposed conv + ReLU (``conv5_mask``), then 1x1 logits per class."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1)
        _msra_fill(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


class MaskRCNNConv1x1Predictor(nn.Module):
    """1x1 logits per class straight from the features."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.mask_fcn_logits = nn.Conv2d(in_channels, num_classes, 1)
        _msra_fill(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(x)


class ROIMaskHead(nn.Module):
    """``feature_extractor`` + ``predictor``; ``forward`` gives each detection the mask
    probabilities [M, M] of its predicted class."""

    def __init__(self, feature_extractor: nn.Module, predictor: nn.Module):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor]) -> list[Tensor]:
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [features[0].new_zeros((0, 1, 1)) for _ in boxes]
        logits = self.predictor(self.feature_extractor(features, boxes))
        probs = select_class_masks(logits, torch.cat(list(labels)))
        return list(probs.split(counts))


# ----------------------------------------------------------------------------------------------
# Builders

ROI_MASK_FEATURE_EXTRACTORS.register("ResNet50Conv5ROIFeatureExtractor",
                                     ROI_BOX_FEATURE_EXTRACTORS.get("ResNet50Conv5ROIFeatureExtractor"))


@ROI_MASK_FEATURE_EXTRACTORS.register("MaskRCNNFPNFeatureExtractor")
def _mask_fpn_extractor(cfg, in_channels: int) -> nn.Module:
    h = cfg.MODEL.ROI_MASK_HEAD
    return MaskRCNNFPNFeatureExtractor(make_pooler(h), in_channels, h.CONV_LAYERS, h.DILATION,
                                       group_norm_factory(cfg) if h.USE_GN else None)


@ROI_MASK_PREDICTORS.register("MaskRCNNC4Predictor")
def _mask_c4_predictor(cfg, in_channels: int) -> nn.Module:
    return MaskRCNNC4Predictor(in_channels, cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS[-1], cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)


@ROI_MASK_PREDICTORS.register("MaskRCNNConv1x1Predictor")
def _mask_1x1_predictor(cfg, in_channels: int) -> nn.Module:
    return MaskRCNNConv1x1Predictor(in_channels, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)


def build_mask_head(cfg, in_channels: int, box_extractor: Optional[nn.Module] = None) -> ROIMaskHead:
    """The mask head; with SHARE_BOX_FEATURE_EXTRACTOR it reuses ``box_extractor`` (the same module)."""
    h = cfg.MODEL.ROI_MASK_HEAD
    if h.SHARE_BOX_FEATURE_EXTRACTOR and box_extractor is not None:
        extractor = box_extractor
    else:
        extractor = ROI_MASK_FEATURE_EXTRACTORS.get(h.FEATURE_EXTRACTOR)(cfg, in_channels)
    predictor = ROI_MASK_PREDICTORS.get(h.PREDICTOR)(cfg, extractor.out_channels)
    return ROIMaskHead(extractor, predictor)
