// The deformable-convolution problem description shared by the CUDA kernels, their host build and the
// TensorRT plugin. Plain C so that ctypes can mirror it (every field is int64_t: no padding surprises).
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! One DCN forward problem. Tensors are dense, in one element type; x and y are NCHW for the NCHW entry
//! points and NHWC for the *_nhwc ones (deformConvKernel.h, deformConvHost.h):
//!   x      [batch, inChannels, inHeight, inWidth]
//!   weight [outChannels, inChannels / group, kernelH, kernelW]   (weightLayout DEFORMRT_WEIGHT_OIHW)
//!          [outChannels, kernelH, kernelW, inChannels / group]   (weightLayout DEFORMRT_WEIGHT_OHWI)
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
    int64_t weightLayout; //!< DeformrtWeightLayout
} DeformrtConvDesc;

//! How the weight tensor is laid out (the op contract's weight_layout attribute, exporter/onnx/op_contract.py).
//! OHWI is what the fp16 tensor-core kernel reads: for one (output channel, kernel tap) the group's input
//! channels are contiguous, so its B operand comes straight from the tensor in 16-byte runs of 8 channels.
//! An OIHW weight is transposed to OHWI in the workspace on every call (deformrt_dcn_workspace_size counts
//! it); the tiled fp32 kernel reads either layout in place.
enum DeformrtWeightLayout
{
    DEFORMRT_WEIGHT_OIHW = 0, //!< PyTorch's and ONNX's layout
    DEFORMRT_WEIGHT_OHWI = 1  //!< channels-last: [outChannels][kernelH][kernelW][inChannels / group]
};

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

//! Bytes of workspace the NCHW forward call needs for ``desc`` (computed in 64 bits, the same in both
//! builds and on every GPU, so a size asked at build time holds at run time): for fp16 problems the
//! tensor-core kernel takes, x staged as NHWC, an OIHW weight transposed to OHWI, and where K (taps x
//! input channels per group) is at least 2048 the fp32 partial sums of up to 8 K splits, at most 24 MiB
//! (each part rounded up to 256 bytes); 0 otherwise. The size never grows when a problem's batch or
//! spatial sizes shrink.
uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* desc, int32_t dtype);

//! Bytes of workspace the NHWC (channels-last, fp16) forward call needs: the OIHW weight transposed to
//! OHWI (none for an OHWI weight), then the split-K partial sums as for deformrt_dcn_workspace_size.
uint64_t deformrt_dcn_nhwc_workspace_size(DeformrtConvDesc const* desc);

//! 1 when the NHWC forward call runs ``desc``: the tensor-core kernel takes the problem (a tile shape
//! fits), and for the CUDA build the current device is sm_80 or newer; else 0.
int32_t deformrt_dcn_nhwc_supported(DeformrtConvDesc const* desc);

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
    if (d.weightLayout != DEFORMRT_WEIGHT_OIHW && d.weightLayout != DEFORMRT_WEIGHT_OHWI)
    {
        return "weightLayout must be DEFORMRT_WEIGHT_OIHW or DEFORMRT_WEIGHT_OHWI";
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
