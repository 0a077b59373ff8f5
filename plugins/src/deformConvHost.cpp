// CPU build of the deformable-convolution forward passes: the same tile phases the CUDA kernels run
// (deformConvMath.h: the fp32 / reference tiled kernel; deformConvTensorCore.h: the fp16 tensor-core
// kernel), executed block by block with every thread of a phase finishing before the next phase
// starts, exactly as __syncthreads() orders them on the GPU. The tensor-core kernel's mma.sync runs
// through an emulation of the PTX ISA's per-lane fragment layouts. It exists to check the GPU code's
// math, tiling and fragment indexing on machines without a GPU; it is not meant to be fast.
#include "deformConvMath.h"
#include "deformConvTensorCore.h"
#include "deformConvWgmma.h"
#include "deformrt/deformConvHost.h"

#include <algorithm>
#include <cstddef>
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

//! CPU driver of the tensor-core kernel.
namespace tchost
{
using namespace deformrt::tc;

//! Per-thread state of one CTA on the CPU: accumulators and the gather's staged corners (on the wgmma path
//! also its A fragment registers).
template <class Shape>
struct CtaState
{
    std::vector<Accumulators<Shape>> acc;
    std::vector<Staged<Shape>> staged;
    CtaState()
        : acc(Shape::Threads)
        , staged(Shape::Threads)
    {
    }
};

//! The MMAs of phase ``phase`` of buffer ``stage`` (deformConvTensorCore.cu's mmaPhase), one warp at a
//! time: every lane's fragments first (the PTX ISA's per-lane formulas), then the warp-wide mma through its
//! emulation.
template <class Shape>
void mmaPhase(SharedView const& s, TcTile const& tile, int32_t stage, int32_t phase, CtaState<Shape>& cta)
{
    unsigned char const* const a = s.a + stage * s.aStageBytes;
    unsigned char const* const b = s.b + stage * s.bStageBytes;
    int32_t const kk = phase / Shape::PartsPerSlice;
    int32_t const columns = Shape::NT / Shape::PartsPerSlice;
    int32_t const firstColumn = phase % Shape::PartsPerSlice * columns;
    for (int32_t warp = 0; warp < Shape::Threads / kWarpSize; ++warp)
    {
        WarpPlace const w = warpPlace<Shape>(warp * kWarpSize);
        if (!warpActive(tile, w))
        {
            continue;
        }
        for (int32_t mi = 0; mi < Shape::MT; ++mi)
        {
            if (!rowBlockActive(tile, w, mi / Shape::MTPerBlock))
            {
                continue;
            }
            FragA fa[kWarpSize];
            for (int32_t lane = 0; lane < kWarpSize; ++lane)
            {
                fa[lane] = loadFragA(a, w.warpRow0 + 16 * mi, 16 * kk, lane);
            }
            for (int32_t ni = firstColumn; ni < firstColumn + columns; ++ni)
            {
                FragB fb[kWarpSize];
                FragC c[kWarpSize];
                FragC d[kWarpSize];
                for (int32_t lane = 0; lane < kWarpSize; ++lane)
                {
                    fb[lane] = loadFragB(b, w.warpCol0 + 8 * ni, 16 * kk, lane);
                    c[lane] = cta.acc[warp * kWarpSize + lane].c[mi][ni];
                }
                emulateMmaM16N8K16(fa, fb, c, d);
                for (int32_t lane = 0; lane < kWarpSize; ++lane)
                {
                    cta.acc[warp * kWarpSize + lane].c[mi][ni] = d[lane];
                }
            }
        }
    }
}

//! One gather phase for every thread: the loads, optionally a K slice's MMAs, then the blend (the order
//! of deformConvTensorCore.cu's runSegment).
template <class Shape>
void gatherPhase(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t chunk, int32_t tap,
    int32_t phase, int32_t stage, SharedView const& s, CtaState<Shape>& cta, int32_t mmaStage)
{
    for (int32_t tid = 0; tid < Shape::Threads; ++tid)
    {
        gatherLoads<Shape, false>(t, p, tile, chunk, tap, phase, tid, s, cta.staged[tid]);
    }
    if constexpr (!Shape::Wgmma) // the wgmma path runs its MMAs per step (wgmmaStep), not per gather phase
    {
        if (mmaStage >= 0)
        {
            mmaPhase<Shape>(s, tile, mmaStage, phase, cta);
        }
    }
    for (int32_t tid = 0; tid < Shape::Threads; ++tid)
    {
        gatherBlend<Shape>(tile, tap, phase, stage, tid, s, cta.staged[tid]);
    }
}

//! The start of a segment of steps from ``first`` (both kernels): the prologue tables, then the first
//! step's B and A into buffer 0. Returns that step.
template <class Shape>
KStep startSegment(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t first, SharedView const& s,
    CtaState<Shape>& cta)
{
    KStep const k{first / t.g.taps, first % t.g.taps};
    for (int32_t tid = 0; tid < Shape::Threads; ++tid)
    {
        prologue<Shape>(t, p, tile, chunkOffsetGroup(t, tile.grp, k.chunk), tid, s);
    }
    for (int32_t tid = 0; tid < Shape::Threads; ++tid)
    {
        loadBDirect<Shape>(t, p, tile, k.chunk, k.tap, 0, tid, s);
    }
    for (int32_t phase = 0; phase < Shape::Phases; ++phase)
    {
        gatherPhase<Shape>(t, p, tile, k.chunk, k.tap, phase, 0, s, cta, -1);
    }
    return k;
}

//! Steps [first, last) of one offset group (deformConvTensorCore.cu's runSegment, phase by phase).
template <class Shape>
void runSegment(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t first, int32_t last,
    SharedView const& s, CtaState<Shape>& cta)
{
    int32_t const taps = t.g.taps;
    KStep k = startSegment<Shape>(t, p, tile, first, s, cta);
    int32_t stage = 0;
    for (int32_t step = first; step + 1 < last; ++step)
    {
        KStep const next = nextKStep(k, taps);
        for (int32_t tid = 0; tid < Shape::Threads; ++tid)
        {
            loadBDirect<Shape>(t, p, tile, next.chunk, next.tap, stage ^ 1, tid, s);
        }
        for (int32_t phase = 0; phase < Shape::Phases; ++phase)
        {
            gatherPhase<Shape>(t, p, tile, next.chunk, next.tap, phase, stage ^ 1, s, cta, stage);
        }
        stage ^= 1;
        k = next;
    }
    for (int32_t phase = 0; phase < Shape::Phases; ++phase)
    {
        mmaPhase<Shape>(s, tile, stage, phase, cta);
    }
}

//! The wgmmas of buffer ``stage`` (deformConvWgmma.cu's issueWgmmas), warpgroup by warpgroup: both K
//! slices, A from the threads' fragment registers of that buffer (their gather's staged.a), B through the
//! descriptors the GPU builds (addresses relative to the shared window ``shared``).
template <class Shape>
void wgmmaStep(unsigned char const* shared, SharedView const& s, TcTile const& tile, int32_t stage,
    CtaState<Shape>& cta)
{
    auto const bAddress = uint32_t(s.b - shared);
    for (int32_t warpgroup = 0; warpgroup < Shape::Warpgroups; ++warpgroup)
    {
        if (!warpgroupActive(tile, warpgroup))
        {
            continue;
        }
        for (int32_t kk = 0; kk < kSlices; ++kk)
        {
            uint32_t a[kWarpgroupThreads][4];
            for (int32_t thread = 0; thread < kWarpgroupThreads; ++thread)
            {
                std::copy_n(cta.staged[warpgroup * kWarpgroupThreads + thread].a.r[stage][kk], 4, a[thread]);
            }
            emulateWgmmaRS<Shape>(shared, a, wgmmaBDescriptor<Shape>(bAddress, stage, kk),
                cta.acc.data() + warpgroup * kWarpgroupThreads);
        }
    }
}

//! Steps [first, last) of one offset group on the wgmma path (deformConvWgmma.cu's runSegment): the
//! step's wgmmas read one pair of buffers while the next step's B copy and gather fill the other.
template <class Shape>
void runWgmmaSegment(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t first, int32_t last,
    unsigned char const* shared, SharedView const& s, CtaState<Shape>& cta)
{
    int32_t const taps = t.g.taps;
    KStep k = startSegment<Shape>(t, p, tile, first, s, cta);
    int32_t stage = 0;
    for (int32_t step = first; step + 1 < last; ++step)
    {
        wgmmaStep<Shape>(shared, s, tile, stage, cta);
        KStep const next = nextKStep(k, taps);
        for (int32_t tid = 0; tid < Shape::Threads; ++tid)
        {
            loadBDirect<Shape>(t, p, tile, next.chunk, next.tap, stage ^ 1, tid, s);
        }
        gatherPhase<Shape>(t, p, tile, next.chunk, next.tap, 0, stage ^ 1, s, cta, -1);
        stage ^= 1;
        k = next;
    }
    wgmmaStep<Shape>(shared, s, tile, stage, cta);
}

//! One CTA (deformConvTensorCore.cu's kernel, or deformConvWgmma.cu's for a WgmmaShape).
template <class Shape>
void runCta(TcGeometry const& t, TcTensors const& p, TcTile const& tile, unsigned char const* shared,
    SharedView const& s, CtaState<Shape>& cta)
{
    std::fill(cta.acc.begin(), cta.acc.end(), Accumulators<Shape>{});
    for (int32_t first = tile.stepBegin; first < tile.stepEnd;)
    {
        int32_t const last = segmentEnd(t, tile, first);
        if constexpr (Shape::Wgmma)
        {
            runWgmmaSegment<Shape>(t, p, tile, first, last, shared, s, cta);
        }
        else
        {
            runSegment<Shape>(t, p, tile, first, last, s, cta);
        }
        first = last;
    }
    for (int32_t tid = 0; tid < Shape::Threads; ++tid)
    {
        epilogue<Shape>(t, p, tile, tid, cta.acc[tid]);
    }
}

template <class Shape>
void runGrid(TcGeometry const& t, TcTensors const& p, TcPlan const& plan)
{
    SharedLayout const layout = sharedLayout(Shape::BM, Shape::BN, t.g.taps, Shape::AStages);
    // max_align_t storage: 16-byte aligned like the GPU's dynamic shared memory (the wgmma emulation
    // addresses relative to the window, as the GPU's 1024-byte aligned window does).
    std::vector<std::max_align_t> storage(size_t(layout.bytes) / sizeof(std::max_align_t) + 1);
    auto* const shared = reinterpret_cast<unsigned char*>(storage.data());
    SharedView const s = sharedView(shared, layout);
    CtaState<Shape> cta;
    for (int32_t bz = 0; bz < t.g.group; ++bz)
    {
        for (int32_t by = 0; by < plan.nTiles * plan.splitK; ++by)
        {
            for (int64_t bx = 0; bx < plan.mTiles; ++bx)
            {
                TcTile const tile = Shape::Wgmma ? wgmmaTile<Shape>(t, plan, bx, by, bz)
                                                 : makeTile(t, plan, Shape::BN, bx, by, bz);
                runCta<Shape>(t, p, tile, shared, s, cta);
            }
        }
    }
}

//! The tensor-core forward pass on the CPU with ``plan`` (choosePlan's, or a forced one); ``partial``
//! is the workspace's partial-sum region. Returns false when the plan does not apply to the problem.
bool forwardTensorCoreHost(TcGeometry const& t, TcTensors p, TcPlan const& plan, float* partial)
{
    int32_t const extentStep = isWgmmaShape(plan.shape) ? kWarpgroupRows : kWarpRows;
    if (!tensorCoreApplies(t) || plan.shape < 0 || plan.shape >= kPlanShapes
        || !shapeFits(t, plan.shape, kAssumedDevice) || plan.mExtent < extentStep || plan.mExtent % extentStep != 0
        || plan.mExtent > kTileBM[plan.shape] || plan.splitK < 1
        || (plan.splitK > 1 && (partial == nullptr || !splitKReduceFits(t.g, plan.splitK)))
        || (isWgmmaShape(plan.shape) && !wgmmaApplies(t)))
    {
        return false;
    }
    TcPlan const checked = makePlan(t, plan.shape, plan.mExtent, plan.splitK);
    if (checked.splitK != plan.splitK || checked.stepsPerSplit != plan.stepsPerSplit
        || checked.nTiles != plan.nTiles || checked.mTiles != plan.mTiles)
    {
        return false;
    }
    p.vector = vectorApplies(t, p.x, p.weight);
    if (isWgmmaShape(plan.shape) && !p.vector)
    {
        // as the CUDA launcher: the wgmma kernel has no scalar path, misaligned pointers go to mma.sync
        return forwardTensorCoreHost(t, p, choosePlan(t, kAssumedDevice, partialBytes(t.g)), partial);
    }
    p.partial = plan.splitK > 1 ? partial : nullptr;
    p.pairedOutput = pairedOutputApplies(t, p);
    switch (plan.shape)
    {
    case 0: runGrid<TileN256>(t, p, plan); break;
    case 1: runGrid<TileN128>(t, p, plan); break;
    case kWgmmaShapeN256: runGrid<WgmmaN256>(t, p, plan); break;
    case kWgmmaShapeN128: runGrid<WgmmaN128>(t, p, plan); break;
    default: runGrid<TileN64>(t, p, plan); break;
    }
    if (plan.splitK > 1)
    {
        // the reduction kernel's threads: every row, every channel block, every lane inside cOut
        int32_t const blocks = (t.g.cOut + kReduceBlockChannels - 1) / kReduceBlockChannels;
        for (int32_t row = 0; row < int32_t(t.g.cols); ++row)
        {
            for (int32_t block = 0; block < blocks; ++block)
            {
                for (int32_t lane = 0; lane < kReduceChannelThreads; ++lane)
                {
                    int32_t const co = reduceThreadChannel(block, lane);
                    if (co < t.g.cOut)
                    {
                        splitKReduce(t.g, plan.splitK, partial, p.bias, p.y, p.outputNhwc, false, row, co);
                    }
                }
            }
        }
    }
    return true;
}

//! The plan for ``desc`` on the assumed H100 with the sm_90a wgmma kernel built (the CUDA launcher's
//! planLaunch there: the wgmma kernel where it takes the problem, else mma.sync), with parts of it
//! optionally forced (shape 0..2: mma.sync, 3..4: wgmma).
TcPlan hostPlan(TcGeometry const& t, int32_t shape = -1)
{
    return chooseLaunchPlan(t, kAssumedDevice, true, shape);
}

//! The weight as OHWI: ``weight`` itself, or its transpose written to ``scratch`` (as the CUDA build's
//! oihwToOhwiKernel does).
uint16_t const* ohwiWeightHost(DcnGeometry const& g, void const* weight, void* scratch)
{
    if (g.weightOhwi)
    {
        return static_cast<uint16_t const*>(weight);
    }
    auto const* oihw = static_cast<uint16_t const*>(weight);
    auto* ohwi = static_cast<uint16_t*>(scratch);
    int64_t const total = weightElements(g);
    for (int64_t e = 0; e < total; ++e)
    {
        ohwi[e] = oihw[ohwiSourceIndex(g, e)];
    }
    return ohwi;
}

//! The NHWC forward pass on ``workspace`` laid out as nhwcWorkspaceBytes (the CUDA build's forwardNhwc).
bool forwardNhwcHost(TcGeometry const& t, TcPlan const& plan, uint16_t const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, bool outputNhwc, unsigned char* workspace)
{
    DcnGeometry const& g = t.g;
    TcTensors const p{xNhwc, ohwiWeightHost(g, weight, workspace), static_cast<uint16_t const*>(offset),
        g.hasBias ? static_cast<uint16_t const*>(bias) : nullptr,
        g.modulated ? static_cast<uint16_t const*>(mask) : nullptr, static_cast<uint16_t*>(y), nullptr, outputNhwc,
        false, false};
    auto* const partial = reinterpret_cast<float*>(workspace + weightTransposeBytes(g));
    return forwardTensorCoreHost(t, p, plan, partialBytes(g) > 0 ? partial : nullptr);
}

//! The caller's workspace, or (``workspace`` null) storage of ``bytes`` owned by ``own``; null when the
//! caller's is smaller than ``bytes``, as the CUDA build refuses it.
void* workspaceOf(void* workspace, uint64_t workspaceBytes, uint64_t bytes, std::vector<std::max_align_t>& own)
{
    if (workspace == nullptr && workspaceBytes == 0)
    {
        own.resize(size_t(bytes) / sizeof(std::max_align_t) + 1);
        return own.data();
    }
    return workspace != nullptr && workspaceBytes >= bytes ? workspace : nullptr;
}

//! NCHW -> NHWC of one fp16 tensor [n, c, h, w].
void toNhwcHost(uint16_t const* src, uint16_t* dst, int64_t n, int64_t c, int64_t plane)
{
    for (int64_t b = 0; b < n; ++b)
    {
        for (int64_t ch = 0; ch < c; ++ch)
        {
            for (int64_t i = 0; i < plane; ++i)
            {
                dst[(b * plane + i) * c + ch] = src[(b * c + ch) * plane + i];
            }
        }
    }
}

} // namespace tchost
} // namespace
} // namespace deformrt

extern "C"
{

char const* deformrt_dcn_validate(DeformrtConvDesc const* desc)
{
    return desc == nullptr ? "no problem description" : deformrt::describeInvalid(*desc);
}

uint64_t deformrt_dcn_workspace_size(DeformrtConvDesc const* desc, int32_t dtype)
{
    if (dtype != DEFORMRT_FLOAT16 || desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tc::nchwWorkspaceBytes(deformrt::makeGeometry(*desc));
}

uint64_t deformrt_dcn_nhwc_workspace_size(DeformrtConvDesc const* desc)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tc::nhwcWorkspaceBytes(deformrt::makeGeometry(*desc));
}

int32_t deformrt_dcn_nhwc_supported(DeformrtConvDesc const* desc)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    return deformrt::tchost::hostPlan(deformrt::tc::makeTcGeometry(deformrt::makeGeometry(*desc))).shape >= 0 ? 1 : 0;
}

int32_t deformrt_dcn_forward_host(DeformrtConvDesc const* desc, int32_t dtype, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, void* workspace, uint64_t workspaceBytes)
{
    if (!deformrt::callIsValid(desc, x, weight, offset, bias, mask, y))
    {
        return 1;
    }
    deformrt::DcnGeometry const g = deformrt::makeGeometry(*desc);
    std::vector<std::max_align_t> own;
    void* const staging
        = deformrt::tchost::workspaceOf(workspace, workspaceBytes, deformrt_dcn_workspace_size(desc, dtype), own);
    if (staging == nullptr)
    {
        return 1;
    }
    switch (dtype)
    {
    case DEFORMRT_FLOAT32: deformrt::forwardHost<float>(g, x, weight, offset, bias, mask, y); return 0;
    case DEFORMRT_FLOAT16:
    {
        // As deformrt_dcn_forward on sm_80+: x staged as NHWC and the weight as OHWI in the workspace, the
        // tensor-core kernel writing NCHW; the tiled kernel where the tensor-core kernel does not apply.
        namespace tc = deformrt::tc;
        tc::TcGeometry const t = tc::makeTcGeometry(g);
        if (tc::nchwWorkspaceBytes(g) > 0 && tc::tensorCoreApplies(t))
        {
            auto* const xNhwc = static_cast<uint16_t*>(staging);
            deformrt::tchost::toNhwcHost(static_cast<uint16_t const*>(x), xNhwc, g.n, g.c, int64_t(g.h) * g.w);
            if (deformrt::tchost::forwardNhwcHost(t, deformrt::tchost::hostPlan(t), xNhwc, weight, offset, bias, mask,
                    y, false, static_cast<unsigned char*>(staging) + tc::inputStagingBytes(g)))
            {
                return 0;
            }
        }
        deformrt::forwardHost<deformrt::HostHalf>(g, x, weight, offset, bias, mask, y);
        return 0;
    }
    default: return 1;
    }
}

int32_t deformrt_dcn_forward_tiled_host(DeformrtConvDesc const* desc, int32_t dtype, void const* x,
    void const* weight, void const* offset, void const* bias, void const* mask, void* y)
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

namespace
{

//! The NHWC entry on the CPU with ``plan``.
int32_t forwardNhwcWithPlan(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight, void const* offset,
    void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    deformrt::tc::TcPlan const& plan)
{
    deformrt::DcnGeometry const g = deformrt::makeGeometry(*desc);
    std::vector<std::max_align_t> own;
    void* const scratch
        = deformrt::tchost::workspaceOf(workspace, workspaceBytes, deformrt_dcn_nhwc_workspace_size(desc), own);
    if (scratch == nullptr)
    {
        return 1;
    }
    return deformrt::tchost::forwardNhwcHost(deformrt::tc::makeTcGeometry(g), plan,
               static_cast<uint16_t const*>(xNhwc), weight, offset, bias, mask, yNhwc, true,
               static_cast<unsigned char*>(scratch))
        ? 0
        : 1;
}

DeformrtTcPlan toCPlan(deformrt::tc::TcGeometry const& t, deformrt::tc::TcPlan const& plan,
    deformrt::tc::TcDevice const& device)
{
    DeformrtTcPlan out{};
    out.shape = plan.shape;
    if (plan.shape < 0)
    {
        return out;
    }
    deformrt::tc::PlanCost const cost = deformrt::tc::planCost(t, plan, device);
    out.mExtent = plan.mExtent;
    out.splitK = plan.splitK;
    out.stepsPerSplit = plan.stepsPerSplit;
    out.nTiles = plan.nTiles;
    out.mTiles = plan.mTiles;
    out.ctas = cost.ctas;
    out.waveEfficiency = cost.waveEfficiency;
    out.modelClocks = cost.clocks;
    out.sharedBytes = deformrt::tc::sharedBytes(t, plan.shape);
    out.bm = deformrt::tc::kTileBM[plan.shape];
    out.bn = deformrt::tc::kTileBN[plan.shape];
    return out;
}

//! A planner: choosePlan (mma.sync) or chooseWgmmaPlan.
using PlanChooser = deformrt::tc::TcPlan (*)(deformrt::tc::TcGeometry const&, deformrt::tc::TcDevice const&,
    uint64_t, int32_t, int32_t, int32_t);

//! chooseLaunchPlan as a PlanChooser: the launch of a compute capability 9.0 GPU with the sm_90a build (the
//! workspace is partialBytes, as planEntry passes it).
deformrt::tc::TcPlan chooseSm90aLaunchPlan(deformrt::tc::TcGeometry const& t, deformrt::tc::TcDevice const& dev,
    uint64_t, int32_t tileShape, int32_t mExtent, int32_t splitK)
{
    return deformrt::tc::chooseLaunchPlan(t, dev, true, tileShape, mExtent, splitK);
}

//! deformrt_dcn_tc_plan, _wgmma and _sm90a: ``choose``'s plan for ``desc`` on the described GPU.
int32_t planEntry(PlanChooser choose, DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan)
{
    if (desc == nullptr || plan == nullptr || deformrt::describeInvalid(*desc) != nullptr || smCount < 1)
    {
        return 1;
    }
    namespace tc = deformrt::tc;
    tc::TcGeometry const t = tc::makeTcGeometry(deformrt::makeGeometry(*desc));
    tc::TcDevice const device{smCount, sharedOptInBytes, l2Bytes};
    *plan = toCPlan(t, choose(t, device, tc::partialBytes(t.g), tileShape, mExtent, splitK), device);
    return plan->shape >= 0 ? 0 : 1;
}

} // namespace

int32_t deformrt_dcn_forward_nhwc_host(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    int32_t tileShape)
{
    if (!deformrt::callIsValid(desc, xNhwc, weight, offset, bias, mask, yNhwc))
    {
        return 1;
    }
    deformrt::tc::TcGeometry const t = deformrt::tc::makeTcGeometry(deformrt::makeGeometry(*desc));
    return forwardNhwcWithPlan(desc, xNhwc, weight, offset, bias, mask, yNhwc, workspace, workspaceBytes,
        deformrt::tchost::hostPlan(t, tileShape < 0 ? -1 : tileShape));
}

int32_t deformrt_dcn_forward_nhwc_host_plan(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    DeformrtTcPlan const* plan)
{
    if (!deformrt::callIsValid(desc, xNhwc, weight, offset, bias, mask, yNhwc) || plan == nullptr)
    {
        return 1;
    }
    deformrt::tc::TcPlan p{};
    p.shape = plan->shape;
    p.mExtent = plan->mExtent;
    p.splitK = plan->splitK;
    p.stepsPerSplit = plan->stepsPerSplit;
    p.nTiles = plan->nTiles;
    p.mTiles = plan->mTiles;
    return forwardNhwcWithPlan(desc, xNhwc, weight, offset, bias, mask, yNhwc, workspace, workspaceBytes, p);
}

int64_t deformrt_dcn_tc_shared_bytes(DeformrtConvDesc const* desc, int32_t tileShape)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr || tileShape < 0
        || tileShape >= deformrt::tc::kPlanShapes)
    {
        return -1;
    }
    return deformrt::tc::sharedBytes(deformrt::tc::makeTcGeometry(deformrt::makeGeometry(*desc)), tileShape);
}

int32_t deformrt_dcn_tc_plan(DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan)
{
    return planEntry(deformrt::tc::choosePlan, desc, smCount, sharedOptInBytes, l2Bytes, tileShape, mExtent, splitK,
        plan);
}

int32_t deformrt_dcn_tc_plan_wgmma(DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan)
{
    return planEntry(deformrt::tc::chooseWgmmaPlan, desc, smCount, sharedOptInBytes, l2Bytes, tileShape, mExtent,
        splitK, plan);
}

int32_t deformrt_dcn_tc_plan_sm90a(DeformrtConvDesc const* desc, int32_t smCount, int64_t sharedOptInBytes,
    int64_t l2Bytes, int32_t tileShape, int32_t mExtent, int32_t splitK, DeformrtTcPlan* plan)
{
    return planEntry(chooseSm90aLaunchPlan, desc, smCount, sharedOptInBytes, l2Bytes, tileShape, mExtent, splitK,
        plan);
}

void deformrt_mma_m16n8k16_emulate(uint32_t const* a, uint32_t const* b, float const* c, float* d)
{
    namespace tc = deformrt::tc;
    tc::FragA fa[tc::kWarpSize];
    tc::FragB fb[tc::kWarpSize];
    tc::FragC fc[tc::kWarpSize];
    tc::FragC fd[tc::kWarpSize];
    for (int32_t lane = 0; lane < tc::kWarpSize; ++lane)
    {
        for (int32_t i = 0; i < 4; ++i)
        {
            fa[lane].r[i] = a[lane * 4 + i];
            fc[lane].v[i] = c[lane * 4 + i];
        }
        fb[lane].r[0] = b[lane * 2];
        fb[lane].r[1] = b[lane * 2 + 1];
    }
    tc::emulateMmaM16N8K16(fa, fb, fc, fd);
    for (int32_t lane = 0; lane < tc::kWarpSize; ++lane)
    {
        for (int32_t i = 0; i < 4; ++i)
        {
            d[lane * 4 + i] = fd[lane].v[i];
        }
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
