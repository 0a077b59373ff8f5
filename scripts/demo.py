"""deformrt demo: a maskrcnn-benchmark backbone with deformable convolution, from PyTorch to ONNX.

    python scripts/demo.py [--body R-101-FPN] [--dcn v2|v1|none] [--size 512 512] [--seed 0]
                           [--out-dir out/demo] [--no-export]

Builds the body (default R-101-FPN with modulated DCN in res3-res5, as upstream's ``mdconv``
configs) with seeded random weights, runs one random image through it and prints each output's
name, shape and stride, and the parameter count. Then the main job: saves those weights as a
synthetic maskrcnn-benchmark checkpoint (DCN offset convs rescaled to a trained model's few-pixel
offsets: see models/calibrate.py), exports it to ONNX in both
DCN flavours (``deformrt export BODY --onnx --dcn-op plugin|onnx``: dynamic axes, verified with
ONNX Runtime against PyTorch at two shapes, ``--size`` being the export shape) into ``--out-dir``
and shows ``deformrt info`` of the plugin-flavour file, then ``deformrt compare`` on it (PyTorch vs
ONNX Runtime, plus TensorRT where TensorRT, a GPU and the plugin are present). ``--no-export``
stops after the build.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

import torch

from exporter.util.progress import Progress
from models.backbone import build_backbone
from models.config import get_cfg
from models.errors import DeformRTError
from models.layers import DFConv2d

OFFSET_STD_PX = 2.0  # typical offset scale of a trained DCN backbone

DCN_CHOICES = {
    "v2": ("modulated DCN (v2) in res3-res5", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)",
                                               "MODEL.RESNETS.WITH_MODULATED_DCN", "True"]),
    "v1": ("DCN (v1) in res3-res5", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)"]),
    "none": ("no DCN", []),
}


def build(body: str, dcn: str, seed: int, progress: Progress):
    """The demo's config and model: ``body`` with the chosen DCN and seeded random weights."""
    title, opts = DCN_CHOICES[dcn]
    cfg = get_cfg(body, opts=opts)
    torch.manual_seed(seed)
    with progress.step(f"building {body} with {title}"):
        model = build_backbone(cfg).eval()
    return cfg, model


def describe(model: torch.nn.Module, body: str, dcn: str, size: tuple[int, int], seed: int,
             progress: Progress) -> str:
    """Run the model on a random image; return the printed report."""
    title, _ = DCN_CHOICES[dcn]
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


def synthetic_checkpoint(cfg, model: torch.nn.Module, body: str, dcn: str, size: tuple[int, int], seed: int,
                         out_dir: Path, progress: Progress) -> tuple[Path, str]:
    """Save ``model`` (the demo's seeded random weights) with DCN offsets rescaled in place to a
    trained model's scale (no trained checkpoint can be downloaded here), in maskrcnn-benchmark's
    checkpoint layout; return the file and a line describing it. See :mod:`models.calibrate` for
    why the offsets are rescaled."""
    from exporter.util.fsutil import atomic_path
    from exporter.evaluation.inputs import preprocess, random_images
    from models.calibrate import calibrate_offsets

    note = "seeded random init"
    if any(isinstance(m, DFConv2d) for m in model.modules()):
        stats = SimpleNamespace(pixel_mean=cfg.INPUT.PIXEL_MEAN, pixel_std=cfg.INPUT.PIXEL_STD,
                                to_bgr255=cfg.INPUT.TO_BGR255, color_order=None,
                                size_divisibility=cfg.DATALOADER.SIZE_DIVISIBILITY)
        images = torch.from_numpy(preprocess(random_images(1, *size, seed=seed), stats))
        with progress.step(f"calibrating DCN offsets to {OFFSET_STD_PX:g} px (a trained model's scale)"):
            calibrate_offsets(model, images, OFFSET_STD_PX, torch.Generator().manual_seed(seed))
        note += f", DCN offset convs rescaled to offsets of {OFFSET_STD_PX:g} px std"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{body}-{dcn}-synthetic.pth"
    with atomic_path(path, force=True) as tmp:
        torch.save({"model": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, tmp)
    return path, f"synthetic checkpoint {path}: {note} (seed {seed})"


def export_and_inspect(cfg, model: torch.nn.Module, body: str, dcn: str, size: tuple[int, int], seed: int,
                       out_dir: Path, progress: Progress) -> str:
    """Export ``body`` in both DCN flavours with verification (what ``deformrt export`` does),
    describe the plugin-flavour file as ``deformrt info`` does, and compare it as ``deformrt
    compare`` does (PyTorch vs ONNX Runtime, plus TensorRT where present); return the report."""
    from exporter.evaluation.compare import demo_compare
    from exporter.onnx.info import format_info, inspect_model
    from exporter.onnx.export import ExportOptions, default_output_name, export_body
    from exporter.evaluation.verify import verify

    _, opts = DCN_CHOICES[dcn]
    weights, note = synthetic_checkpoint(cfg, model, body, dcn, size, seed, out_dir, progress)
    reports, files = [note, ""], []
    for dcn_op in ("plugin", "onnx"):
        path = out_dir / default_output_name(cfg, dcn_op)
        reports.append(f"$ deformrt export {body} --onnx --dcn-op {dcn_op} -o {path} --input-size {size[0]} {size[1]} "
                       f"--weights {weights} --force" + "".join(f" {o!r}" if " " in o else f" {o}" for o in opts))
        result = export_body(body, str(path), opts=opts, weights=str(weights), force=True, progress=progress,
                             options=ExportOptions(dcn_op=dcn_op, input_size=size), verify=verify)
        reports += [result.summary(), ""]
        files.append(result.path)
    reports += [f"$ deformrt info {files[0]}", format_info(inspect_model(files[0])), ""]
    reports += [f"$ deformrt compare {files[0]} --weights {weights}",
                demo_compare(files[0], progress, weights=weights).table()]
    return "\n".join(reports)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="R-101-FPN", help="CONV_BODY name (default R-101-FPN)")
    parser.add_argument("--dcn", choices=list(DCN_CHOICES), default="v2",
                        help="deformable conv in res3-res5: v2 (modulated, default), v1 or none")
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"),
                        help="input height and width (multiples of 32 for FPN bodies; default 512 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights and image")
    parser.add_argument("--out-dir", type=Path, default=Path("out/demo"),
                        help="where the ONNX files go (default out/demo; existing demo files are replaced)")
    parser.add_argument("--no-export", action="store_true", help="only build and run the PyTorch model")
    args = parser.parse_args(argv)
    if min(args.size) < 1:
        parser.error("--size must be positive")
    try:
        progress = Progress()
        size = tuple(args.size)
        cfg, model = build(args.body, args.dcn, args.seed, progress)
        print(describe(model, args.body, args.dcn, size, args.seed, progress), flush=True)
        if not args.no_export:
            print("\n" + export_and_inspect(cfg, model, args.body, args.dcn, size, args.seed, args.out_dir,
                                             progress))
    except DeformRTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
