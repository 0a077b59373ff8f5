// Load-time registration of libdeformrt_plugin_autoload.so, the library for loading by dlopen alone:
// Polygraphy --plugins / LoadPlugins, trtexec --staticPlugins, ctypes.CDLL.
//
// When the file is loaded it registers its creator with the process's TensorRT, which may be loaded
// privately (RTLD_LOCAL, as TensorRT's Python bindings do), globally, or not yet. Where a TensorRT
// library was found at build time the file depends on libnvinfer.so.<major> (DT_NEEDED), so the
// dynamic loader brings it in first; a headers-only build loads it by its versioned soname. A TensorRT
// of another major is refused with one log line, and nothing is registered.
//
// Not for IPluginRegistry::loadLibrary: registering from here would call the registry while it loads
// the file. That is libdeformrt_plugin.so's job (pluginEntry.cpp).
#include "deformConvPlugin.h"
#include "tensorrtRuntime.h"

namespace
{
using deformrt::trt::TensorRTLookup;

void registerAtLoad() noexcept
{
    try
    {
        if (!deformrt::trt::tensorrtMatches(TensorRTLookup::kLoadIfAbsent))
        {
            return;
        }
        using GetPluginRegistry = nvinfer1::IPluginRegistry* (*) ();
        auto const getRegistry
            = reinterpret_cast<GetPluginRegistry>(deformrt::trt::findEntryPoint("getPluginRegistry"));
        nvinfer1::IPluginRegistry* registry = getRegistry != nullptr ? getRegistry() : nullptr;
        if (registry == nullptr)
        {
            deformrt::trt::logError("TensorRT has no plugin registry: the plugin is not registered");
            return;
        }
        // Lives as long as the process: the registry keeps a pointer to it.
        static deformrt::plugin::DeformConv2dCreator creator;
        if (!registry->registerCreator(creator, deformrt::contract::kPluginNamespace))
        {
            deformrt::trt::log(nvinfer1::ILogger::Severity::kWARNING,
                "TensorRT refused to register the creator (a creator of this name, version and namespace is "
                "already registered: was libdeformrt_plugin.so loaded too?)");
        }
    }
    catch (std::exception const& e)
    {
        deformrt::trt::logError("registration at load failed: ", e.what());
    }
}

struct LoadTimeRegistrar
{
    LoadTimeRegistrar() noexcept
    {
        registerAtLoad();
    }
};

LoadTimeRegistrar const gLoadTimeRegistrar;

} // namespace
