"""deformrt exporter: ONNX export, graph passes, TensorRT engines, comparison and benchmarks.

Heavy or optional dependencies (onnxruntime, polygraphy, tensorrt) are imported lazily by the
modules that need them, so ``import exporter`` stays cheap.
"""

from models.version import __version__

__all__ = ["__version__"]
