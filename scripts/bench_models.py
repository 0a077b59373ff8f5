"""CPU forward time of every backbone body, and the DCN overhead of the FPN bodies side by side.

    python scripts/bench_models.py [--bodies R-50-FPN ...] [--shape 800x1344] [--repeat 3]
                                   [--dcn-bodies R-50-FPN R-101-FPN] [--json]

Each body is built with seeded random weights and run on one random image under
``torch.inference_mode``: one warm-up pass, then ``--repeat`` timed passes; the median is reported.
The DCN overhead ratio is (same body with modulated DCN in res3-res5) / (plain body), both timed
in alternation; the target on a 2-core CPU is <= 2.0. Progress goes to stderr; ``--json`` prints
one JSON object on stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

from exporter.cli.options import add_script_shape_argument, script_shape
from exporter.util.usage import ScriptParser, first_paragraph, print_error, whole_number
from exporter.util.progress import Progress
from models.backbone import build_backbone, list_bodies
from models.config import get_cfg
from models.errors import DeformRTError

DCN_OPTS = ("MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)", "MODEL.RESNETS.WITH_MODULATED_DCN", "True")
DCN_RATIO_TARGET = 2.0


def _model_and_input(body: str, size: tuple[int, int], opts: Sequence[str] = (), seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone(get_cfg(body, opts=opts)).eval(), torch.randn(1, 3, *size)


def time_models(models: Sequence[tuple[torch.nn.Module, torch.Tensor]], repeat: int) -> list[list[float]]:
    """Milliseconds of ``repeat`` forward passes of each (model, input), after one warm-up pass each.

    The models take turns pass by pass, so a busy machine slows all of them alike and their ratio
    stays meaningful.
    """
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model, x in models:
            model(x)
        for _ in range(repeat):
            for (model, x), out in zip(models, times):
                start = time.perf_counter()
                model(x)
                out.append((time.perf_counter() - start) * 1e3)
    return times


def run(bodies: Sequence[str], dcn_bodies: Sequence[str], size: tuple[int, int], repeat: int,
        progress: Progress) -> dict:
    """Measure; returns the JSON-ready result (stable keys)."""
    plain: dict[str, list[float]] = {}
    for body in bodies:
        with progress.step(f"{body} at {size[0]}x{size[1]}"):
            plain[body] = time_models([_model_and_input(body, size)], repeat)[0]
    dcn = {}
    for body in dcn_bodies:
        with progress.step(f"{body} without and with modulated DCN in res3-res5, alternating"):
            without, with_dcn = time_models([_model_and_input(body, size), _model_and_input(body, size, DCN_OPTS)],
                                            repeat)
        plain_ms, dcn_ms = statistics.median(without), statistics.median(with_dcn)
        ratio = dcn_ms / plain_ms
        dcn[body] = {"plain_ms": round(plain_ms, 1), "dcn_ms": round(dcn_ms, 1), "plain_times_ms": _rounded(without),
                     "dcn_times_ms": _rounded(with_dcn), "ratio": round(ratio, 3), "target": DCN_RATIO_TARGET,
                     "meets_target": ratio <= DCN_RATIO_TARGET}
    return {
        "size": list(size),
        "repeat": repeat,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bodies": {b: {"median_ms": round(statistics.median(t), 1), "times_ms": _rounded(t)} for b, t in plain.items()},
        "dcn": dcn,
    }


def _rounded(times: Sequence[float]) -> list[float]:
    return [round(t, 1) for t in times]


def format_tables(result: dict) -> str:
    h, w = result["size"]
    lines = [f"CPU forward, batch 1, {h}x{w}, {result['threads']} threads, median of {result['repeat']} "
             f"(torch {result['torch']})", ""]
    if result["bodies"]:
        lines.append(f"{'body':<22}{'median ms':>12}")
        lines += [f"{b:<22}{r['median_ms']:>12.1f}" for b, r in result["bodies"].items()]
        lines.append("")
    if result["dcn"]:
        lines.append(f"{'DCN overhead (mdcn c3-c5)':<28}{'plain ms':>10}{'DCN ms':>10}{'ratio':>8}{'target':>9}")
        for b, r in result["dcn"].items():
            verdict = "ok" if r["meets_target"] else "MISS"
            lines.append(f"{b:<28}{r['plain_ms']:>10.1f}{r['dcn_ms']:>10.1f}{r['ratio']:>8.2f}"
                         f"{'<= ' + str(r['target']):>9}  {verdict}")
    return "\n".join(lines).rstrip()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--bodies", nargs="*", default=None, metavar="BODY",
                        help="bodies to time (default: all registered)")
    add_script_shape_argument(parser, "800x1344", "input height and width (multiples of 32 for FPN bodies; "
                                                  "default 800x1344)")
    parser.add_argument("--repeat", type=whole_number(1), default=3, help="timed passes per body (default 3)")
    parser.add_argument("--dcn-bodies", nargs="*", default=["R-50-FPN", "R-101-FPN"], metavar="BODY",
                        help="bodies whose DCN overhead ratio is measured (default R-50-FPN R-101-FPN)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    bodies = list_bodies() if args.bodies is None else args.bodies
    try:
        size = script_shape(args)
        for body in [*bodies, *args.dcn_bodies]:
            get_cfg(body)  # unknown names fail before any timing
        result = run(bodies, args.dcn_bodies, size, args.repeat, Progress())
    except DeformRTError as exc:
        print_error(exc)
        return 1
    print(json.dumps(result, indent=2) if args.json else format_tables(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
