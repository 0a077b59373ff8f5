"""Run a loaded engine: bind inputs and outputs by name, enqueue on a stream, return arrays."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from exporter.trt.engine import LoadedEngine
from exporter.trt.env import import_tensorrt
from exporter.trt.profiles import check_in_profile
from models.errors import DeformRTError

_TORCH_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                      "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def torch_dtype(trt_dtype):
    """The torch dtype for a ``tensorrt.DataType`` (matched by member name)."""
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    if name not in _TORCH_DTYPE_NAMES:
        raise DeformRTError(f"engine tensor type {name} is not supported by deformrt's runner")
    return getattr(torch, _TORCH_DTYPE_NAMES[name])


class TrtSession:
    """Runs an engine with ``execute_async_v3`` on a torch CUDA stream, buffers as torch tensors."""

    def __init__(self, loaded: LoadedEngine):
        import torch

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
        self.dtypes = {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()

    def run_device(self, feed: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:  # noqa: F821
        """Enqueue one inference on :attr:`stream` with CUDA tensors; outputs are CUDA tensors,
        valid once the stream is synchronized (callers time it with CUDA events on the stream)."""
        import torch

        self.stream.wait_stream(torch.cuda.current_stream())
        for name in self.input_names:
            tensor = feed[name]
            if name in self.profiles:
                check_in_profile(self.profiles[name], tuple(tensor.shape))
            if tensor.dtype != self.dtypes[name] or not tensor.is_contiguous() or not tensor.is_cuda:
                raise DeformRTError(f"input {name!r} must be a contiguous CUDA {self.dtypes[name]} tensor")
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise DeformRTError("TensorRT failed to run the engine (see its log above)")
        return outputs

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous inference from and to numpy arrays."""
        import torch

        device_feed = {n: torch.from_numpy(np.ascontiguousarray(feed[n])).to("cuda", self.dtypes[n])
                       for n in self.input_names}
        outputs = self.run_device(device_feed)
        self.stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outputs.items()}

