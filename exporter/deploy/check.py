"""On the device: an engine's outputs against a deployment bundle's PyTorch references, numpy only.

A Jetson has numpy and TensorRT's Python bindings, usually no torch, onnx or onnxruntime. This
module imports numpy and :mod:`models.errors` only; running an engine itself (``--engine``) imports
tensorrt through :mod:`exporter.trt.engine` and :mod:`exporter.trt.session`, lazily.

Per output (the rule of ``deformrt compare`` and of ``deformrt-run --check``, plugins/runtime/src/
compare.cpp): ``max abs = max |output - reference|`` and ``max rel = max abs / max |reference|``
(relative to the output's scale, so elements near zero do not dominate), both over the finite
elements, in float64; an output passes when its shape is the reference's, every element is finite,
and ``max rel <= tolerance``. The tolerance is the bundle's for the engine's precision
(``deploy.conf``'s ``tolerance_fp32`` / ``tolerance_fp16``) unless one is given.

A detector bundle's outputs are detections, compared as sets per image by the rule of ``deformrt
compare`` (:mod:`exporter.evaluation.detection_sets`; ``deformrt-run --check`` for detectors mirrors
it in plugins/runtime/src/detections.cpp): engine and reference detections paired by class and IoU
>= ``match_iou``; the pairs' score and mask probability errors within ``score_tolerance`` and
``mask_tolerance`` (box errors are reported, not limited: deploy.conf has no box tolerance); a
detection left unmatched on either side is *borderline* (a near-tie at the score threshold, the top-k
cut or NMS, named in the report, not a failure) within ``borderline``; any other unmatched detection
fails. The values are deploy.conf's ``*_fp32`` / ``*_fp16`` keys for the engine's precision.

From the bundle folder on the device (``python/`` is deformrt's device-side Python)::

    # NAME.npy outputs, e.g. from deformrt-run --outputs my_outputs/
    PYTHONPATH=python python3 -m exporter.deploy.check . --outputs my_outputs/
    # run the engine with TensorRT's Python bindings
    PYTHONPATH=python python3 -m exporter.deploy.check . --engine build/plugin-fp16.plan --plugin build/plugins/libdeformrt_plugin.so

Exit status 0 when every output passes, 1 on FAIL or an error (one ``error:`` line).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from exporter.deploy import layout
from exporter.evaluation.detection_sets import Cuts, DetectionTolerance, compare_image_detections
from exporter.evaluation.detections import ImageDetections
from exporter.util.usage import ScriptParser, print_error
from models.errors import DeformRTError, require_positive


@dataclass
class OutputCheck:
    """One output against its reference (see the module docstring for the rule)."""

    name: str
    shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    finite: bool
    tolerance: float

    @property
    def same_shape(self) -> bool:
        return self.shape == self.reference_shape

    @property
    def passed(self) -> bool:
        return self.same_shape and self.finite and self.max_rel <= self.tolerance

    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        if not self.same_shape:
            return f"FAIL (reference shape {_shape(self.reference_shape)})"
        return "FAIL (NaN or Inf)" if not self.finite else "FAIL"

    def to_dict(self) -> dict:
        def number(value: float):
            return value if math.isfinite(value) else str(value)  # JSON has no inf

        return {"name": self.name, "shape": list(self.shape), "reference_shape": list(self.reference_shape),
                "max_abs": number(self.max_abs), "max_rel": number(self.max_rel), "finite": self.finite,
                "tolerance": self.tolerance, "passed": self.passed}


@dataclass
class CheckReport:
    """Every output of one run against the bundle's references."""

    precision: str
    tolerance: float
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "tolerance": self.tolerance, "passed": self.passed,
                "outputs": [o.to_dict() for o in self.outputs]}

    def table(self) -> str:
        header = ("output", "shape", "max abs", "max rel", "tolerance", "result")
        rows = [(o.name, _shape(o.shape), f"{o.max_abs:.3e}", f"{o.max_rel:.3e}", f"{o.tolerance:.0e}", o.verdict())
                for o in self.outputs]
        lines = _aligned(header, rows)
        lines.append(f"{'PASS' if self.passed else 'FAIL'} ({self.precision}; max rel = max abs / max |reference|)")
        return "\n".join(lines)


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header and rows as lines of left-aligned columns."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def compare_output(name: str, output: np.ndarray, reference: np.ndarray, tolerance: float) -> OutputCheck:
    """``output`` against ``reference`` (any float types; compared in float64)."""
    got = np.asarray(output, dtype=np.float64)
    want = np.asarray(reference, dtype=np.float64)
    if got.shape != want.shape:
        return OutputCheck(name, got.shape, want.shape, math.inf, math.inf, True, tolerance)
    finite = np.isfinite(got) & np.isfinite(want)
    all_finite = bool(finite.all())
    diff = np.abs(got - want)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(want[finite]).max()) if diff.size else 0.0
    if scale > 0:
        max_rel = max_abs / scale
    else:  # an all-zero reference: any difference is infinitely large relative to it
        max_rel = 0.0 if max_abs == 0 else math.inf
    return OutputCheck(name, got.shape, want.shape, max_abs, max_rel, all_finite, tolerance)


def parse_conf(text: str) -> dict[str, str]:
    """``deploy.conf``'s ``key=value`` lines read as build.sh reads them (``sed -n 's/^key=//p' | tail -n 1``):
    the key starts the line, the value is the rest of it, the last assignment wins; other lines are comments."""
    conf = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#") and key == key.strip():
            conf[key] = value
    return conf


def read_conf(bundle: Path) -> dict[str, str]:
    """The bundle's ``deploy.conf``; DeformRTError when it is missing, of another format, or lacks a key."""
    path = Path(bundle) / layout.CONF
    try:
        conf = parse_conf(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeformRTError(f"{path} not found: {bundle} is not a deformrt deploy bundle") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeformRTError(f"cannot read {path} ({exc})") from None
    if conf.get("format") != str(layout.CONF_FORMAT):
        raise DeformRTError(f"{path} has format {conf.get('format')!r}; this check reads format {layout.CONF_FORMAT} "
                            f"(make the bundle again with this deformrt)")
    missing = [k for k in layout.CONF_KEYS if k not in conf]
    if missing:
        raise DeformRTError(f"{path} lacks {', '.join(missing)}; make the bundle again with `deformrt deploy`")
    return conf


def read_arrays(directory: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``directory/NAME.npy`` for each name (no pickles); DeformRTError naming a missing or bad file."""
    arrays = {}
    for name in names:
        path = Path(directory) / f"{name}.npy"
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DeformRTError(f"{path} not found (one NAME.npy per tensor is expected)") from None
        except (OSError, ValueError) as exc:
            raise DeformRTError(f"{path} is not a readable .npy array ({exc})") from None
    return arrays


def reference_inputs(bundle: Path, conf: Optional[dict] = None) -> dict[str, np.ndarray]:
    conf = conf or read_conf(bundle)
    return read_arrays(Path(bundle) / layout.REFERENCE_INPUTS, conf["inputs"].split())


def reference_outputs(bundle: Path, conf: Optional[dict] = None) -> dict[str, np.ndarray]:
    conf = conf or read_conf(bundle)
    return read_arrays(Path(bundle) / layout.REFERENCE_OUTPUTS, conf["outputs"].split())


def tolerance_for(conf: dict, precision: str, override: Optional[float] = None) -> float:
    """``override``, else the bundle's ``tolerance_<precision>``; DeformRTError for neither."""
    if override is not None:
        return float(require_positive(override, "--tolerance"))
    text = conf.get(f"tolerance_{precision}")
    if text is None:
        known = sorted(k[len("tolerance_"):] for k in conf if k.startswith("tolerance_"))
        raise DeformRTError(f"the bundle has no tolerance for {precision!r}; it has {', '.join(known)}")
    try:
        return float(text)
    except ValueError:
        raise DeformRTError(f"{layout.CONF}: tolerance_{precision}={text!r} is not a number") from None


def _references_for(outputs: Mapping[str, np.ndarray], bundle: Path, conf: dict) -> dict[str, np.ndarray]:
    """The bundle's reference outputs, in deploy.conf's order; a DeformRTError naming the outputs the
    run did not produce (extra ones are ignored)."""
    names = conf["outputs"].split()
    missing = [n for n in names if n not in outputs]
    if missing:
        raise DeformRTError(f"the run produced no output named {', '.join(missing)} "
                            f"(the bundle's outputs are {', '.join(names)})")
    return reference_outputs(bundle, conf)


def check_outputs(outputs: Mapping[str, np.ndarray], bundle: Path, precision: str,
                  tolerance: Optional[float] = None) -> CheckReport:
    """Every reference output of ``bundle`` against ``outputs`` (by name); an output the run did not
    produce is a DeformRTError, extra outputs are ignored."""
    conf = read_conf(bundle)
    tol = tolerance_for(conf, precision, tolerance)
    references = _references_for(outputs, bundle, conf)
    names = list(references)
    return CheckReport(precision, tol, [compare_output(n, outputs[n], references[n], tol) for n in names])


@dataclass
class DetectionSetCheck:
    """One image's engine detections against its reference detections (module docstring)."""

    image: int
    reference: int
    engine: int
    matched: int
    borderline: int
    unmatched: int
    max_box_err: float
    max_score_err: float
    max_mask_err: Optional[float]
    finite: bool
    passed: bool

    def verdict(self) -> str:
        if self.passed:
            return "PASS (borderline: near-ties at a score or NMS cut)" if self.borderline else "PASS"
        if not self.finite:
            return "FAIL (NaN or Inf)"
        return "FAIL (unmatched detections)" if self.unmatched else "FAIL (errors above tolerance)"


@dataclass
class DetectionReport:
    """Every image of a detector run against the bundle's reference detections."""

    precision: str
    tolerances: dict
    images: list[DetectionSetCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.images) and all(i.passed for i in self.images)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "tolerances": self.tolerances, "passed": self.passed,
                "images": [{**i.__dict__, "verdict": i.verdict()} for i in self.images]}

    def table(self) -> str:
        header = ("image", "reference", "engine", "matched", "borderline", "unmatched", "box err px", "score err",
                  "mask err", "result")
        rows = [(str(i.image), str(i.reference), str(i.engine), str(i.matched), str(i.borderline), str(i.unmatched),
                 f"{i.max_box_err:.3e}", f"{i.max_score_err:.3e}",
                 "-" if i.max_mask_err is None else f"{i.max_mask_err:.3e}", i.verdict()) for i in self.images]
        lines = _aligned(header, rows)
        t = self.tolerances
        lines.append(f"{'PASS' if self.passed else 'FAIL'} ({self.precision}; detections as sets: same class and IoU >= "
                     f"{t['match_iou']}, score {t['score_tolerance']}, mask {t['mask_tolerance']}, borderline "
                     f"{t['borderline']} around the score threshold {t['score_threshold']}, a full side's lowest "
                     f"score or the NMS threshold {t['nms_threshold']})")
        return "\n".join(lines)


def detection_tolerances(conf: dict, precision: str) -> dict:
    """deploy.conf's set-matching tolerances for ``precision`` (the keys of
    :data:`exporter.deploy.layout.DETECTION_TOLERANCES`) and the score threshold."""
    if precision not in layout.DETECTION_TOLERANCES:
        precision = "fp16"  # tf32 outputs: fp16's looser rule
    try:
        values = {key: float(conf[f"{key}_{precision}"]) for key in layout.DETECTION_TOLERANCES[precision]}
        values["score_threshold"] = float(conf["score_threshold"])
        values["nms_threshold"] = float(conf["nms_threshold"] or 0.0)
    except (KeyError, ValueError) as exc:
        raise DeformRTError(f"{layout.CONF}: the detector tolerances for {precision} are missing or malformed ({exc}); "
                            f"make the bundle again with deformrt deploy") from None
    return values


def check_detection_sets(image: int, reference: ImageDetections, other: ImageDetections, tolerances: dict,
                         capacity: int) -> DetectionSetCheck:
    """One image's detections against the reference's as sets; ``tolerances`` as
    :func:`detection_tolerances` returns them, ``capacity`` is D (module docstring)."""
    tolerance = DetectionTolerance(tolerances["match_iou"], math.inf, tolerances["score_tolerance"],
                                   tolerances["mask_tolerance"], tolerances["borderline"])
    cuts = Cuts(tolerances["score_threshold"], tolerances.get("nms_threshold", 0.0), capacity)
    found = compare_image_detections(reference, other, tolerance, cuts)
    return DetectionSetCheck(image, found.reference_count, found.other_count, found.matched, found.borderline,
                             found.unexplained, found.max_box_err, found.max_score_err, found.max_mask_err,
                             found.finite, found.passed(tolerance))


def check_detections(outputs: Mapping[str, np.ndarray], bundle: Path, precision: str) -> DetectionReport:
    """A detector bundle's reference detections against ``outputs`` (by name), image by image."""
    conf = read_conf(bundle)
    tolerances = detection_tolerances(conf, precision)
    references = _references_for(outputs, bundle, conf)
    count = np.asarray(references["num_detections"]).shape[0]
    if np.asarray(outputs["num_detections"]).shape[0] != count:
        raise DeformRTError(f"the run has {np.asarray(outputs['num_detections']).shape[0]} images, the reference {count}")
    capacity = int(np.asarray(references["detection_scores"]).shape[1])
    counts = np.asarray(outputs["num_detections"]).reshape(count, -1)[:, 0]
    if np.any(counts < 0) or np.any(counts > np.asarray(outputs["detection_scores"]).shape[1]):
        raise DeformRTError(f"num_detections {counts.tolist()} lies outside 0..D (D = the outputs' rows)")
    report = DetectionReport(precision, tolerances)
    for image in range(count):
        want = ImageDetections.from_outputs(references, image)
        got = ImageDetections.from_outputs(outputs, image)
        report.images.append(check_detection_sets(image, want, got, tolerances, capacity))
    return report


def run_engine(bundle: Path, engine: Path, plugin: Optional[Path] = None) -> tuple[dict[str, np.ndarray], str]:
    """Run ``engine`` (with its sidecar check) on the bundle's reference inputs with TensorRT's Python
    bindings; returns the outputs and the engine's precision from its sidecar."""
    from exporter.trt.engine import load_engine
    from exporter.trt.session import TrtSession

    loaded = load_engine(Path(engine), Path(plugin) if plugin else None)
    session = TrtSession(loaded)
    return session.run(reference_inputs(bundle)), loaded.meta.precision


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ScriptParser(
        prog="python3 -m exporter.deploy.check",
        description="Check an engine's outputs against a deformrt deploy bundle's PyTorch references.")
    parser.add_argument("bundle", type=Path, help="the bundle folder (with deploy.conf)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--outputs", type=Path, help="folder of NAME.npy outputs (e.g. deformrt-run --outputs)")
    source.add_argument("--engine", type=Path, help="run this engine on the reference inputs (needs tensorrt)")
    parser.add_argument("--plugin", type=Path, help="libdeformrt_plugin.so for --engine")
    parser.add_argument("--precision", help="precision the outputs were computed in, fp32, tf32 or fp16 "
                                            "(default: the engine's, else the bundle's build precision)")
    parser.add_argument("--tolerance", type=float, help="pass when max rel <= this (default: the bundle's)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        conf = read_conf(args.bundle)
        if args.engine is not None:
            outputs, engine_precision = run_engine(args.bundle, args.engine, args.plugin)
            precision = args.precision or engine_precision
        else:
            outputs = read_arrays(args.outputs, conf["outputs"].split())
            precision = args.precision or conf["precision"]
        if conf["model"] == "detector":
            report = check_detections(outputs, args.bundle, precision)
        else:
            report = check_outputs(outputs, args.bundle, precision, args.tolerance)
    except DeformRTError as exc:
        print_error(exc)
        return 1
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True) if args.json else report.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
