"""The few CUDA calls the TensorRT layer needs, through the driver library (``libcuda.so.1``) and ctypes.

Why not torch or cuda-python: on a Jetson the device has JetPack's TensorRT and numpy, and usually
neither PyTorch nor pip. The driver library ships with every NVIDIA driver (JetPack included), so
loading an engine, running it from numpy and timing it work with ``numpy`` and ``tensorrt`` alone.

Everything runs in the device's primary context, the one the CUDA runtime (TensorRT, PyTorch) uses,
so buffers and streams made here are valid for TensorRT and interoperate with PyTorch's.
Each failing call is a :class:`DeformRTError` naming the call and CUDA's reason.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Optional

import numpy as np

from models.errors import DeformRTError

_DRIVER_NAMES = ("libcuda.so.1", "libcuda.so")
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}


@functools.lru_cache(maxsize=1)
def _driver() -> ctypes.CDLL:
    errors = []
    for name in _DRIVER_NAMES:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise DeformRTError(f"no NVIDIA driver here (cannot load libcuda.so.1: {errors[0]}); TensorRT needs a GPU")
    _check(lib, lib.cuInit(0), "cuInit")
    return lib


def _check(lib: ctypes.CDLL, status: int, call: str) -> None:
    if status == 0:
        return
    text = ctypes.c_char_p()
    lib.cuGetErrorString(status, ctypes.byref(text))
    reason = text.value.decode() if text.value else f"CUresult {status}"
    raise DeformRTError(f"CUDA {call} failed: {reason}")


def _call(name: str, *args) -> None:
    lib = _driver()
    _check(lib, getattr(lib, name)(*args), name)


def device_count() -> int:
    """Number of CUDA devices; 0 without a driver or without a device."""
    try:
        lib = _driver()
    except DeformRTError:
        return 0
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    return count.value if status == 0 else 0


@functools.lru_cache(maxsize=None)
def _primary_context(ordinal: int) -> ctypes.c_void_p:
    device, context = ctypes.c_int(), ctypes.c_void_p()
    _call("cuDeviceGet", ctypes.byref(device), ordinal)
    _call("cuDevicePrimaryCtxRetain", ctypes.byref(context), device)
    return context


def use_device(ordinal: int = 0) -> None:
    """Make device ``ordinal``'s primary context current on this thread (what the runtime API does)."""
    if ordinal >= device_count():
        raise DeformRTError(f"no CUDA device {ordinal} here ({device_count()} visible)")
    _call("cuCtxSetCurrent", _primary_context(ordinal))


def current_device() -> int:
    """The device of this thread's current context, or 0 when none is current."""
    device = ctypes.c_int(0)
    status = _driver().cuCtxGetDevice(ctypes.byref(device))
    return device.value if status == 0 else 0


def device_name_and_capability(ordinal: int) -> tuple[str, str]:
    """(``"NVIDIA H100 80GB HBM3"``, ``"9.0"``) for device ``ordinal``."""
    device, name = ctypes.c_int(), ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    _call("cuDeviceGet", ctypes.byref(device), ordinal)
    _call("cuDeviceGetName", name, ctypes.c_int(len(name)), device)
    _call("cuDeviceGetAttribute", ctypes.byref(major), _ATTR_CC_MAJOR, device)
    _call("cuDeviceGetAttribute", ctypes.byref(minor), _ATTR_CC_MINOR, device)
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


class DeviceBuffer:
    """``nbytes`` of device memory, freed by :meth:`free` or when collected."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = ctypes.c_uint64(0)
        if self.nbytes:
            _call("cuMemAlloc_v2", ctypes.byref(self.ptr), ctypes.c_size_t(self.nbytes))

    @property
    def address(self) -> int:
        return int(self.ptr.value)

    def upload(self, array: np.ndarray, stream: "Stream") -> None:
        """Copy a C-contiguous ``array`` in, ordered on ``stream`` (the array must live until it runs)."""
        if array.nbytes > self.nbytes:
            raise DeformRTError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer")
        if array.nbytes:
            _call("cuMemcpyHtoDAsync_v2", self.ptr, array.ctypes.data_as(ctypes.c_void_p),
                  ctypes.c_size_t(array.nbytes), stream.handle)

    def download(self, array: np.ndarray, stream: "Stream") -> None:
        """Copy into C-contiguous ``array``, ordered on ``stream``; valid once the stream is synchronized."""
        if array.nbytes:
            _call("cuMemcpyDtoHAsync_v2", array.ctypes.data_as(ctypes.c_void_p), self.ptr,
                  ctypes.c_size_t(array.nbytes), stream.handle)

    def free(self) -> None:
        if self.ptr.value:
            _driver().cuMemFree_v2(self.ptr)
            self.ptr = ctypes.c_uint64(0)

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass


class Stream:
    """A CUDA stream (``handle`` is the ``cudaStream_t`` TensorRT's ``execute_async_v3`` takes)."""

    def __init__(self):
        self._stream = ctypes.c_void_p()
        _call("cuStreamCreate", ctypes.byref(self._stream), 0)

    @property
    def handle(self) -> int:
        return int(self._stream.value or 0)

    def synchronize(self) -> None:
        _call("cuStreamSynchronize", self._stream)

    def __del__(self):
        try:
            if self._stream.value:
                _driver().cuStreamDestroy_v2(self._stream)
        except Exception:
            pass


class Event:
    """A CUDA event for timing work on a stream."""

    def __init__(self):
        self._event = ctypes.c_void_p()
        _call("cuEventCreate", ctypes.byref(self._event), 0)

    def record(self, stream: Stream) -> None:
        _call("cuEventRecord", self._event, stream._stream)

    def elapsed_ms(self, start: "Event") -> float:
        """Milliseconds from ``start`` to this event (waits for this event)."""
        _call("cuEventSynchronize", self._event)
        ms = ctypes.c_float()
        _call("cuEventElapsedTime", ctypes.byref(ms), start._event, self._event)
        return float(ms.value)

    def __del__(self):
        try:
            if self._event.value:
                _driver().cuEventDestroy_v2(self._event)
        except Exception:
            pass


def no_device_reason() -> Optional[str]:
    """Why no CUDA device can be used here, or None."""
    try:
        _driver()
    except DeformRTError as exc:
        return str(exc)
    return None if device_count() else "no CUDA GPU"
