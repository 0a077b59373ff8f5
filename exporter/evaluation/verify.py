"""Check an exported model: ONNX Runtime (CPU) against the PyTorch model on fresh random input.

The plugin flavour cannot run in ONNX Runtime as is; it is rewritten in memory to standard
``DeformConv`` (:func:`exporter.onnx.passes.to_onnx_op`) first, which changes only the DCN nodes.

Inputs are random images drawn like real ones: pixels uniform in [0, 255], normalised with the
model's ``pixel_mean`` / ``pixel_std`` from the metadata, from a fresh seed reported with the
result. Two input shapes are checked: the export shape, and for a dynamic model one 32/64 pixels
larger (rounded up to the size divisibility) with batch 2; a static model is checked twice at its
shape with different images.

Error measure, per output: ``max_abs = max |ort - torch|`` and ``max_rel = max_abs / max |torch|``
(relative to the output's scale, which is well defined when single elements are near zero).

Tolerance: ``max_rel <= 1e-4`` in fp32. Both sides compute in fp32 with different summation orders
and different bilinear-sampling code; on a well-conditioned backbone (trained weights; offsets of
a few pixels) they differ by about 1e-6 of the output scale, so 1e-4 leaves a wide margin while a
semantic mistake (offset order, pads, groups, mask) shows up as an error of order 1e-2 to 1.

Ill-conditioned models (random weights with DCN) are judged as :mod:`exporter.evaluation.conditioning`
explains, by the same rule and with the same note as ``deformrt compare``: when the strict check
fails and the PyTorch model is at hand, PyTorch runs in float64; where its own fp32 error against
float64 (the floor) exceeds the tolerance, an output passes within FLOOR_FACTOR x floor of float64.
The table then shows the floor and the error against float64 for every output, "yes (fp64)" for
outputs that pass only that way, and the note says why.

Progress: each PyTorch and ONNX Runtime run is a step of a :meth:`Progress.plan` weighted by its
pixels, so after the first run every step says how long it will take and how long is left.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

import numpy as np
import onnx
import torch
from torch import nn

from exporter.evaluation import ort
from exporter.evaluation.conditioning import (FLOAT64_COST, FLOOR_FACTOR, ORT_COST, Story, note, passes,
                                               relative_error, run_torch)
from exporter.evaluation.inputs import preprocess
from exporter.evaluation.inputs import random_images as random_pixels
from exporter.onnx.metadata import ExportMetadata
from exporter.util.progress import Progress

DEFAULT_TOLERANCE = 1e-4
PROVIDER = ort.ORT_PROVIDERS["cpu"][0]


@dataclass(frozen=True)
class OutputCheck:
    """One output at one input shape. ``floor`` / ``max_rel_float64`` are set when the float64
    reference was needed: PyTorch fp32's and ONNX Runtime's relative errors against it."""

    input_shape: tuple[int, ...]
    output: str
    output_shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    passed: bool
    floor: Optional[float] = None
    max_rel_float64: Optional[float] = None
    tolerance_used: float = DEFAULT_TOLERANCE

    @property
    def verdict(self) -> str:
        """``yes``, ``yes (fp64)`` (passes only against float64, see the note) or ``NO``."""
        if not self.passed:
            return "NO"
        return "yes" if self.max_rel <= self.tolerance_used else "yes (fp64)"


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3e}"


@dataclass
class VerifyReport:
    """Every output at every input shape, with the tolerance and seed used."""

    tolerance: float
    seed: int
    checks: list[OutputCheck] = field(default_factory=list)
    provider: str = PROVIDER
    offsets_px: Optional[float] = None  # mean DCN offset in the float64 run
    weights_seed: Optional[int] = None  # random weights' seed (None: a checkpoint)
    body: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def used_float64(self) -> bool:
        return any(c.floor is not None for c in self.checks)

    def story(self) -> Optional[Story]:
        """What the float64 run showed (None when it was not needed)."""
        if not self.used_float64:
            return None
        return Story(self.tolerance, max(c.floor for c in self.checks if c.floor is not None), self.offsets_px,
                     self.weights_seed, self.body, self.passed)

    def worst(self) -> OutputCheck:
        """The failing check with the largest error (or the largest error overall)."""
        failing = [c for c in self.checks if not c.passed] or self.checks
        return max(failing, key=lambda c: c.max_rel)

    def worst_line(self) -> str:
        w = self.worst()
        where = f"output {w.output} at input {'x'.join(map(str, w.input_shape))}"
        if w.floor is None:
            return (f"{where}: max rel error {w.max_rel:.2e} > {self.tolerance:.0e} "
                    f"(max abs {w.max_abs:.3e}, seed {self.seed})")
        return (f"{where}: max rel error against float64 PyTorch {w.max_rel_float64:.2e} > "
                f"max({self.tolerance:.0e}, {FLOOR_FACTOR:g} x PyTorch fp32's own {w.floor:.2e}) (seed {self.seed})")

    def table(self) -> str:
        """A fixed-width table, one row per output and input shape."""
        head = ["input", "output", "shape", "max abs err", "max rel err"]
        if self.used_float64:
            head += ["torch fp32 vs fp64", "ORT vs fp64"]
        head.append("ok")
        rows = []
        for c in self.checks:
            row = ["x".join(map(str, c.input_shape)), c.output, "x".join(map(str, c.output_shape)),
                   f"{c.max_abs:.3e}", f"{c.max_rel:.3e}"]
            if self.used_float64:
                row += [_fmt(c.floor), _fmt(c.max_rel_float64)]
            rows.append(row + [c.verdict])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [f"ONNX Runtime ({self.provider}) vs PyTorch, seed {self.seed}, "
                 f"tolerance: max rel err (max|err| / max|torch|) <= {self.tolerance:.0e}"]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        story = self.story()
        if story is not None:
            lines += note(story)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        story = self.story()
        return {"passed": self.passed, "tolerance": self.tolerance, "floor_factor": FLOOR_FACTOR, "seed": self.seed,
                "provider": self.provider, "ill_conditioned": bool(story and story.ill_conditioned),
                "offsets_px": self.offsets_px, "note": " ".join(" ".join(note(story)).split()) if story else None,
                "checks": [{**{k: v for k, v in asdict(c).items() if k != "tolerance_used"},
                            "input_shape": list(c.input_shape), "output_shape": list(c.output_shape),
                            "verdict": c.verdict} for c in self.checks]}


def verification_shapes(meta: ExportMetadata) -> list[tuple[int, int, int, int]]:
    """The export shape, then (dynamic) a larger shape with batch 2, or (static) the same again."""
    n, c, h, w = meta.export_shape
    if not meta.dynamic:
        return [(n, c, h, w), (n, c, h, w)]
    d = max(1, meta.size_divisibility)
    up = lambda size, extra: -(-(size + extra) // d) * d  # noqa: E731
    return [(n, c, h, w), (2, c, up(h, 32), up(w, 64))]


def random_images(shape, meta: ExportMetadata, rng: np.random.Generator) -> np.ndarray:
    """A batch of ``shape`` (N, 3, H, W): uniform random pixels preprocessed as the model expects
    (:func:`exporter.evaluation.inputs.preprocess`: colour order, 0..255 or 0..1 scale, mean and std)."""
    n, _, h, w = shape
    return preprocess(random_pixels(n, h, w, seed=int(rng.integers(2**63))), meta)


def ort_session(model: Union[onnx.ModelProto, bytes]):
    """An ONNX Runtime CPU session for verification (either DCN flavour); a model ONNX Runtime
    refuses (e.g. an opset newer than it supports) is a DeformRTError saying how to go on."""
    return ort.ort_session(model, "cpu", hint="try a lower --opset, or --no-verify")


@dataclass
class References:
    """PyTorch's outputs on the verification images, reusable across ONNX files of one model;
    ``outputs64`` (float64 PyTorch) is filled in only when a strict check fails."""

    seed: int
    images: tuple[np.ndarray, ...]
    outputs: tuple[tuple[np.ndarray, ...], ...]
    outputs64: Optional[tuple[tuple[np.ndarray, ...], ...]] = None
    offsets_px: Optional[float] = None  # mean DCN offset of the float64 run


def torch_references(torch_model: nn.Module, meta: ExportMetadata, seed: Optional[int] = None,
                     progress: Optional[Progress] = None, plan=None) -> References:
    """Random images at :func:`verification_shapes` (``seed`` defaults to a fresh random one)
    and ``torch_model``'s outputs on them, in eval mode."""
    seed = secrets.randbits(32) if seed is None else seed
    rng = np.random.default_rng(seed)
    images = tuple(random_images(shape, meta, rng) for shape in verification_shapes(meta))
    if plan is None:
        plan = (progress or Progress.quiet()).plan(sum(i.size for i in images))
    outputs, _ = run_torch(torch_model, images, torch.float32, plan)
    return References(seed, images, tuple(outputs))


def verify(model: Union[onnx.ModelProto, bytes], torch_model: Optional[nn.Module], meta: ExportMetadata, *,
           tolerance: float = DEFAULT_TOLERANCE, seed: Optional[int] = None,
           references: Optional[References] = None, progress: Optional[Progress] = None) -> VerifyReport:
    """Run ``model`` in ONNX Runtime on the images of ``references`` (default: computed now by
    :func:`torch_references` from ``torch_model`` and ``seed``) and compare with PyTorch's
    outputs; ``report.passed`` says whether every output is within ``tolerance``. When the strict
    check fails and ``torch_model`` is given, ill-conditioned outputs are judged against float64
    PyTorch as the module docstring explains."""
    progress = progress or Progress.quiet()
    pixels = sum(i.size for i in references.images) if references is not None else \
        sum(int(np.prod(s)) for s in verification_shapes(meta))
    plan = progress.plan(pixels * ((references is None) + ORT_COST))
    if references is None:
        references = torch_references(torch_model, meta, seed, plan=plan)
    with progress.step("loading the model into ONNX Runtime"):
        session = ort_session(model)
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    results = []
    for images, expected in zip(references.images, references.outputs):
        with plan.step(f"running ONNX Runtime at {'x'.join(map(str, images.shape))}", images.size * ORT_COST):
            got = session.run(None, {input_name: images})
        if len(expected) != len(names):
            raise ValueError(f"ONNX model has {len(names)} outputs, the PyTorch model {len(expected)}")
        results.append(got)
    checks = [_check(images.shape, name, e, g, tolerance)
              for images, expected, got in zip(references.images, references.outputs, results)
              for name, e, g in zip(names, expected, got)]
    if not all(c.passed for c in checks) and torch_model is not None:
        if references.outputs64 is None:
            progress.info("the strict check failed: running PyTorch in float64 to tell an ill-conditioned model from "
                          "a real difference")
            plan.add(pixels * FLOAT64_COST)
            outputs64, references.offsets_px = run_torch(torch_model, references.images, torch.float64, plan)
            references.outputs64 = tuple(outputs64)
        checks = [_check(images.shape, name, e, g, tolerance, e64)
                  for images, expected, got, exp64 in zip(references.images, references.outputs, results,
                                                          references.outputs64)
                  for name, e, g, e64 in zip(names, expected, got, exp64)]
    return VerifyReport(tolerance=tolerance, seed=references.seed, checks=checks, offsets_px=references.offsets_px,
                        weights_seed=meta.seed, body=meta.body)


def _check(input_shape, name: str, expected: np.ndarray, got: np.ndarray, tolerance: float,
           expected64: Optional[np.ndarray] = None) -> OutputCheck:
    max_abs, max_rel = relative_error(expected, got)
    shape_ok = expected.shape == got.shape
    if expected64 is None:
        return OutputCheck(tuple(input_shape), name, tuple(got.shape), max_abs, max_rel,
                           shape_ok and passes(max_rel, tolerance), tolerance_used=tolerance)
    floor = relative_error(expected64, expected)[1]
    rel64 = relative_error(expected64, got)[1]
    return OutputCheck(tuple(input_shape), name, tuple(got.shape), max_abs, max_rel,
                       shape_ok and passes(max_rel, tolerance, floor, rel64), floor, rel64, tolerance_used=tolerance)
