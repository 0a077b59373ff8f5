#include "pluginLoader.h"

#include "deformrt/opContract.h"
#include "tensorrtLogger.h"

#include <fstream>
#include <mutex>

namespace deformrt
{
namespace detail
{
namespace
{
bool creatorRegistered(nvinfer1::IPluginRegistry& registry)
{
    return registry.getCreator(contract::kPluginName, contract::kPluginVersion, contract::kPluginNamespace) != nullptr;
}
} // namespace

Status ensurePluginLoaded(nvinfer1::IPluginRegistry& registry, std::string const& library, TensorRTLogger& logger)
{
    // The registry is process-wide: two Engines loading concurrently must not both see "not registered"
    // and both load. The lock is the only process-wide state of the runtime, and it guards TensorRT's.
    static std::mutex loadMutex;
    std::lock_guard<std::mutex> lock(loadMutex);
    if (creatorRegistered(registry))
    {
        return Status();
    }
    // A bare file name is left to the dynamic loader's search path (LD_LIBRARY_PATH), as dlopen does.
    if (library.find('/') != std::string::npos && !std::ifstream(library))
    {
        return Status::error("plugin library " + library
            + " not found: build it with the bundle's build.sh or `deformrt build-plugin`");
    }
    if (registry.loadLibrary(library.c_str()) == nullptr)
    {
        return withTensorRTError(logger, "TensorRT could not load the plugin library " + library);
    }
    if (!creatorRegistered(registry))
    {
        return Status::error("plugin library " + library + " loaded but registers no " + contract::kPluginNamespace
            + "::" + contract::kPluginName + " version " + contract::kPluginVersion
            + " creator: is it deformrt's plugin, built for this TensorRT major?");
    }
    return Status();
}

} // namespace detail
} // namespace deformrt
