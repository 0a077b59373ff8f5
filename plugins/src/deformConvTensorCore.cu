// CUDA build of the fp16 tensor-core deformable convolution (the math and tile phases live in
// deformConvTensorCore.h; deformConvHost.cpp runs the same phases on the CPU). sm_80 and newer: the
// kernel body is empty for older architectures, and the launcher never picks it there.
#include "deformConvTensorCore.h"
#include "deformConvTensorCoreLaunch.h"
#include "deformrt/deformConvKernel.h"

#include <cuda_fp16.h>

#include <cstdlib>

namespace deformrt
{
namespace tc
{
namespace
{

//! D += A * B on the tensor cores (fragment layouts: deformConvTensorCore.h).
__device__ __forceinline__ void mmaSync(FragC& c, FragA const& a, FragB const& b)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c.v[0]), "+f"(c.v[1]), "+f"(c.v[2]), "+f"(c.v[3])
        : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
#endif
}

//! Grid: x = pixel tiles (whole batch), y = output-channel tiles, z = convolution groups.
template <class Shape>
__global__ void __launch_bounds__(kThreads) deformConvTensorCore(TcGeometry t, TcTensors p)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(16) unsigned char sharedBytesStorage[];
    SharedView const s = sharedView(sharedBytesStorage, sharedLayout(Shape::BM, Shape::BN, t.g.taps, t.stepK));
    TcTile const tile{int32_t(blockIdx.z), int64_t(blockIdx.x) * Shape::BM, int32_t(blockIdx.y) * Shape::BN};
    int32_t const tid = int32_t(threadIdx.x);
    WarpPlace const w = warpPlace<Shape>(tid);
    int32_t const taps = t.g.taps;
    Accumulators<Shape> acc;
DEFORMRT_UNROLL
    for (int32_t mi = 0; mi < Shape::MT; ++mi)
    {
DEFORMRT_UNROLL
        for (int32_t ni = 0; ni < Shape::NT; ++ni)
        {
            acc.c[mi][ni] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
        }
    }
    prologue<Shape>(t, p, tile, chunkOffsetGroup(t, tile.grp, 0), tid, s);
    __syncthreads();
    gatherA<Shape>(t, p, tile, 0, 0, 0, tid, s);
    loadB<Shape>(t, p, tile, 0, 0, tid, s);
    __syncthreads();
    for (int32_t step = 0; step < t.steps; ++step)
    {
        int32_t const next = step + 1;
        if (next < t.steps)
        {
            int32_t const chunk = next / taps;
            int32_t const og = chunkOffsetGroup(t, tile.grp, chunk);
            if (og != chunkOffsetGroup(t, tile.grp, step / taps)) // uniform across the CTA
            {
                prologue<Shape>(t, p, tile, og, tid, s);
                __syncthreads();
            }
            // The next step's gather overlaps this step's MMAs (other buffer).
            gatherA<Shape>(t, p, tile, chunk, next - chunk * taps, next & 1, tid, s);
            loadB<Shape>(t, p, tile, next, next & 1, tid, s);
        }
        for (int32_t k16 = 0; k16 < t.stepK / 16; ++k16)
        {
            FragA a[Shape::MT];
            FragB b[Shape::NT];
            loadFragments<Shape>(s, step & 1, w, k16, a, b);
DEFORMRT_UNROLL
            for (int32_t mi = 0; mi < Shape::MT; ++mi)
            {
DEFORMRT_UNROLL
                for (int32_t ni = 0; ni < Shape::NT; ++ni)
                {
                    mmaSync(acc.c[mi][ni], a[mi], b[ni]);
                }
            }
        }
        __syncthreads();
    }
    epilogue<Shape>(t, p, tile, tid, acc);
#endif
}

//! ohwi[e] = oihw[ohwiSourceIndex(e)]: the weight in the layout the kernel reads.
__global__ void oihwToOhwiKernel(DcnGeometry g, uint16_t const* oihw, uint16_t* ohwi, int64_t total)
{
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x)
    {
        ohwi[e] = oihw[ohwiSourceIndex(g, e)];
    }
}

constexpr int32_t kTransposeTile = 32;
constexpr int32_t kTransposeRows = 8;

//! NCHW -> NHWC of fp16 [n, c, plane] through a shared 32 x 32 tile (coalesced on both sides).
//! Grid: x = plane tiles, y = channel tiles, z = images.
__global__ void nchwToNhwcKernel(uint16_t const* src, uint16_t* dst, int32_t c, int64_t plane)
{
    __shared__ uint16_t tile[kTransposeTile][kTransposeTile + 1];
    int64_t const n = blockIdx.z;
    int64_t const i0 = int64_t(blockIdx.x) * kTransposeTile;
    int32_t const c0 = int32_t(blockIdx.y) * kTransposeTile;
    for (int32_t j = int32_t(threadIdx.y); j < kTransposeTile; j += kTransposeRows)
    {
        int32_t const ch = c0 + j;
        int64_t const i = i0 + threadIdx.x;
        if (ch < c && i < plane)
        {
            tile[j][threadIdx.x] = src[(n * c + ch) * plane + i];
        }
    }
    __syncthreads();
    for (int32_t j = int32_t(threadIdx.y); j < kTransposeTile; j += kTransposeRows)
    {
        int64_t const i = i0 + j;
        int32_t const ch = c0 + int32_t(threadIdx.x);
        if (ch < c && i < plane)
        {
            dst[(n * plane + i) * c + ch] = tile[threadIdx.x][j];
        }
    }
}

struct DeviceLimits
{
    int32_t major;
    int32_t smCount;
    int64_t sharedOptIn;
};

cudaError_t currentDeviceLimits(DeviceLimits& limits)
{
    int device = 0;
    int major = 0;
    int sms = 0;
    int optIn = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&optIn, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    limits = DeviceLimits{major, sms, optIn};
    return status;
}

//! The tile shape the current device runs ``t`` with, or -1 (not sm_80+, no shape fits, no device).
int32_t planTileShape(TcGeometry const& t)
{
    DeviceLimits limits{};
    if (!tensorCoreApplies(t) || currentDeviceLimits(limits) != cudaSuccess || limits.major < 8)
    {
        return -1;
    }
    int64_t const limit = limits.sharedOptIn < kMaxSharedBytes ? limits.sharedOptIn : kMaxSharedBytes;
    // DEFORMRT_TC_TILE_SHAPE=0|1|2 forces a tile shape (sanitizer runs and benchmarks cover every shape).
    if (char const* forced = std::getenv("DEFORMRT_TC_TILE_SHAPE"))
    {
        int32_t const shape = int32_t(std::strtol(forced, nullptr, 10));
        if (forced[0] >= '0' && forced[0] <= '9' && shape < kTileShapes && sharedBytes(t, shape) <= limit)
        {
            return shape;
        }
    }
    return chooseTileShape(t, limits.smCount, limit);
}

//! Dynamic shared memory above 48 KB needs an opt-in per kernel, and the opt-in belongs to the CUDA
//! context that is current: a new context (another thread's, a driver-API one, or the primary context
//! after cudaDeviceReset) starts without it. Nothing is cached: the attribute is set before every launch
//! that needs it (a host-side driver call, no stream work, allowed during graph capture).
template <class Shape>
cudaError_t optInSharedMemory(int64_t bytes)
{
    return cudaFuncSetAttribute(
        deformConvTensorCore<Shape>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

template <class Shape>
cudaError_t launchShape(TcGeometry const& t, TcTensors const& p, cudaStream_t stream)
{
    int64_t const bytes = sharedLayout(Shape::BM, Shape::BN, t.g.taps, t.stepK).bytes;
    if (bytes > 48 * 1024)
    {
        cudaError_t const status = optInSharedMemory<Shape>(bytes);
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    dim3 const grid(static_cast<unsigned>((t.g.cols + Shape::BM - 1) / Shape::BM),
        static_cast<unsigned>((t.g.cOutPerGroup + Shape::BN - 1) / Shape::BN), static_cast<unsigned>(t.g.group));
    deformConvTensorCore<Shape><<<grid, kThreads, static_cast<size_t>(bytes), stream>>>(t, p);
    return cudaGetLastError();
}

cudaError_t launch(TcGeometry const& t, TcTensors p, int32_t shape, cudaStream_t stream)
{
    p.vectorGather = vectorGatherApplies(t, p.x);
    p.vectorWeight = vectorWeightApplies(t, p.weight);
    switch (shape)
    {
    case 0: return launchShape<TileLarge>(t, p, stream);
    case 1: return launchShape<TileMedium>(t, p, stream);
    case 2: return launchShape<TileSmall>(t, p, stream);
    default: return cudaErrorInvalidValue;
    }
}

//! The weight as OHWI: ``weight`` itself, or its transpose enqueued into ``scratch`` (weightTransposeBytes).
cudaError_t ohwiWeight(DcnGeometry const& g, void const* weight, void* scratch, cudaStream_t stream,
    uint16_t const*& ohwi)
{
    if (g.weightOhwi)
    {
        ohwi = static_cast<uint16_t const*>(weight);
        return cudaSuccess;
    }
    int64_t const total = weightElements(g);
    int64_t const blocks = (total + 255) / 256;
    oihwToOhwiKernel<<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), 256, 0, stream>>>(
        g, static_cast<uint16_t const*>(weight), static_cast<uint16_t*>(scratch), total);
    ohwi = static_cast<uint16_t const*>(scratch);
    return cudaGetLastError();
}

} // namespace

bool runsOnCurrentDevice(DcnGeometry const& g)
{
    return planTileShape(makeTcGeometry(g)) >= 0;
}

cudaError_t forwardNchw(DcnGeometry const& g, void const* x, void const* weight, void const* offset,
    void const* bias, void const* mask, void* y, void* workspace, cudaStream_t stream)
{
    TcGeometry const t = makeTcGeometry(g);
    int32_t const shape = planTileShape(t);
    if (shape < 0 || workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    auto* const xNhwc = static_cast<uint16_t*>(workspace);
    void* const weightScratch = static_cast<unsigned char*>(workspace) + inputStagingBytes(g);
    int64_t const plane = int64_t(g.h) * g.w;
    dim3 const grid(static_cast<unsigned>((plane + kTransposeTile - 1) / kTransposeTile),
        static_cast<unsigned>((g.c + kTransposeTile - 1) / kTransposeTile), static_cast<unsigned>(g.n));
    if (grid.y > 65535 || grid.z > 65535)
    {
        return cudaErrorInvalidConfiguration;
    }
    nchwToNhwcKernel<<<grid, dim3(kTransposeTile, kTransposeRows), 0, stream>>>(
        static_cast<uint16_t const*>(x), xNhwc, g.c, plane);
    cudaError_t status = cudaGetLastError();
    uint16_t const* ohwi = nullptr;
    if (status == cudaSuccess)
    {
        status = ohwiWeight(g, weight, weightScratch, stream, ohwi);
    }
    if (status != cudaSuccess)
    {
        return status;
    }
    TcTensors const p{xNhwc, ohwi, static_cast<uint16_t const*>(offset),
        g.hasBias ? static_cast<uint16_t const*>(bias) : nullptr,
        g.modulated ? static_cast<uint16_t const*>(mask) : nullptr, static_cast<uint16_t*>(y), false, false, false};
    return launch(t, p, shape, stream);
}

} // namespace tc
} // namespace deformrt

extern "C" uint64_t deformrt_dcn_nhwc_workspace_size(DeformrtConvDesc const* desc)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tc::weightTransposeBytes(deformrt::makeGeometry(*desc));
}

extern "C" int32_t deformrt_dcn_nhwc_supported(DeformrtConvDesc const* desc)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tc::runsOnCurrentDevice(deformrt::makeGeometry(*desc)) ? 1 : 0;
}

extern "C" cudaError_t deformrt_dcn_forward_nhwc(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    cudaStream_t stream)
{
    if (!deformrt::callIsValid(desc, xNhwc, weight, offset, bias, mask, yNhwc)
        || workspaceBytes < deformrt_dcn_nhwc_workspace_size(desc) || (workspaceBytes > 0 && workspace == nullptr))
    {
        return cudaErrorInvalidValue;
    }
    deformrt::DcnGeometry const g = deformrt::makeGeometry(*desc);
    deformrt::tc::TcGeometry const t = deformrt::tc::makeTcGeometry(g);
    int32_t const shape = deformrt::tc::planTileShape(t);
    if (shape < 0)
    {
        return cudaErrorNotSupported;
    }
    uint16_t const* ohwi = nullptr;
    cudaError_t const status = deformrt::tc::ohwiWeight(g, weight, workspace, stream, ohwi);
    if (status != cudaSuccess)
    {
        return status;
    }
    deformrt::tc::TcTensors const p{static_cast<uint16_t const*>(xNhwc), ohwi, static_cast<uint16_t const*>(offset),
        g.hasBias ? static_cast<uint16_t const*>(bias) : nullptr,
        g.modulated ? static_cast<uint16_t const*>(mask) : nullptr, static_cast<uint16_t*>(yNhwc), true, false, false};
    return deformrt::tc::launch(t, p, shape, stream);
}
