"""The CPU build of the DCN kernels (plugins/src/deformConvMath.h: sampling math and GEMM tiling, the
code the CUDA kernel runs; plugins/src/deformConvTensorCore.h: the fp16 tensor-core kernel with its
mma.sync emulated per the PTX ISA fragment layouts) against the independent float64 reference, on many
random problems."""

from __future__ import annotations

import ctypes
import math
import random
import shutil

import pytest
import torch

from dcn_reference import FP16_RMS_RATIO, deform_conv2d_reference, fp16_error_ratio
from exporter.trt.plugin_build import cmake_build
from models.native import HOST_LIBRARY
from models.ops.cuda_kernels import DTYPES, TcPlan, declare_host_api, make_desc

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="cmake and a C++ compiler are needed to build the CPU kernels")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    out = cmake_build(tmp_path_factory.mktemp("deformrt-host"), {"DEFORMRT_BUILD_CUDA": "OFF"}, ["deformrt_host"])
    return declare_host_api(ctypes.CDLL(str(out / HOST_LIBRARY)))


def _ptr(t):
    return None if t is None else t.data_ptr()


def run_host(lib, x, offset, weight, bias, mask, stride, padding, dilation, entry="deformrt_dcn_forward_host",
             weight_layout="OIHW"):
    """The host build's forward pass on contiguous tensors of one dtype (float32 or float16); ``entry``
    deformrt_dcn_forward_tiled_host runs the tiled (reference / sm_75) kernel for fp16 too. ``weight`` is
    OIHW; with ``weight_layout`` "OHWI" the kernels get it transposed to OHWI. The NCHW entry stages in a
    workspace of exactly deformrt_dcn_workspace_size bytes."""
    if weight_layout == "OHWI":
        weight = weight.permute(0, 2, 3, 1)
    desc = make_desc(x, offset, weight, bias, mask, stride, padding, dilation, weight_layout)
    y = torch.full((desc.batch, desc.outChannels, desc.outHeight, desc.outWidth), float("nan"), dtype=x.dtype)
    args = [t.contiguous() if t is not None else None for t in (x, weight, offset, bias, mask)]
    extra = ()
    if entry == "deformrt_dcn_forward_host":
        nbytes = lib.deformrt_dcn_workspace_size(ctypes.byref(desc), DTYPES[x.dtype])
        workspace = torch.full((nbytes,), 0xFF, dtype=torch.uint8)  # garbage: staging must overwrite it
        extra = (_ptr(workspace) if nbytes else None, nbytes)
    rc = getattr(lib, entry)(ctypes.byref(desc), DTYPES[x.dtype], *[_ptr(t) for t in args], _ptr(y), *extra)
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


def make_fp16_case(rng: random.Random):
    """A random fp16 problem with enough outputs (>= ~1000) for a stable RMS figure: every parameter
    drawn, channel counts that give chunk sizes of 4 to 32 channels, spatial sizes off the tile grid."""
    groups, dg = rng.choice([1, 1, 2]), rng.choice([1, 1, 2, 4])
    c = math.lcm(groups, dg) * rng.choice([4, 8, 12, 16])
    c_out = groups * rng.randint(4, 24)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    stride = (rng.randint(1, 2), rng.randint(1, 2))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    h, w, n = rng.randint(9, 17), rng.randint(9, 19), rng.randint(2, 3)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(n, c, h, w, generator=g).half()
    weight = torch.randn(c_out, c // groups, kh, kw, generator=g).half()
    offset = (torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g) * 2).half()
    bias = torch.randn(c_out, generator=g).half() if rng.random() < 0.5 else None
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g).half() if rng.random() < 0.6 else None
    return x, offset, weight, bias, mask, stride, padding, dilation, groups


@pytest.mark.parametrize("entry", ["deformrt_dcn_forward_host", "deformrt_dcn_forward_tiled_host"])
@pytest.mark.parametrize("seed", range(8))
def test_fp16_rms_error_within_dense_fp16_conv_bound(host, seed, entry):
    x, offset, weight, bias, mask, stride, padding, dilation, groups = make_fp16_case(random.Random(100 + seed))
    y = run_host(host, x, offset, weight, bias, mask, stride, padding, dilation, entry=entry)
    assert y.dtype == torch.float16 and not torch.isnan(y).any()
    ref = deform_conv2d_reference(x, offset, weight, bias, stride, padding, dilation, mask)
    ratio = fp16_error_ratio(y, ref, x, weight, bias, stride, padding, dilation, groups)
    assert ratio <= FP16_RMS_RATIO


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
                                        None, None, y.data_ptr(), None, 0)
    assert rc == 1 and (y == 7.0).all()


def test_unknown_dtype_and_missing_mask_are_rejected(host):
    x, offset, weight = torch.randn(1, 2, 4, 4), torch.randn(1, 18, 4, 4), torch.randn(2, 2, 3, 3)
    y = torch.zeros(1, 2, 4, 4)
    desc = make_desc(x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    ptrs = (x.data_ptr(), weight.data_ptr(), offset.data_ptr(), None, None, y.data_ptr(), None, 0)
    assert host.deformrt_dcn_forward_host(ctypes.byref(desc), 7, *ptrs) == 1
    desc.modulated = 1
    assert host.deformrt_dcn_forward_host(ctypes.byref(desc), 0, *ptrs) == 1


# ------------------------------------------------------------------------------------------------
# The fp16 tensor-core kernel (deformConvTensorCore.h) in the CPU build.

def _isa_fragments(a16, b16, c32):
    """Per-lane mma.m16n8k16 registers built from the PTX ISA's fragment formulas (written here
    independently of the C++): a16 [16, 16] fp16 (M x K), b16 [16, 8] fp16 (K x N), c32 [16, 8] fp32."""
    abits = (a16.view(torch.int16).to(torch.int64) & 0xFFFF).tolist()
    bbits = (b16.view(torch.int16).to(torch.int64) & 0xFFFF).tolist()
    a_regs, b_regs, c_vals = [0] * 128, [0] * 64, [0.0] * 128
    for lane in range(32):
        group, tig = lane >> 2, lane % 4
        for i in range(8):
            row = group if (i < 2 or 4 <= i < 6) else group + 8
            col = tig * 2 + (i & 1) + (8 if i >= 4 else 0)
            a_regs[lane * 4 + i // 2] |= abits[row][col] << (16 * (i & 1))
        for i in range(4):
            row = tig * 2 + (i & 1) + (8 if i >= 2 else 0)
            b_regs[lane * 2 + i // 2] |= bbits[row][group] << (16 * (i & 1))
            c_vals[lane * 4 + i] = c32[group + (8 if i >= 2 else 0), tig * 2 + (i & 1)].item()
    return a_regs, b_regs, c_vals


def _emulate(host, a_regs, b_regs, c_vals):
    a = (ctypes.c_uint32 * 128)(*a_regs)
    b = (ctypes.c_uint32 * 64)(*b_regs)
    c = (ctypes.c_float * 128)(*c_vals)
    d = (ctypes.c_float * 128)()
    host.deformrt_mma_m16n8k16_emulate(a, b, c, d)
    out = torch.zeros(16, 8, dtype=torch.float64)
    for lane in range(32):
        for i in range(4):
            out[(lane >> 2) + (8 if i >= 2 else 0), (lane % 4) * 2 + (i & 1)] = d[lane * 4 + i]
    return out


def test_mma_emulation_follows_the_isa_fragment_layout(host):
    a16, b16 = torch.randn(16, 16).half(), torch.randn(16, 8).half()
    c32 = torch.randn(16, 8)
    expected = a16.double() @ b16.double() + c32.double()
    a_regs, b_regs, c_vals = _isa_fragments(a16, b16, c32)
    got = _emulate(host, a_regs, b_regs, c_vals)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # A plausible indexing bug (a lane's A registers 1 and 2 swapped: rows g+8 and columns +8 mixed up)
    # gives a visibly wrong product, so the kernel tests below detect a wrong fragment index.
    swapped = list(a_regs)
    for lane in range(32):
        swapped[lane * 4 + 1], swapped[lane * 4 + 2] = a_regs[lane * 4 + 2], a_regs[lane * 4 + 1]
    assert (_emulate(host, swapped, b_regs, c_vals) - expected).abs().max() > 0.1


@pytest.mark.parametrize("entry,dtype", [("deformrt_dcn_forward_host", torch.float16),
                                         ("deformrt_dcn_forward_tiled_host", torch.float16),
                                         ("deformrt_dcn_forward_host", torch.float32)])
@pytest.mark.parametrize("seed", range(3))
def test_an_ohwi_weight_gives_the_same_bits_as_oihw(host, entry, dtype, seed):
    # The kernels sum in the same K order whichever layout they read (the tensor-core kernel reads OHWI, and
    # transposes an OIHW weight into its workspace first): the outputs agree bit for bit.
    x, offset, weight, bias, mask, stride, padding, dilation, _ = make_fp16_case(random.Random(300 + seed))
    x, offset, weight, bias, mask = _as(dtype, (x, offset, weight, bias, mask))
    args = (x, offset, weight, bias, mask, stride, padding, dilation)
    oihw = run_host(host, *args, entry=entry)
    ohwi = run_host(host, *args, entry=entry, weight_layout="OHWI")
    assert not torch.isnan(oihw).any()
    assert torch.equal(ohwi.view(torch.int16 if dtype == torch.float16 else torch.int32),
                       oihw.view(torch.int16 if dtype == torch.float16 else torch.int32))


def test_workspace_sizes_and_a_too_small_workspace_is_refused(host):
    # fp16 NCHW on the tensor-core kernel: x staged as NHWC (2*16*6*7 halves = 2688 B -> 2816), plus an OIHW
    # weight transposed to OHWI (8*16*9 halves = 2304 B); each rounded up to 256 bytes. The same numbers as
    # the CUDA build's (tests/test_plugin_build.py), so a size asked of either holds for both.
    x, offset = torch.randn(2, 16, 6, 7).half(), torch.randn(2, 18, 6, 7).half()
    weight, mask = torch.randn(8, 16, 3, 3).half(), torch.rand(2, 9, 6, 7).half()
    desc = make_desc(x, offset, weight, None, mask, (1, 1), (1, 1), (1, 1))
    assert host.deformrt_dcn_workspace_size(ctypes.byref(desc), 1) == 2816 + 2304
    assert host.deformrt_dcn_workspace_size(ctypes.byref(desc), 0) == 0
    assert host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc)) == 2304
    assert host.deformrt_dcn_nhwc_supported(ctypes.byref(desc)) == 1
    ohwi = make_desc(x, offset, weight.permute(0, 2, 3, 1), None, mask, (1, 1), (1, 1), (1, 1), "OHWI")
    assert host.deformrt_dcn_workspace_size(ctypes.byref(ohwi), 1) == 2816
    assert host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(ohwi)) == 0
    # Smaller problems never need more (what lets a plugin size its workspace from the largest shape).
    small = make_desc(x[:1, :, :3], offset[:1, :, :3], weight, None, mask[:1, :, :3], (1, 1), (1, 1), (1, 1))
    assert host.deformrt_dcn_workspace_size(ctypes.byref(small), 1) <= 2816 + 2304
    y = torch.full((2, 8, 6, 7), 7.0).half()
    workspace = torch.empty(2816 + 2304, dtype=torch.uint8)
    ptrs = (x.data_ptr(), weight.data_ptr(), offset.data_ptr(), None, mask.data_ptr(), y.data_ptr())
    assert host.deformrt_dcn_forward_host(ctypes.byref(desc), 1, *ptrs, workspace.data_ptr(), 2816 + 2303) == 1
    assert (y == 7.0).all(), "nothing is written when the workspace is refused"
    assert host.deformrt_dcn_forward_host(ctypes.byref(desc), 1, *ptrs, workspace.data_ptr(), 2816 + 2304) == 0
    y_nhwc = torch.empty(2, 6, 7, 8).half()
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    nhwc_ptrs = (x_nhwc.data_ptr(), weight.data_ptr(), offset.data_ptr(), None,
                 mask.data_ptr(), y_nhwc.data_ptr())
    assert host.deformrt_dcn_forward_nhwc_host(ctypes.byref(desc), *nhwc_ptrs, workspace.data_ptr(), 2303, -1) == 1
    assert host.deformrt_dcn_forward_nhwc_host(ctypes.byref(desc), *nhwc_ptrs, workspace.data_ptr(), 2304, -1) == 0
    assert torch.equal(y_nhwc.permute(0, 3, 1, 2), y)
    desc.weightLayout = 2
    assert b"weightLayout" in host.deformrt_dcn_validate(ctypes.byref(desc))


def test_split_k_workspace_is_the_same_everywhere_and_never_grows_as_the_problem_shrinks(host):
    # K = 256 x 9 >= 2048: room for the fp32 partial sums of 8 K splits (C_out = 96 here), at most 24 MiB,
    # rounded up to 256 bytes; an OIHW weight's transpose comes first, an NCHW x's staging before both.
    def desc(n, h, w, layout="OHWI"):
        weight = torch.empty(96, 3, 3, 256) if layout == "OHWI" else torch.empty(96, 256, 3, 3)
        return make_desc(torch.empty(n, 256, h, w), torch.empty(n, 18, h, w), weight, None, None, (1, 1), (1, 1),
                         (1, 1), layout)

    def align(v):
        return -(-v // 256) * 256

    small = desc(1, 6, 9)
    partial = align(8 * 54 * 96 * 4)
    assert host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(small)) == partial
    oihw = desc(1, 6, 9, "OIHW")
    assert host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(oihw)) == align(96 * 256 * 9 * 2) + partial
    assert host.deformrt_dcn_workspace_size(ctypes.byref(oihw), 1) == (align(54 * 256 * 2) + align(96 * 256 * 9 * 2)
                                                                       + partial)
    big = desc(4, 60, 90)  # 8 splits would take 66 MiB: capped at 24 MiB
    assert host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(big)) == 24 << 20
    sizes = [host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc(n, h, h))) for n, h in
             ((4, 64), (2, 64), (2, 40), (1, 40), (1, 20), (1, 5))]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] > 0
    # a plan never splits more than the workspace holds
    plan = plan_for(host, big, 132, 227 << 10, 50 << 20, shape=0, extent=32, split=8)
    assert plan is None
    plan = plan_for(host, small, 132, 227 << 10, 50 << 20, shape=2, extent=32, split=8)
    assert plan is not None and plan.splitK == 8


def _nhwc_host(host, x, offset, weight, bias, mask, stride, padding, dilation, shape):
    """The NHWC entry (the plugin's kHWC8 path) with the OHWI weight the exporter writes, read in place."""
    ohwi = weight.permute(0, 2, 3, 1).contiguous()
    desc = make_desc(x, offset, ohwi, bias, mask, stride, padding, dilation, "OHWI")
    assert host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc)) == 0
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    y = torch.full((desc.batch, desc.outHeight, desc.outWidth, desc.outChannels), float("nan"), dtype=torch.float16)
    rc = host.deformrt_dcn_forward_nhwc_host(ctypes.byref(desc), x_nhwc.data_ptr(), ohwi.data_ptr(),
                                             offset.contiguous().data_ptr(), _ptr(bias), _ptr(mask), y.data_ptr(),
                                             None, 0, shape)
    assert rc == 0
    return y.permute(0, 3, 1, 2)


def _fp16_ulps(y: torch.Tensor) -> torch.Tensor:
    """One fp16 ulp at each element's magnitude (normal range)."""
    return torch.exp2(torch.floor(torch.log2(y.float().abs().clamp_min(2.0**-14))) - 10)


@pytest.mark.parametrize("c,c_out,groups,dg,n,h,w", [
    (24, 130, 1, 1, 2, 11, 13),   # chunk 24 padded to a 32-deep step; 130 channels cross 64 and 128
    (64, 72, 2, 4, 1, 9, 15),     # chunk 16, offset group changes between chunks (prologue recomputed)
    (64, 40, 1, 1, 3, 7, 9),      # two 32-channel chunks, M = 189 (not a tile multiple)
])
def test_every_tile_shape_gives_the_same_bits_as_the_nchw_entry(host, c, c_out, groups, dg, n, h, w):
    # The K order and the MMA's summation do not depend on the tile shape, so the three mma.sync shapes agree
    # bit for bit, and so do the two wgmma shapes with the NCHW entry (its own shape choice on the assumed
    # H100: the wgmma kernel; NHWC staging, NCHW epilogue); the output starts as NaN, so a missed element
    # fails. The wgmma kernel's register-A K order groups each slice's products differently: within two fp16
    # ulps of mma.sync. Against float64: the fp16 RMS criterion.
    g = torch.Generator().manual_seed(c * c_out + n)
    x = torch.randn(n, c, h, w, generator=g).half()
    weight = torch.randn(c_out, c // groups, 3, 3, generator=g).half()
    offset = (torch.randn(n, 18 * dg, h, w, generator=g) * 3).half()
    mask = torch.rand(n, 9 * dg, h, w, generator=g).half()
    bias = torch.randn(c_out, generator=g).half()
    args = ((1, 1), (1, 1), (1, 1))
    nchw = run_host(host, x, offset, weight, bias, mask, *args)
    mma = _nhwc_host(host, x, offset, weight, bias, mask, *args, 0)
    for shape in (1, 2):
        y = _nhwc_host(host, x, offset, weight, bias, mask, *args, shape)
        assert torch.equal(y.view(torch.int16), mma.view(torch.int16)), f"tile shape {shape}"
    for shape in TcPlan.WGMMA_SHAPES:  # the wgmma kernel's emulation
        y = _nhwc_host(host, x, offset, weight, bias, mask, *args, shape)
        assert torch.equal(y.view(torch.int16), nchw.view(torch.int16)), f"tile shape {shape}"
    assert ((nchw.float() - mma.float()).abs() <= 2 * _fp16_ulps(mma)).all()
    ref = deform_conv2d_reference(x, offset, weight, bias, *args, mask)
    for y in (nchw, mma):
        assert fp16_error_ratio(y, ref, x, weight, bias, *args, groups) <= FP16_RMS_RATIO


def test_tensor_core_far_and_non_finite_offsets_sample_zero(host):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 16, 5, 6, generator=g).half()
    weight = torch.randn(8, 16, 3, 3, generator=g).half()
    bias = torch.randn(8, generator=g).half()
    for value in (1e4, -3e4, float("inf"), float("-inf"), float("nan")):
        offset = torch.full((1, 18, 5, 6), value).half()
        y = _nhwc_host(host, x, offset, weight, bias, None, (1, 1), (1, 1), (1, 1), -1)
        assert torch.equal(y, bias.view(1, 8, 1, 1).expand_as(y))


# ResNet-101's DCN layers at 800x1344 (dcn-performance.md) and the GPUs the plan is made for:
# (SMs, per-block shared-memory opt-in, L2 bytes) of an H100 SXM, an A100 and a Jetson AGX Orin.
STAGES = {"res3": (128, 100, 168), "res4": (256, 50, 84), "res5": (512, 25, 42)}
GPUS = {"H100 SXM": (132, 227 << 10, 50 << 20), "A100": (108, 163 << 10, 40 << 20),
        "Jetson AGX Orin": (16, 163 << 10, 4 << 20)}


def _stage_desc(c, h, w, batch=1):
    x, offset = torch.empty(batch, c, h, w), torch.empty(batch, 18, h, w)
    return make_desc(x, offset, torch.empty(c, c, 3, 3), None, torch.empty(batch, 9, h, w), (1, 1), (1, 1), (1, 1),
                     "OIHW")


def plan_for(host, desc, sms, optin, l2, shape=-1, extent=0, split=0):
    plan = TcPlan()
    rc = host.deformrt_dcn_tc_plan(ctypes.byref(desc), sms, optin, l2, shape, extent, split, ctypes.byref(plan))
    return plan if rc == 0 else None


def _check_stage_plan(host, desc, plan, stage, sms, optin) -> float:
    """Checks a batch-1 plan of a DCN stage (C, H, W) against its own figures: pixel tiles, K steps per split,
    CTAs, and a wave efficiency (recomputed here) of at least 0.85; split K only where K is long and the
    partial sums fit the workspace; shared memory within the opt-in. Returns the efficiency."""
    c, h, w = stage
    steps = c // 32 * 9
    assert plan.mTiles == -(-h * w // plan.mExtent) and plan.stepsPerSplit == -(-steps // plan.splitK)
    assert plan.ctas == plan.mTiles * plan.nTiles * plan.splitK
    busiest = -(-plan.ctas // sms) * plan.mExtent * plan.stepsPerSplit  # pixel x K-step work of the busiest SM
    efficiency = h * w * plan.nTiles * steps / (busiest * sms)
    assert plan.waveEfficiency == pytest.approx(efficiency)
    assert efficiency >= 0.85, (stage, sms, plan.mExtent, plan.splitK, plan.ctas)
    # split K only where K is long (>= 2048) and the partial sums fit the workspace the problem asks for
    if plan.splitK > 1:
        assert c * 9 >= 2048
        assert plan.splitK * h * w * c * 4 <= host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc)) - c * c * 18
    assert plan.sharedBytes <= optin
    return efficiency


@pytest.mark.parametrize("gpu", list(GPUS))
@pytest.mark.parametrize("stage", list(STAGES))
def test_plan_gathers_once_per_cta_and_fills_the_gpu_at_batch_1(host, gpu, stage):
    # A CTA covers every output channel of its group up to 256 (res5's 512 in two tiles: each sampled
    # element gathered at most twice), and the pixels per CTA and K splits keep at least 85 % of the
    # busiest SM's work useful (pixels x K steps): plan.waveEfficiency, recomputed here from the plan.
    c, h, w = STAGES[stage]
    sms, optin, l2 = GPUS[gpu]
    desc = _stage_desc(c, h, w)
    plan = plan_for(host, desc, sms, optin, l2)
    assert plan is not None, f"the tensor-core kernel must take {stage}"
    assert plan.bn >= min(c, 256) and plan.nTiles == -(-c // plan.bn) <= 2
    assert plan.mExtent % 32 == 0 and 32 <= plan.mExtent <= plan.bm  # whole 32-row warp tiles
    efficiency = _check_stage_plan(host, desc, plan, STAGES[stage], sms, optin)
    print(f"{stage} on {gpu}: shape {plan.shape} ({plan.bm}x{plan.bn}), {plan.mExtent} pixels x {plan.nTiles} "
          f"channel tiles x {plan.splitK} K splits = {plan.ctas} CTAs, wave efficiency {efficiency:.3f}")


def test_shapes_that_do_not_fit_a_99_kb_gpu_are_not_planned_there(host):
    # sm_86/89 allow 99 KB per block: the 256 x 128 shape (120 KB at 3x3) is not used there; 128 channels
    # then run in the 128 x 256 shape or two 64-channel tiles, whichever the planner models faster.
    desc = _stage_desc(128, 100, 168)
    big = plan_for(host, desc, 132, 227 << 10, 50 << 20)
    small = plan_for(host, desc, 84, 99 << 10, 6 << 20)
    assert big.shape == 1 and big.sharedBytes > 99 << 10
    assert small is not None and small.shape != 1 and small.sharedBytes <= 99 << 10


def _nhwc_plan(host, x, offset, weight, bias, mask, plan, conv=((1, 1), (1, 1), (1, 1)), partials=False):
    """The NHWC entry with ``plan`` (an OHWI weight: the workspace starts with the split-K partial sums);
    with ``partials``, also the plan's fp32 partial sums [splitK][pixels][cOut]."""
    ohwi = weight.permute(0, 2, 3, 1).contiguous()
    desc = make_desc(x, offset, ohwi, bias, mask, *conv, "OHWI")
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    y = torch.full((desc.batch, desc.outHeight, desc.outWidth, desc.outChannels), float("nan"), dtype=torch.float16)
    ws = host.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc))
    workspace = torch.full((max(ws, 1),), 0xFF, dtype=torch.uint8)
    rc = host.deformrt_dcn_forward_nhwc_host_plan(ctypes.byref(desc), x_nhwc.data_ptr(), ohwi.data_ptr(),
                                                  offset.contiguous().data_ptr(), _ptr(bias), _ptr(mask),
                                                  y.data_ptr(), workspace.data_ptr(), ws, ctypes.byref(plan))
    assert rc == 0
    if partials:
        count = plan.splitK * desc.batch * desc.outHeight * desc.outWidth * desc.outChannels
        return y.permute(0, 3, 1, 2), workspace[:4 * count].view(torch.float32).clone()
    return y.permute(0, 3, 1, 2)


def _long_k_case(seed: int, c_out: int, h: int, w: int):
    """A random 3x3 fp16 problem with 256 input channels: K = 256 x 9 = 2304, long enough to be split."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 256, h, w, generator=g).half()
    weight = (torch.randn(c_out, 256, 3, 3, generator=g) / 48).half()
    offset = (torch.randn(1, 18, h, w, generator=g) * 2).half()
    mask = torch.rand(1, 9, h, w, generator=g).half()
    bias = torch.randn(c_out, generator=g).half()
    return x, offset, weight, bias, mask, make_desc(x, offset, weight, bias, mask, (1, 1), (1, 1), (1, 1))


def test_pixels_per_cta_and_k_splits_keep_the_result(host):
    # K = 256 x 9 = 2304: K may be split. Every tile shape and pixel extent gives the same bits (the K order
    # does not change); a K split adds the splits' fp32 partial sums in a fixed order: the same bits on every
    # run, within an fp16 ulp or two of the unsplit result, and within the fp16 RMS rule. 99 pixels: with 32
    # or 96 per CTA, the 64-row warp tiles of shapes 0 and 1 have a gathered first and an empty second
    # 32-row block (it skips its MMAs).
    x, offset, weight, bias, mask, desc = _long_k_case(21, 40, 9, 11)
    results = {}
    for shape, extent, split in ((2, 32, 1), (2, 64, 1), (0, 32, 1), (0, 96, 1), (1, 96, 1), (1, 160, 1),
                                 (2, 32, 2), (2, 32, 3), (2, 32, 3)):
        plan = plan_for(host, desc, 132, 227 << 10, 50 << 20, shape=shape, extent=extent, split=split)
        assert plan is not None and (plan.mExtent, plan.splitK) == (extent, split)
        y = _nhwc_plan(host, x, offset, weight, bias, mask, plan)
        assert not torch.isnan(y).any()
        results.setdefault(split, []).append(y)
    unsplit = results[1][0]
    assert all(torch.equal(y.view(torch.int16), unsplit.view(torch.int16)) for y in results[1])
    assert torch.equal(results[3][0].view(torch.int16), results[3][1].view(torch.int16))
    ulp = _fp16_ulps(unsplit)
    for split in (2, 3):
        assert ((results[split][0].float() - unsplit.float()).abs() <= 2 * ulp).all()
        ref = deform_conv2d_reference(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), mask)
        assert fp16_error_ratio(results[split][0], ref, x, weight, bias, (1, 1), (1, 1), (1, 1), 1) <= FP16_RMS_RATIO


# The Hopper wgmma kernel (plugins/src/deformConvWgmma.h): its plan and its CPU emulation.
H100 = GPUS["H100 SXM"]


def wgmma_plan_for(host, desc, sms=H100[0], optin=H100[1], l2=H100[2], shape=-1, extent=0, split=0):
    plan = TcPlan()
    rc = host.deformrt_dcn_tc_plan_wgmma(ctypes.byref(desc), sms, optin, l2, shape, extent, split, ctypes.byref(plan))
    return plan if rc == 0 else None


@pytest.mark.parametrize("stage", list(STAGES))
def test_wgmma_plan_gathers_once_per_cta_and_fills_an_h100_at_batch_1(host, stage):
    # 128 pixels x 128 channels (res3's C_out) or x 256 per CTA, two warpgroups of 64 rows: each sampled
    # element gathered once per 256 output channels (res5 twice), and pixels per CTA (64 or 128) and K splits
    # that keep at least 85 % of the busiest SM's work useful on the 132 SMs of an H100 SXM.
    c, h, w = STAGES[stage]
    sms, optin, _ = H100
    desc = _stage_desc(c, h, w)
    plan = wgmma_plan_for(host, desc)
    assert plan is not None, f"the wgmma kernel must take {stage}"
    assert (plan.shape, plan.bm, plan.bn) == ((4, 128, 128) if c <= 128 else (3, 128, 256))
    assert plan.nTiles == -(-c // plan.bn) <= 2 and plan.mExtent in (64, 128)
    efficiency = _check_stage_plan(host, desc, plan, STAGES[stage], sms, optin)
    print(f"wgmma {stage} on H100 SXM: shape {plan.shape} ({plan.bm}x{plan.bn}), {plan.mExtent} pixels x "
          f"{plan.nTiles} channel tiles x {plan.splitK} K splits = {plan.ctas} CTAs, wave efficiency {efficiency:.3f}")


def test_wgmma_plan_needs_16_byte_channel_vectors_and_its_own_shapes(host):
    # The wgmma kernel has no scalar gather: channel counts off multiples of 8 stay on mma.sync; the
    # mma.sync shapes are not wgmma plans, nor the other way round.
    odd = make_desc(torch.empty(1, 12, 9, 9), torch.empty(1, 18, 9, 9), torch.empty(16, 12, 3, 3), None, None,
                    (1, 1), (1, 1), (1, 1))
    assert wgmma_plan_for(host, odd) is None and plan_for(host, odd, *H100) is not None
    desc = _stage_desc(256, 50, 84)
    assert wgmma_plan_for(host, desc, shape=0) is None and plan_for(host, desc, *H100, shape=3) is None
    assert wgmma_plan_for(host, desc, shape=4).bn == 128
    assert wgmma_plan_for(host, desc, extent=96) is None  # whole warpgroups of 64 rows


def test_sm90a_launch_plan_is_wgmma_where_it_applies_else_mma_sync(host):
    # deformrt_dcn_tc_plan_sm90a is the CUDA launcher's planner on an H100 with the default (sm_90a) build:
    # the wgmma plan where that kernel takes the problem, else the mma.sync plan, with forced parts passed on.
    rng = random.Random()
    cases = [_stage_desc(*STAGES[stage]) for stage in STAGES]
    for _ in range(6):
        x, offset, weight, bias, mask, conv, _groups = _wgmma_case(rng)
        cases.append(make_desc(x, offset, weight, bias, mask, *conv))
    c = rng.choice([12, 20, 36])  # off multiples of 8: no 16-byte vectors, mma.sync only
    cases.append(make_desc(torch.empty(1, c, 9, 11), torch.empty(1, 18, 9, 11), torch.empty(16, c, 3, 3), None,
                           None, (1, 1), (1, 1), (1, 1)))
    kernels = set()
    for desc in cases:
        for forced in ({}, {"extent": 64}, {"split": 2}):
            plan = TcPlan()
            rc = host.deformrt_dcn_tc_plan_sm90a(ctypes.byref(desc), *H100, -1, forced.get("extent", 0),
                                                 forced.get("split", 0), ctypes.byref(plan))
            wgmma = wgmma_plan_for(host, desc, **forced)
            expected = wgmma or plan_for(host, desc, *H100, **forced)
            if expected is None:
                assert rc == 1
                continue
            assert rc == 0 and bytes(plan) == bytes(expected), (forced, plan.shape, expected.shape)
            assert plan.kernel == ("wgmma" if wgmma else "mma.sync")
            kernels.add(plan.kernel)
    assert kernels == {"wgmma", "mma.sync"}


def _wgmma_case(rng: random.Random):
    """A random fp16 problem the wgmma kernel takes (chunks of 8, 16, 24 or 32 channels), output channels
    across the 128 and 256 tile widths, spatial sizes that leave a partial warpgroup."""
    while True:
        groups, dg = rng.choice([1, 1, 2]), rng.choice([1, 2, 4])
        c = math.lcm(groups, dg) * 8 * rng.choice([1, 2, 3, 4])
        if math.gcd(c // groups, c // dg) in (8, 16, 24, 32, 48, 64, 96, 128):
            break
    c_out = groups * rng.choice([24, 72, 136, 264])
    stride, padding, dilation = (rng.randint(1, 2),) * 2, (rng.randint(0, 1), 1), (1, rng.randint(1, 2))
    h, w, n = rng.randint(6, 11), rng.randint(6, 13), rng.randint(1, 2)
    ho = (h + 2 * padding[0] - dilation[0] * 2 - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * 2 - 1) // stride[1] + 1
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    x = torch.randn(n, c, h, w, generator=g).half()
    weight = (torch.randn(c_out, c // groups, 3, 3, generator=g) / math.sqrt(c)).half()
    offset = (torch.randn(n, 18 * dg, ho, wo, generator=g) * 2).half()
    mask = torch.rand(n, 9 * dg, ho, wo, generator=g).half()
    bias = torch.randn(c_out, generator=g).half() if rng.random() < 0.5 else None
    return x, offset, weight, bias, mask, (stride, padding, dilation), groups


def _chunk_channels(c: int, groups: int, dg: int) -> int:
    """The kernels' channels per K step (makeTcGeometry): the largest divisor of gcd(c / groups, c / dg) up to 32."""
    common = math.gcd(c // groups, c // dg)
    return max(d for d in range(1, 33) if common % d == 0)


def _register_a_order(channels: int) -> torch.Tensor:
    """The channel order in which the mma.sync kernel sums what the wgmma kernel sums (its register-A K order,
    deformConvTensorCore.h): within each 32-channel step, position 16s + 2q + 8h + e holds channel
    8q + 4s + 2h + e, so that mma.sync's K slice s has the channels of the wgmma kernel's slice s."""
    assert channels % 32 == 0
    step = [8 * ((k >> 1) & 3) + 4 * (k >> 4) + 2 * ((k >> 3) & 1) + (k & 1) for k in range(32)]
    assert sorted(step) == list(range(32))
    return torch.tensor([32 * (i // 32) + step[i % 32] for i in range(channels)])


@pytest.mark.parametrize("seed", range(4))
def test_wgmma_emulation_is_mma_sync_up_to_fp32_grouping_and_meets_the_fp16_accuracy(host, seed):
    # The emulation takes A from the threads' fragment registers and B through the wgmma descriptor with the
    # 64-byte swizzle applied to the addresses. Its register-A K order puts other products in each 16-deep
    # slice than the mma.sync kernel, so the two paths' fp32 sums differ in grouping only: every output within
    # two fp16 ulps of the mma.sync path's, both shapes with 64 or 128 pixels per CTA (a descriptor, swizzle,
    # fragment or row-ownership error would be far off), and the fp16 RMS criterion against float64 on fresh
    # random inputs. Where the steps are whole 32-channel chunks, mma.sync on the channels in the register-A
    # order sums the same slices: the same bits. The output starts as NaN: a missed element fails.
    x, offset, weight, bias, mask, conv, groups = _wgmma_case(random.Random(700 + seed))
    desc = make_desc(x, offset, weight, bias, mask, *conv)
    reference_plan = plan_for(host, desc, *H100, shape=2, extent=32, split=1)
    expected = _nhwc_plan(host, x, offset, weight, bias, mask, reference_plan, conv)
    assert not torch.isnan(expected).any()
    ref = deform_conv2d_reference(x, offset, weight, bias, *conv, mask)
    whole_chunks = _chunk_channels(x.shape[1], groups, offset.shape[1] // 18) == 32
    if whole_chunks:
        reordered = _nhwc_plan(host, x[:, _register_a_order(x.shape[1])], offset,
                               weight[:, _register_a_order(weight.shape[1])], bias, mask, reference_plan, conv)
    for shape, extent in ((3, 128), (4, 64)):
        plan = wgmma_plan_for(host, desc, shape=shape, extent=extent, split=1)
        assert plan is not None and (plan.shape, plan.mExtent) == (shape, extent)
        y = _nhwc_plan(host, x, offset, weight, bias, mask, plan, conv)
        assert not torch.isnan(y).any()
        assert ((y.float() - expected.float()).abs() <= 2 * _fp16_ulps(expected)).all(), (shape, extent)
        if whole_chunks:
            assert torch.equal(y.view(torch.int16), reordered.view(torch.int16)), (shape, extent)
        ratio = fp16_error_ratio(y, ref, x, weight, bias, *conv, groups)
        assert ratio <= FP16_RMS_RATIO
    print(f"wgmma emulation seed {seed}: fp16 RMS error {ratio:.2f}x a dense fp16 conv's, "
          f"{'the bits of mma.sync in the register-A order' if whole_chunks else 'chunks under 32 channels'}")


def test_wgmma_split_k_gives_the_bits_of_mma_sync_in_the_register_a_order(host):
    # K = 256 x 9: split in 3. Each split's fp32 partial sums and their fixed-order reduction are those of
    # the mma.sync path summing the channels in the wgmma kernel's register-A K order (32-channel chunks),
    # bit for bit; the natural order's fp32 sums differ (other products share a slice), within fp32 rounding;
    # the fp16 result within two fp16 ulps of the natural order's.
    x, offset, weight, bias, mask, desc = _long_k_case(31, 72, 6, 7)
    order = _register_a_order(256)
    y, sums = _nhwc_plan(host, x, offset, weight, bias, mask, wgmma_plan_for(host, desc, shape=4, split=3),
                         partials=True)
    mma_plan = plan_for(host, desc, *H100, shape=2, split=3)
    reordered, reordered_sums = _nhwc_plan(host, x[:, order], offset, weight[:, order], bias, mask, mma_plan,
                                           partials=True)
    assert torch.equal(sums.view(torch.int32), reordered_sums.view(torch.int32))
    assert torch.equal(y.view(torch.int16), reordered.view(torch.int16))
    natural, natural_sums = _nhwc_plan(host, x, offset, weight, bias, mask, mma_plan, partials=True)
    assert not torch.equal(sums.view(torch.int32), natural_sums.view(torch.int32))
    assert ((sums.double() - natural_sums.double()).abs() <= 1e-5 * natural_sums.double().abs().max()).all()
    assert ((y.float() - natural.float()).abs() <= 2 * _fp16_ulps(natural)).all()
    ref = deform_conv2d_reference(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), mask)
    assert fp16_error_ratio(y, ref, x, weight, bias, (1, 1), (1, 1), (1, 1), 1) <= FP16_RMS_RATIO


@pytest.mark.parametrize("c_out,with_bias", [(70, True), (264, False)])
def test_split_k_reduction_adds_the_splits_in_order_then_the_bias_once(host, c_out, with_bias):
    # The reduction's threads take two runs of 4 output channels 128 apart each (the CPU build walks the
    # kernel's threads): C_out 70 ends in a 2-channel run and has no second runs, 264 a second 256-channel
    # block of one run. Every output is its fp32 partial sums added in split order from 0, plus the bias,
    # rounded once to fp16 (recomputed here in torch), on the NHWC entry and on the NCHW one (the same plan,
    # the assumed H100's: it splits these 35 pixels' K in 8).
    x, offset, weight, bias, mask, _ = _long_k_case(60 + c_out, c_out, 5, 7)
    bias = bias if with_bias else None
    plan = wgmma_plan_for(host, make_desc(x, offset, weight, bias, mask, (1, 1), (1, 1), (1, 1)))
    assert plan.splitK > 1
    y, sums = _nhwc_plan(host, x, offset, weight, bias, mask, plan, partials=True)
    total = torch.zeros(35, c_out)
    for split in sums.view(plan.splitK, 35, c_out):
        total = total + split
    expected = (total + (bias.float() if bias is not None else 0.0)).half()
    assert torch.equal(y.permute(0, 2, 3, 1).reshape(35, c_out).view(torch.int16), expected.view(torch.int16))
    nchw = run_host(host, x, offset, weight, bias, mask, (1, 1), (1, 1), (1, 1))
    assert torch.equal(nchw.view(torch.int16), y.view(torch.int16))
    ref = deform_conv2d_reference(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), mask)
    assert fp16_error_ratio(y, ref, x, weight, bias, (1, 1), (1, 1), (1, 1), 1) <= FP16_RMS_RATIO
