"""An independent float64 deformable-convolution reference for tests.

Written straight from the definition (maskrcnn-benchmark facts, section 2): for every output
pixel and kernel tap, the sample position is ``y_out*stride - pad + i*dil + dy``; the value is
bilinear interpolation of the zero-padded input, times the mask; the output is the sum over
taps and the group's input channels of weight * value. It shares no code with
``models.ops.deform_conv`` (explicit corner gathers here, ``grid_sample`` there).
"""

from __future__ import annotations

import torch


def _bilinear_zero_padded(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """img [C, H, W]; y, x [P] float64 positions -> [C, P] samples with zero padding."""
    c, h, w = img.shape
    y0, x0 = torch.floor(y), torch.floor(x)
    out = torch.zeros(c, y.numel(), dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            wy = (1 - (y - y0)) if dy == 0 else (y - y0)
            wx = (1 - (x - x0)) if dx == 0 else (x - x0)
            inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            yi = yy.clamp(0, h - 1).long()
            xi = xx.clamp(0, w - 1).long()
            vals = img[:, yi, xi]
            out += vals * (wy * wx * inside.double())
    return out


def deform_conv2d_reference(x, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                            mask=None) -> torch.Tensor:
    x, offset, weight = x.double(), offset.double(), weight.double()
    mask = mask.double() if mask is not None else None
    n, c, h, w = x.shape
    c_out, cg, kh, kw = weight.shape
    groups = c // cg
    k = kh * kw
    dg = offset.shape[1] // (2 * k)
    cdg = c // dg
    ho, wo = offset.shape[2], offset.shape[3]
    oy = torch.arange(ho, dtype=torch.float64).view(ho, 1).expand(ho, wo).reshape(-1)
    ox = torch.arange(wo, dtype=torch.float64).view(1, wo).expand(ho, wo).reshape(-1)
    out = torch.zeros(n, c_out, ho * wo, dtype=torch.float64)
    cog = c_out // groups
    for b in range(n):
        # columns[c, tap, pixel]: the modulated sample of channel c for each tap and output pixel
        cols = torch.zeros(c, k, ho * wo, dtype=torch.float64)
        for g in range(dg):
            for i in range(kh):
                for j in range(kw):
                    t = i * kw + j
                    dy = offset[b, g * 2 * k + 2 * t].reshape(-1)
                    dx = offset[b, g * 2 * k + 2 * t + 1].reshape(-1)
                    py = oy * stride[0] - padding[0] + i * dilation[0] + dy
                    px = ox * stride[1] - padding[1] + j * dilation[1] + dx
                    v = _bilinear_zero_padded(x[b, g * cdg:(g + 1) * cdg], py, px)
                    if mask is not None:
                        v = v * mask[b, g * k + t].reshape(-1)
                    cols[g * cdg:(g + 1) * cdg, t] = v
        for gi in range(groups):
            wg = weight[gi * cog:(gi + 1) * cog].reshape(cog, cg * k)
            out[b, gi * cog:(gi + 1) * cog] = wg @ cols[gi * cg:(gi + 1) * cg].reshape(cg * k, ho * wo)
    if bias is not None:
        out += bias.double().view(1, c_out, 1)
    return out.view(n, c_out, ho, wo)
