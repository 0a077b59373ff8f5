#include "tensorrtTypes.h"

namespace deformrt
{
namespace detail
{

std::optional<DType> fromTensorRT(nvinfer1::DataType type) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return DType::kFloat32;
    case nvinfer1::DataType::kHALF: return DType::kFloat16;
    case nvinfer1::DataType::kINT32: return DType::kInt32;
    case nvinfer1::DataType::kINT64: return DType::kInt64;
    case nvinfer1::DataType::kINT8: return DType::kInt8;
    case nvinfer1::DataType::kUINT8: return DType::kUInt8;
    case nvinfer1::DataType::kBOOL: return DType::kBool;
    default: return std::nullopt;
    }
}

std::vector<int64_t> fromDims(nvinfer1::Dims const& dims)
{
    std::vector<int64_t> shape;
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        shape.push_back(dims.d[i]);
    }
    return shape;
}

Expected<nvinfer1::Dims> toDims(std::vector<int64_t> const& shape)
{
    nvinfer1::Dims dims{};
    if (shape.size() > static_cast<std::size_t>(nvinfer1::Dims::MAX_DIMS))
    {
        return Status::error("shape " + formatShape(shape) + " has more than " + std::to_string(nvinfer1::Dims::MAX_DIMS)
            + " dimensions");
    }
    dims.nbDims = static_cast<int32_t>(shape.size());
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        dims.d[i] = shape[i];
    }
    return dims;
}

} // namespace detail
} // namespace deformrt
