"""`deformrt build-plugin`: build the TensorRT plugin and CUDA kernels in ``plugins/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli import options as o


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("build-plugin")
    def build_plugin_cmd(
        build_dir: Annotated[Optional[Path], typer.Option(
            "--build-dir", metavar=o.DIR, help="CMake build directory (default: plugins/build).")] = None,
        tensorrt_root: Annotated[Optional[Path], typer.Option(
            "--tensorrt-root", metavar=o.DIR, help="TensorRT install with include/ and lib/ (else $TENSORRT_ROOT, pip, system).")] = None,
        tensorrt_include_dir: Annotated[Optional[Path], typer.Option(
            "--tensorrt-include-dir", metavar=o.DIR, help="Headers-only build: directory holding NvInfer*.h.")] = None,
        archs: Annotated[Optional[str], typer.Option(
            "--archs", metavar=o.LIST, help="CUDA architectures, comma-separated, e.g. 87 (Jetson Orin) or 80,90 (default: 75,80,86,87,89,90 "
                 "and the newer ones nvcc supports).")] = None,
        jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", metavar=o.N, help="Parallel build jobs.")] = None,
    ) -> None:
        """Build the deformrt TensorRT plugin library and print its path."""
        from exporter.trt.plugin_build import build_plugin

        library = build_plugin(build_dir=build_dir, tensorrt_root=tensorrt_root,
                               tensorrt_include_dir=tensorrt_include_dir, archs=archs, jobs=jobs)
        typer.echo(str(library))
