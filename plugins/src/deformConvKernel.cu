// CUDA build of the deformable-convolution forward pass (the math lives in deformConvMath.h).
#include "deformConvMath.h"
#include "deformConvTensorCore.h"
#include "deformConvTensorCoreLaunch.h"
#include "deformrt/deformConvKernel.h"

#include <cuda_fp16.h>

namespace deformrt
{
namespace
{

//! Grid: x = column tiles (the whole batch's output pixels), y = output-channel tiles, z = groups.
template <typename T>
__global__ void __launch_bounds__(kTileThreads) deformConvTiled(DcnGeometry g, DcnTensors<T> t)
{
    __shared__ DcnTileShared shared;
    DcnTileCoord const tc{int32_t(blockIdx.z), int32_t(blockIdx.y) * kTileM, int64_t(blockIdx.x) * kTileN};
    int32_t const tid = int32_t(threadIdx.x);
    DcnTileAcc acc{};
    for (int32_t k0 = 0; k0 < g.kDim; k0 += kTileK)
    {
        loadTiles(g, t, tc, k0, tid, shared);
        __syncthreads();
        multiplyTiles(shared, tid, acc);
        __syncthreads();
    }
    storeTile(g, t, tc, tid, acc);
}

template <typename T>
cudaError_t launch(DcnGeometry const& g, void const* x, void const* weight, void const* offset, void const* bias,
    void const* mask, void* y, cudaStream_t stream)
{
    DcnTensors<T> const t = bindTensors<T>(g, x, weight, offset, bias, mask, y);
    DcnTileGrid const tiles = tileGrid(g);
    if (tiles.colTiles > 0x7fffffff || tiles.mTiles > 65535 || tiles.groups > 65535)
    {
        return cudaErrorInvalidConfiguration;
    }
    dim3 const grid(static_cast<unsigned>(tiles.colTiles), static_cast<unsigned>(tiles.mTiles),
        static_cast<unsigned>(tiles.groups));
    deformConvTiled<T><<<grid, kTileThreads, 0, stream>>>(g, t);
    return cudaGetLastError();
}

} // namespace
} // namespace deformrt

extern "C" char const* deformrt_dcn_validate(DeformrtConvDesc const* desc)
{
    return desc == nullptr ? "no problem description" : deformrt::describeInvalid(*desc);
}

extern "C" uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* desc, int32_t dtype)
{
    // Independent of the GPU, so that a size queried at build time holds on any device.
    if (dtype != DEFORMRT_FLOAT16 || desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tc::nchwWorkspaceBytes(deformrt::makeGeometry(*desc));
}

extern "C" cudaError_t deformrt_dcn_forward(DeformrtConvDesc const* desc, int32_t dtype, void const* x,
    void const* weight, void const* offset, void const* bias, void const* mask, void* y, void* workspace,
    uint64_t workspaceBytes, cudaStream_t stream)
{
    if (!deformrt::callIsValid(desc, x, weight, offset, bias, mask, y)
        || workspaceBytes < deformrt_dcn_workspace_size(desc, dtype) || (workspaceBytes > 0 && workspace == nullptr))
    {
        return cudaErrorInvalidValue;
    }
    deformrt::DcnGeometry const g = deformrt::makeGeometry(*desc);
    switch (dtype)
    {
    case DEFORMRT_FLOAT32: return deformrt::launch<float>(g, x, weight, offset, bias, mask, y, stream);
    case DEFORMRT_FLOAT16:
        if (deformrt::tc::nchwWorkspaceBytes(g) > 0 && deformrt::tc::runsOnCurrentDevice(g))
        {
            return deformrt::tc::forwardNchw(g, x, weight, offset, bias, mask, y, workspace, stream);
        }
        return deformrt::launch<__half>(g, x, weight, offset, bias, mask, y, stream);
    default: return cudaErrorInvalidValue;
    }
}
