"""Export cost and CPU inference speed of exported backbones.

For each body (default R-50-FPN and R-101-FPN, modulated DCN in c3-c5 as upstream's DCN configs):
the time ``deformrt export`` spends producing the ONNX graph (dynamic axes, plugin flavour, no
verification), the file size next to the parameter bytes, and ONNX Runtime CPU latency next to
PyTorch CPU latency at one input shape (default 800x1344, batch 1), with their ratio. Latency
comes from ``exporter.evaluation.bench.bench_models`` (warm-up runs, then timed runs; p50 reported).

    .venv/bin/python scripts/bench_export.py [--bodies R-50-FPN R-101-FPN] [--shape 800x1344] [--json]

Target: exporting R-101-FPN with DCN takes under 60 s on the 2-core development machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from exporter.cli.options import add_script_shape_argument, parse_script_args, run_script
from exporter.onnx import export as oe
from exporter.evaluation.bench import BenchOptions, bench_models
from exporter.util.fsutil import atomic_write_bytes
from exporter.util.progress import Progress
from exporter.util.usage import ScriptParser, first_paragraph, whole_number
from models.layers import DFConv2d

DCN_C3_C5 = ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)", "MODEL.RESNETS.WITH_MODULATED_DCN", "True"]
EXPORT_TARGET_S = 60.0


def bench_body(body: str, size: tuple[int, int], warmup: int, iterations: int, workdir: Path,
               progress: Progress) -> dict:
    """Export ``body`` with DCN c3-c5 into ``workdir`` and time PyTorch and ONNX Runtime on it."""
    cfg = oe.load_config(body, None, DCN_C3_C5)
    built = oe.build_model(cfg, progress=progress)
    options = oe.ExportOptions(input_size=size)
    start = time.perf_counter()
    proto = oe.export_model(built, options, progress)
    data = proto.SerializeToString()
    export_s = time.perf_counter() - start
    path = atomic_write_bytes(workdir / oe.default_output_name(cfg, options.dcn_op), data)
    del proto, data
    report = bench_models(path, BenchOptions(backends=("torch", "ort"), shape=size, warmup=warmup,
                                             iterations=iterations), progress=progress)
    torch_ms, ort_ms = (r.stats()["p50"] for r in report.results)
    return {
        "body": body,
        "dcn_layers": sum(isinstance(m, DFConv2d) for m in built.model.modules()),
        "export_s": round(export_s, 2),
        "file_bytes": path.stat().st_size,
        "parameter_bytes": sum(p.numel() * p.element_size() for p in built.model.parameters()),
        "input_shape": list(report.input_shape),
        "torch_cpu_p50_ms": round(torch_ms, 1),
        "ort_cpu_p50_ms": round(ort_ms, 1),
        "ort_vs_torch": round(ort_ms / torch_ms, 3),
    }


def format_table(rows: list[dict]) -> str:
    head = ("body", "DCN", "export s", "file MB", "params MB", "file/params", "input", "torch p50 ms",
            "ORT p50 ms", "ORT/torch")
    cells = [(r["body"], str(r["dcn_layers"]), f"{r['export_s']:.1f}", f"{r['file_bytes'] / 1e6:.1f}",
              f"{r['parameter_bytes'] / 1e6:.1f}", f"{r['file_bytes'] / r['parameter_bytes']:.3f}",
              "x".join(map(str, r["input_shape"])), f"{r['torch_cpu_p50_ms']:.1f}", f"{r['ort_cpu_p50_ms']:.1f}",
              f"{r['ort_vs_torch']:.2f}x") for r in rows]
    widths = [max(len(c[i]) for c in (head, *cells)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *cells))


def main(argv: list[str] | None = None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--bodies", nargs="+", default=["R-50-FPN", "R-101-FPN"])
    add_script_shape_argument(parser, "800x1344", "input height and width (default 800x1344)")
    parser.add_argument("--warmup", type=whole_number(0), default=1)
    parser.add_argument("--iterations", type=whole_number(1), default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, size = parse_script_args(parser, argv)
    for body in args.bodies:
        oe.load_config(body, None, DCN_C3_C5)  # an unknown name fails before minutes of timing
    progress = Progress()
    with tempfile.TemporaryDirectory(prefix="deformrt-bench-") as tmp:
        rows = [bench_body(b, size, args.warmup, args.iterations, Path(tmp), progress)
                for b in args.bodies]
    r101 = next((r for r in rows if r["body"] == "R-101-FPN"), None)
    target = {"export_R-101-FPN_dcn_s": r101["export_s"] if r101 else None, "target_s": EXPORT_TARGET_S,
              "met": (r101["export_s"] < EXPORT_TARGET_S) if r101 else None}
    if args.json:
        print(json.dumps({"rows": rows, "target": target}, indent=2, sort_keys=True))
    else:
        print(format_table(rows))
        if r101:
            print(f"target: export R-101-FPN with DCN in {r101['export_s']:.1f} s "
                  f"(< {EXPORT_TARGET_S:.0f} s: {'met' if target['met'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
