"""calibrate_offsets gives an untrained DCN backbone few-pixel offsets, layer by layer."""

import pytest
import torch

from models import build_backbone, get_cfg
from models.calibrate import calibrate_offsets
from models.layers import DFConv2d

DCN_OPTS = ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)",
            "MODEL.RESNETS.WITH_MODULATED_DCN", "True"]


def _offset_parts(model, images):
    """Each DCN layer's input-dependent offsets (offset conv output minus its bias), in order."""
    parts = []

    def hook(dcn):
        def record(conv, inputs, output):
            parts.append((output - conv.bias.view(1, -1, 1, 1))[:, :dcn.offset_channels])
        return dcn.offset.register_forward_hook(record)

    handles = [hook(m) for m in model.modules() if isinstance(m, DFConv2d)]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return parts


def test_every_layer_gets_the_requested_offset_scale():
    model = build_backbone(get_cfg("R-50-FPN", opts=DCN_OPTS)).eval()
    images = torch.randn(2, 3, 64, 96) * 50
    before = [float(p.std()) for p in _offset_parts(model, images)]
    gen = torch.Generator().manual_seed(7)
    means = calibrate_offsets(model, images, std_px=3.0, generator=gen)
    after = _offset_parts(model, images)
    assert len(means) == len(after) == 13  # R-50 with DCN in res3-res5
    for std in (float(p.std()) for p in after):
        assert std == pytest.approx(3.0, rel=1e-4)
    assert max(before) > 10 * 3.0  # upstream's init really was far off
    biases = [m.offset.bias for m in model.modules() if isinstance(m, DFConv2d)]
    assert all(0.3 < float(b.detach().std()) < 2.0 for b in biases)  # fresh N(0, 1) biases


def test_bad_scale_is_refused():
    model = build_backbone(get_cfg("R-50-C4", opts=["MODEL.RESNETS.STAGE_WITH_DCN", "(False, False, True, False)"]))
    for bad in (0, -1.0, float("nan"), float("inf")):  # nan and inf passed a `<= 0` test: nan offset weights
        with pytest.raises(ValueError, match="std_px must be positive and finite"):
            calibrate_offsets(model, torch.randn(1, 3, 32, 32), std_px=bad)
    assert all(torch.isfinite(p).all() for p in model.parameters())
