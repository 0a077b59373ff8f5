#include "tensorrtLogger.h"

namespace deformrt
{
namespace detail
{
namespace
{
deformrt::Severity fromTensorRT(nvinfer1::ILogger::Severity severity) noexcept
{
    switch (severity)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR:
    case nvinfer1::ILogger::Severity::kERROR: return deformrt::Severity::kError;
    case nvinfer1::ILogger::Severity::kWARNING: return deformrt::Severity::kWarning;
    case nvinfer1::ILogger::Severity::kINFO: return deformrt::Severity::kInfo;
    case nvinfer1::ILogger::Severity::kVERBOSE: return deformrt::Severity::kVerbose;
    }
    return deformrt::Severity::kError;
}
} // namespace

void TensorRTLogger::log(nvinfer1::ILogger::Severity severity, nvinfer1::AsciiChar const* message) noexcept
{
    deformrt::Severity const ours = fromTensorRT(severity);
    if (ours == deformrt::Severity::kError && message != nullptr)
    {
        try
        {
            std::lock_guard<std::mutex> lock(mMutex);
            mLastError = message;
        }
        catch (...)
        {
            // Out of memory while copying a message: the error itself is still reported by the failing call.
        }
    }
    if (mTarget != nullptr)
    {
        mTarget->log(ours, message != nullptr ? message : "");
    }
}

void TensorRTLogger::forward(deformrt::Severity severity, std::string const& message) noexcept
{
    if (mTarget != nullptr)
    {
        mTarget->log(severity, message.c_str());
    }
}

std::string TensorRTLogger::takeLastError()
{
    std::lock_guard<std::mutex> lock(mMutex);
    std::string error;
    error.swap(mLastError);
    return error;
}

Status withTensorRTError(TensorRTLogger& logger, std::string const& message)
{
    std::string const cause = logger.takeLastError();
    return Status::error(cause.empty() ? message : message + " (TensorRT: " + cause + ")");
}

} // namespace detail
} // namespace deformrt
