"""`deformrt deploy`: a thin command over :func:`exporter.deploy.bundle.make_bundle`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli.engine import parse_list


def register(app: typer.Typer) -> None:
    """Add ``deploy`` to ``app``."""

    @app.command(
        "deploy",
        epilog="Example: deformrt deploy R-101-FPN-dcn.onnx -o r101-jetson   (then copy r101-jetson/ to the device "
               "and run ./build.sh there)",
    )
    def deploy_cmd(
        onnx: Annotated[Path, typer.Argument(metavar="MODEL.onnx", help="ONNX model written by `deformrt export` "
                                                                        "(either DCN flavour).")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Bundle folder to write (must not exist "
                                                                     "unless --force).")],
        weights: Annotated[Optional[Path], typer.Option(
            "--weights", help="Checkpoint the model was exported with (not needed for random-init exports).")] = None,
        fp16: Annotated[bool, typer.Option(
            "--fp16/--fp32", help="Default engine precision, recorded in the bundle's deploy.conf (on the device "
                                   "`./build.sh --fp32` or `--fp16` chooses either way).")] = True,
        min_shape: Annotated[Optional[str], typer.Option(
            "--min-shape", help="Smallest input of the engine, e.g. images:1x3x320x320 (default: from the model).")] = None,
        opt_shape: Annotated[Optional[str], typer.Option(
            "--opt-shape", help="Input shape to optimise for, and of the reference input (default: the export "
                                "shape).")] = None,
        max_shape: Annotated[Optional[str], typer.Option(
            "--max-shape", help="Largest input of the engine (default: from the model).")] = None,
        images: Annotated[Optional[list[str]], typer.Option(
            "--images", help="Reference inputs: HxWx3 RGB .npy arrays (PNG/JPEG with Pillow), comma-separated or "
                             "repeated; one batch (default: random images of the opt shape).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the random reference images.")] = 0,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print one stable JSON object instead of text.")] = False,
    ) -> None:
        """Write a self-contained folder that builds the plugin and engine on the device (e.g. a Jetson) and
        checks them against PyTorch's outputs."""
        from exporter.deploy.bundle import DeployOptions, make_bundle
        from exporter.util.progress import Progress

        options = DeployOptions(weights=weights, precision="fp16" if fp16 else "fp32", min_shape=min_shape,
                                opt_shape=opt_shape, max_shape=max_shape,
                                images=[Path(p) for p in parse_list(images)], seed=seed)
        result = make_bundle(onnx, output, options, force=force, progress=Progress())
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        else:
            typer.echo(result.summary())
