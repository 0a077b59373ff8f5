// What the plugin needs from the TensorRT process it is loaded into, found at run time so that the
// library links without libnvinfer: TensorRT's C entry points, and logging through TensorRT's logger.
#pragma once

#include <NvInferRuntime.h>

#include <string>

#define DEFORMRT_EXPORT __attribute__((visibility("default")))

namespace deformrt
{
namespace trt
{

//! Address of TensorRT C entry point ``name`` (e.g. "getPluginRegistry") in this process, or nullptr
//! when no TensorRT library of the major version the plugin was compiled for is loaded.
void* findSymbol(char const* name) noexcept;

//! Remember the logger finder TensorRT hands to the library (setLoggerFinder).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log through the finder's logger, else TensorRT's global logger, else stderr (errors and warnings).
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

} // namespace trt
} // namespace deformrt
