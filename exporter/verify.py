"""Check an exported model: ONNX Runtime (CPU) against the PyTorch model on fresh random input.

The plugin flavour cannot run in ONNX Runtime as is; it is rewritten in memory to standard
``DeformConv`` (:func:`exporter.graph_passes.to_onnx_op`) first, which changes only the DCN nodes.

Inputs are random images drawn like real ones: pixels uniform in [0, 255], normalised with the
model's ``pixel_mean`` / ``pixel_std`` from the metadata, from a fresh seed reported with the
result. Two input shapes are checked: the export shape, and for a dynamic model one 32/64 pixels
larger (rounded up to the size divisibility) with batch 2; a static model is checked twice at its
shape with different images.

Error measure, per output: ``max_abs = max |ort - torch|`` and ``max_rel = max_abs / max |torch|``
(relative to the output's scale, which is well defined when single elements are near zero).
Tolerance: ``max_rel <= 1e-4`` in fp32. Both sides compute in fp32 with different summation orders
and different bilinear-sampling code; over a 100-layer backbone that differs by about 1e-6 of
the output scale, so 1e-4 leaves a wide margin while any semantic mistake (offset order, pads,
groups, mask) shows up as an error of order 1e-2 to 1.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

import numpy as np
import onnx
import torch
from torch import nn

from exporter import graph_passes as gp
from exporter.metadata import ExportMetadata
from exporter.progress import Progress

DEFAULT_TOLERANCE = 1e-4
PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class OutputCheck:
    """One output at one input shape."""

    input_shape: tuple[int, ...]
    output: str
    output_shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class VerifyReport:
    """Every output at every input shape, with the tolerance and seed used."""

    tolerance: float
    seed: int
    checks: list[OutputCheck] = field(default_factory=list)
    provider: str = PROVIDER

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def worst(self) -> OutputCheck:
        return max(self.checks, key=lambda c: c.max_rel)

    def worst_line(self) -> str:
        w = self.worst()
        return (f"output {w.output} at input {'x'.join(map(str, w.input_shape))}: max rel error "
                f"{w.max_rel:.2e} > {self.tolerance:.0e} (max abs {w.max_abs:.3e}, seed {self.seed})")

    def table(self) -> str:
        """A fixed-width table: input shape, output, output shape, max abs, max rel, ok."""
        head = ("input", "output", "shape", "max abs err", "max rel err", "ok")
        rows = [("x".join(map(str, c.input_shape)), c.output, "x".join(map(str, c.output_shape)),
                 f"{c.max_abs:.3e}", f"{c.max_rel:.3e}", "yes" if c.passed else "NO") for c in self.checks]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [f"ONNX Runtime ({self.provider}) vs PyTorch, seed {self.seed}, "
                 f"tolerance: max rel err (max|err| / max|torch|) <= {self.tolerance:.0e}"]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "tolerance": self.tolerance, "seed": self.seed, "provider": self.provider,
                "checks": [{**asdict(c), "input_shape": list(c.input_shape), "output_shape": list(c.output_shape)}
                           for c in self.checks]}


def verification_shapes(meta: ExportMetadata) -> list[tuple[int, int, int, int]]:
    """The export shape, then (dynamic) a larger shape with batch 2, or (static) the same again."""
    n, c, h, w = meta.export_shape
    if not meta.dynamic:
        return [(n, c, h, w), (n, c, h, w)]
    d = max(1, meta.size_divisibility)
    up = lambda size, extra: -(-(size + extra) // d) * d  # noqa: E731
    return [(n, c, h, w), (2, c, up(h, 32), up(w, 64))]


def random_images(shape, meta: ExportMetadata, rng: np.random.Generator) -> np.ndarray:
    """Normalised random images: uniform pixels in [0, 255], minus mean, over std (per channel)."""
    pixels = rng.uniform(0.0, 255.0, size=shape).astype(np.float32)
    mean = np.asarray(meta.pixel_mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta.pixel_std, np.float32).reshape(1, -1, 1, 1)
    return (pixels - mean) / std


def ort_session(model: Union[onnx.ModelProto, bytes]):
    """An ONNX Runtime CPU session; a plugin-flavour model is rewritten to standard DeformConv first."""
    import onnxruntime as ort

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    if any(gp.is_plugin_deform_conv(n) for n in proto.graph.node):
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        gp.to_onnx_op(copy)
        proto = copy
    elif not isinstance(model, onnx.ModelProto):
        return ort.InferenceSession(model, providers=[PROVIDER])
    return ort.InferenceSession(proto.SerializeToString(), providers=[PROVIDER])


def compare(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |expected|) in float64."""
    e, g = expected.astype(np.float64), got.astype(np.float64)
    if e.shape != g.shape:
        return float("inf"), float("inf")
    max_abs = float(np.max(np.abs(e - g))) if e.size else 0.0
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


@dataclass(frozen=True)
class References:
    """PyTorch's outputs on the verification images, reusable across ONNX files of one model."""

    seed: int
    images: tuple[np.ndarray, ...]
    outputs: tuple[tuple[np.ndarray, ...], ...]


def torch_references(torch_model: nn.Module, meta: ExportMetadata, seed: Optional[int] = None,
                     progress: Optional[Progress] = None) -> References:
    """Random images at :func:`verification_shapes` (``seed`` defaults to a fresh random one)
    and ``torch_model``'s outputs on them, in eval mode."""
    progress = progress or Progress.quiet()
    seed = secrets.randbits(32) if seed is None else seed
    rng = np.random.default_rng(seed)
    images, outputs = [], []
    torch_model.eval()
    for shape in verification_shapes(meta):
        batch = random_images(shape, meta, rng)
        with progress.step(f"running PyTorch at {'x'.join(map(str, shape))}"), torch.no_grad():
            outputs.append(tuple(t.numpy() for t in torch_model(torch.from_numpy(batch))))
        images.append(batch)
    return References(seed, tuple(images), tuple(outputs))


def verify(model: Union[onnx.ModelProto, bytes], torch_model: Optional[nn.Module], meta: ExportMetadata, *,
           tolerance: float = DEFAULT_TOLERANCE, seed: Optional[int] = None,
           references: Optional[References] = None, progress: Optional[Progress] = None) -> VerifyReport:
    """Run ``model`` in ONNX Runtime on the images of ``references`` (default: computed now by
    :func:`torch_references` from ``torch_model`` and ``seed``) and compare with PyTorch's
    outputs; ``report.passed`` says whether every output is within ``tolerance``."""
    progress = progress or Progress.quiet()
    if references is None:
        references = torch_references(torch_model, meta, seed, progress)
    report = VerifyReport(tolerance=tolerance, seed=references.seed)
    with progress.step("loading the model into ONNX Runtime"):
        session = ort_session(model)
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    for images, expected in zip(references.images, references.outputs):
        with progress.step(f"running ONNX Runtime at {'x'.join(map(str, images.shape))}"):
            got = session.run(None, {input_name: images})
        if len(expected) != len(names):
            raise ValueError(f"ONNX model has {len(names)} outputs, the PyTorch model {len(expected)}")
        for name, e, g in zip(names, expected, got):
            max_abs, max_rel = compare(e, g)
            report.checks.append(OutputCheck(tuple(images.shape), name, tuple(g.shape), max_abs, max_rel,
                                             max_rel <= tolerance and e.shape == g.shape))
    return report
