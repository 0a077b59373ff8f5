"""maskrcnn-benchmark's ResNet / ResNeXt body, config-free.

Module and parameter names follow upstream exactly (``stem.conv1``, ``stem.bn1``,
``layer{i}.{j}.downsample.{0,1}``, ``conv1``/``bn1`` ... ``conv3``/``bn3``), so ``state_dict()``
keys and shapes match upstream's checkpoints. ``models.backbone`` turns a config into these
modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import DFConv2d, FrozenBatchNorm2d, NormFactory, kaiming_conv


@dataclass(frozen=True)
class DeformSpec:
    """How a block's 3x3 conv is made deformable: DCN v1, or modulated v2, and its offset groups."""

    modulated: bool = False
    deformable_groups: int = 1


class BlockFactory(Protocol):
    """Builds one residual block: ``(in, bottleneck, out, stride, *, dcn) -> nn.Module``."""

    def __call__(self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int, *,
                 dcn: Optional[DeformSpec]) -> nn.Module: ...


class Stem(nn.Module):
    """``conv1`` 7x7 stride 2 (3 -> ``out_channels``, no bias), ``bn1 = norm(out_channels)``, ReLU,
    then a 3x3 stride-2 max-pool (functional: no parameters). Output stride 4."""

    def __init__(self, out_channels: int = 64, norm: NormFactory = FrozenBatchNorm2d):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = kaiming_conv(3, out_channels, 7, stride=2)
        self.bn1 = norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """The ResNet / ResNeXt bottleneck: 1x1 -> 3x3 (grouped, optionally deformable) -> 1x1, plus
    the identity or a projection (``downsample``: 1x1 conv with the block's stride, then norm),
    which exists exactly when ``in_channels != out_channels`` and is registered first.

    ``stride_in_1x1`` puts the stride on ``conv1`` (MSRA C2 weights) instead of ``conv2``
    (torchvision, FAIR ResNeXt and GN weights). ``dcn`` turns ``conv2`` into a
    :class:`~models.layers.DFConv2d`. Convs have no bias; norms are ``bn1``, ``bn2``, ``bn3``.
    """

    def __init__(self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int = 1, *,
                 norm: NormFactory = FrozenBatchNorm2d, num_groups: int = 1, stride_in_1x1: bool = True,
                 dcn: Optional[DeformSpec] = None):
        super().__init__()
        if in_channels != out_channels:
            self.downsample = nn.Sequential(kaiming_conv(in_channels, out_channels, 1, stride=stride),
                                            norm(out_channels))
        else:
            self.downsample = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = kaiming_conv(in_channels, bottleneck_channels, 1, stride=stride_1x1)
        self.bn1 = norm(bottleneck_channels)
        if dcn is None:
            self.conv2 = kaiming_conv(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3,
                                      groups=num_groups)
        else:
            self.conv2 = DFConv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, groups=num_groups,
                                  deformable_groups=dcn.deformable_groups, modulated=dcn.modulated)
        self.bn2 = norm(bottleneck_channels)
        self.conv3 = kaiming_conv(bottleneck_channels, out_channels, 1)
        self.bn3 = norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu_(out + identity)


class ResNet(nn.Module):
    """``stem`` followed by stages ``layer1`` .. ``layerN`` (res2 .. res{N+1}).

    Stage ``i`` (1-based) has ``block_counts[i-1]`` blocks, ``res2_out_channels * 2^(i-1)`` output
    channels and ``res2_bottleneck_channels * 2^(i-1)`` bottleneck channels (NUM_GROUPS *
    WIDTH_PER_GROUP for res2); its first block has stride 1 (stage 1) or 2, the rest stride 1.
    Stage 1's input width is ``stem.out_channels``. ``stage_dcn[i-1]`` (None = plain) applies to
    every block of stage ``i``. ``forward`` returns the list of the outputs of the stages whose
    ``return_features`` flag is set, in order.
    """

    def __init__(self, stem: nn.Module, block: BlockFactory, block_counts: Sequence[int],
                 return_features: Sequence[bool], *, res2_out_channels: int = 256, res2_bottleneck_channels: int = 64,
                 stage_dcn: Optional[Sequence[Optional[DeformSpec]]] = None):
        super().__init__()
        stages = len(block_counts)
        stage_dcn = [None] * stages if stage_dcn is None else list(stage_dcn)
        if len(return_features) != stages or len(stage_dcn) != stages:
            raise ValueError("ResNet: block_counts, return_features and stage_dcn need one entry per stage")
        self.stem = stem
        self.stage_names = tuple(f"layer{i}" for i in range(1, stages + 1))
        self.return_features = tuple(bool(r) for r in return_features)
        in_channels = stem.out_channels
        for i, (name, count, dcn) in enumerate(zip(self.stage_names, block_counts, stage_dcn)):
            out_channels = res2_out_channels * 2 ** i
            bottleneck = res2_bottleneck_channels * 2 ** i
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_channels, bottleneck, out_channels, stride, dcn=dcn))
                in_channels = out_channels
            self.add_module(name, nn.Sequential(*blocks))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outputs = []
        for name, keep in zip(self.stage_names, self.return_features):
            x = self._modules[name](x)
            if keep:
                outputs.append(x)
        return outputs

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients for the first ``freeze_at`` parts: 0 = stem, i = ``layer{i}``.

        ``freeze_at <= 0`` freezes nothing (upstream's FREEZE_CONV_BODY_AT semantics).
        """
        parts = [self.stem] + [self._modules[n] for n in self.stage_names]
        if freeze_at > len(parts):
            raise ValueError(f"ResNet.freeze: {freeze_at} > {len(parts)} parts (stem and {len(parts) - 1} stages)")
        for part in parts[:max(0, freeze_at)]:
            for p in part.parameters():
                p.requires_grad_(False)
