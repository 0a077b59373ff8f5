"""deformrt exporter: from a PyTorch backbone to ONNX, TensorRT engines, and their evaluation.

Packages, each owning one concern; imports run one way (top to bottom), never back up:

- :mod:`exporter.cli`: the ``deformrt`` command line (one module per command group);
- :mod:`exporter.polygraphy_ext`: deformrt's runners inside ``polygraphy run`` (a front end too);
- :mod:`exporter.deploy`: ``deformrt deploy`` bundles for the device, and their numpy-only check there
  (beside evaluation: it may import evaluation, trt, onnx, util and models);
- :mod:`exporter.evaluation`: inputs, ONNX Runtime sessions, runners, verify, compare, bench;
- :mod:`exporter.trt`: the TensorRT layer (plugin loading, build, engine loading, running);
- :mod:`exporter.onnx`: export, graph passes, the op contract and schema, fp16, metadata, info;
- :mod:`exporter.util`: atomic file writes and progress lines, used by every layer;
- :mod:`models` (outside this package): backbones, the DCN op, checkpoints, native libraries.

``trt`` may import ``onnx`` (it builds from ONNX); ``onnx`` never imports ``trt`` or evaluation.
Heavy or optional dependencies (onnxruntime, polygraphy, tensorrt) are imported lazily by the
modules that need them, so ``import exporter`` stays cheap.
"""

from models.version import __version__

__all__ = ["__version__"]
