"""TensorRT itself: importing it with a clear error, its version, the process's logger, the GPU.

``tensorrt`` is imported only when a function here is called.
"""

from __future__ import annotations

from exporter.trt.sidecar import RuntimeEnv
from models.errors import DeformRTError

INSTALL_HINT = ("install TensorRT 10.x or 11.x matching your CUDA (`pip install tensorrt` with NVIDIA's index, "
                "or JetPack on Jetson)")


def import_tensorrt():
    """The ``tensorrt`` module, or DeformRTError saying it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DeformRTError(f"TensorRT is not available here ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def tensorrt_major(version: str) -> int:
    """Major version from ``tensorrt.__version__`` (``"10.3.0.30"`` -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise DeformRTError(f"cannot read the TensorRT version {version!r}") from None


def current_env(trt) -> RuntimeEnv:
    """TensorRT version and the current CUDA device (through torch)."""
    import torch

    if not torch.cuda.is_available():
        raise DeformRTError("TensorRT needs an NVIDIA GPU, and PyTorch sees no CUDA device here")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return RuntimeEnv(str(trt.__version__), torch.cuda.get_device_name(index), f"{major}.{minor}")


def _logger(trt, verbose: bool):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)

