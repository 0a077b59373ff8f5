"""maskrcnn-benchmark's feature pyramid network and its extra top levels, config-free.

Children are named like upstream (``fpn_inner{i}``, ``fpn_layer{i}``, ``top_blocks.p6``/``p7``)
so ``state_dict()`` keys match upstream checkpoints. Top-down upsampling is nearest-neighbour by
``scale_factor=2`` as upstream, which is why FPN inputs must be multiples of 32.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import conv_with_kaiming_uniform

ConvBlock = Callable[[int, int, int], nn.Module]


class LastLevelMaxPool(nn.Module):
    """P6 = P5 subsampled by 2 (max-pool, kernel 1, stride 2). No parameters."""

    def forward(self, c5: Tensor, p5: Tensor) -> list[Tensor]:
        return [F.max_pool2d(p5, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """RetinaNet's P6 = p6(C5 or P5), P7 = p7(relu(P6)): 3x3 stride-2 convs with bias.

    P6 is computed from P5 when ``in_channels == out_channels``, else from C5 (upstream's rule).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.use_p5 = in_channels == out_channels

    def forward(self, c5: Tensor, p5: Tensor) -> list[Tensor]:
        p6 = self.p6(p5 if self.use_p5 else c5)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    """Lateral 1x1 convs ``fpn_inner{i}`` and 3x3 output convs ``fpn_layer{i}``, i = 1.. over
    ``in_channels_list``; a 0 entry skips that level (RetinaNet starts at ``fpn_inner2``).

    ``forward(features)`` takes the body's outputs (one per ``in_channels_list`` entry, highest
    resolution first) and returns a tuple, highest resolution first: one output per non-skipped
    level, then ``top_blocks(features[-1], last output)``'s outputs.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int,
                 conv_block: ConvBlock = conv_with_kaiming_uniform, top_blocks: Optional[nn.Module] = None):
        super().__init__()
        self.levels: list[tuple[int, str, str]] = []  # (index into features, inner name, layer name)
        for index, in_channels in enumerate(in_channels_list):
            if in_channels == 0:
                continue
            inner, layer = f"fpn_inner{index + 1}", f"fpn_layer{index + 1}"
            self.add_module(inner, conv_block(in_channels, out_channels, 1))
            self.add_module(layer, conv_block(out_channels, out_channels, 3))
            self.levels.append((index, inner, layer))
        if not self.levels:
            raise ValueError("FPN: in_channels_list has no non-zero entry")
        self.top_blocks = top_blocks

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, ...]:
        index, inner, layer = self.levels[-1]
        last_inner = self._modules[inner](features[index])
        results = [self._modules[layer](last_inner)]
        for index, inner, layer in reversed(self.levels[:-1]):
            top_down = F.interpolate(last_inner, scale_factor=2, mode="nearest")
            last_inner = self._modules[inner](features[index]) + top_down
            results.insert(0, self._modules[layer](last_inner))
        if self.top_blocks is not None:
            results.extend(self.top_blocks(features[-1], results[-1]))
        return tuple(results)
