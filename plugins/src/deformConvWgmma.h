// The Hopper (sm_90a) path of the fp16 tensor-core deformable convolution: the tile code the CUDA kernel
// (deformConvWgmma.cu) and its CPU emulation (deformConvHost.cpp) share.
//
// The same implicit GEMM, prologue and gather as the mma.sync kernel (deformConvTensorCore.h, whose helpers
// this path calls), with the MMAs done by wgmma.mma_async and A taken from registers:
//   CTA      128 pixels x BN output channels (BN 256, or 128 for groups of at most 128 channels), two
//            warpgroups of 128 threads; warpgroup w owns rows 64w .. 64w + 63 and all BN columns, its fp32
//            accumulators in registers (m64nBNk16: BN / 2 floats per thread, the D fragment layout below).
//   operands A (the gathered, blended, once-rounded fp16 values) straight into each thread's A fragment
//            registers, in the register-A K order (deformConvTensorCore.h: each thread gathers one 16-byte
//            vector per corner for each of its fragment's two rows); B (the weights, in the same K order,
//            by 4-byte cp.async: bWordCopies) in shared memory, K-major in wgmma's 64-byte swizzle
//            (wgmmaTileByte), read through a matrix descriptor (wgmmaDescriptor): wgmma.mma_async with A
//            from registers and B from shared memory (RS). No A tile in shared memory.
//   per step the two 16-deep K slices' wgmmas are committed as one group; the next step's B copy, every
//            corner load of its gather and the blend into the other register buffer run while they
//            execute; then cp.async.wait_group 0, wgmma.wait_group 0, fence.proxy.async (the generic-proxy
//            writes become visible to the async proxy) and a barrier. wgmma.fence before each step's wgmmas
//            orders the blend's register writes before them.
//
// A fragment of m64nNk16 .f16 from registers: warp j (0..3) of the warpgroup holds rows 16j .. 16j + 15 in
// the m16n8k16 A layout of mma.sync (four .f16x2 registers per thread and K slice).
// D fragment of m64nNk16 with .f32 accumulators: warp j (0..3) of the warpgroup holds rows 16j .. 16j + 15;
// for each n8 block b, lane l holds d[4b + i] at row 16j + l / 4 + (i >= 2 ? 8 : 0), column
// 8b + 2 (l % 4) + (i & 1): per warp the m16n8 accumulator layout of mma.sync, so the shared epilogue
// (warpPlace with WarpsM = 8, WM = 16) stores it unchanged.
#pragma once

#include "deformConvTensorCore.h"

#include <cstdint>

namespace deformrt
{
namespace tc
{

constexpr int32_t kWarpgroupThreads = 128;
constexpr int32_t kWgmmaSwizzleBytes = 64; //!< the swizzle mode: one 64-byte tile row (kStepK halves)
constexpr int32_t kWgmmaAtomBytes = 8 * kWgmmaSwizzleBytes; //!< a swizzle atom: 8 rows (the descriptor's SBO)
static_assert(kRowBytes == kWgmmaSwizzleBytes, "a step's tile row is one 64-byte swizzle row");

//! Byte of 16-byte vector ``vec`` (0..3) of row ``row`` of a wgmma operand tile (K-major, 64-byte
//! swizzle): the vector index XOR bits 1-2 of the row, i.e. byte bits 4-5 XOR bits 7-8. The tile must
//! start 512-byte aligned (the swizzle is applied to shared-memory addresses).
DEFORMRT_HD int32_t wgmmaTileByte(int32_t row, int32_t vec)
{
    return row * kRowBytes + ((vec ^ ((row >> 1) & 3)) << 4);
}

//! The wgmma kernel's tile shape: 8 warps in two warpgroups, each warp 16 rows x BN columns.
template <int32_t BN_>
struct WgmmaShape
{
    static constexpr int32_t BM = 128;
    static constexpr int32_t BN = BN_;
    static constexpr int32_t Warpgroups = BM / kWarpgroupRows;
    static constexpr int32_t Threads = Warpgroups * kWarpgroupThreads;
    static constexpr int32_t WarpsM = Threads / kWarpSize; //!< warps along the rows (16 rows each)
    static constexpr int32_t WarpsN = 1;
    static constexpr int32_t WM = BM / WarpsM;
    static constexpr int32_t WN = BN;
    static constexpr int32_t MT = 1;
    static constexpr int32_t NT = BN / 8;
    //! A: two vectors per thread and step (its fragment's two rows: registerAPlace), loaded in one phase.
    static constexpr int32_t VectorsPerThread = BM * kVectorsPerRow / Threads;
    static constexpr int32_t Phases = 1;
    static constexpr int32_t PartsPerSlice = 1;
    static constexpr int32_t VectorsPerPhase = VectorsPerThread;
    static constexpr bool PairedSlots = false; //!< the two vectors are in different rows
    static constexpr bool Wgmma = true;
    using ARegisters = RegisterA;              //!< A in registers, no shared A buffers
    static constexpr int32_t AStages = 0;
    static DEFORMRT_HD int32_t byteOf(int32_t row, int32_t vec)
    {
        return wgmmaTileByte(row, vec);
    }
    static_assert(WM == 16 && VectorsPerThread == 2, "a warp's accumulators are one m16 block row");
    // Every B buffer starts a 1024-byte boundary of the (1024-byte aligned) shared window: the prologue
    // tables (32 bytes per pixel and tap) and each buffer are multiples of 1024 bytes.
    static_assert(BM * int32_t(sizeof(CornerOffsets) + sizeof(CornerWeights)) % 1024 == 0
            && BN * kRowBytes % 1024 == 0,
        "swizzle atoms aligned in shared memory");
};

using WgmmaN256 = WgmmaShape<256>;
using WgmmaN128 = WgmmaShape<128>;
static_assert(kTileBM[kWgmmaShapeN256] == WgmmaN256::BM && kTileBN[kWgmmaShapeN256] == WgmmaN256::BN
        && kTileWarpsM[kWgmmaShapeN256] == WgmmaN256::WarpsM && kTileBM[kWgmmaShapeN128] == WgmmaN128::BM
        && kTileBN[kWgmmaShapeN128] == WgmmaN128::BN && kTileWarpsM[kWgmmaShapeN128] == WgmmaN128::WarpsM,
    "the plan tables describe the wgmma shapes");

// ------------------------------------------------------------------------------------------------
// Matrix descriptors (PTX ISA, wgmma matrix descriptor): bits 0-13 start address >> 4, 16-29 leading
// dimension byte offset >> 4 (unused for K-major swizzled operands whose K fits the swizzle row: 1),
// 32-45 stride dimension byte offset >> 4 (between 8-row groups), 49-51 base offset (0: atoms 512-byte
// aligned), 62-63 swizzle mode (2: 64 bytes).

constexpr uint64_t kWgmmaSwizzleMode64 = 2;

DEFORMRT_HD uint64_t wgmmaDescriptor(uint32_t sharedAddress)
{
    return uint64_t((sharedAddress & 0x3ffffu) >> 4) | (uint64_t(1) << 16)
        | (uint64_t(kWgmmaAtomBytes >> 4) << 32) | (kWgmmaSwizzleMode64 << 62);
}

//! The B descriptor of one wgmma: K slice ``kk`` of B buffer ``stage``, given the shared address of the B
//! buffers (SharedLayout). A K slice starts 32 bytes into the row: the hardware applies the swizzle to the
//! resulting addresses.
template <class Shape>
DEFORMRT_HD uint64_t wgmmaBDescriptor(uint32_t bAddress, int32_t stage, int32_t kk)
{
    return wgmmaDescriptor(bAddress + uint32_t(stage * Shape::BN) * kRowBytes + uint32_t(kk) * 32u);
}

// ------------------------------------------------------------------------------------------------
// Tiles and plans

//! The tile of CTA (bx, by, bz): makeTile's, with the gathered rows rounded up to whole warpgroups (a
//! warpgroup's wgmma reads all its 64 rows; rows past the tile's are gathered as zeros).
template <class Shape>
DEFORMRT_HD TcTile wgmmaTile(TcGeometry const& t, TcPlan const& plan, int64_t bx, int32_t by, int32_t bz)
{
    TcTile tile = makeTile(t, plan, Shape::BN, bx, by, bz);
    tile.gatherRows = (tile.rows + kWarpgroupRows - 1) / kWarpgroupRows * kWarpgroupRows;
    return tile;
}

//! Whether warpgroup ``warpgroup`` has gathered rows (warpgroup-uniform: one without skips its wgmmas).
DEFORMRT_HD bool warpgroupActive(TcTile const& tile, int32_t warpgroup)
{
    return warpgroup * kWarpgroupRows < tile.gatherRows;
}

//! Whether the wgmma kernel takes this problem: the tensor-core kernel's conditions and channel counts
//! that give 16-byte vectors (the kernel has no scalar path; the launcher also checks the pointers).
inline bool wgmmaApplies(TcGeometry const& t)
{
    return tensorCoreApplies(t) && vectorChannels(t);
}

//! The wgmma launch for ``dev`` (an sm_90 GPU): the 128 x 128 shape for groups of at most 128 output
//! channels, else 128 x 256 (channel tiles of 256 beyond that), then 64 or 128 pixels per CTA and K
//! splits as choosePlanForShape picks them. ``forcedShape`` (kWgmmaShapeN256 / N128), ``forcedExtent``,
//! ``forcedSplit`` restrict the choice (tests). plan.shape < 0: the problem does not fit.
inline TcPlan chooseWgmmaPlan(TcGeometry const& t, TcDevice const& dev, uint64_t partialWorkspaceBytes,
    int32_t forcedShape = -1, int32_t forcedExtent = 0, int32_t forcedSplit = 0)
{
    TcPlan none{};
    none.shape = -1;
    if (!wgmmaApplies(t) || (forcedShape >= 0 && !isWgmmaShape(forcedShape)))
    {
        return none;
    }
    int32_t const shape = forcedShape >= 0 ? forcedShape
        : t.g.cOutPerGroup <= WgmmaN128::BN ? kWgmmaShapeN128 : kWgmmaShapeN256;
    if (!shapeFits(t, shape, dev))
    {
        return none;
    }
    return choosePlanForShape(t, dev, partialWorkspaceBytes, shape, forcedExtent, forcedSplit);
}

//! The launch a GPU makes for ``t``: with ``wgmma`` (a compute capability 9.0 GPU and the sm_90a build) the
//! wgmma kernel's plan where it takes the problem, else the mma.sync kernel's; forced parts as choosePlan's
//! (a forced mma.sync shape skips the wgmma kernel). The CUDA launcher and the CPU build both plan through it.
inline TcPlan chooseLaunchPlan(TcGeometry const& t, TcDevice const& dev, bool wgmma, int32_t forcedShape = -1,
    int32_t forcedExtent = 0, int32_t forcedSplit = 0)
{
    if (wgmma)
    {
        TcPlan const plan = chooseWgmmaPlan(t, dev, partialBytes(t.g), forcedShape, forcedExtent, forcedSplit);
        if (plan.shape >= 0)
        {
            return plan;
        }
    }
    return choosePlan(t, dev, partialBytes(t.g), forcedShape, forcedExtent, forcedSplit);
}

// ------------------------------------------------------------------------------------------------
// CPU emulation of wgmma.mma_async.sync.aligned.m64nNk16.f32.f16.f16 with A from registers and B in shared
// memory (host only): A is decoded from the 128 threads' fragment registers with the fragment formulas, B
// read through its descriptor with the 64-byte swizzle applied to the addresses (as the hardware does), each
// output is C plus the 16 products summed exactly and rounded once to fp32, and D is scattered to the 128
// threads with the D fragment formulas. A fragment, descriptor, swizzle or store layout that disagrees gives
// a wrong D.

//! The fp16 element (row, k) of a K-major, 64-byte-swizzled operand at descriptor ``desc`` in the shared
//! memory window ``shared`` (addresses relative to it; on the GPU the window is 1024-byte aligned).
inline uint16_t wgmmaOperandHalf(unsigned char const* shared, uint64_t desc, int32_t row, int32_t k)
{
    uint32_t const start = uint32_t(desc & 0x3fffu) << 4;
    uint32_t const strideBytes = uint32_t((desc >> 32) & 0x3fffu) << 4;
    uint32_t address
        = start + uint32_t(row / 8) * strideBytes + uint32_t(row % 8) * kWgmmaSwizzleBytes + uint32_t(k) * 2;
    address ^= ((address >> 7) & 3u) << 4;
    return uint16_t(shared[address] | (shared[address + 1] << 8));
}

//! One warpgroup's wgmma: ``a`` holds the A fragment registers of its 128 threads (thread 128w + i at a[i]),
//! ``acc`` their accumulators, updated in place.
template <class Shape>
void emulateWgmmaRS(unsigned char const* shared, uint32_t const (&a)[kWarpgroupThreads][4], uint64_t bDescriptor,
    Accumulators<Shape>* acc)
{
    float am[kWarpgroupRows][16];
    float b[Shape::BN][16];
    for (int32_t thread = 0; thread < kWarpgroupThreads; ++thread)
    {
        int32_t const warp = thread / kWarpSize;
        int32_t const lane = thread % kWarpSize;
        for (int32_t i = 0; i < 8; ++i)
        {
            am[16 * warp + fragARow(lane, i)][fragACol(lane, i)] = fragmentHalf(a[thread], i);
        }
    }
    for (int32_t n = 0; n < Shape::BN; ++n)
    {
        for (int32_t k = 0; k < 16; ++k)
        {
            b[n][k] = halfBitsToFloat(wgmmaOperandHalf(shared, bDescriptor, n, k));
        }
    }
    for (int32_t thread = 0; thread < kWarpgroupThreads; ++thread)
    {
        int32_t const warp = thread / kWarpSize;
        int32_t const lane = thread % kWarpSize;
        for (int32_t block = 0; block < Shape::NT; ++block)
        {
            for (int32_t i = 0; i < 4; ++i)
            {
                int32_t const row = 16 * warp + accRow(lane, i);
                int32_t const col = 8 * block + accCol(lane, i);
                float& c = acc[thread].c[0][block].v[i];
                double sum = c;
                for (int32_t k = 0; k < 16; ++k)
                {
                    sum += double(am[row][k]) * double(b[col][k]);
                }
                c = float(sum);
            }
        }
    }
}

#ifdef __CUDACC__
//! Whether this build holds the wgmma kernel's sm_90a code (deformConvWgmma.cu).
bool wgmmaKernelBuilt();

//! The wgmma kernel for ``plan`` (a wgmma shape; p.vector set; the split-K reduction is the caller's).
cudaError_t launchWgmma(TcGeometry const& t, TcTensors const& p, TcPlan const& plan, cudaStream_t stream);
#endif

} // namespace tc
} // namespace deformrt
