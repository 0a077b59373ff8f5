// A deliberately wrong plugin library for the harness's own test: it registers its creator from a static
// initialiser, i.e. while IPluginRegistry::loadLibrary is loading it (what deformrt's plugin used to do).
// The stand-in registry must record that as a contract failure and refuse the duplicate from getCreators.
#include "deformrt/opContract.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <dlfcn.h>

#define MISBEHAVING_STR_(x) #x
#define MISBEHAVING_STR(x) MISBEHAVING_STR_(x)

namespace
{
using namespace nvinfer1;

class Creator : public IPluginCreatorV3One
{
public:
    IPluginV3* createPlugin(char const*, PluginFieldCollection const*, TensorRTPhase) noexcept override
    {
        return nullptr;
    }
    PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFields;
    }
    char const* getPluginName() const noexcept override
    {
        return deformrt::contract::kPluginName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return deformrt::contract::kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return deformrt::contract::kPluginNamespace;
    }

private:
    PluginFieldCollection mFields{0, nullptr};
};

Creator gCreator;

struct RegisterWhileLoading
{
    RegisterWhileLoading()
    {
        if (void* nvinfer = dlopen("libnvinfer.so." MISBEHAVING_STR(NV_TENSORRT_MAJOR), RTLD_LAZY | RTLD_NOLOAD))
        {
            using GetRegistry = IPluginRegistry* (*) ();
            if (auto get = reinterpret_cast<GetRegistry>(dlsym(nvinfer, "getPluginRegistry")))
            {
                get()->registerCreator(gCreator, deformrt::contract::kPluginNamespace);
            }
        }
    }
} const gRegisterWhileLoading;
} // namespace

extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static IPluginCreatorInterface* const creators[] = {&gCreator};
    nbCreators = 1;
    return creators;
}
