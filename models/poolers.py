"""ROI pooling over one or several feature maps (upstream's ``Pooler``), config-free.

No parameters: a pooler holds its output size, the scale of each pooled level and the ROIAlign
sampling ratio. With several levels each ROI is pooled from the level :func:`models.detection_ops.map_levels`
assigns it (FPN's heuristic); with one level, from that level.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from models.detection_ops import map_levels, pooler_levels, roi_align


def rois_with_batch_index(boxes: Sequence[Tensor]) -> Tensor:
    """[R, 5] ROIs (batch index, x1, y1, x2, y2) from per-image boxes, as upstream's
    ``convert_to_roi_format``."""
    parts = [torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device), b], 1)
             for i, b in enumerate(boxes)]
    return torch.cat(parts, 0)


class Pooler(nn.Module):
    """ROIAlign of boxes on feature maps. ``scales[i]`` is the scale of ``features[i]``
    (1/stride); ``sampling_ratio <= 0`` means upstream's adaptive grid."""

    def __init__(self, output_size: int, scales: Sequence[float], sampling_ratio: int):
        super().__init__()
        self.output_size = (int(output_size), int(output_size))
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio = int(sampling_ratio)
        self.k_min, self.k_max = pooler_levels(self.scales)

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """Pooled features [R, C, S, S] of the per-image ``boxes`` (in image order)."""
        rois = rois_with_batch_index(boxes)
        if len(self.scales) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = map_levels(rois[:, 1:], self.k_min, self.k_max)
        result = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
        for level, scale in enumerate(self.scales):
            index = torch.nonzero(levels == level).squeeze(1)
            result[index] = roi_align(features[level], rois[index], self.output_size, scale, self.sampling_ratio)
        return result

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, scales={self.scales}, sampling_ratio={self.sampling_ratio}"
