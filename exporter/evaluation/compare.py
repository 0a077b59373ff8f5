"""``deformrt compare``: the same inputs through PyTorch, ONNX Runtime and TensorRT, output by output.

The first backend is the reference; every other backend is compared with it on every output.
Inputs are fresh random images (uniform pixel values, a new seed each run unless one is given,
reported so a run can be repeated) or real images, preprocessed as the exported model expects:
channel order and 0..255 / 0..1 scaling from ``deformrt.to_bgr255`` and ``deformrt.color_order``,
then ``(x - pixel_mean) / pixel_std``, then zero padding (after normalisation, as
maskrcnn-benchmark's ``to_image_list``) on the bottom and right to a multiple of the size
divisibility. ``.npy`` files hold ``HxWx3`` RGB arrays with values 0..255; PNG and JPEG are read
with Pillow when it is installed.

Runs go through Polygraphy's ``Comparator``. Per output the report gives the largest absolute
difference, the largest relative difference *to the reference's peak magnitude* (``max abs / max
|reference|``, which stays meaningful where outputs cross zero, unlike an element-wise ratio), the
mean absolute difference, and pass/fail: ``max abs <= tolerance * max |reference|`` with the
tolerance of the less precise backend of the pair (:data:`TOLERANCES`) unless one is given.

When an output fails and PyTorch can be rebuilt (random weights, or ``--weights``), PyTorch runs in
float64 on the same input and an ill-conditioned model (random DCN offsets) is judged as
:mod:`exporter.evaluation.conditioning` explains: the same rule and the same note as ``deformrt
export --verify``, so the two never tell different stories about one file.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from exporter.evaluation.conditioning import Story, note, passes, relative_error, run_cost, run_torch
from exporter.evaluation.inputs import load_image, preprocess, random_images
from exporter.trt.profiles import check_in_profile, format_shape, input_dims
from exporter.util.progress import Progress
from models.errors import DeformRTError, require_positive

BACKENDS = ("torch", "ort", "trt")
TOLERANCES = {"fp32": 1e-3, "tf32": 1e-2, "fp16": 1e-2}
_PRECISION_RANK = {"fp32": 0, "tf32": 1, "fp16": 2}


# ----------------------------------------------------------------------------------------------
# Inputs


def check_hw(height: int, width: int, size_divisibility: int) -> None:
    if size_divisibility > 0 and (height % size_divisibility or width % size_divisibility):
        raise DeformRTError(f"--shape {height}x{width}: height and width must be multiples of the model's size "
                            f"divisibility {size_divisibility}")


# ----------------------------------------------------------------------------------------------
# Report


@dataclass
class OutputStats:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # max_abs / max |reference|
    mean_abs: float
    passed: bool
    floor: Optional[float] = None  # PyTorch fp32 vs float64 (when float64 was consulted)
    max_rel_float64: Optional[float] = None  # this backend vs float64

    def verdict(self, tolerance: float) -> str:
        """``PASS``, ``PASS (vs fp64)`` (passes only against float64, see the note) or ``FAIL``."""
        if not self.passed:
            return "FAIL"
        return "PASS" if self.max_rel <= tolerance else "PASS (vs fp64)"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "max_abs": self.max_abs, "max_rel": self.max_rel,
                "mean_abs": self.mean_abs, "passed": self.passed, "floor": self.floor,
                "max_rel_float64": self.max_rel_float64}


@dataclass
class Comparison:
    backend: str
    precision: str
    tolerance: float
    outputs: list[OutputStats] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)


@dataclass
class CompareReport:
    onnx_path: str
    input_name: str
    input_shape: tuple[int, ...]
    source: str  # "random" or "images"
    seed: Optional[int]
    images: list[str]
    reference: str
    reference_precision: str
    comparisons: list[Comparison]
    story: Optional[Story] = None  # what the float64 run showed, when it was needed
    float64_unavailable: Optional[str] = None  # why no float64 run could be made after a failure

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def to_dict(self) -> dict:
        """Stable ``--json`` content."""
        return {
            "onnx": self.onnx_path,
            "input": {"name": self.input_name, "shape": list(self.input_shape), "source": self.source,
                      "seed": self.seed, "images": list(self.images)},
            "reference": {"backend": self.reference, "precision": self.reference_precision},
            "comparisons": [{"backend": c.backend, "precision": c.precision, "tolerance": c.tolerance,
                             "passed": c.passed,
                             "outputs": [{**o.to_dict(), "verdict": o.verdict(c.tolerance)} for o in c.outputs]}
                            for c in self.comparisons],
            "passed": self.passed,
            "ill_conditioned": bool(self.story and self.story.ill_conditioned),
            "note": " ".join(" ".join(self.notes()).split()) or None,
        }

    def notes(self) -> list[str]:
        """The lines under the table: why float64 decided, or why it could not."""
        if self.story is not None:
            return note(self.story)
        return [f"note: {self.float64_unavailable}"] if self.float64_unavailable else []

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        """The human-readable per-output table."""
        where = f"random, seed {self.seed}" if self.source == "random" else ", ".join(self.images)
        lines = [f"input {self.input_name} {format_shape(self.input_shape)} ({where}); reference: {self.reference} "
                 f"({self.reference_precision}); max rel = max abs / max |reference|"]
        float64 = self.story is not None
        header = ("backend", "output", "shape", "max abs", "max rel", "mean abs", "tolerance")
        header += ("torch fp32 vs fp64", "vs fp64", "result") if float64 else ("result",)
        fmt = lambda value: "-" if value is None else f"{value:.3e}"  # noqa: E731
        rows = [(f"{c.backend} ({c.precision})", o.name, format_shape(o.shape), f"{o.max_abs:.3e}",
                 f"{o.max_rel:.3e}", f"{o.mean_abs:.3e}", f"{c.tolerance:.0e}")
                + ((fmt(o.floor), fmt(o.max_rel_float64)) if float64 else ()) + (o.verdict(c.tolerance),)
                for c in self.comparisons for o in c.outputs]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        lines += self.notes()
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def output_stats(name: str, reference: np.ndarray, result) -> OutputStats:
    """Our statistics from a Polygraphy ``OutputCompareResult`` and the reference array."""
    peak = float(np.max(np.abs(reference))) if reference.size else 0.0
    max_abs = float(result.max_absdiff)
    if peak > 0:
        max_rel = max_abs / peak
    else:
        max_rel = 0.0 if max_abs == 0 else float("inf")
    return OutputStats(name, tuple(reference.shape), max_abs, max_rel, float(result.mean_absdiff), bool(result))


def comparison_tolerance(precisions: Sequence[str], override: Optional[float]) -> float:
    if override is not None:
        return require_positive(override, "--tolerance")
    return TOLERANCES[max(precisions, key=_PRECISION_RANK.__getitem__)]


# ----------------------------------------------------------------------------------------------
# Running


@dataclass
class BackendOptions:
    """Which backends run and how: what ``compare``, ``bench`` and ``eval`` share (see their --help)."""

    backends: Sequence[str] = ("torch", "ort")
    engine: Optional[Path] = None
    plugin: Optional[Path] = None
    weights: Optional[Path] = None
    device: str = "cpu"  # PyTorch device
    ort_provider: str = "cpu"
    fp16: bool = False  # ONNX Runtime runs the fp16 conversion; TensorRT builds fp16 from the ONNX
    verbose: bool = False


@dataclass
class RunOptions(BackendOptions):
    """What ``deformrt compare`` and ``deformrt bench`` share (see their --help): the backends and
    the input batch."""

    batch: int = 1
    shape: Optional[tuple[int, int]] = None


@dataclass
class CompareOptions(RunOptions):
    """What ``deformrt compare`` asks for (see its --help)."""

    images: Sequence[Path] = ()
    seed: Optional[int] = None
    tolerance: Optional[float] = None


def _check_backends(backends: Sequence[str]) -> list[str]:
    backends = list(backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DeformRTError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    if len(backends) < 2 or len(set(backends)) != len(backends):
        raise DeformRTError(f"compare needs at least two different backends, got {', '.join(backends) or 'none'}")
    return backends


def single_input(model) -> tuple[str, list]:
    """The model's one image input (name, dims); DeformRTError for other models."""
    dims = input_dims(model)
    if len(dims) != 1:
        raise DeformRTError(f"deformrt compares single-input models; this one has inputs {', '.join(dims)}")
    return next(iter(dims.items()))


def make_inputs(meta, images: Sequence[Path] = (), batch: int = 1, shape: Optional[tuple[int, int]] = None,
                seed: Optional[int] = None) -> tuple[np.ndarray, Optional[int]]:
    """The input batch (real ``images``, else ``batch`` random images of ``shape``, the export size by
    default) and the seed used (a fresh one when None; None for real images)."""
    if images:
        return preprocess([load_image(p) for p in images], meta), None
    if batch < 1:
        raise DeformRTError(f"--batch must be at least 1, got {batch}")
    height, width = shape or tuple(meta.export_shape[2:4])
    check_hw(height, width, meta.size_divisibility)
    seed = seed if seed is not None else secrets.randbits(31)
    return preprocess(random_images(batch, height, width, seed), meta), seed


def check_static_dims(name: str, dims: Sequence, shape: Sequence[int]) -> None:
    for axis, (dim, size) in enumerate(zip(dims, shape)):
        if isinstance(dim, int) and dim != size:
            raise DeformRTError(f"input {name!r} is {format_shape(shape)} but the model fixes axis {axis} at {dim} "
                                f"(export it with dynamic shapes, or use its export shape)")


@dataclass
class Prepared:
    """What ``deformrt compare`` and ``deformrt bench`` read and check before any backend runs."""

    onnx_path: Path
    meta: object  # ExportMetadata
    model: object  # onnx.ModelProto, parsed once and shared by the backends
    input_name: str
    batch: np.ndarray
    seed: Optional[int]
    engine_meta: object = None  # the --engine sidecar (EngineMeta) when trt runs one


def prepare_run(onnx_path: Path, options: RunOptions, images: Sequence[Path] = (), loaded=None) -> Prepared:
    """Load the model once, make the input batch and check what can fail early (engine sidecar and
    profile, plugin library, TensorRT itself) before anything runs. ``loaded``: (ModelProto,
    ExportMetadata) when the caller has parsed the file already."""
    from exporter.trt.build import load_onnx

    onnx_path = Path(onnx_path)
    model, meta = loaded or load_onnx(onnx_path)
    input_name, dims = single_input(model)
    batch, seed = make_inputs(meta, images, options.batch, options.shape, options.seed)
    check_static_dims(input_name, dims, batch.shape)
    prepared = Prepared(onnx_path, meta, model, input_name, batch, seed)
    if "trt" in options.backends:
        from exporter.trt.sidecar import read_sidecar
        from exporter.trt.env import import_tensorrt
        from exporter.trt.plugin import resolve_plugin, uses_plugin

        if options.engine is not None:
            prepared.engine_meta = read_sidecar(options.engine)
            check_in_profile(prepared.engine_meta.profile(input_name), batch.shape)
        elif uses_plugin(model):
            resolve_plugin(options.plugin)
        import_tensorrt()
    return prepared


def trt_build_options(run: Prepared, options: RunOptions):
    """BuildOptions for an engine built in memory for exactly ``run``'s input shape."""
    from exporter.trt.build import BuildOptions

    return BuildOptions.static(run.input_name, run.batch.shape, fp16=options.fp16, plugin=options.plugin,
                               verbose=options.verbose)


def _runners(backends: Sequence[str], run: Prepared, options: CompareOptions) -> tuple[dict, dict[str, str]]:
    """Polygraphy runners and the precision of each backend."""
    from exporter.evaluation import runners
    from exporter.onnx.fp16 import convert_to_fp16, model_precision

    made, precisions = {}, {}
    if "torch" in backends:
        from polygraphy.common import TensorMetadata

        from exporter.onnx.export import rebuild_model

        weights = str(options.weights) if options.weights else None
        made["torch"] = runners.TorchRunner(lambda: rebuild_model(run.meta, weights),
                                            TensorMetadata().add(run.input_name, np.float32, list(run.batch.shape)),
                                            run.meta.output_names, options.device, name="torch")
        precisions["torch"] = "fp32"
    if "ort" in backends:
        ort_model = convert_to_fp16(run.model).model if options.fp16 else run.model
        made["ort"] = runners.onnxrt_runner(ort_model, options.ort_provider, name="ort")
        precisions["ort"] = model_precision(ort_model)
    if "trt" in backends:
        if options.engine is not None:
            made["trt"] = runners.trt_engine_runner(options.engine, options.plugin, options.verbose, name="trt")
            precisions["trt"] = run.engine_meta.precision
        else:
            made["trt"] = runners.trt_onnx_runner(run.onnx_path, trt_build_options(run, options), run.model,
                                                  name="trt")
            precisions["trt"] = "fp16" if options.fp16 or model_precision(run.model) == "fp16" else "fp32"
    return made, precisions


def _comparisons(results, backends: Sequence[str], precisions: dict[str, str],
                 tolerance: Optional[float]) -> list[Comparison]:
    """Each backend after the first against the first, output by output, with Polygraphy's
    ``SimpleCompareFunc`` on the max statistic: pass iff max abs <= tol * max |reference|."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    reference = results[backends[0]][0]
    comparisons = []
    for index, backend in enumerate(backends[1:], start=1):
        tol = comparison_tolerance((precisions[backends[0]], precisions[backend]), tolerance)
        atol = {name: tol * float(np.max(np.abs(arr))) for name, arr in reference.items()}
        func = SimpleCompareFunc(check_error_stat="max", atol=atol, rtol=0.0)
        accuracy = Comparator.compare_accuracy(results, comparisons=[(0, index)], compare_func=func)
        per_output = next(iter(accuracy[0].values()))[0]
        for name in reference.keys():
            if name not in per_output:
                raise DeformRTError(f"{backend} produced no output named {name!r}")
            if isinstance(per_output[name], bool):  # Polygraphy's answer to a shape mismatch
                raise DeformRTError(f"{backend} output {name!r} has shape "
                                    f"{format_shape(results[backend][0][name].shape)}, the reference "
                                    f"{format_shape(reference[name].shape)}")
        comparisons.append(Comparison(backend, precisions[backend], tol,
                                      [output_stats(n, reference[n], per_output[n]) for n in reference.keys()]))
    return comparisons


def load_model_file(onnx_path: Path):
    """(ModelProto, ExportMetadata, DetectorMetadata or None for a backbone file), the file parsed
    once (``compare`` and ``bench`` take either kind of file)."""
    from exporter.onnx.metadata import DetectorMetadata
    from exporter.trt.build import load_onnx

    model, meta = load_onnx(Path(onnx_path))
    return model, meta, DetectorMetadata.from_model(model)


def compare_models(onnx_path: Path, options: CompareOptions = CompareOptions(),
                   progress: Optional[Progress] = None) -> CompareReport:
    """Run ``options.backends`` on the same inputs and compare each with the first."""
    from polygraphy.comparator import Comparator
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    backends = _check_backends(options.backends)
    comparison_tolerance(["fp32"], options.tolerance)  # reject a bad --tolerance before running
    model, meta, detector = load_model_file(onnx_path)
    if detector is not None:  # detections, compared as sets
        from exporter.evaluation.detector_compare import compare_detector

        return compare_detector(Path(onnx_path), model, meta, detector, options, progress)
    run = prepare_run(onnx_path, options, options.images, loaded=(model, meta))
    made, precisions = _runners(backends, run, options)

    feeds = [OrderedDict([(run.input_name, run.batch)])]
    with G_LOGGER.verbosity(G_LOGGER.INFO if options.verbose else G_LOGGER.CRITICAL + 1):
        try:
            with (progress or Progress.quiet()).step(f"running {', '.join(backends)}"):
                results = Comparator.run([made[b] for b in backends], data_loader=feeds)
            comparisons = _comparisons(results, backends, precisions, options.tolerance)
        except PolygraphyException as exc:
            raise DeformRTError(f"comparison failed: {' '.join(str(exc).split())}") from None
    report = CompareReport(str(run.onnx_path), run.input_name, tuple(run.batch.shape),
                           "images" if options.images else "random", run.seed, [str(p) for p in options.images],
                           backends[0], precisions[backends[0]], comparisons)
    if not report.passed:
        judge_against_float64(report, run, results, precisions, options, progress or Progress.quiet())
    return report


def judge_against_float64(report: CompareReport, run: Prepared, results, precisions: dict[str, str],
                          options: CompareOptions, progress: Progress) -> None:
    """After a failed comparison: run PyTorch in float64 (and fp32, unless it ran as a backend) on
    the same input, fill in every output's floor and error against float64, and re-judge the outputs
    by :func:`exporter.evaluation.conditioning.passes`; ``report.story`` then says what it showed."""
    import torch

    from exporter.onnx.export import rebuild_model

    if run.meta.seed is None and options.weights is None:
        report.float64_unavailable = (f"to tell an ill-conditioned model from a real difference, compare runs PyTorch "
                                      f"in float64; pass --weights FILE ({run.meta.weights}, the checkpoint the model "
                                      f"was exported with)")
        return
    progress.info("the comparison failed: running PyTorch in float64 to tell an ill-conditioned model from a real "
                  "difference")
    model = rebuild_model(run.meta, str(options.weights) if options.weights else None)
    names = list(run.meta.output_names)
    need_fp32 = precisions.get("torch") != "fp32"  # else the torch backend's result is PyTorch fp32's
    plan = progress.plan(run_cost(run.batch, torch.float64) + (run_cost(run.batch, torch.float32) if need_fp32 else 0))
    (outputs64,), offsets = run_torch(model, [run.batch], torch.float64, plan, device=options.device)
    expected64 = dict(zip(names, outputs64))
    if not need_fp32:
        torch32 = {name: np.asarray(results["torch"][0][name]) for name in names}
    else:
        (outputs32,), _ = run_torch(model, [run.batch], torch.float32, plan, device=options.device)
        torch32 = dict(zip(names, outputs32))
    floors = []
    for comparison in report.comparisons:
        for out in comparison.outputs:
            out.floor = relative_error(expected64[out.name], torch32[out.name])[1]
            out.max_rel_float64 = relative_error(expected64[out.name],
                                                 np.asarray(results[comparison.backend][0][out.name]))[1]
            out.passed = out.passed or passes(out.max_rel, comparison.tolerance, out.floor, out.max_rel_float64)
            floors.append(out.floor)
    tolerance = min(c.tolerance for c in report.comparisons)
    report.story = Story(tolerance, max(floors), offsets, run.meta.seed, run.meta.body, report.passed)


def demo_compare(onnx_path: Path, progress: Optional[Progress] = None, weights: Optional[Path] = None) -> CompareReport:
    """The comparison ``make demo`` ends with: PyTorch against ONNX Runtime, plus a TensorRT engine
    built in memory where TensorRT, a GPU and (for a plugin-flavour model) the plugin library are
    present; why TensorRT was left out is reported through ``progress``."""
    import torch

    from exporter.onnx.metadata import read_onnx
    from exporter.trt.build import tensorrt_unavailable_reason

    progress = progress or Progress.quiet()
    model = read_onnx(Path(onnx_path), load_external_data=False)
    backends = ["torch", "ort"]
    reason = tensorrt_unavailable_reason(model)
    if reason is None:
        backends.append("trt")
    else:
        progress.info(f"TensorRT left out of the comparison: {reason}")
    options = CompareOptions(backends=tuple(backends), weights=weights,
                             device="cuda" if torch.cuda.is_available() else "cpu")
    return compare_models(Path(onnx_path), options, progress)
