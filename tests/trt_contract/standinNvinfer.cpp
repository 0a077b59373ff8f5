// TEST DOUBLE: a stand-in for TensorRT's libnvinfer.so.<major>, for the TensorRT-contract harness only.
//
// It implements the documented IPluginRegistry contract (TensorRT's NvInferRuntimeCommon.h and
// ../shared/docs/tensorrt-contract.md), compiled against the same TensorRT headers as the plugin so that
// the vtables match those of the real library:
// - registerCreator refuses a creator whose (name, version, namespace) is already registered;
// - loadLibrary(path) = dlopen(path, RTLD_LOCAL), then setLoggerFinder() if exported, then getCreators(),
//   then registers each creator; it fails (nullptr) when getCreators is missing, returns nothing, or any
//   creator is already registered;
// - any registry call made while loadLibrary is loading the file (its static initialisers, setLoggerFinder,
//   getCreators) is recorded as a contract failure: the real registry is mutex-synchronised and may
//   deadlock there;
// - getInferLibVersion / getInferLibMajorVersion report the headers' version, or the major given by
//   -DSTANDIN_REPORTED_MAJOR=<n> (the harness's "TensorRT of another major" case).
// It has no builder, runtime or network: only what a plugin library calls. Extra C functions (standin_*)
// let the harness read the recorded failures and the log.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <dlfcn.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#ifndef STANDIN_REPORTED_MAJOR
#define STANDIN_REPORTED_MAJOR NV_TENSORRT_MAJOR
#endif

#define STANDIN_EXPORT extern "C" __attribute__((visibility("default")))

namespace
{
using namespace nvinfer1;

std::mutex gStateMutex;
std::string gLog;      // every message logged through the stand-in's logger, one per line
std::string gFailures; // contract violations seen by the registry, one per line

void appendLine(std::string& to, std::string const& line)
{
    std::lock_guard<std::mutex> lock(gStateMutex);
    to += line;
    to += '\n';
}

class StandInLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        static char const* const kNames[] = {"F", "E", "W", "I", "V"};
        int32_t const s = static_cast<int32_t>(severity);
        appendLine(gLog, std::string("[") + (s >= 0 && s < 5 ? kNames[s] : "?") + "] " + (msg ? msg : "(null)"));
    }
};

StandInLogger gLogger;

class StandInLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &gLogger;
    }
};

StandInLoggerFinder gLoggerFinder;

//! (name, version, namespace) of a V3 creator; false for any other creator kind.
bool creatorKey(IPluginCreatorInterface const& creator, char const* pluginNamespace,
    std::tuple<std::string, std::string, std::string>& key)
{
    InterfaceInfo const info = creator.getInterfaceInfo();
    if (info.kind == nullptr || std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return false;
    }
    auto const& v3 = static_cast<IPluginCreatorV3One const&>(creator);
    char const* name = v3.getPluginName();
    char const* version = v3.getPluginVersion();
    if (name == nullptr || version == nullptr)
    {
        return false;
    }
    key = std::make_tuple(std::string(name), std::string(version), std::string(pluginNamespace ? pluginNamespace : ""));
    return true;
}

class StandInRegistry : public IPluginRegistry
{
public:
    // --- The IPluginV3 registry interface ----------------------------------------------------------------
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept override
    {
        noteCallDuringLoad("registerCreator");
        return add(creator, pluginNamespace, nullptr);
    }

    IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override
    {
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        mList.clear();
        for (auto const& entry : mCreators)
        {
            mList.push_back(entry.second.creator);
        }
        if (numCreators != nullptr)
        {
            *numCreators = static_cast<int32_t>(mList.size());
        }
        return mList.data();
    }

    IPluginCreatorInterface* getCreator(AsciiChar const* const pluginName, AsciiChar const* const pluginVersion,
        AsciiChar const* const pluginNamespace = "") noexcept override
    {
        noteCallDuringLoad("getCreator");
        if (pluginName == nullptr || pluginVersion == nullptr)
        {
            return nullptr;
        }
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        auto const it = mCreators.find(
            std::make_tuple(std::string(pluginName), std::string(pluginVersion), std::string(pluginNamespace ? pluginNamespace : "")));
        return it == mCreators.end() ? nullptr : it->second.creator;
    }

    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override
    {
        noteCallDuringLoad("deregisterCreator");
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        for (auto it = mCreators.begin(); it != mCreators.end(); ++it)
        {
            if (it->second.creator == &creator)
            {
                mCreators.erase(it);
                return true;
            }
        }
        return false;
    }

    PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept override
    {
        if (pluginPath == nullptr)
        {
            gLogger.log(ILogger::Severity::kERROR, "loadLibrary: no path");
            return nullptr;
        }
        mLoading = true;
        void* handle = dlopen(pluginPath, RTLD_LAZY | RTLD_LOCAL);
        PluginLibraryHandle result = handle != nullptr ? finishLoad(handle, pluginPath) : nullptr;
        if (handle == nullptr)
        {
            char const* why = dlerror();
            gLogger.log(ILogger::Severity::kERROR, (std::string("loadLibrary: cannot dlopen ") + pluginPath + ": "
                + (why ? why : "?")).c_str());
        }
        mLoading = false;
        return result;
    }

    void deregisterLibrary(PluginLibraryHandle handle) noexcept override
    {
        noteCallDuringLoad("deregisterLibrary");
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        for (auto it = mCreators.begin(); it != mCreators.end();)
        {
            it = it->second.library == handle ? mCreators.erase(it) : std::next(it);
        }
        dlclose(handle);
    }

    void setErrorRecorder(IErrorRecorder* const recorder) noexcept override
    {
        mRecorder = recorder;
    }

    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return mRecorder;
    }

    bool isParentSearchEnabled() const override
    {
        return mParentSearch;
    }

    void setParentSearchEnabled(bool const enabled) override
    {
        mParentSearch = enabled;
    }

    IPluginResource* acquirePluginResource(AsciiChar const* /*key*/, IPluginResource* /*resource*/) noexcept override
    {
        return nullptr; // the plugin uses no shared resources
    }

    int32_t releasePluginResource(AsciiChar const* /*key*/) noexcept override
    {
        return -1;
    }

    // Present from TensorRT 10.x on; declared without `override` so this file also compiles against headers
    // that lack it (then it is simply an extra member).
    virtual IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept
    {
        return getAllCreators(numCreators);
    }

#if NV_TENSORRT_MAJOR < 11
    // --- The deprecated IPluginV2 interface (gone in TensorRT 11): the plugin must not use it ---------------
    bool registerCreator(IPluginCreator& /*creator*/, AsciiChar const* const /*pluginNamespace*/) noexcept override
    {
        appendLine(gFailures, "the deprecated IPluginCreator (V2) registerCreator was called");
        return false;
    }

    IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept override
    {
        if (numCreators != nullptr)
        {
            *numCreators = 0;
        }
        return nullptr;
    }

    IPluginCreator* getPluginCreator(AsciiChar const* const /*pluginName*/, AsciiChar const* const /*pluginVersion*/,
        AsciiChar const* const /*pluginNamespace*/ = "") noexcept override
    {
        return nullptr;
    }

    bool deregisterCreator(IPluginCreator const& /*creator*/) noexcept override
    {
        appendLine(gFailures, "the deprecated IPluginCreator (V2) deregisterCreator was called");
        return false;
    }
#endif

private:
    struct Entry
    {
        IPluginCreatorInterface* creator;
        PluginLibraryHandle library;
    };

    void noteCallDuringLoad(char const* what) const
    {
        if (mLoading)
        {
            appendLine(gFailures, std::string(what) + " was called while loadLibrary was loading a plugin library");
        }
    }

    bool add(IPluginCreatorInterface& creator, char const* pluginNamespace, PluginLibraryHandle library)
    {
        std::tuple<std::string, std::string, std::string> key;
        if (!creatorKey(creator, pluginNamespace, key))
        {
            gLogger.log(ILogger::Severity::kERROR, "registerCreator: not an IPluginCreatorV3One with a name and version");
            return false;
        }
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        if (mCreators.count(key) != 0)
        {
            gLogger.log(ILogger::Severity::kERROR,
                ("registerCreator: " + std::get<2>(key) + "::" + std::get<0>(key) + " version " + std::get<1>(key)
                    + " is already registered")
                    .c_str());
            return false;
        }
        mCreators.emplace(key, Entry{&creator, library});
        return true;
    }

    PluginLibraryHandle finishLoad(void* handle, char const* path)
    {
        using SetLoggerFinder = void (*)(ILoggerFinder*);
        using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
        if (auto const setFinder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder")))
        {
            setFinder(&gLoggerFinder);
        }
        auto const getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
        int32_t count = 0;
        IPluginCreatorInterface* const* creators = getCreators != nullptr ? getCreators(count) : nullptr;
        mLoading = false;
        std::string const where = std::string("loadLibrary(") + path + "): ";
        if (creators == nullptr || count <= 0)
        {
            gLogger.log(ILogger::Severity::kERROR,
                (where + (getCreators == nullptr ? "no getCreators entry point" : "getCreators returned no creator"))
                    .c_str());
            return nullptr;
        }
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        for (int32_t i = 0; i < count; ++i)
        {
            std::tuple<std::string, std::string, std::string> key;
            if (creators[i] == nullptr
                || !creatorKey(*creators[i], static_cast<IPluginCreatorV3One const*>(creators[i])->getPluginNamespace(), key)
                || mCreators.count(key) != 0)
            {
                gLogger.log(ILogger::Severity::kERROR,
                    (where + "a creator is invalid or already registered: the library is refused").c_str());
                return nullptr;
            }
        }
        for (int32_t i = 0; i < count; ++i)
        {
            add(*creators[i], static_cast<IPluginCreatorV3One const*>(creators[i])->getPluginNamespace(), handle);
        }
        return handle;
    }

    mutable std::recursive_mutex mMutex;
    std::map<std::tuple<std::string, std::string, std::string>, Entry> mCreators;
    mutable std::vector<IPluginCreatorInterface*> mList;
    IErrorRecorder* mRecorder{nullptr};
    bool mParentSearch{true};
    bool mLoading{false};
};

StandInRegistry& registry()
{
    static StandInRegistry instance;
    return instance;
}

} // namespace

STANDIN_EXPORT nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    return &registry();
}

STANDIN_EXPORT nvinfer1::ILogger* getLogger() noexcept
{
    return &gLogger;
}

STANDIN_EXPORT int32_t getInferLibVersion() noexcept
{
    return STANDIN_REPORTED_MAJOR * 10000 + NV_TENSORRT_MINOR * 100 + NV_TENSORRT_PATCH;
}

STANDIN_EXPORT int32_t getInferLibMajorVersion() noexcept
{
    return STANDIN_REPORTED_MAJOR;
}

//! Contract violations recorded so far, one per line ("" when none).
STANDIN_EXPORT char const* standin_failures()
{
    static std::string copy;
    std::lock_guard<std::mutex> lock(gStateMutex);
    copy = gFailures;
    return copy.c_str();
}

//! Everything logged through the stand-in's logger so far, one message per line.
STANDIN_EXPORT char const* standin_log()
{
    static std::string copy;
    std::lock_guard<std::mutex> lock(gStateMutex);
    copy = gLog;
    return copy.c_str();
}
