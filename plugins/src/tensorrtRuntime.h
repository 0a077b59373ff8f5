// What the plugin needs from the TensorRT process it is loaded into: TensorRT's C entry points, taken
// only from the versioned libnvinfer of the major version the plugin was compiled for, after checking
// that this library really is that major; and logging through TensorRT's logger.
#pragma once

#include <NvInferRuntime.h>

#include <string>

#define DEFORMRT_EXPORT __attribute__((visibility("default")))

namespace deformrt
{
namespace trt
{

//! How to find the process's TensorRT library.
enum class TensorRTLookup
{
    kIfLoaded,    //!< only a libnvinfer.so.<major> already in the process (RTLD_NOLOAD): never loads one
    kLoadIfAbsent //!< load libnvinfer.so.<major> when no TensorRT of that major is loaded yet
};

//! True when a TensorRT library of the headers' major (NV_TENSORRT_MAJOR) is in the process (or was
//! loaded now, with kLoadIfAbsent) and reports that major. Otherwise logs why, once, on one line, and
//! returns false: nothing may then be called through TensorRT's interfaces (their layout differs between
//! majors). Safe to call from a static initialiser and from getCreators: it makes no registry call.
bool tensorrtMatches(TensorRTLookup lookup) noexcept;

//! Address of TensorRT C entry point ``name`` (e.g. "getPluginRegistry") in the checked TensorRT
//! library, or nullptr when tensorrtMatches() has not succeeded.
void* findEntryPoint(char const* name) noexcept;

//! Remember the logger finder TensorRT hands to the library (setLoggerFinder).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log ``message`` (followed by ``detail`` when given) through the finder's logger, else TensorRT's global
//! logger, else stderr (errors and warnings). TensorRT's loggers are used only once the process's TensorRT
//! has been checked to be the right major. Never throws: catch handlers pass e.what() as ``detail`` rather
//! than building a string that could throw again.
void log(nvinfer1::ILogger::Severity severity, char const* message, char const* detail = nullptr) noexcept;

inline void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    log(severity, message.c_str());
}

inline void logError(char const* message, char const* detail = nullptr) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message, detail);
}

inline void logError(std::string const& message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
}

} // namespace trt
} // namespace deformrt
