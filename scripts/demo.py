"""deformrt demo: a maskrcnn-benchmark backbone with deformable convolution, from PyTorch to ONNX.

    python scripts/demo.py [--body R-101-FPN] [--dcn v2|v1|none] [--shape 512x512] [--seed 0]
                           [--out-dir out/demo] [--no-export]

Builds the body (default R-101-FPN with modulated DCN in res3-res5, as upstream's ``mdconv``
configs) with seeded random weights, runs one random image through it and prints each output's
name, shape and stride, and the parameter count. Then the main job: saves those weights as a
synthetic maskrcnn-benchmark checkpoint (DCN offset convs rescaled to a trained model's few-pixel
offsets: :mod:`exporter.evaluation.synthetic`, what ``deformrt synthetic-checkpoint`` writes),
exports it to ONNX in both DCN flavours (``deformrt export BODY --onnx --dcn-op plugin|onnx``:
dynamic axes, verified with ONNX Runtime against PyTorch at two shapes, ``--shape`` being the export
shape) into ``--out-dir`` and shows ``deformrt info`` of the plugin-flavour file, then ``deformrt
compare`` on it (PyTorch vs ONNX Runtime, plus TensorRT where TensorRT, a GPU and the plugin are
present). It ends with how to get the ``deformrt`` command and the next commands to try, each
runnable as printed from the directory the demo ran in. ``--no-export`` stops after the build.

About 1.5 minutes on 2 idle CPU cores at the defaults (2-3 minutes while other work shares them).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from exporter.cli.options import add_script_shape_argument, script_shape
from exporter.util.progress import Progress
from exporter.util.usage import SEED_RANGE, ScriptParser, first_paragraph, print_error, whole_number
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
    trained model's scale (no trained checkpoint can be downloaded here), as ``deformrt
    synthetic-checkpoint`` does; return the file and a line describing it."""
    from exporter.evaluation.synthetic import save_synthetic

    saved = save_synthetic(model, cfg, out_dir / f"{body}-{dcn}-synthetic.pth", seed=seed, shape=size, force=True,
                           progress=progress)
    return saved.path, saved.describe()


def shown(path: Path) -> str:
    """``path`` as the user should type it: relative to the current directory when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def command_line(*args) -> str:
    return shlex.join(["deformrt", *map(str, args)])


def how_to_get_the_command() -> str:
    """How to run ``deformrt`` from here: it is on PATH, or in this virtual environment's bin/."""
    if shutil.which("deformrt"):
        return "the deformrt command is on your PATH"
    if sys.prefix != sys.base_prefix:
        venv = os.path.relpath(sys.prefix) if Path(sys.prefix).resolve().is_relative_to(Path.cwd().resolve()) \
            else sys.prefix
        return (f"the deformrt command is in {venv}/bin: first run `source {venv}/bin/activate` (or call "
                f"{venv}/bin/deformrt)")
    return "install the deformrt command first: pip install -e ."


def next_steps(body: str, dcn: str, size: tuple[int, int], onnx_file: Path, weights: Path, out_dir: Path) -> str:
    """The demo's last lines: how to get the command, then commands to try, each runnable as printed."""
    _, opts = DCN_CHOICES[dcn]
    bigger = f"{size[0] + 64}x{size[1] + 128}"
    model, ckpt = shown(onnx_file), shown(weights)
    steps = [
        ("describe the exported file", command_line("info", model)),
        ("compare PyTorch and ONNX Runtime at another size", command_line("compare", model, "--weights", ckpt,
                                                                           "--shape", bigger)),
        ("time them (a few runs: each takes seconds on a CPU)", command_line(
            "bench", model, "--weights", ckpt, "--warmup", "1", "--iterations", "3")),
        ("save a synthetic checkpoint like the demo's, for `deformrt export --weights`", command_line(
            "synthetic-checkpoint", body, "-o", shown(out_dir / f"{body}-synthetic.pth"), "--shape",
            f"{size[0]}x{size[1]}", "--force", *opts)),
        ("all commands; `deformrt COMMAND --help` for one", "deformrt --help"),
    ]
    lines = ["Next steps: " + how_to_get_the_command() + ". Then try (from this directory):"]
    for why, cmd in steps:
        lines += [f"  # {why}", f"  {cmd}"]
    return "\n".join(lines)


def export_and_inspect(cfg, model: torch.nn.Module, body: str, dcn: str, size: tuple[int, int], seed: int,
                       out_dir: Path, progress: Progress) -> str:
    """Export ``body`` in both DCN flavours with verification (what ``deformrt export`` does),
    describe the plugin-flavour file as ``deformrt info`` does, and compare it as ``deformrt
    compare`` does (PyTorch vs ONNX Runtime, plus TensorRT where present); return the report,
    ending with the next steps."""
    from exporter.evaluation.compare import demo_compare
    from exporter.onnx.info import format_info, inspect_model
    from exporter.onnx.export import ExportOptions, default_output_name, export_body
    from exporter.evaluation.verify import verify

    _, opts = DCN_CHOICES[dcn]
    weights, note = synthetic_checkpoint(cfg, model, body, dcn, size, seed, out_dir, progress)
    reports, files = [note, ""], []
    for dcn_op in ("plugin", "onnx"):
        path = out_dir / default_output_name(cfg, dcn_op)
        reports.append("$ " + command_line("export", body, "--onnx", "--dcn-op", dcn_op, "-o", shown(path), "--shape",
                                           f"{size[0]}x{size[1]}", "--weights", shown(weights), "--force", *opts))
        result = export_body(body, str(path), opts=opts, weights=str(weights), force=True, progress=progress,
                             options=ExportOptions(dcn_op=dcn_op, input_size=size), verify=verify)
        reports += [result.summary(), ""]
        files.append(result.path)
    reports += ["$ " + command_line("info", shown(files[0])), format_info(inspect_model(files[0])), ""]
    reports += ["$ " + command_line("compare", shown(files[0]), "--weights", shown(weights)),
                demo_compare(files[0], progress, weights=weights).table(), ""]
    reports.append(next_steps(body, dcn, size, files[0], weights, out_dir))
    return "\n".join(reports)


def make_out_dir(out_dir: Path) -> None:
    """``out_dir`` and its parents, or a DeformRTError that says why not."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DeformRTError(f"--out-dir {out_dir} is a file; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeformRTError(f"--out-dir {out_dir}: cannot create the folder ({exc.strerror})") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--body", default="R-101-FPN", help="CONV_BODY name (default R-101-FPN)")
    parser.add_argument("--dcn", choices=list(DCN_CHOICES), default="v2",
                        help="deformable conv in res3-res5: v2 (modulated, default), v1 or none")
    add_script_shape_argument(parser, "512x512", "input height and width (multiples of 32 for FPN bodies; "
                                                 "default 512x512)")
    parser.add_argument("--seed", type=whole_number(SEED_RANGE["min"], SEED_RANGE["max"]), default=0,
                        help="seed for the random weights and image")
    parser.add_argument("--out-dir", type=Path, default=Path("out/demo"),
                        help="where the ONNX files go (default out/demo; existing demo files are replaced)")
    parser.add_argument("--no-export", action="store_true", help="only build and run the PyTorch model")
    args = parser.parse_args(argv)
    try:
        size = script_shape(args)
        if not args.no_export:
            make_out_dir(args.out_dir)  # before minutes of work
        progress = Progress()
        cfg, model = build(args.body, args.dcn, args.seed, progress)
        print(describe(model, args.body, args.dcn, size, args.seed, progress), flush=True)
        if not args.no_export:
            print("\n" + export_and_inspect(cfg, model, args.body, args.dcn, size, args.seed, args.out_dir,
                                             progress))
    except DeformRTError as exc:
        print_error(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
