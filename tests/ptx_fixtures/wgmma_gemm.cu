// Fixture of tests/test_ptx_wgmma.py (compiled there by nvcc for sm_90a, to PTX only; nothing runs on a GPU):
// one warpgroup computes a dense fp16 GEMM tile D[64][N] = A[64][K] * B[K][N] (+ C when `accumulate`) with
// wgmma.mma_async, fp32 accumulation, K = 64 in four k16 steps, each its own wgmma-group.
// A and B^T come row-major from global memory (B as N rows of K: both operands K-major) and are written to
// shared memory in the canonical K-major layout of the swizzle mode `mode` (the descriptor's encoding: 0 none,
// 1 128-byte, 2 64-byte, 3 32-byte swizzle), per the PTX ISA's "Shared Memory Matrix Layout" and "Matrix
// Descriptor Format" sections:
// - no swizzle: 8-row x 16-byte core matrices (128 contiguous bytes), the next one along K at the leading
//   byte offset (128 here), the next 8 rows at the stride byte offset (256 here); one region per k16 step;
// - W-byte swizzle (W = 128, 64, 32): rows W bytes apart, the next 8 rows at the stride byte offset 8 W, W/32
//   k16 steps side by side in a row, and the 16-byte chunk c of row r stored at chunk c ^ (r % (W/16)) of its
//   row: the XOR of address bits 4.. with bits 7.. of a 1024-byte aligned buffer.
// MnMajor (imm-trans 1 for the shared-memory operands): 16-byte chunks of 8 consecutive M/N elements of one
// K; no swizzle: core matrices of 8 K rows x 16 bytes, the next 8 K at the leading byte offset (128), the next
// 8 M/N at the stride byte offset (256); W-byte swizzle: K rows W bytes apart holding W/2 M/N elements, the
// next 8 K at the stride byte offset (8 W), the next W/2 M/N at the leading byte offset (16 W).
// RegisterA: A from four .b32 registers per thread (the m16n8k16-style fragment of the warp's 16 rows).
// `fault` seeds one defect for the findings tests (0: none); `descShift` is added to B's descriptor.
#include <cstdint>
#include <cuda_fp16.h>

constexpr int kK = 64;
constexpr int kSteps = kK / 16;

enum Fault : int
{
    kNone = 0,
    kNoProxyFence = 1,      // shared memory written by st.shared, read by wgmma without fence.proxy.async
    kReadBeforeWait = 2,    // an accumulator register read before the wait_group retiring its wgmma
    kOverwriteB = 3,        // B overwritten while the wgmma reading it is in flight
    kNoWgmmaFence = 4,      // no wgmma.fence after the accumulators were written
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ int swizzleBytes(int mode)
{
    return mode == 1 ? 128 : mode == 2 ? 64 : mode == 3 ? 32 : 0;
}

// Byte offset of the 16-byte chunk (row, elements 8 chunk .. 8 chunk + 7) of a K-major operand of `rows` rows.
__device__ __forceinline__ uint32_t chunkOffset(int mode, int rows, int row, int chunk)
{
    int const width = swizzleBytes(mode);
    if (width == 0)
    {
        return (chunk / 2) * rows * 32 + (row / 8) * 256 + (chunk % 2) * 128 + (row % 8) * 16;
    }
    int const chunksPerRow = width / 16;
    uint32_t const linear = (chunk / chunksPerRow) * rows * width + (row / 8) * 8 * width + (row % 8) * width
        + (chunk % chunksPerRow) * 16;
    return linear ^ (((linear >> 7) & (chunksPerRow - 1)) << 4);
}

// Byte offset of the 16-byte chunk (elements 8 chunk .. 8 chunk + 7 along M/N, K index k) of an M/N-major
// operand of `rows` rows (M or N).
__device__ __forceinline__ uint32_t mnChunkOffset(int mode, int rows, int chunk, int k)
{
    int const width = swizzleBytes(mode);
    int const step = k / 16, kk = k % 16;
    if (width == 0)
    {
        return step * rows * 32 + chunk * 256 + (kk / 8) * 128 + (kk % 8) * 16;
    }
    int const perRow = width / 16;  // chunks of 8 elements in a W-byte row
    uint32_t const linear = step * rows * 32 + (chunk / perRow) * 16 * width + (kk / 8) * 8 * width
        + (kk % 8) * width + (chunk % perRow) * 16;
    return linear ^ (((linear >> 7) & (perRow - 1)) << 4);
}

__device__ __forceinline__ uint64_t encodeDescriptor(int mode, uint32_t start, uint32_t lbo, uint32_t sbo)
{
    return uint64_t((start & 0x3FFFF) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32)
        | (uint64_t(mode) << 62);
}

__device__ __forceinline__ uint64_t mnDescriptor(int mode, int rows, uint32_t base, int step)
{
    int const width = swizzleBytes(mode);
    return width == 0 ? encodeDescriptor(mode, base + step * rows * 32, 128, 256)
                      : encodeDescriptor(mode, base + step * rows * 32, 16 * width, 8 * width);
}

// The descriptor of k16 step `step` of a K-major operand at shared address `base` (1024-byte aligned).
__device__ __forceinline__ uint64_t descriptor(int mode, int rows, uint32_t base, int step)
{
    int const width = swizzleBytes(mode);
    uint32_t start, lbo, sbo;
    if (width == 0)
    {
        start = base + step * rows * 32;
        lbo = 128;
        sbo = 256;
    }
    else
    {
        int const stepsPerRow = width / 32;
        start = base + (step / stepsPerRow) * rows * width + (step % stepsPerRow) * 32;
        lbo = 16;  // not used by K-major swizzled layouts
        sbo = 8 * width;
    }
    return encodeDescriptor(mode, start, lbo, sbo);
}

// The inline-asm wrappers: accumulator lists ("+f" of d[0] .. d[N/2 - 1]) and their "{%0, ..., %(N/2 - 1)}"
// register lists, then the operands after them (SS: %(N/2) A's descriptor, %(N/2 + 1) B's, %(N/2 + 2) scale-d;
// RS: %(N/2) .. %(N/2 + 3) A's fragment, %(N/2 + 4) B's descriptor, %(N/2 + 5) scale-d).
#define ACC4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define ACC12(i) ACC4(i), ACC4(i + 4), ACC4(i + 8)
#define ACC32(i) ACC4(i), ACC4(i + 4), ACC4(i + 8), ACC4(i + 12), ACC4(i + 16), ACC4(i + 20), ACC4(i + 24), ACC4(i + 28)
#define ACC64(i) ACC32(i), ACC32(i + 32)
#define ACC128 ACC64(0), ACC64(64)
#define SCALE_D(operand) "{\n.reg .pred p;\nsetp.ne.b32 p, " operand ", 0;\n"
#define SS_INPUTS : "l"(descA), "l"(descB), "r"(scaleD) : "memory"
#define RS_INPUTS : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(scaleD) : "memory"
#define D24 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11" \
    "}"
#define D64 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31" \
    "}"
#define D128 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63" \
    "}"
#define D256 "{" \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63," \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79," \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95," \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111," \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" \
    "}"
#define WGMMA(n) "wgmma.mma_async.sync.aligned.m64n" #n "k16.f32.f16.f16 "
#define ACC_24 ACC12(0)
#define ACC_64 ACC32(0)
#define ACC_128 ACC64(0)
#define ACC_256 ACC128

// wgmma with A and B from shared memory; operands: scale-d, A's descriptor, B's, the imm-trans pair
#define DEFINE_SS(name, n, scale, descs, trans)                                                                  \
    __device__ __forceinline__ void name(float* d, uint64_t descA, uint64_t descB, int scaleD)                   \
    {                                                                                                            \
        asm volatile(SCALE_D(scale) WGMMA(n) D##n ", " descs ", p, 1, 1, " trans ";\n}\n" : ACC_##n SS_INPUTS); \
    }
// wgmma with A from four registers; operands: scale-d, A's registers and B's descriptor, imm-trans-b
#define DEFINE_RS(name, n, scale, operands, trans)                                                                \
    __device__ __forceinline__ void name(float* d, uint32_t const* a, uint64_t descB, int scaleD)                 \
    {                                                                                                             \
        asm volatile(SCALE_D(scale) WGMMA(n) D##n ", " operands ", p, 1, 1, " trans ";\n}\n"                    \
                     : ACC_##n RS_INPUTS);                                                                        \
    }

DEFINE_SS(wgmmaSS24, 24, "%14", "%12, %13", "0, 0")
DEFINE_SS(wgmmaSS64, 64, "%34", "%32, %33", "0, 0")
DEFINE_SS(wgmmaSS128, 128, "%66", "%64, %65", "0, 0")
DEFINE_SS(wgmmaSS256, 256, "%130", "%128, %129", "0, 0")
DEFINE_RS(wgmmaRS64, 64, "%37", "{%32, %33, %34, %35}, %36", "0")
DEFINE_RS(wgmmaRS128, 128, "%69", "{%64, %65, %66, %67}, %68", "0")
DEFINE_RS(wgmmaRS256, 256, "%133", "{%128, %129, %130, %131}, %132", "0")
// imm-trans 1: M/N-major shared-memory operands
DEFINE_SS(wgmmaSS64Mn, 64, "%34", "%32, %33", "1, 1")
DEFINE_RS(wgmmaRS64Mn, 64, "%37", "{%32, %33, %34, %35}, %36", "1")

template <int N, bool MnMajor>
__device__ __forceinline__ void wgmmaSS(float* d, uint64_t descA, uint64_t descB, int scaleD)
{
    if constexpr (MnMajor)
        wgmmaSS64Mn(d, descA, descB, scaleD);
    else if constexpr (N == 24)
        wgmmaSS24(d, descA, descB, scaleD);
    else if constexpr (N == 64)
        wgmmaSS64(d, descA, descB, scaleD);
    else if constexpr (N == 128)
        wgmmaSS128(d, descA, descB, scaleD);
    else
        wgmmaSS256(d, descA, descB, scaleD);
}

template <int N, bool MnMajor>
__device__ __forceinline__ void wgmmaRS(float* d, uint32_t const* a, uint64_t descB, int scaleD)
{
    if constexpr (MnMajor)
        wgmmaRS64Mn(d, a, descB, scaleD);
    else if constexpr (N == 64)
        wgmmaRS64(d, a, descB, scaleD);
    else if constexpr (N == 128)
        wgmmaRS128(d, a, descB, scaleD);
    else
        wgmmaRS256(d, a, descB, scaleD);
}

// Fill a shared-memory operand of `rows` rows from `src` (rows x K, row-major) in the layout the kernel's
// descriptors describe.
template <bool MnMajor>
__device__ __forceinline__ void fillOperand(uint8_t* dst, __half const* src, int rows, int mode, int tid)
{
    for (int i = tid; i < rows * kK / 8; i += 128)
    {
        if constexpr (MnMajor)
        {
            int const k = i % kK, chunk = i / kK;
            uint16_t h[8];
            for (int j = 0; j < 8; ++j)
            {
                h[j] = reinterpret_cast<uint16_t const*>(src)[(8 * chunk + j) * kK + k];
            }
            uint4 v;
            v.x = h[0] | (uint32_t(h[1]) << 16);
            v.y = h[2] | (uint32_t(h[3]) << 16);
            v.z = h[4] | (uint32_t(h[5]) << 16);
            v.w = h[6] | (uint32_t(h[7]) << 16);
            *reinterpret_cast<uint4*>(dst + mnChunkOffset(mode, rows, chunk, k)) = v;
        }
        else
        {
            int const row = i / (kK / 8), chunk = i % (kK / 8);
            *reinterpret_cast<uint4*>(dst + chunkOffset(mode, rows, row, chunk))
                = *reinterpret_cast<uint4 const*>(src + row * kK + chunk * 8);
        }
    }
}

#endif

template <int N, bool RegisterA, bool MnMajor = false>
__global__ void __launch_bounds__(128) wgmmaGemm(__half const* a, __half const* bt, float const* c, float* d,
                                                 int mode, int accumulate, int fault, uint64_t descShift)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t smem[];
    uint8_t* const sa = smem;
    uint8_t* const sb = smem + 64 * kK * 2;
    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const g = (tid % 32) / 4;
    int const t = tid % 4;
    if constexpr (!RegisterA)
    {
        fillOperand<MnMajor>(sa, a, 64, mode, tid);
    }
    fillOperand<MnMajor>(sb, bt, N, mode, tid);
    if (fault != kNoProxyFence)
    {
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    }
    __syncthreads();

    // A fragments (RegisterA): rows 16 warp + g and + 8, columns 16 step + 2 t (+ 1) and + 8
    uint32_t fragments[kSteps][4];
    if constexpr (RegisterA)
    {
        uint32_t const* const a32 = reinterpret_cast<uint32_t const*>(a);
#pragma unroll
        for (int s = 0; s < kSteps; ++s)
        {
            int const base = ((16 * warp + g) * kK + 16 * s + 2 * t) / 2;
            fragments[s][0] = a32[base];
            fragments[s][1] = a32[base + 8 * kK / 2];
            fragments[s][2] = a32[base + 4];
            fragments[s][3] = a32[base + 8 * kK / 2 + 4];
        }
    }
    // accumulator register i: row 16 warp + g (+ 8 for i % 4 >= 2), column 8 (i / 4) + 2 t + i % 2
    float acc[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i)
    {
        acc[i] = c[(16 * warp + g + 8 * ((i >> 1) & 1)) * N + 8 * (i >> 2) + 2 * t + (i & 1)];
    }
    uint32_t const base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    if (fault != kNoWgmmaFence)
    {
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
    {
        uint64_t const descB = (MnMajor ? mnDescriptor(mode, N, base + 64 * kK * 2, s)
                                        : descriptor(mode, N, base + 64 * kK * 2, s)) + descShift;
        int const scaleD = s == 0 ? accumulate : 1;
        if constexpr (RegisterA)
        {
            wgmmaRS<N, MnMajor>(acc, fragments[s], descB, scaleD);
        }
        else
        {
            wgmmaSS<N, MnMajor>(acc, MnMajor ? mnDescriptor(mode, 64, base, s) : descriptor(mode, 64, base, s), descB,
                                scaleD);
        }
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        if (s > 0)
        {
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
        }
    }
    if (fault == kOverwriteB && tid == 0)
    {
        // row 0's last chunk: read by the last k16 step, still in flight
        *reinterpret_cast<volatile uint32_t*>(sb + (MnMajor ? mnChunkOffset(mode, N, 0, kK - 1)
                                                            : chunkOffset(mode, N, 0, kK / 8 - 1))) = 0u;
    }
    if (fault == kReadBeforeWait)
    {
        d[tid] = acc[0];
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
    for (int i = 0; i < N / 2; ++i)
    {
        d[(16 * warp + g + 8 * ((i >> 1) & 1)) * N + 8 * (i >> 2) + 2 * t + (i & 1)] = acc[i];
    }
#endif
}

template __global__ void wgmmaGemm<64, false>(__half const*, __half const*, float const*, float*, int, int, int,
                                              uint64_t);
template __global__ void wgmmaGemm<128, false>(__half const*, __half const*, float const*, float*, int, int, int,
                                               uint64_t);
template __global__ void wgmmaGemm<256, false>(__half const*, __half const*, float const*, float*, int, int, int,
                                               uint64_t);
template __global__ void wgmmaGemm<64, true>(__half const*, __half const*, float const*, float*, int, int, int,
                                             uint64_t);
template __global__ void wgmmaGemm<128, true>(__half const*, __half const*, float const*, float*, int, int, int,
                                              uint64_t);
template __global__ void wgmmaGemm<256, true>(__half const*, __half const*, float const*, float*, int, int, int,
                                              uint64_t);
template __global__ void wgmmaGemm<64, false, true>(__half const*, __half const*, float const*, float*, int, int,
                                                    int, uint64_t);
template __global__ void wgmmaGemm<64, true, true>(__half const*, __half const*, float const*, float*, int, int, int,
                                                   uint64_t);
template __global__ void wgmmaGemm<24, false>(__half const*, __half const*, float const*, float*, int, int, int,
                                              uint64_t);
