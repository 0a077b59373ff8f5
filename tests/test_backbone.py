"""models.backbone: every registry body, upstream's state-dict layout, and numerics against an
independent functional float64 re-implementation written from the facts sheet."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli_shell import load_script
from dcn_reference import deform_conv2d_reference
from exporter.util.progress import Progress
from models.backbone import Backbone, body_info, build_backbone, list_bodies
from models.config import get_cfg
from models.errors import DeformRTError
from models.layers import DFConv2d, FrozenBatchNorm2d
from models.registry import BACKBONES, Registry, closest_match
from models.resnet import Bottleneck, DeformSpec

ALL_BODIES = ["R-50-C4", "R-50-C5", "R-101-C4", "R-101-C5", "R-50-FPN", "R-50-FPN-RETINANET", "R-101-FPN",
              "R-101-FPN-RETINANET", "R-152-FPN"]
GN = ["MODEL.RESNETS.STEM_FUNC", "StemWithGN", "MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGN"]
DCN_C3_C5 = ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)"]
# Narrow widths for the numerical whole-network checks (same structure, far fewer FLOPs).
SLIM = ["MODEL.RESNETS.STEM_OUT_CHANNELS", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
        "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 16]


def build(body, opts=(), device=None) -> Backbone:
    cfg = get_cfg(body, opts=list(opts))
    if device is None:
        return build_backbone(cfg)
    with torch.device(device):
        return build_backbone(cfg)


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial norms and biases, so that a wrong formula or a swapped buffer shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.2)
    return model


# ------------------------------------------------------------------------------------------------
# Expected state-dict layout, generated from the facts sheet (section 4) independently of models/


def expected_layout(body, *, dcn=(False,) * 4, modulated=False, dg=1, groups=1, wpg=64, stem=64, res2=256,
                    width=256, gn_stem=False, gn_blocks=False, fpn_gn=False, fpn_relu=False, use_c5=True):
    """[(key, shape)] in upstream's order for the backbone module (keys without 'backbone.')."""
    depth = body.split("-")[1]
    counts = {"50": [3, 4, 6, 3], "101": [3, 4, 23, 3], "152": [3, 8, 36, 3]}[depth]
    if body.endswith("C4"):
        counts = counts[:3]
    out = []

    def norm(prefix, c, gn):
        out.extend([(f"{prefix}.weight", [c]), (f"{prefix}.bias", [c])])
        if not gn:
            out.extend([(f"{prefix}.running_mean", [c]), (f"{prefix}.running_var", [c])])

    out.append(("body.stem.conv1.weight", [stem, 3, 7, 7]))
    norm("body.stem.bn1", stem, gn_stem)
    for layer, n in enumerate(counts, start=1):
        w, o = groups * wpg * 2 ** (layer - 1), res2 * 2 ** (layer - 1)
        for b in range(n):
            p = f"body.layer{layer}.{b}"
            cin = (stem if layer == 1 else o // 2) if b == 0 else o
            if b == 0:
                out.append((f"{p}.downsample.0.weight", [o, cin, 1, 1]))
                norm(f"{p}.downsample.1", o, gn_blocks)
            out.append((f"{p}.conv1.weight", [w, cin, 1, 1]))
            norm(f"{p}.bn1", w, gn_blocks)
            if dcn[layer - 1]:
                oc = dg * (27 if modulated else 18)
                out += [(f"{p}.conv2.offset.weight", [oc, w, 3, 3]), (f"{p}.conv2.offset.bias", [oc]),
                        (f"{p}.conv2.conv.weight", [w, w // groups, 3, 3])]
            else:
                out.append((f"{p}.conv2.weight", [w, w // groups, 3, 3]))
            norm(f"{p}.bn2", w, gn_blocks)
            out.append((f"{p}.conv3.weight", [o, w, 1, 1]))
            norm(f"{p}.bn3", o, gn_blocks)
    if "FPN" not in body:
        return out
    retina = body.endswith("RETINANET")
    ins = [0 if retina else res2, res2 * 2, res2 * 4, res2 * 8]

    def conv(name, cin, k):
        if not fpn_gn and not fpn_relu:
            out.extend([(f"fpn.{name}.weight", [width, cin, k, k]), (f"fpn.{name}.bias", [width])])
        elif not fpn_gn:
            out.extend([(f"fpn.{name}.0.weight", [width, cin, k, k]), (f"fpn.{name}.0.bias", [width])])
        else:
            out.extend([(f"fpn.{name}.0.weight", [width, cin, k, k]), (f"fpn.{name}.1.weight", [width]),
                        (f"fpn.{name}.1.bias", [width])])

    for i, c in enumerate(ins, start=1):
        if c:
            conv(f"fpn_inner{i}", c, 1)
            conv(f"fpn_layer{i}", width, 3)
    if retina:
        p6_in = res2 * 8 if use_c5 else width
        out += [("fpn.top_blocks.p6.weight", [width, p6_in, 3, 3]), ("fpn.top_blocks.p6.bias", [width]),
                ("fpn.top_blocks.p7.weight", [width, width, 3, 3]), ("fpn.top_blocks.p7.bias", [width])]
    return out


def layout(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("body", ALL_BODIES)
def test_every_body_has_upstreams_state_dict(body):
    assert list_bodies() == ALL_BODIES
    model = build(body, device="meta")
    assert layout(model) == expected_layout(body, width=256 if "FPN" in body else 1024)


@pytest.mark.parametrize("modulated,dg", [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_dcn_state_dict(modulated, dg):
    model = build("R-50-FPN", DCN_C3_C5 + ["MODEL.RESNETS.WITH_MODULATED_DCN", modulated,
                                           "MODEL.RESNETS.DEFORMABLE_GROUPS", dg], device="meta")
    got = layout(model)
    assert got == expected_layout("R-50-FPN", dcn=(False, True, True, True), modulated=modulated, dg=dg)
    assert len(got) == 307 and len(expected_layout("R-50-FPN")) == 281  # the facts sheet's counts
    assert not any(k.endswith("conv2.conv.bias") for k, _ in got)


@pytest.mark.parametrize("gn_stem,gn_blocks", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("fpn_gn,fpn_relu", [(False, False), (True, False), (False, True), (True, True)])
def test_group_norm_and_fpn_variants_state_dict(gn_stem, gn_blocks, fpn_gn, fpn_relu):
    opts = ["MODEL.FPN.USE_GN", fpn_gn, "MODEL.FPN.USE_RELU", fpn_relu]
    if gn_stem:
        opts += GN[:2]
    if gn_blocks:
        opts += GN[2:]
    model = build("R-50-FPN", opts, device="meta")
    assert layout(model) == expected_layout("R-50-FPN", gn_stem=gn_stem, gn_blocks=gn_blocks, fpn_gn=fpn_gn,
                                            fpn_relu=fpn_relu)
    gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert gns and all(m.num_groups == 32 and m.eps == 1e-5 for m in gns)


@pytest.mark.parametrize("use_c5", [True, False])
def test_retinanet_state_dict(use_c5):
    model = build("R-101-FPN-RETINANET", ["MODEL.RETINANET.USE_C5", use_c5], device="meta")
    got = layout(model)
    assert got == expected_layout("R-101-FPN-RETINANET", use_c5=use_c5)
    fpn_keys = [k for k, _ in got if k.startswith("fpn.")]
    assert fpn_keys[0] == "fpn.fpn_inner2.weight" and not any("inner1" in k or "layer1" in k for k in fpn_keys)
    assert model.fpn.top_blocks.use_p5 is (not use_c5)


def test_resnext_and_custom_widths_state_dict():
    model = build("R-101-FPN", ["MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 8,
                                "MODEL.RESNETS.STRIDE_IN_1X1", False] + DCN_C3_C5, device="meta")
    assert layout(model) == expected_layout("R-101-FPN", groups=32, wpg=8, dcn=(False, True, True, True))
    assert model.body.layer3[5].conv2.conv.weight.shape == (1024, 32, 3, 3)
    model = build("R-50-C5", ["MODEL.RESNETS.STEM_OUT_CHANNELS", 32, "MODEL.RESNETS.RES2_OUT_CHANNELS", 128],
                  device="meta")
    assert layout(model) == expected_layout("R-50-C5", stem=32, res2=128)
    assert model.output_channels == (1024,)


def test_res5_dilation_is_head_only():
    plain = build("R-50-C5", device="meta")
    dilated = build("R-50-C5", ["MODEL.RESNETS.RES5_DILATION", 2], device="meta")
    assert layout(plain) == layout(dilated)
    assert all(m.dilation == (1, 1) for m in dilated.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("stride_in_1x1", [True, False])
@pytest.mark.parametrize("with_dcn", [False, True])
def test_stride_placement(stride_in_1x1, with_dcn):
    opts = ["MODEL.RESNETS.STRIDE_IN_1X1", stride_in_1x1] + (DCN_C3_C5 if with_dcn else [])
    model = build("R-50-FPN", opts, device="meta")
    for layer in range(1, 5):
        for b, block in enumerate(model.body.get_submodule(f"layer{layer}")):
            stride = 2 if (layer > 1 and b == 0) else 1
            s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
            assert block.conv1.stride == (s1, s1)
            if isinstance(block.conv2, DFConv2d):
                assert layer > 1
                assert block.conv2.offset.stride == (s3, s3) and block.conv2.conv.stride == s3
            else:
                assert block.conv2.stride == (s3, s3)
            assert block.conv3.stride == (1, 1)
            if b == 0:
                assert block.downsample[0].stride == (stride, stride)


# ------------------------------------------------------------------------------------------------
# Outputs of every body


def check_outputs(model, x, names, strides, channels):
    with torch.inference_mode():
        outs = model(x)
    assert isinstance(outs, tuple if "fpn" in model._modules else list)
    assert (model.output_names, model.output_strides, model.output_channels) == (names, strides, channels)
    assert len(outs) == len(names)
    h, w = x.shape[-2:]
    for out, s, c in zip(outs, strides, channels):
        assert tuple(out.shape) == (x.shape[0], c, math.ceil(h / s), math.ceil(w / s))
        assert torch.isfinite(out).all()


def default_outputs(body, width=256):
    if body.endswith("C4"):
        return ("C4",), (16,), (1024,)
    if body.endswith("C5"):
        return ("C5",), (32,), (2048,)
    if body.endswith("RETINANET"):
        return ("P3", "P4", "P5", "P6", "P7"), (8, 16, 32, 64, 128), (width,) * 5
    return ("P2", "P3", "P4", "P5", "P6"), (4, 8, 16, 32, 64), (width,) * 5


@pytest.mark.parametrize("body", ALL_BODIES)
def test_every_body_runs(body):
    model = build(body)
    x = torch.randn(1, 3, 64, 96)
    check_outputs(randomize(model).eval(), x, *default_outputs(body))
    info = body_info(body)
    assert (tuple(info["outputs"]), tuple(info["strides"]), tuple(info["channels"])) == default_outputs(body)
    assert info["name"] == body and info["dcn_capable"] is True
    assert info["dcn_stages"] == ["res2", "res3", "res4"] + ([] if body.endswith("C4") else ["res5"])
    assert model.body_name == body
    assert model.size_divisibility == (32 if "FPN" in body else 1)


@pytest.mark.parametrize("body", ALL_BODIES)
def test_every_body_runs_with_group_norm(body):
    # Narrow widths: GN at 4 channels per group everywhere.
    opts = SLIM + GN + ["MODEL.FPN.USE_GN", True, "MODEL.GROUP_NORM.NUM_GROUPS", -1, "MODEL.GROUP_NORM.DIM_PER_GP", 4]
    model = randomize(build(body, opts)).eval()
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) > 3 * sum(body_info(body)["blocks"])
    names, strides, _ = default_outputs(body)
    channels = {"C4": (128,), "C5": (256,)}.get(names[0], (16,) * 5)
    check_outputs(model, torch.randn(1, 3, 64, 96), names, strides, channels)


@pytest.mark.parametrize("opts", [
    DCN_C3_C5,
    DCN_C3_C5 + ["MODEL.RESNETS.WITH_MODULATED_DCN", True],
    ["MODEL.RESNETS.STAGE_WITH_DCN", "(True, True, True, True)", "MODEL.RESNETS.WITH_MODULATED_DCN", True,
     "MODEL.RESNETS.DEFORMABLE_GROUPS", 4, "MODEL.RESNETS.STRIDE_IN_1X1", False],
], ids=["dcn", "mdcn", "mdcn-dg4-stride3x3"])
def test_dcn_bodies_run(opts):
    model = randomize(build("R-50-FPN", SLIM + opts)).eval()
    assert sum(isinstance(m, DFConv2d) for m in model.modules()) == (16 if "(True," in opts[1] else 13)
    check_outputs(model, torch.randn(2, 3, 64, 64), *default_outputs("R-50-FPN", 16))


def test_resnext_32x8d_runs():
    model = build("R-101-FPN", ["MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 8,
                                "MODEL.RESNETS.STRIDE_IN_1X1", False])
    assert model.body.layer1[0].conv2.groups == 32
    check_outputs(randomize(model).eval(), torch.randn(1, 3, 64, 64), *default_outputs("R-101-FPN"))


def test_c4_body_accepts_any_size_and_size_divisibility_follows_cfg():
    model = randomize(build("R-50-C4", SLIM)).eval()
    check_outputs(model, torch.randn(1, 3, 50, 77), ("C4",), (16,), (128,))
    assert build("R-50-C4", SLIM + ["DATALOADER.SIZE_DIVISIBILITY", 16], device="meta").size_divisibility == 16


def test_fpn_input_must_be_a_multiple_of_32():
    model = build("R-50-FPN", SLIM).eval()
    with pytest.raises(DeformRTError, match=r"multiples of 32 .* got 250x320; pad it to 256x320"):
        model(torch.randn(1, 3, 250, 320))
    check_outputs(model, torch.randn(1, 3, 256, 320), *default_outputs("R-50-FPN", 16))
    with pytest.raises(DeformRTError, match=r"N x 3 x H x W .* \(1, 4, 64, 64\)"):
        model(torch.randn(1, 4, 64, 64))


def test_input_check_is_skipped_while_compiling(monkeypatch):
    # Under torch.compile/export the check must not run (it would add a shape guard), so a bad
    # size reaches the FPN itself and fails there instead.
    model = build("R-50-FPN", SLIM).eval()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(RuntimeError) as info:
        model(torch.randn(1, 3, 250, 320))
    assert not isinstance(info.value, DeformRTError)


def test_torch_export_with_dynamic_size():
    model = randomize(build("R-50-FPN", SLIM + DCN_C3_C5 + ["MODEL.RESNETS.WITH_MODULATED_DCN", True])).eval()
    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    program = torch.export.export(model, (torch.randn(1, 3, 128, 160),), dynamic_shapes={"x": {2: 32 * h, 3: 32 * w}})
    x = torch.randn(1, 3, 96, 192)
    got, want = program.module()(x), model(x)
    assert len(got) == 5
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Numerics against a functional float64 re-implementation


def ref_frozen_bn(x, w, b, mean, var):
    return (x - mean.view(1, -1, 1, 1)) / var.view(1, -1, 1, 1).sqrt() * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def ref_norm(x, sd, prefix, gn):
    """FrozenBN when the state dict has running stats, else GroupNorm (gn = (dim_per_gp, groups, eps))."""
    w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    if f"{prefix}.running_mean" in sd:
        return ref_frozen_bn(x, w, b, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"])
    dim_per_gp, groups, eps = gn
    n, c, hh, ww = x.shape
    g = c // dim_per_gp if dim_per_gp > 0 else groups
    xg = x.reshape(n, g, -1)
    xg = (xg - xg.mean(-1, keepdim=True)) / (xg.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    return xg.reshape(n, c, hh, ww) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)


def ref_conv2(x, sd, p, stride, arch):
    if f"{p}.weight" in sd:
        return F.conv2d(x, sd[f"{p}.weight"], stride=stride, padding=1, groups=arch["groups"])
    predicted = F.conv2d(x, sd[f"{p}.offset.weight"], sd[f"{p}.offset.bias"], stride=stride, padding=1)
    n_off = arch["dg"] * 18
    offset = predicted[:, :n_off]
    mask = predicted[:, n_off:].sigmoid() if arch["modulated"] else None
    if arch["modulated"]:
        assert predicted.shape[1] == arch["dg"] * 27
    return deform_conv2d_reference(x, offset, sd[f"{p}.conv.weight"], None, (stride, stride), (1, 1), (1, 1), mask)


def ref_bottleneck(x, sd, p, stride, arch):
    s1, s3 = (stride, 1) if arch["stride_in_1x1"] else (1, stride)
    gn = arch["gn"]
    identity = x
    if f"{p}.downsample.0.weight" in sd:
        identity = ref_norm(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1", gn)
    y = F.relu(ref_norm(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s1), sd, f"{p}.bn1", gn))
    y = F.relu(ref_norm(ref_conv2(y, sd, f"{p}.conv2", s3, arch), sd, f"{p}.bn2", gn))
    y = ref_norm(F.conv2d(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3", gn)
    return F.relu(y + identity)


def ref_body(x, sd, arch):
    """The stage outputs C2.. of the ResNet body, by walking its state dict."""
    y = F.relu(ref_norm(F.conv2d(x, sd["body.stem.conv1.weight"], stride=2, padding=3), sd, "body.stem.bn1",
                        arch["gn"]))
    y = F.max_pool2d(y, 3, 2, 1)
    outs = []
    layer = 1
    while f"body.layer{layer}.0.conv1.weight" in sd:
        b = 0
        while f"body.layer{layer}.{b}.conv1.weight" in sd:
            y = ref_bottleneck(y, sd, f"body.layer{layer}.{b}", 2 if (layer > 1 and b == 0) else 1, arch)
            b += 1
        outs.append(y)
        layer += 1
    return outs


def up2(x):
    """Nearest 2x upsampling by repetition."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def ref_fpn_conv(x, sd, name, k, arch):
    if f"fpn.{name}.weight" in sd:
        return F.conv2d(x, sd[f"fpn.{name}.weight"], sd[f"fpn.{name}.bias"], padding=k // 2)
    y = F.conv2d(x, sd[f"fpn.{name}.0.weight"], sd.get(f"fpn.{name}.0.bias"), padding=k // 2)
    if f"fpn.{name}.1.weight" in sd:
        y = ref_norm(y, sd, f"fpn.{name}.1", arch["gn"])
    return F.relu(y) if arch["fpn_relu"] else y


def ref_fpn(cs, sd, arch):
    """P outputs from C2..C5 (cs[0] = C2); levels without fpn_inner keys are skipped."""
    levels = [i for i in range(1, 5) if any(k.startswith(f"fpn.fpn_inner{i}.") for k in sd)]
    inner = ref_fpn_conv(cs[levels[-1] - 1], sd, f"fpn_inner{levels[-1]}", 1, arch)
    ps = [ref_fpn_conv(inner, sd, f"fpn_layer{levels[-1]}", 3, arch)]
    for i in reversed(levels[:-1]):
        inner = ref_fpn_conv(cs[i - 1], sd, f"fpn_inner{i}", 1, arch) + up2(inner)
        ps.insert(0, ref_fpn_conv(inner, sd, f"fpn_layer{i}", 3, arch))
    if "fpn.top_blocks.p6.weight" in sd:
        src = cs[-1] if sd["fpn.top_blocks.p6.weight"].shape[1] == cs[-1].shape[1] else ps[-1]
        p6 = F.conv2d(src, sd["fpn.top_blocks.p6.weight"], sd["fpn.top_blocks.p6.bias"], stride=2, padding=1)
        p7 = F.conv2d(F.relu(p6), sd["fpn.top_blocks.p7.weight"], sd["fpn.top_blocks.p7.bias"], stride=2, padding=1)
        return ps + [p6, p7]
    return ps + [ps[-1][..., ::2, ::2]]


def arch_of(cfg):
    r, g = cfg.MODEL.RESNETS, cfg.MODEL.GROUP_NORM
    return {"groups": r.NUM_GROUPS, "stride_in_1x1": r.STRIDE_IN_1X1, "modulated": r.WITH_MODULATED_DCN,
            "dg": r.DEFORMABLE_GROUPS, "gn": (g.DIM_PER_GP, g.NUM_GROUPS, g.EPSILON),
            "fpn_relu": cfg.MODEL.FPN.USE_RELU}


def assert_close(got, want, tol=1e-9):
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= tol * max(1.0, want.abs().max().item()), err


def test_frozen_batch_norm_has_no_eps():
    bn = FrozenBatchNorm2d(6)
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.copy_(torch.tensor([1e-8, 1e-6, 0.5, 1.0, 2.0, 3.0]))  # tiny variances: eps would show
    assert [k for k, _ in bn.state_dict().items()] == ["weight", "bias", "running_mean", "running_var"]
    assert not list(bn.parameters())
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    want = ref_frozen_bn(x, *(t.double() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)))
    got = bn(x)
    assert got.dtype == torch.float64
    assert_close(got, want, 1e-6)  # the buffers are float32; the formula is exact otherwise
    got32 = bn(x.float())
    assert got32.dtype == torch.float32
    assert_close(got32.double(), want, 1e-5)
    assert_close(bn.double()(x), want, 1e-12)


def prefixed(module, prefix="m"):
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


@pytest.mark.parametrize("stride_in_1x1", [True, False])
@pytest.mark.parametrize("groups,gn", [(1, False), (4, False), (2, True)])
def test_bottleneck_matches_functional_reference(stride_in_1x1, groups, gn):
    norm = (lambda c: nn.GroupNorm(4, c)) if gn else FrozenBatchNorm2d
    arch = {"groups": groups, "stride_in_1x1": stride_in_1x1, "gn": (-1, 4, 1e-5)}
    x = torch.randn(2, 24, 13, 10, dtype=torch.float64)
    block = randomize(Bottleneck(24, 16, 48, stride=2, norm=norm, num_groups=groups,
                                 stride_in_1x1=stride_in_1x1)).double()
    y = block(x)
    assert y.shape == (2, 48, 7, 5)
    assert_close(y, ref_bottleneck(x, prefixed(block), "m", 2, arch))
    # A later block of a stage: identity shortcut, no downsample.
    same = randomize(Bottleneck(48, 16, 48, norm=norm, num_groups=groups, stride_in_1x1=stride_in_1x1)).double()
    assert same.downsample is None
    assert_close(same(y), ref_bottleneck(y, prefixed(same), "m", 1, arch))


@pytest.mark.parametrize("stride_in_1x1", [True, False])
@pytest.mark.parametrize("modulated", [False, True])
def test_dcn_block_with_zero_offsets_equals_plain_block(stride_in_1x1, modulated):
    kwargs = dict(stride=2, num_groups=2, stride_in_1x1=stride_in_1x1)
    dcn = randomize(Bottleneck(16, 16, 32, dcn=DeformSpec(modulated=modulated), **kwargs)).double()
    plain = Bottleneck(16, 16, 32, **kwargs).double()
    with torch.no_grad():
        dcn.conv2.offset.weight.zero_()
        dcn.conv2.offset.bias.zero_()
        state = {k: v for k, v in dcn.state_dict().items() if not k.startswith("conv2.")}
        # Zero offsets sample the plain 3x3 grid; the modulated mask is sigmoid(0) = 0.5 everywhere.
        state["conv2.weight"] = dcn.conv2.conv.weight * (0.5 if modulated else 1.0)
        plain.load_state_dict(state)
    x = torch.randn(2, 16, 9, 12, dtype=torch.float64)
    assert_close(dcn(x), plain(x), 1e-12)


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_groups_split_offsets_and_masks_by_group(modulated):
    # Offset conv weights zero, biases chosen: every pixel of deformable group g is shifted by the
    # integer (dy_g, dx_g) and, if modulated, tap k scaled by sigmoid(mask logit[g, k]). That
    # equals a dense conv of each group's channels shifted by (dy_g, dx_g) in a zero-padded image,
    # with the weights scaled per tap: no deformable-conv code involved.
    dg, cin, cout = 2, 6, 5
    conv = DFConv2d(cin, cout, 3, deformable_groups=dg, modulated=modulated).double()
    shifts = [(1, -2), (-1, 0)]
    logits = torch.randn(dg, 9, dtype=torch.float64)
    with torch.no_grad():
        conv.offset.weight.zero_()
        bias = torch.zeros(conv.offset.bias.shape, dtype=torch.float64)
        for g, (dy, dx) in enumerate(shifts):
            bias[g * 18:(g + 1) * 18:2] = dy  # channel g*2K + 2k + 0 = dy of tap k
            bias[g * 18 + 1:(g + 1) * 18:2] = dx
        if modulated:
            assert conv.offset.bias.shape == (dg * 27,)
            bias[dg * 18:] = logits.reshape(-1)  # mask channel g*K + k, after all offsets
        conv.offset.bias.copy_(bias)
    x = torch.randn(2, cin, 7, 8, dtype=torch.float64)
    weight = conv.conv.weight
    pad, per_group = 3, cin // dg
    xp = F.pad(x, (pad, pad, pad, pad))
    want = 0
    for g, (dy, dx) in enumerate(shifts):
        window = xp[:, g * per_group:(g + 1) * per_group, pad - 1 + dy:pad - 1 + dy + 7 + 2,
                    pad - 1 + dx:pad - 1 + dx + 8 + 2]
        wg = weight[:, g * per_group:(g + 1) * per_group]
        if modulated:
            wg = wg * logits[g].sigmoid().view(1, 1, 3, 3)
        want = want + F.conv2d(window, wg)
    assert_close(conv(x), want, 1e-12)


def test_dcn_init_matches_upstream():
    conv = DFConv2d(64, 64, 3, modulated=True)
    assert torch.count_nonzero(conv.offset.bias) == 0
    bound = math.sqrt(6 / (2 * 64 * 9))  # kaiming_uniform with a=1
    w = conv.offset.weight
    assert w.abs().max() <= bound and w.std() > 0.8 * bound / math.sqrt(3)
    assert conv.conv.weight.abs().max() <= 1 / math.sqrt(64 * 9)
    assert not hasattr(conv.conv, "bias")


@pytest.mark.parametrize("variant", ["plain", "gn-relu", "retina-c5", "retina-p5"])
def test_fpn_matches_functional_reference(variant):
    body = "R-50-FPN-RETINANET" if variant.startswith("retina") else "R-50-FPN"
    opts = {"plain": [], "gn-relu": ["MODEL.FPN.USE_GN", True, "MODEL.FPN.USE_RELU", True],
            "retina-c5": [], "retina-p5": ["MODEL.RETINANET.USE_C5", False]}[variant]
    cfg = get_cfg(body, opts=opts)
    fpn = randomize(build_backbone(cfg).fpn).double()
    cs = [torch.randn(1, 256 * 2 ** i, 16 // 2 ** i, 24 // 2 ** i, dtype=torch.float64) for i in range(4)]
    got = fpn(cs)
    want = ref_fpn(cs, prefixed(fpn, "fpn"), arch_of(cfg))
    assert isinstance(got, tuple) and len(got) == 5
    for g, w in zip(got, want):
        assert_close(g, w)


@pytest.mark.parametrize("body,opts", [
    ("R-50-FPN", DCN_C3_C5),
    ("R-50-FPN-RETINANET", GN + DCN_C3_C5 + [
        "MODEL.FPN.USE_GN", True, "MODEL.FPN.USE_RELU", True, "MODEL.GROUP_NORM.NUM_GROUPS", -1,
        "MODEL.GROUP_NORM.DIM_PER_GP", 4, "MODEL.RESNETS.STRIDE_IN_1X1", False, "MODEL.RESNETS.NUM_GROUPS", 2,
        "MODEL.RESNETS.WITH_MODULATED_DCN", True, "MODEL.RESNETS.DEFORMABLE_GROUPS", 2,
        "MODEL.RETINANET.USE_C5", False]),
    ("R-50-C4", ["MODEL.RESNETS.STRIDE_IN_1X1", False]),
], ids=["fpn-dcn", "retina-gn-resnext-mdcn-dg2", "c4"])
def test_whole_backbone_matches_functional_reference(body, opts):
    cfg = get_cfg(body, opts=SLIM + opts)
    model = randomize(build_backbone(cfg)).double().eval()
    with torch.no_grad():  # offsets of about a pixel: samples off the grid and off the image
        for m in model.modules():
            if isinstance(m, DFConv2d):
                m.offset.weight.normal_(0.0, 0.3 / math.sqrt(m.offset.weight[0].numel()))
                m.offset.bias.normal_(0.0, 1.0)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    got = model(x)
    sd, arch = model.state_dict(), arch_of(cfg)
    cs = ref_body(x, sd, arch)
    want = ref_fpn(cs, sd, arch) if "FPN" in body else cs[-1:]
    assert len(got) == len(want) == len(model.output_names)
    for g, w in zip(got, want):
        assert_close(g, w)


# ------------------------------------------------------------------------------------------------
# Freezing, registries


@pytest.mark.parametrize("freeze_at", [-1, 0, 1, 2, 5])
def test_freeze_conv_body_at(freeze_at):
    model = build("R-50-FPN", GN + ["MODEL.FPN.USE_GN", True, "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", freeze_at],
                  device="meta")
    frozen_parts = ["body.stem."] + [f"body.layer{i}." for i in range(1, 5)]
    frozen_parts = frozen_parts[:max(0, freeze_at)]
    for name, p in model.named_parameters():
        assert p.requires_grad is not any(name.startswith(part) for part in frozen_parts), name
    assert any(p.requires_grad for p in model.fpn.parameters())


def test_default_freeze_is_stem_and_res2():
    model = build("R-50-FPN", GN, device="meta")
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "layer1"}


def test_registry_errors_and_order():
    registry = Registry("THING")
    registry.register("alpha", 1)

    @registry.register("beta")
    def beta():
        return 2

    assert registry.names() == ["alpha", "beta"] and registry.get("beta") is beta and "alpha" in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.register("alpha", 3)
    with pytest.raises(DeformRTError,
                       match=r"unknown THING 'alpah' \(did you mean 'alpha'\?\); valid names: alpha, beta"):
        registry.get("alpah")
    with pytest.raises(DeformRTError) as info:
        registry.get("zzzzzz")
    assert "did you mean" not in str(info.value) and "valid names: alpha, beta" in str(info.value)
    with pytest.raises(DeformRTError, match="R-101-FPN-RETINANET"):
        BACKBONES.get("R-101-RETINANET")
    with pytest.raises(DeformRTError, match="did you mean 'R-152-FPN'"):
        body_info("R-152-FPM")
    # the one name a short spelling starts: "H100" is closer to "A100" by edit ratio, but names "H100 SXM";
    # two names that start the same way leave it to the similarity
    assert closest_match("h100", ["H100 SXM", "A100", "Jetson AGX Orin"]) == "H100 SXM"
    assert closest_match("orin", ["H100 SXM", "A100", "Jetson AGX Orin"]) == "Jetson AGX Orin"  # a whole word
    assert closest_match("R-101", ["R-101-FPN", "R-101-C4", "R-50-FPN"]) in ("R-101-FPN", "R-101-C4")
    assert closest_match("zzz", ["H100 SXM", "A100"]) is None


# ------------------------------------------------------------------------------------------------
# Scripts


def test_demo_prints_outputs_and_parameter_count(capsys):
    demo = load_script("demo")
    _, built = demo.build("R-50-FPN", "v1", seed=0, progress=Progress.quiet())
    out = demo.describe(built, "R-50-FPN", "v1", (64, 96), seed=0, progress=Progress.quiet())
    model = build("R-50-FPN", DCN_C3_C5, device="meta")
    assert f"parameters: {sum(p.numel() for p in model.parameters()):,} (13 deformable convs" in out
    for name, stride, size in zip(("P2", "P6"), (4, 64), ("1x256x16x24", "1x256x1x2")):
        assert any(line.split() == [name, size, str(stride)] for line in out.splitlines()), out
    assert demo.main(["--body", "R-50-FPN", "--shape", "50x64"]) == 1
    assert "error: R-50-FPN: input height and width must be multiples of 32" in capsys.readouterr().err
    assert demo.main(["--body", "R-50-FPN", "--size", "50", "64"]) == 1  # the old spelling, with a notice
    err = capsys.readouterr().err
    assert "`--size 50 64` is now `--shape 50x64`" in err and "multiples of 32" in err


def test_bench_models_json_is_stable(capsys):
    bench = load_script("bench_models")
    assert bench.main(["--bodies", "R-50-C4", "--shape", "32x32", "--repeat", "1", "--dcn-bodies", "R-50-FPN",
                       "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["size", "repeat", "threads", "torch", "bodies", "dcn"]
    assert result["size"] == [32, 32] and list(result["bodies"]) == ["R-50-C4"]
    assert list(result["bodies"]["R-50-C4"]) == ["median_ms", "times_ms"]
    dcn = result["dcn"]["R-50-FPN"]
    assert list(dcn) == ["plain_ms", "dcn_ms", "plain_times_ms", "dcn_times_ms", "ratio", "target", "meets_target"]
    assert dcn["ratio"] == pytest.approx(dcn["dcn_ms"] / dcn["plain_ms"], rel=1e-2)
    assert bench.main(["--bodies", "R-50-FNP", "--dcn-bodies"]) == 1
    assert "did you mean 'R-50-FPN'" in capsys.readouterr().err
    assert bench.main(["--bodies", "R-50-C4", "--shape", "32 32"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("script", ["bench_export", "bench_detector"])
def test_bench_scripts_refuse_a_malformed_shape_before_any_work(script, capsys):
    """The scripts take the commands' --shape HxW; a malformed one is one error line and status 1."""
    bench = load_script(script)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--shape", "800 1344"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --shape '800 1344'") and "\n" not in err
