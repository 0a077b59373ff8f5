"""The two data-dependent steps of the detector as fixed-shape torch ops with ONNX translations.

Everything else in the exported detector is traced from :mod:`models.detection_ops` as it is.
These two are what ONNX has operators for and plain tensor code cannot express at a fixed size:

``deformrt_export::nms_keep(boxes [G, K, 4], scores [G, K], iou_threshold, max_output, score_threshold)``
    -> keep [G, K] (bool): group by group (a group is one image's level, or one image's class,
    folded into the first dimension), which boxes greedy NMS keeps among those scoring above
    ``score_threshold``, at most ``max_output`` per group. Eager: :func:`models.detection_ops.nms`.
    ONNX: ``NonMaxSuppression`` (``center_point_box=0``) on the boxes with x2 and y2 shifted by +1,
    which makes its IoU upstream's legacy one exactly, then ``ScatterND`` of the selected
    (group, box) pairs into a zero mask, so the output keeps its fixed shape.
``deformrt_export::roi_align(features [N, C, H, W], rois [R, 4], batch_indices [R], output_size, spatial_scale, sampling_ratio)``
    -> [R, C, S, S]. Eager: :func:`models.detection_ops.roi_align` (``aligned=False``). ONNX:
    ``RoiAlign`` (opset 16 semantics) with ``coordinate_transformation_mode="output_half_pixel"``
    (upstream's aligned=False) and ``sampling_ratio`` written explicitly, because TensorRT's parser
    assumes ``half_pixel`` and a sampling ratio of 1 where the attributes are absent.

:data:`TRANSLATIONS` is the ``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.detection_ops import nms, roi_align

NAMESPACE = "deformrt_export"


@torch.library.custom_op(f"{NAMESPACE}::nms_keep", mutates_args=())
def nms_keep(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int, score_threshold: float) -> Tensor:
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for g in range(scores.shape[0]):
        candidates = torch.nonzero(scores[g] > score_threshold).squeeze(1)
        kept = candidates[nms(boxes[g, candidates], scores[g, candidates], iou_threshold)][:max_output]
        keep[g, kept] = True
    return keep


@nms_keep.register_fake
def _nms_keep_fake(boxes, scores, iou_threshold, max_output, score_threshold):
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


@torch.library.custom_op(f"{NAMESPACE}::roi_align", mutates_args=())
def roi_align_op(features: Tensor, rois: Tensor, batch_indices: Tensor, output_size: int, spatial_scale: float,
                 sampling_ratio: int) -> Tensor:
    combined = torch.cat([batch_indices.to(rois.dtype)[:, None], rois], 1)
    return roi_align(features, combined, (output_size, output_size), spatial_scale, sampling_ratio)


@roi_align_op.register_fake
def _roi_align_fake(features, rois, batch_indices, output_size, spatial_scale, sampling_ratio):
    return features.new_empty((rois.shape[0], features.shape[1], output_size, output_size))


def _nms_keep_translation(boxes, scores, iou_threshold: float, max_output: int, score_threshold: float):
    from onnxscript import INT64, opset19 as op

    x1y1 = op.Slice(boxes, op.Constant(value_ints=[0]), op.Constant(value_ints=[2]), op.Constant(value_ints=[2]))
    x2y2 = op.Slice(boxes, op.Constant(value_ints=[2]), op.Constant(value_ints=[4]), op.Constant(value_ints=[2]))
    shifted = op.Concat(x1y1, op.Add(x2y2, op.Constant(value_float=1.0)), axis=2)  # legacy IoU: widths + 1
    selected = op.NonMaxSuppression(
        shifted, op.Unsqueeze(scores, op.Constant(value_ints=[1])), op.Constant(value_ints=[max_output]),
        op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[score_threshold]), center_point_box=0)
    pairs = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # (group, box); class is always 0
    ones = op.Expand(op.Constant(value_floats=[1.0]), op.Slice(op.Shape(selected), op.Constant(value_ints=[0]),
                                                                 op.Constant(value_ints=[1])))
    zeros = op.ConstantOfShape(op.Shape(scores))  # float32 zeros [G, K]
    mask = op.ScatterND(zeros, op.Cast(pairs, to=INT64.dtype), ones)
    return op.Greater(mask, op.Constant(value_float=0.5))


def _roi_align_translation(features, rois, batch_indices, output_size: int, spatial_scale: float, sampling_ratio: int):
    from onnxscript import INT64, opset19 as op

    return op.RoiAlign(features, rois, op.Cast(batch_indices, to=INT64.dtype), mode="avg",
                       output_height=output_size, output_width=output_size, sampling_ratio=sampling_ratio,
                       spatial_scale=spatial_scale, coordinate_transformation_mode="output_half_pixel")


TRANSLATIONS = {
    torch.ops.deformrt_export.nms_keep.default: _nms_keep_translation,
    torch.ops.deformrt_export.roi_align.default: _roi_align_translation,
}
