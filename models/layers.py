"""Config-free building blocks shared by the ResNet body and the FPN.

- :class:`FrozenBatchNorm2d`: maskrcnn-benchmark's affine-only batch norm (four buffers, **no eps**).
- :func:`group_norm`: ``nn.GroupNorm`` sized like upstream's ``group_norm`` helper.
- :class:`DFConv2d`: a deformable 3x3 convolution laid out like upstream's ``DFConv2d`` (children
  ``offset``, a plain conv with bias that predicts offsets (and the mask), and ``conv``, which holds
  the deformable kernel's ``weight``, without bias).
- :func:`conv_with_kaiming_uniform`: upstream's FPN conv factory (optional GN and ReLU).

A *norm factory* is any callable ``channels -> nn.Module`` (``FrozenBatchNorm2d`` itself, or
``functools.partial(group_norm, ...)``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from models.ops import deform_conv2d

NormFactory = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all stored as buffers.

    ``y = x * scale + shift`` with ``scale = weight / sqrt(running_var)`` (no eps, as upstream)
    and ``shift = bias - running_mean * scale``, computed in the input's dtype. Buffers are
    registered in upstream's order (weight, bias, running_mean, running_var) and initialised to
    the identity (1, 0, 0, 1).
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight.to(x.dtype) * self.running_var.to(x.dtype).rsqrt()
        shift = self.bias.to(x.dtype) - self.running_mean.to(x.dtype) * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return str(self.num_features)


def group_norm(channels: int, *, dim_per_gp: int, num_groups: int, eps: float) -> nn.GroupNorm:
    """``nn.GroupNorm`` with ``num_groups`` groups, or ``channels / dim_per_gp`` when that is > 0.

    Exactly one of ``dim_per_gp`` and ``num_groups`` must be -1, and the group count must divide
    ``channels`` (``models.config`` checks both for user configs; here they are invariants).
    """
    if (dim_per_gp == -1) == (num_groups == -1):
        raise ValueError(f"group_norm: exactly one of dim_per_gp={dim_per_gp} and num_groups={num_groups} must be -1")
    groups = channels // dim_per_gp if dim_per_gp > 0 else num_groups
    if groups <= 0 or channels % groups != 0 or (dim_per_gp > 0 and channels % dim_per_gp != 0):
        raise ValueError(f"group_norm: {channels} channels do not split into groups "
                         f"(dim_per_gp={dim_per_gp}, num_groups={num_groups})")
    return nn.GroupNorm(groups, channels, eps=eps, affine=True)


class DeformConv(nn.Module):
    """The deformable kernel of :class:`DFConv2d`: only ``weight`` ``[C_out, C_in/groups, k, k]``.

    ``forward(x, offset, mask=None)`` runs ``models.ops.deform_conv2d``; the offset (and mask)
    layout is torchvision's, the deformable group count is inferred from ``offset``'s channels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, groups: int):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConv: channels {in_channels}->{out_channels} not divisible by groups {groups}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        # Upstream's DeformConv init: uniform in +-1/sqrt(in_channels * k * k).
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return deform_conv2d(x, offset, self.weight, None, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


class DFConv2d(nn.Module):
    """Deformable convolution (DCN v1, or modulated v2) with upstream's parameter layout.

    ``offset`` is an ``nn.Conv2d`` (same kernel, stride, padding and dilation as the deformable
    conv, groups 1, with bias; kaiming-uniform a=1 weights and zero bias, as upstream) predicting
    ``deformable_groups * 2 * k * k`` offset channels, plus ``deformable_groups * k * k`` mask
    channels when ``modulated``. The split: offset = the first ``dg*2*k*k`` channels, mask =
    sigmoid of the last ``dg*k*k`` (upstream's hard-coded [:18] / [-9:] is this rule for dg=1).
    Padding is ``dilation * (k - 1) // 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, deformable_groups: int = 1, modulated: bool = False):
        super().__init__()
        if deformable_groups < 1 or in_channels % deformable_groups:
            raise ValueError(f"DFConv2d: {in_channels} input channels not divisible by "
                             f"deformable_groups {deformable_groups}")
        taps = kernel_size * kernel_size
        padding = dilation * (kernel_size - 1) // 2
        self.modulated = modulated
        self.offset_channels = deformable_groups * 2 * taps
        mask_channels = deformable_groups * taps if modulated else 0
        self.offset = nn.Conv2d(in_channels, self.offset_channels + mask_channels, kernel_size, stride=stride,
                                padding=padding, dilation=dilation, bias=True)
        nn.init.kaiming_uniform_(self.offset.weight, a=1)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)

    def forward(self, x: Tensor) -> Tensor:
        predicted = self.offset(x)
        if not self.modulated:
            return self.conv(x, predicted)
        offset = predicted[:, : self.offset_channels]
        mask = predicted[:, self.offset_channels:].sigmoid()
        return self.conv(x, offset, mask)


def conv_with_kaiming_uniform(in_channels: int, out_channels: int, kernel_size: int, *,
                              norm: Optional[NormFactory] = None, relu: bool = False) -> nn.Module:
    """Upstream's FPN conv: stride 1, 'same' padding, kaiming-uniform (a=1) weight.

    Without ``norm`` the conv has a (zero-initialised) bias; with ``norm`` it has none and is
    followed by ``norm(out_channels)``. ``relu`` appends an ``nn.ReLU``. Anything beyond the bare
    conv is an ``nn.Sequential`` (conv is child ``0``, the norm ``1``), as upstream.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=norm is None)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    parts: list[nn.Module] = [conv]
    if norm is not None:
        parts.append(norm(out_channels))
    if relu:
        parts.append(nn.ReLU(inplace=True))
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def kaiming_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free conv with 'same' padding and upstream's kaiming-uniform (a=1) init."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                     groups=groups, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return conv


__all__ = ["DFConv2d", "DeformConv", "FrozenBatchNorm2d", "NormFactory", "conv_with_kaiming_uniform", "group_norm",
           "kaiming_conv"]
