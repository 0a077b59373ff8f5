// The library's entry points for TensorRT.
//
// Two ways in, both supported:
// - IPluginRegistry::loadLibrary / trtexec --dynamicPlugins call setLoggerFinder() and getCreators()
//   and register what getCreators() returns.
// - ctypes.CDLL / Polygraphy --plugins only load the library: a load-time registrar registers the
//   creator itself, with the registry of the TensorRT already loaded in the process.
// loadLibrary refuses a library whose creator is already registered, so getCreators() first takes back
// a creator that the load-time registrar registered.
#include "deformConvPlugin.h"
#include "tensorrtRuntime.h"

#include <atomic>

namespace
{
using deformrt::plugin::DeformConv2dCreator;

DeformConv2dCreator& creator()
{
    static DeformConv2dCreator instance;
    return instance;
}

std::atomic<bool> gRegisteredAtLoad{false};

nvinfer1::IPluginRegistry* processRegistry() noexcept
{
    using GetPluginRegistry = nvinfer1::IPluginRegistry* (*) ();
    auto const get = reinterpret_cast<GetPluginRegistry>(deformrt::trt::findSymbol("getPluginRegistry"));
    return get != nullptr ? get() : nullptr;
}

struct LoadTimeRegistrar
{
    LoadTimeRegistrar() noexcept
    {
        try
        {
            // No TensorRT in the process yet: loadLibrary() will register through getCreators().
            if (nvinfer1::IPluginRegistry* registry = processRegistry())
            {
                nvinfer1::IPluginCreatorInterface& iface = creator();
                gRegisteredAtLoad = registry->registerCreator(iface, deformrt::contract::kPluginNamespace);
            }
        }
        catch (std::exception const& e)
        {
            deformrt::trt::logError(std::string("registration at load failed: ") + e.what());
        }
    }
};

LoadTimeRegistrar const gLoadTimeRegistrar;

} // namespace

extern "C" DEFORMRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    deformrt::trt::setLoggerFinder(finder);
}

extern "C" DEFORMRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    if (gRegisteredAtLoad.exchange(false))
    {
        if (nvinfer1::IPluginRegistry* registry = processRegistry())
        {
            registry->deregisterCreator(creator());
        }
    }
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator()};
    nbCreators = 1;
    return creators;
}
