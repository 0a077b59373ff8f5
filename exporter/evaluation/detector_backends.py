"""A whole-detector file run by PyTorch, ONNX Runtime or TensorRT, each giving detections per image.

``deformrt compare``, ``bench`` and ``eval`` on a detector file all need the same thing from a
backend: (``images`` [N,3,H,W] float32 preprocessed and padded, ``image_sizes`` [N,2] int32) in,
one :class:`~exporter.evaluation.detections.ImageDetections` per image out.

- ``torch``: the eager :class:`models.detector.GeneralizedRCNN` rebuilt from the file's metadata
  (upstream's semantics, variable-length results, detections in upstream's class-by-class order);
- ``ort``: the file in ONNX Runtime (``fp16``: :func:`convert_detector_to_fp16` of it);
- ``trt``: an engine file from ``deformrt build-engine``, or one built in memory from the file
  (TensorRT's own plugins registered, ROIAlign_TRT among them; profiles for ``images`` and
  ``image_sizes``).

The ONNX and TensorRT backends return the file's fixed-size outputs cut to ``num_detections``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from exporter.evaluation.detections import ImageDetections
from models.errors import DeformRTError

DETECTOR_BACKENDS = ("torch", "ort", "trt")

Feed = dict  # {"images": float32 [N,3,H,W], "image_sizes": int32 [N,2]}
_REBUILT: dict = {}  # the last rebuilt PyTorch detector, by what decides it


@dataclass
class DetectorBackend:
    """One backend ready to run: ``run(feed)`` -> the raw outputs by name (fixed-size tensors for
    ort/trt, ``None`` for torch), ``detections(feed)`` -> per-image detections."""

    name: str
    device: str
    precision: str
    run: Callable[[Feed], object]
    to_detections: Callable[[object, int], list[ImageDetections]]
    # Runs the backbone alone where the backend can (torch: the body and FPN), for bench to time.
    backbone: Optional[Callable[[Feed], object]] = None
    # Or measures the backbone's share of one run where the backend's profiler can tell (ort).
    backbone_share: Optional[Callable[[Feed], float]] = None

    def detections(self, feed: Feed) -> list[ImageDetections]:
        return self.to_detections(self.run(feed), len(feed["image_sizes"]))


def outputs_to_detections(outputs: dict, count: int) -> list[ImageDetections]:
    """Per-image detections from a detector file's fixed-size outputs."""
    return [ImageDetections.from_outputs(outputs, i) for i in range(count)]


def torch_backend(meta, weights: Optional[Path] = None, device: str = "cpu") -> DetectorBackend:
    """The eager PyTorch detector the file came from (random-init files are rebuilt from their seed)."""
    import torch

    from exporter.onnx.detector_export import rebuild_detector

    if device == "cuda" and not torch.cuda.is_available():
        raise DeformRTError("--device cuda: PyTorch sees no CUDA device here")
    key = (meta.config, meta.weights, meta.weights_sha256, meta.init_seed, str(weights) if weights else None)
    if key not in _REBUILT:  # rebuilding (and calibrating random heads) takes seconds: once per process
        _REBUILT.clear()
        _REBUILT[key] = rebuild_detector(meta, str(weights) if weights else None).eval()
    model = _REBUILT[key].to(device)

    def tensors(feed: Feed):
        return (torch.from_numpy(np.ascontiguousarray(feed["images"])).to(device),
                torch.from_numpy(np.asarray(feed["image_sizes"], np.int64)).to(device))

    def run(feed: Feed):
        with torch.inference_mode():
            return model(*tensors(feed))

    def backbone(feed: Feed):
        with torch.inference_mode():
            return model.backbone(tensors(feed)[0])

    def convert(results, count: int) -> list[ImageDetections]:
        return [ImageDetections(r.boxes.cpu().numpy().astype(np.float32), r.scores.cpu().numpy().astype(np.float32),
                                r.labels.cpu().numpy().astype(np.int64),
                                None if r.masks is None else r.masks.cpu().numpy().astype(np.float32))
                for r in results]

    return DetectorBackend("torch", device, "fp32", run, convert, backbone)


def ort_backend(model, provider: str = "cpu", fp16: bool = False) -> DetectorBackend:
    """The file (an ``onnx.ModelProto``) in ONNX Runtime; ``fp16``: its strongly typed fp16 form."""
    from exporter.evaluation.ort import ort_session
    from exporter.onnx.fp16 import model_precision

    if fp16:
        from exporter.onnx.detector_export import convert_detector_to_fp16

        model = convert_detector_to_fp16(model).model
    session = ort_session(model, provider, provider_flag="--ort-provider")
    names = [o.name for o in session.get_outputs()]

    def run(feed: Feed):
        return dict(zip(names, session.run(None, {"images": feed["images"], "image_sizes": feed["image_sizes"]})))

    def backbone_share(feed: Feed) -> float:
        return ort_backbone_share(model, provider, feed)

    return DetectorBackend("ort", provider, model_precision(model), run, outputs_to_detections,
                           backbone_share=backbone_share)


def ort_backbone_share(model, provider: str, feed: Feed) -> float:
    """The backbone's (body + FPN) share of one run's node time in ONNX Runtime's profiler: nodes
    classified by the module hierarchy the export recorded (:func:`is_backbone_node`); a node
    ONNX Runtime fused keeps its first node's name."""
    import json
    import tempfile

    from exporter.evaluation.ort import ort_session
    from exporter.onnx.detector_export import is_backbone_node

    backbone = {name for n in model.graph.node if is_backbone_node(n) for name in (n.name, *n.output)}
    with tempfile.TemporaryDirectory(prefix="deformrt-ort-profile-") as tmp:
        session = ort_session(model, provider, provider_flag="--ort-provider", profile_prefix=f"{tmp}/ort")
        session.run(None, {"images": feed["images"], "image_sizes": feed["image_sizes"]})
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    return node_time_share(events, backbone)


def profiled_node_name(event_name: str) -> str:
    """The graph name behind an ONNX Runtime profiler node event: ``<name>_kernel_time`` without
    the prefix and suffix its graph optimisations add (``fused <node>``; ``<output>_nchwc`` for a
    node its NCHWc transformer made, named after the original node's output)."""
    name = event_name[:-len("_kernel_time")] if event_name.endswith("_kernel_time") else event_name
    name = name[len("fused "):] if name.startswith("fused ") else name
    return name[:-len("_nchwc")] if name.endswith("_nchwc") else name


def node_time_share(events: Sequence[dict], names: set[str]) -> float:
    """The share of ONNX Runtime profiler node time (``cat`` "Node", ``*_kernel_time``) spent in
    nodes whose :func:`profiled_node_name` is in ``names`` (node or output names); 0 when no node
    time was recorded."""
    inside = total = 0.0
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            duration = float(e.get("dur", 0))
            total += duration
            inside += duration if profiled_node_name(e["name"]) in names else 0.0
    return inside / total if total > 0 else 0.0


def trt_shapes(shape: Sequence[int]) -> str:
    """The ``--min/opt/max-shape`` text pinning a detector engine to one input batch shape."""
    from exporter.trt.profiles import format_shape

    return f"images:{format_shape(shape)},image_sizes:{shape[0]}x2"


def trt_backend(onnx_path: Path, model=None, engine: Optional[Path] = None, plugin: Optional[Path] = None,
                fp16: bool = False, static_shape: Optional[Sequence[int]] = None,
                verbose: bool = False) -> DetectorBackend:
    """An engine file, or one built in memory from ``onnx_path`` (``static_shape``: for exactly that
    input shape; else the file's default profiles, which cover 320..1344 px sides)."""
    from exporter.trt.session import TrtSession

    if engine is not None:
        from exporter.trt.engine import load_engine

        loaded = load_engine(Path(engine), plugin, verbose)
    else:
        from exporter.trt.build import BuildOptions, build_in_memory

        pinned = trt_shapes(static_shape) if static_shape is not None else None
        options = BuildOptions(fp16=fp16, plugin=plugin, verbose=verbose, min_shape=pinned, opt_shape=pinned,
                               max_shape=pinned)
        loaded = build_in_memory(Path(onnx_path), options, model)
    session = TrtSession(loaded)
    return DetectorBackend("trt", "cuda", loaded.meta.precision, session.run, outputs_to_detections)


def make_backend(name: str, *, onnx_path: Path, model, meta, weights: Optional[Path] = None, device: str = "cpu",
                 ort_provider: str = "cpu", engine: Optional[Path] = None, plugin: Optional[Path] = None,
                 fp16: bool = False, static_shape: Optional[Sequence[int]] = None,
                 verbose: bool = False) -> DetectorBackend:
    """The backend called ``name`` (:data:`DETECTOR_BACKENDS`)."""
    if name == "torch":
        return torch_backend(meta, weights, device)
    if name == "ort":
        return ort_backend(model, ort_provider, fp16)
    if name == "trt":
        return trt_backend(onnx_path, model, engine, plugin, fp16, static_shape, verbose)
    raise DeformRTError(f"unknown backend {name!r}; choose from {', '.join(DETECTOR_BACKENDS)}")

