"""Upstream maskrcnn-benchmark's own detector modules, importable on CPU, as a test reference.

``../shared/third_party/maskrcnn-benchmark`` holds upstream's Python package without its compiled
extension. Importing it needs the shims its README lists; this module provides them:

- ``torch._six`` (gone from today's torch), ``apex.amp`` (identity decorators), ``cv2`` (only the
  keypoint head uses it), numpy's removed ``np.float`` / ``np.int`` / ``np.bool`` aliases;
- ``maskrcnn_benchmark._C``, the compiled extension, replaced by stand-ins written here from the
  semantics the README states (not from deformrt's code): ``nms`` as ``nms_cpu.cpp`` (sort by
  score, legacy +1 IoU, suppress when IoU >= threshold) and ``roi_align_forward`` as
  ``ROIAlign_cpu.cpp`` (aligned=False), both in float64 numpy, one ROI and one box at a time;
- the deformable-conv functions upstream's DCN modules call, replaced by deformrt's
  ``models.deform_conv2d`` (checked against a float64 reference in test_deform_conv.py): the
  comparisons here are about the heads and the postprocessing, not the DCN kernel.

:func:`upstream_detector` builds upstream's ``GeneralizedRCNN`` from a config file and loads a
state dict into it (deformrt's detector's, so both sides hold the same weights).
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "third_party" / "maskrcnn-benchmark"
UPSTREAM_CONFIGS = UPSTREAM / "configs"
_PRISTINE = None  # upstream's default config, before any test changed its global copy


def _nms_cpu(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    b = boxes.detach().double().numpy()
    order = np.argsort(-scores.detach().double().numpy(), kind="stable")
    areas = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        w = np.maximum(0.0, np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + 1)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            suppressed[rest[inter / (areas[i] + areas[rest] - inter) >= threshold]] = True
    return torch.as_tensor(np.array(keep, dtype=np.int64))


def _bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * feature[:, y_low, x_low] + hy * lx * feature[:, y_low, x_high]
            + ly * hx * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])


def _roi_align_cpu(features, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio):
    data = features.detach().double().numpy()
    out = np.zeros((rois.shape[0], data.shape[1], pooled_h, pooled_w))
    for r, roi in enumerate(rois.detach().double().numpy()):
        feature = data[int(roi[0])]
        x1, y1, x2, y2 = (v * spatial_scale for v in roi[1:])
        roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                acc = np.zeros(data.shape[1])
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc += _bilinear(feature, y, x)
                out[r, :, ph, pw] = acc / (grid_h * grid_w)
    return torch.from_numpy(out).to(features.dtype)


def _deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1, *_):
    from models.ops import deform_conv2d

    return deform_conv2d(input, offset, weight, None, stride=stride, padding=padding, dilation=dilation)


def _modulated_deform_conv(input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                           deformable_groups=1):
    from models.ops import deform_conv2d

    bias = bias if bias is not None and bias.numel() else None
    return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


def _install_shims() -> None:
    if "maskrcnn_benchmark._C" in sys.modules:
        return
    for alias, real in (("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, alias):
            setattr(np, alias, real)
    six = types.ModuleType("torch._six")
    six.PY3, six.string_classes, six.int_classes = True, (str, bytes), int
    sys.modules.setdefault("torch._six", six)
    apex = types.ModuleType("apex")
    amp = types.ModuleType("apex.amp")
    amp.float_function = amp.half_function = lambda f: f
    apex.amp = amp
    sys.modules.setdefault("apex", apex)
    sys.modules.setdefault("apex.amp", amp)
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    compiled = types.ModuleType("maskrcnn_benchmark._C")
    compiled.nms = _nms_cpu
    compiled.roi_align_forward = _roi_align_cpu
    sys.modules["maskrcnn_benchmark._C"] = compiled
    sys.path.insert(0, str(UPSTREAM))
    import maskrcnn_benchmark.layers.dcn.deform_conv_module as dcn_module

    dcn_module.deform_conv = _deform_conv
    dcn_module.modulated_deform_conv = _modulated_deform_conv


def require_upstream() -> None:
    """Skip the calling test (one line) when the upstream reference or yacs is missing."""
    if not (UPSTREAM / "maskrcnn_benchmark").is_dir():
        pytest.skip(f"upstream maskrcnn-benchmark reference not found at {UPSTREAM}")
    pytest.importorskip("yacs", reason="upstream's config needs yacs (pip install yacs)")
    _install_shims()


def upstream_cfg(config_file: str, opts=()):
    """Upstream's own config object for one of its config files (plus ``KEY VALUE`` opts)."""
    require_upstream()
    global _PRISTINE
    if _PRISTINE is None:
        from maskrcnn_benchmark.config import cfg as global_cfg

        _PRISTINE = global_cfg.clone()  # upstream_detector updates the global config
    cfg = _PRISTINE.clone()
    cfg.merge_from_file(str(UPSTREAM_CONFIGS / config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *[str(o) for o in opts]])
    return cfg


def upstream_detector(config_file: str, state_dict: dict, opts=()):
    """Upstream's GeneralizedRCNN for ``config_file`` in eval mode with ``state_dict`` loaded
    strictly (every key on both sides)."""
    cfg = upstream_cfg(config_file, opts)
    # make_layers.group_norm reads upstream's global cfg: give it this config's GN settings.
    from maskrcnn_benchmark.config import cfg as global_cfg
    from maskrcnn_benchmark.modeling.detector import build_detection_model

    global_cfg.defrost()
    global_cfg.merge_from_other_cfg(cfg)
    model = build_detection_model(cfg).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def run_upstream(model, images: torch.Tensor, image_sizes):
    """Upstream's results (list of BoxList) for a padded batch and its unpadded (h, w) sizes."""
    from maskrcnn_benchmark.structures.image_list import ImageList

    with torch.no_grad():
        return model(ImageList(images, [tuple(int(v) for v in s) for s in image_sizes]))
