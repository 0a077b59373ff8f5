"""Synthetic checkpoints: seeded random weights with a trained model's DCN offset scale.

No trained checkpoint can be downloaded everywhere deformrt runs, and random weights make a DCN
backbone ill-conditioned (:mod:`exporter.evaluation.conditioning`): offsets of tens to hundreds of
pixels, so fp32 backends cannot be checked against each other tightly. A synthetic checkpoint is
the seeded random init with every offset conv rescaled (:func:`models.calibrate.calibrate_offsets`)
to offsets of a few pixels on random images preprocessed as the model expects, saved in
maskrcnn-benchmark's layout (``{"model": {"backbone.<key>": tensor}}``), so ``deformrt export
--weights`` loads it like any checkpoint and its verification and ``deformrt compare`` can be held to
their strict tolerances. ``make demo`` and ``deformrt synthetic-checkpoint`` both make it here.

A whole detector's synthetic checkpoint (``synthetic-checkpoint --config-file CFG --detector``) is
the model ``deformrt export --detector`` builds without ``--weights``: the seeded random init with
its DCN offsets and its prediction layers (scores, box deltas, mask logits) calibrated so that it
detects (:func:`models.calibrate.calibrate_synthetic_detector`), saved key for key, heads included.
Exporting it with ``--weights`` gives a file whose weights are named instead of seeded, for the same
clean checks. It is for demos, tests and benchmarks, never a substitute for trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

from exporter.util.progress import Progress
from models.calibrate import DETECTOR_CALIBRATION_SHAPE, OFFSET_STD_PX

CALIBRATION_SHAPE = (512, 512)


@dataclass
class SyntheticCheckpoint:
    """What was saved (``to_dict`` is the stable ``--json`` form)."""

    path: Path
    body: str
    seed: int
    offset_std_px: Optional[float]  # None: the model has no DCN, nothing was rescaled
    calibration_shape: tuple[int, int]
    mean_offsets_px: list[float] = field(default_factory=list)  # per DCN layer, after calibration
    tensors: int = 0
    size_bytes: int = 0
    detector: Optional[str] = None  # a whole detector's kind (mask_rcnn ...), None for a backbone
    config_file: Optional[str] = None  # the detector's config file, as given

    def describe(self) -> str:
        how = "seeded random init"
        if self.offset_std_px is not None:
            how += f", DCN offset convs rescaled to offsets of {self.offset_std_px:g} px std"
        if self.detector:
            how += ", heads rescaled to a trained model's output spread"
        return f"synthetic checkpoint {self.path}: {how} (seed {self.seed})"

    def summary(self) -> str:
        model = f"{self.detector} detector on {self.body}" if self.detector else self.body
        lines = [f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, {self.tensors} tensors)",
                 f"  model:   {model}, seeded random init (seed {self.seed})"]
        if self.offset_std_px is None:
            lines.append("  DCN:     none (nothing to calibrate)")
        else:
            mean = sum(self.mean_offsets_px) / len(self.mean_offsets_px)
            lines.append(f"  DCN:     {len(self.mean_offsets_px)} offset convs rescaled to {self.offset_std_px:g} px std "
                         f"on random {self.calibration_shape[0]}x{self.calibration_shape[1]} images "
                         f"(mean |offset| {mean:.1f} px)")
        if self.detector:
            lines.append("  heads:   prediction layers rescaled to a trained model's output spread (scores, box deltas, "
                         "masks), so that it detects")
            lines.append(f"  next:    deformrt export --config-file {self.config_file} --detector --onnx --weights "
                         f"{self.path.name} [KEY VALUE ...] (the same config)")
        else:
            lines.append(f"  next:    deformrt export {self.body} --onnx --weights {self.path.name} [KEY VALUE ...] "
                         f"(the same config)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "body": self.body, "seed": self.seed, "offset_std_px": self.offset_std_px,
                "calibration_shape": list(self.calibration_shape), "mean_offsets_px": self.mean_offsets_px,
                "tensors": self.tensors, "size_bytes": self.size_bytes, "detector": self.detector,
                "config_file": self.config_file}


def calibrate(model, cfg, shape: Sequence[int] = CALIBRATION_SHAPE, seed: int = 0, std_px: float = OFFSET_STD_PX,
              progress: Optional[Progress] = None) -> list[float]:
    """Rescale ``model``'s DCN offset convs in place to ``std_px`` on one random image of ``shape``
    preprocessed with ``cfg``'s mean, std and channel order; returns each layer's mean |offset|
    (empty without DCN)."""
    import torch

    from exporter.evaluation.inputs import preprocess, random_images
    from models.calibrate import calibrate_offsets
    from models.layers import DFConv2d

    if not any(isinstance(m, DFConv2d) for m in model.modules()):
        return []
    stats = SimpleNamespace(pixel_mean=cfg.INPUT.PIXEL_MEAN, pixel_std=cfg.INPUT.PIXEL_STD,
                            to_bgr255=cfg.INPUT.TO_BGR255, color_order=None,
                            size_divisibility=cfg.DATALOADER.SIZE_DIVISIBILITY)
    images = torch.from_numpy(preprocess(random_images(1, *shape, seed=seed), stats))
    with (progress or Progress.quiet()).step(f"calibrating DCN offsets to {std_px:g} px (a trained model's scale)"):
        return calibrate_offsets(model, images, std_px, torch.Generator().manual_seed(seed))


def save_synthetic(model, cfg, output: Path, *, seed: int = 0, shape: Sequence[int] = CALIBRATION_SHAPE,
                   std_px: float = OFFSET_STD_PX, force: bool = False,
                   progress: Optional[Progress] = None) -> SyntheticCheckpoint:
    """Calibrate ``model`` (built with ``seed``) in place and save it to ``output`` atomically."""
    import torch

    from exporter.util.fsutil import atomic_path, check_output_path

    output = check_output_path(output, force)
    means = calibrate(model, cfg, shape, seed, std_px, progress)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    with atomic_path(output, force) as tmp:
        torch.save({"model": state}, tmp)
    return SyntheticCheckpoint(output, cfg.MODEL.BACKBONE.CONV_BODY, seed, std_px if means else None,
                               tuple(shape), means, len(state), output.stat().st_size)


def save_synthetic_detector(cfg, output: Path, config_file: str, *, seed: int = 0,
                            shape: Sequence[int] = DETECTOR_CALIBRATION_SHAPE, std_px: float = OFFSET_STD_PX,
                            force: bool = False, progress: Optional[Progress] = None) -> SyntheticCheckpoint:
    """The whole detector ``export --detector`` builds without ``--weights``
    (:func:`exporter.onnx.detector_export.random_detector`: with the defaults, the very same weights),
    saved key for key in maskrcnn-benchmark's layout (``{"model": state_dict}``, heads included)."""
    import torch

    from exporter.onnx.detector_export import random_detector
    from exporter.util.fsutil import atomic_path, check_output_path
    from models.detector import meta_architecture

    output = check_output_path(output, force)
    model, means = random_detector(cfg, seed, std_px, tuple(shape), progress)
    state = model.state_dict()
    with atomic_path(output, force) as tmp:
        torch.save({"model": state}, tmp)
    return SyntheticCheckpoint(output, cfg.MODEL.BACKBONE.CONV_BODY, seed, std_px if means else None, tuple(shape),
                               means, len(state), output.stat().st_size, meta_architecture(cfg), config_file)


def make_synthetic_checkpoint(body: Optional[str], output: Optional[Path] = None, *,
                              config_file: Optional[str] = None, opts: Sequence = (), seed: int = 0,
                              shape: Optional[Sequence[int]] = None, std_px: float = OFFSET_STD_PX,
                              force: bool = False, progress: Optional[Progress] = None,
                              detector: bool = False) -> SyntheticCheckpoint:
    """The whole ``deformrt synthetic-checkpoint`` job: the config as ``deformrt export`` reads it
    (BODY, config file, KEY VALUE; ``detector``: the whole detector of the config file), the output
    checked before anything slow, build with ``seed``, calibrate (on ``shape``, default
    :data:`CALIBRATION_SHAPE`, for a detector :data:`DETECTOR_CALIBRATION_SHAPE`), save (default
    name ``<body>-synthetic.pth``, for a detector ``<config file name>-synthetic.pth``)."""
    from exporter.onnx.export import build_model, load_config, resolve_body
    from exporter.util.fsutil import check_output_path
    from models.errors import require_positive

    require_positive(std_px, "--offset-std")
    body, opts = resolve_body(body, config_file, opts, detector=detector)
    cfg = load_config(body, config_file, opts, detector=detector)
    if detector:
        output = Path(output or f"{Path(config_file).stem}-synthetic.pth")
        return save_synthetic_detector(cfg, output, config_file, seed=seed,
                                       shape=shape or DETECTOR_CALIBRATION_SHAPE, std_px=std_px, force=force,
                                       progress=progress)
    output = Path(output or f"{body}-synthetic.pth")
    check_output_path(output, force)
    built = build_model(cfg, seed=seed, progress=progress)
    return save_synthetic(built.model, cfg, output, seed=seed, shape=shape or CALIBRATION_SHAPE, std_px=std_px,
                          force=force, progress=progress)
