"""models.deform_conv2d against an independent float64 reference, on fresh random inputs."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from dcn_reference import deform_conv2d_reference
from models import deform_conv2d
from models.ops import deform_conv as dc
from models.ops import select_backend, use_backend

# (N, C_in, C_out, H, W, k, stride, pad, dil, groups, dg, mask, bias)
CASES = [
    (1, 4, 6, 7, 9, 3, 1, 1, 1, 1, 1, False, False),
    (2, 4, 6, 8, 8, 3, 2, 1, 1, 1, 1, True, True),
    (2, 6, 4, 9, 7, 3, 1, 2, 2, 2, 3, True, False),
    (1, 8, 8, 10, 6, 3, 2, 2, 2, 4, 2, False, True),
    (3, 4, 2, 5, 11, (3, 2), (1, 2), (1, 0), (2, 1), 2, 4, True, True),
    (1, 3, 5, 1, 6, 1, 1, 0, 1, 1, 1, True, True),  # 1-pixel-high image
    (2, 4, 4, 6, 6, 5, 1, 2, 1, 1, 2, True, False),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _make(case, dtype, gen, offset_scale=4.0):
    n, c, co, h, w, k, s, p, d, g, dg, use_mask, use_bias = case
    kh, kw = _pair(k)
    s, p, d = _pair(s), _pair(p), _pair(d)
    ho = (h + 2 * p[0] - (d[0] * (kh - 1) + 1)) // s[0] + 1
    wo = (w + 2 * p[1] - (d[1] * (kw - 1) + 1)) // s[1] + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    wt = torch.randn(co, c // g, kh, kw, generator=gen, dtype=dtype)
    # Offsets of several pixels: many samples land outside the image and on its border.
    off = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=gen, dtype=dtype) * offset_scale
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=gen, dtype=dtype) if use_mask else None
    bias = torch.randn(co, generator=gen, dtype=dtype) if use_bias else None
    return x, off, wt, bias, mask, s, p, d


@pytest.fixture
def gen():
    g = torch.Generator().manual_seed(random.randrange(2**31))
    return g


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-k{c[5]}-s{c[6]}-g{c[9]}-dg{c[10]}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_float64_reference(case, dtype, gen):
    x, off, wt, bias, mask, s, p, d = _make(case, dtype, gen)
    got = deform_conv2d(x, off, wt, bias, s, p, d, mask)
    ref = deform_conv2d_reference(x, off, wt, bias, s, p, d, mask)
    assert got.dtype == dtype and got.shape == ref.shape
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    scale = ref.abs().max().item()
    assert (got.double() - ref).abs().max().item() <= tol * max(scale, 1.0)


def test_offsets_leave_the_image_entirely(gen):
    # Every sample far outside: output is the bias alone.
    x, off, wt, bias, mask, s, p, d = _make(CASES[1], torch.float64, gen)
    off = off.sign() * 1000 + off.sign().eq(0) * 1000
    got = deform_conv2d(x, off, wt, bias, s, p, d, mask)
    assert torch.allclose(got, bias.view(1, -1, 1, 1).expand_as(got))


@pytest.mark.parametrize("case", CASES[:5])
def test_zero_offsets_and_unit_mask_equal_conv2d(case, gen):
    x, off, wt, bias, mask, s, p, d = _make(case, torch.float64, gen)
    g = x.shape[1] // wt.shape[1]
    mask = torch.ones_like(mask) if mask is not None else None
    got = deform_conv2d(x, torch.zeros_like(off), wt, bias, s, p, d, mask)
    ref = F.conv2d(x, wt, bias, s, p, d, g)
    assert (got - ref).abs().max().item() < 1e-12


def test_integer_offsets_shift_the_image(gen):
    # Offsets of exactly (+1, -2) with padding 1 sample x[y + i, x + j - 3]: a dense conv of the
    # image zero-padded by 3 on the left and 2 at the bottom, cropped to the output size.
    x = torch.randn(1, 3, 8, 9, generator=gen, dtype=torch.float64)
    wt = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64)
    off = torch.zeros(1, 18, 8, 9, dtype=torch.float64)
    off[:, 0::2] = 1.0
    off[:, 1::2] = -2.0
    got = deform_conv2d(x, off, wt, None, 1, 1, 1)
    ref = F.conv2d(F.pad(x, (3, 0, 0, 2)), wt)[..., :8, :9]
    assert (got - ref).abs().max().item() < 1e-12


def test_chunking_does_not_change_the_result(gen, monkeypatch):
    x, off, wt, bias, mask, s, p, d = _make(CASES[2], torch.float64, gen)
    whole = deform_conv2d(x, off, wt, bias, s, p, d, mask)
    monkeypatch.setattr(dc, "CHUNK_ELEMENTS", 1)  # one output row per chunk
    chunked = deform_conv2d(x, off, wt, bias, s, p, d, mask)
    assert (whole - chunked).abs().max().item() < 1e-12


def test_half_precision_input_computes_in_fp32(gen):
    x, off, wt, bias, mask, s, p, d = _make(CASES[1], torch.float32, gen)
    args = [t.half() if t is not None else None for t in (x, off, wt, bias, mask)]
    got = deform_conv2d(args[0], args[1], args[2], args[3], s, p, d, args[4])
    assert got.dtype == torch.float16
    ref = deform_conv2d_reference(*[a.double() if a is not None else None for a in args[:4]], s, p, d,
                                  args[4].double())
    # Inputs are exactly representable; only the final fp16 store rounds.
    assert (got.double() - ref).abs().max().item() <= 2 ** -10 * ref.abs().max().item()


@pytest.mark.parametrize("bad,match", [
    (dict(off_ch=17), "multiple of 2"),
    (dict(mask_ch=8), "mask shape"),
    (dict(bias_len=5), "bias shape"),
    (dict(wt_cin=3), "not divisible"),
    (dict(off_hw=(3, 3)), "offset shape"),
])
def test_bad_shapes_are_rejected(bad, match, gen):
    x = torch.randn(1, 4, 6, 6, generator=gen)
    wt = torch.randn(4, bad.get("wt_cin", 4), 3, 3, generator=gen)
    hw = bad.get("off_hw", (6, 6))
    off = torch.randn(1, bad.get("off_ch", 18), *hw, generator=gen)
    mask = torch.rand(1, bad.get("mask_ch", 9), 6, 6, generator=gen)
    bias = torch.randn(bad.get("bias_len", 4), generator=gen)
    with pytest.raises(ValueError, match=match):
        deform_conv2d(x, off, wt, bias, 1, 1, 1, mask)


def test_fake_impl_gives_shapes_under_export(gen):
    class M(torch.nn.Module):
        def forward(self, x, off, w):
            return deform_conv2d(x, off, w, None, 2, 1, 1)

    x = torch.randn(1, 4, 9, 9, generator=gen)
    w = torch.randn(6, 4, 3, 3, generator=gen)
    off = torch.randn(1, 18, 5, 5, generator=gen)
    ep = torch.export.export(M(), (x, off, w))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.deformrt.deform_conv2d.default in targets
    out = [n for n in ep.graph.nodes if n.op == "output"][0].args[0][0]
    assert tuple(out.meta["val"].shape) == (1, 6, 5, 5)


def test_backend_selection_on_cpu():
    assert select_backend(torch.device("cpu")) == "reference"
    with use_backend("reference"):
        assert select_backend(torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="unknown deform_conv2d backend"):
        with use_backend("cudnn"):
            pass
    with use_backend("torchvision"):
        with pytest.raises(RuntimeError, match="needs CUDA"):
            select_backend(torch.device("cpu"))
