// The CPU build of the deformable-convolution kernels (plugins/src/deformConvHost.cpp): the CUDA
// kernels' math and tiling on host pointers, for tests on machines without a GPU and for the plugin's
// test variant (CMake option DEFORMRT_PLUGIN_HOST_KERNELS).
#pragma once

#include "deformrt/deformConvDesc.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//! Why ``desc`` is not a valid problem (one sentence), or NULL when it is valid.
char const* deformrt_dcn_validate(DeformrtConvDesc const* desc);

//! Bytes of workspace the CPU build needs for ``desc``: none, it stages nothing (the plugin's host
//! variant asks this, as the CUDA plugin asks deformrt_dcn_workspace_size of the CUDA build).
uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* desc, int32_t dtype);

//! CPU forward pass with the GPU kernel's math and tiling; host pointers, layout as in
//! deformConvDesc.h; float16 tensors hold IEEE binary16 bits. Returns 0 on success, 1 for an invalid
//! desc, dtype or missing pointer (nothing is written then).
int32_t deformrt_dcn_forward_host(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y);

//! The host build's float -> binary16 conversion (round to nearest even), for tests.
uint16_t deformrt_float_to_half(float value);

//! The host build's binary16 -> float conversion, for tests.
float deformrt_half_to_float(uint16_t bits);

#ifdef __cplusplus
} // extern "C"
#endif
