// The deformable-convolution problem description shared by the CUDA kernels, their host build and the
// TensorRT plugin. Plain C so that ctypes can mirror it (every field is int64_t: no padding surprises).
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! One DCN forward problem. Tensors are dense NCHW in one element type:
//!   x      [batch, inChannels, inHeight, inWidth]
//!   weight [outChannels, inChannels / group, kernelH, kernelW]
//!   offset [batch, offsetGroup * 2 * kernelH * kernelW, outHeight, outWidth], (dy, dx) per kernel tap
//!   bias   [outChannels]                                             (hasBias = 1)
//!   mask   [batch, offsetGroup * kernelH * kernelW, outHeight, outWidth]   (modulated = 1)
//!   y      [batch, outChannels, outHeight, outWidth]
//! Only the top/left pads move the sampling grid; bottom/right pads only change outHeight/outWidth,
//! which the caller passes already computed.
typedef struct DeformrtConvDesc
{
    int64_t batch, inChannels, inHeight, inWidth;
    int64_t outChannels, kernelH, kernelW;
    int64_t outHeight, outWidth;
    int64_t strideH, strideW, padTop, padLeft, dilationH, dilationW;
    int64_t group, offsetGroup;
    int64_t modulated, hasBias;
} DeformrtConvDesc;

//! Element types of the kernels' tensors.
enum DeformrtDType
{
    DEFORMRT_FLOAT32 = 0,
    DEFORMRT_FLOAT16 = 1
};

// Queries both builds of the kernels answer (libdeformrt_kernels.so and the CPU build,
// libdeformrt_host.so), declared once here; each build's own entry points are in deformConvKernel.h
// and deformConvHost.h.

//! Why ``desc`` is not a valid problem (one sentence), or NULL when it is valid.
char const* deformrt_dcn_validate(DeformrtConvDesc const* desc);

//! Bytes of workspace the build's NCHW forward call needs for ``desc`` (computed in 64 bits): the
//! CUDA build's device staging for fp16 on sm_80+, 0 otherwise; the CPU build stages nothing.
uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* desc, int32_t dtype);

//! Bytes of the packed fp16 weights the tensor-core kernel reads for ``desc`` (0 for an invalid desc).
uint64_t deformrt_dcn_packed_weight_size(DeformrtConvDesc const* desc);

#ifdef __cplusplus
} // extern "C"

namespace deformrt
{

//! Largest value any single size may take: keeps every per-axis coordinate (including an offset of up
//! to kMaxOffset pixels) inside int32 arithmetic.
constexpr int64_t kMaxExtent = int64_t(1) << 30;

//! Why ``d`` cannot be run, as one sentence, or nullptr when it is a valid problem.
inline char const* describeInvalid(DeformrtConvDesc const& d)
{
    int64_t const sizes[] = {d.batch, d.inChannels, d.inHeight, d.inWidth, d.outChannels, d.kernelH, d.kernelW,
        d.outHeight, d.outWidth, d.strideH, d.strideW, d.dilationH, d.dilationW, d.group, d.offsetGroup};
    for (int64_t s : sizes)
    {
        if (s < 1 || s >= kMaxExtent)
        {
            return "every size, stride, dilation and group count must be in [1, 2^30)";
        }
    }
    if (d.padTop < 0 || d.padLeft < 0 || d.padTop >= kMaxExtent || d.padLeft >= kMaxExtent)
    {
        return "pads must be in [0, 2^30)";
    }
    if (d.inChannels % d.group != 0 || d.outChannels % d.group != 0)
    {
        return "group must divide both the input and the output channels";
    }
    if (d.inChannels % d.offsetGroup != 0)
    {
        return "offset_group must divide the input channels";
    }
    if ((d.modulated != 0 && d.modulated != 1) || (d.hasBias != 0 && d.hasBias != 1))
    {
        return "modulated and has_bias must be 0 or 1";
    }
    // The last sampling row/column must stay inside int32 too.
    if ((d.outHeight - 1) * d.strideH + (d.kernelH - 1) * d.dilationH >= kMaxExtent
        || (d.outWidth - 1) * d.strideW + (d.kernelW - 1) * d.dilationW >= kMaxExtent)
    {
        return "the output grid reaches beyond 2^30 input pixels";
    }
    int64_t const taps = d.kernelH * d.kernelW;
    if ((d.inChannels / d.group) * taps >= kMaxExtent || d.offsetGroup * 2 * taps >= kMaxExtent)
    {
        return "channels times kernel taps must stay below 2^30";
    }
    return nullptr;
}

} // namespace deformrt
#endif
