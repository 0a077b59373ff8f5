// Device helpers of the tensor-core kernels (deformConvTensorCore.cu, deformConvWgmma.cu): cp.async, the
// B copy and the launch, shared by both so that each is written once. CUDA only.
#pragma once

#include "deformConvTensorCore.h"

#include <cuda_fp16.h>

namespace deformrt
{
namespace tc
{

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800

__device__ __forceinline__ void cpAsync16(uint32_t sharedAddress, void const* global, uint32_t bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress), "l"(global), "r"(bytes));
}

//! A 4-byte cp.async (only .ca takes sizes below 16): ``bytes`` 4 copies, 0 zero-fills.
__device__ __forceinline__ void cpAsync4(uint32_t sharedAddress, void const* global, uint32_t bytes)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(sharedAddress), "l"(global), "r"(bytes));
}

__device__ __forceinline__ void cpAsyncCommit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

__device__ __forceinline__ void cpAsyncWaitAll()
{
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

__device__ __forceinline__ uint32_t sharedAddressOf(void const* p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

//! loadB of the wgmma shapes: the weights of step (chunk, tap) into B buffer ``stage`` in the register-A K
//! order, one 4-byte cp.async per word (bWordCopies; zero-filled past the chunk's channels and the group's
//! output channels).
template <class Shape>
__device__ __forceinline__ void loadBWords(TcGeometry const& t, TcTensors const& p, TcTile const& tile,
    BWordCopies const& bw, int32_t chunk, int32_t tap, int32_t stage, SharedView const& s)
{
    uint32_t const b = sharedAddressOf(s.b) + stage * (Shape::BN * kRowBytes);
    uint16_t const* const source = halfAt(p.weight, bw.firstSource + bStepOffset(t, chunk, tap));
DEFORMRT_UNROLL
    for (int32_t slot = 0; slot < bWordSlots<Shape>(); ++slot)
    {
        cpAsync4(b + bWordByte<Shape>(bw, slot), source + slot * bw.rowStepElements,
            bWordInside<Shape>(t, tile, bw, slot) ? 4u : 0u);
    }
}

//! loadB: the weights of step (chunk, tap) into B buffer ``stage``, by cp.async where they are whole
//! 16-byte vectors (zero-filled past the chunk's channels and the group's output channels).
template <class Shape, bool Vector>
__device__ __forceinline__ void loadB(TcGeometry const& t, TcTensors const& p, TcTile const& tile, BCopies const& bc,
    int32_t chunk, int32_t tap, int32_t stage, int32_t tid, SharedView const& s)
{
    if (!Vector)
    {
        loadBDirect<Shape>(t, p, tile, chunk, tap, stage, tid, s);
        return;
    }
    uint32_t const step = bStepOffset(t, chunk, tap);
    uint32_t const b = sharedAddressOf(s.b) + stage * (Shape::BN * kRowBytes);
    int32_t const firstByte = Shape::byteOf(bc.row, bc.vec);
DEFORMRT_UNROLL
    for (int32_t slot = 0; slot < Shape::BVectorsPerThread; ++slot)
    {
        // an odd paired slot: its even slot's address + 32 bytes (an immediate offset)
        cpAsync16(b + slotByte<Shape::Threads, Shape::PairedB>(firstByte, slot),
            halfAt(p.weight, bEvenSlotSource<Shape>(bc, slot) + step) + bOddSlotHalves<Shape>(slot),
            bSlotInside<Shape>(t, tile, bc, slot) ? 16u : 0u);
    }
}

#endif // __CUDA_ARCH__ >= 800

//! Launches ``kernel`` (a tensor-core kernel of ``threads`` per CTA) over ``plan``'s grid: x = pixel tiles,
//! y = output-channel tiles x K splits, z = convolution groups, with ``bytes`` of dynamic shared memory.
//! Above 48 KB that needs an opt-in per kernel, and the opt-in belongs to the CUDA context that is current:
//! a new context (another thread's, a driver-API one, or the primary context after cudaDeviceReset) starts
//! without it. Nothing is cached: the attribute is set before every launch that needs it (a host-side driver
//! call, no stream work, allowed during graph capture).
template <class Kernel>
cudaError_t launchTiles(Kernel* kernel, int32_t threads, int64_t bytes, TcGeometry const& t, TcTensors const& p,
    TcPlan const& plan, cudaStream_t stream)
{
    if (bytes > 48 * 1024)
    {
        cudaError_t const status
            = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
        if (status != cudaSuccess)
        {
            return status;
        }
    }
    dim3 const grid(static_cast<unsigned>(plan.mTiles), static_cast<unsigned>(plan.nTiles * plan.splitK),
        static_cast<unsigned>(t.g.group));
    kernel<<<grid, threads, static_cast<size_t>(bytes), stream>>>(t, p, plan);
    return cudaGetLastError();
}

} // namespace tc
} // namespace deformrt
