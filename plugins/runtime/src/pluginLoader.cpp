#include "pluginLoader.h"

#include "deformrt/opContract.h"
#include "tensorrtLogger.h"

#include <NvInferVersion.h>

#include <dlfcn.h>

#include <fstream>
#include <mutex>
#include <string>

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

#define DEFORMRT_STR_(x) #x
#define DEFORMRT_STR(x) DEFORMRT_STR_(x)
constexpr char const* kTensorRTPluginSoname = "libnvinfer_plugin.so." DEFORMRT_STR(NV_TENSORRT_MAJOR);

//! The process-lifetime logger TensorRT's plugin library keeps: forwards to the current target, if any.
class ForwardingLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* message) noexcept override
    {
        std::lock_guard<std::mutex> lock(mMutex);
        if (mTarget != nullptr)
        {
            mTarget->log(severity, message);
        }
    }

    TensorRTLogger* exchange(TensorRTLogger* target) noexcept
    {
        std::lock_guard<std::mutex> lock(mMutex);
        TensorRTLogger* previous = mTarget;
        mTarget = target;
        return previous;
    }

private:
    std::mutex mMutex;
    TensorRTLogger* mTarget{nullptr};
};

ForwardingLogger& pluginLogger()
{
    static ForwardingLogger* logger = new ForwardingLogger; // never destroyed: TensorRT may log at exit
    return *logger;
}

//! libnvinfer_plugin beside the libnvinfer this process uses, else wherever the loader finds its soname.
void* openTensorRTPlugins(std::string& tried)
{
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&getInferLibVersion), &info) != 0 && info.dli_fname != nullptr)
    {
        std::string const path = info.dli_fname;
        size_t const slash = path.rfind('/');
        if (slash != std::string::npos)
        {
            std::string const beside = path.substr(0, slash + 1) + kTensorRTPluginSoname;
            tried = beside + " or ";
            if (void* handle = dlopen(beside.c_str(), RTLD_NOW | RTLD_GLOBAL))
            {
                return handle;
            }
        }
    }
    tried += kTensorRTPluginSoname;
    return dlopen(kTensorRTPluginSoname, RTLD_NOW | RTLD_GLOBAL);
}
} // namespace

PluginMessagesTo::PluginMessagesTo(TensorRTLogger& logger) noexcept
    : mPrevious(pluginLogger().exchange(&logger))
{
}

PluginMessagesTo::~PluginMessagesTo()
{
    pluginLogger().exchange(mPrevious);
}

void registerTensorRTPlugins(TensorRTLogger& logger)
{
    static std::once_flag once;
    std::call_once(once, [&logger] {
        std::string tried;
        void* library = openTensorRTPlugins(tried);
        using InitPlugins = bool (*)(void*, char const*);
        auto const init
            = library != nullptr ? reinterpret_cast<InitPlugins>(dlsym(library, "initLibNvInferPlugins")) : nullptr;
        if (init == nullptr)
        {
            logger.forward(Severity::kWarning,
                std::string("TensorRT's own plugins are not registered (") + (library == nullptr ? tried + " not found"
                    : std::string(kTensorRTPluginSoname) + " has no initLibNvInferPlugins")
                    + "): engines of the standard-DeformConv flavour need them; install libnvinfer-plugin or add "
                      "TensorRT's lib folder to LD_LIBRARY_PATH");
            return;
        }
        PluginMessagesTo const messages(logger);
        if (!init(&pluginLogger(), ""))
        {
            logger.forward(Severity::kWarning, std::string(kTensorRTPluginSoname)
                    + ": initLibNvInferPlugins failed; TensorRT's own plugins may be missing");
        }
    });
}

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
