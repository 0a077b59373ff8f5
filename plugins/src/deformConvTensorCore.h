// The fp16 tensor-core deformable convolution (sm_80 and newer), written once for the GPU and its
// exact CPU emulation.
//
// Implicit GEMM per convolution group: D[M x N] = A[M x K] * B[K x N] with
//   M = output pixels of the whole batch, N = output channels of the group,
//   K = taps x input channels in channel-chunk-major order: step s = chunk * taps + tap covers the
//       chunk's chunkC channels at one kernel tap, padded with zeros to stepK (a multiple of 16).
// A is never materialised in memory: a CTA gathers one step of it into shared memory at a time.
// B is read straight from the weight tensor in OHWI layout ([cOut][kh][kw][cPerGroup], deformConvDesc.h):
// step (chunk, tap) of output channel co is the run of chunkC channels at
// ((co * taps + tap) * cPerGroup + chunk * chunkC), 16-byte vectors of 8 channels where aligned. An OIHW
// weight is transposed to OHWI first (ohwiSourceIndex), into the caller's workspace.
//
// CTA phases, separated by barriers (the GPU runs them with __syncthreads(); the CPU build runs every
// thread of a phase, warp by warp for the MMA phase, before the next phase starts):
//   prologue  per (pixel, tap) of the tile: corner-00 pixel index, corner validity bits and the four
//             bilinear weights times the mask, in fp32, into shared memory; every channel reuses them
//             (recomputed only when the chunks move to another offset group)
//   gather    per (pixel, 8-channel vector): up to four 16-byte NHWC loads, fp32 blend, one rounding
//             to the fp16 operand, into the A tile (double-buffered)
//   loadB     the step's weights (OHWI runs of channels) into the B tile (double-buffered)
//   mma       per warp: its A/B fragments from shared memory (per-lane index math below, the PTX ISA's
//             m16n8k16 layouts), mma.sync m16n8k16 f16 x f16 -> f32 (the CPU build emulates it)
//   epilogue  fp32 accumulators + bias, rounded once to fp16, NHWC or NCHW output
#pragma once

#include "deformConvMath.h"

#include <cstdint>

namespace deformrt
{
namespace tc
{

constexpr int32_t kWarpSize = 32;
constexpr int32_t kThreads = 256;   //!< 8 warps per CTA in every tile shape
constexpr int32_t kMaxChunkC = 32;  //!< channels per K step (at most; the chunk size divides the group sizes)
constexpr int32_t kRowPad = 8;      //!< halves of padding per shared tile row: fragment loads hit 32 banks
constexpr int32_t kVector = 8;      //!< channels per 16-byte gather
constexpr int64_t kMaxSharedBytes = 96 * 1024; //!< fits every sm_80+ opt-in limit (sm_86/89: 99 KB)

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

// ------------------------------------------------------------------------------------------------
// Geometry of the K order

struct TcGeometry
{
    DcnGeometry g;
    int32_t chunkC; //!< channels per chunk: the largest divisor of gcd(cPerGroup, cPerOffsetGroup) <= kMaxChunkC
    int32_t stepK;  //!< K of one step: chunkC rounded up to a multiple of 16 (the MMA's K)
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
    t.stepK = (t.chunkC + 15) / 16 * 16;
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
// Tile shapes: 8 warps as WarpsM x WarpsN, each warp owning (BM / WarpsM) x (BN / WarpsN) outputs.

template <int32_t BM_, int32_t BN_, int32_t WarpsM_, int32_t WarpsN_>
struct TileShape
{
    static constexpr int32_t BM = BM_;
    static constexpr int32_t BN = BN_;
    static constexpr int32_t WarpsM = WarpsM_;
    static constexpr int32_t WarpsN = WarpsN_;
    static constexpr int32_t WM = BM / WarpsM; //!< warp tile rows (pixels)
    static constexpr int32_t WN = BN / WarpsN; //!< warp tile columns (output channels)
    static constexpr int32_t MT = WM / 16;     //!< m16 MMA tiles per warp
    static constexpr int32_t NT = WN / 8;      //!< n8 MMA tiles per warp
    static_assert(WarpsM * WarpsN * kWarpSize == kThreads, "8 warps");
    static_assert(WM % 16 == 0 && WN % 8 == 0, "warp tile is a whole number of MMA tiles");
};

// Largest first; the launcher picks the first that gives at least one CTA per SM.
using TileLarge = TileShape<128, 128, 2, 4>;  // warp 64 x 32
using TileMedium = TileShape<64, 128, 2, 4>;  // warp 32 x 32
using TileSmall = TileShape<64, 64, 2, 4>;    // warp 32 x 16
constexpr int32_t kTileShapes = 3;
constexpr int32_t kTileBM[kTileShapes] = {TileLarge::BM, TileMedium::BM, TileSmall::BM};
constexpr int32_t kTileBN[kTileShapes] = {TileLarge::BN, TileMedium::BN, TileSmall::BN};

// ------------------------------------------------------------------------------------------------
// Shared memory: prologue tables, then two A and two B tiles (rows padded by kRowPad halves).

struct alignas(16) CornerWeights
{
    float w00, w01, w10, w11; //!< bilinear weight x mask of each corner; zero for an invalid corner
};

struct SharedLayout
{
    int64_t weightsOffset, baseOffset, validOffset, aOffset, bOffset, bytes;
    int32_t rowStride; //!< halves per A/B tile row
};

DEFORMRT_HD SharedLayout sharedLayout(int32_t bm, int32_t bn, int32_t taps, int32_t stepK)
{
    SharedLayout s{};
    s.rowStride = stepK + kRowPad;
    int64_t const entries = int64_t(taps) * bm;
    s.weightsOffset = 0;
    s.baseOffset = entries * int64_t(sizeof(CornerWeights));
    s.validOffset = s.baseOffset + entries * 4;
    s.aOffset = (s.validOffset + entries * 4 + 15) / 16 * 16;
    s.bOffset = s.aOffset + 2 * int64_t(bm) * s.rowStride * 2;
    s.bytes = s.bOffset + 2 * int64_t(bn) * s.rowStride * 2;
    return s;
}

struct SharedView
{
    CornerWeights* weights; //!< [taps][BM]
    int32_t* base;          //!< [taps][BM] pixel index (n * h + y0) * w + x0 of corner 00
    int32_t* valid;         //!< [taps][BM] bit q set when corner q (00, 01, 10, 11) is inside the image
    uint16_t* a;            //!< [2][BM][rowStride] sampled operand, fp16 bits
    uint16_t* b;            //!< [2][BN][rowStride] weights of the step, fp16 bits
    int32_t rowStride;
};

DEFORMRT_HD SharedView sharedView(unsigned char* base, SharedLayout const& s)
{
    return SharedView{reinterpret_cast<CornerWeights*>(base + s.weightsOffset),
        reinterpret_cast<int32_t*>(base + s.baseOffset), reinterpret_cast<int32_t*>(base + s.validOffset),
        reinterpret_cast<uint16_t*>(base + s.aOffset), reinterpret_cast<uint16_t*>(base + s.bOffset), s.rowStride};
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
    bool outputNhwc;
    bool vectorGather;  //!< 16-byte channel vectors: c and chunkC multiples of 8, x 16-byte aligned
    bool vectorWeight;  //!< 16-byte weight vectors: cPerGroup and chunkC multiples of 8, weight 16-byte aligned
};

struct TcTile
{
    int32_t grp;
    int64_t m0; //!< first output pixel (of the whole batch)
    int32_t n0; //!< first output channel within the group
};

//! Prologue: sampling data of every (tap, pixel) of the tile for offset group ``og``.
template <class Shape>
DEFORMRT_HD void prologue(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t og, int32_t tid,
    SharedView const& s)
{
    DcnGeometry const& g = t.g;
    for (int32_t e = tid; e < g.taps * Shape::BM; e += kThreads)
    {
        int32_t const tap = e / Shape::BM;
        int32_t const r = e - tap * Shape::BM;
        int64_t const col = tile.m0 + r;
        CornerWeights cw{0.0f, 0.0f, 0.0f, 0.0f};
        int32_t base = 0;
        int32_t valid = 0;
        if (col < g.cols)
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
                    valid = (top && left ? 1 : 0) | (top && right ? 2 : 0) | (bottom && left ? 4 : 0)
                        | (bottom && right ? 8 : 0);
                    float const wy0 = (1.0f - ly) * m;
                    float const wy1 = ly * m;
                    cw.w00 = (valid & 1) ? wy0 * (1.0f - lx) : 0.0f;
                    cw.w01 = (valid & 2) ? wy0 * lx : 0.0f;
                    cw.w10 = (valid & 4) ? wy1 * (1.0f - lx) : 0.0f;
                    cw.w11 = (valid & 8) ? wy1 * lx : 0.0f;
                    base = (px.n * g.h + y0) * g.w + x0;
                }
            }
        }
        s.weights[e] = cw;
        s.base[e] = base;
        s.valid[e] = valid;
    }
}

//! Up to 8 consecutive channels of one NHWC pixel; lanes past ``count`` read as zero.
DEFORMRT_HD void loadChannels(uint16_t const* src, int32_t count, bool vector, float (&v)[kVector])
{
#ifdef __CUDA_ARCH__
    if (vector && count == kVector)
    {
        uint4 const raw = *reinterpret_cast<uint4 const*>(src);
        uint32_t const words[4] = {raw.x, raw.y, raw.z, raw.w};
DEFORMRT_UNROLL
        for (int32_t i = 0; i < 4; ++i)
        {
            v[2 * i] = halfToFloat(uint16_t(words[i] & 0xffffu));
            v[2 * i + 1] = halfToFloat(uint16_t(words[i] >> 16));
        }
        return;
    }
#else
    (void) vector;
#endif
DEFORMRT_UNROLL
    for (int32_t i = 0; i < kVector; ++i)
    {
        v[i] = i < count ? halfToFloat(src[i]) : 0.0f;
    }
}

//! acc += weight * (up to 8 channels at ``src``) when the corner is valid.
DEFORMRT_HD void accumulateCorner(
    int32_t valid, float weight, uint16_t const* src, int32_t count, bool vector, float (&acc)[kVector])
{
    if (valid != 0)
    {
        float v[kVector];
        loadChannels(src, count, vector, v);
DEFORMRT_UNROLL
        for (int32_t i = 0; i < kVector; ++i)
        {
            acc[i] = fmaf(weight, v[i], acc[i]);
        }
    }
}

//! Gather: A tile ``buf`` = the sampled, modulated channels of step (chunk, tap), rounded to fp16.
template <class Shape>
DEFORMRT_HD void gatherA(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t chunk, int32_t tap,
    int32_t buf, int32_t tid, SharedView const& s)
{
    DcnGeometry const& g = t.g;
    int32_t const vectorsPerRow = t.stepK / kVector;
    int32_t const chunkStart = tile.grp * g.cPerGroup + chunk * t.chunkC;
    uint16_t* const a = s.a + int64_t(buf) * Shape::BM * s.rowStride;
    for (int32_t e = tid; e < Shape::BM * vectorsPerRow; e += kThreads)
    {
        int32_t const r = e / vectorsPerRow;
        int32_t const vec = e - r * vectorsPerRow;
        int32_t const count = t.chunkC - vec * kVector; // valid channels of this vector (may be <= 0)
        float acc[kVector] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        int32_t const entry = tap * Shape::BM + r;
        int32_t const valid = s.valid[entry];
        if (count > 0 && valid != 0)
        {
            CornerWeights const cw = s.weights[entry];
            uint16_t const* const corner00 = p.x + int64_t(s.base[entry]) * g.c + chunkStart + vec * kVector;
            int32_t const n = count < kVector ? count : kVector;
            // Four explicit calls (no array of weights): keeps every value in registers.
            accumulateCorner(valid & 1, cw.w00, corner00, n, p.vectorGather, acc);
            accumulateCorner(valid & 2, cw.w01, corner00 + g.c, n, p.vectorGather, acc);
            accumulateCorner(valid & 4, cw.w10, corner00 + int64_t(g.w) * g.c, n, p.vectorGather, acc);
            accumulateCorner(valid & 8, cw.w11, corner00 + (int64_t(g.w) + 1) * g.c, n, p.vectorGather, acc);
        }
        uint16_t* const dst = a + int64_t(r) * s.rowStride + vec * kVector;
#ifdef __CUDA_ARCH__
        uint32_t words[4];
DEFORMRT_UNROLL
        for (int32_t i = 0; i < 4; ++i)
        {
            words[i] = uint32_t(floatToHalf(acc[2 * i])) | (uint32_t(floatToHalf(acc[2 * i + 1])) << 16);
        }
        *reinterpret_cast<uint4*>(dst) = make_uint4(words[0], words[1], words[2], words[3]);
#else
        for (int32_t i = 0; i < kVector; ++i)
        {
            dst[i] = floatToHalf(acc[i]);
        }
#endif
    }
}

//! loadB: B tile ``buf`` = the weights of step ``step`` (chunk, tap) for the tile's output channels, read
//! from the OHWI tensor: per output channel one run of chunkC channels, zero past them and past the
//! group's output channels.
template <class Shape>
DEFORMRT_HD void loadB(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t step, int32_t buf,
    int32_t tid, SharedView const& s)
{
    DcnGeometry const& g = t.g;
    int32_t const vectorsPerRow = t.stepK / kVector;
    int32_t const chunk = step / g.taps;
    int32_t const tap = step - chunk * g.taps;
    int64_t const perOutput = int64_t(g.taps) * g.cPerGroup; // OHWI elements of one output channel
    // The step's run of the tile's first output channel; row r's run is perOutput elements further.
    uint16_t const* const stepRun = p.weight + (int64_t(tile.grp) * g.cOutPerGroup + tile.n0) * perOutput
        + int64_t(tap) * g.cPerGroup + chunk * t.chunkC;
    uint16_t* const b = s.b + int64_t(buf) * Shape::BN * s.rowStride;
    for (int32_t e = tid; e < Shape::BN * vectorsPerRow; e += kThreads)
    {
        int32_t const r = e / vectorsPerRow;
        int32_t const vec = e - r * vectorsPerRow;
        int32_t const count = t.chunkC - vec * kVector; // channels of this vector in the run (may be <= 0)
        bool const inside = tile.n0 + r < g.cOutPerGroup && count > 0;
        uint16_t const* const src = stepRun + r * perOutput + vec * kVector;
        uint16_t* const dst = b + int64_t(r) * s.rowStride + vec * kVector;
#ifdef __CUDA_ARCH__
        if (p.vectorWeight) // every run is whole, aligned 16-byte vectors
        {
            *reinterpret_cast<uint4*>(dst) = inside ? *reinterpret_cast<uint4 const*>(src) : make_uint4(0, 0, 0, 0);
            continue;
        }
#endif
        for (int32_t i = 0; i < kVector; ++i)
        {
            dst[i] = inside && i < count ? src[i] : uint16_t(0);
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
// A register's low 16 bits hold the element with the lower index.

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

//! Two consecutive halves of a shared tile row as one .f16x2 register.
DEFORMRT_HD uint32_t loadPair(uint16_t const* tile, int32_t rowStride, int32_t row, int32_t col)
{
    uint16_t const* p = tile + int64_t(row) * rowStride + col;
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<uint32_t const*>(p);
#else
    return uint32_t(p[0]) | (uint32_t(p[1]) << 16);
#endif
}

//! This lane's A fragment of the 16 x 16 block at (row0, k0) of an A tile stored [m][k].
DEFORMRT_HD FragA loadFragA(uint16_t const* a, int32_t rowStride, int32_t row0, int32_t k0, int32_t lane)
{
    int32_t const group = lane >> 2;
    int32_t const col = k0 + 2 * (lane & 3);
    FragA f;
    f.r[0] = loadPair(a, rowStride, row0 + group, col);
    f.r[1] = loadPair(a, rowStride, row0 + group + 8, col);
    f.r[2] = loadPair(a, rowStride, row0 + group, col + 8);
    f.r[3] = loadPair(a, rowStride, row0 + group + 8, col + 8);
    return f;
}

//! This lane's B fragment of the 16 x 8 block at (k0, col0) of a B tile stored [n][k].
DEFORMRT_HD FragB loadFragB(uint16_t const* b, int32_t rowStride, int32_t col0, int32_t k0, int32_t lane)
{
    int32_t const n = col0 + (lane >> 2);
    int32_t const k = k0 + 2 * (lane & 3);
    FragB f;
    f.r[0] = loadPair(b, rowStride, n, k);
    f.r[1] = loadPair(b, rowStride, n, k + 8);
    return f;
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

//! A lane's fragments for K slice [k16 * 16, k16 * 16 + 16) of tile buffer ``buf``.
template <class Shape>
DEFORMRT_HD void loadFragments(SharedView const& s, int32_t buf, WarpPlace const& w, int32_t k16,
    FragA (&a)[Shape::MT], FragB (&b)[Shape::NT])
{
    uint16_t const* const at = s.a + int64_t(buf) * Shape::BM * s.rowStride;
    uint16_t const* const bt = s.b + int64_t(buf) * Shape::BN * s.rowStride;
DEFORMRT_UNROLL
    for (int32_t mi = 0; mi < Shape::MT; ++mi)
    {
        a[mi] = loadFragA(at, s.rowStride, w.warpRow0 + 16 * mi, 16 * k16, w.lane);
    }
DEFORMRT_UNROLL
    for (int32_t ni = 0; ni < Shape::NT; ++ni)
    {
        b[ni] = loadFragB(bt, s.rowStride, w.warpCol0 + 8 * ni, 16 * k16, w.lane);
    }
}

//! Epilogue: accumulators + bias, rounded once to fp16, stored NHWC or NCHW.
template <class Shape>
DEFORMRT_HD void epilogue(TcGeometry const& t, TcTensors const& p, TcTile const& tile, int32_t tid,
    Accumulators<Shape> const& acc)
{
    DcnGeometry const& g = t.g;
    WarpPlace const w = warpPlace<Shape>(tid);
DEFORMRT_UNROLL
    for (int32_t mi = 0; mi < Shape::MT; ++mi)
    {
DEFORMRT_UNROLL
        for (int32_t ni = 0; ni < Shape::NT; ++ni)
        {
DEFORMRT_UNROLL
            for (int32_t i = 0; i < 4; ++i)
            {
                int64_t const row = tile.m0 + w.warpRow0 + 16 * mi + accRow(w.lane, i);
                int32_t const col = tile.n0 + w.warpCol0 + 8 * ni + accCol(w.lane, i);
                if (row >= g.cols || col >= g.cOutPerGroup)
                {
                    continue;
                }
                int32_t const co = tile.grp * g.cOutPerGroup + col;
                float const v = acc.c[mi][ni].v[i] + (p.bias != nullptr ? halfToFloat(p.bias[co]) : 0.0f);
                int64_t index;
                if (p.outputNhwc)
                {
                    index = row * g.cOut + co;
                }
                else
                {
                    int64_t const n = row / g.outPlane;
                    index = (n * g.cOut + co) * g.outPlane + (row - n * g.outPlane);
                }
                p.y[index] = floatToHalf(v);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Problem-level decisions shared by the launcher and the CPU build.

//! Shared-memory bytes of tile shape ``shape`` (0 .. kTileShapes-1) for this problem.
inline int64_t sharedBytes(TcGeometry const& t, int32_t shape)
{
    return sharedLayout(kTileBM[shape], kTileBN[shape], t.g.taps, t.stepK).bytes;
}

//! Whether the tensor-core kernel takes this problem's channels and kernel (grid limits, shared memory):
//! the part of tensorCoreApplies that does not depend on the batch or spatial sizes.
inline bool tensorCoreTakesChannels(TcGeometry const& t)
{
    DcnGeometry const& g = t.g;
    return (g.cOutPerGroup + 63) / 64 <= 65535 && g.group <= 65535 && sharedBytes(t, kTileShapes - 1) <= kMaxSharedBytes;
}

//! Whether the tensor-core kernel can run this problem (also int32 pixel indices).
inline bool tensorCoreApplies(TcGeometry const& t)
{
    DcnGeometry const& g = t.g;
    return tensorCoreTakesChannels(t) && int64_t(g.n) * g.h * g.w < (int64_t(1) << 31) && g.cols < (int64_t(1) << 31);
}

//! Tile shape for ``smCount`` SMs: the largest whose CTAs fill every SM once; else the one with the
//! most CTAs (batch-1 conv5 then runs 64 x 64 tiles instead of a partial wave of large ones). A
//! 128-wide channel tile is skipped when the group has at most 64 output channels. -1: none fits.
inline int32_t chooseTileShape(TcGeometry const& t, int32_t smCount, int64_t sharedLimit)
{
    int32_t chosen = -1;
    for (int32_t shape = 0; shape < kTileShapes; ++shape)
    {
        if (sharedBytes(t, shape) > sharedLimit || (kTileBN[shape] > 64 && t.g.cOutPerGroup <= 64))
        {
            continue;
        }
        chosen = shape;
        int64_t const ctas = (t.g.cols + kTileBM[shape] - 1) / kTileBM[shape]
            * ((t.g.cOutPerGroup + kTileBN[shape] - 1) / kTileBN[shape]) * t.g.group;
        if (ctas >= smCount)
        {
            break;
        }
    }
    return chosen;
}

//! Whether 16-byte channel vectors are aligned for this problem and input pointer.
inline bool vectorGatherApplies(TcGeometry const& t, void const* x)
{
    return t.g.c % kVector == 0 && t.chunkC % kVector == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

//! Whether every weight run of a step is whole, aligned 16-byte vectors for this problem and OHWI pointer.
inline bool vectorWeightApplies(TcGeometry const& t, void const* weight)
{
    return t.g.cPerGroup % kVector == 0 && t.chunkC % kVector == 0 && reinterpret_cast<uintptr_t>(weight) % 16 == 0;
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

//! The NCHW fp16 entry's workspace: x staged as NHWC, then the weight as OHWI. Counted whenever the kernel
//! takes the channels, so that the size only shrinks with the batch and spatial sizes.
inline uint64_t nchwWorkspaceBytes(DcnGeometry const& g)
{
    return tensorCoreTakesChannels(makeTcGeometry(g)) ? inputStagingBytes(g) + weightTransposeBytes(g) : 0;
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
            int32_t const row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
            int32_t const col = inGroup * 2 + (i & 1) + (i >= 4 ? 8 : 0);
            uint32_t const reg = a[lane].r[i / 2];
            am[row][col] = halfBitsToFloat(uint16_t((i & 1) ? reg >> 16 : reg & 0xffffu));
        }
        for (int32_t i = 0; i < 4; ++i)
        {
            int32_t const row = inGroup * 2 + (i & 1) + (i >= 2 ? 8 : 0);
            uint32_t const reg = b[lane].r[i / 2];
            bm[row][group] = halfBitsToFloat(uint16_t((i & 1) ? reg >> 16 : reg & 0xffffu));
        }
        for (int32_t i = 0; i < 4; ++i)
        {
            int32_t const row = i < 2 ? group : group + 8;
            cm[row][inGroup * 2 + (i & 1)] = c[lane].v[i];
        }
    }
    for (int32_t lane = 0; lane < kWarpSize; ++lane)
    {
        int32_t const group = lane >> 2;
        int32_t const inGroup = lane & 3;
        for (int32_t i = 0; i < 4; ++i)
        {
            int32_t const row = i < 2 ? group : group + 8;
            int32_t const col = inGroup * 2 + (i & 1);
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
