"""Check an exported detector: ONNX Runtime (CPU) against the eager PyTorch detector, stage by stage.

Two input batches: the export shape, and (dynamic files) a batch of 2 at a larger padded size
whose images have different unpadded sizes. The PyTorch side is :class:`models.detector.GeneralizedRCNN`
itself (upstream's semantics, variable-length results); the ONNX side is the file with its stage
outputs (the export hands in both the file's bytes and the staged graph's).

Stages and tolerances (``PX_TOL`` = 1e-3 px, ``SCORE_TOL`` = ``MASK_TOL`` = 1e-4):

- ``pre-NMS top-k`` (per image and level): equal index sets; for common indices, boxes within
  PX_TOL (plus ``EXTENT_TOL`` of the box's size before clipping: an RPN box decoded to thousands of
  pixels carries the two sides' 1e-6 relative difference in its deltas into its clipped corners)
  and scores within SCORE_TOL;
- ``proposals`` (two-stage and RPN-only): matched as sets (IoU >= 0.99), scores within SCORE_TOL;
- ``detections``: matched by class and IoU >= 0.99; scores within SCORE_TOL; masks within MASK_TOL.

Near-ties are the only admissible difference: an index or detection found on one side only passes
when its score is within ``BORDERLINE`` of the cut it fell on (the k-th score, the score threshold,
or the last kept detection), and the report counts it as borderline.

When a check fails, the report tells the backbone export's story
(:mod:`exporter.evaluation.conditioning`): the backbone runs again in float64 on the failing batch,
and the note under the table says whether PyTorch fp32's own features are that far from float64
(an ill-conditioned model, e.g. untrained DCN offsets far outside the kernel, with how to get a
clean check) or well-conditioned (the difference is real). The verdict stands either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from exporter.evaluation import ort
from exporter.evaluation.conditioning import Story, note, relative_error, run_cost, run_torch
from exporter.evaluation.detections import ImageDetections, match_detections, matched_errors
from exporter.evaluation.inputs import preprocess, random_images
from exporter.evaluation.verify import DEFAULT_TOLERANCE
from exporter.onnx.metadata import DetectorMetadata, ExportMetadata
from exporter.util.progress import Progress

PX_TOL = 1e-3
SCORE_TOL = 1e-4
MASK_TOL = 1e-4
EXTENT_TOL = 2e-6
BORDERLINE = 1e-4
DEFAULT_SEED = 0


@dataclass
class StageCheck:
    input_shape: tuple[int, ...]
    stage: str
    compared: int
    max_box_err: float
    max_score_err: float
    max_mask_err: Optional[float]
    borderline: int
    mismatched: int
    passed: bool
    note: str = ""


@dataclass
class DetectorVerifyReport:
    seed: int
    checks: list[StageCheck] = field(default_factory=list)
    story: Optional[Story] = None  # what the float64 run of the backbone showed, after a failure

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def worst_line(self) -> str:
        failing = [c for c in self.checks if not c.passed] or self.checks
        c = failing[0]
        return (f"stage '{c.stage}' at input {'x'.join(map(str, c.input_shape))}: {c.mismatched} mismatched, "
                f"box err {c.max_box_err:.2e} px, score err {c.max_score_err:.2e}"
                + (f", mask err {c.max_mask_err:.2e}" if c.max_mask_err is not None else "")
                + (f" ({c.note})" if c.note else "") + f" (seed {self.seed})")

    def table(self) -> str:
        head = ["input", "stage", "compared", "box err px", "score err", "mask err", "borderline", "ok"]
        rows = [["x".join(map(str, c.input_shape)), c.stage, str(c.compared), f"{c.max_box_err:.2e}",
                 f"{c.max_score_err:.2e}", "-" if c.max_mask_err is None else f"{c.max_mask_err:.2e}",
                 str(c.borderline), "yes" if c.passed else "NO"] for c in self.checks]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [f"ONNX Runtime (CPU) vs PyTorch, stage by stage, seed {self.seed}: boxes within {PX_TOL:g} px "
                 f"(pre-NMS: beyond {EXTENT_TOL:g} x the unclipped box size), "
                 f"scores within {SCORE_TOL:g}, masks within {MASK_TOL:g}; sets matched by class and IoU >= 0.99"]
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows]]
        if self.story is not None:
            lines += note(self.story)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        story = self.story
        return {"passed": self.passed, "seed": self.seed, "tolerances": {"box_px": PX_TOL, "score": SCORE_TOL,
                                                                          "mask": MASK_TOL, "borderline": BORDERLINE},
                "ill_conditioned": bool(story and story.ill_conditioned),
                "offsets_px": story.offsets_px if story else None,
                "note": " ".join(" ".join(note(story)).split()) if story else None,
                "checks": [{**asdict(c), "input_shape": list(c.input_shape)} for c in self.checks]}


def verification_batches(meta: ExportMetadata, seed: int):
    """[(images [N,3,H,W] float32, image_sizes [N,2] int32)]: the export shape with its full size,
    then (dynamic files) batch 2 at +64 px padded size with two different unpadded sizes."""
    n, _, h, w = meta.export_shape
    d = max(1, meta.size_divisibility)
    batches = [(n, [(h, w)] * n, h, w)]
    if meta.dynamic:
        hh, ww = -(-(h + 64) // d) * d, -(-(w + 64) // d) * d
        batches.append((2, [(hh - 6, ww - 20), (hh - d - 3, ww)], hh, ww))
    else:
        batches.append((n, [(h - 7, w - 13)] * n, h, w))
    out = []
    for i, (count, sizes, ph, pw) in enumerate(batches):
        pixels = random_images(count, ph, pw, seed=seed + i)
        pixels = [p[:sh, :sw] for p, (sh, sw) in zip(pixels, sizes)]
        batch = preprocess(pixels, meta)
        full = np.zeros((count, 3, ph, pw), np.float32)
        full[:, :, :batch.shape[2], :batch.shape[3]] = batch[:, :, :ph, :pw]
        out.append((full, np.asarray(sizes, np.int32)))
    return out


def _compare_sets(shape, stage, want: ImageDetections, got: ImageDetections, cut: float, check: Optional[StageCheck]):
    match = match_detections(want, got)
    box, score, mask = matched_errors(want, got, match)
    lost = [want.scores[i] for i in match.unmatched_reference] + [got.scores[j] for j in match.unmatched_other]
    low = min((float(want.scores[i]) for i, _ in match.pairs), default=cut)  # the last kept detection
    borderline = sum(1 for s in lost if abs(float(s) - cut) <= BORDERLINE or abs(float(s) - low) <= BORDERLINE)
    return _accumulate(check, shape, stage, len(match.pairs), box, score, mask, borderline, len(lost) - borderline)


def _accumulate(check, shape, stage, compared, box, score, mask, borderline, mismatched) -> StageCheck:
    if check is None:
        check = StageCheck(tuple(shape), stage, 0, 0.0, 0.0, None, 0, 0, True)
    check.compared += compared
    check.max_box_err = max(check.max_box_err, box)
    check.max_score_err = max(check.max_score_err, score)
    if mask is not None:
        check.max_mask_err = max(check.max_mask_err or 0.0, mask)
    check.borderline += borderline
    check.mismatched += mismatched
    check.passed = (check.mismatched == 0 and check.max_box_err <= PX_TOL and check.max_score_err <= SCORE_TOL
                    and (check.max_mask_err is None or check.max_mask_err <= MASK_TOL))
    return check


def _compare_levels(shape, levels, outputs, check: Optional[StageCheck]) -> StageCheck:
    """Eager per-level candidates vs the file's pre_nms_* outputs of one image."""
    boxes, scores, indices = outputs
    for level, cand in enumerate(levels):
        want_idx = cand.indices.numpy()
        got_idx = indices[level]
        valid = got_idx >= 0
        got = {int(i): (boxes[level][p], scores[level][p]) for p, i in enumerate(got_idx) if valid[p]}
        extent = cand.extent.numpy() if cand.extent is not None else np.zeros(len(want_idx))
        want = {int(i): (cand.boxes[p].numpy(), float(cand.scores[p]), float(extent[p]))
                for p, i in enumerate(want_idx)}
        common = sorted(set(got) & set(want))
        # Reported in px beyond the size allowance, so the common PX_TOL bound applies.
        box = max((max(0.0, float(np.abs(got[i][0] - want[i][0]).max()) - EXTENT_TOL * abs(want[i][2]))
                   for i in common), default=0.0)
        score = max((abs(float(got[i][1]) - want[i][1]) for i in common), default=0.0)
        cut = float(cand.scores.min()) if len(cand.scores) else 0.0
        lost = [want[i][1] for i in set(want) - set(got)] + [float(got[i][1]) for i in set(got) - set(want)]
        borderline = sum(1 for s in lost if abs(s - cut) <= BORDERLINE)
        check = _accumulate(check, shape, "pre-NMS top-k", len(common), box, score, None, borderline,
                            len(lost) - borderline)
    return check


def verify_detector(data: bytes, staged: bytes, torch_model, meta: ExportMetadata, *, seed: int = DEFAULT_SEED,
                    progress: Optional[Progress] = None, config_file: Optional[str] = None) -> DetectorVerifyReport:
    """Run the file (``data``) and its staged graph (``staged``) in ONNX Runtime and compare with
    ``torch_model`` (module docstring). ``config_file`` (the detector's, as exported) goes into the
    note's synthetic-checkpoint command."""
    progress = progress or Progress.quiet()
    detector = DetectorMetadata.from_model(__import__("onnx").load_from_string(staged))
    hint = "try a lower --opset, or --no-verify"
    with progress.step("loading the detector into ONNX Runtime"):
        session = ort.ort_session(staged, "cpu", hint=hint)
        final = ort.ort_session(data, "cpu", hint=hint) if data != staged else session
    report = DetectorVerifyReport(seed=seed)
    batches = verification_batches(meta, seed)
    for images, sizes in batches:
        shape = images.shape
        label = "x".join(map(str, shape))
        with progress.step(f"running PyTorch at {label}"):
            stages: dict = {}
            expected = torch_model(torch.from_numpy(images), torch.from_numpy(sizes.astype(np.int64)), stages=stages)
        with progress.step(f"running ONNX Runtime at {label}"):
            names = [o.name for o in session.get_outputs()]
            got = dict(zip(names, session.run(None, {"images": images, "image_sizes": sizes})))
            final_names = [o.name for o in final.get_outputs()]
            got_final = dict(zip(final_names, final.run(None, {"images": images, "image_sizes": sizes})))
        same = all(np.array_equal(got[n], got_final[n]) for n in final_names)
        levels = stages.get("rpn_levels") or stages.get("retinanet_levels")
        pre = props = dets = None
        for i in range(len(sizes)):
            if levels is not None:
                pre = _compare_levels(shape, levels[i], (got["pre_nms_boxes"][i], got["pre_nms_scores"][i],
                                                         got["pre_nms_indices"][i]), pre)
            if "proposals" in stages:
                boxes, scores = stages["proposals"][i]
                want = ImageDetections(boxes.numpy(), scores.numpy(), np.ones(len(scores), np.int64))
                valid = got["proposal_scores"][i] >= 0
                have = ImageDetections(got["proposals"][i][valid], got["proposal_scores"][i][valid],
                                       np.ones(int(valid.sum()), np.int64))
                props = _compare_sets(shape, "proposals", want, have, float(scores.min()) if len(scores) else 0.0,
                                      props)
            e = expected[i]
            want = ImageDetections(e.boxes.numpy(), e.scores.numpy(), e.labels.numpy(),
                                   None if e.masks is None else e.masks.numpy())
            cut = _score_cut(torch_model, detector)
            dets = _compare_sets(shape, "detections", want, ImageDetections.from_outputs(got_final, i), cut, dets)
        for check in (pre, props, dets):
            if check is not None:
                report.checks.append(check)
        if not same:
            report.checks.append(StageCheck(tuple(shape), "file vs staged graph", 0, 0.0, 0.0, None, 0, 1, False,
                                            "the written file's outputs differ from the staged graph's"))
    if not report.passed:
        failing = next(c for c in report.checks if not c.passed)
        images = next(b for b, _ in batches if b.shape == failing.input_shape)
        report.story = conditioning_story(torch_model, images, meta, config_file, progress)
    return report


def conditioning_story(torch_model, images: np.ndarray, meta: ExportMetadata, config_file: Optional[str] = None,
                       progress: Optional[Progress] = None) -> Story:
    """The backbone of ``torch_model`` in float64 and fp32 on ``images``: PyTorch fp32's own error
    against float64 over its features (the floor, judged at the backbone export's tolerance) and
    the mean DCN offset, as :mod:`exporter.evaluation.conditioning` tells it for a detector."""
    progress = progress or Progress.quiet()
    progress.info("the check failed: running the backbone in float64 to tell an ill-conditioned model from a real "
                  "difference")
    plan = progress.plan(run_cost(images, torch.float64) + run_cost(images, torch.float32))
    (features64,), offsets = run_torch(torch_model.backbone, [images], torch.float64, plan)
    (features32,), _ = run_torch(torch_model.backbone, [images], torch.float32, plan)
    floor = max(relative_error(a, b)[1] for a, b in zip(features64, features32))
    stem = Path(config_file).stem if config_file else "detector"
    synthetic = (f"deformrt synthetic-checkpoint --config-file {config_file or 'CFG'} --detector -o "
                 f"{stem}-synthetic.pth [KEY VALUE ...]")
    return Story(DEFAULT_TOLERANCE, floor, offsets, meta.seed, meta.body, False, detector=True, synthetic=synthetic)


def _score_cut(model, detector: DetectorMetadata) -> float:
    """The score threshold detections fall under (0 for RPN-only proposals)."""
    if detector.kind == "retinanet":
        return model.rpn.settings.pre_nms_thresh
    if detector.kind == "rpn":
        return 0.0
    return model.roi_heads["box"].settings.score_thresh


def verify(data: bytes, staged: bytes, torch_model, meta: ExportMetadata, progress: Optional[Progress] = None,
           config_file: Optional[str] = None):
    """The verifier ``exporter.onnx.detector_export`` takes (fixed seed, reported)."""
    return verify_detector(data, staged, torch_model, meta, progress=progress, config_file=config_file)
