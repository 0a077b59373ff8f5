#include "tensorrtRuntime.h"

#include "deformrt/opContract.h"

#include <NvInferVersion.h>

#include <atomic>
#include <cstdio>
#include <dlfcn.h>
#include <mutex>

#define DEFORMRT_STR_(x) #x
#define DEFORMRT_STR(x) DEFORMRT_STR_(x)

namespace deformrt
{
namespace trt
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
//! The TensorRT library checked to be the headers' major (kept open: registered creators outlive any caller).
std::atomic<void*> gTensorRT{nullptr};
//! Set once a mismatch has been logged, so that it is reported on one line only.
std::atomic<bool> gMismatchLogged{false};
std::mutex gCheckMutex;

// Libraries that export TensorRT's C entry points (full, lean and dispatch runtimes), by versioned soname
// only: a library of another major never matches.
constexpr char const* kTensorRTLibraries[] = {
    "libnvinfer.so." DEFORMRT_STR(NV_TENSORRT_MAJOR),
    "libnvinfer_lean.so." DEFORMRT_STR(NV_TENSORRT_MAJOR),
    "libnvinfer_dispatch.so." DEFORMRT_STR(NV_TENSORRT_MAJOR),
};

constexpr char const* kBuiltFor = "TensorRT " DEFORMRT_STR(NV_TENSORRT_MAJOR) " (headers " DEFORMRT_STR(
    NV_TENSORRT_MAJOR) "." DEFORMRT_STR(NV_TENSORRT_MINOR) "." DEFORMRT_STR(NV_TENSORRT_PATCH) ")";

void* openTensorRT(TensorRTLookup lookup, char const** name)
{
    for (char const* library : kTensorRTLibraries)
    {
        if (void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD))
        {
            *name = library;
            return handle;
        }
    }
    *name = kTensorRTLibraries[0];
    return lookup == TensorRTLookup::kLoadIfAbsent ? dlopen(kTensorRTLibraries[0], RTLD_LAZY | RTLD_LOCAL) : nullptr;
}

std::string dlErrorText()
{
    char const* text = dlerror();
    return text != nullptr ? text : "no reason given";
}

//! The major version the library reports: getInferLibMajorVersion, else getInferLibVersion() / 10000
//! (major * 10000 + minor * 100 + patch); -1 when it exports neither.
int32_t reportedMajor(void* handle, int32_t* fullVersion)
{
    using VersionFn = int32_t (*)();
    auto const version = reinterpret_cast<VersionFn>(dlsym(handle, "getInferLibVersion"));
    *fullVersion = version != nullptr ? version() : -1;
    if (auto const major = reinterpret_cast<VersionFn>(dlsym(handle, "getInferLibMajorVersion")))
    {
        return major();
    }
    return *fullVersion >= 0 ? *fullVersion / 10000 : -1;
}

void logMismatchOnce(char const* why) noexcept
{
    if (!gMismatchLogged.exchange(true))
    {
        // stderr: TensorRT's logger objects of another major must not be called either.
        std::fprintf(stderr, "[E] %s::%s: %s\n", contract::kPluginNamespace, contract::kPluginName, why);
    }
}
} // namespace

bool tensorrtMatches(TensorRTLookup lookup) noexcept
{
    if (gTensorRT.load() != nullptr)
    {
        return true;
    }
    try
    {
        std::lock_guard<std::mutex> lock(gCheckMutex);
        if (gTensorRT.load() != nullptr)
        {
            return true;
        }
        char const* name = nullptr;
        void* handle = openTensorRT(lookup, &name);
        if (handle == nullptr)
        {
            logMismatchOnce((std::string("built for ") + kBuiltFor + ", but " + name
                + (lookup == TensorRTLookup::kLoadIfAbsent ? " cannot be loaded (" + dlErrorText() + ")"
                                                          : " is not loaded in this process")
                + ": the plugin is not registered")
                                .c_str());
            return false;
        }
        int32_t version = -1;
        int32_t const major = reportedMajor(handle, &version);
        if (major != NV_TENSORRT_MAJOR)
        {
            dlclose(handle);
            logMismatchOnce((std::string("built for ") + kBuiltFor + ", but " + name + " reports TensorRT "
                + (version >= 0 ? std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "."
                            + std::to_string(version % 100)
                                : "of an unknown version")
                + ": the plugin is not registered; rebuild it against this TensorRT (`deformrt build-plugin`)")
                                .c_str());
            return false;
        }
        gTensorRT.store(handle);
        return true;
    }
    catch (...)
    {
        logMismatchOnce("cannot check the TensorRT version: out of memory");
    }
    return false;
}

void* findEntryPoint(char const* name) noexcept
{
    void* handle = gTensorRT.load();
    return handle != nullptr ? dlsym(handle, name) : nullptr;
}

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(nvinfer1::ILogger::Severity severity, char const* message, char const* detail) noexcept
{
    try
    {
        std::string line = std::string(contract::kPluginNamespace) + "::" + contract::kPluginName + ": "
            + (message != nullptr ? message : "");
        if (detail != nullptr)
        {
            line += detail;
        }
        nvinfer1::ILogger* logger = nullptr;
        if (gTensorRT.load() != nullptr)
        {
            if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
            {
                logger = finder->findLogger();
            }
            using GetLogger = nvinfer1::ILogger* (*) ();
            if (logger == nullptr)
            {
                if (auto getLogger = reinterpret_cast<GetLogger>(findEntryPoint("getLogger")))
                {
                    logger = getLogger();
                }
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
