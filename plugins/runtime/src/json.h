// A small strict JSON (RFC 8259) reader for the engine sidecar: values, no comments, no trailing
// commas, nesting bounded so that hostile input cannot exhaust the stack. Errors are values with the
// line and column.
#pragma once

#include "deformrt/status.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace deformrt
{
namespace detail
{

struct JsonValue
{
    enum class Kind
    {
        kNull,
        kBool,
        kNumber,
        kString,
        kArray,
        kObject,
    };
    Kind kind{Kind::kNull};
    bool boolean{false};
    double number{0.0};
    std::string text; //!< kString: the decoded UTF-8 string; kNumber: the literal as written
    std::vector<JsonValue> items;
    std::map<std::string, JsonValue> members; //!< a repeated key is an error

    //! The member `key` of an object, or nullptr when this is not an object or has no such member.
    JsonValue const* find(std::string const& key) const;
};

Expected<JsonValue> parseJson(std::string const& text);

} // namespace detail
} // namespace deformrt
