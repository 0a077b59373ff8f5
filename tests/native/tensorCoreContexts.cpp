// GPU check of the tensor-core kernel across CUDA contexts (tests/test_plugin_gpu.py): the large tile
// shape needs more than 48 KB of dynamic shared memory, an opt-in that belongs to the current context.
// The same problem runs in the primary context, again after cudaDeviceReset (a new primary context), and
// in a context made with the driver API; every run must succeed and give the same bits.
// Usage: tensorCoreContexts (DEFORMRT_TC_TILE_SHAPE=0 in the environment forces the large tile).
#include "deformrt/deformConvKernel.h"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace
{
uint16_t toHalf(float f) // round to nearest even, normal range only (the test's values)
{
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t const mag = x & 0x7fffffffu;
    if (mag < 0x38800000u)
    {
        return static_cast<uint16_t>(sign);
    }
    uint32_t result = (mag - 0x38000000u) >> 13;
    uint32_t const rem = mag & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (result & 1u)))
    {
        ++result;
    }
    return static_cast<uint16_t>(sign | result);
}

//! One forward pass in the current context; false (printed) on any CUDA error.
bool runOnce(DeformrtConvDesc const& desc, std::vector<std::vector<uint16_t>> const& inputs, size_t outCount,
    std::vector<uint16_t>& out, char const* where)
{
    std::vector<void*> device(inputs.size() + 1, nullptr);
    cudaError_t status = cudaSuccess;
    for (size_t i = 0; i < inputs.size() && status == cudaSuccess; ++i)
    {
        status = cudaMalloc(&device[i], inputs[i].size() * 2);
        if (status == cudaSuccess)
        {
            status = cudaMemcpy(device[i], inputs[i].data(), inputs[i].size() * 2, cudaMemcpyHostToDevice);
        }
    }
    if (status == cudaSuccess)
    {
        status = cudaMalloc(&device.back(), outCount * 2);
    }
    if (status == cudaSuccess)
    {
        // x NHWC, OHWI weight, offset, mask: no workspace (K = 576: too short to split).
        status = deformrt_dcn_forward_nhwc(
            &desc, device[0], device[1], device[2], nullptr, device[3], device.back(), nullptr, 0, nullptr);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceSynchronize();
    }
    out.assign(outCount, 0);
    if (status == cudaSuccess)
    {
        status = cudaMemcpy(out.data(), device.back(), outCount * 2, cudaMemcpyDeviceToHost);
    }
    for (void* p : device)
    {
        cudaFree(p);
    }
    if (status != cudaSuccess)
    {
        std::printf("FAIL: %s: %s\n", where, cudaGetErrorString(status));
        return false;
    }
    return true;
}
} // namespace

int main()
{
    // 64 channels, 3x3 taps: the 128 x 256 tile (DEFORMRT_TC_TILE_SHAPE=0) needs 84 KB of shared memory.
    DeformrtConvDesc desc{};
    desc.batch = 1;
    desc.inChannels = 64;
    desc.inHeight = desc.outHeight = 20;
    desc.inWidth = desc.outWidth = 24;
    desc.outChannels = 128;
    desc.kernelH = desc.kernelW = 3;
    desc.strideH = desc.strideW = desc.padTop = desc.padLeft = desc.dilationH = desc.dilationW = 1;
    desc.group = desc.offsetGroup = 1;
    desc.modulated = 1;
    desc.weightLayout = DEFORMRT_WEIGHT_OHWI;
    size_t const plane = size_t(desc.outHeight) * desc.outWidth;
    std::vector<size_t> const sizes{plane * 64, 128 * 9 * 64, 18 * plane, 9 * plane};
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<std::vector<uint16_t>> inputs;
    for (size_t i = 0; i < sizes.size(); ++i)
    {
        std::vector<uint16_t> v(sizes[i]);
        for (uint16_t& h : v)
        {
            h = toHalf(normal(rng) * 0.5f + (i == 3 ? 1.0f : 0.0f)); // the mask (input 3) around 1
        }
        inputs.push_back(v);
    }
    size_t const outCount = plane * 128;
    if (deformrt_dcn_nhwc_supported(&desc) != 1)
    {
        std::printf("SKIP: the tensor-core kernel does not run here (sm_80 or newer needed)\n");
        return 0;
    }
    std::vector<uint16_t> first, again, driverContext;
    int failures = 0;
    failures += !runOnce(desc, inputs, outCount, first, "primary context");
    cudaDeviceReset();
    failures += !runOnce(desc, inputs, outCount, again, "after cudaDeviceReset");
    CUcontext context = nullptr;
    CUdevice device = 0;
    if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&device, 0) != CUDA_SUCCESS
        || cuCtxCreate(&context, nullptr, 0, device) != CUDA_SUCCESS)
    {
        std::printf("FAIL: cuCtxCreate\n");
        return 1;
    }
    failures += !runOnce(desc, inputs, outCount, driverContext, "a driver-API context");
    cuCtxDestroy(context);
    if (failures == 0 && (again != first || driverContext != first))
    {
        std::printf("FAIL: the contexts disagree\n");
        ++failures;
    }
    std::printf("%s\n", failures == 0 ? "ok" : "failed");
    return failures;
}
