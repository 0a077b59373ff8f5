"""Deformable convolution (DCN v1 and modulated v2) as a PyTorch custom op.

``deform_conv2d`` has torchvision's signature and semantics:

- groups = C_in / weight.shape[1]; deformable (offset) groups = offset.shape[1] / (2 * kH * kW);
- offsets are (dy, dx) interleaved per kernel point: channel g*2K + 2k + d, d=0 for dy;
- sampling is bilinear over a zero-padded image (a corner outside the image counts 0);
- a mask (modulated DCN, already sigmoid-ed) multiplies each sampled value.

It is registered as ``torch.ops.deformrt.deform_conv2d`` with a fake (meta) implementation, so
``torch.export`` and the ONNX exporter trace it as one node.

Backends. On CPU the op runs ``deform_conv2d_portable``: one vectorised bilinear sampling pass
(``grid_sample``) per chunk of output rows and one matmul per convolution group, with the column
buffer bounded by ``CHUNK_ELEMENTS``. On CUDA it uses, in order of preference, a registered CUDA
backend (deformrt's own kernels register as ``"deformrt"``; torchvision's as ``"torchvision"``
when importable), else the same sampled implementation. ``use_backend(name)`` forces one.
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
                 stride: _Pair, padding: _Pair, dilation: _Pair) -> tuple[int, int, int, int]:
    """Validate shapes; return (groups, offset_groups, H_out, W_out)."""
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
    return groups, dg, ho, wo


def deform_conv2d_portable(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                           mask: Optional[Tensor], stride: _Pair, padding: _Pair, dilation: _Pair) -> Tensor:
    """The portable implementation: bilinear sampling by grid_sample, then a matmul per group."""
    groups, dg, ho, wo = check_shapes(input, offset, weight, bias, mask, stride, padding, dilation)
    orig_dtype = input.dtype
    if orig_dtype not in (torch.float32, torch.float64):
        # Reduced precision: sample, blend and accumulate in fp32, store in the input's dtype.
        input, offset, weight = input.float(), offset.float(), weight.float()
        bias = bias.float() if bias is not None else None
        mask = mask.float() if mask is not None else None
    n, c, h, w = input.shape
    c_out, cg, kh, kw = weight.shape
    k = kh * kw
    cdg = c // dg
    dtype, device = input.dtype, input.device
    x_groups = input.reshape(n * dg, cdg, h, w)
    w_mat = weight.reshape(groups, c_out // groups, cg * k)
    # Base sampling positions of each kernel tap, in input pixels: [K, 1, 1] over (tap, row, col).
    ki = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation[0]
    kj = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation[1]
    cols_x = torch.arange(wo, device=device, dtype=dtype) * stride[1] - padding[1]
    base_x = (kj.view(k, 1, 1) + cols_x.view(1, 1, wo))
    # grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1 (valid for size 1 too).
    sx, sy = 2.0 / w, 2.0 / h
    off = offset.view(n, dg, k, 2, ho, wo)
    msk = mask.view(n, dg, 1, k, ho, wo) if mask is not None else None

    out = torch.empty(n, c_out, ho, wo, dtype=dtype, device=device)
    rows = max(1, min(ho, CHUNK_ELEMENTS // max(1, n * c * k * wo)))
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        nr = r1 - r0
        rows_y = torch.arange(r0, r1, device=device, dtype=dtype) * stride[0] - padding[0]
        base_y = ki.view(k, 1, 1) + rows_y.view(1, nr, 1)
        py = base_y + off[:, :, :, 0, r0:r1, :]  # [n, dg, k, nr, wo]
        px = base_x + off[:, :, :, 1, r0:r1, :]
        grid = torch.stack(((px + 0.5) * sx - 1.0, (py + 0.5) * sy - 1.0), dim=-1)
        grid = grid.reshape(n * dg, k * nr, wo, 2)
        sampled = F.grid_sample(x_groups, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.view(n, dg, cdg, k, nr * wo)
        if msk is not None:
            sampled = sampled * msk[..., r0:r1, :].reshape(n, dg, 1, k, nr * wo)
        cols = sampled.reshape(n, groups, cg * k, nr * wo)
        res = torch.matmul(w_mat.unsqueeze(0), cols)  # [n, groups, c_out/groups, nr*wo]
        out[:, :, r0:r1, :] = res.reshape(n, c_out, nr, wo)
    if bias is not None:
        out += bias.view(1, c_out, 1, 1)
    return out.to(orig_dtype)


# ----------------------------------------------------------------------------------------------
# CUDA backends

_CudaFn = Callable[[Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor], _Pair, _Pair, _Pair], Tensor]
_CUDA_BACKENDS: dict[str, tuple[Callable[[], bool], _CudaFn]] = {}
_CUDA_PREFERENCE = ("deformrt", "torchvision")
_forced = threading.local()

BACKEND_NAMES = ("auto", "reference") + _CUDA_PREFERENCE


def register_cuda_backend(name: str, is_available: Callable[[], bool], fn: _CudaFn) -> None:
    """Register a CUDA implementation. ``fn`` takes the op's arguments with pairs already expanded."""
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


def _lazy_register_deformrt() -> None:
    # Our CUDA kernels live in plugins/; their Python binding registers itself on import.
    if "deformrt" not in _CUDA_BACKENDS:
        try:
            from models.ops import cuda_kernels  # noqa: F401
        except ImportError:
            pass


def select_backend(device: torch.device) -> str:
    """The backend a call on ``device`` will use."""
    forced = getattr(_forced, "name", "auto")
    if forced == "reference" or device.type != "cuda":
        if forced not in ("auto", "reference") and device.type != "cuda":
            raise RuntimeError(f"deform_conv2d backend {forced!r} needs CUDA tensors")
        return "reference"
    _lazy_register_deformrt()
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
    if backend == "reference":
        return deform_conv2d_portable(input, offset, weight, bias, mask, s, p, d)
    check_shapes(input, offset, weight, bias, mask, s, p, d)
    return _CUDA_BACKENDS[backend][1](input, offset, weight, bias, mask, s, p, d)


@_deform_conv2d_op.register_fake
def _deform_conv2d_fake(input, offset, weight, bias, mask, stride, padding, dilation):
    n, _, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    wo = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    return input.new_empty((n, c_out, ho, wo))


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride: int | Sequence[int] = (1, 1), padding: int | Sequence[int] = (0, 0),
                  dilation: int | Sequence[int] = (1, 1), mask: Optional[Tensor] = None) -> Tensor:
    """Deformable 2-D convolution with torchvision's signature (see the module docstring)."""
    return torch.ops.deformrt.deform_conv2d(
        input, offset, weight, bias, mask,
        list(_pair(stride, "stride")), list(_pair(padding, "padding")), list(_pair(dilation, "dilation")),
    )
