"""Deformable convolution (DCN v1 and modulated v2) as a PyTorch custom op.

``deform_conv2d`` has torchvision's signature and semantics:

- groups = C_in / weight.shape[1]; deformable (offset) groups = offset.shape[1] / (2 * kH * kW);
- offsets are (dy, dx) interleaved per kernel point: channel g*2K + 2k + d, d=0 for dy;
- sampling is bilinear over a zero-padded image (a corner outside the image counts 0);
- a mask (modulated DCN, already sigmoid-ed) multiplies each sampled value.

It is registered as ``torch.ops.deformrt.deform_conv2d`` with a fake (meta) implementation, so
``torch.export`` and the ONNX exporter trace it as one node.

Backends. The op checks the shapes once (``check_shapes``), then on CPU runs
``deform_conv2d_portable``: per chunk of output rows, one fused, vectorised gather-and-blend of
the four bilinear corners (``embedding_bag`` over channels-last rows) and one matmul per
convolution group, with the column buffer bounded by ``CHUNK_ELEMENTS``. On CUDA it uses, in order
of preference, a registered CUDA backend (deformrt's own kernels register as ``"deformrt"``;
torchvision's as ``"torchvision"`` when importable), else the portable one. ``use_backend(name)``
forces one.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Upper bound on the elements of one chunk's sampled-column buffer (N*C*K*rows*W_out).
# 2**23 fp32 elements = 32 MiB; peak extra memory is a small multiple of this.
CHUNK_ELEMENTS = 1 << 23

_Pair = tuple[int, int]


def _pair(v: int | Sequence[int], name: str) -> _Pair:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def out_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


def check_shapes(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
                 stride: _Pair, padding: _Pair, dilation: _Pair) -> None:
    """Raise ValueError naming the problem unless the arguments make one deformable convolution."""
    if input.dim() != 4 or weight.dim() != 4 or offset.dim() != 4:
        raise ValueError("deform_conv2d: input, offset and weight must be 4-D (NCHW / OIHW)")
    n, c, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_per_group <= 0 or c % c_per_group != 0:
        raise ValueError(f"deform_conv2d: input channels {c} not divisible by weight.shape[1] = {c_per_group}")
    groups = c // c_per_group
    if c_out % groups != 0:
        raise ValueError(f"deform_conv2d: output channels {c_out} not divisible by groups {groups}")
    k = kh * kw
    if offset.shape[1] % (2 * k) != 0 or offset.shape[1] == 0:
        raise ValueError(f"deform_conv2d: offset has {offset.shape[1]} channels, expected a multiple of 2*kH*kW = {2 * k}")
    dg = offset.shape[1] // (2 * k)
    if c % dg != 0:
        raise ValueError(f"deform_conv2d: input channels {c} not divisible by offset groups {dg}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"deform_conv2d: bad stride {stride}, padding {padding} or dilation {dilation}")
    ho = out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = out_size(w, kw, stride[1], padding[1], dilation[1])
    if ho <= 0 or wo <= 0:
        raise ValueError(f"deform_conv2d: input {h}x{w} is too small for this kernel, padding and dilation")
    if tuple(offset.shape) != (n, 2 * dg * k, ho, wo):
        raise ValueError(f"deform_conv2d: offset shape {tuple(offset.shape)}, expected {(n, 2 * dg * k, ho, wo)}")
    if mask is not None and tuple(mask.shape) != (n, dg * k, ho, wo):
        raise ValueError(f"deform_conv2d: mask shape {tuple(mask.shape)}, expected {(n, dg * k, ho, wo)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"deform_conv2d: bias shape {tuple(bias.shape)}, expected {(c_out,)}")


def deform_conv2d_portable(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                           mask: Optional[Tensor], stride: _Pair, padding: _Pair, dilation: _Pair) -> Tensor:
    """The portable implementation (any device): a fused gather-and-blend, then a matmul per group.

    The input is viewed channels-last as a table of rows (n, y, x, offset group) -> channels. Each
    sample (output pixel, tap, offset group) is one ``embedding_bag`` of its four bilinear corners,
    weighted by the bilinear weights times the mask, with corners outside the image weighted 0 (a
    zero-padded image). That gives the column matrix [pixels, taps * channels] of a chunk of output
    rows, and one matmul per convolution group with the weight as [taps * channels, C_out / groups]
    gives the output. The column buffer holds at most about ``CHUNK_ELEMENTS`` elements.
    Arguments as the op's, pairs expanded and shapes already checked by :func:`check_shapes`.
    """
    orig_dtype = input.dtype
    if orig_dtype not in (torch.float32, torch.float64):
        # Reduced precision: sample, blend and accumulate in fp32, store in the input's dtype.
        input, offset, weight = input.float(), offset.float(), weight.float()
        bias = bias.float() if bias is not None else None
        mask = mask.float() if mask is not None else None
    n, c, h, w = input.shape
    c_out, cg, kh, kw = weight.shape
    k, groups = kh * kw, c // cg
    dg, ho, wo = offset.shape[1] // (2 * k), offset.shape[2], offset.shape[3]
    cdg, cog = c // dg, c_out // groups
    dtype, device = input.dtype, input.device

    table = input.permute(0, 2, 3, 1).reshape(n * h * w * dg, cdg)
    # Weight rows in the columns' (tap, channel) order: [groups, K * cg, cog].
    w_mat = weight.reshape(groups, cog, cg, k).permute(0, 3, 2, 1).reshape(groups, k * cg, cog)
    # Sampling positions before the offsets, broadcast over [n, dg, K, rows, W_out].
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dilation[0]).repeat_interleave(kw).view(1, 1, k, 1, 1)
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dilation[1]).repeat(kh).view(1, 1, k, 1, 1)
    base_x = (torch.arange(wo, device=device, dtype=dtype) * stride[1] - padding[1]).view(1, 1, 1, 1, wo) + tap_x
    row_base = (torch.arange(n, device=device).view(n, 1, 1, 1, 1) * (h * w * dg)
                + torch.arange(dg, device=device).view(1, dg, 1, 1, 1))
    off = offset.view(n, dg, k, 2, ho, wo)
    msk = mask.view(n, dg, k, ho, wo) if mask is not None else None

    out = torch.empty(n, ho, wo, c_out, dtype=dtype, device=device)
    rows = max(1, min(ho, CHUNK_ELEMENTS // max(1, n * c * k * wo)))
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        nr = r1 - r0
        ys = (torch.arange(r0, r1, device=device, dtype=dtype) * stride[0] - padding[0]).view(1, 1, 1, nr, 1)
        py = ys + tap_y + off[:, :, :, 0, r0:r1]
        px = base_x + off[:, :, :, 1, r0:r1]
        y0f, x0f = torch.floor(py), torch.floor(px)
        ly, lx = py - y0f, px - x0f
        y0, x0 = y0f.long(), x0f.long()
        # Per-axis corner weights, zero where that corner row/column is outside the image.
        wy0 = (1 - ly) * ((y0 >= 0) & (y0 < h))
        wy1 = ly * ((y0 >= -1) & (y0 < h - 1))
        wx0 = (1 - lx) * ((x0 >= 0) & (x0 < w))
        wx1 = lx * ((x0 >= -1) & (x0 < w - 1))
        if msk is not None:
            m = msk[..., r0:r1, :]
            wy0, wy1 = wy0 * m, wy1 * m
        ry0 = row_base + y0.clamp(0, h - 1) * (w * dg)
        ry1 = row_base + (y0 + 1).clamp(0, h - 1) * (w * dg)
        cx0 = x0.clamp(0, w - 1) * dg
        cx1 = (x0 + 1).clamp(0, w - 1) * dg
        # Bags in (n, row, col, tap, offset group) order so each pixel's columns are (tap, channel).
        idx = torch.empty(n, nr, wo, k, dg, 4, dtype=torch.long, device=device)
        wts = torch.empty(n, nr, wo, k, dg, 4, dtype=dtype, device=device)
        iv, wv = idx.permute(0, 4, 3, 1, 2, 5), wts.permute(0, 4, 3, 1, 2, 5)
        for corner, (ry, cx, wy, wx) in enumerate(((ry0, cx0, wy0, wx0), (ry0, cx1, wy0, wx1),
                                                   (ry1, cx0, wy1, wx0), (ry1, cx1, wy1, wx1))):
            torch.add(ry, cx, out=iv[..., corner])
            torch.mul(wy, wx, out=wv[..., corner])
        cols = F.embedding_bag(idx.view(-1, 4), table, per_sample_weights=wts.view(-1, 4), mode="sum")
        cols = cols.view(n * nr * wo, k, c)
        dst = out[:, r0:r1]
        if groups == 1:
            dst.copy_((cols.view(n * nr * wo, k * c) @ w_mat[0]).view(n, nr, wo, c_out))
        else:
            for gi in range(groups):
                part = cols[:, :, gi * cg:(gi + 1) * cg].reshape(n * nr * wo, k * cg) @ w_mat[gi]
                dst[..., gi * cog:(gi + 1) * cog] = part.view(n, nr, wo, cog)
    if bias is not None:
        out += bias  # broadcast over the channels-last buffer: no extra copy of the output
    return out.permute(0, 3, 1, 2).contiguous().to(orig_dtype)


# ----------------------------------------------------------------------------------------------
# CUDA backends

_CudaFn = Callable[[Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor], _Pair, _Pair, _Pair], Tensor]
_CUDA_BACKENDS: dict[str, tuple[Callable[[], bool], _CudaFn]] = {}
_CUDA_PREFERENCE = ("deformrt", "torchvision")
_forced = threading.local()

BACKEND_NAMES = ("auto", "reference") + _CUDA_PREFERENCE


def register_cuda_backend(name: str, is_available: Callable[[], bool], fn: _CudaFn) -> None:
    """Register a CUDA implementation. ``fn`` takes the op's arguments with pairs already expanded
    and shapes already checked."""
    _CUDA_BACKENDS[name] = (is_available, fn)


def _torchvision_available() -> bool:
    try:
        import torchvision.ops  # noqa: F401
    except Exception:
        return False
    return True


def _torchvision_fn(input, offset, weight, bias, mask, stride, padding, dilation):
    import torchvision.ops

    return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)


register_cuda_backend("torchvision", _torchvision_available, _torchvision_fn)


# deformrt's own kernels (libdeformrt_kernels.so through ctypes); imported on first use so that
# CPU-only work never loads the library. The dependency runs one way: this module -> cuda_kernels.
def _deformrt_available() -> bool:
    from models.ops import cuda_kernels

    return cuda_kernels.is_available()


def _deformrt_fn(input, offset, weight, bias, mask, stride, padding, dilation):
    from models.ops import cuda_kernels

    if input.dtype not in cuda_kernels.DTYPES:  # e.g. bf16: the kernels take fp32 and fp16
        return deform_conv2d_portable(input, offset, weight, bias, mask, stride, padding, dilation)
    return cuda_kernels.deform_conv2d_cuda(input, offset, weight, bias, mask, stride, padding, dilation)


register_cuda_backend("deformrt", _deformrt_available, _deformrt_fn)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend for calls on this thread: "auto", "reference", "deformrt" or "torchvision"."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown deform_conv2d backend {name!r}; choose from {', '.join(BACKEND_NAMES)}")
    prev = getattr(_forced, "name", "auto")
    _forced.name = name
    try:
        yield
    finally:
        _forced.name = prev


def select_backend(device: torch.device) -> str:
    """The backend a call on ``device`` will use."""
    forced = getattr(_forced, "name", "auto")
    if forced == "reference" or device.type != "cuda":
        if forced not in ("auto", "reference") and device.type != "cuda":
            raise RuntimeError(f"deform_conv2d backend {forced!r} needs CUDA tensors")
        return "reference"
    if forced != "auto":
        entry = _CUDA_BACKENDS.get(forced)
        if entry is None or not entry[0]():
            raise RuntimeError(f"deform_conv2d backend {forced!r} is not available here")
        return forced
    for name in _CUDA_PREFERENCE:
        entry = _CUDA_BACKENDS.get(name)
        if entry is not None and entry[0]():
            return name
    return "reference"


# ----------------------------------------------------------------------------------------------
# The custom op


@torch.library.custom_op("deformrt::deform_conv2d", mutates_args=())
def _deform_conv2d_op(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
                      stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> Tensor:
    s, p, d = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    backend = select_backend(input.device)
    check_shapes(input, offset, weight, bias, mask, s, p, d)
    fn = deform_conv2d_portable if backend == "reference" else _CUDA_BACKENDS[backend][1]
    return fn(input, offset, weight, bias, mask, s, p, d)


@_deform_conv2d_op.register_fake
def _deform_conv2d_fake(input, offset, weight, bias, mask, stride, padding, dilation):
    n, _, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    ho = out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = out_size(w, kw, stride[1], padding[1], dilation[1])
    return input.new_empty((n, c_out, ho, wo))


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride: int | Sequence[int] = (1, 1), padding: int | Sequence[int] = (0, 0),
                  dilation: int | Sequence[int] = (1, 1), mask: Optional[Tensor] = None) -> Tensor:
    """Deformable 2-D convolution with torchvision's signature (see the module docstring)."""
    return torch.ops.deformrt.deform_conv2d(
        input, offset, weight, bias, mask,
        list(_pair(stride, "stride")), list(_pair(padding, "padding")), list(_pair(dilation, "dilation")),
    )
