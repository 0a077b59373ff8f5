"""`deformrt build-engine`, `deformrt compare` and `deformrt bench`: thin commands over
:mod:`exporter.trt.build`, :mod:`exporter.evaluation.compare` and :mod:`exporter.evaluation.bench`."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from models.errors import DeformRTError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, flag: str = "--workspace") -> int:
    """Bytes from ``1073741824``, ``512M``, ``4G`` or ``4GiB`` (binary units)."""
    m = _SIZE.match(text.strip())
    if not m or float(m[1]) <= 0:
        raise DeformRTError(f"{flag} {text!r}: give a size such as 4G, 512M or a number of bytes")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def parse_list(values: Optional[list[str]]) -> list[str]:
    """Repeated and/or comma-separated option values, in order."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def show_report(report, json_path: Optional[Path]) -> None:
    """A report's table, and with ``--json PATH`` its JSON, written atomically (``-``: the JSON on
    stdout, the table on stderr)."""
    from exporter.util.fsutil import atomic_write_text

    to_stdout = str(json_path) == "-"
    typer.echo(report.table(), err=to_stdout)
    if to_stdout:
        typer.echo(report.to_json(), nl=False)
    elif json_path is not None:
        atomic_write_text(json_path, report.to_json(), force=True)


class Fp16Via(str, Enum):
    auto = "auto"
    builder_flag = "builder-flag"
    deformrt = "deformrt"
    modelopt = "modelopt"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


OnnxArg = Annotated[Path, typer.Argument(help="ONNX model written by `deformrt export`.")]
PluginOpt = Annotated[Optional[Path], typer.Option(
    "--plugin", help="deformrt TensorRT plugin library (default: $DEFORMRT_PLUGIN_LIB, else plugins/build/).")]
EngineOpt = Annotated[Optional[Path], typer.Option(
    "--engine", help="TensorRT engine from `deformrt build-engine` (adds the trt backend); without it trt builds "
                     "an engine from the ONNX in memory.")]
BackendsOpt = Annotated[Optional[list[str]], typer.Option(
    "--backends", help="Backends, comma-separated or repeated, the first is the reference: torch, ort, trt "
                       "(default: torch,ort).")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="Checkpoint the model was exported with (not needed for random-init exports).")]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="Batch size of the random input.")]
ShapeOpt = Annotated[Optional[str], typer.Option(
    "--shape", help="Input height and width, HxW, multiples of the size divisibility (default: the export shape).")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Device PyTorch runs on.")]
ProviderOpt = Annotated[Device, typer.Option("--ort-provider", help="ONNX Runtime execution provider.")]
Fp16Opt = Annotated[bool, typer.Option(
    "--fp16", help="ONNX Runtime runs deformrt's fp16 conversion of the model; trt builds an fp16 engine.")]
JsonOpt = Annotated[Optional[Path], typer.Option(
    "--json", help="Also write the result as JSON to this file ('-': stdout).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Show TensorRT's and Polygraphy's logs.")]


def _hw(shape: Optional[str]):
    from exporter.trt.profiles import parse_hw

    return parse_hw(shape) if shape else None


def _backends(values: Optional[list[str]], engine: Optional[Path]) -> list[str]:
    backends = parse_list(values) or ["torch", "ort"]
    if engine is not None and "trt" not in backends:
        backends.append("trt")
    return backends


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("build-engine")
    def build_engine_cmd(
        onnx: OnnxArg,
        output: Annotated[Optional[Path], typer.Option(
            "--output", "-o", help="Engine file (default: the ONNX path with .plan, or .fp16.plan).")] = None,
        fp16: Annotated[bool, typer.Option("--fp16", help="Build an fp16 engine.")] = False,
        fp16_via: Annotated[Fp16Via, typer.Option(
            "--fp16-via", help="auto: the FP16 builder flag on TensorRT 10, deformrt's fp16 ONNX on 11 (strongly "
                               "typed); modelopt: ModelOpt AutoCast.")] = Fp16Via.auto,
        tf32: Annotated[bool, typer.Option("--tf32", help="Allow TF32 in an fp32 engine (off by default).")] = False,
        plugin: PluginOpt = None,
        min_shape: Annotated[Optional[str], typer.Option(
            "--min-shape", help="Smallest input, e.g. images:1x3x320x320 (default: from the model).")] = None,
        opt_shape: Annotated[Optional[str], typer.Option(
            "--opt-shape", help="Input shape to optimise for (default: the export shape).")] = None,
        max_shape: Annotated[Optional[str], typer.Option(
            "--max-shape", help="Largest input (default: from the model).")] = None,
        workspace: Annotated[Optional[str], typer.Option(
            "--workspace", help="Builder workspace limit, e.g. 4G (default: TensorRT's).")] = None,
        timing_cache: Annotated[Optional[Path], typer.Option(
            "--timing-cache", help="Timing cache file: read if present, updated after the build.")] = None,
        level: Annotated[Optional[int], typer.Option(
            "--builder-optimization-level", min=0, max=5, help="TensorRT builder optimization level 0-5.")] = None,
        verbose: VerboseOpt = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing engine and sidecar.")] = False,
    ) -> None:
        """Build a TensorRT engine (and its JSON sidecar) from an exported ONNX model."""
        from exporter.trt.build import BuildOptions, build_engine_file

        if output is None:
            output = onnx.with_suffix(".fp16.plan" if fp16 else ".plan")
        options = BuildOptions(fp16=fp16, fp16_method=fp16_via.value, tf32=tf32, plugin=plugin, min_shape=min_shape,
                               opt_shape=opt_shape, max_shape=max_shape,
                               workspace=parse_size(workspace) if workspace else None, timing_cache=timing_cache,
                               builder_optimization_level=level, verbose=verbose)
        meta = build_engine_file(onnx, output, options, force=force)
        method = f" via {meta.fp16_method}" if meta.fp16_method else ""
        typer.echo(f"wrote {output} ({meta.precision}{method}; TensorRT {meta.tensorrt_version}, {meta.gpu_name}) "
                   f"and {output}.json")
        for profile in meta.profiles:
            typer.echo(f"  profile {profile.describe()}")

    @app.command("compare")
    def compare_cmd(
        onnx: OnnxArg,
        backends: BackendsOpt = None,
        engine: EngineOpt = None,
        plugin: PluginOpt = None,
        weights: WeightsOpt = None,
        images: Annotated[Optional[list[str]], typer.Option(
            "--images", help="Real inputs: HxWx3 RGB .npy arrays (PNG/JPEG with Pillow), comma-separated or "
                             "repeated; one batch.")] = None,
        batch: BatchOpt = 1,
        shape: ShapeOpt = None,
        seed: Annotated[Optional[int], typer.Option(
            "--seed", help="Seed of the random input (default: fresh).")] = None,
        device: DeviceOpt = Device.cpu,
        ort_provider: ProviderOpt = Device.cpu,
        fp16: Fp16Opt = False,
        tolerance: Annotated[Optional[float], typer.Option(
            "--tolerance",
            help="Pass if max abs <= tolerance * max |reference| (default: 1e-3 fp32, 1e-2 fp16).")] = None,
        json_path: JsonOpt = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """Run backends on the same input and compare every output with the first backend's."""
        from exporter.evaluation.compare import CompareOptions, compare_models
        from exporter.util.progress import Progress

        options = CompareOptions(backends=_backends(backends, engine), engine=engine, plugin=plugin, weights=weights,
                                 images=[Path(p) for p in parse_list(images)], batch=batch, shape=_hw(shape),
                                 seed=seed, device=device.value, ort_provider=ort_provider.value, fp16=fp16,
                                 tolerance=tolerance, verbose=verbose)
        report = compare_models(onnx, options, Progress())
        show_report(report, json_path)
        if not report.passed:
            raise typer.Exit(1)

    @app.command("bench")
    def bench_cmd(
        onnx: OnnxArg,
        backends: BackendsOpt = None,
        engine: EngineOpt = None,
        plugin: PluginOpt = None,
        weights: WeightsOpt = None,
        batch: BatchOpt = 1,
        shape: ShapeOpt = None,
        warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs per backend.")] = 5,
        iterations: Annotated[int, typer.Option("--iterations", min=1, help="Timed runs per backend.")] = 20,
        device: DeviceOpt = Device.cpu,
        ort_provider: ProviderOpt = Device.cpu,
        fp16: Fp16Opt = False,
        json_path: JsonOpt = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """Latency (p50/p90/p99) and throughput of each backend, side by side with the first."""
        from exporter.evaluation.bench import BenchOptions, bench_models
        from exporter.util.progress import Progress

        options = BenchOptions(backends=_backends(backends, engine), engine=engine, plugin=plugin, weights=weights,
                               batch=batch, shape=_hw(shape), warmup=warmup, iterations=iterations,
                               device=device.value, ort_provider=ort_provider.value, fp16=fp16, verbose=verbose)
        show_report(bench_models(onnx, options, Progress()), json_path)
