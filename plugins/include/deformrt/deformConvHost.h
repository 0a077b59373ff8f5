// The CPU build of the deformable-convolution kernels (plugins/src/deformConvHost.cpp): the CUDA
// kernels' math and tiling on host pointers, for tests on machines without a GPU and for the plugin's
// test variant (CMake option DEFORMRT_PLUGIN_HOST_KERNELS).
#pragma once

#include "deformrt/deformConvDesc.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! CPU forward pass with the GPU kernels' math, tiling and workspace contract (deformConvKernel.h):
//! host pointers, layouts as in deformConvDesc.h; float16 tensors hold IEEE binary16 bits. ``workspace``
//! NULL (and ``workspaceBytes`` 0): the CPU build allocates its staging itself; otherwise it stages in
//! ``workspace`` and refuses, as the CUDA build does, fewer than deformrt_dcn_workspace_size bytes.
//! Returns 0 on success, 1 for an invalid desc, dtype, missing pointer or too small workspace (nothing is
//! written then).
int32_t deformrt_dcn_forward_host(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, void* workspace, uint64_t workspaceBytes);

//! The tiled (reference / sm_75) kernel alone, for both dtypes and both weight layouts; no workspace.
int32_t deformrt_dcn_forward_tiled_host(DeformrtConvDesc const* desc, int32_t dtype, void const* x,
    void const* weight, void const* offset, void const* bias, void const* mask, void* y);

//! The tensor-core kernel on the CPU with NHWC fp16 input and output (the plugin's kHWC8 path): xNhwc
//! [n, h, w, c], the weight in desc->weightLayout, offset / mask NCHW, yNhwc [n, ho, wo, cOut];
//! workspace as deformrt_dcn_forward_host, sized by deformrt_dcn_nhwc_workspace_size. ``tileShape`` 0
//! (128 x 128), 1 (64 x 128), 2 (64 x 64) or -1 (as the GPU launcher picks). Returns 0, or 1 for an
//! invalid call, too small a workspace or a problem the kernel does not take.
int32_t deformrt_dcn_forward_nhwc_host(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    int32_t tileShape);

//! Dynamic shared-memory bytes of the tensor-core kernel's tile shape ``tileShape`` (0..2) for
//! ``desc``, or -1 for an invalid desc or shape (compile checks compare it with each GPU's limit).
int64_t deformrt_dcn_tc_shared_bytes(DeformrtConvDesc const* desc, int32_t tileShape);

//! The tile shape the GPU launcher picks for ``desc`` on a GPU with ``smCount`` SMs and the sm_80+
//! shared-memory cap, or -1 when the tensor-core kernel does not take the problem.
int32_t deformrt_dcn_tc_tile_shape(DeformrtConvDesc const* desc, int32_t smCount);

//! One warp's mma.sync m16n8k16 (f16 x f16 + f32) through the CPU emulation: per lane, ``a`` holds 4
//! .f16x2 registers, ``b`` 2, ``c`` and ``d`` 4 floats (lane-major arrays of 128, 64, 128, 128).
void deformrt_mma_m16n8k16_emulate(uint32_t const* a, uint32_t const* b, float const* c, float* d);

//! The host build's float -> binary16 conversion (round to nearest even), for tests.
uint16_t deformrt_float_to_half(float value);

//! The host build's binary16 -> float conversion, for tests.
float deformrt_half_to_float(uint16_t bits);

#ifdef __cplusplus
} // extern "C"
#endif
