// The deformable-convolution CUDA kernels, callable without TensorRT: raw device pointers and a
// stream in, cudaError_t out. Exported with C linkage so ctypes (models/ops/cuda_kernels.py) and the
// TensorRT plugin call the same entry points.
//
// Two kernels: fp16 problems run on the tensor-core implicit-GEMM kernel on sm_80 and newer
// (deformConvTensorCore.h: fp32 blend, one rounding of the sampled operand to fp16, fp32
// accumulation); fp32 problems, and fp16 ones on older GPUs, run on the tiled fp32-math kernel.
//
// Workspace contract: before a forward call, ask deformrt_dcn_workspace_size() for the problem and
// pass at least that many bytes of device memory (256-byte aligned). fp32 needs none (0 bytes). The
// NCHW fp16 entry stages x as NHWC and the packed weights there (ignored on GPUs older than sm_80);
// the NHWC entry needs no workspace: its caller packs the weights once (deformrt_dcn_pack_weights).
#pragma once

#include "deformrt/deformConvDesc.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! Enqueue y = deform_conv2d(x, offset, weight, bias, mask) on ``stream``. All pointers are device
//! pointers to dense NCHW tensors of element type ``dtype`` (DeformrtDType); bias / mask are ignored
//! (may be NULL) unless desc->hasBias / desc->modulated. Returns cudaErrorInvalidValue for an invalid
//! desc, dtype, missing pointer or too small workspace, else the launch status.
cudaError_t deformrt_dcn_forward(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, void* workspace, uint64_t workspaceBytes,
    cudaStream_t stream);

//! Enqueue the permutation of fp16 weights [outChannels, inChannels / group, kernelH, kernelW] into
//! the tensor-core kernel's K order (``packed``: deformrt_dcn_packed_weight_size bytes, 16-byte
//! aligned). Done once per weight tensor, not per forward call.
cudaError_t deformrt_dcn_pack_weights(DeformrtConvDesc const* desc, void const* weight, void* packed,
    cudaStream_t stream);

//! 1 when deformrt_dcn_forward_nhwc runs ``desc`` on the current device (sm_80+ and a tile shape
//! fits), else 0.
int32_t deformrt_dcn_nhwc_supported(DeformrtConvDesc const* desc);

//! Enqueue the fp16 tensor-core forward pass in channels-last layout: xNhwc [batch, inHeight,
//! inWidth, inChannels], packedWeight from deformrt_dcn_pack_weights, offset / mask NCHW as in
//! deformConvDesc.h, bias [outChannels], yNhwc [batch, outHeight, outWidth, outChannels]. No workspace.
//! cudaErrorInvalidValue for an invalid call, cudaErrorNotSupported where deformrt_dcn_nhwc_supported
//! is 0, else the launch status.
cudaError_t deformrt_dcn_forward_nhwc(DeformrtConvDesc const* desc, void const* xNhwc, void const* packedWeight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, cudaStream_t stream);

#ifdef __cplusplus
} // extern "C"
#endif
