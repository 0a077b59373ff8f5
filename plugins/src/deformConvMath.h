// Deformable-convolution math written once for the GPU kernels and their CPU build.
//
// Everything here is __host__ __device__: deformConvKernel.cu runs it on the GPU, deformConvHost.cpp
// compiles the same code with a plain C++ compiler and runs it on the CPU (tests compare that build
// with an independent float64 reference). That includes the GEMM tiling: a thread block's work is
// split into phases (load tiles, multiply tiles, store) separated by barriers; the GPU runs them with
// __syncthreads() between phases, the CPU runs every "thread" of a phase before the next phase.
//
// Numerics: elements are stored as float or half; coordinates, bilinear weights, blending and the
// GEMM accumulation are fp32. A sampling position is split exactly into an integer part
// (base + floor(offset)) and the fraction (offset - floor(offset)), so the fraction does not lose
// precision when the position is far from the origin.
#pragma once

#include "deformrt/deformConvDesc.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define DEFORMRT_HD __host__ __device__ __forceinline__
#define DEFORMRT_UNROLL _Pragma("unroll")
#else
#define DEFORMRT_HD inline
#define DEFORMRT_UNROLL
#endif

namespace deformrt
{

// ------------------------------------------------------------------------------------------------
// Element storage

//! Half-precision storage for the CPU build (IEEE binary16 bits; conversions round to nearest even).
struct HostHalf
{
    uint16_t bits;
};

inline uint16_t floatToHalfBits(float f)
{
    uint32_t x;
    std::memcpy(&x, &f, sizeof(x));
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t const mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) // inf or NaN (NaN stays a quiet NaN)
    {
        return static_cast<uint16_t>(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u));
    }
    if (mag >= 0x477ff000u) // >= 65520 rounds to infinity
    {
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    uint32_t result;
    uint32_t rem;
    uint32_t halfway;
    if (mag < 0x38800000u) // below 2^-14: a subnormal half (units of 2^-24)
    {
        uint32_t const exponent = mag >> 23;
        if (exponent < 102) // below 2^-25: rounds to zero
        {
            return static_cast<uint16_t>(sign);
        }
        uint32_t const mantissa = (mag & 0x7fffffu) | 0x800000u;
        uint32_t const shift = 126 - exponent; // 14 .. 24
        result = mantissa >> shift;
        rem = mantissa & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1);
    }
    else
    {
        result = (mag - 0x38000000u) >> 13; // re-bias the exponent from 127 to 15
        rem = mag & 0x1fffu;
        halfway = 0x1000u;
    }
    if (rem > halfway || (rem == halfway && (result & 1u)))
    {
        ++result; // a carry into the exponent is the correct rounding
    }
    return static_cast<uint16_t>(sign | result);
}

inline float halfBitsToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t const exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t x;
    if (exponent == 0x1fu)
    {
        x = sign | 0x7f800000u | (mantissa << 13);
    }
    else if (exponent != 0)
    {
        x = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    else if (mantissa == 0)
    {
        x = sign;
    }
    else // subnormal: normalise
    {
        uint32_t shift = 0;
        while ((mantissa & 0x400u) == 0)
        {
            mantissa <<= 1;
            ++shift;
        }
        x = sign | ((113u - shift) << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &x, sizeof(f));
    return f;
}

DEFORMRT_HD float loadFloat(float const* p)
{
    return *p;
}
DEFORMRT_HD void storeFloat(float* p, float v)
{
    *p = v;
}
inline float loadFloat(HostHalf const* p)
{
    return halfBitsToFloat(p->bits);
}
inline void storeFloat(HostHalf* p, float v)
{
    p->bits = floatToHalfBits(v);
}
#ifdef __CUDACC__
__device__ __forceinline__ float loadFloat(__half const* p)
{
    return __half2float(*p);
}
__device__ __forceinline__ void storeFloat(__half* p, float v)
{
    *p = __float2half_rn(v);
}
#endif

// ------------------------------------------------------------------------------------------------
// Problem geometry

//! A validated DeformrtConvDesc in the int32 form the inner loops use, plus derived sizes.
struct DcnGeometry
{
    int32_t n, c, h, w, cOut, kh, kw, ho, wo;
    int32_t strideH, strideW, padTop, padLeft, dilH, dilW;
    int32_t group, offsetGroup;
    int32_t cPerGroup;    //!< input channels per convolution group
    int32_t cOutPerGroup; //!< output channels per convolution group (GEMM M)
    int32_t cPerOffsetGroup;
    int32_t taps;     //!< kh * kw
    int32_t kDim;     //!< GEMM K = cPerGroup * taps
    int64_t outPlane; //!< ho * wo
    int64_t cols;     //!< GEMM N = n * ho * wo (the whole batch: no per-image loop)
    bool modulated, hasBias;
    bool weightOhwi; //!< weight layout DEFORMRT_WEIGHT_OHWI, else OIHW
};

//! Geometry of a desc that describeInvalid() accepted.
inline DcnGeometry makeGeometry(DeformrtConvDesc const& d)
{
    DcnGeometry g{};
    g.n = int32_t(d.batch);
    g.c = int32_t(d.inChannels);
    g.h = int32_t(d.inHeight);
    g.w = int32_t(d.inWidth);
    g.cOut = int32_t(d.outChannels);
    g.kh = int32_t(d.kernelH);
    g.kw = int32_t(d.kernelW);
    g.ho = int32_t(d.outHeight);
    g.wo = int32_t(d.outWidth);
    g.strideH = int32_t(d.strideH);
    g.strideW = int32_t(d.strideW);
    g.padTop = int32_t(d.padTop);
    g.padLeft = int32_t(d.padLeft);
    g.dilH = int32_t(d.dilationH);
    g.dilW = int32_t(d.dilationW);
    g.group = int32_t(d.group);
    g.offsetGroup = int32_t(d.offsetGroup);
    g.cPerGroup = g.c / g.group;
    g.cOutPerGroup = g.cOut / g.group;
    g.cPerOffsetGroup = g.c / g.offsetGroup;
    g.taps = g.kh * g.kw;
    g.kDim = g.cPerGroup * g.taps;
    g.outPlane = int64_t(g.ho) * g.wo;
    g.cols = int64_t(g.n) * g.outPlane;
    g.modulated = d.modulated != 0;
    g.hasBias = d.hasBias != 0;
    g.weightOhwi = d.weightLayout == DEFORMRT_WEIGHT_OHWI;
    return g;
}

//! Device (or host) pointers of one problem; bias and mask may be null when unused.
template <typename T>
struct DcnTensors
{
    T const* x;
    T const* weight;
    T const* offset;
    T const* bias;
    T const* mask;
    T* y;
};

//! Whether a forward call may run (host side of both builds): a valid desc and every tensor it uses.
inline bool callIsValid(DeformrtConvDesc const* d, void const* x, void const* weight, void const* offset,
    void const* bias, void const* mask, void const* y)
{
    return d != nullptr && describeInvalid(*d) == nullptr && x != nullptr && weight != nullptr && offset != nullptr
        && y != nullptr && (d->hasBias == 0 || bias != nullptr) && (d->modulated == 0 || mask != nullptr);
}

//! The typed tensors of a forward call; bias and mask are null unless the problem uses them.
template <typename T>
DcnTensors<T> bindTensors(DcnGeometry const& g, void const* x, void const* weight, void const* offset,
    void const* bias, void const* mask, void* y)
{
    return DcnTensors<T>{static_cast<T const*>(x), static_cast<T const*>(weight), static_cast<T const*>(offset),
        g.hasBias ? static_cast<T const*>(bias) : nullptr, g.modulated ? static_cast<T const*>(mask) : nullptr,
        static_cast<T*>(y)};
}

// ------------------------------------------------------------------------------------------------
// Sampling

//! Offsets beyond this many pixels (and NaN/inf offsets) sample zero; keeps coordinates in int32.
constexpr float kMaxOffset = 16777216.0f; // 2^24

//! Bilinear sample of one h x w plane at (baseY + dy, baseX + dx) of a zero-padded image: a corner
//! outside the image contributes zero (torchvision / ONNX DeformConv semantics).
template <typename T>
DEFORMRT_HD float sampleBilinear(T const* plane, int32_t h, int32_t w, int32_t baseY, int32_t baseX, float dy, float dx)
{
    float const fy = floorf(dy);
    float const fx = floorf(dx);
    if (!(fabsf(fy) < kMaxOffset && fabsf(fx) < kMaxOffset))
    {
        return 0.0f;
    }
    int32_t const y0 = baseY + int32_t(fy);
    int32_t const x0 = baseX + int32_t(fx);
    if (y0 < -1 || y0 >= h || x0 < -1 || x0 >= w)
    {
        return 0.0f;
    }
    float const ly = dy - fy;
    float const lx = dx - fx;
    bool const top = y0 >= 0;
    bool const bottom = y0 + 1 < h;
    bool const left = x0 >= 0;
    bool const right = x0 + 1 < w;
    int64_t const i00 = int64_t(y0) * w + x0;
    float const v00 = (top && left) ? loadFloat(plane + i00) : 0.0f;
    float const v01 = (top && right) ? loadFloat(plane + i00 + 1) : 0.0f;
    float const v10 = (bottom && left) ? loadFloat(plane + i00 + w) : 0.0f;
    float const v11 = (bottom && right) ? loadFloat(plane + i00 + w + 1) : 0.0f;
    float const upper = (1.0f - lx) * v00 + lx * v01;
    float const lower = (1.0f - lx) * v10 + lx * v11;
    return (1.0f - ly) * upper + ly * lower;
}

//! One output pixel of the batched GEMM: image index, pixel index in the output plane, and the
//! input position of kernel tap (0, 0) before offsets.
struct DcnPixel
{
    int32_t n;
    int32_t baseY, baseX;
    int64_t pix;
};

DEFORMRT_HD DcnPixel decodeColumn(DcnGeometry const& g, int64_t col)
{
    DcnPixel p;
    p.n = int32_t(col / g.outPlane);
    p.pix = col - int64_t(p.n) * g.outPlane;
    int32_t const oy = int32_t(p.pix / g.wo);
    int32_t const ox = int32_t(p.pix - int64_t(oy) * g.wo);
    p.baseY = oy * g.strideH - g.padTop;
    p.baseX = ox * g.strideW - g.padLeft;
    return p;
}

//! Element (kk, pixel) of convolution group ``grp``'s column matrix: input channel
//! grp * cPerGroup + kk / taps sampled at kernel tap kk % taps, times the mask when modulated.
template <typename T>
DEFORMRT_HD float sampleColumn(DcnGeometry const& g, DcnTensors<T> const& t, DcnPixel const& p, int32_t grp, int32_t kk)
{
    int32_t const ci = kk / g.taps;
    int32_t const tap = kk - ci * g.taps;
    int32_t const c = grp * g.cPerGroup + ci;
    int32_t const og = c / g.cPerOffsetGroup;
    int32_t const ki = tap / g.kw;
    int32_t const kj = tap - ki * g.kw;
    // offset channel og*2K + 2*tap (+1 for dx); mask channel og*K + tap
    int64_t const tapChannel = int64_t(p.n) * g.offsetGroup * g.taps + int64_t(og) * g.taps + tap;
    T const* dyPtr = t.offset + (2 * tapChannel) * g.outPlane + p.pix;
    float const dy = loadFloat(dyPtr);
    float const dx = loadFloat(dyPtr + g.outPlane);
    T const* plane = t.x + (int64_t(p.n) * g.c + c) * (int64_t(g.h) * g.w);
    float v = sampleBilinear(plane, g.h, g.w, p.baseY + ki * g.dilH, p.baseX + kj * g.dilW, dy, dx);
    if (g.modulated)
    {
        v *= loadFloat(t.mask + tapChannel * g.outPlane + p.pix);
    }
    return v;
}

// ------------------------------------------------------------------------------------------------
// The tiled GEMM: Y[grp] (cOutPerGroup x cols) = W[grp] (cOutPerGroup x kDim) * columns (kDim x cols),
// columns sampled on the fly (no column buffer, no workspace). One block of kTileThreads threads owns
// a kTileM x kTileN output tile; each thread accumulates kThreadM x kThreadN outputs in fp32.

constexpr int32_t kTileM = 64;
constexpr int32_t kTileN = 64;
constexpr int32_t kTileK = 16;
constexpr int32_t kTileThreads = 256;
constexpr int32_t kThreadM = kTileM / (kTileThreads / 16);
constexpr int32_t kThreadN = kTileN / 16;
// Weight-tile rows are padded by 4 floats to spread its transposed stores over the memory banks.
constexpr int32_t kTileMPadded = kTileM + 4;
static_assert(kTileThreads % kTileN == 0 && (kTileK * kTileN) % kTileThreads == 0, "B-tile load mapping");
static_assert((kTileK * kTileM) % kTileThreads == 0 && kTileThreads % kTileK == 0, "A-tile load mapping");

struct DcnTileShared
{
    float a[kTileK][kTileMPadded]; //!< weights, [k][m]
    float b[kTileK][kTileN];       //!< sampled columns, [k][n]
};

struct DcnTileAcc
{
    float v[kThreadM][kThreadN];
};

//! Which tile a block computes: convolution group, first output channel within it, first column.
struct DcnTileCoord
{
    int32_t grp;
    int32_t m0;
    int64_t col0;
};

//! Element of output channel ``co``'s weights at GEMM row ``kk`` (input channel kk / taps of the group at
//! tap kk % taps), in either layout: the K order, and so the summation order, is the same for both.
DEFORMRT_HD int64_t weightIndex(DcnGeometry const& g, int32_t co, int32_t kk)
{
    if (!g.weightOhwi)
    {
        return int64_t(co) * g.kDim + kk;
    }
    int32_t const ci = kk / g.taps;
    int32_t const tap = kk - ci * g.taps;
    return (int64_t(co) * g.taps + tap) * g.cPerGroup + ci;
}

//! Phase 1: fill the shared tiles for K-slice [k0, k0 + kTileK). Out-of-range elements are zero.
template <typename T>
DEFORMRT_HD void loadTiles(DcnGeometry const& g, DcnTensors<T> const& t, DcnTileCoord const& tc, int32_t k0,
    int32_t tid, DcnTileShared& s)
{
    // Weights: consecutive threads read consecutive k of one weight row (contiguous in memory).
DEFORMRT_UNROLL
    for (int32_t r = 0; r < kTileK * kTileM / kTileThreads; ++r)
    {
        int32_t const e = tid + r * kTileThreads;
        int32_t const kr = e % kTileK;
        int32_t const m = e / kTileK;
        int32_t const row = tc.m0 + m;
        int32_t const kk = k0 + kr;
        float v = 0.0f;
        if (row < g.cOutPerGroup && kk < g.kDim)
        {
            v = loadFloat(t.weight + weightIndex(g, tc.grp * g.cOutPerGroup + row, kk));
        }
        s.a[kr][m] = v;
    }
    // Columns: each thread owns one column (one output pixel) and samples several k rows of it.
    int32_t const n = tid % kTileN;
    int64_t const col = tc.col0 + n;
    bool const colValid = col < g.cols;
    DcnPixel const p = decodeColumn(g, colValid ? col : 0);
DEFORMRT_UNROLL
    for (int32_t r = 0; r < kTileK * kTileN / kTileThreads; ++r)
    {
        int32_t const kr = tid / kTileN + r * (kTileThreads / kTileN);
        int32_t const kk = k0 + kr;
        s.b[kr][n] = (colValid && kk < g.kDim) ? sampleColumn(g, t, p, tc.grp, kk) : 0.0f;
    }
}

//! Phase 2: accumulate the product of the shared tiles into this thread's outputs.
DEFORMRT_HD void multiplyTiles(DcnTileShared const& s, int32_t tid, DcnTileAcc& acc)
{
    int32_t const ty = tid / 16;
    int32_t const tx = tid % 16;
DEFORMRT_UNROLL
    for (int32_t k = 0; k < kTileK; ++k)
    {
        float a[kThreadM];
        float b[kThreadN];
DEFORMRT_UNROLL
        for (int32_t i = 0; i < kThreadM; ++i)
        {
            a[i] = s.a[k][ty + 16 * i];
        }
DEFORMRT_UNROLL
        for (int32_t j = 0; j < kThreadN; ++j)
        {
            b[j] = s.b[k][tx + 16 * j];
        }
DEFORMRT_UNROLL
        for (int32_t i = 0; i < kThreadM; ++i)
        {
DEFORMRT_UNROLL
            for (int32_t j = 0; j < kThreadN; ++j)
            {
                acc.v[i][j] = fmaf(a[i], b[j], acc.v[i][j]);
            }
        }
    }
}

//! Phase 3: add the bias and store this thread's outputs.
template <typename T>
DEFORMRT_HD void storeTile(DcnGeometry const& g, DcnTensors<T> const& t, DcnTileCoord const& tc, int32_t tid,
    DcnTileAcc const& acc)
{
    int32_t const ty = tid / 16;
    int32_t const tx = tid % 16;
DEFORMRT_UNROLL
    for (int32_t i = 0; i < kThreadM; ++i)
    {
        int32_t const row = tc.m0 + ty + 16 * i;
        if (row >= g.cOutPerGroup)
        {
            continue;
        }
        int32_t const co = tc.grp * g.cOutPerGroup + row;
        float const bias = g.hasBias ? loadFloat(t.bias + co) : 0.0f;
DEFORMRT_UNROLL
        for (int32_t j = 0; j < kThreadN; ++j)
        {
            int64_t const col = tc.col0 + tx + 16 * j;
            if (col >= g.cols)
            {
                continue;
            }
            int64_t const n = col / g.outPlane;
            int64_t const pix = col - n * g.outPlane;
            storeFloat(t.y + (n * g.cOut + co) * g.outPlane + pix, acc.v[i][j] + bias);
        }
    }
}

//! Number of tiles along the columns, the output channels of a group, and the groups.
struct DcnTileGrid
{
    int64_t colTiles;
    int32_t mTiles;
    int32_t groups;
};

inline DcnTileGrid tileGrid(DcnGeometry const& g)
{
    return DcnTileGrid{(g.cols + kTileN - 1) / kTileN, (g.cOutPerGroup + kTileM - 1) / kTileM, g.group};
}

} // namespace deformrt
