// The deformable-convolution CUDA kernels, callable without TensorRT: raw device pointers and a
// stream in, cudaError_t out. Exported with C linkage so ctypes (models/ops/cuda_kernels.py) and the
// TensorRT plugin call the same entry points.
//
// Two kernels: fp16 problems run on the tensor-core implicit-GEMM kernel on sm_80 and newer
// (deformConvTensorCore.h: fp32 blend, one rounding of the sampled operand to fp16, fp32
// accumulation); fp32 problems, and fp16 ones on older GPUs, run on the tiled fp32-math kernel.
//
// Workspace contract: before a forward call, ask deformrt_dcn_workspace_size() (NCHW entry) or
// deformrt_dcn_nhwc_workspace_size() (NHWC entry) for the problem and pass at least that many bytes of
// device memory (256-byte aligned). The NCHW fp16 entry stages x as NHWC there (ignored on GPUs older
// than sm_80); both transpose an OIHW weight to OHWI there on every call, and keep the fp32 partial sums
// there where the launch splits K (a second kernel adds them, in a fixed order). An OHWI weight is read
// in place: nothing is cached between calls, so new weight values (a refit), several streams or execution
// contexts, and CUDA-graph capture all see the weights as they are when the work runs.
#pragma once

#include "deformrt/deformConvDesc.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! Enqueue y = deform_conv2d(x, offset, weight, bias, mask) on ``stream``. All pointers are device
//! pointers to dense NCHW tensors of element type ``dtype`` (DeformrtDType), the weight in
//! desc->weightLayout; bias / mask are ignored (may be NULL) unless desc->hasBias / desc->modulated.
//! Returns cudaErrorInvalidValue for an invalid desc, dtype, missing pointer or too small workspace,
//! else the launch status.
cudaError_t deformrt_dcn_forward(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, void* workspace, uint64_t workspaceBytes,
    cudaStream_t stream);

//! Enqueue the fp16 tensor-core forward pass in channels-last layout: xNhwc [batch, inHeight, inWidth,
//! inChannels], the weight in desc->weightLayout (OHWI read in place, 16-byte vectors when the group's
//! channels are a multiple of 8 and the pointer 16-byte aligned), offset / mask NCHW as in
//! deformConvDesc.h, bias [outChannels], yNhwc [batch, outHeight, outWidth, outChannels]; workspace as
//! deformrt_dcn_nhwc_workspace_size. cudaErrorInvalidValue for an invalid call or too small workspace,
//! cudaErrorNotSupported where deformrt_dcn_nhwc_supported is 0, else the launch status.
cudaError_t deformrt_dcn_forward_nhwc(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    cudaStream_t stream);

#ifdef __cplusplus
} // extern "C"
#endif
