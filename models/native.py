"""Where deformrt's native libraries are (built from ``plugins/``).

This is the lowest layer, so ``models.ops.cuda_kernels`` (the DCN op's CUDA backend) and the
exporter's TensorRT layer both find libraries here without ``models`` importing ``exporter``.
Building them is :mod:`exporter.trt.plugin_build`.

Three libraries come out of ``plugins/CMakeLists.txt``:

- the TensorRT plugin, as two files from the same sources: ``libdeformrt_plugin.so`` for
  ``IPluginRegistry.load_library``, ``trtexec --dynamicPlugins`` and ``setPluginsToSerialize``
  (TensorRT registers what its ``getCreators`` returns), and ``libdeformrt_plugin_autoload.so`` for
  ``polygraphy --plugins``, ``trtexec --staticPlugins`` and ``ctypes.CDLL`` (it registers itself when
  loaded);
- the CUDA kernels alone (``libdeformrt_kernels.so``), used by ``models.ops.cuda_kernels``;
- the CPU build of the kernels' math (``libdeformrt_host.so``), used by the tests.

A library is looked up as: the explicit path given, else its environment variable
(``DEFORMRT_PLUGIN_LIB`` / ``DEFORMRT_KERNEL_LIB``), else ``plugins/build/``. A missing library
is one :class:`DeformRTError` line naming where it looked and how to build it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from models.errors import DeformRTError

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
DEFAULT_BUILD_DIR = PLUGINS_DIR / "build"

PLUGIN_LIBRARY = "libdeformrt_plugin.so"
AUTOLOAD_PLUGIN_LIBRARY = "libdeformrt_plugin_autoload.so"
KERNEL_LIBRARY = "libdeformrt_kernels.so"
HOST_LIBRARY = "libdeformrt_host.so"
PLUGIN_ENV = "DEFORMRT_PLUGIN_LIB"
KERNEL_ENV = "DEFORMRT_KERNEL_LIB"
# 0: the kernels' launcher keeps a compute capability 9.0 GPU on mma.sync instead of its wgmma kernel (read at
# every launch; deformConvTensorCore.cu planLaunch)
WGMMA_ENV = "DEFORMRT_TC_WGMMA"

BUILD_HINT = "build it with `deformrt build-plugin` (needs cmake, nvcc and, for the plugin, TensorRT headers)"

PathLike = Union[str, os.PathLike]


def _find(filename: str, env: str, explicit: Optional[PathLike], what: str) -> Path:
    if explicit is not None:
        candidate, source = Path(explicit), "the given path"
    elif os.environ.get(env):
        candidate, source = Path(os.environ[env]), f"${env}"
    else:
        candidate, source = DEFAULT_BUILD_DIR / filename, "the default build directory"
    if candidate.is_dir():
        candidate = candidate / filename
    if candidate.is_file():
        return candidate.resolve()
    raise DeformRTError(f"{what} not found: looked for {candidate} ({source}); {BUILD_HINT}, "
                        f"or point ${env} at an existing {filename}")


def find_plugin_library(explicit: Optional[PathLike] = None) -> Path:
    """Path of the TensorRT plugin library: ``explicit`` (file or directory), else ``$DEFORMRT_PLUGIN_LIB``,
    else ``plugins/build/``. Raises DeformRTError when it is not there."""
    return _find(PLUGIN_LIBRARY, PLUGIN_ENV, explicit, "deformrt TensorRT plugin library")


def find_kernel_library(explicit: Optional[PathLike] = None) -> Path:
    """Path of the CUDA kernel library: ``explicit`` (file or directory), else ``$DEFORMRT_KERNEL_LIB``,
    else ``plugins/build/``. Raises DeformRTError when it is not there."""
    return _find(KERNEL_LIBRARY, KERNEL_ENV, explicit, "deformrt CUDA kernel library")
