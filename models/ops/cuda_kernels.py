"""deformrt's own CUDA kernels as the ``"deformrt"`` backend of :func:`models.ops.deform_conv2d`.

The kernels live in ``libdeformrt_kernels.so`` (built from ``plugins/``, found by
:func:`models.native.find_kernel_library`) and are called through ctypes with the tensors'
device pointers on PyTorch's current stream. Importing this module never fails: without the library
or without CUDA :func:`is_available` is False, and ``select_backend`` moves on.

float32 and float16 run on the kernels (fp16 storage, fp32 math); other dtypes (float64, bfloat16)
fall back to the portable implementation.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Optional

import torch
from torch import Tensor

from models.errors import DeformRTError

# Mirrors DeformrtConvDesc in plugins/include/deformrt/deformConvDesc.h (every field int64_t).
DESC_FIELDS = ("batch", "inChannels", "inHeight", "inWidth", "outChannels", "kernelH", "kernelW",
               "outHeight", "outWidth", "strideH", "strideW", "padTop", "padLeft", "dilationH", "dilationW",
               "group", "offsetGroup", "modulated", "hasBias", "weightLayout")
DTYPES = {torch.float32: 0, torch.float16: 1}  # DeformrtDType
WEIGHT_LAYOUTS = {"OIHW": 0, "OHWI": 1}  # DeformrtWeightLayout


class ConvDesc(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in DESC_FIELDS]


class TcPlan(ctypes.Structure):
    """DeformrtTcPlan (include/deformrt/deformConvHost.h): a launch of the tensor-core kernel."""
    _fields_ = [(name, ctypes.c_int32) for name in ("shape", "mExtent", "splitK", "stepsPerSplit", "nTiles", "bm",
                                                     "bn", "reserved")] + \
        [(name, ctypes.c_int64) for name in ("mTiles", "ctas", "sharedBytes")] + \
        [(name, ctypes.c_double) for name in ("waveEfficiency", "modelClocks")]

    WGMMA_SHAPES = (3, 4)  # kWgmmaShapeN256 and kWgmmaShapeN128 (deformConvTensorCore.h)

    @property
    def kernel(self) -> str:
        """The kernel the plan launches: "wgmma" (Hopper, sm_90a) or "mma.sync"."""
        return "wgmma" if self.shape in self.WGMMA_SHAPES else "mma.sync"


def make_desc(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
              stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
              weight_layout: str = "OIHW") -> ConvDesc:
    """The kernels' problem description for already shape-checked torchvision-style arguments; ``input`` is
    NCHW, ``weight`` [C_out, C_in/group, kH, kW] (``weight_layout`` "OIHW") or [C_out, kH, kW, C_in/group]
    ("OHWI")."""
    n, c, h, w = input.shape
    if weight_layout == "OHWI":
        c_out, kh, kw, c_per_group = weight.shape
    else:
        c_out, c_per_group, kh, kw = weight.shape
    ho, wo = offset.shape[2], offset.shape[3]
    return ConvDesc(n, c, h, w, c_out, kh, kw, ho, wo, stride[0], stride[1], padding[0], padding[1],
                    dilation[0], dilation[1], c // c_per_group, offset.shape[1] // (2 * kh * kw),
                    int(mask is not None), int(bias is not None), WEIGHT_LAYOUTS[weight_layout])


def declare_c_api(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the kernel library's C prototypes (include/deformrt/deformConvKernel.h) on ``lib``."""
    lib.deformrt_dcn_forward.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32] + [ctypes.c_void_p] * 7 + [
        ctypes.c_uint64, ctypes.c_void_p]
    lib.deformrt_dcn_forward.restype = ctypes.c_int
    _declare_queries(lib)
    # fp16 tensor-core kernel (sm_80+): NHWC (channels-last) input and output, the weight read as it is.
    lib.deformrt_dcn_forward_nhwc.argtypes = [ctypes.POINTER(ConvDesc)] + [ctypes.c_void_p] * 7 + [
        ctypes.c_uint64, ctypes.c_void_p]
    lib.deformrt_dcn_forward_nhwc.restype = ctypes.c_int
    return lib


def _declare_queries(lib: ctypes.CDLL) -> None:
    """The queries both builds answer (include/deformrt/deformConvDesc.h)."""
    lib.deformrt_dcn_validate.argtypes = [ctypes.POINTER(ConvDesc)]
    lib.deformrt_dcn_validate.restype = ctypes.c_char_p
    lib.deformrt_dcn_workspace_size.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32]
    lib.deformrt_dcn_workspace_size.restype = ctypes.c_uint64
    lib.deformrt_dcn_nhwc_workspace_size.argtypes = [ctypes.POINTER(ConvDesc)]
    lib.deformrt_dcn_nhwc_workspace_size.restype = ctypes.c_uint64
    lib.deformrt_dcn_nhwc_supported.argtypes = [ctypes.POINTER(ConvDesc)]
    lib.deformrt_dcn_nhwc_supported.restype = ctypes.c_int32


def declare_host_api(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the CPU build's C prototypes (include/deformrt/deformConvHost.h) on ``lib``."""
    _declare_queries(lib)
    lib.deformrt_dcn_forward_host.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32] + [ctypes.c_void_p] * 7 + [
        ctypes.c_uint64]
    lib.deformrt_dcn_forward_host.restype = ctypes.c_int32
    lib.deformrt_dcn_forward_tiled_host.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32] + [ctypes.c_void_p] * 6
    lib.deformrt_dcn_forward_tiled_host.restype = ctypes.c_int32
    lib.deformrt_dcn_forward_nhwc_host.argtypes = [ctypes.POINTER(ConvDesc)] + [ctypes.c_void_p] * 7 + [
        ctypes.c_uint64, ctypes.c_int32]
    lib.deformrt_dcn_forward_nhwc_host.restype = ctypes.c_int32
    lib.deformrt_dcn_tc_shared_bytes.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32]
    lib.deformrt_dcn_tc_shared_bytes.restype = ctypes.c_int64
    lib.deformrt_dcn_tc_plan.argtypes = [ctypes.POINTER(ConvDesc), ctypes.c_int32, ctypes.c_int64, ctypes.c_int64,
                                         ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(TcPlan)]
    lib.deformrt_dcn_tc_plan.restype = ctypes.c_int32
    lib.deformrt_dcn_tc_plan_wgmma.argtypes = lib.deformrt_dcn_tc_plan.argtypes
    lib.deformrt_dcn_tc_plan_wgmma.restype = ctypes.c_int32
    lib.deformrt_dcn_tc_plan_sm90a.argtypes = lib.deformrt_dcn_tc_plan.argtypes
    lib.deformrt_dcn_tc_plan_sm90a.restype = ctypes.c_int32
    lib.deformrt_dcn_forward_nhwc_host_plan.argtypes = [ctypes.POINTER(ConvDesc)] + [ctypes.c_void_p] * 7 + [
        ctypes.c_uint64, ctypes.POINTER(TcPlan)]
    lib.deformrt_dcn_forward_nhwc_host_plan.restype = ctypes.c_int32
    lib.deformrt_mma_m16n8k16_emulate.argtypes = [ctypes.c_void_p] * 4
    lib.deformrt_mma_m16n8k16_emulate.restype = None
    lib.deformrt_float_to_half.argtypes = [ctypes.c_float]
    lib.deformrt_float_to_half.restype = ctypes.c_uint16
    lib.deformrt_half_to_float.argtypes = [ctypes.c_uint16]
    lib.deformrt_half_to_float.restype = ctypes.c_float
    return lib


@functools.lru_cache(maxsize=1)
def _library() -> Optional[ctypes.CDLL]:
    """The loaded kernel library, or None when it is not built (cached; ``_library.cache_clear()`` retries)."""
    from models.native import find_kernel_library

    try:
        lib = ctypes.CDLL(str(find_kernel_library()))
    except (DeformRTError, OSError):
        return None
    return declare_c_api(lib)


def is_available() -> bool:
    """True when CUDA is usable and the kernel library is built."""
    return torch.cuda.is_available() and _library() is not None


def deform_conv2d_cuda(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
                       stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    """Run the op on deformrt's kernels (arguments as torchvision's, pairs expanded, shapes checked;
    ``input.dtype`` one of :data:`DTYPES`)."""
    lib = _library()
    if lib is None:
        raise DeformRTError("deformrt CUDA kernel library is not available; build it with `deformrt build-plugin`")
    dtype = input.dtype

    def dense(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.to(device=input.device, dtype=dtype).contiguous()

    x, off, wt, b, m = dense(input), dense(offset), dense(weight), dense(bias), dense(mask)
    desc = make_desc(x, off, wt, b, m, stride, padding, dilation)
    y = torch.empty((desc.batch, desc.outChannels, desc.outHeight, desc.outWidth), dtype=dtype, device=input.device)
    if y.numel() == 0:  # before validation: the kernels take only non-empty problems
        return y
    problem = lib.deformrt_dcn_validate(ctypes.byref(desc))
    if problem is not None:
        raise DeformRTError(f"deform_conv2d: {problem.decode()}")
    with torch.cuda.device(input.device):
        ws_bytes = lib.deformrt_dcn_workspace_size(ctypes.byref(desc), DTYPES[dtype])
        workspace = torch.empty(ws_bytes, dtype=torch.uint8, device=input.device) if ws_bytes else None
        stream = torch.cuda.current_stream(input.device).cuda_stream

        def ptr(t: Optional[Tensor]) -> Optional[int]:
            return None if t is None else t.data_ptr()

        status = lib.deformrt_dcn_forward(ctypes.byref(desc), DTYPES[dtype], ptr(x), ptr(wt), ptr(off), ptr(b),
                                          ptr(m), ptr(y), ptr(workspace), ws_bytes, stream)
    if status != 0:
        raise RuntimeError(f"deformrt DCN kernel launch failed with cudaError {status}")
    return y
