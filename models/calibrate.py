"""Give an untrained DCN backbone the offset scale of a trained one.

Upstream initialises each offset conv with kaiming_uniform(a=1). In an untrained network whose
FrozenBN layers are identities, activations grow through the residual blocks, so those offset
convs predict offsets of tens to hundreds of pixels: bilinear sampling there is chaotic (fp32 and
float64 runs of the same model disagree by percents), unlike a trained DCN, whose offsets are a
few pixels. :func:`calibrate_offsets` rescales every offset conv so its offsets have a chosen
standard deviation on given images. It is for demos, tests and benchmarks that need realistic
deformable sampling without a trained checkpoint, never for real weights.

:func:`measure_offsets` reports the offset scale a model actually has on given inputs, which is how
the evaluation layer explains an ill-conditioned comparison.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from models.layers import DFConv2d

OFFSET_STD_PX = 2.0  # the offset scale of a trained DCN backbone (a few pixels)


@contextlib.contextmanager
def _offset_hooks(model: nn.Module, register: Callable[[DFConv2d], object]) -> Iterator[None]:
    """Within the block, the forward hook ``register(dcn)`` puts on each DCN layer's offset conv."""
    handles = [register(m) for m in model.modules() if isinstance(m, DFConv2d)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _offset_rescaling(model: nn.Module, std_px: float, generator: Optional[torch.Generator]) -> Iterator[list[float]]:
    """Within the block, every forward pass through ``model``'s DCN layers rescales their offset
    convs as :func:`calibrate_offsets` describes; the yielded list receives each layer's mean
    |offset| afterwards, in forward order."""
    if not 0 < std_px < math.inf:  # nan passes a `<= 0` test and would scale every offset weight to nan
        raise ValueError(f"std_px must be positive and finite, got {std_px}")
    means: list[float] = []

    def rescale(dcn: DFConv2d):
        def hook(conv: nn.Conv2d, inputs, output):
            with torch.no_grad():
                std = float((output - conv.bias.view(1, -1, 1, 1))[:, :dcn.offset_channels].std())
                conv.weight.mul_(std_px / max(std, 1e-12))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator, dtype=conv.bias.dtype))
                new = conv._conv_forward(inputs[0], conv.weight, conv.bias)  # not conv(): no hook recursion
            means.append(float(new[:, :dcn.offset_channels].abs().mean()))
            return new
        return dcn.offset.register_forward_hook(hook)

    with _offset_hooks(model, rescale):
        yield means


def calibrate_offsets(model: nn.Module, images: torch.Tensor, std_px: float = OFFSET_STD_PX,
                      generator: Optional[torch.Generator] = None) -> list[float]:
    """Rescale each DCN offset conv of ``model`` (in place): its weights so that the
    input-dependent part of its offsets has a standard deviation of ``std_px`` pixels on
    ``images``, and a fresh N(0, 1) bias per channel (from ``generator``).

    One forward pass: each layer is rescaled before the next one runs, so later layers see the
    calibrated earlier ones. Returns each DCN layer's mean |offset| afterwards, in forward order.
    """
    with _offset_rescaling(model, std_px, generator) as means, torch.no_grad():
        model(images)
    return means


# Output scale each prediction layer of an untrained detector is given (std of the input-dependent
# part, then the bias): moderate logits so that scores spread over (0, 1) without saturating, and
# box deltas of a fraction of the reference box.
_HEAD_TARGETS = {
    "rpn.head.cls_logits": (2.0, 0.0),
    "rpn.head.bbox_pred": (0.3, 0.0),
    "roi_heads.box.predictor.cls_score": (2.0, 0.0),
    "roi_heads.box.predictor.bbox_pred": (1.0, 0.0),
    "roi_heads.mask.predictor.mask_fcn_logits": (2.0, 0.0),
}
_RETINANET_TARGETS = {"rpn.head.cls_logits": (1.5, -2.5), "rpn.head.bbox_pred": (1.0, 0.0)}


def calibrate_detector(model: nn.Module, images: torch.Tensor, image_sizes: torch.Tensor,
                       generator: Optional[torch.Generator] = None, std_px: float = OFFSET_STD_PX) -> list[float]:
    """Give an untrained detector (:func:`models.detector.build_detector`) a trained one's output
    scales, in place, so that it produces proposals, detections and masks worth comparing: the
    backbone's DCN offsets as :func:`calibrate_offsets` does (``std_px``), then each prediction
    layer's weights rescaled on ``images`` (in forward order, each before the next one runs) to the
    spread in ``_HEAD_TARGETS``. Returns each DCN layer's mean |offset| (empty without DCN). For
    demos, tests and benchmarks only, never for real weights."""
    targets = _RETINANET_TARGETS if getattr(model, "kind", "") == "retinanet" else _HEAD_TARGETS
    modules = dict(model.named_modules())
    done: set[str] = set()

    def rescale(name: str, std_target: float, bias: float):
        def hook(layer: nn.Module, inputs, output):
            if name in done:
                return None
            done.add(name)
            with torch.no_grad():
                std = float((output - layer.bias.view(1, -1, *([1] * (output.dim() - 2)))).std())
                layer.weight.mul_(std_target / max(std, 1e-12))
                layer.bias.fill_(bias)
                return layer.forward(*inputs)
        return modules[name].register_forward_hook(hook)

    # One pass: the backbone's offsets are rescaled as it runs (as calibrate_offsets does on the
    # same images), so the heads already see the calibrated backbone's features.
    with _offset_rescaling(model.backbone, std_px, generator) as means:
        handles = [rescale(name, *t) for name, t in targets.items() if name in modules]
        try:
            with torch.no_grad():
                model(images, image_sizes)
        finally:
            for h in handles:
                h.remove()
    return means


CALIBRATION_SEED = 0
DETECTOR_CALIBRATION_SHAPE = (256, 320)


def calibration_images(shape: tuple[int, int] = DETECTOR_CALIBRATION_SHAPE,
                       seed: int = CALIBRATION_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch :func:`calibrate_synthetic_detector` uses: two random images of ``shape``
    (pixel-like values) whose unpadded sizes differ (256x320: 250x300 and 256x288)."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    images = torch.rand(2, 3, h, w, generator=g) * 255 - 115
    return images, torch.tensor([[h - 6, w - 20], [h, w - 32]])


def calibrate_synthetic_detector(model: nn.Module, seed: int = CALIBRATION_SEED, std_px: float = OFFSET_STD_PX,
                                 shape: tuple[int, int] = DETECTOR_CALIBRATION_SHAPE) -> list[float]:
    """:func:`calibrate_detector` on :func:`calibration_images`: deterministic, so that an export
    of a seeded random detector can be rebuilt exactly from its seed (and ``deformrt
    synthetic-checkpoint --detector`` saves the same weights). Returns the DCN layers' mean |offset|."""
    images, sizes = calibration_images(shape, seed=seed)
    return calibrate_detector(model, images, sizes, torch.Generator().manual_seed(seed), std_px)


@contextlib.contextmanager
def measure_offsets(model: nn.Module) -> Iterator[list[float]]:
    """Within the block, record each DCN layer's mean |offset| in pixels (offset channels only, not
    the mask) on every forward pass, in forward order, into the yielded list."""
    values: list[float] = []

    def probe(dcn: DFConv2d):
        def hook(conv: nn.Conv2d, inputs, output):
            values.append(float(output[:, :dcn.offset_channels].detach().abs().mean()))
        return dcn.offset.register_forward_hook(hook)

    with _offset_hooks(model, probe):
        yield values
