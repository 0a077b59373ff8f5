"""Run a loaded engine: bind inputs and outputs by name, enqueue on a stream, return arrays.

:meth:`TrtSession.run` goes from numpy to numpy through the CUDA driver (:mod:`exporter.trt.cuda`),
so a device with only ``numpy`` and ``tensorrt`` (a Jetson) can run and time engines.
:meth:`TrtSession.run_device` takes and returns PyTorch CUDA tensors (``deformrt bench``); torch is
imported only there.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from exporter.trt import cuda
from exporter.trt.engine import LoadedEngine
from exporter.trt.env import import_tensorrt
from exporter.trt.profiles import check_in_profile
from models.errors import DeformRTError

# TensorRT DataType member name -> element type, for numpy and for torch.
_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
                 "INT64": np.int64, "BOOL": np.bool_}
_TORCH_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                      "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def _member_name(trt_dtype) -> str:
    return getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]


def numpy_dtype(trt_dtype) -> np.dtype:
    """The numpy dtype for a ``tensorrt.DataType`` (matched by member name)."""
    name = _member_name(trt_dtype)
    if name not in _NUMPY_DTYPES:
        raise DeformRTError(f"engine tensor type {name} is not supported by deformrt's runner")
    return np.dtype(_NUMPY_DTYPES[name])


def torch_dtype(trt_dtype):
    """The torch dtype for a ``tensorrt.DataType`` (matched by member name)."""
    import torch

    name = _member_name(trt_dtype)
    if name not in _TORCH_DTYPE_NAMES:
        raise DeformRTError(f"engine tensor type {name} is not supported by deformrt's runner")
    return getattr(torch, _TORCH_DTYPE_NAMES[name])


def is_data_dependent(shape) -> bool:
    """True when an output's shape (after all input shapes are set) still has a -1: its size is
    known only once the engine ran (TensorRT then reports it to an IOutputAllocator)."""
    return any(int(d) < 0 for d in shape)


def output_allocator(trt, device_buffer):
    """A ``trt.IOutputAllocator`` that gives each data-dependent output a device buffer from
    ``device_buffer(name, nbytes)`` (reused and grown as needed) and records the shape TensorRT
    reports in ``.shapes``."""

    class _Allocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return device_buffer(tensor_name, max(int(size), 1)).address

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream=None):
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return _Allocator()


class TrtSession:
    """One execution context of a loaded engine; every TensorRT call's result is checked."""

    def __init__(self, loaded: LoadedEngine):
        trt = import_tensorrt()
        self.engine = loaded.engine
        self.profiles = {p.name: p for p in loaded.meta.profiles}
        self._keep = loaded  # the runtime and logger must outlive the engine
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise DeformRTError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._trt_dtypes = {n: self.engine.get_tensor_dtype(n) for n in names}
        self.dtypes = {n: numpy_dtype(t) for n, t in self._trt_dtypes.items()}
        self._buffers: dict[str, cuda.DeviceBuffer] = {}
        self._driver_stream: Optional[cuda.Stream] = None
        self._torch_stream = None
        self._staged: dict[str, np.ndarray] = {}  # inputs of the last enqueue, alive until their copy ran

    # -- binding ---------------------------------------------------------------------------------

    def _set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if name in self.profiles:
            check_in_profile(self.profiles[name], shape)
        if not self.context.set_input_shape(name, shape):
            raise DeformRTError(f"TensorRT rejected input shape {'x'.join(map(str, shape))} for {name!r}")

    def _set_address(self, name: str, address: int) -> None:
        if not self.context.set_tensor_address(name, address):
            raise DeformRTError(f"TensorRT rejected the buffer address for {name!r}")

    def _output_shape(self, name: str) -> tuple[int, ...]:
        shape = tuple(self.context.get_tensor_shape(name))
        if is_data_dependent(shape):
            raise DeformRTError(f"output {name!r} has no concrete shape ({shape}); are all input shapes set?")
        return shape

    def _data_dependent_outputs(self) -> list[str]:
        """Outputs whose size is known only after the run (e.g. NonMaxSuppression's selected
        indices as a graph output; a detector file's own outputs are fixed-size and never are)."""
        return [n for n in self.output_names if is_data_dependent(tuple(self.context.get_tensor_shape(n)))]

    def _output_allocator(self):
        """The context's :func:`output_allocator` (made on first use)."""
        if getattr(self, "_allocator", None) is None:
            self._allocator = output_allocator(import_tensorrt(), self._device_buffer)
        return self._allocator

    def _execute(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise DeformRTError("TensorRT failed to run the engine (see its log above)")

    # -- numpy in, numpy out (no torch) ---------------------------------------------------------

    @property
    def driver_stream(self) -> cuda.Stream:
        """The CUDA stream :meth:`run` enqueues on (made on first use)."""
        if self._driver_stream is None:
            cuda.use_device(cuda.current_device())
            self._driver_stream = cuda.Stream()
        return self._driver_stream

    def _device_buffer(self, name: str, nbytes: int) -> cuda.DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._buffers[name] = cuda.DeviceBuffer(max(nbytes, 256))  # never a null address
        return buf

    def enqueue(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy ``feed`` in, run, and copy the outputs out, all enqueued on :attr:`driver_stream`;
        the returned arrays (and ``feed``) are valid once that stream is synchronized."""
        stream = self.driver_stream
        staged = {}
        for name in self.input_names:
            if name not in feed:
                raise DeformRTError(f"no value for engine input {name!r}")
            array = np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
            self._set_input_shape(name, array.shape)
            buf = self._device_buffer(name, array.nbytes)
            buf.upload(array, stream)
            self._set_address(name, buf.address)
            staged[name] = array
        dependent = self._data_dependent_outputs()
        outputs = {}
        for name in self.output_names:
            if name in dependent:
                if not self.context.set_output_allocator(name, self._output_allocator()):
                    raise DeformRTError(f"TensorRT rejected the output allocator for {name!r}")
                continue
            out = np.empty(self._output_shape(name), dtype=self.dtypes[name])
            self._set_address(name, self._device_buffer(name, out.nbytes).address)
            outputs[name] = out
        self._execute(stream.handle)
        if dependent:  # their shapes are reported during the run: wait for it, then copy them out
            stream.synchronize()
            for name in dependent:
                shape = self._output_allocator().shapes.get(name)
                if shape is None:
                    raise DeformRTError(f"TensorRT reported no shape for the data-dependent output {name!r}")
                outputs[name] = np.empty(shape, dtype=self.dtypes[name])
        for name, out in outputs.items():
            self._buffers[name].download(out, stream)
        self._staged = staged
        return {name: outputs[name] for name in self.output_names}

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous inference from and to numpy arrays."""
        outputs = self.enqueue(feed)
        self.driver_stream.synchronize()
        return outputs

    def time_ms(self, feed: Mapping[str, np.ndarray], warmup: int = 10, iterations: int = 50) -> list[float]:
        """Milliseconds per inference (host-to-device copy, run, device-to-host copy), timed with CUDA
        events on the session's stream after ``warmup`` untimed runs."""
        for _ in range(warmup):
            self.enqueue(feed)
        times = []
        start, end = cuda.Event(), cuda.Event()
        for _ in range(iterations):
            start.record(self.driver_stream)
            self.enqueue(feed)
            end.record(self.driver_stream)
            times.append(end.elapsed_ms(start))
        self.driver_stream.synchronize()
        return times

    # -- PyTorch CUDA tensors -----------------------------------------------------------------------

    @property
    def stream(self):
        """The ``torch.cuda.Stream`` :meth:`run_device` enqueues on (made on first use)."""
        if self._torch_stream is None:
            import torch

            self._torch_stream = torch.cuda.Stream()
        return self._torch_stream

    def run_device(self, feed: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:  # noqa: F821
        """Enqueue one inference on :attr:`stream` with CUDA tensors; outputs are CUDA tensors,
        valid once the stream is synchronized (callers time it with CUDA events on the stream)."""
        import torch

        stream = self.stream
        stream.wait_stream(torch.cuda.current_stream())
        for name in self.input_names:
            tensor = feed[name]
            expected = torch_dtype(self._trt_dtypes[name])
            if tensor.dtype != expected or not tensor.is_contiguous() or not tensor.is_cuda:
                raise DeformRTError(f"input {name!r} must be a contiguous CUDA {expected} tensor")
            self._set_input_shape(name, tuple(tensor.shape))
            self._set_address(name, tensor.data_ptr())
            tensor.record_stream(stream)  # the caller's allocator must not reuse it before TensorRT reads it
        outputs = {}
        with torch.cuda.stream(stream):  # outputs belong to the stream that writes them
            for name in self.output_names:
                out = torch.empty(self._output_shape(name), dtype=torch_dtype(self._trt_dtypes[name]), device="cuda")
                self._set_address(name, out.data_ptr())
                outputs[name] = out
        self._execute(stream.cuda_stream)
        return outputs
