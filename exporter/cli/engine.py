"""`deformrt build-engine`, `deformrt compare`, `deformrt bench` and `deformrt eval`: thin commands over
:mod:`exporter.trt.build`, :mod:`exporter.evaluation.compare`, :mod:`exporter.evaluation.bench` and
:mod:`exporter.evaluation.coco_eval`."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli import options as o
from exporter.cli.options import parse_list
from models.errors import DeformRTError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, flag: str = "--workspace") -> int:
    """Bytes from ``1073741824``, ``512M``, ``4G`` or ``4GiB`` (binary units)."""
    m = _SIZE.match(text.strip())
    if not m or float(m[1]) <= 0:
        raise DeformRTError(f"{flag} {text!r}: give a size such as 4G, 512M or a number of bytes")
    return int(float(m[1]) * _UNITS[m[2].lower()])


class Fp16Via(str, Enum):
    auto = "auto"
    builder_flag = "builder-flag"
    deformrt = "deformrt"
    modelopt = "modelopt"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


OnnxArg = Annotated[Path, typer.Argument(metavar=o.ONNX, help="ONNX model written by `deformrt export`.")]
PluginOpt = Annotated[Optional[Path], typer.Option(
    "--plugin", metavar=o.FILE,
    help="deformrt TensorRT plugin library (default: $DEFORMRT_PLUGIN_LIB, else plugins/build/).")]
EngineOpt = Annotated[Optional[Path], typer.Option(
    "--engine", metavar=o.FILE,
    help="TensorRT engine from `deformrt build-engine` (adds the trt backend); without it trt builds an engine from "
         "the ONNX in memory.")]
BackendsOpt = Annotated[Optional[list[str]], typer.Option(
    "--backends", metavar=o.LIST,
    help="Backends, comma-separated or repeated, the first is the reference: torch, ort, trt (default: torch,ort).")]
DeviceOpt = Annotated[Device, typer.Option("--device", metavar=o.choices("cpu", "cuda"), help="Device PyTorch runs on.")]
ProviderOpt = Annotated[Device, typer.Option(
    "--ort-provider", metavar=o.choices("cpu", "cuda"), help="ONNX Runtime execution provider.")]
Fp16Opt = Annotated[bool, typer.Option(
    "--fp16", help="ONNX Runtime runs deformrt's fp16 conversion of the model; trt builds an fp16 engine.")]


def _backends(values: Optional[list[str]], engine: Optional[Path], plugin: Optional[Path] = None) -> list[str]:
    backends = parse_list(values) or ["torch", "ort"]
    if engine is not None and "trt" not in backends:
        backends.append("trt")
    if plugin is not None and "trt" not in backends:  # else it would be ignored without a word
        raise DeformRTError("--plugin is for the trt backend: add --engine FILE, or trt to --backends")
    return backends


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("build-engine")
    def build_engine_cmd(
        onnx: OnnxArg,
        output: Annotated[Optional[Path], o.output_option(
            "Engine file (default: the ONNX path with .plan, or .fp16.plan).")] = None,
        fp16: Annotated[bool, typer.Option("--fp16", help="Build an fp16 engine.")] = False,
        fp16_via: Annotated[Fp16Via, typer.Option(
            "--fp16-via", metavar=o.choices(*(m.value for m in Fp16Via)), help="auto: the FP16 builder flag on TensorRT 10, deformrt's fp16 ONNX on 11 (strongly "
                               "typed); modelopt: ModelOpt AutoCast.")] = Fp16Via.auto,
        tf32: Annotated[bool, typer.Option("--tf32", help="Allow TF32 in an fp32 engine (off by default).")] = False,
        plugin: PluginOpt = None,
        min_shape: o.MinShapeOpt = None,
        opt_shape: o.OptShapeOpt = None,
        max_shape: o.MaxShapeOpt = None,
        workspace: Annotated[Optional[str], typer.Option(
            "--workspace", metavar=o.SIZE, help="Builder workspace limit, e.g. 4G (default: TensorRT's).")] = None,
        timing_cache: Annotated[Optional[Path], typer.Option(
            "--timing-cache", metavar=o.FILE, help="Timing cache file: read if present, updated after the "
                                                   "build.")] = None,
        level: Annotated[Optional[int], typer.Option(
            "--builder-optimization-level", metavar=o.N, min=0, max=5,
            help="TensorRT builder optimization level 0-5.")] = None,
        verbose: o.VerboseOpt = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing engine and sidecar.")] = False,
    ) -> None:
        """Build a TensorRT engine (and its JSON sidecar) from an exported ONNX model."""
        from exporter.trt.build import BuildOptions, build_engine_file

        if output is None:
            output = onnx.with_suffix(".fp16.plan" if fp16 else ".plan")
        o.check_output_file(output, force, inputs=[onnx, plugin])
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
        weights: o.WeightsOpt = None,
        images: o.ImagesOpt = None,
        batch: o.BatchOpt = 1,
        shape: o.ShapeOpt = None,
        seed: o.SeedOpt = None,
        device: DeviceOpt = Device.cpu,
        ort_provider: ProviderOpt = Device.cpu,
        fp16: Fp16Opt = False,
        tolerance: Annotated[Optional[float], typer.Option(
            "--tolerance", metavar=o.X,
            help="Pass if max abs <= X * max |reference| (default: 1e-3 fp32, 1e-2 fp16).")] = None,
        as_json: o.JsonFlag = False,
        json_file: o.JsonFileOpt = None,
        verbose: o.VerboseOpt = False,
    ) -> None:
        """Run backends on the same input and compare every output with the first backend's; exit status 1 when
        one differs."""
        from exporter.evaluation.compare import CompareOptions, compare_models
        from exporter.util.progress import Progress

        o.check_report_file(json_file, inputs=[onnx, engine, plugin, weights, *map(Path, parse_list(images))])
        selected = _backends(backends, engine, plugin)
        options = CompareOptions(backends=selected, engine=engine, plugin=plugin, weights=weights,
                                 images=[Path(p) for p in parse_list(images)], batch=batch, shape=o.parse_shape(shape),
                                 seed=seed, device=device.value, ort_provider=ort_provider.value, fp16=fp16,
                                 tolerance=tolerance, verbose=verbose)
        report = compare_models(onnx, options, Progress())
        o.emit(as_json, report.to_dict, report.table, json_file)
        if not report.passed:
            raise typer.Exit(1)

    @app.command("bench")
    def bench_cmd(
        onnx: OnnxArg,
        backends: BackendsOpt = None,
        engine: EngineOpt = None,
        plugin: PluginOpt = None,
        weights: o.WeightsOpt = None,
        batch: o.BatchOpt = 1,
        shape: o.ShapeOpt = None,
        warmup: Annotated[int, typer.Option("--warmup", metavar=o.N, min=0, help="Untimed runs per backend.")] = 5,
        iterations: Annotated[int, typer.Option(
            "--iterations", metavar=o.N, min=1, help="Timed runs per backend (on CPU at 800x1344 each takes "
                                                     "seconds: try --warmup 1 --iterations 5).")] = 20,
        device: DeviceOpt = Device.cpu,
        ort_provider: ProviderOpt = Device.cpu,
        fp16: Fp16Opt = False,
        as_json: o.JsonFlag = False,
        json_file: o.JsonFileOpt = None,
        verbose: o.VerboseOpt = False,
    ) -> None:
        """Latency (p50/p90/p99) and throughput of each backend, side by side with the first."""
        from exporter.evaluation.bench import BenchOptions, bench_models
        from exporter.util.progress import Progress

        o.check_report_file(json_file, inputs=[onnx, engine, plugin, weights])
        selected = _backends(backends, engine, plugin)
        options = BenchOptions(backends=selected, engine=engine, plugin=plugin, weights=weights,
                               batch=batch, shape=o.parse_shape(shape), warmup=warmup, iterations=iterations,
                               device=device.value, ort_provider=ort_provider.value, fp16=fp16, verbose=verbose)
        report = bench_models(onnx, options, Progress())
        o.emit(as_json, report.to_dict, report.table, json_file)

    @app.command("eval")
    def eval_cmd(
        onnx: Annotated[Path, typer.Argument(metavar=o.ONNX, help="Detector file written by `deformrt export "
                                                                  "--detector`.")],
        coco: Annotated[Path, typer.Option("--coco", metavar=o.FILE, help="COCO-format annotation file (JSON) of "
                                                                          "the images.")],
        images: Annotated[Path, typer.Option("--images", metavar=o.DIR, help="Folder holding the annotation "
                                                                              "file's images.")],
        backends: Annotated[Optional[list[str]], typer.Option(
            "--backends", metavar=o.LIST,
            help="Backends, comma-separated or repeated, the first is the reference of the AP differences: torch, "
                 "ort, trt (default: torch,ort; trt is skipped with its reason where TensorRT or a GPU is "
                 "missing).")] = None,
        engine: EngineOpt = None,
        plugin: PluginOpt = None,
        weights: o.WeightsOpt = None,
        device: DeviceOpt = Device.cpu,
        ort_provider: ProviderOpt = Device.cpu,
        fp16: Fp16Opt = False,
        as_json: o.JsonFlag = False,
        json_file: o.JsonFileOpt = None,
        verbose: o.VerboseOpt = False,
    ) -> None:
        """COCO box and mask AP of a detector file with pycocotools, per backend side by side, and each
        backend's AP difference from the first."""
        from exporter.evaluation.coco_eval import EvalOptions, evaluate
        from exporter.util.progress import Progress

        o.check_report_file(json_file, inputs=[onnx, coco, engine, plugin, weights])
        selected = _backends(backends, engine, plugin)
        options = EvalOptions(backends=selected, engine=engine, plugin=plugin, weights=weights,
                              device=device.value, ort_provider=ort_provider.value, fp16=fp16, verbose=verbose)
        report = evaluate(onnx, coco, images, options, Progress())
        o.emit(as_json, report.to_dict, report.table, json_file)
