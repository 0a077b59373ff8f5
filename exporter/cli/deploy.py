"""`deformrt deploy`: a thin command over :func:`exporter.deploy.bundle.make_bundle`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli import options as o


def register(app: typer.Typer) -> None:
    """Add ``deploy`` to ``app``."""

    @app.command(
        "deploy",
        epilog="Example: deformrt deploy R-101-FPN-dcn.onnx -o r101-jetson   (then copy r101-jetson/ to the device "
               "and run ./build.sh there; a detector file deploys the same way)",
    )
    def deploy_cmd(
        onnx: Annotated[Path, typer.Argument(metavar=o.ONNX, help="ONNX model written by `deformrt export` "
                                                                  "(either DCN flavour; a backbone or, with "
                                                                  "--detector, a whole detector).")],
        output: Annotated[Path, o.output_option("Bundle folder to write (must not exist unless --force).",
                                                metavar=o.DIR)],
        weights: o.WeightsOpt = None,
        fp16: Annotated[bool, typer.Option(
            "--fp16/--fp32", help="Default engine precision, recorded in the bundle's deploy.conf (on the device "
                                   "`./build.sh --fp32` or `--fp16` chooses either way).")] = True,
        min_shape: o.MinShapeOpt = None,
        opt_shape: Annotated[Optional[str], o.profile_shape_option(
            "--opt-shape", "Input shape TensorRT optimises for, and of the reference input (default: the export "
                           "shape).")] = None,
        max_shape: o.MaxShapeOpt = None,
        images: Annotated[Optional[list[str]], typer.Option(
            "--images", metavar=o.LIST,
            help="Reference inputs: HxWx3 RGB .npy arrays (PNG/JPEG with Pillow), comma-separated or repeated; one "
                 "batch (default: random images of the opt shape). A detector's: PNG/JPEG images, resized and "
                 "preprocessed as `deformrt predict` does.")] = None,
        seed: Annotated[int, typer.Option("--seed", metavar=o.N, **o.SEED_RANGE,
                                                      help="Seed of the random reference images.")] = 0,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
        as_json: o.JsonFlag = False,
    ) -> None:
        """Write a self-contained folder that builds the plugin and engine on the device (e.g. a Jetson) and
        checks them against PyTorch's outputs (a detector's: ONNX Runtime's detections, compared as sets)."""
        from exporter.deploy.bundle import DeployOptions, make_bundle
        from exporter.util.progress import Progress

        o.check_output_dir(output, force)
        options = DeployOptions(weights=weights, precision="fp16" if fp16 else "fp32", min_shape=min_shape,
                                opt_shape=opt_shape, max_shape=max_shape,
                                images=[Path(p) for p in o.parse_list(images)], seed=seed)
        result = make_bundle(onnx, output, options, force=force, progress=Progress())
        o.emit(as_json, result.to_dict, result.summary)
