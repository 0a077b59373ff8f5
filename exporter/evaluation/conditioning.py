"""One story for ill-conditioned models, told alike by ``deformrt export --verify`` and ``deformrt compare``.

Two fp32 implementations of a well-conditioned backbone (trained weights; DCN offsets of a few
pixels) agree to about 1e-6 of each output's scale. With random weights, upstream's offset init
(kaiming-uniform on features of magnitude ~100) makes the deformable convs sample tens to hundreds
of pixels away, and each deformable layer amplifies rounding differences: for random-init R-101-FPN
with DCN in res3-res5 at 800x1344, PyTorch's own fp32 result is 13-23% away (measured) from its float64
result. No fp32 implementation can be held to 1e-4 (verify) or 1e-3 (compare) there.

The rule, the same in both commands. When an output misses the tolerance and the PyTorch model is
at hand, PyTorch runs again in float64 on the same input (:func:`run_torch`):

- ``floor`` is PyTorch fp32's relative error against float64 (max abs / max |float64|);
- when ``floor`` exceeds the tolerance, the model is ill-conditioned at that input: the output
  passes when its own error against float64 is at most :data:`FLOOR_FACTOR` x ``floor`` (it is about
  as accurate as the framework the model came from), and the verdict says "(vs fp64)";
- otherwise the model is well-conditioned there and the strict verdict stands: the difference is real.

:func:`note` writes the explanation both commands print under their table: the floor, the mean DCN
offset measured during the float64 run, what the verdict rests on, and for random weights how to
get a clean check (trained ``--weights``, or ``deformrt synthetic-checkpoint``, the demo's
calibrated synthetic checkpoint).

A whole detector (``export --detector``) tells the same story where it applies: its random init is
already calibrated (the weights ``synthetic-checkpoint --detector`` saves), and when its
verification fails, the floor is measured on its backbone features (the deformable part) and the
note explains it the same way, but the verdict stands: detections are sets cut by thresholds,
top-k and NMS, with no float64 tolerance to fall back on (``Story.detector``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from exporter.util.progress import Plan, Progress

# An ill-conditioned output passes when its error against float64 is at most this multiple of
# PyTorch fp32's own (ONNX Runtime measured on random-init R-101-FPN+DCN at 256-576 px: 0.6 to 1.3).
FLOOR_FACTOR = 3.0
# Mean DCN offsets from this many pixels on are far outside a 3x3 kernel (trained models: 1-3 px).
FAR_OFFSET_PX = 8.0
# PyTorch fp32 vs float64 beyond this is ill-conditioning, not rounding (a well-conditioned backbone: ~1e-6).
ILL_CONDITIONED_FLOOR = 1e-4


def relative_error(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |expected|) in float64; inf for a shape mismatch."""
    e, g = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if e.shape != g.shape:
        return float("inf"), float("inf")
    max_abs = float(np.max(np.abs(e - g))) if e.size else 0.0
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")))


def ill_conditioned(floor: Optional[float], tolerance: float) -> bool:
    """Whether PyTorch fp32's own error against float64 (``floor``) already exceeds ``tolerance``."""
    return floor is not None and floor > tolerance


def passes(max_rel: float, tolerance: float, floor: Optional[float] = None, rel64: Optional[float] = None) -> bool:
    """The verdict on one output (module docstring): within ``tolerance`` of the fp32 reference, or,
    where the model is ill-conditioned, within FLOOR_FACTOR x ``floor`` of float64 PyTorch."""
    if max_rel <= tolerance:
        return True
    return ill_conditioned(floor, tolerance) and rel64 is not None and rel64 <= FLOOR_FACTOR * floor


# Relative cost of one run per input pixel (PyTorch fp32 = 1), for the time estimates: ONNX Runtime
# on CPU takes about 0.5-0.7 of PyTorch's time, float64 PyTorch about 2 to 2.5 times.
ORT_COST, FLOAT64_COST = 0.6, 2.5


def run_cost(batch: np.ndarray, dtype) -> float:
    """The weight of one PyTorch run of ``batch`` in a :class:`Plan` (pixels x relative cost)."""
    import torch

    return batch.size * (1.0 if dtype == torch.float32 else FLOAT64_COST)


def run_torch(model, batches: Sequence[np.ndarray], dtype, plan: Optional[Plan] = None, device: str = "cpu"
              ) -> tuple[list[tuple[np.ndarray, ...]], Optional[float]]:
    """``model``'s outputs on each batch in ``dtype`` (float32 runs ``model`` itself; another dtype
    a converted copy), as float arrays per output, and the mean |offset| in pixels of its DCN
    layers over these runs (None without DCN). ``plan`` reports each run with its estimate
    (weight: :func:`run_cost`)."""
    import torch

    from models.calibrate import measure_offsets

    run_model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    run_model = run_model.to(device).eval()
    plan = plan or Progress.quiet().plan(0)
    outputs = []
    with measure_offsets(run_model) as offsets:
        for batch in batches:
            name = str(dtype).replace("torch.", "")
            with plan.step(f"running PyTorch ({name}) at {'x'.join(map(str, batch.shape))}", run_cost(batch, dtype)), \
                    torch.no_grad():
                result = run_model(torch.from_numpy(np.ascontiguousarray(batch)).to(device, dtype))
            outputs.append(tuple(t.detach().cpu().numpy() for t in result))
    return outputs, (float(np.mean(offsets)) if offsets else None)


@dataclass(frozen=True)
class Story:
    """What the float64 run showed, for :func:`note`."""

    tolerance: float
    floor: float  # the largest PyTorch fp32 vs float64 relative error over the outputs
    offsets_px: Optional[float]  # mean |offset| of the DCN layers in the float64 run
    weights_seed: Optional[int]  # the seed of random weights, None for a checkpoint
    body: str
    passed: bool
    # A whole detector's story (exporter.evaluation.detector_verify): the floor is measured on its
    # backbone features, and its results (sets cut by thresholds, top-k and NMS) have no float64
    # verdict. ``synthetic`` is the synthetic-checkpoint command line for the model (default: the
    # backbone's, from ``body``).
    detector: bool = False
    synthetic: Optional[str] = None

    @property
    def judged_by_float64(self) -> bool:
        """The rule applied: PyTorch fp32's own error exceeds the tolerance."""
        return ill_conditioned(self.floor, self.tolerance)

    @property
    def ill_conditioned(self) -> bool:
        """The model itself is ill-conditioned here: fp32 is off by more than fp32 rounding of a
        well-conditioned backbone can explain (not merely a tolerance tighter than fp32)."""
        return self.floor > ILL_CONDITIONED_FLOOR

    @property
    def suggests_synthetic(self) -> bool:
        """Whether the note says how to get a clean check: random weights, or (a detector, whose
        random init is already calibrated) weights whose offsets are as far as untrained ones'."""
        far = self.offsets_px is not None and self.offsets_px >= FAR_OFFSET_PX
        return self.ill_conditioned and (self.weights_seed is not None or (self.detector and far))


def note(story: Story) -> list[str]:
    """The explanation printed under the verify and compare tables (and under a failed detector
    verification's) when float64 was consulted."""
    tol = f"{story.tolerance:.0e}"
    what = "its backbone features in PyTorch fp32 are" if story.detector else "PyTorch fp32 is"
    if not story.judged_by_float64:
        return [f"note: {what} within {story.floor:.1e} of float64 PyTorch on these inputs, so the model is "
                f"well-conditioned here and " + ("the difference is real, not rounding." if story.detector else
                                                 f"an error above {tol} is a real difference, not rounding.")]
    what = "its backbone features in PyTorch fp32 are" if story.detector else "PyTorch fp32 itself is"
    if story.ill_conditioned:
        lines = [f"note: the model is ill-conditioned at these inputs: {what} up to {story.floor:.1e} "
                 f"(relative) away from float64 PyTorch, more than the tolerance {tol}, so no fp32 implementation can "
                 f"match another to {tol}."]
    else:
        lines = [f"note: the tolerance {tol} is tighter than fp32 rounding here: {what} up to "
                 f"{story.floor:.1e} (relative) away from float64 PyTorch on these inputs."]
    if story.offsets_px is not None and story.ill_conditioned:
        cause = "each deformable layer amplifies rounding differences"
        if story.weights_seed is not None and story.offsets_px >= FAR_OFFSET_PX:
            cause = (f"with random weights (seed {story.weights_seed}), upstream's offset init predicts offsets far "
                     f"outside the kernel, and {cause}")
        lines.append(f"  Its deformable convs sample {story.offsets_px:.0f} px away on average (a trained model's: a "
                     f"few px): {cause}.")
    if story.detector:
        lines.append("  Detections are sets cut by score thresholds, top-k and NMS, so such differences change which "
                     "boxes survive, and they have no float64 verdict: the check failed.")
    else:
        lines.append(f"  So each output is judged against float64 PyTorch instead ('vs fp64'): it passes within "
                     f"{FLOOR_FACTOR:g} x PyTorch fp32's own error ('torch fp32 vs fp64'). Judged that way, the check "
                     f"{'passed' if story.passed else 'failed'}.")
    if story.suggests_synthetic:
        synthetic = story.synthetic or (f"deformrt synthetic-checkpoint {story.body} -o {story.body}-synthetic.pth "
                                        f"[KEY VALUE ...]")
        saved = re.search(r"-o (\S+)", synthetic).group(1)
        lines.append(f"  For a clean check at {tol}, use trained weights (--weights FILE), or a synthetic checkpoint "
                     f"with a trained model's offset scale: {synthetic} (as exported), then export again with "
                     f"--weights {saved}.")
    return lines
