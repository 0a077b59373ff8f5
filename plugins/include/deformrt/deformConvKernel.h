// The deformable-convolution CUDA kernels, callable without TensorRT: raw device pointers and a
// stream in, cudaError_t out. Exported with C linkage so ctypes (models/ops/cuda_kernels.py) and the
// TensorRT plugin call the same entry points.
//
// Workspace contract: before a forward call, ask deformrt_dcn_workspace_size() for the problem and
// pass at least that many bytes of device memory (256-byte aligned). The current kernel samples the
// deformable columns on the fly inside its GEMM tiles and needs no workspace (0 bytes); the query is
// part of the interface so that kernels that stage data (e.g. precomputed sampling coefficients)
// can replace it without changing any caller.
#pragma once

#include "deformrt/deformConvDesc.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! Why ``desc`` is not a valid problem (one sentence), or NULL when it is valid.
char const* deformrt_dcn_validate(DeformrtConvDesc const* desc);

//! Bytes of device workspace deformrt_dcn_forward() needs for ``desc`` (computed in 64 bits).
uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* desc, int32_t dtype);

//! Enqueue y = deform_conv2d(x, offset, weight, bias, mask) on ``stream``. All pointers are device
//! pointers to dense NCHW tensors of element type ``dtype`` (DeformrtDType); bias / mask are ignored
//! (may be NULL) unless desc->hasBias / desc->modulated. Returns cudaErrorInvalidValue for an invalid
//! desc, dtype, missing pointer or too small workspace, else the launch status.
cudaError_t deformrt_dcn_forward(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, void* workspace, uint64_t workspaceBytes,
    cudaStream_t stream);

#ifdef __cplusplus
} // extern "C"
#endif
