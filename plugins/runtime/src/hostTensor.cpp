#include "deformrt/hostTensor.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>

namespace deformrt
{

std::size_t dtypeSize(DType dtype) noexcept
{
    switch (dtype)
    {
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat16: return 2;
    case DType::kInt64: return 8;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool: return 1;
    }
    return 0;
}

char const* dtypeName(DType dtype) noexcept
{
    switch (dtype)
    {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kBool: return "bool";
    }
    return "unknown";
}

std::string formatShape(std::vector<int64_t> const& shape)
{
    if (shape.empty())
    {
        return "scalar";
    }
    std::string text;
    for (std::size_t i = 0; i < shape.size(); ++i)
    {
        text += (i ? "x" : "") + std::to_string(shape[i]);
    }
    return text;
}

Expected<int64_t> elementCount(std::vector<int64_t> const& shape)
{
    int64_t count = 1;
    for (int64_t dim : shape)
    {
        if (dim < 0)
        {
            return Status::error("shape " + formatShape(shape) + " has a negative dimension");
        }
        // Bounded so that count * element size (at most 8) still fits in int64.
        if (dim != 0 && count > (std::numeric_limits<int64_t>::max() / 8) / dim)
        {
            return Status::error("shape " + formatShape(shape) + " has too many elements");
        }
        count *= dim;
    }
    return count;
}

Expected<HostTensor> HostTensor::allocate(DType dtype, std::vector<int64_t> shape)
{
    auto count = elementCount(shape);
    if (!count)
    {
        return count.status();
    }
    HostTensor tensor;
    tensor.dtype = dtype;
    tensor.shape = std::move(shape);
    try
    {
        tensor.data.resize(static_cast<std::size_t>(*count) * dtypeSize(dtype));
    }
    catch (std::exception const&)
    {
        return Status::error("not enough memory for a " + formatShape(tensor.shape) + " " + dtypeName(dtype) + " tensor");
    }
    return Expected<HostTensor>(std::move(tensor));
}

namespace
{
// IEEE 754 binary16 -> binary64; every half value is exactly representable.
double halfToDouble(uint16_t bits)
{
    int const sign = (bits >> 15) ? -1 : 1;
    int const exponent = (bits >> 10) & 0x1f;
    int const mantissa = bits & 0x3ff;
    if (exponent == 0x1f)
    {
        return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
    }
    if (exponent == 0)
    {
        return sign * std::ldexp(static_cast<double>(mantissa), -24); // subnormal
    }
    return sign * std::ldexp(static_cast<double>(mantissa | 0x400), exponent - 25);
}

template <typename T>
void widen(std::byte const* bytes, std::size_t count, std::vector<double>& out)
{
    for (std::size_t i = 0; i < count; ++i)
    {
        T value;
        std::memcpy(&value, bytes + i * sizeof(T), sizeof(T)); // unaligned-safe
        out.push_back(static_cast<double>(value));
    }
}
} // namespace

std::vector<double> toDouble(HostTensor const& tensor)
{
    std::size_t const count = tensor.data.size() / dtypeSize(tensor.dtype);
    std::vector<double> out;
    out.reserve(count);
    std::byte const* bytes = tensor.data.data();
    switch (tensor.dtype)
    {
    case DType::kFloat32: widen<float>(bytes, count, out); break;
    case DType::kFloat16:
        for (std::size_t i = 0; i < count; ++i)
        {
            uint16_t bits;
            std::memcpy(&bits, bytes + 2 * i, 2);
            out.push_back(halfToDouble(bits));
        }
        break;
    case DType::kInt32: widen<int32_t>(bytes, count, out); break;
    case DType::kInt64: widen<int64_t>(bytes, count, out); break;
    case DType::kInt8: widen<int8_t>(bytes, count, out); break;
    case DType::kUInt8: widen<uint8_t>(bytes, count, out); break;
    case DType::kBool:
        for (std::size_t i = 0; i < count; ++i)
        {
            out.push_back(bytes[i] != std::byte{0} ? 1.0 : 0.0);
        }
        break;
    }
    return out;
}

} // namespace deformrt
