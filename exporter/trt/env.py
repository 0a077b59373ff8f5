"""TensorRT itself: importing it with a clear error, its version, the process's logger, the GPU.

``tensorrt`` is imported only when a function here is called.
"""

from __future__ import annotations

from exporter.trt import cuda
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


def tensorrt_version(version: str) -> tuple[int, int]:
    """(major, minor) from ``tensorrt.__version__`` (``"10.3.0.30"`` -> (10, 3))."""
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise DeformRTError(f"cannot read the TensorRT version {version!r}") from None


def tensorrt_major(version: str) -> int:
    """Major version from ``tensorrt.__version__`` (``"10.3.0.30"`` -> 10)."""
    return tensorrt_version(version)[0]


def current_env(trt) -> RuntimeEnv:
    """TensorRT version and the current CUDA device (through the driver: no torch needed)."""
    reason = cuda.no_device_reason()
    if reason is not None:
        raise DeformRTError(f"TensorRT needs an NVIDIA GPU: {reason}")
    name, capability = cuda.device_name_and_capability(cuda.current_device())
    return RuntimeEnv(str(trt.__version__), name, capability)


class _ProcessLogger:
    """TensorRT keeps the first logger it is given for the whole process (and
    ``init_libnvinfer_plugins`` keeps only a raw pointer to it), so deformrt makes one, keeps it
    alive here, and raises its verbosity in place instead of making another."""

    logger = None
    plugins_initialised = False


def logger(trt, verbose: bool = False):
    """The process's one ``trt.Logger`` (WARNING; VERBOSE from the first call that asks for it)."""
    if _ProcessLogger.logger is None:
        _ProcessLogger.logger = trt.Logger(trt.Logger.WARNING)
    if verbose:
        _ProcessLogger.logger.min_severity = trt.Logger.VERBOSE
    return _ProcessLogger.logger


def init_trt_plugins(trt, log) -> None:
    """Register TensorRT's own plugins once per process (a second call would register them again)."""
    if not _ProcessLogger.plugins_initialised:
        if not trt.init_libnvinfer_plugins(log, ""):
            raise DeformRTError("TensorRT could not register its own plugins (libnvinfer_plugin missing?)")
        _ProcessLogger.plugins_initialised = True
