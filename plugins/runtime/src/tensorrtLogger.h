// TensorRT's ILogger forwarding to the application's deformrt::Logger, remembering TensorRT's last
// error so that a failed call (a null engine, enqueueV3 returning false) can say why in its Status.
#pragma once

#include "deformrt/runtime.h"

#include <NvInferRuntime.h>

#include <mutex>
#include <string>

namespace deformrt
{
namespace detail
{

class TensorRTLogger : public nvinfer1::ILogger
{
public:
    explicit TensorRTLogger(Logger* target) noexcept
        : mTarget(target)
    {
    }

    void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override;

    //! The runtime's own messages (a sidecar warning) reach the application through the same logger.
    void forward(deformrt::Severity severity, std::string const& message) noexcept;

    //! TensorRT's most recent error since the last call, then cleared ("" when none).
    std::string takeLastError();

private:
    Logger* mTarget;
    std::mutex mMutex; // TensorRT logs from its own threads too
    std::string mLastError;
};

//! An error saying `message`, with TensorRT's last logged error appended when there is one.
Status withTensorRTError(TensorRTLogger& logger, std::string const& message);

} // namespace detail
} // namespace deformrt
