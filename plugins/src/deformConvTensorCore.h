// The fp16 tensor-core deformable convolution (sm_80 and newer), written once for the GPU and its
// exact CPU emulation.
//
// Implicit GEMM per convolution group: D[M x N] = A[M x K] * B[K x N] with
//   M = output pixels of the whole batch, N = output channels of the group,
//   K = taps x input channels in channel-chunk-major order: step s = chunk * taps + tap covers the
//       chunk's chunkC channels at one kernel tap, padded with zeros to kStepK (two m16n8k16 K slices).
// A is never materialised in memory: a CTA gathers one step of it into shared memory at a time.
// B is read straight from the weight tensor in OHWI layout ([cOut][kh][kw][cPerGroup], deformConvDesc.h):
// step (chunk, tap) of output channel co is the run of chunkC channels at
// ((co * taps + tap) * cPerGroup + chunk * chunkC), 16-byte vectors of 8 channels where aligned. An OIHW
// weight is transposed to OHWI first (ohwiSourceIndex), into the caller's workspace.
//
// What a CTA covers (TcPlan): mExtent pixels (a multiple of 16, at most the shape's BM) times all BN
// output channels of its tile shape (a shape covers all of a group's output channels up to 256; above
// that the channels are split into BN-wide tiles, each gathering A again), over a range of K steps
// (splitK > 1: each split writes fp32 partial sums, splitKReduce adds them in split order).
//
// CTA phases, separated by barriers (the GPU runs them with __syncthreads(); the CPU build runs every
// thread of a phase, warp by warp for the MMA phase, before the next phase starts):
//   prologue  per (pixel, tap) of the tile: the four corner element offsets (clamped into the image)
//             and the four bilinear weights times the mask (zero for a corner outside the image), in
//             fp32, into shared memory; every channel reuses them (recomputed only where the chunks
//             move to another offset group)
//   main loop per K step, the next step's work pipelined with this step's MMAs:
//     loadB      the next step's weights by cp.async into the other B buffer
//     and for each of the step's two 16-deep K slices (phases):
//       gather   this thread's share of the next step's A vectors: four 16-byte corner loads each,
//                into registers (Staged), issued before the slice's MMAs
//       mma      per warp: A and B fragments by ldmatrix.x4, mma.sync m16n8k16 f16 x f16 -> f32 (the
//                CPU build reads the fragments with the PTX ISA's per-lane formulas and emulates mma)
//       blend    the loaded corners times their weights in fp32, rounded once to the fp16 operand,
//                one 16-byte store into the other A buffer
//     then the copies are waited for and the CTA synchronises
//   epilogue  fp32 accumulators + bias, rounded once to fp16, NHWC or NCHW output (or the partial sums)
//
// Shared tiles hold rows of kStepK halves (64 bytes: four 16-byte vectors) with the vectors of each row
// permuted by an XOR of the row (tileByte): the gather's 16-byte stores and ldmatrix's 8-row reads both
// hit 32 different banks.
#pragma once

#include "deformConvMath.h"

#include <cstdint>

namespace deformrt
{
namespace tc
{

constexpr int32_t kWarpSize = 32;
constexpr int32_t kStepK = 32;                       //!< K of one step in every tile shape (two 16-deep slices)
constexpr int32_t kMaxChunkC = kStepK;               //!< channels per chunk at most (the chunk divides the groups)
constexpr int32_t kVector = 8;                       //!< channels per 16-byte vector
constexpr int32_t kVectorsPerRow = kStepK / kVector; //!< 16-byte vectors per shared tile row
constexpr int32_t kRowBytes = kStepK * 2;            //!< bytes per shared tile row
constexpr int32_t kSlices = kStepK / 16;             //!< mma K slices per step
constexpr int64_t kMinOptInBytes = 99 * 1024;        //!< the smallest sm_80+ opt-in (sm_86/89): every problem the
                                                     //!< kernel takes has a shape within it
constexpr int64_t kMaxSharedBytes = 227 * 1024;      //!< the largest sm_80+ opt-in (sm_90)
constexpr int32_t kMaxSplitK = 8;                    //!< K splits at most
constexpr int32_t kSplitKMinK = 2048;                //!< K (taps x channels per group) below which K is never split
constexpr uint64_t kSplitKMaxBytes = uint64_t(24) << 20; //!< the partial sums' workspace at most

// ------------------------------------------------------------------------------------------------
// fp16 bits <-> float, the same rounding (to nearest even) on both builds.

DEFORMRT_HD float halfToFloat(uint16_t bits)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(bits));
#else
    return halfBitsToFloat(bits);
#endif
}

DEFORMRT_HD uint16_t floatToHalf(float v)
{
#ifdef __CUDA_ARCH__
    return __half_as_ushort(__float2half_rn(v));
#else
    return floatToHalfBits(v);
#endif
}

//! The two fp16 halves of a word as floats (exact), the lower index first.
DEFORMRT_HD void unpackHalves(uint32_t word, float& lo, float& hi)
{
#ifdef __CUDA_ARCH__
    // both halves from one unpack (cuda_fp16.h's __half22float2 unpacks once per half)
    asm("{\n .reg .f16 %%lo, %%hi;\n mov.b32 {%%lo, %%hi}, %2;\n cvt.f32.f16 %0, %%lo;\n cvt.f32.f16 %1, %%hi;\n}"
        : "=f"(lo), "=f"(hi)
        : "r"(word));
#else
    lo = halfBitsToFloat(uint16_t(word & 0xffffu));
    hi = halfBitsToFloat(uint16_t(word >> 16));
#endif
}

//! Two floats rounded to fp16 and packed (the lower index in the low half).
DEFORMRT_HD uint32_t packHalves(float lo, float hi)
{
#ifdef __CUDA_ARCH__
    __half2 const h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t const*>(&h);
#else
    return uint32_t(floatToHalf(lo)) | (uint32_t(floatToHalf(hi)) << 16);
#endif
}

// ------------------------------------------------------------------------------------------------
// Geometry of the K order

struct TcGeometry
{
    DcnGeometry g;
    int32_t chunkC; //!< channels per chunk: the largest divisor of gcd(cPerGroup, cPerOffsetGroup) <= kMaxChunkC
    int32_t chunks; //!< cPerGroup / chunkC
    int32_t steps;  //!< chunks * taps
};

inline int32_t greatestCommonDivisor(int32_t a, int32_t b)
{
    while (b != 0)
    {
        int32_t const r = a % b;
        a = b;
        b = r;
    }
    return a;
}

//! Chunks never straddle a convolution-group or offset-group boundary: chunkC divides both sizes.
inline TcGeometry makeTcGeometry(DcnGeometry const& g)
{
    TcGeometry t{};
    t.g = g;
    int32_t const common = greatestCommonDivisor(g.cPerGroup, g.cPerOffsetGroup);
    t.chunkC = 1;
    for (int32_t d = kMaxChunkC; d >= 1; --d)
    {
        if (common % d == 0)
        {
            t.chunkC = d;
            break;
        }
    }
    t.chunks = g.cPerGroup / t.chunkC;
    t.steps = t.chunks * g.taps;
    return t;
}

//! Offset group of a chunk's channels (constant across the chunk).
DEFORMRT_HD int32_t chunkOffsetGroup(TcGeometry const& t, int32_t grp, int32_t chunk)
{
    return (grp * t.g.cPerGroup + chunk * t.chunkC) / t.g.cPerOffsetGroup;
}

//! Where OHWI element ``e`` ([cOut][taps][cPerGroup]) is in the same weights stored OIHW
//! ([cOut][cPerGroup][taps]): the gather of the OIHW -> OHWI transpose.
DEFORMRT_HD int64_t ohwiSourceIndex(DcnGeometry const& g, int64_t e)
{
    int64_t const perOutput = int64_t(g.taps) * g.cPerGroup;
    int64_t const co = e / perOutput;
    int64_t const rest = e - co * perOutput;
    int32_t const tap = int32_t(rest / g.cPerGroup);
    int32_t const ci = int32_t(rest - int64_t(tap) * g.cPerGroup);
    return (co * g.cPerGroup + ci) * g.taps + tap;
}

//! Elements of the weight tensor.
inline int64_t weightElements(DcnGeometry const& g)
{
    return int64_t(g.cOut) * g.cPerGroup * g.taps;
}

// ------------------------------------------------------------------------------------------------
// Tile shapes: WarpsM x WarpsN warps, each owning (BM / WarpsM) x (BN / WarpsN) outputs.

constexpr int32_t kWarpRows = 32; //!< rows of a warp tile's row block: the step of TcPlan::mExtent

DEFORMRT_HD int32_t tileByte(int32_t row, int32_t vec);

//! Where a shape's gather puts A: the mma.sync shapes store it in shared memory and hold no A registers.
struct NoRegisterA
{
};

//! The wgmma shapes' A operand in registers (wgmma.mma_async with A from registers): per buffer and K slice
//! the four .f16x2 registers of the thread's A fragment (deformConvWgmma.h: the fragment layout and the
//! register-A K order). Two buffers: the gather fills one while an in-flight wgmma reads the other.
struct RegisterA
{
    uint32_t r[2][kSlices][4];
};

template <int32_t BM_, int32_t BN_, int32_t WarpsM_, int32_t WarpsN_>
struct TileShape
{
    static constexpr int32_t BM = BM_; //!< pixels per CTA at most (TcPlan::mExtent may be fewer)
    static constexpr int32_t BN = BN_; //!< output channels per CTA
    static constexpr int32_t WarpsM = WarpsM_;
    static constexpr int32_t WarpsN = WarpsN_;
    static constexpr int32_t Threads = WarpsM * WarpsN * kWarpSize;
    static constexpr int32_t WM = BM / WarpsM; //!< warp tile rows (pixels)
    static constexpr int32_t WN = BN / WarpsN; //!< warp tile columns (output channels)
    static constexpr int32_t MT = WM / 16;     //!< m16 MMA tiles per warp
    static constexpr int32_t NT = WN / 8;      //!< n8 MMA tiles per warp
    static constexpr int32_t VectorsPerThread = BM * kVectorsPerRow / Threads;  //!< A vectors per step
    //! The main loop's phases per step: one A vector's loads, a share of the step's MMAs (a K slice, or part
    //! of one: PartsPerSlice column ranges), that vector's blend; at least one phase per K slice.
    static constexpr int32_t Phases = VectorsPerThread > kSlices ? VectorsPerThread : kSlices;
    static constexpr int32_t PartsPerSlice = Phases / kSlices;
    static constexpr int32_t VectorsPerPhase = (VectorsPerThread + Phases - 1) / Phases;
    //! Slots 2i and 2i + 1 share a row (aVectorPlace), one slot per phase.
    static constexpr bool PairedSlots = VectorsPerThread >= 2 && VectorsPerPhase == 1;
    static constexpr int32_t BVectorsPerThread = BN * kVectorsPerRow / Threads; //!< B vectors per step
    static constexpr bool Wgmma = false; //!< the MMAs: mma.sync by warps (WgmmaShape: wgmma by warpgroups)
    using ARegisters = NoRegisterA;      //!< A is in shared memory
    static constexpr int32_t AStages = 2; //!< shared A buffers (sharedLayout)
    static constexpr bool PairedB = BVectorsPerThread >= 2; //!< B slots 2i and 2i + 1 share a row (bCopies)
    //! kWarpRows-row blocks of a warp tile: a block past the tile's gathered rows skips its MMAs.
    static constexpr int32_t RowBlocks = WM / kWarpRows;
    static constexpr int32_t MTPerBlock = kWarpRows / 16; //!< m16 tiles of a row block
    //! Byte of 16-byte vector ``vec`` of row ``row`` in a shared A or B tile (the gather's and loadB's stores).
    static DEFORMRT_HD int32_t byteOf(int32_t row, int32_t vec)
    {
        return tileByte(row, vec);
    }
    static_assert(WM % kWarpRows == 0 && WN % 16 == 0, "warp tile: whole row blocks and pairs of n8 tiles "
                                                       "(ldmatrix.x4)");
    static_assert(BM * kVectorsPerRow % Threads == 0 && BN * kVectorsPerRow % Threads == 0, "whole vectors");
    static_assert(Phases % kSlices == 0 && NT % (2 * PartsPerSlice) == 0, "phases split the MMAs evenly");
};

// Shape indices 0, 1, 2 (TcPlan::shape, DEFORMRT_TC_TILE_SHAPE): one shape per width of the output-channel
// tile. The wide shapes' warp tiles are 64 x 64: per K slice a warp reads 16 A and 16 B wavefronts of
// fragments for its 32 MMAs (a 32 x 128 warp tile reads 8 + 32: every warp the whole B tile). A CTA still
// covers any multiple of 32 pixels (TcPlan::mExtent, for wave efficiency): a warp tile is two 32-row blocks,
// and a block past the tile's gathered rows skips its A fragments and MMAs with one warp-uniform branch
// (predicating single m16 tiles instead makes ptxas branch around each HMMA).
using TileN256 = TileShape<128, 256, 2, 4>; // groups with more than 128 output channels; warp tile 64 x 64
using TileN128 = TileShape<256, 128, 4, 2>; // 65 to 128 output channels; warp tile 64 x 64
using TileN64 = TileShape<64, 64, 2, 4>;    // up to 64 (warp tile 32 x 16); also the smallest shared memory
constexpr int32_t kTileShapes = 3;         //!< the mma.sync shapes (0 .. 2)
// Shapes 3 and 4: the Hopper (sm_90a) wgmma kernel's 128 x 256 and 128 x 128 tiles, two warpgroups of 64
// rows each (deformConvWgmma.h, WgmmaShape); planned by chooseWgmmaPlan only.
constexpr int32_t kWgmmaShapeN256 = 3;
constexpr int32_t kWgmmaShapeN128 = 4;
constexpr int32_t kPlanShapes = 5;         //!< every shape index a TcPlan may hold
constexpr int32_t kWarpgroupRows = 64;     //!< rows of a wgmma warpgroup tile: the step of a wgmma plan's mExtent
constexpr int32_t kTileBM[kPlanShapes] = {TileN256::BM, TileN128::BM, TileN64::BM, 128, 128};
constexpr int32_t kTileBN[kPlanShapes] = {TileN256::BN, TileN128::BN, TileN64::BN, 256, 128};
constexpr int32_t kTileWarpsM[kPlanShapes] = {TileN256::WarpsM, TileN128::WarpsM, TileN64::WarpsM, 8, 8};
constexpr int32_t kTileWarpsN[kPlanShapes] = {TileN256::WarpsN, TileN128::WarpsN, TileN64::WarpsN, 1, 1};

//! Whether shape index ``shape`` is one of the wgmma kernel's.
DEFORMRT_HD bool isWgmmaShape(int32_t shape)
{
    return shape == kWgmmaShapeN256 || shape == kWgmmaShapeN128;
}

// ------------------------------------------------------------------------------------------------
// Shared memory: prologue tables, then two A (none for the wgmma shapes) and two B tiles.

struct alignas(16) CornerWeights
{
    float w00, w01, w10, w11; //!< bilinear weight x mask of each corner; zero for a corner outside the image
};

struct alignas(16) CornerOffsets
{
    uint32_t o00, o01, o10, o11; //!< x element offset of each corner's pixel (clamped into the image)
};

struct SharedLayout
{
    int64_t offsetsOffset, weightsOffset, aOffset, bOffset, bytes;
    int32_t aStageBytes, bStageBytes;
};

//! The shared memory of a bm x bn tile shape: prologue tables for ``taps`` taps, ``aStages`` A buffers (2; 0
//! for the wgmma shapes, whose A is in registers), two B buffers.
DEFORMRT_HD SharedLayout sharedLayout(int32_t bm, int32_t bn, int32_t taps, int32_t aStages)
{
    SharedLayout s{};
    int64_t const entries = int64_t(taps) * bm;
    s.offsetsOffset = 0;
    s.weightsOffset = entries * int64_t(sizeof(CornerOffsets));
    s.aOffset = (s.weightsOffset + entries * int64_t(sizeof(CornerWeights)) + 127) / 128 * 128; // rows on bank lines
    s.aStageBytes = bm * kRowBytes;
    s.bStageBytes = bn * kRowBytes;
    s.bOffset = s.aOffset + aStages * int64_t(s.aStageBytes);
    s.bytes = s.bOffset + 2 * int64_t(s.bStageBytes);
    return s;
}

struct SharedView
{
    CornerOffsets* offsets; //!< [taps][BM]
    CornerWeights* weights; //!< [taps][BM]
    unsigned char* a;       //!< [2][BM] rows of kRowBytes, vectors permuted (tileByte); none on the wgmma path
    unsigned char* b;       //!< [2][BN] rows of kRowBytes, vectors permuted
    int32_t aStageBytes, bStageBytes;
};

DEFORMRT_HD SharedView sharedView(unsigned char* base, SharedLayout const& s)
{
    return SharedView{reinterpret_cast<CornerOffsets*>(base + s.offsetsOffset),
        reinterpret_cast<CornerWeights*>(base + s.weightsOffset), base + s.aOffset, base + s.bOffset, s.aStageBytes,
        s.bStageBytes};
}

//! Byte of 16-byte vector ``vec`` (0..3) of tile row ``row``. Two rows share a 128-byte bank line; the
//! vectors of a row pair m = row / 2 are permuted by f(m) = ((m & 1) << 1) | ((m >> 1) & 1), a bijection
//! on m mod 4, so that each access hits all 32 banks once: eight consecutive rows' vector ``vec`` (an
//! ldmatrix 8 x 8 matrix), two rows' four vectors (8 lanes of B's 16-byte copies) and four rows' vectors
//! {v, v + 1}, v even (8 lanes of the gather's stores: f(m) and f(m + 1) differ in bit 1 for even m).
DEFORMRT_HD int32_t tileByte(int32_t row, int32_t vec)
{
    int32_t const m = row >> 1;
    return row * kRowBytes + ((vec ^ (((m & 1) << 1) | ((m >> 1) & 1))) << 4);
}

//! Two consecutive halves (k, k + 1; k even) of row ``row`` of a shared tile as one .f16x2 register.
DEFORMRT_HD uint32_t loadPair(unsigned char const* tile, int32_t row, int32_t k)
{
    unsigned char const* p = tile + tileByte(row, k >> 3) + (k & 7) * 2;
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<uint32_t const*>(p);
#else
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
#endif
}

// ------------------------------------------------------------------------------------------------
// One CTA's problem

//! fp16 tensors as bits: x is NHWC; offset and mask are NCHW; the weight is OHWI; y NHWC or NCHW.
struct TcTensors
{
    uint16_t const* x;
    uint16_t const* weight; //!< OHWI
    uint16_t const* offset;
    uint16_t const* bias; //!< null when the problem has none
    uint16_t const* mask; //!< null unless modulated
    uint16_t* y;
    float* partial;      //!< [splitK][cols][cOut] fp32 partial sums when the plan splits K, else null
    bool outputNhwc;
    bool vector;         //!< 16-byte vectors for x and the weight: channel counts multiples of 8, aligned pointers
    bool pairedOutput;   //!< two adjacent output channels per store: NHWC (or partial sums), even channel
                         //!< counts, y 4-byte aligned
};

//! How a launch covers the problem (choosePlan). Grid: x = pixel tiles of mExtent pixels, y = nTiles x
//! splitK (channel tile fastest), z = convolution groups.
struct TcPlan
{
    int32_t shape;         //!< tile shape index
    int32_t mExtent;       //!< pixels per CTA: a multiple of kWarpRows, at most the shape's BM
    int32_t splitK;        //!< K splits (1: none)
    int32_t stepsPerSplit; //!< K steps per split (the last split may have fewer)
    int32_t nTiles;        //!< output-channel tiles per group: ceil(cOutPerGroup / BN) (each gathers A again)
    int64_t mTiles;        //!< ceil(cols / mExtent)
};

struct TcTile
{
    int32_t grp;
    int64_t m0;         //!< first output pixel (of the whole batch)
    int32_t n0;         //!< first output channel within the group
    int32_t rows;       //!< output pixels of this tile: min(mExtent, cols - m0)
    int32_t gatherRows; //!< rows rounded up to whole warp tiles: the rows gathered (zero past ``rows``)
    int32_t split;      //!< K split index
    int32_t stepBegin, stepEnd;
};

//! The tile of CTA (bx, by, bz) of a launch of ``plan``.
DEFORMRT_HD TcTile makeTile(TcGeometry const& t, TcPlan const& plan, int32_t nBN, int64_t bx, int32_t by, int32_t bz)
{
    TcTile tile{};
    tile.grp = bz;
    tile.m0 = bx * plan.mExtent;
    int32_t const nTile = by % plan.nTiles;
    tile.split = by / plan.nTiles;
    tile.n0 = nTile * nBN;
    int64_t const left = t.g.cols - tile.m0;
    tile.rows = left < plan.mExtent ? int32_t(left) : plan.mExtent;
    tile.gatherRows = (tile.rows + kWarpRows - 1) / kWarpRows * kWarpRows;
    tile.stepBegin = tile.split * plan.stepsPerSplit;
    int32_t const end = tile.stepBegin + plan.stepsPerSplit;
    tile.stepEnd = end < t.steps ? end : t.steps;
    if (tile.stepBegin > tile.stepEnd)
    {
        tile.stepBegin = tile.stepEnd;
    }
    return tile;
}

//! The end of the run of K steps from ``first`` whose chunks share one offset group (within the tile's
//! steps): a CTA recomputes its prologue tables once per such run (usually the whole range).
DEFORMRT_HD int32_t segmentEnd(TcGeometry const& t, TcTile const& tile, int32_t first)
{
    int32_t const taps = t.g.taps;
    int32_t chunk = first / taps;
    int32_t const og = chunkOffsetGroup(t, tile.grp, chunk);
    while ((chunk + 1) * taps < tile.stepEnd && chunkOffsetGroup(t, tile.grp, chunk + 1) == og)
    {
        ++chunk;
    }
    return (chunk + 1) * taps < tile.stepEnd ? (chunk + 1) * taps : tile.stepEnd;
}

//! One K step: a chunk of channels at one tap.
struct KStep
{
    int32_t chunk, tap;
};

//! The K step after ``s`` in channel-chunk-major order.
DEFORMRT_HD KStep nextKStep(KStep s, int32_t taps)
{
    return s.tap + 1 == taps ? KStep{s.chunk + 1, 0} : KStep{s.chunk, s.tap + 1};
}

//! The GPU kernels' pipelined main loop over steps [first, last): ``step(stage)`` for every step but the
//! last (its MMAs read buffer ``stage`` while it fills the other), unrolled twice so that each call's buffers
//! are constants. Returns the buffer the last step's operands are in.
template <class Step>
DEFORMRT_HD int32_t pipelinedSteps(int32_t first, int32_t last, Step&& step)
{
    int32_t k = first;
    while (k + 1 < last)
    {
        step(0);
        if (++k + 1 >= last)
        {
            break;
        }
        step(1);
        ++k;
    }
    return (k - first) & 1;
}

//! Prologue: sampling data of every (tap, pixel) of the tile for offset group ``og``. A corner outside
//! the image gets weight zero and the offset of an inside pixel (the gather loads it unconditionally).
template <class Shape>
DEFORMRT_HD void prologue(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t og, int32_t tid,
    SharedView const& s)
{
    DcnGeometry const& g = t.g;
    for (int32_t e = tid; e < g.taps * Shape::BM; e += Shape::Threads)
    {
        int32_t const tap = e / Shape::BM;
        int32_t const r = e - tap * Shape::BM;
        if (r >= tile.gatherRows)
        {
            continue;
        }
        int64_t const col = tile.m0 + r;
        CornerWeights cw{0.0f, 0.0f, 0.0f, 0.0f};
        CornerOffsets co{0u, 0u, 0u, 0u};
        if (r < tile.rows)
        {
            DcnPixel const px = decodeColumn(g, col);
            int32_t const ki = tap / g.kw;
            int32_t const kj = tap - ki * g.kw;
            int64_t const tapChannel = (int64_t(px.n) * g.offsetGroup + og) * g.taps + tap;
            float const dy = halfToFloat(p.offset[2 * tapChannel * g.outPlane + px.pix]);
            float const dx = halfToFloat(p.offset[(2 * tapChannel + 1) * g.outPlane + px.pix]);
            float const m = g.modulated ? halfToFloat(p.mask[tapChannel * g.outPlane + px.pix]) : 1.0f;
            float const fy = floorf(dy);
            float const fx = floorf(dx);
            if (fabsf(fy) < kMaxOffset && fabsf(fx) < kMaxOffset)
            {
                int32_t const y0 = px.baseY + ki * g.dilH + int32_t(fy);
                int32_t const x0 = px.baseX + kj * g.dilW + int32_t(fx);
                if (y0 >= -1 && y0 < g.h && x0 >= -1 && x0 < g.w)
                {
                    float const ly = dy - fy;
                    float const lx = dx - fx;
                    bool const top = y0 >= 0;
                    bool const bottom = y0 + 1 < g.h;
                    bool const left = x0 >= 0;
                    bool const right = x0 + 1 < g.w;
                    float const wy0 = (1.0f - ly) * m;
                    float const wy1 = ly * m;
                    cw.w00 = top && left ? wy0 * (1.0f - lx) : 0.0f;
                    cw.w01 = top && right ? wy0 * lx : 0.0f;
                    cw.w10 = bottom && left ? wy1 * (1.0f - lx) : 0.0f;
                    cw.w11 = bottom && right ? wy1 * lx : 0.0f;
                    // Rows and columns clamped into the image: y0 in [-1, h - 1], so both stay inside.
                    uint32_t const rowA = uint32_t(px.n * g.h + (top ? y0 : y0 + 1)) * uint32_t(g.w);
                    uint32_t const rowB = uint32_t(px.n * g.h + (bottom ? y0 + 1 : y0)) * uint32_t(g.w);
                    uint32_t const colA = uint32_t(left ? x0 : x0 + 1);
                    uint32_t const colB = uint32_t(right ? x0 + 1 : x0);
                    uint32_t const c = uint32_t(g.c);
                    co = CornerOffsets{(rowA + colA) * c, (rowA + colB) * c, (rowB + colA) * c, (rowB + colB) * c};
                }
            }
        }
        s.weights[e] = cw;
        s.offsets[e] = co;
    }
}

//! The raw corners of this thread's A vectors of one phase, loaded before the MMAs and blended after, and
//! the table entries of the row its paired slots share (PairedSlots: read at the pair's first slot); on the
//! wgmma path also the blended A fragments (its gather's destination).
template <class Shape>
struct Staged
{
    uint32_t words[Shape::VectorsPerPhase][4][4]; //!< [vector][corner][4 words of 8 halves]
    CornerOffsets offsets;
    CornerWeights weights;
    typename Shape::ARegisters a;
};

//! Which tile row and 16-byte vector a thread's ``slot``-th vector of a step is.
struct VectorPlace
{
    int32_t row, vec;
};

// ------------------------------------------------------------------------------------------------
// The register-A K order of the wgmma shapes. wgmma's register A fragment (m64nNk16 .f16, per warp j of the
// warpgroup the m16n8k16 A layout) gives lane l, q = l % 4, rows 16j + l / 4 and + 8 and, per K slice s,
// the logical k pairs {16s + 2q, + 1} and {16s + 2q + 8, + 9}. Each step's 32 channels are permuted so that
// those eight logical k of a row are the 16-byte vector of physical channels 8q .. 8q + 7: physical channel
// 8q + 4s + 2h + e (h, e in {0, 1}) is logical k 16s + 2q + 8h + e. A thread then gathers one 16-byte vector
// per corner for each of its two rows (the same bytes and sectors as a shared-memory tile), and the blended
// words go straight into its fragment registers. B holds the same logical order: its 4-byte words are
// copied one by one to their permuted place (bWordCopies). The slices sum other products than the
// unpermuted order's (the mma.sync kernel's): the results agree within fp32 rounding, not bit for bit.

//! The thread's ``slot``-th A vector on the wgmma path (slot 0, 1: its fragment's rows l / 4 and + 8 within
//! its warp's 16 rows; vector l % 4 of the step's channels).
DEFORMRT_HD VectorPlace registerAPlace(int32_t tid, int32_t slot)
{
    int32_t const lane = tid % kWarpSize;
    return VectorPlace{16 * (tid / kWarpSize) + lane / 4 + 8 * slot, lane % 4};
}

//! The logical 4-byte word (0 .. 15: k pair 2w, 2w + 1) of a step row that physical word ``word`` (channels
//! 2 word, + 1) is in the register-A K order: word 4q + 2s + h -> 8s + q + 4h.
DEFORMRT_HD int32_t registerAWord(int32_t word)
{
    return 8 * ((word >> 1) & 1) + (word >> 2) + 4 * (word & 1);
}

//! The blended words ``out`` (physical channels 8q .. 8q + 7) of the thread's slot ``slot`` into A buffer
//! ``stage``: word 2s + h is register 2h + slot of slice s (rows l / 4 and + 8 are registers 0, 2 and 1, 3).
DEFORMRT_HD void placeRegisterA(RegisterA& a, int32_t stage, int32_t slot, uint32_t const (&out)[4])
{
DEFORMRT_UNROLL
    for (int32_t w = 0; w < 4; ++w)
    {
        a.r[stage][w >> 1][2 * (w & 1) + slot] = out[w];
    }
}

//! A thread's ``slot``-th 16-byte vector of a tile that ``Threads`` threads fill. Unpaired: consecutive threads
//! take consecutive vectors of a row; slot s is Threads / kVectorsPerRow rows further. Paired (two or more
//! vectors per thread): two threads per row, slots 2i and 2i + 1 of a thread are vectors (tid % 2) and
//! (tid % 2) + 2 of one row, the next pair Threads / 2 rows further, so that each load instruction of a
//! warp reads whole 32-byte sectors (a thread pair's vectors are adjacent) and an odd slot is its even
//! slot's source + 16 halves.
template <int32_t Threads, bool Paired>
DEFORMRT_HD VectorPlace tileVectorPlace(int32_t tid, int32_t slot)
{
    uint32_t const u = uint32_t(tid);
    if (!Paired)
    {
        return VectorPlace{
            int32_t(u / kVectorsPerRow) + slot * (Threads / kVectorsPerRow), int32_t(u % kVectorsPerRow)};
    }
    return VectorPlace{int32_t(u / 2) + (slot / 2) * (Threads / 2), int32_t(u % 2) + 2 * (slot % 2)};
}

//! Rows between a thread's slots (tileVectorPlace) that differ in row: consecutive ones, or pairs.
template <int32_t Threads, bool Paired>
constexpr int32_t slotRowStride()
{
    return Paired ? Threads / 2 : Threads / kVectorsPerRow;
}

//! Slot ``slot``'s row step: how many slotRowStride() its row is past slot 0's.
template <bool Paired>
DEFORMRT_HD int32_t slotRowStep(int32_t slot)
{
    return Paired ? slot / 2 : slot;
}

//! The tile byte of a thread's ``slot``-th vector (tileByte of tileVectorPlace) from its slot 0's byte
//! ``firstByte``: a slot's row is a multiple of 8 rows further (the vector permutation repeats every 8 rows),
//! and a paired odd slot's vector is the even one's + 2 (vector bit 1: byte bit 5). The loop-invariant part
//! is one register; each slot adds a constant.
template <int32_t Threads, bool Paired>
DEFORMRT_HD int32_t slotByte(int32_t firstByte, int32_t slot)
{
    static_assert(slotRowStride<Threads, Paired>() % 8 == 0, "slots repeat the vector permutation");
    int32_t const flip = Paired ? (slot & 1) << 5 : 0;
    return (firstByte ^ flip) + slotRowStep<Paired>(slot) * slotRowStride<Threads, Paired>() * kRowBytes;
}

//! B copies (and A with one vector per thread): tileVectorPlace, unpaired.
template <class Shape>
DEFORMRT_HD VectorPlace vectorPlace(int32_t tid, int32_t slot)
{
    return tileVectorPlace<Shape::Threads, false>(tid, slot);
}

//! A's gather: tileVectorPlace, paired with two or more vectors per thread (PairedSlots), so that the
//! row's sampling tables are also read once for both vectors of a pair. The wgmma shapes gather the rows of
//! the thread's A fragment instead (registerAPlace).
template <class Shape>
DEFORMRT_HD VectorPlace aVectorPlace(int32_t tid, int32_t slot)
{
    if constexpr (Shape::Wgmma)
    {
        return registerAPlace(tid, slot);
    }
    else
    {
        return tileVectorPlace<Shape::Threads, Shape::PairedSlots>(tid, slot);
    }
}

//! The A tile byte of a thread's ``slot``-th vector (Shape::byteOf of aVectorPlace).
template <class Shape>
DEFORMRT_HD int32_t aVectorByte(int32_t tid, int32_t slot)
{
    VectorPlace const first = aVectorPlace<Shape>(tid, 0);
    return slotByte<Shape::Threads, Shape::PairedSlots>(Shape::byteOf(first.row, first.vec), slot);
}

//! ``base`` + ``offset`` halves, for a 32-bit offset: one IMAD.WIDE.U32 on the GPU.
DEFORMRT_HD uint16_t const* halfAt(uint16_t const* base, uint32_t offset)
{
#ifdef __CUDA_ARCH__
    uint64_t address;
    asm("mad.wide.u32 %0, %1, 2, %2;" : "=l"(address) : "r"(offset), "l"(base));
    return reinterpret_cast<uint16_t const*>(address);
#else
    return base + offset;
#endif
}

//! Up to 8 consecutive channels of one NHWC pixel as 4 .f16x2 words; channels past ``count`` read as zero.
//! The GPU loads whole 16-byte vectors (``Vector``: count >= 8, aligned).
template <bool Vector>
DEFORMRT_HD void loadCorner(uint16_t const* src, int32_t count, uint32_t (&words)[4])
{
#ifdef __CUDA_ARCH__
    if (Vector)
    {
        // ld.global (x is read-only while the kernel runs): the address comes from halfAt's integer math
        asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(words[0]), "=r"(words[1]), "=r"(words[2]), "=r"(words[3])
            : "l"(src));
        return;
    }
#endif
DEFORMRT_UNROLL
    for (int32_t w = 0; w < 4; ++w)
    {
        uint32_t const lo = 2 * w < count ? src[2 * w] : 0u;
        uint32_t const hi = 2 * w + 1 < count ? src[2 * w + 1] : 0u;
        words[w] = lo | (hi << 16);
    }
}

//! The A vector the thread handles as the ``i``-th of phase ``phase`` (its slot and place), or false when
//! there is none: past the thread's vectors, or in a row past the tile's gathered rows (warp-uniform: a
//! warp's vectors are rows of one 32-row block).
template <class Shape>
DEFORMRT_HD bool phaseVector(TcTile const& tile, int32_t phase, int32_t i, int32_t tid, int32_t& slot, VectorPlace& v)
{
    slot = phase * Shape::VectorsPerPhase + i;
    if (slot >= Shape::VectorsPerThread)
    {
        return false;
    }
    v = aVectorPlace<Shape>(tid, slot);
    return v.row < tile.gatherRows;
}

//! Gather, first half: the four corners of this thread's A vectors of phase ``phase`` of step (chunk,
//! tap) into ``staged``. Nothing is loaded for rows past the tile's gathered rows or vectors past the chunk.
template <class Shape, bool Vector>
DEFORMRT_HD void gatherLoads(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t chunk, int32_t tap,
    int32_t phase, int32_t tid, SharedView const& s, Staged<Shape>& staged)
{
    CornerOffsets const* const offsets = s.offsets + tap * Shape::BM;
    uint16_t const* const chunkBase = p.x + (tile.grp * t.g.cPerGroup + chunk * t.chunkC);
DEFORMRT_UNROLL
    for (int32_t i = 0; i < Shape::VectorsPerPhase; ++i)
    {
        int32_t slot;
        VectorPlace v;
        if (!phaseVector<Shape>(tile, phase, i, tid, slot, v))
        {
            continue;
        }
        // A vector past the chunk (chunkC < kStepK) loads the chunk's first vector instead: its B rows are zero.
        int32_t const loaded = v.vec * kVector < t.chunkC ? v.vec : 0;
        int32_t const count = t.chunkC - loaded * kVector; // channels of the loaded vector (8 unless chunkC < 8)
        if (!Shape::PairedSlots || slot % 2 == 0)
        {
            staged.offsets = offsets[v.row];
        }
        CornerOffsets const& o = staged.offsets;
        uint32_t const corner[4] = {o.o00, o.o01, o.o10, o.o11};
        uint16_t const* const base = chunkBase + loaded * kVector;
DEFORMRT_UNROLL
        for (int32_t q = 0; q < 4; ++q)
        {
            loadCorner<Vector>(halfAt(base, corner[q]), count, staged.words[i][q]);
        }
    }
}

//! A blended vector ``out`` (the thread's slot ``slot`` at ``v``) into shared A buffer ``stage``.
template <class Shape>
DEFORMRT_HD void storeAVector(SharedView const& s, int32_t stage, int32_t tid, int32_t slot, VectorPlace const& v,
    uint32_t const (&out)[4])
{
    // Four or more slots: from the loop-invariant slot-0 byte (ptxas recomputes tileByte per slot otherwise);
    // two: tileByte itself (the same byte; ptxas keeps both slots' bytes then, 19 registers fewer at 128x256)
    unsigned char* const dst = s.a + stage * (Shape::BM * kRowBytes)
        + (Shape::VectorsPerThread > 2 ? aVectorByte<Shape>(tid, slot) : Shape::byteOf(v.row, v.vec));
#ifdef __CUDA_ARCH__
    *reinterpret_cast<uint4*>(dst) = make_uint4(out[0], out[1], out[2], out[3]);
#else
    for (int32_t w = 0; w < 4; ++w)
    {
        for (int32_t b = 0; b < 4; ++b)
        {
            dst[4 * w + b] = static_cast<unsigned char>(out[w] >> (8 * b));
        }
    }
#endif
}

//! Gather, second half: the staged corners of phase ``phase`` times their weights, summed in fp32 and
//! rounded once to fp16, into A buffer ``stage`` (one 16-byte store per vector; on the wgmma path the
//! thread's A fragment registers of that buffer, staged.a).
template <class Shape>
DEFORMRT_HD void gatherBlend(TcTile const& tile, int32_t tap, int32_t phase, int32_t stage, int32_t tid,
    SharedView const& s, Staged<Shape>& staged)
{
DEFORMRT_UNROLL
    for (int32_t i = 0; i < Shape::VectorsPerPhase; ++i)
    {
        int32_t slot;
        VectorPlace v;
        if (!phaseVector<Shape>(tile, phase, i, tid, slot, v))
        {
            continue;
        }
        uint32_t out[4];
        {
            if (!Shape::PairedSlots || slot % 2 == 0)
            {
                staged.weights = s.weights[tap * Shape::BM + v.row];
            }
            CornerWeights const& cw = staged.weights;
            float const weight[4] = {cw.w00, cw.w01, cw.w10, cw.w11};
DEFORMRT_UNROLL
            for (int32_t w = 0; w < 4; ++w)
            {
                float lo, hi;
                unpackHalves(staged.words[i][0][w], lo, hi);
                float accLo = weight[0] * lo;
                float accHi = weight[0] * hi;
DEFORMRT_UNROLL
                for (int32_t q = 1; q < 4; ++q)
                {
                    unpackHalves(staged.words[i][q][w], lo, hi);
                    accLo = fmaf(weight[q], lo, accLo);
                    accHi = fmaf(weight[q], hi, accHi);
                }
                out[w] = packHalves(accLo, accHi);
            }
        }
        if constexpr (Shape::Wgmma)
        {
            placeRegisterA(staged.a, stage, slot, out);
        }
        else
        {
            storeAVector<Shape>(s, stage, tid, slot, v, out);
        }
    }
}

//! This thread's B copies of a tile (loop-invariant): slot s copies 16-byte vector tileVectorPlace(tid, s)
//! (paired with two or more vectors per thread: PairedB) of B tile row r, i.e. output channel n0 + r of the
//! group, from the step's run of chunkC channels. Element offsets are 32-bit (tensorCoreApplies: the weight
//! has fewer than 2^31 elements).
struct BCopies
{
    uint32_t firstSource; //!< OHWI element of slot 0's vector at step (chunk 0, tap 0)
    uint32_t rowStepElements; //!< elements between the sources of slots one slotRowStep apart (slotRowStride rows)
    int32_t row, vec;     //!< slot 0's B tile row (output channel - n0) and vector
    int32_t channels;     //!< channels of the chunk in slot 0's vector (<= 0: none)
};

template <class Shape>
DEFORMRT_HD BCopies bCopies(TcGeometry const& t, TcTile const& tile, int32_t tid)
{
    DcnGeometry const& g = t.g;
    VectorPlace const v = tileVectorPlace<Shape::Threads, Shape::PairedB>(tid, 0);
    uint32_t const perOutput = uint32_t(g.taps) * uint32_t(g.cPerGroup);
    BCopies b{};
    b.row = v.row;
    b.vec = v.vec;
    b.channels = t.chunkC - v.vec * kVector;
    b.firstSource = (uint32_t(tile.grp) * uint32_t(g.cOutPerGroup) + uint32_t(tile.n0 + v.row)) * perOutput
        + uint32_t(v.vec * kVector);
    b.rowStepElements = uint32_t(slotRowStride<Shape::Threads, Shape::PairedB>()) * perOutput;
    return b;
}

//! Slot ``slot``'s source element at step (chunk 0, tap 0) is that of its even slot (the slot itself when
//! unpaired) + bOddSlotHalves(slot).
template <class Shape>
DEFORMRT_HD uint32_t bEvenSlotSource(BCopies const& b, int32_t slot)
{
    return b.firstSource + uint32_t(slotRowStep<Shape::PairedB>(slot)) * b.rowStepElements;
}

//! 16 halves (two vectors) for an odd paired B slot, else 0.
template <class Shape>
DEFORMRT_HD int32_t bOddSlotHalves(int32_t slot)
{
    return Shape::PairedB ? (slot & 1) * 2 * kVector : 0;
}

//! Whether slot ``slot`` of ``b`` copies weights (else zeros: past the chunk or the group's channels).
template <class Shape>
DEFORMRT_HD bool bSlotInside(TcGeometry const& t, TcTile const& tile, BCopies const& b, int32_t slot)
{
    int32_t const row = b.row + slotRowStep<Shape::PairedB>(slot) * slotRowStride<Shape::Threads, Shape::PairedB>();
    return b.channels - bOddSlotHalves<Shape>(slot) > 0 && tile.n0 + row < t.g.cOutPerGroup;
}

//! The OHWI element offset of step (chunk, tap) within a run: added to every slot's source.
DEFORMRT_HD uint32_t bStepOffset(TcGeometry const& t, int32_t chunk, int32_t tap)
{
    return uint32_t(tap) * uint32_t(t.g.cPerGroup) + uint32_t(chunk * t.chunkC);
}

//! The wgmma shapes' B copy in the register-A K order: 4-byte words (channel pairs), each to its permuted
//! place (registerAWord). Thread tid copies physical word tid % 16 of B rows tid / 16 + slot x Threads / 16:
//! 16 consecutive lanes read one row's 64 contiguous bytes, and a warp's two rows land on 32 distinct banks
//! (the permutation is a bijection within a row; the rows are the two halves of a 128-byte line). The bytes
//! and shared-memory wavefronts are those of 16-byte copies; the copies are four times as many.
constexpr int32_t kWordsPerRow = kStepK / 2; //!< 4-byte words (channel pairs) per step row

struct BWordCopies
{
    uint32_t firstSource;     //!< OHWI element of slot 0's word at step (chunk 0, tap 0)
    uint32_t rowStepElements; //!< elements between consecutive slots' sources (Threads / 16 rows)
    int32_t row;              //!< slot 0's B tile row (output channel - n0)
    int32_t byte;             //!< slot 0's byte in a B buffer (later slots: whole swizzle atoms further)
    bool channelsInside;      //!< the word's two channels are in the chunk (else zeros: chunkC < kStepK)
};

template <class Shape>
DEFORMRT_HD BWordCopies bWordCopies(TcGeometry const& t, TcTile const& tile, int32_t tid)
{
    static_assert(Shape::Threads / kWordsPerRow % 8 == 0, "B word slots are whole swizzle atoms apart");
    DcnGeometry const& g = t.g;
    int32_t const word = tid % kWordsPerRow;
    int32_t const logical = registerAWord(word);
    uint32_t const perOutput = uint32_t(g.taps) * uint32_t(g.cPerGroup);
    BWordCopies b{};
    b.row = tid / kWordsPerRow;
    b.byte = Shape::byteOf(b.row, logical / 4) + 4 * (logical % 4);
    b.channelsInside = 2 * word < t.chunkC;
    b.firstSource
        = (uint32_t(tile.grp) * uint32_t(g.cOutPerGroup) + uint32_t(tile.n0 + b.row)) * perOutput + uint32_t(2 * word);
    b.rowStepElements = uint32_t(Shape::Threads / kWordsPerRow) * perOutput;
    return b;
}

//! Word slots per thread and step of a wgmma shape's B copy.
template <class Shape>
constexpr int32_t bWordSlots()
{
    return Shape::BN * kWordsPerRow / Shape::Threads;
}

//! Slot ``slot``'s byte in a B buffer.
template <class Shape>
DEFORMRT_HD int32_t bWordByte(BWordCopies const& b, int32_t slot)
{
    return b.byte + slot * (Shape::Threads / kWordsPerRow) * kRowBytes;
}

//! Whether slot ``slot`` of ``b`` copies weights (else zeros: past the chunk or the group's channels).
template <class Shape>
DEFORMRT_HD bool bWordInside(TcGeometry const& t, TcTile const& tile, BWordCopies const& b, int32_t slot)
{
    return b.channelsInside && tile.n0 + b.row + slot * (Shape::Threads / kWordsPerRow) < t.g.cOutPerGroup;
}

//! An fp16 value into shared memory byte by byte (little-endian, as the GPU stores it).
DEFORMRT_HD void storeHalfBytes(unsigned char* dst, uint16_t value)
{
    dst[0] = static_cast<unsigned char>(value & 0xffu);
    dst[1] = static_cast<unsigned char>(value >> 8);
}

//! loadB on the CPU (and the GPU's path for weights that are not whole 16-byte vectors): B buffer ``stage``
//! = the weights of step (chunk, tap), zero past the chunk's channels and the group's output channels; on the
//! wgmma path in the register-A K order (bWordCopies).
template <class Shape>
DEFORMRT_HD void loadBDirect(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t chunk, int32_t tap,
    int32_t stage, int32_t tid, SharedView const& s)
{
    if constexpr (Shape::Wgmma)
    {
        BWordCopies const b = bWordCopies<Shape>(t, tile, tid);
        uint32_t const first = b.firstSource + bStepOffset(t, chunk, tap);
        for (int32_t slot = 0; slot < bWordSlots<Shape>(); ++slot)
        {
            bool const inside = bWordInside<Shape>(t, tile, b, slot);
            unsigned char* const dst = s.b + stage * (Shape::BN * kRowBytes) + bWordByte<Shape>(b, slot);
            uint16_t const* const source = p.weight + first + uint32_t(slot) * b.rowStepElements;
            for (int32_t i = 0; i < 2; ++i)
            {
                storeHalfBytes(dst + 2 * i, inside ? source[i] : uint16_t(0));
            }
        }
    }
    else
    {
        BCopies const b = bCopies<Shape>(t, tile, tid);
        uint32_t const first = b.firstSource + bStepOffset(t, chunk, tap);
        for (int32_t slot = 0; slot < Shape::BVectorsPerThread; ++slot)
        {
            bool const inside = bSlotInside<Shape>(t, tile, b, slot);
            unsigned char* const dst = s.b + stage * (Shape::BN * kRowBytes)
                + slotByte<Shape::Threads, Shape::PairedB>(Shape::byteOf(b.row, b.vec), slot);
            uint32_t const even = first + uint32_t(slotRowStep<Shape::PairedB>(slot)) * b.rowStepElements;
            uint16_t const* const source = p.weight + even + bOddSlotHalves<Shape>(slot);
            int32_t const channels = b.channels - bOddSlotHalves<Shape>(slot);
            for (int32_t i = 0; i < kVector; ++i)
            {
                storeHalfBytes(dst + 2 * i, inside && i < channels ? source[i] : uint16_t(0));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// MMA fragments (PTX ISA, mma.m16n8k16 with .f16 multiplicands and .f32 accumulators):
//   groupID = lane >> 2, threadID_in_group = lane % 4
//   A (row-major 16 x 16), 4 .f16x2 registers holding a0..a7:
//     row = groupID for a0, a1, a4, a5; groupID + 8 for a2, a3, a6, a7
//     col = 2 * threadID_in_group + (i & 1), plus 8 for a4..a7
//   B (16 x 8, "col": K contiguous per column), 2 .f16x2 registers holding b0..b3:
//     row (k) = 2 * threadID_in_group + (i & 1), plus 8 for b2, b3; col (n) = groupID
//   C / D (16 x 8 f32), c0..c3:
//     row = groupID for c0, c1; groupID + 8 for c2, c3; col = 2 * threadID_in_group + (i & 1)
// A register's low 16 bits hold the element with the lower index. The GPU loads the same registers with
// ldmatrix.x4 (deformConvTensorCore.cu); the CPU build with these formulas.

struct FragA
{
    uint32_t r[4];
};
struct FragB
{
    uint32_t r[2];
};
struct FragC
{
    float v[4];
};

//! This lane's A fragment of the 16 x 16 block at (row0, k0) of an A tile stored [m][k].
DEFORMRT_HD FragA loadFragA(unsigned char const* a, int32_t row0, int32_t k0, int32_t lane)
{
    int32_t const group = lane >> 2;
    int32_t const col = k0 + 2 * (lane & 3);
    FragA f;
    f.r[0] = loadPair(a, row0 + group, col);
    f.r[1] = loadPair(a, row0 + group + 8, col);
    f.r[2] = loadPair(a, row0 + group, col + 8);
    f.r[3] = loadPair(a, row0 + group + 8, col + 8);
    return f;
}

//! This lane's B fragment of the 16 x 8 block at (k0, col0) of a B tile stored [n][k].
DEFORMRT_HD FragB loadFragB(unsigned char const* b, int32_t col0, int32_t k0, int32_t lane)
{
    int32_t const n = col0 + (lane >> 2);
    int32_t const k = k0 + 2 * (lane & 3);
    FragB f;
    f.r[0] = loadPair(b, n, k);
    f.r[1] = loadPair(b, n, k + 8);
    return f;
}

//! Element i of a fragment whose element pairs are packed .f16x2 registers ``regs`` (register i / 2, the
//! low half first), as a float.
inline float fragmentHalf(uint32_t const* regs, int32_t i)
{
    uint32_t const reg = regs[i / 2];
    return halfBitsToFloat(uint16_t((i & 1) ? reg >> 16 : reg & 0xffffu));
}

//! Row (within the 16 x 16 block) of A fragment element i (0..7: register i / 2, half i % 2) of ``lane``.
DEFORMRT_HD int32_t fragARow(int32_t lane, int32_t i)
{
    return (lane >> 2) + 8 * ((i >> 1) & 1);
}

//! Column (k, within the 16 x 16 block) of A fragment element i of ``lane``.
DEFORMRT_HD int32_t fragACol(int32_t lane, int32_t i)
{
    return 2 * (lane & 3) + (i & 1) + (i >= 4 ? 8 : 0);
}

//! Row (within the 16 x 8 block) of accumulator element i of ``lane``.
DEFORMRT_HD int32_t accRow(int32_t lane, int32_t i)
{
    return (lane >> 2) + (i >= 2 ? 8 : 0);
}

//! Column (within the 16 x 8 block) of accumulator element i of ``lane``.
DEFORMRT_HD int32_t accCol(int32_t lane, int32_t i)
{
    return 2 * (lane & 3) + (i & 1);
}

//! One thread's accumulators: MT x NT blocks of 16 x 8.
template <class Shape>
struct Accumulators
{
    FragC c[Shape::MT][Shape::NT];
};

//! Warp coordinates of a thread.
struct WarpPlace
{
    int32_t warpRow0; //!< first tile row (pixel) of the warp
    int32_t warpCol0; //!< first tile column (output channel) of the warp
    int32_t lane;
};

template <class Shape>
DEFORMRT_HD WarpPlace warpPlace(int32_t tid)
{
    int32_t const warp = tid / kWarpSize;
    int32_t const wm = warp % Shape::WarpsM;
    int32_t const wn = warp / Shape::WarpsM;
    return WarpPlace{wm * Shape::WM, wn * Shape::WN, tid % kWarpSize};
}

//! Whether 32-row block ``block`` of the warp tile at ``w`` has gathered rows (warp-uniform): a block without
//! skips its A fragments and MMAs.
DEFORMRT_HD bool rowBlockActive(TcTile const& tile, WarpPlace const& w, int32_t block)
{
    return w.warpRow0 + block * kWarpRows < tile.gatherRows;
}

//! Whether the warp at ``w`` has gathered rows (warp-uniform): a warp without skips its MMAs.
DEFORMRT_HD bool warpActive(TcTile const& tile, WarpPlace const& w)
{
    return rowBlockActive(tile, w, 0);
}

//! Two consecutive fp32 partial sums (8-byte aligned) in one store.
DEFORMRT_HD void storePair(float* dst, float v0, float v1)
{
#ifdef __CUDA_ARCH__
    *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
#else
    dst[0] = v0;
    dst[1] = v1;
#endif
}

//! Two consecutive fp16 outputs (4-byte aligned, the lower index in the low half) in one store.
DEFORMRT_HD void storePair(uint16_t* dst, uint32_t packed)
{
#ifdef __CUDA_ARCH__
    *reinterpret_cast<uint32_t*>(dst) = packed;
#else
    dst[0] = uint16_t(packed & 0xffffu);
    dst[1] = uint16_t(packed >> 16);
#endif
}

//! Epilogue: this thread's accumulators, either plus the bias rounded once to fp16 into y (NHWC or NCHW),
//! or (split K) as fp32 partial sums into p.partial[split].
template <class Shape>
DEFORMRT_HD void epilogue(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t tid,
    Accumulators<Shape> const& acc)
{
    DcnGeometry const& g = t.g;
    WarpPlace const w = warpPlace<Shape>(tid);
    float* const partial = p.partial != nullptr ? p.partial + int64_t(tile.split) * g.cols * g.cOut : nullptr;
DEFORMRT_UNROLL
    for (int32_t mi = 0; mi < Shape::MT; ++mi)
    {
DEFORMRT_UNROLL
        for (int32_t half = 0; half < 2; ++half)
        {
            int32_t const r = w.warpRow0 + 16 * mi + accRow(w.lane, 2 * half);
            if (r >= tile.rows)
            {
                continue;
            }
            int64_t const row = tile.m0 + r;
            // NCHW: (image, pixel) of the row, once per row
            int64_t const n = p.outputNhwc || partial != nullptr ? 0 : row / g.outPlane;
            int64_t const rowBase = partial != nullptr || p.outputNhwc ? row * g.cOut : n * g.cOut * g.outPlane
                + (row - n * g.outPlane);
            int64_t const channelStride = partial != nullptr || p.outputNhwc ? 1 : g.outPlane;
DEFORMRT_UNROLL
            for (int32_t ni = 0; ni < Shape::NT; ++ni)
            {
                int32_t const col0 = tile.n0 + w.warpCol0 + 8 * ni + accCol(w.lane, 2 * half); // even
                float const v0 = acc.c[mi][ni].v[2 * half];
                float const v1 = acc.c[mi][ni].v[2 * half + 1];
                int32_t const co0 = tile.grp * g.cOutPerGroup + col0;
                if (p.pairedOutput && col0 < g.cOutPerGroup) // both columns inside, one aligned store
                {
                    if (partial != nullptr)
                    {
                        storePair(partial + rowBase + co0, v0, v1);
                    }
                    else
                    {
                        float const b0 = p.bias != nullptr ? halfToFloat(p.bias[co0]) : 0.0f;
                        float const b1 = p.bias != nullptr ? halfToFloat(p.bias[co0 + 1]) : 0.0f;
                        storePair(p.y + rowBase + co0, packHalves(v0 + b0, v1 + b1));
                    }
                    continue;
                }
DEFORMRT_UNROLL
                for (int32_t i = 2 * half; i < 2 * half + 2; ++i)
                {
                    int32_t const col = tile.n0 + w.warpCol0 + 8 * ni + accCol(w.lane, i);
                    if (col >= g.cOutPerGroup)
                    {
                        continue;
                    }
                    int32_t const co = tile.grp * g.cOutPerGroup + col;
                    float const v = acc.c[mi][ni].v[i];
                    if (partial != nullptr)
                    {
                        partial[rowBase + co] = v;
                        continue;
                    }
                    float const biased = v + (p.bias != nullptr ? halfToFloat(p.bias[co]) : 0.0f);
                    p.y[rowBase + co * channelStride] = floatToHalf(biased);
                }
            }
        }
    }
}

//! The split-K reduction's work. A thread adds kReduceRuns runs of kReduceRunChannels consecutive output
//! channels of one row (pixel of the batch), kReduceRunGap channels apart: a warp's run r covers
//! kReduceRunGap consecutive channels, so that each of its 16-byte loads and 8-byte stores is one
//! contiguous span. A block has kReduceChannelThreads threads along the channels (kReduceBlockChannels of
//! them) times kReduceRowThreads rows.
constexpr int32_t kReduceRunChannels = 4;
constexpr int32_t kReduceRuns = 2;
constexpr int32_t kReduceChannelThreads = 32;
constexpr int32_t kReduceRowThreads = 4;
constexpr int32_t kReduceRunGap = kReduceChannelThreads * kReduceRunChannels;
constexpr int32_t kReduceBlockChannels = kReduceRuns * kReduceRunGap;

//! The first output channel of the reduction thread ``lane`` (0 .. kReduceChannelThreads - 1) of channel
//! block ``block``.
DEFORMRT_HD int32_t reduceThreadChannel(int32_t block, int32_t lane)
{
    return block * kReduceBlockChannels + lane * kReduceRunChannels;
}

//! Whether the split-K reduction's element indices (every split's partial sums, y) fit int32, as its index
//! math assumes: always within the planner's workspace (kSplitKMaxBytes of partial sums).
inline bool splitKReduceFits(DcnGeometry const& g, int32_t splits)
{
    return int64_t(splits) * g.cols * g.cOut < (int64_t(1) << 31);
}

//! Whether splitKReduce takes its vector path: at most kMaxSplitK splits (its unrolled loop), cOut a
//! multiple of 4 (every run whole), the partial sums 16-byte aligned, the bias (if any) and y 8-byte aligned.
inline bool splitKReduceVector(DcnGeometry const& g, int32_t splits, float const* partial, uint16_t const* bias,
    uint16_t const* y)
{
    return splits <= kMaxSplitK && g.cOut % kReduceRunChannels == 0 && reinterpret_cast<uintptr_t>(partial) % 16 == 0
        && reinterpret_cast<uintptr_t>(bias) % 8 == 0 && reinterpret_cast<uintptr_t>(y) % 8 == 0;
}

#ifdef __CUDA_ARCH__
//! splitKReduce's vector path for the thread's first ``Runs`` runs, all whole: per split one 16-byte load
//! per run, then per run one 8-byte load of the bias and, for NHWC, one 8-byte store.
template <int32_t Runs>
__device__ __forceinline__ void splitKReduceRuns(DcnGeometry const& g, int32_t splits, float const* partial,
    uint16_t const* bias, uint16_t* y, bool outputNhwc, int32_t row, int32_t co)
{
    int32_t const splitElements = int32_t(g.cols) * g.cOut;
    int32_t const e = row * g.cOut + co;
    float const* src = partial + e;
    float sum[Runs][kReduceRunChannels];
    // the first split from +0, as the scalar path's sums start (0 + -0 is +0)
DEFORMRT_UNROLL
    for (int32_t r = 0; r < Runs; ++r)
    {
        float4 const v = *reinterpret_cast<float4 const*>(src + r * kReduceRunGap);
        sum[r][0] = 0.0f + v.x;
        sum[r][1] = 0.0f + v.y;
        sum[r][2] = 0.0f + v.z;
        sum[r][3] = 0.0f + v.w;
    }
    // unrolled (splits <= kMaxSplitK): per split one test, one pointer step, the loads and the adds
DEFORMRT_UNROLL
    for (int32_t s = 1; s < kMaxSplitK; ++s)
    {
        if (s >= splits)
        {
            break;
        }
        src += splitElements;
DEFORMRT_UNROLL
        for (int32_t r = 0; r < Runs; ++r)
        {
            float4 const v = *reinterpret_cast<float4 const*>(src + r * kReduceRunGap);
            sum[r][0] += v.x;
            sum[r][1] += v.y;
            sum[r][2] += v.z;
            sum[r][3] += v.w;
        }
    }
    // Without a bias the scalar path adds 0.0f, which changes nothing here: a sum that starts at +0 is
    // never -0 (round to nearest gives -0 only for -0 + -0), so that add is left out.
    if (bias != nullptr)
    {
DEFORMRT_UNROLL
        for (int32_t r = 0; r < Runs; ++r)
        {
            uint2 const words = *reinterpret_cast<uint2 const*>(bias + co + r * kReduceRunGap);
            float b[kReduceRunChannels];
            unpackHalves(words.x, b[0], b[1]);
            unpackHalves(words.y, b[2], b[3]);
DEFORMRT_UNROLL
            for (int32_t i = 0; i < kReduceRunChannels; ++i)
            {
                sum[r][i] += b[i];
            }
        }
    }
    uint2 packed[Runs];
DEFORMRT_UNROLL
    for (int32_t r = 0; r < Runs; ++r)
    {
        packed[r] = make_uint2(packHalves(sum[r][0], sum[r][1]), packHalves(sum[r][2], sum[r][3]));
    }
    if (outputNhwc)
    {
DEFORMRT_UNROLL
        for (int32_t r = 0; r < Runs; ++r)
        {
            *reinterpret_cast<uint2*>(y + e + r * kReduceRunGap) = packed[r];
        }
        return;
    }
    int32_t const plane = int32_t(g.outPlane);
    int32_t const n = row / plane;
    uint16_t* const dst = y + (n * g.cOut + co) * plane + (row - n * plane);
DEFORMRT_UNROLL
    for (int32_t r = 0; r < Runs; ++r)
    {
        uint16_t* const run = dst + r * kReduceRunGap * plane;
        run[0] = uint16_t(packed[r].x & 0xffffu);
        run[plane] = uint16_t(packed[r].x >> 16);
        run[2 * plane] = uint16_t(packed[r].y & 0xffffu);
        run[3 * plane] = uint16_t(packed[r].y >> 16);
    }
}
#endif

//! Split K, second kernel, one thread's outputs: (row, co + r * kReduceRunGap + i) for every run r and i <
//! kReduceRunChannels inside cOut (row over the whole batch; co from reduceThreadChannel, inside cOut) =
//! the splits' partial sums added in split order, plus the bias, rounded once to fp16. int32 element
//! indices (splitKReduceFits). ``vector``: splitKReduceVector holds (the host build has no vector path:
//! the scalar loops give the same sums in the same order).
DEFORMRT_HD void splitKReduce(DcnGeometry const& g, int32_t splits, float const* partial, uint16_t const* bias,
    uint16_t* y, bool outputNhwc, bool vector, int32_t row, int32_t co)
{
#ifdef __CUDA_ARCH__
    // the vector test outside the split loop: the loop is the kernel's whole work
    if (vector)
    {
        static_assert(kReduceRuns == 2, "a thread here has either all its runs inside cOut or only its first");
        if (co + kReduceRunGap < g.cOut)
        {
            splitKReduceRuns<kReduceRuns>(g, splits, partial, bias, y, outputNhwc, row, co);
        }
        else
        {
            splitKReduceRuns<1>(g, splits, partial, bias, y, outputNhwc, row, co);
        }
        return;
    }
#else
    (void) vector;
#endif
    int32_t const splitElements = int32_t(g.cols) * g.cOut;
    int32_t const e = row * g.cOut + co;
    int32_t const plane = int32_t(g.outPlane);
    int32_t const n = outputNhwc ? 0 : row / plane;
    int32_t const nchwBase = (n * g.cOut + co) * plane + (row - n * plane);
    for (int32_t r = 0; r < kReduceRuns; ++r)
    {
        int32_t const first = r * kReduceRunGap;
        int32_t const left = g.cOut - co - first;
        int32_t const count = left < kReduceRunChannels ? left : kReduceRunChannels;
        float sum[kReduceRunChannels] = {0.0f, 0.0f, 0.0f, 0.0f};
        float const* src = partial + e + first;
        for (int32_t s = 0; s < splits; ++s, src += splitElements)
        {
            for (int32_t i = 0; i < count; ++i)
            {
                sum[i] += src[i];
            }
        }
        for (int32_t i = 0; i < count; ++i)
        {
            uint16_t const out = floatToHalf(sum[i] + (bias != nullptr ? halfToFloat(bias[co + first + i]) : 0.0f));
            if (outputNhwc)
            {
                y[e + first + i] = out;
            }
            else
            {
                y[nchwBase + (first + i) * plane] = out;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Problem-level decisions shared by the launcher and the CPU build.

//! Shared-memory bytes of tile shape ``shape`` (0 .. kTileShapes-1) for this problem.
inline int64_t sharedBytes(TcGeometry const& t, int32_t shape)
{
    return sharedLayout(kTileBM[shape], kTileBN[shape], t.g.taps, isWgmmaShape(shape) ? 0 : 2).bytes;
}

//! Whether the tensor-core kernel takes this problem's channels and kernel (grid limits, shared memory of
//! its smallest shape within every sm_80+ GPU's opt-in): the part of tensorCoreApplies that does not depend
//! on the batch or spatial sizes.
inline bool tensorCoreTakesChannels(TcGeometry const& t)
{
    DcnGeometry const& g = t.g;
    return (g.cOutPerGroup + 63) / 64 * kMaxSplitK <= 65535 && g.group <= 65535
        && sharedBytes(t, kTileShapes - 1) <= kMinOptInBytes;
}

//! Whether the tensor-core kernel can run this problem (also 32-bit x and weight element offsets, int32
//! pixels).
inline bool tensorCoreApplies(TcGeometry const& t)
{
    DcnGeometry const& g = t.g;
    return tensorCoreTakesChannels(t) && int64_t(g.n) * g.h * g.w * g.c < (int64_t(1) << 32)
        && g.cols < (int64_t(1) << 31) && weightElements(g) < (int64_t(1) << 31);
}

//! Whether the epilogue stores two adjacent output channels at once: channels-last y (or split-K partial
//! sums, 8-byte aligned in the workspace) and even channel counts.
inline bool pairedOutputApplies(TcGeometry const& t, TcTensors const& p)
{
    bool const aligned = p.partial != nullptr || reinterpret_cast<uintptr_t>(p.y) % 4 == 0;
    return (p.outputNhwc || p.partial != nullptr) && t.g.cOut % 2 == 0 && t.g.cOutPerGroup % 2 == 0 && aligned;
}

//! Whether this problem's channel counts allow 16-byte vectors for x and the weight (multiples of 8).
inline bool vectorChannels(TcGeometry const& t)
{
    return t.g.c % kVector == 0 && t.g.cPerGroup % kVector == 0 && t.chunkC % kVector == 0;
}

//! Whether 16-byte vectors apply to this problem and its x and OHWI weight pointers.
inline bool vectorApplies(TcGeometry const& t, void const* x, void const* weight)
{
    return vectorChannels(t) && reinterpret_cast<uintptr_t>(x) % 16 == 0
        && reinterpret_cast<uintptr_t>(weight) % 16 == 0;
}

// ------------------------------------------------------------------------------------------------
// Workspace (the same sizes in both builds, independent of the GPU)

constexpr uint64_t kWorkspaceAlign = 256;

inline uint64_t alignWorkspace(uint64_t v)
{
    return (v + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

//! Bytes of the OHWI copy of an OIHW fp16 weight (0 when the weight is OHWI already).
inline uint64_t weightTransposeBytes(DcnGeometry const& g)
{
    return g.weightOhwi ? 0 : alignWorkspace(uint64_t(weightElements(g)) * 2);
}

//! Bytes of the NHWC staging of an NCHW fp16 x.
inline uint64_t inputStagingBytes(DcnGeometry const& g)
{
    return alignWorkspace(uint64_t(g.n) * g.c * g.h * g.w * 2);
}

//! Bytes of one split's fp32 partial sums.
inline uint64_t splitBytes(DcnGeometry const& g)
{
    return uint64_t(g.cols) * uint64_t(g.cOut) * 4;
}

//! Bytes for split-K partial sums: problems with K (taps x channels per group) of at least kSplitKMinK
//! get up to kMaxSplitK splits' worth, at most kSplitKMaxBytes; the plan splits K only as far as they
//! hold. Non-decreasing in the batch and spatial sizes.
inline uint64_t partialBytes(DcnGeometry const& g)
{
    if (int64_t(g.kDim) < kSplitKMinK || !tensorCoreTakesChannels(makeTcGeometry(g)))
    {
        return 0;
    }
    uint64_t const wanted = uint64_t(kMaxSplitK) * splitBytes(g);
    return alignWorkspace(wanted < kSplitKMaxBytes ? wanted : kSplitKMaxBytes);
}

//! The NHWC entry's workspace: an OIHW weight as OHWI, then the split-K partial sums.
inline uint64_t nhwcWorkspaceBytes(DcnGeometry const& g)
{
    return weightTransposeBytes(g) + partialBytes(g);
}

//! The NCHW fp16 entry's workspace: x staged as NHWC, then the NHWC entry's. Counted whenever the kernel
//! takes the channels, so that the size only shrinks with the batch and spatial sizes.
inline uint64_t nchwWorkspaceBytes(DcnGeometry const& g)
{
    return tensorCoreTakesChannels(makeTcGeometry(g)) ? inputStagingBytes(g) + nhwcWorkspaceBytes(g) : 0;
}

// ------------------------------------------------------------------------------------------------
// The launch plan: which shape, how many pixels per CTA, how many K splits.

//! What the planner knows of the GPU.
struct TcDevice
{
    int32_t smCount;
    int64_t sharedOptIn; //!< bytes of shared memory one block may opt in to
    int64_t l2Bytes;
};

//! The GPU the CPU build plans for when asked for no other (an H100 SXM): it runs the launch a batch-1
//! H100 would.
constexpr TcDevice kAssumedDevice{132, kMaxSharedBytes, int64_t(50) << 20};

//! A candidate launch's figures: its busiest SM's modelled clocks and its wave efficiency (the useful
//! pixel x K-step work over the SMs' share of the busiest SM's).
struct PlanCost
{
    double clocks;
    double waveEfficiency;
    int64_t ctas;
};

//! Bytes of DRAM traffic per SM clock the planner assumes: A100 (1,555 GB/s, 108 SMs, 1.41 GHz), Jetson AGX
//! Orin (204.8 GB/s, 16 SMs, 1.3 GHz) and H100 SXM (3.35 TB/s, 132 SMs, 1.83 GHz) all have 10 to 14.
constexpr double kDramBytesPerSmClock = 10.0;

//! A rough per-SM clock count of a launch (the planner's own small model, the scale of
//! scripts/kernel_model.py's terms): per K step of a CTA the larger of its tensor-core time (2 clocks per
//! mma.sync m16n8k16, A100 and Orin rates) and its shared/L1 traffic at 128 bytes per clock (the corner
//! gather, the A store, the B copy and every warp's ldmatrix reads); the busiest SM runs ceil(CTAs / SMs)
//! CTAs; split K adds the partial sums' write and the reduction's read at the same rate, or at
//! kDramBytesPerSmClock where they do not fit in half the L2.
inline PlanCost planCost(TcGeometry const& t, TcPlan const& plan, TcDevice const& dev)
{
    DcnGeometry const& g = t.g;
    int32_t const bn = kTileBN[plan.shape];
    int32_t const warpRows = kTileBM[plan.shape] / kTileWarpsM[plan.shape];
    int32_t const warpsN = kTileWarpsN[plan.shape];
    double const mmaPerStep = double(plan.mExtent / 16) * (bn / 8) * kSlices;
    // wgmma (Hopper's full tensor rate): 1 clock per m16n8k16 equivalent; A comes from registers (no A
    // store or read), B is read from shared memory once per warpgroup instead of per warp by ldmatrix.
    bool const wgmma = isWgmmaShape(plan.shape);
    double const tensor = (wgmma ? 1.0 : 2.0) * mmaPerStep;
    // mma.sync, per K slice: each warp column's A fragments of the gathered rows (512 bytes per m16 tile), and
    // each warp with gathered rows reads its B columns' fragments (256 bytes per n8 tile) whole
    int32_t const activeWarpRows = (plan.mExtent + warpRows - 1) / warpRows;
    double const fragmentBytes = wgmma
        ? double(bn) * kRowBytes * (plan.mExtent / kWarpgroupRows)
        : kSlices * (double(plan.mExtent / 16) * 512.0 * warpsN + double(activeWarpRows) * bn * 32.0);
    double const gatherBytes = double(plan.mExtent) * kVectorsPerRow * (64 + (wgmma ? 0 : 16)); // corners, A store
    double const bBytes = double(bn) * kRowBytes;
    double const l1 = (fragmentBytes + gatherBytes + bBytes) / 128.0;
    double const step = tensor > l1 ? tensor : l1;
    int64_t const ctas = plan.mTiles * plan.nTiles * plan.splitK * g.group;
    int64_t const perSm = (ctas + dev.smCount - 1) / dev.smCount;
    double const outputBytes = double(plan.mExtent) * bn * (plan.splitK > 1 ? 4 : 2);
    double clocks = double(perSm) * (double(plan.stepsPerSplit) * step + outputBytes / 128.0);
    if (plan.splitK > 1)
    {
        double const partials = double(splitBytes(g)) * plan.splitK;
        bool const inL2 = partials <= double(dev.l2Bytes) / 2;
        clocks += partials * 2.0 / (inL2 ? 128.0 : kDramBytesPerSmClock) / dev.smCount;
    }
    double const useful = double(g.cols) * plan.nTiles * t.steps * g.group;
    double const busiest = double(perSm) * plan.mExtent * plan.stepsPerSplit * dev.smCount;
    return PlanCost{clocks, useful / busiest, ctas};
}

//! A plan for ``shape`` with ``mExtent`` pixels per CTA and ``splitK`` splits.
inline TcPlan makePlan(TcGeometry const& t, int32_t shape, int32_t mExtent, int32_t splitK)
{
    TcPlan plan{};
    plan.shape = shape;
    plan.mExtent = mExtent;
    plan.stepsPerSplit = (t.steps + splitK - 1) / splitK;
    plan.splitK = (t.steps + plan.stepsPerSplit - 1) / plan.stepsPerSplit; // no empty split
    plan.nTiles = (t.g.cOutPerGroup + kTileBN[shape] - 1) / kTileBN[shape];
    plan.mTiles = (t.g.cols + mExtent - 1) / mExtent;
    return plan;
}

//! The most K splits the workspace of ``workspaceBytes`` partial-sum bytes holds for this problem, keeping
//! the grid's y within 65535.
inline int32_t maxSplitK(TcGeometry const& t, uint64_t workspaceBytes, int32_t nTiles)
{
    uint64_t const one = splitBytes(t.g);
    int64_t most = one == 0 ? 1 : int64_t(workspaceBytes / one);
    most = most < kMaxSplitK ? most : kMaxSplitK;
    most = most < 65535 / nTiles ? most : 65535 / nTiles;
    return most < 1 ? 1 : int32_t(most);
}

//! Whether ``shape`` can run this problem on ``dev``: its shared memory fits the opt-in.
inline bool shapeFits(TcGeometry const& t, int32_t shape, TcDevice const& dev)
{
    int64_t const limit = dev.sharedOptIn < kMaxSharedBytes ? dev.sharedOptIn : kMaxSharedBytes;
    return shape >= 0 && shape < kPlanShapes && sharedBytes(t, shape) <= limit;
}

inline TcPlan choosePlanForShape(TcGeometry const& t, TcDevice const& dev, uint64_t partialWorkspaceBytes,
    int32_t shape, int32_t forcedExtent, int32_t forcedSplit);

//! The launch for ``dev``: the narrowest shape that covers all the group's output channels (at most 256
//! per CTA; beyond that BN-wide channel tiles) among those that fit, then the pixels per CTA and K splits
//! of least modelled time (planCost), preferring wave efficiency of at least 0.85 when any candidate has
//! it. ``forcedShape`` >= 0 restricts the shape, ``forcedExtent`` > 0 / ``forcedSplit`` > 0 the others
//! (tests and sanitizer runs). plan.shape < 0: the problem does not fit.
inline TcPlan choosePlan(TcGeometry const& t, TcDevice const& dev, uint64_t partialWorkspaceBytes,
    int32_t forcedShape = -1, int32_t forcedExtent = 0, int32_t forcedSplit = 0)
{
    TcPlan none{};
    none.shape = -1;
    if (!tensorCoreApplies(t))
    {
        return none;
    }
    int32_t shape = -1;
    if (forcedShape >= 0)
    {
        shape = shapeFits(t, forcedShape, dev) && !isWgmmaShape(forcedShape) ? forcedShape : -1;
    }
    else
    {
        // Shapes by growing channel width: the first wide enough, else the widest that fits.
        int32_t const order[kTileShapes] = {2, 1, 0};
        for (int32_t shapeIndex : order)
        {
            if (!shapeFits(t, shapeIndex, dev))
            {
                continue;
            }
            shape = shapeIndex;
            if (kTileBN[shapeIndex] >= t.g.cOutPerGroup)
            {
                break;
            }
        }
    }
    if (shape < 0)
    {
        return none;
    }
    return choosePlanForShape(t, dev, partialWorkspaceBytes, shape, forcedExtent, forcedSplit);
}

//! The pixels per CTA (multiples of 32 rows, of 64 for the wgmma shapes) and K splits of least modelled
//! time (planCost) for ``shape``, preferring wave efficiency of at least 0.85 when any candidate has it;
//! ``forcedExtent`` > 0 / ``forcedSplit`` > 0 restrict them. plan.shape < 0: nothing fits.
inline TcPlan choosePlanForShape(TcGeometry const& t, TcDevice const& dev, uint64_t partialWorkspaceBytes,
    int32_t shape, int32_t forcedExtent, int32_t forcedSplit)
{
    TcPlan none{};
    none.shape = -1;
    int32_t const nTiles = (t.g.cOutPerGroup + kTileBN[shape] - 1) / kTileBN[shape];
    int32_t const splits = forcedSplit > 0 ? forcedSplit : maxSplitK(t, partialWorkspaceBytes, nTiles);
    if (forcedSplit > 0 && (uint64_t(forcedSplit) * splitBytes(t.g) > partialWorkspaceBytes && forcedSplit > 1))
    {
        return none;
    }
    int32_t const extentStep = isWgmmaShape(shape) ? kWarpgroupRows : kWarpRows;
    TcPlan best = none;
    PlanCost bestCost{0.0, 0.0, 0};
    for (int32_t extent = extentStep; extent <= kTileBM[shape]; extent += extentStep)
    {
        if (forcedExtent > 0 && extent != forcedExtent)
        {
            continue;
        }
        for (int32_t split = forcedSplit > 0 ? forcedSplit : 1; split <= splits; ++split)
        {
            TcPlan const plan = makePlan(t, shape, extent, split);
            if (plan.mTiles > 0x7fffffff || int64_t(plan.nTiles) * plan.splitK > 65535)
            {
                continue;
            }
            PlanCost const cost = planCost(t, plan, dev);
            bool const full = cost.waveEfficiency >= 0.85;
            bool const bestFull = bestCost.waveEfficiency >= 0.85;
            bool better = best.shape < 0 || (full && !bestFull)
                || (full == bestFull && cost.clocks < bestCost.clocks * (1.0 - 1e-9));
            if (better)
            {
                best = plan;
                bestCost = cost;
            }
        }
    }
    return best;
}

// ------------------------------------------------------------------------------------------------
// CPU emulation of one warp's mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (host only).
// Each lane's registers are decoded with the ISA's element formulas (not with loadFragA/B), the
// product is summed exactly (double) with C and rounded once to fp32, and D is scattered back with the
// accumulator formulas. A fragment or index that disagrees with the ISA layout gives a wrong D.

inline void emulateMmaM16N8K16(FragA const (&a)[kWarpSize], FragB const (&b)[kWarpSize],
    FragC const (&c)[kWarpSize], FragC (&d)[kWarpSize])
{
    float am[16][16];
    float bm[16][8]; // [k][n]
    float cm[16][8];
    for (int32_t lane = 0; lane < kWarpSize; ++lane)
    {
        int32_t const group = lane >> 2;
        int32_t const inGroup = lane & 3;
        for (int32_t i = 0; i < 8; ++i)
        {
            am[fragARow(lane, i)][fragACol(lane, i)] = fragmentHalf(a[lane].r, i);
        }
        for (int32_t i = 0; i < 4; ++i)
        {
            bm[inGroup * 2 + (i & 1) + (i >= 2 ? 8 : 0)][group] = fragmentHalf(b[lane].r, i);
        }
        for (int32_t i = 0; i < 4; ++i)
        {
            cm[accRow(lane, i)][accCol(lane, i)] = c[lane].v[i];
        }
    }
    for (int32_t lane = 0; lane < kWarpSize; ++lane)
    {
        for (int32_t i = 0; i < 4; ++i)
        {
            int32_t const row = accRow(lane, i);
            int32_t const col = accCol(lane, i);
            double sum = cm[row][col];
            for (int32_t k = 0; k < 16; ++k)
            {
                sum += double(am[row][k]) * double(bm[k][col]);
            }
            d[lane].v[i] = float(sum);
        }
    }
}

} // namespace tc
} // namespace deformrt
