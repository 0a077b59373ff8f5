// Entry points of libdeformrt_plugin.so, the library for IPluginRegistry::loadLibrary (Python
// registry.load_library, trtexec --dynamicPlugins, engines built with setPluginsToSerialize).
//
// TensorRT dlopens the file, calls setLoggerFinder(), then getCreators(), and registers what it gets.
// Nothing here calls the registry: the registry's methods are mutex-synchronised and loadLibrary may hold
// that lock while the file is being loaded, so a registry call from a static initialiser or from
// getCreators could deadlock. Loading by dlopen alone (Polygraphy --plugins, trtexec --staticPlugins,
// ctypes.CDLL) is libdeformrt_plugin_autoload.so's job (pluginAutoload.cpp).
#include "deformConvPlugin.h"
#include "tensorrtRuntime.h"

namespace
{
deformrt::plugin::DeformConv2dCreator& creator()
{
    static deformrt::plugin::DeformConv2dCreator instance;
    return instance;
}
} // namespace

extern "C" DEFORMRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    deformrt::trt::setLoggerFinder(finder);
}

extern "C" DEFORMRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    // A TensorRT of another major would call our creator through the wrong vtable: offer nothing.
    if (!deformrt::trt::tensorrtMatches(deformrt::trt::TensorRTLookup::kIfLoaded))
    {
        nbCreators = 0;
        return nullptr;
    }
    try
    {
        static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator()};
        nbCreators = 1;
        return creators;
    }
    catch (std::exception const& e)
    {
        deformrt::trt::logError("cannot create the plugin creator: ", e.what());
    }
    nbCreators = 0;
    return nullptr;
}
