"""The region proposal network: anchors, the RPN head and the RPN module, config-free.

Names follow upstream (``rpn.anchor_generator.cell_anchors.{i}``, ``rpn.head.conv``,
``rpn.head.cls_logits``, ``rpn.head.bbox_pred``), so ``state_dict()`` keys match upstream's
whole-detector checkpoints, which store the cell anchors as buffers. The builders at the bottom
read the config; :func:`models.detection_ops.rpn_proposals` holds the test-time postprocessing.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.detection_ops import RPNSettings, cell_anchors, grid_anchors, rpn_proposals
from models.registry import RPN_HEADS


class BufferList(nn.Module):
    """Tensors stored as buffers named ``0``, ``1``, ... (upstream's ``BufferList``)."""

    def __init__(self, tensors: Sequence[Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_buffer(str(i), t)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())


class AnchorGenerator(nn.Module):
    """Anchors of every feature level: ``sizes[i]`` (one size or a tuple of sizes) and the aspect
    ratios at ``strides[i]``. With one stride, every size belongs to that one level."""

    def __init__(self, sizes: Sequence, aspect_ratios: Sequence[float], strides: Sequence[int]):
        super().__init__()
        if len(strides) == 1:
            cells = [cell_anchors(strides[0], [float(s) for s in sizes], aspect_ratios)]
        else:
            if len(strides) != len(sizes):
                raise ValueError("AnchorGenerator: one anchor size (or tuple of sizes) per stride is needed")
            cells = [cell_anchors(stride, [float(x) for x in (size if isinstance(size, (tuple, list)) else (size,))],
                                  aspect_ratios) for stride, size in zip(strides, sizes)]
        self.strides = tuple(int(s) for s in strides)
        self.cell_anchors = BufferList(cells)

    def num_anchors_per_location(self) -> list[int]:
        return [len(c) for c in self.cell_anchors]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Per level, the [H*W*A, 4] anchors of that level's feature map (the same for every image)."""
        return [grid_anchors(cells, f.shape[-2], f.shape[-1], stride)
                for f, stride, cells in zip(features, self.strides, self.cell_anchors)]


class RPNHead(nn.Module):
    """Upstream's ``SingleConvRPNHead``: a shared 3x3 conv + ReLU, then 1x1 convs predicting one
    objectness logit and four box deltas per anchor, applied to every level."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for feature in features:
            t = F.relu(self.conv(feature))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


class RPN(nn.Module):
    """``anchor_generator`` + ``head``; ``forward`` returns per image (proposal boxes, objectness)."""

    def __init__(self, anchor_generator: AnchorGenerator, head: nn.Module, settings: RPNSettings):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.settings = settings

    def forward(self, features: Sequence[Tensor], image_sizes: Tensor, stages: dict | None = None):
        objectness, deltas = self.head(features)
        anchors = self.anchor_generator(features)
        if stages is not None:
            stages["rpn_anchors"] = anchors
        return rpn_proposals(anchors, objectness, deltas, image_sizes, self.settings, stages)


@RPN_HEADS.register("SingleConvRPNHead")
def _single_conv_rpn_head(cfg, in_channels: int, num_anchors: int) -> nn.Module:
    return RPNHead(in_channels, num_anchors)


def rpn_settings(cfg) -> RPNSettings:
    r = cfg.MODEL.RPN
    return RPNSettings(pre_nms_top_n=r.PRE_NMS_TOP_N_TEST, post_nms_top_n=r.POST_NMS_TOP_N_TEST,
                       fpn_post_nms_top_n=r.FPN_POST_NMS_TOP_N_TEST, nms_thresh=r.NMS_THRESH, min_size=r.MIN_SIZE,
                       multi_level=len(r.ANCHOR_STRIDE) > 1)


def build_rpn(cfg, in_channels: int) -> RPN:
    """The RPN of a (non-RetinaNet) config: anchors from MODEL.RPN, head from the RPN_HEADS registry."""
    r = cfg.MODEL.RPN
    anchors = AnchorGenerator(r.ANCHOR_SIZES, r.ASPECT_RATIOS, r.ANCHOR_STRIDE)
    head = RPN_HEADS.get(r.RPN_HEAD)(cfg, in_channels, anchors.num_anchors_per_location()[0])
    return RPN(anchors, head, rpn_settings(cfg))
