// CUDA build of the Hopper (sm_90a) path of the fp16 tensor-core deformable convolution: wgmma.mma_async
// with A from registers and B in shared memory (the tile code, shapes and descriptors are in
// deformConvWgmma.h; the prologue, gather and B word copy in deformConvTensorCore.h). The kernel body exists
// only in sm_90a code (__CUDA_ARCH_FEAT_SM90_ALL); every other architecture compiles an empty body, and
// the launcher (deformConvTensorCore.cu) picks this kernel only on a compute capability 9.0 GPU when the
// build holds sm_90a code (DEFORMRT_WGMMA_SM90A, set by CMake with the sm_90a gencode).
#include "deformConvTensorCore.h"
#include "deformConvTensorCoreDevice.cuh"
#include "deformConvWgmma.h"

#include <cuda_fp16.h>

namespace deformrt
{
namespace tc
{
namespace
{

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DEFORMRT_WGMMA_DEVICE 1

//! wgmma.mma_async m64n256k16 (A from this thread's fragment registers ``a``, B by descriptor): the 128
//! fp32 accumulators ``d`` of this thread += A x B, or = A x B when ``scaleD`` is 0.
__device__ __forceinline__ void wgmmaM64N256(float* d, uint32_t const (&a)[4], uint64_t descB, int32_t scaleD)
{
    asm volatile("{\n .reg .pred accumulate;\n setp.ne.b32 accumulate, %133, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
                 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
                 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
                 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
                 "}, {%128, %129, %130, %131}, %132, accumulate, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
          "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
          "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
          "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
          "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
          "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
          "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),
          "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),
          "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),
          "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(scaleD));
}

//! wgmma.mma_async m64n128k16 (A from this thread's fragment registers ``a``, B by descriptor): the 64 fp32
//! accumulators ``d`` of this thread += A x B, or = A x B when ``scaleD`` is 0.
__device__ __forceinline__ void wgmmaM64N128(float* d, uint32_t const (&a)[4], uint64_t descB, int32_t scaleD)
{
    asm volatile("{\n .reg .pred accumulate;\n setp.ne.b32 accumulate, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, {%64, %65, %66, %67}, %68, accumulate, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
          "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
          "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
          "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
          "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
          "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(scaleD));
}

//! Orders this warpgroup's register accesses before the wgmmas that follow (wgmma.fence).
__device__ __forceinline__ void wgmmaFence()
{
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmmaCommit()
{
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmmaWaitAll()
{
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

//! Makes this thread's generic-proxy shared-memory writes (st.shared, completed cp.async) visible to the
//! async proxy that wgmma reads its operands through; the barrier after it extends that to the CTA.
__device__ __forceinline__ void fenceProxyAsyncShared()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

//! Pins the accumulators at this point of the program: no access to them moves across a wgmma wait.
template <class Shape>
__device__ __forceinline__ void pinAccumulators(Accumulators<Shape>& acc)
{
    float* const d = &acc.c[0][0].v[0];
DEFORMRT_UNROLL
    for (int32_t i = 0; i < 4 * Shape::NT; ++i)
    {
        asm volatile("" : "+f"(d[i])::"memory");
    }
}

//! This warpgroup's wgmmas of buffer ``stage`` (both K slices: A from the thread's fragment registers of
//! that buffer, B from shared memory), committed as one group; nothing for a warpgroup without gathered
//! rows. The wgmma.fence orders the blend's writes of those registers (and the accumulators') before them.
template <class Shape>
__device__ __forceinline__ void issueWgmmas(uint32_t bAddress, TcTile const& tile, int32_t warpgroup, int32_t stage,
    RegisterA const& a, Accumulators<Shape>& acc)
{
    if (!warpgroupActive(tile, warpgroup))
    {
        return;
    }
    wgmmaFence();
    float* const d = &acc.c[0][0].v[0];
DEFORMRT_UNROLL
    for (int32_t kk = 0; kk < kSlices; ++kk)
    {
        uint64_t const descB = wgmmaBDescriptor<Shape>(bAddress, stage, kk);
        if (Shape::BN == 256)
        {
            wgmmaM64N256(d, a.r[stage][kk], descB, 1);
        }
        else
        {
            wgmmaM64N128(d, a.r[stage][kk], descB, 1);
        }
    }
    wgmmaCommit();
}

//! Steps [first, last) of one offset group: the prologue, the first step's B copy and gather, then per step
//! its wgmmas in flight while the next step's B copy and gather (every corner load first, then the blend
//! into the other A register buffer) run.
template <class Shape>
__device__ __forceinline__ void runSegment(TcGeometry const& t, TcTensors const& p, TcTile const& tile,
    int32_t first, int32_t last, int32_t tid, SharedView const& s, Accumulators<Shape>& acc)
{
    int32_t const taps = t.g.taps;
    int32_t const warpgroup = tid / kWarpgroupThreads;
    uint32_t const bAddress = sharedAddressOf(s.b);
    int32_t chunk = first / taps;
    int32_t tap = first - chunk * taps;
    prologue<Shape>(t, p, tile, chunkOffsetGroup(t, tile.grp, chunk), tid, s);
    __syncthreads();
    Staged<Shape> staged;
    BWordCopies const bw = bWordCopies<Shape>(t, tile, tid);
    loadBWords<Shape>(t, p, tile, bw, chunk, tap, 0, s);
    cpAsyncCommit();
    gatherLoads<Shape, true>(t, p, tile, chunk, tap, 0, tid, s, staged);
    gatherBlend<Shape>(tile, tap, 0, 0, tid, s, staged);
    cpAsyncWaitAll();
    fenceProxyAsyncShared();
    __syncthreads();
    int32_t const lastStage = pipelinedSteps(first, last, [&](int32_t stage) {
        issueWgmmas<Shape>(bAddress, tile, warpgroup, stage, staged.a, acc);
        KStep const next = nextKStep(KStep{chunk, tap}, taps);
        loadBWords<Shape>(t, p, tile, bw, next.chunk, next.tap, stage ^ 1, s);
        cpAsyncCommit();
        gatherLoads<Shape, true>(t, p, tile, next.chunk, next.tap, 0, tid, s, staged);
        gatherBlend<Shape>(tile, next.tap, 0, stage ^ 1, tid, s, staged);
        cpAsyncWaitAll();
        wgmmaWaitAll();
        pinAccumulators<Shape>(acc);
        fenceProxyAsyncShared();
        __syncthreads();
        chunk = next.chunk;
        tap = next.tap;
    });
    // the last step's registers by constant index (a runtime index would put them in local memory)
    if (lastStage == 0)
    {
        issueWgmmas<Shape>(bAddress, tile, warpgroup, 0, staged.a, acc);
    }
    else
    {
        issueWgmmas<Shape>(bAddress, tile, warpgroup, 1, staged.a, acc);
    }
    wgmmaWaitAll();
    pinAccumulators<Shape>(acc);
    __syncthreads(); // the next segment's prologue and B copy overwrite what the last wgmmas read
}

#endif // __CUDA_ARCH_FEAT_SM90_ALL

//! Grid: x = pixel tiles (whole batch), y = output-channel tiles x K splits, z = convolution groups. One
//! CTA per SM (the accumulators take half of the register file).
template <class Shape>
__global__ void __launch_bounds__(Shape::Threads, 1) deformConvWgmma(TcGeometry t, TcTensors p, TcPlan plan)
{
#ifdef DEFORMRT_WGMMA_DEVICE
    // 1024-byte aligned: every B buffer (SharedLayout: multiples of 1024 bytes in) starts a swizzle atom.
    extern __shared__ __align__(1024) unsigned char wgmmaSharedStorage[];
    SharedView const s = sharedView(wgmmaSharedStorage, sharedLayout(Shape::BM, Shape::BN, t.g.taps, Shape::AStages));
    TcTile const tile = wgmmaTile<Shape>(t, plan, blockIdx.x, int32_t(blockIdx.y), int32_t(blockIdx.z));
    int32_t const tid = int32_t(threadIdx.x);
    Accumulators<Shape> acc;
DEFORMRT_UNROLL
    for (int32_t ni = 0; ni < Shape::NT; ++ni)
    {
        acc.c[0][ni] = FragC{{0.0f, 0.0f, 0.0f, 0.0f}};
    }
    for (int32_t first = tile.stepBegin; first < tile.stepEnd;)
    {
        int32_t const last = segmentEnd(t, tile, first);
        runSegment<Shape>(t, p, tile, first, last, tid, s, acc);
        first = last;
    }
    epilogue<Shape>(t, p, tile, tid, acc);
#endif
}

template <class Shape>
cudaError_t launchShape(TcGeometry const& t, TcTensors const& p, TcPlan const& plan, cudaStream_t stream)
{
    return launchTiles(deformConvWgmma<Shape>, Shape::Threads, sharedLayout(Shape::BM, Shape::BN, t.g.taps, Shape::AStages).bytes, t,
        p, plan, stream);
}

} // namespace

bool wgmmaKernelBuilt()
{
#ifdef DEFORMRT_WGMMA_SM90A
    return true;
#else
    return false;
#endif
}

cudaError_t launchWgmma(TcGeometry const& t, TcTensors const& p, TcPlan const& plan, cudaStream_t stream)
{
    if (!wgmmaKernelBuilt() || !p.vector)
    {
        return cudaErrorInvalidValue;
    }
    switch (plan.shape)
    {
    case kWgmmaShapeN256: return launchShape<WgmmaN256>(t, p, plan, stream);
    case kWgmmaShapeN128: return launchShape<WgmmaN128>(t, p, plan, stream);
    default: return cudaErrorInvalidValue;
    }
}

} // namespace tc
} // namespace deformrt
