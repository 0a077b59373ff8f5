// CUDA build of the fp16 tensor-core deformable convolution (the math and tile phases live in
// deformConvTensorCore.h; deformConvHost.cpp runs the same phases on the CPU). sm_80 and newer: the
// kernel body is empty for older architectures, and the launcher never picks it there.
#include "deformConvTensorCore.h"
#include "deformConvTensorCoreDevice.cuh"
#include "deformConvTensorCoreLaunch.h"
#include "deformConvWgmma.h"
#include "deformrt/deformConvKernel.h"

#include <cuda_fp16.h>

#include <cstdlib>

namespace deformrt
{
namespace tc
{
namespace
{

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800

//! D += A * B on the tensor cores (fragment layouts: deformConvTensorCore.h).
__device__ __forceinline__ void mmaSync(FragC& c, FragA const& a, FragB const& b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
        : "+f"(c.v[0]), "+f"(c.v[1]), "+f"(c.v[2]), "+f"(c.v[3])
        : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}

//! Four 8 x 8 matrices of 16-bit elements from shared memory; lane 8j + r gives row r of matrix j.
__device__ __forceinline__ void ldmatrixX4(uint32_t (&d)[4], uint32_t sharedAddress)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(sharedAddress));
}

//! Per-lane shared addresses of the ldmatrix.x4 loads of one warp (loop-invariant): the A fragment of m16
//! tile 0 and the B fragments of n8 tiles 0-1, for K slice 0 of buffer 0. Tile mi / pair ni2 / buffer st are
//! at fixed distances (the vector permutation depends only on a row's low bits, and every tile row starts
//! 64-byte aligned); K slice 1 is at address ^ 32 (its vectors are 2 and 3: bit 1 of the vector index).
struct LaneAddresses
{
    uint32_t a, b;
};

template <class Shape>
__device__ __forceinline__ LaneAddresses laneAddresses(SharedView const& s, WarpPlace const& w)
{
    int32_t const j = w.lane >> 3; // the matrix this lane addresses a row of
    int32_t const r = w.lane & 7;
    // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
    // B ([n][k]): matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
    return LaneAddresses{sharedAddressOf(s.a) + tileByte(w.warpRow0 + (j & 1) * 8 + r, j >> 1),
        sharedAddressOf(s.b) + tileByte(w.warpCol0 + (j >> 1) * 8 + r, j & 1)};
}

//! The address of K slice ``kk`` given that of slice 0.
__device__ __forceinline__ uint32_t sliceAddress(uint32_t slice0, int32_t kk)
{
    return kk == 0 ? slice0 : slice0 ^ 32u;
}

//! The MMAs of phase ``phase`` of buffer ``stage`` for one warp: K slice phase / PartsPerSlice, its
//! columns' part phase % PartsPerSlice, row block by row block (none from the first block without gathered
//! rows: one warp-uniform branch per block); ``a`` holds the slice's A fragments from its first part on.
template <class Shape>
__device__ __forceinline__ void mmaPhase(LaneAddresses const& l, SharedView const& s, TcTile const& tile,
    WarpPlace const& w, int32_t stage, int32_t phase, FragA (&a)[Shape::MT], Accumulators<Shape>& acc)
{
    int32_t const kk = phase / Shape::PartsPerSlice;
    int32_t const part = phase % Shape::PartsPerSlice;
    constexpr int32_t kPairs = Shape::NT / 2 / Shape::PartsPerSlice; // ldmatrix.x4 B loads of a part
    uint32_t d[kPairs][4];
DEFORMRT_UNROLL
    for (int32_t block = 0; block < Shape::RowBlocks; ++block)
    {
        if (!rowBlockActive(tile, w, block)) // block 0: the warp has no gathered rows
        {
            return;
        }
        if (part == 0) // the slice's A fragments of the block, kept for its other parts
        {
DEFORMRT_UNROLL
            for (int32_t mi = block * Shape::MTPerBlock; mi < (block + 1) * Shape::MTPerBlock; ++mi)
            {
                ldmatrixX4(a[mi].r, sliceAddress(l.a + stage * (Shape::BM * kRowBytes), kk) + mi * 16 * kRowBytes);
            }
        }
        if (block == 0) // the part's B fragments, for every block
        {
DEFORMRT_UNROLL
            for (int32_t j = 0; j < kPairs; ++j)
            {
                ldmatrixX4(d[j],
                    sliceAddress(l.b + stage * (Shape::BN * kRowBytes), kk) + (part * kPairs + j) * 16 * kRowBytes);
            }
        }
DEFORMRT_UNROLL
        for (int32_t j = 0; j < kPairs; ++j)
        {
            int32_t const ni2 = part * kPairs + j;
            FragB const b0{{d[j][0], d[j][1]}};
            FragB const b1{{d[j][2], d[j][3]}};
DEFORMRT_UNROLL
            for (int32_t mi = block * Shape::MTPerBlock; mi < (block + 1) * Shape::MTPerBlock; ++mi)
            {
                mmaSync(acc.c[mi][2 * ni2], a[mi], b0);
                mmaSync(acc.c[mi][2 * ni2 + 1], a[mi], b1);
            }
        }
    }
}

//! Steps [first, last) of one offset group: prologue, the first step's gather, then the pipelined loop.
template <class Shape, bool Vector>
__device__ __forceinline__ void runSegment(TcGeometry const& t, TcTensors const& p, TcTile const& tile,
    int32_t first, int32_t last, int32_t tid, WarpPlace const& w, SharedView const& s, LaneAddresses const& l,
    Accumulators<Shape>& acc)
{
    int32_t const taps = t.g.taps;
    int32_t chunk = first / taps;
    int32_t tap = first - chunk * taps;
    prologue<Shape>(t, p, tile, chunkOffsetGroup(t, tile.grp, chunk), tid, s);
    __syncthreads();
    Staged<Shape> staged;
    FragA a[Shape::MT];
    BCopies const bc = bCopies<Shape>(t, tile, tid);
    loadB<Shape, Vector>(t, p, tile, bc, chunk, tap, 0, tid, s);
    cpAsyncCommit();
DEFORMRT_UNROLL
    for (int32_t phase = 0; phase < Shape::Phases; ++phase)
    {
        gatherLoads<Shape, Vector>(t, p, tile, chunk, tap, phase, tid, s, staged);
        gatherBlend<Shape>(tile, tap, phase, 0, tid, s, staged);
    }
    cpAsyncWaitAll();
    __syncthreads();
    // The main loop: a step's MMAs with the next step's loads in flight.
    int32_t const lastStage = pipelinedSteps(first, last, [&](int32_t stage) {
        KStep const next = nextKStep(KStep{chunk, tap}, taps);
        loadB<Shape, Vector>(t, p, tile, bc, next.chunk, next.tap, stage ^ 1, tid, s);
        cpAsyncCommit();
DEFORMRT_UNROLL
        for (int32_t phase = 0; phase < Shape::Phases; ++phase)
        {
            gatherLoads<Shape, Vector>(t, p, tile, next.chunk, next.tap, phase, tid, s, staged);
            mmaPhase<Shape>(l, s, tile, w, stage, phase, a, acc);
            gatherBlend<Shape>(tile, next.tap, phase, stage ^ 1, tid, s, staged);
        }
        cpAsyncWaitAll();
        __syncthreads();
        chunk = next.chunk;
        tap = next.tap;
    });
DEFORMRT_UNROLL
    for (int32_t phase = 0; phase < Shape::Phases; ++phase)
    {
        mmaPhase<Shape>(l, s, tile, w, lastStage, phase, a, acc);
    }
    __syncthreads(); // the next segment's prologue and gather overwrite what the last MMAs read
}

template <class Shape, bool Vector>
__device__ __forceinline__ void runTile(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t tid,
    SharedView const& s, Accumulators<Shape>& acc)
{
    WarpPlace const w = warpPlace<Shape>(tid);
    LaneAddresses const l = laneAddresses<Shape>(s, w);
    for (int32_t first = tile.stepBegin; first < tile.stepEnd;)
    {
        int32_t const last = segmentEnd(t, tile, first);
        runSegment<Shape, Vector>(t, p, tile, first, last, tid, w, s, l, acc);
        first = last;
    }
}

#endif // __CUDA_ARCH__ >= 800

//! Grid: x = pixel tiles (whole batch), y = output-channel tiles x K splits, z = convolution groups.
template <class Shape>
__global__ void __launch_bounds__(Shape::Threads) deformConvTensorCore(TcGeometry t, TcTensors p, TcPlan plan)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(16) unsigned char sharedBytesStorage[];
    SharedView const s = sharedView(sharedBytesStorage, sharedLayout(Shape::BM, Shape::BN, t.g.taps, Shape::AStages));
    TcTile const tile = makeTile(t, plan, Shape::BN, blockIdx.x, int32_t(blockIdx.y), int32_t(blockIdx.z));
    int32_t const tid = int32_t(threadIdx.x);
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
    if (p.vector)
    {
        runTile<Shape, true>(t, p, tile, tid, s, acc);
    }
    else
    {
        runTile<Shape, false>(t, p, tile, tid, s, acc);
    }
    epilogue<Shape>(t, p, tile, tid, acc);
#endif
}

//! Split K: y = the partial sums of every split, in split order, plus the bias. Grid: x = groups of
//! kReduceRowThreads rows, y = groups of kReduceBlockChannels output channels.
__global__ void __launch_bounds__(kReduceChannelThreads* kReduceRowThreads) splitKReduceKernel(DcnGeometry g,
    int32_t splits, float const* partial, uint16_t const* bias, uint16_t* y, bool outputNhwc, bool vector)
{
    int32_t const row = int32_t(blockIdx.x) * kReduceRowThreads + int32_t(threadIdx.y);
    int32_t const co = reduceThreadChannel(int32_t(blockIdx.y), int32_t(threadIdx.x));
    if (row < int32_t(g.cols) && co < g.cOut)
    {
        splitKReduce(g, splits, partial, bias, y, outputNhwc, vector, row, co);
    }
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
    int32_t major, minor;
    TcDevice device;
};

cudaError_t currentDeviceLimits(DeviceLimits& limits)
{
    int device = 0;
    int major = 0;
    int minor = 0;
    int sms = 0;
    int optIn = 0;
    int l2 = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&optIn, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device);
    }
    limits = DeviceLimits{major, minor, TcDevice{sms, optIn, l2}};
    return status;
}

//! A non-negative integer from the environment, or ``fallback``.
int32_t environmentInt(char const* name, int32_t fallback)
{
    char const* value = std::getenv(name);
    if (value == nullptr || value[0] < '0' || value[0] > '9')
    {
        return fallback;
    }
    return int32_t(std::strtol(value, nullptr, 10));
}

//! The launch the current device runs ``t`` with (plan.shape < 0: not sm_80+, nothing fits, no device):
//! on a compute capability 9.0 GPU with the sm_90a wgmma kernel built, the wgmma kernel where it takes the
//! problem (``allowWgmma``: its 16-byte vectors apply to the pointers too), else the mma.sync kernel.
//! DEFORMRT_TC_TILE_SHAPE=0..4, DEFORMRT_TC_M_EXTENT=<pixels>, DEFORMRT_TC_SPLIT_K=<n> force parts of it
//! and DEFORMRT_TC_WGMMA=0 keeps Hopper on mma.sync (sanitizer runs, ptx_check and benchmarks cover every
//! shape, extent and split).
TcPlan planLaunch(TcGeometry const& t, bool allowWgmma = true)
{
    TcPlan none{};
    none.shape = -1;
    DeviceLimits limits{};
    if (!tensorCoreApplies(t) || currentDeviceLimits(limits) != cudaSuccess || limits.major < 8)
    {
        return none;
    }
    int32_t const shape = environmentInt("DEFORMRT_TC_TILE_SHAPE", -1);
    int32_t const extent = environmentInt("DEFORMRT_TC_M_EXTENT", 0);
    int32_t const split = environmentInt("DEFORMRT_TC_SPLIT_K", 0);
    bool const hopper = limits.major == 9 && limits.minor == 0 && wgmmaKernelBuilt()
        && environmentInt("DEFORMRT_TC_WGMMA", 1) != 0;
    return chooseLaunchPlan(t, limits.device, allowWgmma && hopper, shape, extent, split);
}

template <class Shape>
cudaError_t launchShape(TcGeometry const& t, TcTensors const& p, TcPlan const& plan, cudaStream_t stream)
{
    return launchTiles(deformConvTensorCore<Shape>, Shape::Threads, sharedLayout(Shape::BM, Shape::BN, t.g.taps, Shape::AStages).bytes,
        t, p, plan, stream);
}

//! The kernel (and, for split K, the reduction into y) for ``plan``; ``partial`` is the workspace's
//! partial-sum region (partialBytes).
cudaError_t launch(TcGeometry const& t, TcTensors p, TcPlan plan, void* partial, cudaStream_t stream)
{
    p.vector = vectorApplies(t, p.x, p.weight);
    if (isWgmmaShape(plan.shape) && !p.vector)
    {
        plan = planLaunch(t, false); // the wgmma kernel has no scalar path: x or the weight is misaligned
    }
    p.partial = plan.splitK > 1 ? static_cast<float*>(partial) : nullptr;
    p.pairedOutput = pairedOutputApplies(t, p);
    if (plan.splitK > 1 && (partial == nullptr || !splitKReduceFits(t.g, plan.splitK)))
    {
        return cudaErrorInvalidValue;
    }
    cudaError_t status = cudaErrorInvalidValue;
    switch (plan.shape)
    {
    case 0: status = launchShape<TileN256>(t, p, plan, stream); break;
    case 1: status = launchShape<TileN128>(t, p, plan, stream); break;
    case 2: status = launchShape<TileN64>(t, p, plan, stream); break;
    case kWgmmaShapeN256:
    case kWgmmaShapeN128: status = launchWgmma(t, p, plan, stream); break;
    default: break;
    }
    if (status != cudaSuccess || plan.splitK == 1)
    {
        return status;
    }
    dim3 const grid(static_cast<unsigned>((t.g.cols + kReduceRowThreads - 1) / kReduceRowThreads),
        static_cast<unsigned>((t.g.cOut + kReduceBlockChannels - 1) / kReduceBlockChannels));
    if (grid.y > 65535)
    {
        return cudaErrorInvalidConfiguration;
    }
    bool const vector = splitKReduceVector(t.g, plan.splitK, p.partial, p.bias, p.y);
    splitKReduceKernel<<<grid, dim3(kReduceChannelThreads, kReduceRowThreads), 0, stream>>>(
        t.g, plan.splitK, p.partial, p.bias, p.y, p.outputNhwc, vector);
    return cudaGetLastError();
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

//! The NHWC forward pass on ``workspace`` laid out as nhwcWorkspaceBytes: the OHWI weight, then the
//! partial sums.
cudaError_t forwardNhwc(TcGeometry const& t, TcPlan const& plan, uint16_t const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, bool outputNhwc, unsigned char* workspace,
    cudaStream_t stream)
{
    DcnGeometry const& g = t.g;
    uint16_t const* ohwi = nullptr;
    cudaError_t const status = ohwiWeight(g, weight, workspace, stream, ohwi);
    if (status != cudaSuccess)
    {
        return status;
    }
    TcTensors const p{xNhwc, ohwi, static_cast<uint16_t const*>(offset),
        g.hasBias ? static_cast<uint16_t const*>(bias) : nullptr,
        g.modulated ? static_cast<uint16_t const*>(mask) : nullptr, static_cast<uint16_t*>(y), nullptr, outputNhwc,
        false, false};
    void* const partial = workspace == nullptr ? nullptr : workspace + weightTransposeBytes(g);
    return launch(t, p, plan, partial, stream);
}

} // namespace

// Fallbacks for a link without deformConvWgmma.cu's object (scripts/ptx_check.py builds this file alone):
// no wgmma kernel. The CMake build always links that object, whose definitions replace these.
__attribute__((weak)) bool wgmmaKernelBuilt()
{
    return false;
}

__attribute__((weak)) cudaError_t launchWgmma(TcGeometry const&, TcTensors const&, TcPlan const&, cudaStream_t)
{
    return cudaErrorNotSupported;
}

bool runsOnCurrentDevice(DcnGeometry const& g)
{
    return planLaunch(makeTcGeometry(g)).shape >= 0;
}

cudaError_t forwardNchw(DcnGeometry const& g, void const* x, void const* weight, void const* offset,
    void const* bias, void const* mask, void* y, void* workspace, cudaStream_t stream)
{
    TcGeometry const t = makeTcGeometry(g);
    TcPlan const plan = planLaunch(t);
    if (plan.shape < 0 || workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    auto* const xNhwc = static_cast<uint16_t*>(workspace);
    int64_t const plane = int64_t(g.h) * g.w;
    dim3 const grid(static_cast<unsigned>((plane + kTransposeTile - 1) / kTransposeTile),
        static_cast<unsigned>((g.c + kTransposeTile - 1) / kTransposeTile), static_cast<unsigned>(g.n));
    if (grid.y > 65535 || grid.z > 65535)
    {
        return cudaErrorInvalidConfiguration;
    }
    nchwToNhwcKernel<<<grid, dim3(kTransposeTile, kTransposeRows), 0, stream>>>(
        static_cast<uint16_t const*>(x), xNhwc, g.c, plane);
    cudaError_t const status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        return status;
    }
    return forwardNhwc(t, plan, xNhwc, weight, offset, bias, mask, y, false,
        static_cast<unsigned char*>(workspace) + inputStagingBytes(g), stream);
}

} // namespace tc
} // namespace deformrt

extern "C" uint64_t deformrt_dcn_nhwc_workspace_size(DeformrtConvDesc const* desc)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tc::nhwcWorkspaceBytes(deformrt::makeGeometry(*desc));
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
    namespace tc = deformrt::tc;
    tc::TcGeometry const t = tc::makeTcGeometry(deformrt::makeGeometry(*desc));
    tc::TcPlan const plan = tc::planLaunch(t);
    if (plan.shape < 0)
    {
        return cudaErrorNotSupported;
    }
    return tc::forwardNhwc(t, plan, static_cast<uint16_t const*>(xNhwc), weight, offset, bias, mask, yNhwc, true,
        static_cast<unsigned char*>(workspace), stream);
}
