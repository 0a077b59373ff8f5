"""Polygraphy runners for the three backends ``deformrt compare`` puts side by side.

- :class:`TorchRunner`: the PyTorch model (rebuilt from the ONNX metadata) on CPU or CUDA, in fp32
  or (as a tighter reference) fp64.
  Polygraphy's own ``PytRunner`` always moves inputs to CUDA, so it cannot serve the CPU case.
- :func:`onnxrt_runner`: Polygraphy's ``OnnxrtRunner`` on an ONNX Runtime session with the CPU or
  CUDA provider. ONNX Runtime has no kernel for our custom op, so a plugin-flavour graph is
  rewritten to standard ``DeformConv`` in memory first (the file is untouched).
- :class:`TrtRunner`: a TensorRT engine, loaded from a file (checked against its sidecar) or
  built in memory from the ONNX and our plugin, run by :class:`exporter.trt.session.TrtSession`.

Each runner is created cheaply and does its heavy work (model build, session, engine) when
Polygraphy activates it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.common import TensorMetadata

from exporter.evaluation.ort import ort_session
from models.errors import DeformRTError

TORCH_PRECISIONS = {"fp32": "float32", "fp64": "float64"}  # precision name -> torch dtype attribute


def flatten_outputs(outputs, names: Sequence[str]) -> "OrderedDict[str, object]":
    """Name a model's outputs (a tensor, a sequence or a mapping) with ``names``, in order."""
    if isinstance(outputs, dict):
        missing = [n for n in names if n not in outputs]
        if missing:
            raise DeformRTError(f"the PyTorch model returned no output named {', '.join(missing)}")
        return OrderedDict((n, outputs[n]) for n in names)
    values = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if len(values) != len(names):
        raise DeformRTError(f"the PyTorch model returned {len(values)} outputs but the ONNX metadata names "
                            f"{len(names)} ({', '.join(names)})")
    return OrderedDict(zip(names, values))


class TorchRunner(BaseRunner):
    """Runs a PyTorch module made by ``model_factory`` on ``device`` (``"cpu"`` or ``"cuda"``) in
    ``precision`` (:data:`TORCH_PRECISIONS`): the model, its inputs and its outputs in that dtype."""

    def __init__(self, model_factory: Callable[[], "torch.nn.Module"], input_metadata: TensorMetadata,  # noqa: F821
                 output_names: Sequence[str], device: str = "cpu", name: Optional[str] = None,
                 precision: str = "fp32"):
        super().__init__(name=name, prefix="pytorch-runner")
        if precision not in TORCH_PRECISIONS:
            raise DeformRTError(f"unknown PyTorch precision {precision!r}; choose from {', '.join(TORCH_PRECISIONS)}")
        self._factory = model_factory
        self._input_metadata = input_metadata
        self.output_names = list(output_names)
        self.device = device
        self.precision = precision

    def activate_impl(self):
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise DeformRTError("--device cuda: PyTorch sees no CUDA device here")
        self.dtype = getattr(torch, TORCH_PRECISIONS[self.precision])
        self.model = self._factory().eval().to(self.device, self.dtype)

    def get_input_metadata_impl(self):
        return self._input_metadata

    def infer_impl(self, feed_dict):
        import torch

        tensors = [torch.from_numpy(np.ascontiguousarray(feed_dict[name])).to(self.device, self.dtype)
                   for name in self._input_metadata]
        with torch.inference_mode():
            if self.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs = self.model(*tensors)
            if self.device == "cuda":
                torch.cuda.synchronize()
            self.inference_time = time.perf_counter() - start
        return OrderedDict((n, t.detach().to(self.dtype).cpu().numpy())
                           for n, t in flatten_outputs(outputs, self.output_names).items())

    def deactivate_impl(self):
        del self.model


def fixed_size_outputs(detections, rows: int, mask_size: int, names: Sequence[str]) -> "OrderedDict[str, np.ndarray]":
    """Per-image detections (:class:`ImageDetections`) as a detector file's fixed-size outputs:
    each image's detections sorted by descending score (stable), cut or zero-padded to ``rows``;
    ``names`` picks and orders the outputs (``detection_masks`` only where listed)."""
    n = len(detections)
    out = {"num_detections": np.zeros((n, 1), np.int32), "detection_boxes": np.zeros((n, rows, 4), np.float32),
           "detection_scores": np.zeros((n, rows), np.float32), "detection_classes": np.zeros((n, rows), np.int32),
           "detection_masks": np.zeros((n, rows, mask_size, mask_size), np.float32)}
    for i, d in enumerate(detections):
        order = np.argsort(-np.asarray(d.scores), kind="stable")[:rows]
        k = len(order)
        out["num_detections"][i, 0] = k
        out["detection_boxes"][i, :k] = d.boxes[order]
        out["detection_scores"][i, :k] = d.scores[order]
        out["detection_classes"][i, :k] = d.labels[order]
        if d.masks is not None and "detection_masks" in names:
            out["detection_masks"][i, :k] = d.masks[order]
    return OrderedDict((name, out[name]) for name in names)


class DetectorTorchRunner(BaseRunner):
    """The eager PyTorch detector a detector file came from, giving the file's fixed-size outputs
    (:func:`fixed_size_outputs`: sorted by score, so that Polygraphy can compare them element-wise
    as long as no two scores are near-tied; ``deformrt compare`` matches them as sets instead)."""

    def __init__(self, meta, detector, output_names: Sequence[str], weights: Optional[str] = None,
                 device: str = "cpu", name: Optional[str] = None):
        super().__init__(name=name, prefix="pytorch-detector-runner")
        self.meta, self.detector, self.output_names = meta, detector, list(output_names)
        self.weights, self.device = weights, device

    def activate_impl(self):
        from exporter.evaluation.detector_backends import torch_backend

        self.backend = torch_backend(self.meta, self.weights, self.device)

    def get_input_metadata_impl(self):
        axes = self.meta.dynamic_axes.get("images", {})
        dims = [d if str(i) not in axes else axes[str(i)] for i, d in enumerate(self.meta.export_shape)]
        return (TensorMetadata().add("images", np.float32, dims)
                .add("image_sizes", np.int32, [dims[0], 2]))

    def infer_impl(self, feed_dict):
        start = time.perf_counter()
        found = self.backend.detections({"images": np.asarray(feed_dict["images"], np.float32),
                                         "image_sizes": np.asarray(feed_dict["image_sizes"], np.int32)})
        self.inference_time = time.perf_counter() - start
        return fixed_size_outputs(found, self.detector.detections, self.detector.mask_size, self.output_names)

    def deactivate_impl(self):
        del self.backend


def onnxrt_runner(model, provider: str = "cpu", name: Optional[str] = None) -> OnnxrtRunner:
    """Polygraphy's ONNX Runtime runner for an ``onnx.ModelProto`` (see :func:`exporter.evaluation.ort.ort_session`)."""
    return OnnxrtRunner(lambda: ort_session(model, provider), name=name)


class TrtRunner(BaseRunner):
    """Runs a TensorRT engine returned by ``load`` (a :class:`exporter.trt.engine.LoadedEngine`)."""

    def __init__(self, load: Callable[[], "LoadedEngine"], name: Optional[str] = None):  # noqa: F821
        super().__init__(name=name, prefix="trt-runner")
        self._load = load

    def activate_impl(self):
        from exporter.trt.session import TrtSession

        self.session = TrtSession(self._load())

    def get_input_metadata_impl(self):
        meta = TensorMetadata()
        for name in self.session.input_names:
            shape = [d if d >= 0 else None for d in self.session.engine.get_tensor_shape(name)]
            meta.add(name, dtype=self.session.dtypes[name], shape=shape)
        return meta

    def infer_impl(self, feed_dict):
        start = time.perf_counter()
        outputs = self.session.run(feed_dict)
        self.inference_time = time.perf_counter() - start
        return OrderedDict((n, outputs[n]) for n in self.session.output_names)

    def deactivate_impl(self):
        del self.session


def trt_engine_runner(engine: Path, plugin: Optional[Path] = None, verbose: bool = False,
                      name: Optional[str] = None) -> TrtRunner:
    """A runner for an engine file built by ``deformrt build-engine``."""
    from exporter.trt.engine import load_engine

    return TrtRunner(lambda: load_engine(Path(engine), plugin, verbose), name=name)


def trt_onnx_runner(onnx_path: Path, options, model=None, name: Optional[str] = None) -> TrtRunner:
    """A runner that builds an engine from ``onnx_path`` in memory (``options``: BuildOptions;
    ``model``: the file's ModelProto, when already loaded)."""
    from exporter.trt.build import build_in_memory

    return TrtRunner(lambda: build_in_memory(Path(onnx_path), options, model), name=name)
