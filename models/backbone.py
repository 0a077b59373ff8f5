"""The backbone registry and builder: maskrcnn-benchmark config -> ``nn.Module``.

Every ``MODEL.BACKBONE.CONV_BODY`` of upstream's registry is a :class:`BodySpec` in
``models.registry.BACKBONES``; stems (``STEM_FUNC``) and blocks (``TRANS_FUNC``) are registered
builders in ``STEMS`` / ``BLOCKS``. :func:`build_backbone` assembles a :class:`Backbone` whose
``state_dict()`` keys and shapes are exactly those of upstream's backbone module and whose
``forward`` returns upstream's outputs in upstream's order.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from models.errors import DeformRTError
from models.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from models.layers import FrozenBatchNorm2d, NormFactory, conv_with_kaiming_uniform, group_norm
from models.registry import BACKBONES, BLOCKS, STEMS
from models.resnet import BlockFactory, Bottleneck, DeformSpec, ResNet, Stem

FPN_SIZE_DIVISIBILITY = 32


@dataclass(frozen=True)
class BodySpec:
    """One registered body: ResNet blocks per stage and what it returns.

    ``kind``: ``"C4"``/``"C5"`` (the last stage's output only), ``"FPN"`` (P2-P6, LastLevelMaxPool)
    or ``"RETINANET"`` (P3-P7, LastLevelP6P7).
    """

    block_counts: tuple[int, ...]
    kind: str

    @property
    def has_fpn(self) -> bool:
        return self.kind in ("FPN", "RETINANET")

    @property
    def return_features(self) -> tuple[bool, ...]:
        stages = len(self.block_counts)
        return tuple(self.has_fpn or i == stages - 1 for i in range(stages))

    def outputs(self, res2_out_channels: int = 256, fpn_channels: int = 256) -> tuple[tuple[str, ...], tuple[int, ...],
                                                                                    tuple[int, ...]]:
        """(names, strides, channels) of the outputs, in ``forward``'s order."""
        if self.has_fpn:
            first = 2 if self.kind == "FPN" else 3
            levels = range(first, first + 5)
            return (tuple(f"P{n}" for n in levels), tuple(2 ** n for n in levels), (fpn_channels,) * 5)
        stages = len(self.block_counts)
        return ((f"C{stages + 1}",), (2 ** (stages + 1),), (res2_out_channels * 2 ** (stages - 1),))


for _name, _blocks, _kind in (
    ("R-50-C4", (3, 4, 6), "C4"),
    ("R-50-C5", (3, 4, 6, 3), "C5"),
    ("R-101-C4", (3, 4, 23), "C4"),
    ("R-101-C5", (3, 4, 23, 3), "C5"),
    ("R-50-FPN", (3, 4, 6, 3), "FPN"),
    ("R-50-FPN-RETINANET", (3, 4, 6, 3), "RETINANET"),
    ("R-101-FPN", (3, 4, 23, 3), "FPN"),
    ("R-101-FPN-RETINANET", (3, 4, 23, 3), "RETINANET"),
    ("R-152-FPN", (3, 8, 36, 3), "FPN"),
):
    BACKBONES.register(_name, BodySpec(_blocks, _kind))


def group_norm_factory(cfg) -> NormFactory:
    """``channels -> nn.GroupNorm`` as MODEL.GROUP_NORM configures it (upstream's ``group_norm``)."""
    gn = cfg.MODEL.GROUP_NORM
    return functools.partial(group_norm, dim_per_gp=gn.DIM_PER_GP, num_groups=gn.NUM_GROUPS, eps=gn.EPSILON)


@STEMS.register("StemWithFixedBatchNorm")
def _stem_with_frozen_bn(cfg) -> nn.Module:
    return Stem(cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, FrozenBatchNorm2d)


@STEMS.register("StemWithGN")
def _stem_with_gn(cfg) -> nn.Module:
    return Stem(cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, group_norm_factory(cfg))


def _bottleneck(cfg, norm: NormFactory) -> BlockFactory:
    r = cfg.MODEL.RESNETS
    return functools.partial(Bottleneck, norm=norm, num_groups=r.NUM_GROUPS, stride_in_1x1=r.STRIDE_IN_1X1)


@BLOCKS.register("BottleneckWithFixedBatchNorm")
def _bottleneck_with_frozen_bn(cfg) -> BlockFactory:
    return _bottleneck(cfg, FrozenBatchNorm2d)


@BLOCKS.register("BottleneckWithGN")
def _bottleneck_with_gn(cfg) -> BlockFactory:
    return _bottleneck(cfg, group_norm_factory(cfg))


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


class Backbone(nn.Sequential):
    """Upstream's backbone module: ``Sequential(body)`` or ``Sequential(body, fpn)``.

    Attributes: ``body_name``; ``output_names`` / ``output_strides`` / ``output_channels`` (one per
    output, in ``forward``'s order); ``size_divisibility`` (what inputs should be padded to: 32
    for FPN bodies, else DATALOADER.SIZE_DIVISIBILITY or 1).

    ``forward(x)`` returns a list (C4/C5 bodies) or a tuple (FPN bodies), as upstream. In eager
    mode it raises DeformRTError for an input that is not N x 3 x H x W, or for FPN bodies when H or
    W is not a multiple of 32; under torch.compile/export/jit tracing the check is skipped so no
    shape guard is recorded.
    """

    def __init__(self, body: ResNet, fpn: Optional[FPN], *, body_name: str, output_names: tuple[str, ...],
                 output_strides: tuple[int, ...], output_channels: tuple[int, ...], size_divisibility: int):
        modules: OrderedDict[str, nn.Module] = OrderedDict(body=body)
        if fpn is not None:
            modules["fpn"] = fpn
        super().__init__(modules)
        self.body_name = body_name
        self.output_names = output_names
        self.output_strides = output_strides
        self.output_channels = output_channels
        self.size_divisibility = size_divisibility

    def forward(self, x: Tensor):
        if not _tracing():
            self._check_input(x)
        return super().forward(x)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise DeformRTError(f"{self.body_name}: expected an N x 3 x H x W image batch, got shape {tuple(x.shape)}")
        if "fpn" in self._modules:
            h, w = x.shape[-2:]
            m = FPN_SIZE_DIVISIBILITY
            if h % m or w % m:
                raise DeformRTError(
                    f"{self.body_name}: input height and width must be multiples of {m} (the FPN upsamples by "
                    f"exactly 2), got {h}x{w}; pad it to {-(-h // m) * m}x{-(-w // m) * m}")


def _build_fpn(cfg, spec: BodySpec) -> FPN:
    r = cfg.MODEL.RESNETS
    width, c2 = r.BACKBONE_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    norm = group_norm_factory(cfg) if cfg.MODEL.FPN.USE_GN else None
    conv_block = functools.partial(conv_with_kaiming_uniform, norm=norm, relu=cfg.MODEL.FPN.USE_RELU)
    if spec.kind == "FPN":
        return FPN([c2, c2 * 2, c2 * 4, c2 * 8], width, conv_block, LastLevelMaxPool())
    p6_in = c2 * 8 if cfg.MODEL.RETINANET.USE_C5 else width
    return FPN([0, c2 * 2, c2 * 4, c2 * 8], width, conv_block, LastLevelP6P7(p6_in, width))


def build_backbone(cfg) -> Backbone:
    """Build ``cfg.MODEL.BACKBONE.CONV_BODY`` as configured (a config from ``models.config.get_cfg``).

    Weights are randomly initialised like upstream (kaiming-uniform a=1 convs, identity FrozenBN);
    FREEZE_CONV_BODY_AT turns off ``requires_grad`` for the stem and the first stages.
    """
    name = cfg.MODEL.BACKBONE.CONV_BODY
    spec: BodySpec = BACKBONES.get(name)
    r = cfg.MODEL.RESNETS
    stages = len(spec.block_counts)
    dcn = DeformSpec(modulated=r.WITH_MODULATED_DCN, deformable_groups=r.DEFORMABLE_GROUPS)
    body = ResNet(
        STEMS.get(r.STEM_FUNC)(cfg),
        BLOCKS.get(r.TRANS_FUNC)(cfg),
        spec.block_counts,
        spec.return_features,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        res2_bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP,
        stage_dcn=[dcn if on else None for on in r.STAGE_WITH_DCN[:stages]],
    )
    body.freeze(cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT)
    fpn = _build_fpn(cfg, spec) if spec.has_fpn else None
    names, strides, channels = spec.outputs(r.RES2_OUT_CHANNELS, r.BACKBONE_OUT_CHANNELS)
    divisibility = FPN_SIZE_DIVISIBILITY if spec.has_fpn else max(1, cfg.DATALOADER.SIZE_DIVISIBILITY)
    return Backbone(body, fpn, body_name=name, output_names=names, output_strides=strides, output_channels=channels,
                    size_divisibility=divisibility)


def list_bodies() -> list[str]:
    """Every registered CONV_BODY name, in upstream's registry order."""
    return BACKBONES.names()


def body_info(name: str) -> dict[str, Any]:
    """What ``name`` outputs at default widths, for listings (JSON-ready; stable keys).

    Keys: ``name``, ``outputs``, ``strides``, ``channels``, ``blocks`` (per ResNet stage),
    ``fpn`` (top block class name or None), ``dcn_capable`` and ``dcn_stages`` (the STAGE_WITH_DCN
    entries this body uses: res2..res5, or res2..res4 for C4 bodies).
    """
    spec: BodySpec = BACKBONES.get(name)
    names, strides, channels = spec.outputs()
    top = {"FPN": LastLevelMaxPool.__name__, "RETINANET": LastLevelP6P7.__name__}.get(spec.kind)
    return {
        "name": name,
        "outputs": list(names),
        "strides": list(strides),
        "channels": list(channels),
        "blocks": list(spec.block_counts),
        "fpn": top,
        "dcn_capable": True,
        "dcn_stages": [f"res{i + 2}" for i in range(len(spec.block_counts))],
    }
