// Errors as values for the deformrt runtime: a Status is ok or carries a one-line message, and an
// Expected<T> is a T or the Status that explains why there is none. The library never prints and
// never throws across its API; the caller decides what to show.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace deformrt
{

class [[nodiscard]] Status
{
public:
    Status() = default;

    static Status error(std::string message)
    {
        Status status;
        status.mFailed = true;
        status.mMessage = std::move(message);
        return status;
    }

    bool ok() const noexcept
    {
        return !mFailed;
    }

    explicit operator bool() const noexcept
    {
        return ok();
    }

    //! Empty when ok().
    std::string const& message() const noexcept
    {
        return mMessage;
    }

    //! The same error with "context: " in front, for callers that add what they were doing.
    Status withContext(std::string const& context) const
    {
        return ok() ? *this : error(context + ": " + mMessage);
    }

private:
    bool mFailed{false};
    std::string mMessage;
};

template <typename T>
class [[nodiscard]] Expected
{
public:
    Expected(T value)
        : mValue(std::move(value))
    {
    }

    //! An error; an ok Status here is a programming error and becomes an error saying so.
    Expected(Status status)
        : mStatus(status.ok() ? Status::error("internal error: Expected built from an ok Status") : std::move(status))
    {
    }

    bool ok() const noexcept
    {
        return mValue.has_value();
    }

    explicit operator bool() const noexcept
    {
        return ok();
    }

    Status const& status() const noexcept
    {
        return mStatus;
    }

    //! Only when ok().
    T& value() &
    {
        return *mValue;
    }
    T const& value() const&
    {
        return *mValue;
    }
    T&& value() &&
    {
        return std::move(*mValue);
    }
    T* operator->()
    {
        return &*mValue;
    }
    T const* operator->() const
    {
        return &*mValue;
    }
    T& operator*() &
    {
        return *mValue;
    }
    T const& operator*() const&
    {
        return *mValue;
    }

private:
    std::optional<T> mValue;
    Status mStatus;
};

} // namespace deformrt
