"""Export cost, graph size and CPU inference time of whole-detector exports at 800x1344.

For each upstream config (default: Mask R-CNN R-50-FPN with modulated DCN, Faster R-CNN R-50-FPN,
RetinaNet R-50-FPN, RPN-only R-50-FPN): the time the export spends producing the ONNX file (dynamic
axes, plugin flavour, no verification), node count and operator set, then batch-1 CPU latency
of the eager PyTorch detector and of ONNX Runtime on the file (median of ``--iterations`` after one
warm-up run), on one random image with upstream's test-time size (800x1344 padded; 800x1333
unpadded). Weights are seeded random, calibrated to detect (``calibrate_synthetic_detector``), so
the heads see a trained model's number of detections.

    .venv/bin/python scripts/bench_detector.py [--configs a.yaml b.yaml] [--shape 800x1344] [--iterations 3] [--json]

Configs are looked up in ../shared/third_party/maskrcnn-benchmark/configs when not a path.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from exporter.cli.options import add_script_shape_argument, parse_script_args, run_script
from exporter.evaluation.ort import ort_session
from exporter.onnx.detector_export import (DetectorExportOptions, build_detector_model, default_detector_output_name,
                                           export_detector_to_file)
from exporter.onnx.export import load_config
from exporter.util.progress import Progress
from exporter.util.usage import ScriptParser, first_paragraph, whole_number

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "third_party" / "maskrcnn-benchmark" / "configs"
DEFAULT_CONFIGS = ("dcn/e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml", "e2e_faster_rcnn_R_50_FPN_1x.yaml",
                   "retinanet/retinanet_R-50-FPN_1x.yaml", "rpn_R_50_FPN_1x.yaml")


def _median_seconds(run, iterations: int) -> float:
    run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def config_path(config: str) -> Path:
    """``config`` itself when it is a file, else upstream's config of that name."""
    return Path(config) if Path(config).is_file() else UPSTREAM / config


def bench_config(config: str, size: tuple[int, int], iterations: int, workdir: Path, progress: Progress) -> dict:
    path = config_path(config)
    cfg = load_config(config_file=str(path), detector=True)
    built = build_detector_model(cfg, progress=progress)
    out = workdir / default_detector_output_name(cfg, str(path), "plugin")
    start = time.perf_counter()
    result = export_detector_to_file(built, out, DetectorExportOptions(input_size=size), progress=progress)
    export_s = time.perf_counter() - start
    h, w = size
    rng = np.random.default_rng(0)
    images = (rng.uniform(0, 255, (1, 3, h, w)) - 115).astype(np.float32)
    sizes = np.array([[h, w - 11]], np.int32)
    session = ort_session(out.read_bytes(), "cpu")
    with progress.step(f"timing ONNX Runtime ({iterations} runs)"):
        ort_s = _median_seconds(lambda: session.run(None, {"images": images, "image_sizes": sizes}), iterations)
    with progress.step(f"timing PyTorch ({iterations} runs)"):
        torch_s = _median_seconds(lambda: built.model(torch.from_numpy(images), torch.from_numpy(sizes)), iterations)
    detections = int(session.run(None, {"images": images, "image_sizes": sizes})[0][0, 0])
    return {"config": config, "kind": result.detector.kind, "export_s": round(export_s, 1), "nodes": result.nodes,
            "op_types": result.op_types, "size_mb": round(result.size_bytes / 1e6, 1), "detections": detections,
            "torch_cpu_s": round(torch_s, 2), "ort_cpu_s": round(ort_s, 2), "ort_over_torch": round(ort_s / torch_s, 2),
            "input": [1, 3, h, w], "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    add_script_shape_argument(parser, "800x1344", "input height and width (default 800x1344)")
    parser.add_argument("--iterations", type=whole_number(1), default=3)
    parser.add_argument("--json", action="store_true")
    args, size = parse_script_args(parser, argv)
    for config in args.configs:  # a missing or bad config fails before minutes of exports
        load_config(config_file=str(config_path(config)), detector=True)
    progress = Progress()
    rows = []
    with tempfile.TemporaryDirectory(prefix="deformrt-bench-") as tmp:
        for config in args.configs:
            rows.append(bench_config(config, size, args.iterations, Path(tmp), progress))
            if not args.json:
                r = rows[-1]
                print(f"{r['config']}: {r['kind']}, export {r['export_s']} s, {r['nodes']} nodes, {r['size_mb']} MB; "
                      f"CPU batch 1 at {size[0]}x{size[1]}: PyTorch {r['torch_cpu_s']} s, ONNX Runtime "
                      f"{r['ort_cpu_s']} s ({r['ort_over_torch']}x); {r['detections']} detections", flush=True)
                print("  ops: " + ", ".join(f"{k} x{v}" for k, v in r["op_types"].items()), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
