// A tensor in host memory: element type, shape (C order) and raw bytes. The unit the runtime reads
// from and writes to .npy files and compares against references; no CUDA or TensorRT needed.
#pragma once

#include "deformrt/status.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace deformrt
{

//! The element types an engine's inputs and outputs can have that .npy files can hold.
enum class DType
{
    kFloat32,
    kFloat16,
    kInt32,
    kInt64,
    kInt8,
    kUInt8,
    kBool,
};

std::size_t dtypeSize(DType dtype) noexcept;

//! numpy's name: "float32", "float16", ...
char const* dtypeName(DType dtype) noexcept;

//! "1x3x800x1344" ("scalar" for a 0-d shape).
std::string formatShape(std::vector<int64_t> const& shape);

//! Number of elements of a shape, or an error when a dimension is negative or the count overflows.
Expected<int64_t> elementCount(std::vector<int64_t> const& shape);

struct HostTensor
{
    DType dtype{DType::kFloat32};
    std::vector<int64_t> shape; //!< empty: a 0-d tensor (one element)
    std::vector<std::byte> data; //!< elementCount(shape) * dtypeSize(dtype) bytes, C order

    //! A tensor of this type and shape with its bytes allocated (zero-filled).
    static Expected<HostTensor> allocate(DType dtype, std::vector<int64_t> shape);
};

//! The elements as float64, for comparisons (fp16 is widened exactly).
std::vector<double> toDouble(HostTensor const& tensor);

} // namespace deformrt
