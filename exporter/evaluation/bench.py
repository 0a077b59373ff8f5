"""``deformrt bench``: latency and throughput of PyTorch, ONNX Runtime and TensorRT on one input.

Each backend gets the same preprocessed random batch (resident on its device), ``warmup`` untimed
runs, then ``iterations`` timed runs, one batch at a time. GPU work is timed with CUDA events
recorded on the stream the work runs on (PyTorch's current stream; the TensorRT session's stream);
CPU work, and ONNX Runtime (whose ``run`` returns only after its CUDA stream is synchronised), by
the wall clock. Reported: p50 / p90 / p99 / mean latency in milliseconds, throughput in images per
second (batch / mean latency), and each backend's p50 relative to the first backend's.

Progress: every run ticks a :meth:`Progress.loop`, so a slow backend (PyTorch on CPU at 800x1344 takes
seconds a run) shows runs done, time per run and time left instead of one silent line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from exporter.evaluation.compare import BACKENDS, Prepared, RunOptions, prepare_run, trt_build_options
from exporter.trt.profiles import format_shape
from exporter.util.progress import Progress
from models.errors import DeformRTError


class WallTimer:
    """Times a call with a monotonic clock; ``sync`` runs before the clock stops (e.g. a device sync)."""

    name = "wall-clock"

    def __init__(self, sync: Optional[Callable[[], None]] = None, clock: Callable[[], float] = time.perf_counter):
        self._sync = sync
        self._clock = clock

    def measure(self, run: Callable[[], object]) -> float:
        start = self._clock()
        run()
        if self._sync is not None:
            self._sync()
        return (self._clock() - start) * 1e3


class CudaEventTimer:
    """Times a call with CUDA events recorded on ``stream`` around it."""

    name = "cuda-events"

    def __init__(self, stream):
        self.stream = stream

    def measure(self, run: Callable[[], object]) -> float:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(self.stream)
        run()
        end.record(self.stream)
        end.synchronize()
        return float(start.elapsed_time(end))


def time_runs(run: Callable[[], object], timer, warmup: int, iterations: int,
              tick: Callable[[], None] = lambda: None) -> list[float]:
    """``warmup`` untimed calls, then the latency in ms of each of ``iterations`` calls; ``tick``
    after every call (progress)."""
    if warmup < 0 or iterations < 1:
        raise DeformRTError(f"need --warmup >= 0 and --iterations >= 1, got {warmup} and {iterations}")
    for _ in range(warmup):
        timer.measure(run)
        tick()
    latencies = []
    for _ in range(iterations):
        latencies.append(timer.measure(run))
        tick()
    return latencies


@dataclass
class BenchResult:
    backend: str
    device: str
    precision: str
    timer: str
    batch: int
    latencies_ms: list[float]
    # A detector's backbone (body + FPN) timed alone, where the backend can run it alone (PyTorch).
    backbone_ms: Optional[list[float]] = None
    # Or its share of a run as the backend's profiler measured it (ONNX Runtime).
    profiled_backbone_share: Optional[float] = None

    def backbone_share(self) -> Optional[float]:
        """The backbone's p50 over the whole run's p50 (the heads and postprocessing are the rest),
        or the profiled share."""
        if self.profiled_backbone_share is not None:
            return self.profiled_backbone_share
        if not self.backbone_ms:
            return None
        whole = self.stats()["p50"]
        return float(np.percentile(self.backbone_ms, 50)) / whole if whole > 0 else None

    def stats(self) -> dict[str, float]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        mean = float(lat.mean())
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "min": float(lat.min()),
                "max": float(lat.max()), "throughput": self.batch * 1e3 / mean if mean > 0 else float("inf")}


@dataclass
class BenchReport:
    onnx_path: str
    input_name: str
    input_shape: tuple[int, ...]
    warmup: int
    iterations: int
    results: list[BenchResult]
    note: Optional[str] = None  # what is and is not timed (a detector file's)

    def ratios(self) -> list[float]:
        """Each backend's p50 latency divided by the first backend's."""
        first = self.results[0].stats()["p50"]
        return [r.stats()["p50"] / first if first > 0 else float("inf") for r in self.results]

    def to_dict(self) -> dict:
        """Stable ``--json`` content."""
        out = []
        for result, ratio in zip(self.results, self.ratios()):
            stats = result.stats()
            out.append({"backend": result.backend, "device": result.device, "precision": result.precision,
                        "timer": result.timer, "batch": result.batch,
                        "latency_ms": {k: stats[k] for k in ("p50", "p90", "p99", "mean", "min", "max")},
                        "throughput": stats["throughput"], "ratio_p50_vs_first": ratio})
            if self.note is not None:  # a detector file's report: what is timed, and the backbone's share
                out[-1]["backbone_share"] = result.backbone_share()
        doc = {"onnx": self.onnx_path, "input": {"name": self.input_name, "shape": list(self.input_shape)},
               "warmup": self.warmup, "iterations": self.iterations, "results": out}
        if self.note is not None:
            doc["note"] = self.note
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        first = self.results[0].backend
        header = ("backend", "device", "precision", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s",
                  f"p50 vs {first}")
        detector = self.note is not None
        header += ("backbone share",) if detector else ()
        rows = []
        for result, ratio in zip(self.results, self.ratios()):
            s = result.stats()
            share = result.backbone_share()
            rows.append((result.backend, result.device, result.precision, f"{s['p50']:.3f}", f"{s['p90']:.3f}",
                         f"{s['p99']:.3f}", f"{s['mean']:.3f}", f"{s['throughput']:.1f}", f"{ratio:.2f}x")
                        + (("-" if share is None else f"{share:.0%}",) if detector else ()))
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        lines = [f"input {self.input_name} {format_shape(self.input_shape)}; {self.warmup} warm-up + "
                 f"{self.iterations} timed runs per backend"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)


@dataclass
class BenchOptions(RunOptions):
    """What ``deformrt bench`` asks for (see its --help)."""

    warmup: int = 5
    iterations: int = 20
    seed: int = 0


def _torch_backend(run: Prepared, options: BenchOptions):
    import torch

    from exporter.onnx.export import rebuild_model

    if options.device == "cuda" and not torch.cuda.is_available():
        raise DeformRTError("--device cuda: PyTorch sees no CUDA device here")
    model = rebuild_model(run.meta, str(options.weights) if options.weights else None).eval().to(options.device)
    x = torch.from_numpy(run.batch).to(options.device)

    def call():
        with torch.inference_mode():
            return model(x)

    timer = CudaEventTimer(torch.cuda.current_stream()) if options.device == "cuda" else WallTimer()
    return call, timer, options.device, "fp32"


def _ort_backend(run: Prepared, options: BenchOptions):
    import onnxruntime as ort

    from exporter.onnx.fp16 import convert_to_fp16, model_precision
    from exporter.evaluation.ort import ort_session

    model = convert_to_fp16(run.model).model if options.fp16 else run.model
    session = ort_session(model, options.ort_provider)
    binding = session.io_binding()
    binding.bind_ortvalue_input(run.input_name, ort.OrtValue.ortvalue_from_numpy(run.batch, options.ort_provider, 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, options.ort_provider)

    def call():
        session.run_with_iobinding(binding)

    return call, WallTimer(), options.ort_provider, model_precision(model)


def _trt_backend(run: Prepared, options: BenchOptions):
    import torch

    from exporter.trt.build import build_in_memory
    from exporter.trt.engine import load_engine
    from exporter.trt.session import TrtSession, torch_dtype

    if options.engine is not None:
        loaded = load_engine(options.engine, options.plugin, options.verbose)
    else:
        loaded = build_in_memory(run.onnx_path, trt_build_options(run, options), run.model)
    session = TrtSession(loaded)
    feed = {run.input_name: torch.from_numpy(run.batch).to(
        "cuda", torch_dtype(session.engine.get_tensor_dtype(run.input_name)))}
    return (lambda: session.run_device(feed)), CudaEventTimer(session.stream), "cuda", loaded.meta.precision


_BACKENDS = {"torch": _torch_backend, "ort": _ort_backend, "trt": _trt_backend}


def bench_models(onnx_path: Path, options: BenchOptions = BenchOptions(),
                 progress: Optional[Progress] = None) -> BenchReport:
    """Time ``options.backends`` on one random batch (see the module docstring)."""
    backends = list(options.backends)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends or len(set(backends)) != len(backends):
        raise DeformRTError(f"--backends takes distinct names from {', '.join(BACKENDS)}, got {', '.join(backends)}")
    progress = progress or Progress.quiet()
    from exporter.evaluation.compare import load_model_file

    model, meta, detector = load_model_file(onnx_path)
    if detector is not None:
        return bench_detector(Path(onnx_path), model, meta, detector, options, progress)
    run = prepare_run(onnx_path, options, loaded=(model, meta))

    results = []
    for backend in backends:
        with progress.step(f"preparing {backend}"):
            call, timer, device, precision = _BACKENDS[backend](run, options)
        runs = options.warmup + options.iterations
        with progress.loop(f"timing {backend} ({options.warmup} warm-up + {options.iterations} timed)", runs) as tick:
            latencies = time_runs(call, timer, options.warmup, options.iterations, tick)
        results.append(BenchResult(backend, device, precision, timer.name, run.batch.shape[0], latencies))
    return BenchReport(str(run.onnx_path), run.input_name, tuple(run.batch.shape), options.warmup, options.iterations,
                       results)


DETECTOR_NOTE = ("end-to-end latency of the detector file's inputs to its fixed-size outputs (backbone, RPN, "
                 "heads, decoding, NMS, ROIAlign, masks); preprocessing (resize, normalisation) and mask pasting "
                 "are excluded; trt includes the host<->device copies; backbone share (body + FPN): torch times "
                 "the backbone alone, ort profiles one run (share of node time), trt cannot tell")


def bench_detector(onnx_path: Path, model, meta, detector, options: BenchOptions, progress: Progress) -> BenchReport:
    """``deformrt bench`` for a whole-detector file: each backend on one random batch, timed end to
    end (wall clock around a synchronous run), and PyTorch's backbone alone for its share."""
    from exporter.evaluation.detector_backends import make_backend
    from exporter.evaluation.detector_compare import detector_inputs

    feed, _ = detector_inputs(meta, detector, (), options.batch, options.shape, options.seed)
    results = []
    for name in options.backends:
        with progress.step(f"preparing {name}"):
            backend = make_backend(name, onnx_path=onnx_path, model=model, meta=meta, weights=options.weights,
                                   device=options.device, ort_provider=options.ort_provider, engine=options.engine,
                                   plugin=options.plugin, fp16=options.fp16, static_shape=feed["images"].shape,
                                   verbose=options.verbose)
        timer = WallTimer(_cuda_sync if backend.device == "cuda" else None)
        runs = options.warmup + options.iterations
        with progress.loop(f"timing {name} ({options.warmup} warm-up + {options.iterations} timed)", runs) as tick:
            latencies = time_runs(lambda: backend.run(feed), timer, options.warmup, options.iterations, tick)
        backbone = None
        if backend.backbone is not None:
            with progress.loop(f"timing {name}'s backbone alone", runs) as tick:
                backbone = time_runs(lambda: backend.backbone(feed), timer, options.warmup, options.iterations, tick)
        profiled = None
        if backend.backbone_share is not None:
            with progress.step(f"profiling one {name} run for the backbone's share"):
                profiled = backend.backbone_share(feed)
        results.append(BenchResult(name, backend.device, backend.precision, timer.name, feed["images"].shape[0],
                                   latencies, backbone, profiled))
    return BenchReport(str(onnx_path), "images", tuple(feed["images"].shape), options.warmup, options.iterations,
                       results, DETECTOR_NOTE)


def _cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
