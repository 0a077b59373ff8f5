// CUDA runtime errors as Status values.
#pragma once

#include "deformrt/status.h"

#include <cuda_runtime_api.h>

#include <string>

namespace deformrt
{
namespace detail
{

inline Status cudaStatus(cudaError_t error, char const* what)
{
    if (error == cudaSuccess)
    {
        return Status();
    }
    return Status::error(std::string(what) + " failed: " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error)
        + ")");
}

} // namespace detail
} // namespace deformrt
