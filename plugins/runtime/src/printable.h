// Quoting text from an untrusted file in an error message.
#pragma once

#include <string>

namespace deformrt
{
namespace detail
{

//! Bytes outside printable ASCII shown as \xNN, so that a corrupt file cannot put control characters
//! or invalid UTF-8 into the caller's one-line error.
inline std::string printable(std::string const& text)
{
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (char c : text)
    {
        auto const byte = static_cast<unsigned char>(c);
        if (byte >= 0x20 && byte < 0x7f)
        {
            out += c;
        }
        else
        {
            out += {'\\', 'x', kHex[byte >> 4], kHex[byte & 0xf]};
        }
    }
    return out;
}

} // namespace detail
} // namespace deformrt
