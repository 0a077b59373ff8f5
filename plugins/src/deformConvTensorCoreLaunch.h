// Internal interface between the NCHW entry point (deformConvKernel.cu) and the fp16 tensor-core
// kernel (deformConvTensorCore.cu). Not part of the C API.
#pragma once

#include "deformConvMath.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

namespace deformrt
{
namespace tc
{

//! Whether the tensor-core kernel runs ``g`` on the current device (sm_80+, a tile shape that fits).
bool runsOnCurrentDevice(DcnGeometry const& g);

//! The NCHW fp16 forward pass on tensor cores: stages x as NHWC and an OIHW weight as OHWI in
//! ``workspace`` (nchwWorkspaceBytes, deformConvTensorCore.h), then runs the kernel with an NCHW epilogue.
cudaError_t forwardNchw(DcnGeometry const& g, void const* x, void const* weight, void const* offset,
    void const* bias, void const* mask, void* y, void* workspace, cudaStream_t stream);

} // namespace tc
} // namespace deformrt
