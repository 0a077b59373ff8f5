// The .npy format: magic "\x93NUMPY", a version byte pair, the header length (2 bytes little-endian in
// 1.0, 4 bytes in 2.0/3.0), then a Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...)}
// padded with spaces to a 64-byte boundary and ended by '\n', then the raw data.
#include "deformrt/npy.h"

#include "fileIo.h"
#include "printable.h"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>

namespace deformrt
{
namespace
{
constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;
constexpr std::size_t kAlignment = 64; // numpy aligns the data start so that it can be memory-mapped

struct DescrEntry
{
    char const* descr;
    DType dtype;
};
// '<' is little-endian; '|' marks one-byte types with no byte order. '=' (native) is accepted on read
// because every platform deformrt targets (x86_64, aarch64) is little-endian.
constexpr DescrEntry kDescrs[] = {
    {"f4", DType::kFloat32},
    {"f2", DType::kFloat16},
    {"i4", DType::kInt32},
    {"i8", DType::kInt64},
    {"i1", DType::kInt8},
    {"u1", DType::kUInt8},
    {"b1", DType::kBool},
};

std::optional<DType> dtypeFromDescr(std::string const& descr)
{
    if (descr.size() != 3)
    {
        return std::nullopt;
    }
    char const order = descr[0];
    for (DescrEntry const& entry : kDescrs)
    {
        if (descr.compare(1, 2, entry.descr) != 0)
        {
            continue;
        }
        bool const oneByte = dtypeSize(entry.dtype) == 1;
        if (order == '<' || order == '=' || (oneByte && order == '|'))
        {
            return entry.dtype;
        }
    }
    return std::nullopt;
}

std::string descrOf(DType dtype)
{
    for (DescrEntry const& entry : kDescrs)
    {
        if (entry.dtype == dtype)
        {
            return std::string(dtypeSize(dtype) == 1 ? "|" : "<") + entry.descr;
        }
    }
    return "";
}

//! A strict reader for the Python literal subset numpy writes in the header; any other syntax is an error.
class HeaderParser
{
public:
    explicit HeaderParser(std::string const& text)
        : mText(text)
    {
    }

    struct Fields
    {
        std::optional<std::string> descr;
        std::optional<bool> fortranOrder;
        std::optional<std::vector<int64_t>> shape;
    };

    Expected<Fields> parse()
    {
        Fields fields;
        if (!consume('{'))
        {
            return fail("expected '{'");
        }
        while (!consume('}'))
        {
            auto key = string();
            if (!key)
            {
                return key.status();
            }
            if (!consume(':'))
            {
                return fail("expected ':' after '" + detail::printable(*key) + "'");
            }
            Status status;
            if (*key == "descr" && !fields.descr)
            {
                auto value = string();
                status = value ? Status() : value.status();
                fields.descr = value ? *value : "";
            }
            else if (*key == "fortran_order" && !fields.fortranOrder)
            {
                auto value = boolean();
                status = value ? Status() : value.status();
                fields.fortranOrder = value && *value;
            }
            else if (*key == "shape" && !fields.shape)
            {
                auto value = tuple();
                status = value ? Status() : value.status();
                fields.shape = value ? *value : std::vector<int64_t>{};
            }
            else
            {
                return fail("unexpected or repeated key '" + detail::printable(*key) + "'");
            }
            if (!status)
            {
                return status;
            }
            if (!consume(',') && !peek('}'))
            {
                return fail("expected ',' or '}'");
            }
        }
        skipSpace();
        if (mPos != mText.size())
        {
            return fail("unexpected text after the header dict");
        }
        if (!fields.descr || !fields.fortranOrder || !fields.shape)
        {
            return fail("the header needs 'descr', 'fortran_order' and 'shape'");
        }
        return fields;
    }

private:
    Status fail(std::string const& what) const
    {
        return Status::error("malformed header (" + what + " at byte " + std::to_string(mPos) + ")");
    }

    void skipSpace()
    {
        while (mPos < mText.size() && (mText[mPos] == ' ' || mText[mPos] == '\n'))
        {
            ++mPos;
        }
    }

    bool peek(char c)
    {
        skipSpace();
        return mPos < mText.size() && mText[mPos] == c;
    }

    bool consume(char c)
    {
        if (peek(c))
        {
            ++mPos;
            return true;
        }
        return false;
    }

    Expected<std::string> string()
    {
        skipSpace();
        if (mPos >= mText.size() || (mText[mPos] != '\'' && mText[mPos] != '"'))
        {
            return fail("expected a quoted string");
        }
        char const quote = mText[mPos++];
        std::size_t const end = mText.find(quote, mPos);
        if (end == std::string::npos)
        {
            return fail("unterminated string");
        }
        std::string value = mText.substr(mPos, end - mPos);
        if (value.find('\\') != std::string::npos)
        {
            return fail("escapes are not expected in a header string");
        }
        mPos = end + 1;
        return value;
    }

    Expected<bool> boolean()
    {
        skipSpace();
        for (bool value : {true, false})
        {
            char const* word = value ? "True" : "False";
            std::size_t const length = std::strlen(word);
            if (mText.compare(mPos, length, word) == 0)
            {
                mPos += length;
                return value;
            }
        }
        return fail("expected True or False");
    }

    Expected<std::vector<int64_t>> tuple()
    {
        if (!consume('('))
        {
            return fail("expected '(' for the shape");
        }
        std::vector<int64_t> dims;
        while (!consume(')'))
        {
            skipSpace();
            std::size_t const start = mPos;
            int64_t value = 0;
            while (mPos < mText.size() && std::isdigit(static_cast<unsigned char>(mText[mPos])))
            {
                int const digit = mText[mPos++] - '0';
                if (value > (std::numeric_limits<int64_t>::max() - digit) / 10)
                {
                    return fail("shape dimension too large");
                }
                value = value * 10 + digit;
            }
            if (mPos == start)
            {
                return fail("expected a non-negative integer in the shape");
            }
            dims.push_back(value);
            // Python needs the comma in a 1-tuple "(5,)"; a bare "(5)" is an int, not a shape.
            bool const comma = consume(',');
            if (!comma && (!peek(')') || dims.size() == 1))
            {
                return fail("expected ',' in the shape tuple");
            }
        }
        return dims;
    }

    std::string const& mText;
    std::size_t mPos{0};
};

uint32_t readLittleEndian(std::byte const* bytes, std::size_t count)
{
    uint32_t value = 0;
    for (std::size_t i = 0; i < count; ++i)
    {
        value |= static_cast<uint32_t>(std::to_integer<uint8_t>(bytes[i])) << (8 * i);
    }
    return value;
}
} // namespace

Expected<HostTensor> parseNpy(std::byte const* bytes, std::size_t size, std::string const& source)
{
    auto error = [&source](std::string const& what) { return Status::error(source + ": " + what); };
    if (size < kMagicSize + 2 || std::memcmp(bytes, kMagic, kMagicSize) != 0)
    {
        return error("not a .npy file (no \\x93NUMPY magic)");
    }
    int const major = std::to_integer<int>(bytes[6]);
    int const minor = std::to_integer<int>(bytes[7]);
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
    {
        return error("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor));
    }
    std::size_t const lengthBytes = major == 1 ? 2 : 4;
    std::size_t const headerStart = kMagicSize + 2 + lengthBytes;
    if (size < headerStart)
    {
        return error("truncated .npy header");
    }
    std::size_t const headerLength = readLittleEndian(bytes + kMagicSize + 2, lengthBytes);
    if (headerLength > size - headerStart)
    {
        return error("truncated .npy header (" + std::to_string(headerLength) + " bytes announced, "
            + std::to_string(size - headerStart) + " present)");
    }
    std::string const header(reinterpret_cast<char const*>(bytes + headerStart), headerLength);
    auto fields = HeaderParser(header).parse();
    if (!fields)
    {
        return fields.status().withContext(source);
    }
    auto dtype = dtypeFromDescr(*fields->descr);
    if (!dtype)
    {
        return error("unsupported dtype '" + detail::printable(*fields->descr)
            + "' (supported: little-endian float32, float16, int32, int64, int8, uint8, bool)");
    }
    if (*fields->fortranOrder)
    {
        return error("Fortran-order arrays are not supported; save a C-order array (np.ascontiguousarray)");
    }
    auto count = elementCount(*fields->shape);
    if (!count)
    {
        return count.status().withContext(source);
    }
    // Compared before allocating: a corrupt header may announce petabytes.
    std::size_t const needed = static_cast<std::size_t>(*count) * dtypeSize(*dtype);
    std::size_t const dataSize = size - headerStart - headerLength;
    if (dataSize != needed)
    {
        return error(std::string(dataSize < needed ? "truncated" : "trailing bytes in") + " .npy data: "
            + formatShape(*fields->shape) + " " + dtypeName(*dtype) + " needs " + std::to_string(needed)
            + " bytes, the file has " + std::to_string(dataSize));
    }
    auto tensor = HostTensor::allocate(*dtype, *fields->shape);
    if (!tensor)
    {
        return tensor.status().withContext(source);
    }
    if (dataSize != 0)
    {
        std::memcpy(tensor->data.data(), bytes + headerStart + headerLength, dataSize);
    }
    return tensor;
}

Expected<HostTensor> readNpy(std::string const& path)
{
    auto bytes = detail::readFile(path);
    if (!bytes)
    {
        return bytes.status();
    }
    return parseNpy(reinterpret_cast<std::byte const*>(bytes->data()), bytes->size(), path);
}

Expected<std::string> serializeNpy(HostTensor const& tensor)
{
    auto count = elementCount(tensor.shape);
    if (!count)
    {
        return count.status();
    }
    if (static_cast<std::size_t>(*count) * dtypeSize(tensor.dtype) != tensor.data.size())
    {
        return Status::error("tensor of shape " + formatShape(tensor.shape) + " " + dtypeName(tensor.dtype) + " holds "
            + std::to_string(tensor.data.size()) + " bytes instead of "
            + std::to_string(static_cast<std::size_t>(*count) * dtypeSize(tensor.dtype)));
    }
    std::string shape = "(";
    for (int64_t dim : tensor.shape)
    {
        shape += std::to_string(dim) + ", ";
    }
    if (tensor.shape.size() > 1)
    {
        shape.resize(shape.size() - 2); // "(2, 3)"; a 1-tuple keeps its comma: "(5,)"
    }
    else if (tensor.shape.size() == 1)
    {
        shape.pop_back();
    }
    shape += ")";
    std::string header = "{'descr': '" + descrOf(tensor.dtype) + "', 'fortran_order': False, 'shape': " + shape + ", }";
    bool const version1 = kMagicSize + 2 + 2 + header.size() + 1 <= 65535;
    std::size_t const prefix = kMagicSize + 2 + (version1 ? 2 : 4);
    std::size_t const padded = (prefix + header.size() + 1 + kAlignment - 1) / kAlignment * kAlignment;
    header.append(padded - prefix - header.size() - 1, ' ');
    header += '\n';

    std::string bytes;
    try
    {
        bytes.reserve(header.size() + prefix + tensor.data.size());
    }
    catch (std::exception const&)
    {
        return Status::error("not enough memory to serialize a " + formatShape(tensor.shape) + " tensor");
    }
    bytes.append(kMagic, kMagicSize);
    bytes += static_cast<char>(version1 ? 1 : 2);
    bytes += '\0';
    for (std::size_t i = 0; i < (version1 ? 2u : 4u); ++i)
    {
        bytes += static_cast<char>((header.size() >> (8 * i)) & 0xff);
    }
    bytes += header;
    bytes.append(reinterpret_cast<char const*>(tensor.data.data()), tensor.data.size());
    return Expected<std::string>(std::move(bytes));
}

Status writeNpy(std::string const& path, HostTensor const& tensor)
{
    auto bytes = serializeNpy(tensor);
    if (!bytes)
    {
        return bytes.status().withContext(path);
    }
    return detail::writeFileAtomic(path, *bytes);
}

} // namespace deformrt
