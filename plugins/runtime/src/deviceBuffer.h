// Owning device allocation (cudaMalloc / cudaFree), move-only.
#pragma once

#include "cudaStatus.h"

#include <cstddef>
#include <utility>

namespace deformrt
{
namespace detail
{

class DeviceBuffer
{
public:
    DeviceBuffer() = default;

    static Expected<DeviceBuffer> allocate(std::size_t bytes)
    {
        DeviceBuffer buffer;
        // TensorRT wants a valid address even for an empty tensor: allocate at least one byte.
        if (Status status = cudaStatus(cudaMalloc(&buffer.mData, bytes == 0 ? 1 : bytes), "cudaMalloc"); !status)
        {
            return status;
        }
        buffer.mBytes = bytes;
        return Expected<DeviceBuffer>(std::move(buffer));
    }

    DeviceBuffer(DeviceBuffer&& other) noexcept
        : mData(std::exchange(other.mData, nullptr))
        , mBytes(std::exchange(other.mBytes, 0))
    {
    }

    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept
    {
        std::swap(mData, other.mData);
        std::swap(mBytes, other.mBytes);
        return *this;
    }

    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;

    ~DeviceBuffer()
    {
        if (mData != nullptr)
        {
            cudaFree(mData); // an error here (a sticky context error) has been reported by the failing call
        }
    }

    void* data() const noexcept
    {
        return mData;
    }

    std::size_t bytes() const noexcept
    {
        return mBytes;
    }

private:
    void* mData{nullptr};
    std::size_t mBytes{0};
};

} // namespace detail
} // namespace deformrt
