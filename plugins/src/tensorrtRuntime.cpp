#include "tensorrtRuntime.h"

#include "deformrt/opContract.h"

#include <NvInferVersion.h>

#include <atomic>
#include <cstdio>
#include <dlfcn.h>

#define DEFORMRT_STR_(x) #x
#define DEFORMRT_STR(x) DEFORMRT_STR_(x)

namespace deformrt
{
namespace trt
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

// Libraries that export TensorRT's C entry points (full, lean and dispatch runtimes).
constexpr char const* kTensorRTLibraries[] = {
    "libnvinfer.so." DEFORMRT_STR(NV_TENSORRT_MAJOR),
    "libnvinfer_lean.so." DEFORMRT_STR(NV_TENSORRT_MAJOR),
    "libnvinfer_dispatch.so." DEFORMRT_STR(NV_TENSORRT_MAJOR),
};
} // namespace

void* findSymbol(char const* name) noexcept
{
    if (void* sym = dlsym(RTLD_DEFAULT, name))
    {
        return sym;
    }
    // TensorRT loaded with RTLD_LOCAL (Python bindings, ctypes) is not in the global scope; RTLD_NOLOAD
    // finds it without ever loading a library.
    for (char const* library : kTensorRTLibraries)
    {
        if (void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD))
        {
            void* sym = dlsym(handle, name);
            dlclose(handle);
            if (sym != nullptr)
            {
                return sym;
            }
        }
    }
    return nullptr;
}

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const line = std::string(contract::kPluginNamespace) + "::" + contract::kPluginName + ": " + message;
        nvinfer1::ILogger* logger = nullptr;
        if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
        {
            logger = finder->findLogger();
        }
        if (logger == nullptr)
        {
            using GetLogger = nvinfer1::ILogger* (*) ();
            if (auto getLogger = reinterpret_cast<GetLogger>(findSymbol("getLogger")))
            {
                logger = getLogger();
            }
        }
        if (logger != nullptr)
        {
            logger->log(severity, line.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    }
    catch (...)
    {
        // Logging must never throw into TensorRT.
    }
}

} // namespace trt
} // namespace deformrt
