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


def relative_rms_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """RMS of (y - ref) over the RMS of ref, in float64."""
    err = y.double().cpu() - ref.double().cpu()
    return (err.pow(2).mean().sqrt() / ref.double().cpu().pow(2).mean().sqrt()).item()


# The fp16 criterion (dcn-performance.md): a DCN result's RMS error at most this many times a dense fp16
# conv's on the same data. The tensor-core kernel rounds the sampled operand once more than a dense conv
# does (about 1.41x); the tiled kernel keeps fp32 until the output (about 1.0x).
FP16_RMS_RATIO = 1.6


def dense_fp16_rms_error(x16, w16, bias16, stride, padding, dilation, groups, dense16=None) -> float:
    """Relative RMS error of a dense fp16 convolution of ``x16`` and ``w16`` (same stride, padding,
    dilation and groups) as a tensor-core fp16 conv computes it: products of fp16 values, fp32
    accumulation, one rounding of the output to fp16. ``dense16`` is that result when the caller has it
    (cuDNN on a GPU); else it is computed here on the CPU in float32 and rounded. Its error is against
    the float64 conv2d of the same inputs."""
    import torch.nn.functional as F

    b64 = None if bias16 is None else bias16.double().cpu()
    dense64 = F.conv2d(x16.double().cpu(), w16.double().cpu(), b64, stride, padding, dilation, groups)
    if dense16 is None:
        b32 = None if bias16 is None else bias16.float().cpu()
        dense16 = F.conv2d(x16.float().cpu(), w16.float().cpu(), b32, stride, padding, dilation, groups).half()
    return relative_rms_error(dense16, dense64)


def fp16_error_ratio(y, ref, x16, w16, bias16, stride, padding, dilation, groups, dense16=None) -> float:
    """The fp16 accuracy figure of a DCN result ``y`` (exact float64 result ``ref`` of the same fp16
    inputs): its relative RMS error divided by that of a dense fp16 convolution on the same data
    (:func:`dense_fp16_rms_error`). A result that is exact then rounded once scores about 1.0; rounding
    the sampled operand to fp16 as well adds a second, independent rounding: about 1.41.
    """
    return relative_rms_error(y, ref) / dense_fp16_rms_error(x16, w16, bias16, stride, padding, dilation, groups,
                                                             dense16)
