"""The CPU build of the DCN kernels (plugins/src/deformConvMath.h: sampling math and GEMM tiling, the
code the CUDA kernel runs) against the independent float64 reference, on many random problems."""

from __future__ import annotations

import ctypes
import math
import random
import shutil

import pytest
import torch

from dcn_reference import deform_conv2d_reference
from exporter.trt.plugin_build import cmake_build
from models.native import HOST_LIBRARY
from models.ops.cuda_kernels import DTYPES, ConvDesc, make_desc

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="cmake and a C++ compiler are needed to build the CPU kernels")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    out = cmake_build(tmp_path_factory.mktemp("deformrt-host"), {"DEFORMRT_BUILD_CUDA": "OFF"}, ["deformrt_host"])
    lib = ctypes.CDLL(str(out / HOST_LIBRARY))
    lib.deformrt_dcn_validate.argtypes = [ctypes.POINTER(ConvDesc)]
    lib.deformrt_dcn_validate.restype = ctypes.c_char_p
    lib.deformrt_dcn_forward_host.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32] + [ctypes.c_void_p] * 6
    lib.deformrt_dcn_forward_host.restype = ctypes.c_int32
    lib.deformrt_float_to_half.argtypes = [ctypes.c_float]
    lib.deformrt_float_to_half.restype = ctypes.c_uint16
    lib.deformrt_half_to_float.argtypes = [ctypes.c_uint16]
    lib.deformrt_half_to_float.restype = ctypes.c_float
    return lib


def _ptr(t):
    return None if t is None else t.data_ptr()


def run_host(lib, x, offset, weight, bias, mask, stride, padding, dilation):
    """The host build's forward pass on contiguous tensors of one dtype (float32 or float16)."""
    desc = make_desc(x, offset, weight, bias, mask, stride, padding, dilation)
    y = torch.full((desc.batch, desc.outChannels, desc.outHeight, desc.outWidth), float("nan"), dtype=x.dtype)
    args = [t.contiguous() if t is not None else None for t in (x, weight, offset, bias, mask)]
    rc = lib.deformrt_dcn_forward_host(ctypes.byref(desc), DTYPES[x.dtype], *[_ptr(t) for t in args], _ptr(y))
    assert rc == 0, lib.deformrt_dcn_validate(ctypes.byref(desc))
    return y


def make_case(rng: random.Random, offset_scale: float):
    """A random problem: every parameter drawn, sizes small and often odd, inputs never all zero."""
    groups, dg = rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2, 4])
    c = math.lcm(groups, dg) * rng.randint(1, 2)
    c_out = groups * rng.randint(1, 3)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    h = rng.randint(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 11)
    w = rng.randint(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 13)
    n = rng.randint(1, 3)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c // groups, kh, kw, generator=g, dtype=torch.float64)
    offset = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=torch.float64) * offset_scale
    bias = torch.randn(c_out, generator=g, dtype=torch.float64) if rng.random() < 0.5 else None
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=torch.float64) if rng.random() < 0.6 else None
    return x, offset, weight, bias, mask, stride, padding, dilation


def _as(dtype, tensors):
    return [None if t is None else t.to(dtype) for t in tensors]


def _rel_err(y, ref):
    return ((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


# Offsets from sub-pixel to far outside the image (scale 12 on maps of <= 13 pixels).
CASES = [(seed, scale) for seed in range(36) for scale in ([0.7, 3.0, 12.0][seed % 3],)]


@pytest.mark.parametrize("seed,scale", CASES)
def test_fp32_matches_float64_reference(host, seed, scale):
    x, offset, weight, bias, mask, stride, padding, dilation = make_case(random.Random(seed), scale)
    x, offset, weight, bias, mask = _as(torch.float32, (x, offset, weight, bias, mask))
    y = run_host(host, x, offset, weight, bias, mask, stride, padding, dilation)
    ref = deform_conv2d_reference(x, offset, weight, bias, stride, padding, dilation, mask)
    assert _rel_err(y, ref) <= 1e-5


def test_r50_like_channels_span_several_tiles(host):
    # 80 output channels and 100 columns: two M tiles and two N tiles, K = 72 (five K slices).
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 8, 10, 10, generator=g)
    weight = torch.randn(80, 8, 3, 3, generator=g)
    offset = torch.randn(1, 18, 10, 10, generator=g) * 2
    mask = torch.rand(1, 9, 10, 10, generator=g)
    bias = torch.randn(80, generator=g)
    y = run_host(host, x, offset, weight, bias, mask, (1, 1), (1, 1), (1, 1))
    ref = deform_conv2d_reference(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), mask)
    assert _rel_err(y, ref) <= 1e-5


@pytest.mark.parametrize("n,h,w,c_out", [(1, 1, 1, 1), (1, 7, 9, 63), (1, 8, 8, 64), (1, 5, 13, 65), (5, 1, 13, 129)])
def test_tile_edges(host, n, h, w, c_out):
    # Columns (n*h*w) and output channels just below, at and above the 64-wide tiles; K = 45, not a
    # multiple of the 16-deep K slices. The output starts as NaN, so a missed element fails.
    g = torch.Generator().manual_seed(n * h * w + c_out)
    x = torch.randn(n, 5, h, w, generator=g)
    weight = torch.randn(c_out, 5, 3, 3, generator=g)
    offset = torch.randn(n, 18, h, w, generator=g)
    bias = torch.randn(c_out, generator=g)
    y = run_host(host, x, offset, weight, bias, None, (1, 1), (1, 1), (1, 1))
    ref = deform_conv2d_reference(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), None)
    assert _rel_err(y, ref) <= 1e-5


def test_integer_offsets_and_exact_borders(host):
    # Samples exactly on pixels, on the -1 / H borders and just inside them.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 5, generator=g)
    weight = torch.randn(3, 4, 3, 3, generator=g)
    offset = torch.randint(-7, 8, (2, 18, 6, 5), generator=g).float()
    offset[:, :, 0, :] = -1.0 - torch.arange(18).view(1, 18, 1).float() % 2 * 1e-3
    offset[:, :, -1, :] = 6.0
    y = run_host(host, x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    ref = deform_conv2d_reference(x, offset, weight, None, (1, 1), (1, 1), (1, 1), None)
    assert _rel_err(y, ref) <= 1e-5


def test_far_and_non_finite_offsets_sample_zero(host):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 5, 5, generator=g)
    weight = torch.randn(3, 2, 3, 3, generator=g)
    bias = torch.randn(3, generator=g)
    for value in (1e9, -3e7, float("inf"), float("-inf"), float("nan")):
        offset = torch.full((1, 18, 5, 5), value)
        y = run_host(host, x, offset, weight, bias, None, (1, 1), (1, 1), (1, 1))
        torch.testing.assert_close(y, bias.view(1, 3, 1, 1).expand_as(y), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(8))
def test_fp16_storage_rounds_only_the_output(host, seed):
    # Inputs are fp16 values; everything after the loads is fp32, so the error is the final rounding.
    x, offset, weight, bias, mask, stride, padding, dilation = make_case(random.Random(100 + seed), 3.0)
    x, offset, weight, bias, mask = _as(torch.float16, (x, offset, weight * 0.3, bias, mask))
    y = run_host(host, x, offset, weight, bias, mask, stride, padding, dilation)
    assert y.dtype == torch.float16
    ref = deform_conv2d_reference(x, offset, weight, bias, stride, padding, dilation, mask)
    bound = ref.abs() * 2.0**-11 + 1e-5 * ref.abs().max()
    assert ((y.double() - ref).abs() <= bound).all()


def test_half_conversions_match_torch(host):
    g = torch.Generator().manual_seed(11)
    values = torch.cat([
        torch.randn(3000, generator=g) * torch.logspace(-9, 5, 3000),
        torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, -70000.0, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0001,
                      2.0**-14, 2.0**-14 * (1 - 2.0**-12), 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11,
                      float("inf"), float("-inf")]),
    ]).float()
    expected = values.half().view(torch.int16).to(torch.int32) & 0xFFFF
    got = torch.tensor([host.deformrt_float_to_half(v) for v in values.tolist()], dtype=torch.int32)
    assert torch.equal(got, expected)
    assert host.deformrt_float_to_half(float("nan")) & 0x7C00 == 0x7C00
    assert host.deformrt_float_to_half(float("nan")) & 0x3FF != 0

    bits = torch.arange(65536, dtype=torch.int32)
    as_float = bits.to(torch.int16).view(torch.float16).float()
    not_nan = ~torch.isnan(as_float)
    back = torch.tensor([host.deformrt_half_to_float(b) for b in bits.tolist()])
    assert torch.equal(back[not_nan], as_float[not_nan])
    assert torch.isnan(back[~not_nan]).all()


@pytest.mark.parametrize("field,value,message", [
    ("group", 3, b"group must divide"),
    ("offsetGroup", 3, b"offset_group must divide"),
    ("strideH", 0, b"must be in [1, 2^30)"),
    ("padTop", -1, b"pads must be"),
    ("modulated", 2, b"modulated and has_bias"),
])
def test_invalid_problem_is_rejected_without_writing(host, field, value, message):
    x, offset, weight = torch.randn(1, 4, 5, 5), torch.randn(1, 18, 5, 5), torch.randn(4, 2, 3, 3)
    desc = make_desc(x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    desc.group = 2
    setattr(desc, field, value)
    assert message in host.deformrt_dcn_validate(ctypes.byref(desc))
    y = torch.full((1, 4, 5, 5), 7.0)
    rc = host.deformrt_dcn_forward_host(ctypes.byref(desc), 0, x.data_ptr(), weight.data_ptr(), offset.data_ptr(),
                                        None, None, y.data_ptr())
    assert rc == 1 and (y == 7.0).all()


def test_unknown_dtype_and_missing_mask_are_rejected(host):
    x, offset, weight = torch.randn(1, 2, 4, 4), torch.randn(1, 18, 4, 4), torch.randn(2, 2, 3, 3)
    y = torch.zeros(1, 2, 4, 4)
    desc = make_desc(x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    ptrs = (x.data_ptr(), weight.data_ptr(), offset.data_ptr(), None, None, y.data_ptr())
    assert host.deformrt_dcn_forward_host(ctypes.byref(desc), 7, *ptrs) == 1
    desc.modulated = 1
    assert host.deformrt_dcn_forward_host(ctypes.byref(desc), 0, *ptrs) == 1
