// Conversions between TensorRT's types and the runtime's (element types, shapes).
#pragma once

#include "deformrt/hostTensor.h"

#include <NvInferRuntime.h>

#include <optional>
#include <vector>

namespace deformrt
{
namespace detail
{

//! nullopt for types a .npy file cannot hold (bf16, fp8, int4, ...).
std::optional<DType> fromTensorRT(nvinfer1::DataType type) noexcept;

std::vector<int64_t> fromDims(nvinfer1::Dims const& dims);

//! An error when the rank exceeds TensorRT's limit.
Expected<nvinfer1::Dims> toDims(std::vector<int64_t> const& shape);

} // namespace detail
} // namespace deformrt
