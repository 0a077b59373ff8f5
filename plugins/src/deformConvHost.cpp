// CPU build of the deformable-convolution forward pass: the same tile phases the CUDA kernel runs
// (deformConvMath.h), executed block by block with every thread of a phase finishing before the next
// phase starts, exactly as __syncthreads() orders them on the GPU. It exists to check the GPU code's
// math and tiling on machines without a GPU; it is not meant to be fast.
#include "deformConvMath.h"
#include "deformrt/deformConvHost.h"

#include <algorithm>
#include <vector>

namespace deformrt
{
namespace
{

template <typename T>
void forwardHost(DcnGeometry const& g, void const* x, void const* weight, void const* offset, void const* bias,
    void const* mask, void* y)
{
    DcnTensors<T> const t = bindTensors<T>(g, x, weight, offset, bias, mask, y);
    DcnTileGrid const tiles = tileGrid(g);
    DcnTileShared shared{};
    std::vector<DcnTileAcc> acc(kTileThreads);
    for (int32_t grp = 0; grp < tiles.groups; ++grp)
    {
        for (int32_t mt = 0; mt < tiles.mTiles; ++mt)
        {
            for (int64_t ct = 0; ct < tiles.colTiles; ++ct)
            {
                DcnTileCoord const tc{grp, mt * kTileM, ct * kTileN};
                std::fill(acc.begin(), acc.end(), DcnTileAcc{});
                for (int32_t k0 = 0; k0 < g.kDim; k0 += kTileK)
                {
                    for (int32_t tid = 0; tid < kTileThreads; ++tid)
                    {
                        loadTiles(g, t, tc, k0, tid, shared);
                    }
                    for (int32_t tid = 0; tid < kTileThreads; ++tid)
                    {
                        multiplyTiles(shared, tid, acc[tid]);
                    }
                }
                for (int32_t tid = 0; tid < kTileThreads; ++tid)
                {
                    storeTile(g, t, tc, tid, acc[tid]);
                }
            }
        }
    }
}

} // namespace
} // namespace deformrt

extern "C"
{

char const* deformrt_dcn_validate(DeformrtConvDesc const* desc)
{
    return desc == nullptr ? "no problem description" : deformrt::describeInvalid(*desc);
}

uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* /*desc*/, int32_t /*dtype*/)
{
    return 0;
}

int32_t deformrt_dcn_forward_host(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y)
{
    if (!deformrt::callIsValid(desc, x, weight, offset, bias, mask, y))
    {
        return 1;
    }
    deformrt::DcnGeometry const g = deformrt::makeGeometry(*desc);
    switch (dtype)
    {
    case DEFORMRT_FLOAT32: deformrt::forwardHost<float>(g, x, weight, offset, bias, mask, y); return 0;
    case DEFORMRT_FLOAT16: deformrt::forwardHost<deformrt::HostHalf>(g, x, weight, offset, bias, mask, y); return 0;
    default: return 1;
    }
}

uint16_t deformrt_float_to_half(float value)
{
    return deformrt::floatToHalfBits(value);
}

float deformrt_half_to_float(uint16_t bits)
{
    return deformrt::halfBitsToFloat(bits);
}

} // extern "C"
