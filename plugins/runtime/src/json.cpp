#include "json.h"

#include "printable.h"

#include <cstdlib>
#include <cstring>

namespace deformrt
{
namespace detail
{

JsonValue const* JsonValue::find(std::string const& key) const
{
    if (kind != Kind::kObject)
    {
        return nullptr;
    }
    auto it = members.find(key);
    return it == members.end() ? nullptr : &it->second;
}

namespace
{
constexpr int kMaxDepth = 64;

class JsonParser
{
public:
    explicit JsonParser(std::string const& text)
        : mText(text)
    {
    }

    Expected<JsonValue> document()
    {
        JsonValue root;
        Status status = value(root, 0);
        if (status.ok())
        {
            skipSpace();
            if (mPos != mText.size())
            {
                status = fail("unexpected text after the JSON value");
            }
        }
        if (!status)
        {
            return status;
        }
        return Expected<JsonValue>(std::move(root));
    }

private:
    Status fail(std::string const& what) const
    {
        int line = 1;
        std::size_t lineStart = 0;
        for (std::size_t i = 0; i < mPos && i < mText.size(); ++i)
        {
            if (mText[i] == '\n')
            {
                ++line;
                lineStart = i + 1;
            }
        }
        return Status::error("invalid JSON: " + what + " (line " + std::to_string(line) + ", column "
            + std::to_string(mPos - lineStart + 1) + ")");
    }

    void skipSpace()
    {
        while (mPos < mText.size()
            && (mText[mPos] == ' ' || mText[mPos] == '\t' || mText[mPos] == '\r' || mText[mPos] == '\n'))
        {
            ++mPos;
        }
    }

    //! Skips ``c`` when it is next; whether it was.
    bool consume(char c)
    {
        if (mPos < mText.size() && mText[mPos] == c)
        {
            ++mPos;
            return true;
        }
        return false;
    }

    bool literal(char const* word)
    {
        std::size_t const length = std::strlen(word);
        if (mText.compare(mPos, length, word) == 0)
        {
            mPos += length;
            return true;
        }
        return false;
    }

    Status value(JsonValue& out, int depth)
    {
        if (depth > kMaxDepth)
        {
            return fail("nested deeper than " + std::to_string(kMaxDepth) + " levels");
        }
        skipSpace();
        if (mPos >= mText.size())
        {
            return fail("unexpected end of input");
        }
        char const c = mText[mPos];
        if (c == '{')
        {
            return object(out, depth);
        }
        if (c == '[')
        {
            return array(out, depth);
        }
        if (c == '"')
        {
            out.kind = JsonValue::Kind::kString;
            return string(out.text);
        }
        for (bool const truth : {true, false})
        {
            if (literal(truth ? "true" : "false"))
            {
                out.kind = JsonValue::Kind::kBool;
                out.boolean = truth;
                return Status();
            }
        }
        if (literal("null"))
        {
            out.kind = JsonValue::Kind::kNull;
            return Status();
        }
        return number(out);
    }

    Status object(JsonValue& out, int depth)
    {
        out.kind = JsonValue::Kind::kObject;
        ++mPos; // '{'
        skipSpace();
        if (consume('}'))
        {
            return Status();
        }
        while (true)
        {
            skipSpace();
            if (mPos >= mText.size() || mText[mPos] != '"')
            {
                return fail("expected a string key");
            }
            std::string key;
            if (Status status = string(key); !status)
            {
                return status;
            }
            skipSpace();
            if (mPos >= mText.size() || mText[mPos] != ':')
            {
                return fail("expected ':'");
            }
            ++mPos;
            JsonValue member;
            if (Status status = value(member, depth + 1); !status)
            {
                return status;
            }
            if (!out.members.emplace(key, std::move(member)).second)
            {
                return fail("repeated key \"" + printable(key) + "\"");
            }
            skipSpace();
            if (consume(','))
            {
                continue;
            }
            if (consume('}'))
            {
                return Status();
            }
            return fail("expected ',' or '}'");
        }
    }

    Status array(JsonValue& out, int depth)
    {
        out.kind = JsonValue::Kind::kArray;
        ++mPos; // '['
        skipSpace();
        if (consume(']'))
        {
            return Status();
        }
        while (true)
        {
            out.items.emplace_back();
            if (Status status = value(out.items.back(), depth + 1); !status)
            {
                return status;
            }
            skipSpace();
            if (consume(','))
            {
                continue;
            }
            if (consume(']'))
            {
                return Status();
            }
            return fail("expected ',' or ']'");
        }
    }

    //! -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    Status number(JsonValue& out)
    {
        std::size_t const start = mPos;
        auto digits = [this]() {
            std::size_t const first = mPos;
            while (mPos < mText.size() && mText[mPos] >= '0' && mText[mPos] <= '9')
            {
                ++mPos;
            }
            return mPos - first;
        };
        consume('-');
        std::size_t const intStart = mPos;
        std::size_t const intDigits = digits();
        if (intDigits == 0 || (intDigits > 1 && mText[intStart] == '0'))
        {
            mPos = start;
            return fail("expected a value");
        }
        if (consume('.'))
        {
            if (digits() == 0)
            {
                return fail("expected digits after '.'");
            }
        }
        if (mPos < mText.size() && (mText[mPos] == 'e' || mText[mPos] == 'E'))
        {
            ++mPos;
            if (mPos < mText.size() && (mText[mPos] == '+' || mText[mPos] == '-'))
            {
                ++mPos;
            }
            if (digits() == 0)
            {
                return fail("expected digits in the exponent");
            }
        }
        out.kind = JsonValue::Kind::kNumber;
        out.text = mText.substr(start, mPos - start);
        out.number = std::strtod(out.text.c_str(), nullptr);
        return Status();
    }

    Status hex4(unsigned& code)
    {
        if (mText.size() - mPos < 4)
        {
            return fail("truncated \\u escape");
        }
        code = 0;
        for (int i = 0; i < 4; ++i)
        {
            char const c = mText[mPos++];
            unsigned digit;
            if (c >= '0' && c <= '9')
                digit = c - '0';
            else if (c >= 'a' && c <= 'f')
                digit = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                digit = c - 'A' + 10;
            else
                return fail("bad hex digit in \\u escape");
            code = code * 16 + digit;
        }
        return Status();
    }

    static void appendUtf8(std::string& out, unsigned code)
    {
        if (code < 0x80)
        {
            out += static_cast<char>(code);
        }
        else if (code < 0x800)
        {
            out += static_cast<char>(0xc0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3f));
        }
        else if (code < 0x10000)
        {
            out += static_cast<char>(0xe0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (code & 0x3f));
        }
        else
        {
            out += static_cast<char>(0xf0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (code & 0x3f));
        }
    }

    Status string(std::string& out)
    {
        ++mPos; // opening quote
        while (true)
        {
            if (mPos >= mText.size())
            {
                return fail("unterminated string");
            }
            char const c = mText[mPos++];
            if (c == '"')
            {
                return Status();
            }
            if (static_cast<unsigned char>(c) < 0x20)
            {
                return fail("control character in a string");
            }
            if (c != '\\')
            {
                out += c;
                continue;
            }
            if (mPos >= mText.size())
            {
                return fail("unterminated escape");
            }
            char const escape = mText[mPos++];
            switch (escape)
            {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u':
            {
                unsigned code;
                if (Status status = hex4(code); !status)
                {
                    return status;
                }
                // A high surrogate must be followed by an escaped low surrogate (characters beyond the BMP).
                if (code >= 0xd800 && code < 0xdc00)
                {
                    unsigned low;
                    if (mText.compare(mPos, 2, "\\u") != 0)
                    {
                        return fail("unpaired surrogate in \\u escape");
                    }
                    mPos += 2;
                    if (Status status = hex4(low); !status)
                    {
                        return status;
                    }
                    if (low < 0xdc00 || low >= 0xe000)
                    {
                        return fail("unpaired surrogate in \\u escape");
                    }
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                }
                else if (code >= 0xdc00 && code < 0xe000)
                {
                    return fail("unpaired surrogate in \\u escape");
                }
                appendUtf8(out, code);
                break;
            }
            default: return fail(std::string("unknown escape \\") + escape);
            }
        }
    }

    std::string const& mText;
    std::size_t mPos{0};
};
} // namespace

Expected<JsonValue> parseJson(std::string const& text)
{
    return JsonParser(text).document();
}

} // namespace detail
} // namespace deformrt
