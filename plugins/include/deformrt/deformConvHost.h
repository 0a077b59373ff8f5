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

//! A launch of the tensor-core kernel (plugins/src/deformConvTensorCore.h, TcPlan): ``shape`` 0 (128 pixels x
//! 256 output channels per CTA at most), 1 (256 x 128) or 2 (64 x 64) of the mma.sync kernel, 3 (128 x 256)
//! or 4 (128 x 128) of the Hopper wgmma kernel (deformConvWgmma.h); ``mExtent`` pixels per CTA (a multiple
//! of 32, of 64 for the wgmma shapes, at most bm); ``splitK`` K splits of ``stepsPerSplit`` 32-deep steps;
//! ``nTiles`` output-channel tiles per group (each gathers the sampled input again); ``mTiles`` pixel tiles.
//! The rest describes the plan on the GPU it was made for: CTAs, wave efficiency (useful work over the SMs'
//! share of the busiest SM's), the planner's modelled clocks of the busiest SM, shared-memory bytes and the
//! shape's tile sizes.
typedef struct DeformrtTcPlan
{
    int32_t shape, mExtent, splitK, stepsPerSplit, nTiles, bm, bn, reserved;
    int64_t mTiles, ctas, sharedBytes;
    double waveEfficiency, modelClocks;
} DeformrtTcPlan;

//! The tensor-core kernel on the CPU with NHWC fp16 input and output (the plugin's kHWC8 path): xNhwc
//! [n, h, w, c], the weight in desc->weightLayout, offset / mask NCHW, yNhwc [n, ho, wo, cOut];
//! workspace as deformrt_dcn_forward_host, sized by deformrt_dcn_nhwc_workspace_size. ``tileShape`` 0, 1, 2
//! (the plan for that shape; 3, 4: the wgmma kernel's, emulated) or -1: the launch the GPU launcher makes on
//! an H100 SXM (132 SMs) with the sm_90a build (the wgmma kernel where it takes the problem). Returns 0,
//! or 1 for an invalid call, too small a workspace or a problem the kernel does not take.
int32_t deformrt_dcn_forward_nhwc_host(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    int32_t tileShape);

//! The same with an explicit plan (its shape, mExtent, splitK, stepsPerSplit, nTiles and mTiles, as
//! deformrt_dcn_tc_plan gives them); 1 when the plan does not fit the problem.
int32_t deformrt_dcn_forward_nhwc_host_plan(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    DeformrtTcPlan const* plan);

//! Dynamic shared-memory bytes of the tensor-core kernel's tile shape ``tileShape`` (0..4) for
//! ``desc``, or -1 for an invalid desc or shape (compile checks compare it with each GPU's limit).
int64_t deformrt_dcn_tc_shared_bytes(DeformrtConvDesc const* desc, int32_t tileShape);

//! The launch the GPU launcher makes for ``desc`` on a GPU with ``smCount`` SMs, ``sharedOptInBytes`` of
//! shared memory per block and ``l2Bytes`` of L2, into ``plan``; ``tileShape`` >= 0, ``mExtent`` > 0 and
//! ``splitK`` > 0 force those parts (as DEFORMRT_TC_TILE_SHAPE, DEFORMRT_TC_M_EXTENT and DEFORMRT_TC_SPLIT_K
//! do for the CUDA build). Returns 0, or 1 when the tensor-core kernel does not take the problem there.
int32_t deformrt_dcn_tc_plan(DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan);

//! The launch the GPU launcher makes for ``desc`` with the wgmma kernel (a compute capability 9.0 GPU and an
//! sm_90a build), arguments as deformrt_dcn_tc_plan (``tileShape`` 3, 4 or -1). Returns 0, or 1 when the
//! wgmma kernel does not take the problem (channel counts off multiples of 8, shared memory).
int32_t deformrt_dcn_tc_plan_wgmma(DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan);

//! The launch the GPU launcher makes for ``desc`` on a compute capability 9.0 GPU with the sm_90a build (the
//! default CMake build): the wgmma kernel's plan where that kernel takes the problem, else the mma.sync
//! kernel's (chooseLaunchPlan, the planner of the CUDA launcher); arguments and result as deformrt_dcn_tc_plan.
int32_t deformrt_dcn_tc_plan_sm90a(DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan);

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
