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
from typing import Iterator, Optional

import torch
from torch import nn

from models.layers import DFConv2d


def calibrate_offsets(model: nn.Module, images: torch.Tensor, std_px: float = 2.0,
                      generator: Optional[torch.Generator] = None) -> list[float]:
    """Rescale each DCN offset conv of ``model`` (in place): its weights so that the
    input-dependent part of its offsets has a standard deviation of ``std_px`` pixels on
    ``images``, and a fresh N(0, 1) bias per channel (from ``generator``).

    One forward pass: each layer is rescaled before the next one runs, so later layers see the
    calibrated earlier ones. Returns each DCN layer's mean |offset| afterwards, in forward order.
    """
    if std_px <= 0:
        raise ValueError(f"std_px must be positive, got {std_px}")
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

    handles = [rescale(m) for m in model.modules() if isinstance(m, DFConv2d)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return means


@contextlib.contextmanager
def measure_offsets(model: nn.Module) -> Iterator[list[float]]:
    """Within the block, record each DCN layer's mean |offset| in pixels (offset channels only, not
    the mask) on every forward pass, in forward order, into the yielded list."""
    values: list[float] = []

    def probe(dcn: DFConv2d):
        def hook(conv: nn.Conv2d, inputs, output):
            values.append(float(output[:, :dcn.offset_channels].detach().abs().mean()))
        return dcn.offset.register_forward_hook(hook)

    handles = [probe(m) for m in model.modules() if isinstance(m, DFConv2d)]
    try:
        yield values
    finally:
        for h in handles:
            h.remove()
