"""deformrt demo: build a maskrcnn-benchmark backbone with deformable convolution and run it on CPU.

    python scripts/demo.py [--body R-101-FPN] [--dcn v2|v1|none] [--size 512 512] [--seed 0]

Builds the body (default R-101-FPN with modulated DCN in res3-res5, as upstream's ``mdconv``
configs) with seeded random weights, runs one random image through it and prints each output's
name, shape and stride, and the parameter count.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import torch

from exporter.progress import Progress
from models.backbone import build_backbone
from models.config import get_cfg
from models.errors import DeformRTError
from models.layers import DFConv2d

DCN_CHOICES = {
    "v2": ("modulated DCN (v2) in res3-res5", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)",
                                               "MODEL.RESNETS.WITH_MODULATED_DCN", "True"]),
    "v1": ("DCN (v1) in res3-res5", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)"]),
    "none": ("no DCN", []),
}


def describe(body: str, dcn: str, size: tuple[int, int], seed: int, progress: Progress) -> str:
    """Build and run the model; return the printed report."""
    title, opts = DCN_CHOICES[dcn]
    cfg = get_cfg(body, opts=opts)
    torch.manual_seed(seed)
    with progress.step(f"building {body} with {title}"):
        model = build_backbone(cfg).eval()
    x = torch.randn(1, 3, *size)
    with progress.step(f"running it on a random 1x3x{size[0]}x{size[1]} image"), torch.inference_mode():
        start = time.perf_counter()
        outputs = model(x)
        seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    dcn_layers = [m for m in model.modules() if isinstance(m, DFConv2d)]
    offset_params = sum(p.numel() for m in dcn_layers for p in m.offset.parameters())
    lines = [f"{body} with {title} (seed {seed}), input 1x3x{size[0]}x{size[1]}", "",
             f"{'output':<8}{'shape':<22}{'stride':>7}"]
    for name, out, stride in zip(model.output_names, outputs, model.output_strides):
        lines.append(f"{name:<8}{'x'.join(map(str, out.shape)):<22}{stride:>7}")
    dcn_note = f" ({len(dcn_layers)} deformable convs; their offset convs hold {offset_params:,})" if dcn_layers else ""
    lines += ["", f"parameters: {params:,}{dcn_note}", f"forward pass on CPU: {seconds:.2f} s"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="R-101-FPN", help="CONV_BODY name (default R-101-FPN)")
    parser.add_argument("--dcn", choices=list(DCN_CHOICES), default="v2",
                        help="deformable conv in res3-res5: v2 (modulated, default), v1 or none")
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"),
                        help="input height and width (multiples of 32 for FPN bodies; default 512 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights and image")
    args = parser.parse_args(argv)
    if min(args.size) < 1:
        parser.error("--size must be positive")
    try:
        print(describe(args.body, args.dcn, tuple(args.size), args.seed, Progress()))
    except DeformRTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
