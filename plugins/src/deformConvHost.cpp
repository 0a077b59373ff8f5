// CPU build of the deformable-convolution forward passes: the same tile phases the CUDA kernels run
// (deformConvMath.h: the fp32 / reference tiled kernel; deformConvTensorCore.h: the fp16 tensor-core
// kernel), executed block by block with every thread of a phase finishing before the next phase
// starts, exactly as __syncthreads() orders them on the GPU. The tensor-core kernel's mma.sync runs
// through an emulation of the PTX ISA's per-lane fragment layouts. It exists to check the GPU code's
// math, tiling and fragment indexing on machines without a GPU; it is not meant to be fast.
#include "deformConvMath.h"
#include "deformConvTensorCore.h"
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

//! SM count the CPU build assumes when it picks a tile shape (an H100 SXM), so that it runs the shape
//! a batch-1 H100 launch would.
constexpr int32_t kAssumedSmCount = 132;

//! One CTA of the tensor-core kernel, phase by phase (the order of deformConvTensorCore.cu's kernel).
template <class Shape>
void runCta(TcGeometry const& t, TcTensors const& p, TcTile const& tile, SharedView const& s,
    std::vector<Accumulators<Shape>>& acc)
{
    std::fill(acc.begin(), acc.end(), Accumulators<Shape>{});
    int32_t const taps = t.g.taps;
    for (int32_t tid = 0; tid < kThreads; ++tid)
    {
        prologue<Shape>(t, p, tile, chunkOffsetGroup(t, tile.grp, 0), tid, s);
    }
    for (int32_t tid = 0; tid < kThreads; ++tid)
    {
        gatherA<Shape>(t, p, tile, 0, 0, 0, tid, s);
        loadB<Shape>(t, p, tile, 0, 0, tid, s);
    }
    for (int32_t step = 0; step < t.steps; ++step)
    {
        int32_t const next = step + 1;
        if (next < t.steps)
        {
            int32_t const chunk = next / taps;
            int32_t const og = chunkOffsetGroup(t, tile.grp, chunk);
            if (og != chunkOffsetGroup(t, tile.grp, step / taps))
            {
                for (int32_t tid = 0; tid < kThreads; ++tid)
                {
                    prologue<Shape>(t, p, tile, og, tid, s);
                }
            }
            for (int32_t tid = 0; tid < kThreads; ++tid)
            {
                gatherA<Shape>(t, p, tile, chunk, next - chunk * taps, next & 1, tid, s);
                loadB<Shape>(t, p, tile, next, next & 1, tid, s);
            }
        }
        // The MMA phase, one warp at a time: every lane's fragments first, then the warp-wide mma.
        for (int32_t warp = 0; warp < kThreads / kWarpSize; ++warp)
        {
            for (int32_t k16 = 0; k16 < t.stepK / 16; ++k16)
            {
                FragA a[Shape::MT][kWarpSize];
                FragB b[Shape::NT][kWarpSize];
                for (int32_t lane = 0; lane < kWarpSize; ++lane)
                {
                    FragA la[Shape::MT];
                    FragB lb[Shape::NT];
                    loadFragments<Shape>(s, step & 1, warpPlace<Shape>(warp * kWarpSize + lane), k16, la, lb);
                    for (int32_t mi = 0; mi < Shape::MT; ++mi)
                    {
                        a[mi][lane] = la[mi];
                    }
                    for (int32_t ni = 0; ni < Shape::NT; ++ni)
                    {
                        b[ni][lane] = lb[ni];
                    }
                }
                for (int32_t mi = 0; mi < Shape::MT; ++mi)
                {
                    for (int32_t ni = 0; ni < Shape::NT; ++ni)
                    {
                        FragC c[kWarpSize];
                        FragC d[kWarpSize];
                        for (int32_t lane = 0; lane < kWarpSize; ++lane)
                        {
                            c[lane] = acc[warp * kWarpSize + lane].c[mi][ni];
                        }
                        emulateMmaM16N8K16(a[mi], b[ni], c, d);
                        for (int32_t lane = 0; lane < kWarpSize; ++lane)
                        {
                            acc[warp * kWarpSize + lane].c[mi][ni] = d[lane];
                        }
                    }
                }
            }
        }
    }
    for (int32_t tid = 0; tid < kThreads; ++tid)
    {
        epilogue<Shape>(t, p, tile, tid, acc[tid]);
    }
}

template <class Shape>
void runGrid(TcGeometry const& t, TcTensors const& p)
{
    SharedLayout const layout = sharedLayout(Shape::BM, Shape::BN, t.g.taps, t.stepK);
    // max_align_t storage: 16-byte aligned like the GPU's dynamic shared memory.
    std::vector<std::max_align_t> storage(size_t(layout.bytes) / sizeof(std::max_align_t) + 1);
    SharedView const s = sharedView(reinterpret_cast<unsigned char*>(storage.data()), layout);
    std::vector<Accumulators<Shape>> acc(kThreads);
    for (int32_t grp = 0; grp < t.g.group; ++grp)
    {
        for (int32_t n0 = 0; n0 < t.g.cOutPerGroup; n0 += Shape::BN)
        {
            for (int64_t m0 = 0; m0 < t.g.cols; m0 += Shape::BM)
            {
                runCta<Shape>(t, p, TcTile{grp, m0, n0}, s, acc);
            }
        }
    }
}

//! The tensor-core forward pass on the CPU; ``shape`` < 0 picks it as the GPU launcher would.
//! Returns false when the kernel does not apply to the problem or the shape does not fit.
bool forwardTensorCoreHost(TcGeometry const& t, TcTensors p, int32_t shape)
{
    if (!tensorCoreApplies(t))
    {
        return false;
    }
    if (shape < 0)
    {
        shape = chooseTileShape(t, kAssumedSmCount, kMaxSharedBytes);
    }
    if (shape < 0 || shape >= kTileShapes || sharedBytes(t, shape) > kMaxSharedBytes)
    {
        return false;
    }
    p.vectorGather = vectorGatherApplies(t, p.x);
    p.vectorWeight = vectorWeightApplies(t, p.weight);
    switch (shape)
    {
    case 0: runGrid<TileLarge>(t, p); break;
    case 1: runGrid<TileMedium>(t, p); break;
    default: runGrid<TileSmall>(t, p); break;
    }
    return true;
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
    return deformrt::tc::weightTransposeBytes(deformrt::makeGeometry(*desc));
}

int32_t deformrt_dcn_nhwc_supported(DeformrtConvDesc const* desc)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return 0;
    }
    namespace tc = deformrt::tc;
    tc::TcGeometry const t = tc::makeTcGeometry(deformrt::makeGeometry(*desc));
    return tc::tensorCoreApplies(t) && tc::chooseTileShape(t, deformrt::tchost::kAssumedSmCount, tc::kMaxSharedBytes) >= 0
        ? 1
        : 0;
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
            void* const weightScratch = static_cast<unsigned char*>(staging) + tc::inputStagingBytes(g);
            deformrt::tchost::toNhwcHost(static_cast<uint16_t const*>(x), xNhwc, g.n, g.c, int64_t(g.h) * g.w);
            tc::TcTensors const p{xNhwc, deformrt::tchost::ohwiWeightHost(g, weight, weightScratch),
                static_cast<uint16_t const*>(offset), g.hasBias ? static_cast<uint16_t const*>(bias) : nullptr,
                g.modulated ? static_cast<uint16_t const*>(mask) : nullptr, static_cast<uint16_t*>(y), false, false,
                false};
            if (deformrt::tchost::forwardTensorCoreHost(t, p, -1))
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

int32_t deformrt_dcn_forward_nhwc_host(DeformrtConvDesc const* desc, void const* xNhwc, void const* weight,
    void const* offset, void const* bias, void const* mask, void* yNhwc, void* workspace, uint64_t workspaceBytes,
    int32_t tileShape)
{
    if (!deformrt::callIsValid(desc, xNhwc, weight, offset, bias, mask, yNhwc))
    {
        return 1;
    }
    deformrt::DcnGeometry const g = deformrt::makeGeometry(*desc);
    std::vector<std::max_align_t> own;
    void* const scratch
        = deformrt::tchost::workspaceOf(workspace, workspaceBytes, deformrt_dcn_nhwc_workspace_size(desc), own);
    if (scratch == nullptr)
    {
        return 1;
    }
    deformrt::tc::TcTensors const p{static_cast<uint16_t const*>(xNhwc),
        deformrt::tchost::ohwiWeightHost(g, weight, scratch), static_cast<uint16_t const*>(offset),
        g.hasBias ? static_cast<uint16_t const*>(bias) : nullptr,
        g.modulated ? static_cast<uint16_t const*>(mask) : nullptr, static_cast<uint16_t*>(yNhwc), true, false, false};
    return deformrt::tchost::forwardTensorCoreHost(deformrt::tc::makeTcGeometry(g), p, tileShape) ? 0 : 1;
}

int64_t deformrt_dcn_tc_shared_bytes(DeformrtConvDesc const* desc, int32_t tileShape)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr || tileShape < 0
        || tileShape >= deformrt::tc::kTileShapes)
    {
        return -1;
    }
    return deformrt::tc::sharedBytes(deformrt::tc::makeTcGeometry(deformrt::makeGeometry(*desc)), tileShape);
}

int32_t deformrt_dcn_tc_tile_shape(DeformrtConvDesc const* desc, int32_t smCount)
{
    if (desc == nullptr || deformrt::describeInvalid(*desc) != nullptr)
    {
        return -1;
    }
    deformrt::tc::TcGeometry const t = deformrt::tc::makeTcGeometry(deformrt::makeGeometry(*desc));
    return deformrt::tc::tensorCoreApplies(t)
        ? deformrt::tc::chooseTileShape(t, smCount, deformrt::tc::kMaxSharedBytes)
        : -1;
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
