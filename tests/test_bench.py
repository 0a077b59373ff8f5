"""``deformrt bench``: the timing harness with a scripted clock, the statistics against hand-computed
percentiles, the report, and a real ONNX Runtime run on a tiny model (structure and sane values;
no timing targets)."""

import json

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from exporter.evaluation.bench import (BenchOptions, BenchReport, BenchResult, CudaEventTimer, WallTimer, bench_models,
                            time_runs)
from exporter.trt.sidecar import EngineMeta, sidecar_path
from exporter.onnx.metadata import ExportMetadata
from exporter.trt.profiles import ShapeProfile
from models.errors import DeformRTError


class _Clock:
    """A clock that advances by scripted steps each time it is read."""

    def __init__(self, steps):
        self.now, self.steps, self.reads = 0.0, list(steps), 0

    def __call__(self):
        self.reads += 1
        value = self.now
        if self.steps:
            self.now += self.steps.pop(0)
        return value


def test_wall_timer_measures_between_reads_and_syncs_before_stopping():
    events = []
    clock = _Clock([0.25, 0.0])
    timer = WallTimer(sync=lambda: events.append(("sync", clock.reads)), clock=clock)
    ms = timer.measure(lambda: events.append(("run", clock.reads)))
    assert ms == pytest.approx(250.0)
    assert events == [("run", 1), ("sync", 1)]  # both between the two clock reads


def test_time_runs_warms_up_then_times_each_run():
    calls = []
    clock = _Clock([0.001 * k for k in range(1, 20)])  # each measured interval is one scripted step
    latencies = time_runs(lambda: calls.append(1), WallTimer(clock=clock), warmup=3, iterations=4)
    assert len(calls) == 7
    # Steps 1..14 ms are consumed two per measurement (start read, stop read): runs 4-7 see steps 7, 9, 11, 13.
    assert latencies == pytest.approx([7.0, 9.0, 11.0, 13.0])
    with pytest.raises(DeformRTError, match="--iterations >= 1"):
        time_runs(lambda: None, WallTimer(), warmup=0, iterations=0)
    with pytest.raises(DeformRTError, match="--warmup >= 0"):
        time_runs(lambda: None, WallTimer(), warmup=-1, iterations=1)


def test_statistics_against_hand_computed_percentiles():
    latencies = [float(v) for v in range(100, 0, -1)]
    result = BenchResult("ort", "cpu", "fp32", "wall-clock", batch=4, latencies_ms=latencies)
    s = result.stats()
    # Linear interpolation between order statistics: rank p/100 * (n - 1).
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["min"] == 1.0 and s["max"] == 100.0
    assert s["throughput"] == pytest.approx(4 * 1000 / 50.5)


def _report():
    return BenchReport("m.onnx", "images", (2, 3, 64, 64), 1, 3, [
        BenchResult("torch", "cpu", "fp32", "wall-clock", 2, [10.0, 12.0, 14.0]),
        BenchResult("ort", "cpu", "fp16", "wall-clock", 2, [4.0, 3.0, 5.0]),
    ])


def test_report_ratios_table_and_json():
    report = _report()
    assert report.ratios() == pytest.approx([1.0, 0.333333], rel=1e-5)
    table = report.table().splitlines()
    assert table[0] == "input images 2x3x64x64; 1 warm-up + 3 timed runs per backend"
    assert table[1].split() == ["backend", "device", "precision", "p50", "ms", "p90", "ms", "p99", "ms", "mean", "ms",
                                "images/s", "p50", "vs", "torch"]
    assert table[2].split() == ["torch", "cpu", "fp32", "12.000", "13.600", "13.960", "12.000", "166.7", "1.00x"]
    assert table[3].split()[-1] == "0.33x"
    d = json.loads(report.to_json())
    assert list(d) == ["onnx", "input", "warmup", "iterations", "results"]
    assert list(d["results"][0]) == ["backend", "device", "precision", "timer", "batch", "latency_ms", "throughput",
                                     "ratio_p50_vs_first"]
    assert list(d["results"][1]["latency_ms"]) == ["p50", "p90", "p99", "mean", "min", "max"]
    assert d["results"][1]["ratio_p50_vs_first"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A one-conv model carrying deformrt's metadata (enough for ONNX Runtime-only benchmarks)."""
    weights = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Relu", ["c"], ["P"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("P", TensorProto.FLOAT, ["batch", 4, "h2", "w2"])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    ExportMetadata(version="0.1.0", body="tiny", config="", weights="seed:0", weights_sha256="", output_names=("P",),
                   output_strides=(2,), output_channels=(4,), pixel_mean=(1.0, 2.0, 3.0), pixel_std=(1.0, 1.0, 1.0),
                   to_bgr255=True, color_order="BGR", size_divisibility=32, dcn_op="onnx",
                   dcn_op_version="ai.onnx.DeformConv/19",
                   dynamic_axes={"images": {"0": "batch", "2": "height", "3": "width"}},
                   export_shape=(1, 3, 64, 64)).apply(model)
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_onnxruntime_bench_on_cpu(tiny_model):
    report = bench_models(tiny_model, BenchOptions(backends=("ort",), batch=2, shape=(64, 96), warmup=2, iterations=7))
    assert report.input_shape == (2, 3, 64, 96) and report.iterations == 7
    [result] = report.results
    assert (result.backend, result.device, result.precision, result.timer) == ("ort", "cpu", "fp32", "wall-clock")
    assert len(result.latencies_ms) == 7 and all(0 < v < 10_000 for v in result.latencies_ms)
    s = result.stats()
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["throughput"] == pytest.approx(2 * 1000 / s["mean"])
    assert report.ratios() == [1.0]


def test_onnxruntime_fp16_bench_reports_fp16(tiny_model):
    report = bench_models(tiny_model, BenchOptions(backends=("ort",), fp16=True, warmup=0, iterations=2))
    assert report.results[0].precision == "fp16" and report.input_shape == (1, 3, 64, 64)


@pytest.mark.parametrize("options,match", [
    (BenchOptions(backends=("ort", "jax")), "--backends takes distinct names"),
    (BenchOptions(backends=("ort", "ort")), "--backends takes distinct names"),
    (BenchOptions(backends=("ort",), shape=(60, 64)), "multiples of the model's size divisibility 32"),
    (BenchOptions(backends=("ort",), batch=0), "--batch must be at least 1"),
])
def test_bench_errors(tiny_model, options, match):
    with pytest.raises(DeformRTError, match=match):
        bench_models(tiny_model, options)


def test_tensorrt_backend_is_checked_before_timing(tiny_model, tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"plan")
    profile = ShapeProfile("images", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    meta = EngineMeta("0.1.0", "10.3.0", "Orin", "8.7", "fp32", [profile], str(tiny_model), "0" * 64, {})
    sidecar_path(engine).write_text(meta.to_json())
    with pytest.raises(DeformRTError, match="1x3x128x64 is outside the engine's profile"):
        bench_models(tiny_model, BenchOptions(backends=("ort", "trt"), engine=engine, shape=(128, 64)))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(DeformRTError, match="TensorRT is not available here"):
            bench_models(tiny_model, BenchOptions(backends=("ort", "trt")))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_event_timer_measures_gpu_work():
    x = torch.randn(2048, 2048, device="cuda")
    timer = CudaEventTimer(torch.cuda.current_stream())
    ms = timer.measure(lambda: [x @ x for _ in range(10)])
    assert 0 < ms < 60_000
