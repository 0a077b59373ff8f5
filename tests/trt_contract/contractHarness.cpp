// The TensorRT-contract harness: drives deformrt's plugin libraries the way TensorRT and its tools do,
// against a libnvinfer given on the command line (the stand-in test double, standinNvinfer.cpp, or a
// real TensorRT). Driven by tests/test_trt_contract.py; every check prints one line on failure and the
// exit status is the number of failed checks (capped at 100).
//
//   contractHarness load SCENARIO NVINFER PLUGIN_DIR    load the plugin one way, check the registry
//   contractHarness nodes NVINFER PLUGIN_DIR SPEC...      per exported node: fields as the ONNX parser builds
//                                                         them, the build/runtime lifecycle, enqueue (host
//                                                         kernels) in fp32 and fp16; outputs next to SPEC
//   contractHarness fuzz NVINFER PLUGIN_DIR               malformed field collections and bad calls
//
// Built with -DHARNESS_CUDA=1 (and linked with cudart) it runs enqueue on device copies of the tensors,
// for a plugin built with its CUDA kernels; otherwise enqueue gets host pointers (the plugin's
// DEFORMRT_PLUGIN_HOST_KERNELS variant).
#include "deformConvMath.h" // the kernels' float <-> binary16 conversions (host build)
#include "deformrt/opContract.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#if HARNESS_CUDA
#include <cuda_runtime_api.h>
#endif

#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#define HARNESS_STR_(x) #x
#define HARNESS_STR(x) HARNESS_STR_(x)

namespace
{
using namespace nvinfer1;
namespace contract = deformrt::contract;

int gFailures = 0;
int gChecks = 0;

bool check(bool ok, std::string const& what)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        std::printf("FAIL: %s\n", what.c_str());
        std::fflush(stdout);
    }
    return ok;
}

// -------------------------------------------------------------------------------------------------
// The TensorRT library under test

struct TensorRTLibrary
{
    void* handle{nullptr};
    IPluginRegistry* registry{nullptr};
    char const* (*failures)(){nullptr}; // stand-in only
    char const* (*log)(){nullptr};      // stand-in only

    std::string logText() const
    {
        return log != nullptr ? log() : "";
    }
};

constexpr char const* kTensorRTSoname = "libnvinfer.so." HARNESS_STR(NV_TENSORRT_MAJOR);

TensorRTLibrary bindTensorRT(void* handle)
{
    TensorRTLibrary trt;
    trt.handle = handle;
    if (handle == nullptr)
    {
        return trt;
    }
    using GetRegistry = IPluginRegistry* (*) ();
    if (auto get = reinterpret_cast<GetRegistry>(dlsym(handle, "getPluginRegistry")))
    {
        trt.registry = get();
    }
    trt.failures = reinterpret_cast<char const* (*) ()>(dlsym(handle, "standin_failures"));
    trt.log = reinterpret_cast<char const* (*) ()>(dlsym(handle, "standin_log"));
    return trt;
}

TensorRTLibrary openTensorRT(std::string const& path, int flags)
{
    void* handle = dlopen(path.c_str(), RTLD_NOW | flags);
    check(handle != nullptr, "dlopen " + path + ": " + (handle ? "" : dlerror()));
    return bindTensorRT(handle);
}

//! Echo what was logged through the stand-in's logger (the Python side checks the reasons).
void printLog(TensorRTLibrary const& trt)
{
    std::string const text = trt.logText();
    if (!text.empty())
    {
        std::printf("--- TensorRT log ---\n%s", text.c_str());
    }
}

void checkNoContractFailures(TensorRTLibrary const& trt)
{
    printLog(trt);
    if (trt.failures != nullptr)
    {
        std::string const failures = trt.failures();
        check(failures.empty(), "the registry recorded contract failures:\n" + failures);
    }
}

// -------------------------------------------------------------------------------------------------
// ONNX attributes and the ONNX parser's field collection

struct Attr
{
    enum class Type
    {
        kINT,
        kINTS,
        kFLOAT,
        kFLOATS,
        kSTRING
    };
    std::string name;
    Type type;
    std::vector<int64_t> ints;
    std::vector<float> floats;
    std::string s;
};

Attr const* findAttr(std::vector<Attr> const& attrs, std::string const& name)
{
    for (Attr const& a : attrs)
    {
        if (a.name == name)
        {
            return &a;
        }
    }
    return nullptr;
}

//! A field collection that owns its data.
struct Fields
{
    std::deque<std::vector<int32_t>> ints;
    std::deque<std::vector<int64_t>> longs;
    std::deque<std::vector<float>> floats;
    std::deque<std::string> strings;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};

    PluginFieldCollection const* collection()
    {
        fc.nbFields = static_cast<int32_t>(fields.size());
        fc.fields = fields.data();
        return &fc;
    }

    void addInt32(std::string const& name, std::vector<int32_t> values)
    {
        strings.push_back(name);
        ints.push_back(std::move(values));
        fields.emplace_back(strings.back().c_str(), ints.back().data(), PluginFieldType::kINT32,
            static_cast<int32_t>(ints.back().size()));
    }
};

//! The creator the ONNX parser's fallback plugin importer finds for a node: name = op type, version =
//! STRING attribute plugin_version (default "1"; another attribute type reads as ""), namespace = STRING
//! attribute plugin_namespace (default "").
IPluginCreatorV3One* findCreatorLikeOnnxParser(IPluginRegistry& registry, std::string const& opType,
    std::vector<Attr> const& attrs)
{
    auto const stringAttr = [&](char const* name, std::string const& fallback) {
        Attr const* a = findAttr(attrs, name);
        return a == nullptr ? fallback : a->type == Attr::Type::kSTRING ? a->s : std::string();
    };
    std::string const version = stringAttr("plugin_version", "1");
    std::string const ns = stringAttr("plugin_namespace", "");
    IPluginCreatorInterface* creator = registry.getCreator(opType.c_str(), version.c_str(), ns.c_str());
    if (creator == nullptr)
    {
        return nullptr;
    }
    InterfaceInfo const info = creator->getInterfaceInfo();
    if (info.kind == nullptr || std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return nullptr;
    }
    return static_cast<IPluginCreatorV3One*>(creator);
}

//! The fields the ONNX parser passes: the creator's getFieldNames() in order, each present attribute
//! typed by its ONNX type (INT -> kINT32 x1 truncated, INTS -> kINT32 xn, FLOAT(S) -> kFLOAT32, STRING ->
//! kCHAR with a NUL, length strlen + 1); absent ones skipped.
void buildFieldsLikeOnnxParser(IPluginCreatorV3One& creator, std::vector<Attr> const& attrs, Fields& out)
{
    PluginFieldCollection const* names = creator.getFieldNames();
    if (!check(names != nullptr && (names->nbFields == 0 || names->fields != nullptr), "getFieldNames() is valid"))
    {
        return;
    }
    for (int32_t i = 0; i < names->nbFields; ++i)
    {
        char const* name = names->fields[i].name;
        Attr const* a = name != nullptr ? findAttr(attrs, name) : nullptr;
        if (a == nullptr)
        {
            continue;
        }
        out.strings.push_back(a->name);
        char const* fieldName = out.strings.back().c_str();
        switch (a->type)
        {
        case Attr::Type::kINT:
        case Attr::Type::kINTS:
        {
            std::vector<int32_t> values;
            for (int64_t v : a->ints)
            {
                values.push_back(static_cast<int32_t>(v));
            }
            out.ints.push_back(values);
            out.fields.emplace_back(
                fieldName, out.ints.back().data(), PluginFieldType::kINT32, static_cast<int32_t>(values.size()));
            break;
        }
        case Attr::Type::kFLOAT:
        case Attr::Type::kFLOATS:
            out.floats.push_back(a->floats);
            out.fields.emplace_back(fieldName, out.floats.back().data(), PluginFieldType::kFLOAT32,
                static_cast<int32_t>(a->floats.size()));
            break;
        case Attr::Type::kSTRING:
            out.strings.push_back(a->s);
            out.fields.emplace_back(fieldName, out.strings.back().c_str(), PluginFieldType::kCHAR,
                static_cast<int32_t>(std::strlen(out.strings.back().c_str()) + 1));
            break;
        }
    }
}

//! The contract's fields of a valid DCNv2 node with bias (the base of the load and fuzz checks).
void contractFields(Fields& out)
{
    out.addInt32(contract::kAttrKernelShape, {3, 3});
    out.addInt32(contract::kAttrStrides, {1, 1});
    out.addInt32(contract::kAttrPads, {1, 1, 1, 1});
    out.addInt32(contract::kAttrDilations, {1, 1});
    out.addInt32(contract::kAttrGroup, {1});
    out.addInt32(contract::kAttrOffsetGroup, {1});
    out.addInt32(contract::kAttrModulated, {1});
    out.addInt32(contract::kAttrHasBias, {1});
}

IPluginCreatorV3One* deformrtCreator(TensorRTLibrary const& trt)
{
    if (trt.registry == nullptr)
    {
        return nullptr;
    }
    std::vector<Attr> const attrs{{"plugin_version", Attr::Type::kSTRING, {}, {}, contract::kPluginVersion},
        {"plugin_namespace", Attr::Type::kSTRING, {}, {}, contract::kPluginNamespace}};
    return findCreatorLikeOnnxParser(*trt.registry, contract::kPluginName, attrs);
}

// -------------------------------------------------------------------------------------------------
// An expression builder like TensorRT's: constants fold, symbols stay symbolic and are evaluated later

class Expr : public IDimensionExpr
{
public:
    enum class Kind
    {
        kCONSTANT,
        kSYMBOL,
        kOPERATION
    };

    Expr(Kind kind, int64_t value, DimensionOperation op = DimensionOperation::kSUM, Expr const* a = nullptr,
        Expr const* b = nullptr)
        : mKind(kind)
        , mValue(value)
        , mOp(op)
        , mA(a)
        , mB(b)
        , mImplObject(*this)
    {
        mImpl = &mImplObject;
    }
    ~Expr() noexcept override = default;

    bool constant() const
    {
        return mKind == Kind::kCONSTANT;
    }

    //! The value with symbol i bound to env[i].
    int64_t evaluate(std::vector<int64_t> const& env) const
    {
        switch (mKind)
        {
        case Kind::kCONSTANT: return mValue;
        case Kind::kSYMBOL: return env.at(static_cast<size_t>(mValue));
        case Kind::kOPERATION: return apply(mOp, mA->evaluate(env), mB->evaluate(env));
        }
        return 0;
    }

    static int64_t apply(DimensionOperation op, int64_t a, int64_t b)
    {
        auto const floorDiv = [](int64_t x, int64_t y) { return x / y - ((x % y != 0) && ((x < 0) != (y < 0))); };
        switch (op)
        {
        case DimensionOperation::kSUM: return a + b;
        case DimensionOperation::kPROD: return a * b;
        case DimensionOperation::kMAX: return a > b ? a : b;
        case DimensionOperation::kMIN: return a < b ? a : b;
        case DimensionOperation::kSUB: return a - b;
        case DimensionOperation::kEQUAL: return a == b;
        case DimensionOperation::kLESS: return a < b;
        case DimensionOperation::kFLOOR_DIV: return floorDiv(a, b);
        case DimensionOperation::kCEIL_DIV: return -floorDiv(-a, b);
        }
        return 0;
    }

private:
    struct Impl : apiv::VDimensionExpr
    {
        explicit Impl(Expr const& e)
            : self(e)
        {
        }
        bool isConstant() const override
        {
            return self.mKind == Kind::kCONSTANT;
        }
        int64_t getConstantValue() const override
        {
            return self.mKind == Kind::kCONSTANT ? self.mValue : std::numeric_limits<int64_t>::min();
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        Expr const& self;
    };

    Kind mKind;
    int64_t mValue;
    DimensionOperation mOp;
    Expr const* mA;
    Expr const* mB;
    Impl mImplObject;
};

class ExprBuilder : public IExprBuilder
{
public:
    ExprBuilder()
        : mImplObject(*this)
    {
        mImpl = &mImplObject;
    }
    ~ExprBuilder() noexcept override = default;

    Expr const* symbol(int32_t index)
    {
        return make(Expr::Kind::kSYMBOL, index);
    }
    Expr const* value(int64_t v)
    {
        return make(Expr::Kind::kCONSTANT, v);
    }
    bool owns(IDimensionExpr const* e) const
    {
        for (auto const& p : mExprs)
        {
            if (p.get() == e)
            {
                return true;
            }
        }
        return false;
    }

private:
    template <typename... Args>
    Expr const* make(Args&&... args)
    {
        mExprs.push_back(std::make_unique<Expr>(std::forward<Args>(args)...));
        return mExprs.back().get();
    }

    struct Impl : apiv::VExprBuilder
    {
        explicit Impl(ExprBuilder& b)
            : self(b)
        {
        }
        IDimensionExpr const* constant(int64_t v) override
        {
            return self.value(v);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            auto const& a = static_cast<Expr const&>(first);
            auto const& b = static_cast<Expr const&>(second);
            if (a.constant() && b.constant())
            {
                return self.value(Expr::apply(op, a.evaluate({}), b.evaluate({})));
            }
            return self.make(Expr::Kind::kOPERATION, 0, op, &a, &b);
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }
        ExprBuilder& self;
    };

    std::vector<std::unique_ptr<Expr>> mExprs;
    Impl mImplObject;
};

class ResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

// -------------------------------------------------------------------------------------------------
// Plugin objects

struct PluginParts
{
    IPluginV3* plugin{nullptr};
    IPluginV3OneCore* core{nullptr};
    IPluginV3OneBuild* build{nullptr};
    IPluginV3OneRuntime* runtime{nullptr};
};

PluginParts partsOf(IPluginV3* plugin)
{
    PluginParts p;
    p.plugin = plugin;
    if (plugin != nullptr)
    {
        p.core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
        p.build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
        p.runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    }
    return p;
}

std::string fieldsSignature(PluginFieldCollection const* fc)
{
    if (fc == nullptr)
    {
        return "(null)";
    }
    static constexpr int32_t kSizes[] = {2, 4, 8, 1, 2, 4, 1, 4, 0, 2, 8, 1, 1, 1};
    std::ostringstream os;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        int32_t const t = static_cast<int32_t>(f.type);
        os << (f.name ? f.name : "(null)") << ':' << t << 'x' << f.length << '=';
        auto const* bytes = static_cast<unsigned char const*>(f.data);
        int32_t const n = (t >= 0 && t < 14 ? kSizes[t] : 0) * f.length;
        for (int32_t b = 0; bytes != nullptr && b < n; ++b)
        {
            os << std::hex << int(bytes[b]) << std::dec << ' ';
        }
        os << ';';
    }
    return os.str();
}

// -------------------------------------------------------------------------------------------------
// load

bool checkCreatorWorks(TensorRTLibrary const& trt, std::string const& how)
{
    IPluginCreatorV3One* creator = deformrtCreator(trt);
    if (!check(creator != nullptr, how + ": the registry has " + contract::kPluginNamespace + "::"
                + contract::kPluginName + " version " + contract::kPluginVersion))
    {
        return false;
    }
    int32_t count = 0;
    trt.registry->getAllCreators(&count);
    if (trt.failures != nullptr) // the stand-in registry holds nothing else
    {
        check(count == 1, how + ": exactly one creator is registered, got " + std::to_string(count));
    }
    Fields fields;
    contractFields(fields);
    IPluginV3* plugin = creator->createPlugin("load_check", fields.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, how + ": the registered creator creates the plugin");
    delete plugin;
    return true;
}

int runLoad(std::string const& scenario, std::string const& nvinfer, std::string const& pluginDir)
{
    std::string const dynamicFile = pluginDir + "/libdeformrt_plugin.so";
    std::string const autoloadFile = pluginDir + "/libdeformrt_plugin_autoload.so";
    if (scenario == "loadlibrary" || scenario == "loadlibrary-twice")
    {
        // As TensorRT's Python bindings load it: privately.
        TensorRTLibrary trt = openTensorRT(nvinfer, RTLD_LOCAL);
        if (!check(trt.registry != nullptr, "getPluginRegistry() answers"))
        {
            return gFailures;
        }
        IPluginRegistry::PluginLibraryHandle first = trt.registry->loadLibrary(dynamicFile.c_str());
        check(first != nullptr, "loadLibrary(libdeformrt_plugin.so) succeeds");
        if (scenario == "loadlibrary-twice")
        {
            IPluginRegistry::PluginLibraryHandle second = trt.registry->loadLibrary(dynamicFile.c_str());
            check(second == nullptr, "a second loadLibrary of the same file is refused (its creator exists)");
        }
        checkCreatorWorks(trt, scenario);
        checkNoContractFailures(trt);
    }
    else if (scenario == "autoload-private" || scenario == "autoload-global")
    {
        TensorRTLibrary trt = openTensorRT(nvinfer, scenario == "autoload-private" ? RTLD_LOCAL : RTLD_GLOBAL);
        void* plugin = dlopen(autoloadFile.c_str(), RTLD_NOW | RTLD_LOCAL);
        check(plugin != nullptr, "dlopen(libdeformrt_plugin_autoload.so): " + std::string(plugin ? "" : dlerror()));
        checkCreatorWorks(trt, scenario);
        checkNoContractFailures(trt);
    }
    else if (scenario == "autoload-not-yet")
    {
        check(dlopen(kTensorRTSoname, RTLD_NOW | RTLD_NOLOAD) == nullptr, "no TensorRT is loaded before the plugin");
        void* plugin = dlopen(autoloadFile.c_str(), RTLD_NOW | RTLD_LOCAL);
        check(plugin != nullptr, "dlopen(libdeformrt_plugin_autoload.so): " + std::string(plugin ? "" : dlerror()));
        void* loaded = dlopen(kTensorRTSoname, RTLD_NOW | RTLD_NOLOAD);
        if (check(loaded != nullptr, std::string("loading the plugin loaded ") + kTensorRTSoname))
        {
            TensorRTLibrary trt = bindTensorRT(loaded);
            checkCreatorWorks(trt, scenario);
            checkNoContractFailures(trt);
        }
    }
    else if (scenario == "wrong-major-loadlibrary" || scenario == "wrong-major-autoload")
    {
        TensorRTLibrary trt = openTensorRT(nvinfer, RTLD_LOCAL);
        if (!check(trt.registry != nullptr, "getPluginRegistry() answers"))
        {
            return gFailures;
        }
        if (scenario == "wrong-major-loadlibrary")
        {
            check(trt.registry->loadLibrary(dynamicFile.c_str()) == nullptr,
                "loadLibrary into a TensorRT of another major fails");
        }
        else
        {
            check(dlopen(autoloadFile.c_str(), RTLD_NOW | RTLD_LOCAL) != nullptr, "dlopen of the autoload file");
        }
        int32_t count = -1;
        trt.registry->getAllCreators(&count);
        check(count == 0, "nothing is registered in a TensorRT of another major, got " + std::to_string(count));
        checkNoContractFailures(trt);
    }
    else
    {
        check(false, "unknown load scenario " + scenario);
    }
    return gFailures;
}

// -------------------------------------------------------------------------------------------------
// nodes: one exported deformable-conv node per spec file

struct Tensor
{
    std::vector<int64_t> dims;
    std::vector<float> values;
};

struct NodeSpec
{
    std::string path;
    std::string name;
    std::string opType;
    std::vector<Attr> attrs;
    std::vector<Tensor> inputs;
    std::vector<int64_t> outputDims;
};

std::string directoryOf(std::string const& path)
{
    size_t const slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool readSpec(std::string const& path, NodeSpec& spec)
{
    std::ifstream in(path);
    if (!check(bool(in), "open spec " + path))
    {
        return false;
    }
    spec.path = path;
    std::string line;
    while (std::getline(in, line))
    {
        std::istringstream ls(line);
        std::string key;
        ls >> key;
        if (key == "name")
        {
            ls >> spec.name;
        }
        else if (key == "op")
        {
            ls >> spec.opType;
        }
        else if (key == "attr")
        {
            Attr a;
            std::string type;
            ls >> a.name >> type;
            size_t n = 1;
            if (type == "INT" || type == "INTS")
            {
                a.type = type == "INT" ? Attr::Type::kINT : Attr::Type::kINTS;
                if (type == "INTS")
                {
                    ls >> n;
                }
                a.ints.resize(n);
                for (int64_t& v : a.ints)
                {
                    ls >> v;
                }
            }
            else if (type == "FLOAT" || type == "FLOATS")
            {
                a.type = type == "FLOAT" ? Attr::Type::kFLOAT : Attr::Type::kFLOATS;
                if (type == "FLOATS")
                {
                    ls >> n;
                }
                a.floats.resize(n);
                for (float& v : a.floats)
                {
                    ls >> v;
                }
            }
            else if (type == "STRING")
            {
                a.type = Attr::Type::kSTRING;
                std::string hex;
                ls >> hex;
                for (size_t i = 0; i + 1 < hex.size(); i += 2)
                {
                    a.s.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
                }
            }
            spec.attrs.push_back(a);
        }
        else if (key == "input" || key == "output")
        {
            size_t rank = 0;
            ls >> rank;
            std::vector<int64_t> dims(rank);
            size_t count = 1;
            for (int64_t& d : dims)
            {
                ls >> d;
                count *= static_cast<size_t>(d);
            }
            if (key == "output")
            {
                spec.outputDims = dims;
                continue;
            }
            std::string file;
            ls >> file;
            Tensor t{dims, std::vector<float>(count)};
            std::ifstream data(directoryOf(path) + "/" + file, std::ios::binary);
            data.read(reinterpret_cast<char*>(t.values.data()), static_cast<std::streamsize>(count * sizeof(float)));
            if (!check(bool(data), "read " + file + " (" + std::to_string(count) + " float32 values)"))
            {
                return false;
            }
            spec.inputs.push_back(std::move(t));
        }
    }
    return check(!spec.opType.empty() && !spec.inputs.empty() && !spec.outputDims.empty(), "spec " + path + " is complete");
}

Dims toDims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i)
    {
        d.d[i] = v[i];
    }
    return d;
}

std::string dimsText(std::vector<int64_t> const& v)
{
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i)
    {
        s += (i ? ", " : "") + std::to_string(v[i]);
    }
    return s + "]";
}

//! The contract's output size along one axis (op_contract.output_size), clamped at 0.
int64_t outputSize(int64_t in, int64_t k, int64_t stride, int64_t padBegin, int64_t padEnd, int64_t dilation)
{
    int64_t const num = in + padBegin + padEnd - dilation * (k - 1) - 1;
    return num < 0 ? 0 : num / stride + 1;
}

struct Geometry
{
    int64_t k[2], s[2], p[4], d[2];
    int32_t biasIndex{-1};
};

Geometry geometryOf(NodeSpec const& spec)
{
    Geometry g{};
    auto ints = [&](char const* name, int64_t* out, size_t n) {
        Attr const* a = findAttr(spec.attrs, name);
        for (size_t i = 0; i < n; ++i)
        {
            out[i] = a != nullptr && i < a->ints.size() ? a->ints[i] : 0;
        }
    };
    ints(contract::kAttrKernelShape, g.k, 2);
    ints(contract::kAttrStrides, g.s, 2);
    ints(contract::kAttrPads, g.p, 4);
    ints(contract::kAttrDilations, g.d, 2);
    Attr const* bias = findAttr(spec.attrs, contract::kAttrHasBias);
    g.biasIndex = contract::biasInputIndex(bias != nullptr && !bias->ints.empty() && bias->ints[0] != 0);
    return g;
}

//! Input shapes for an input of ``h`` x ``w`` and batch ``n`` (maps follow the output size).
std::vector<std::vector<int64_t>> shapesFor(NodeSpec const& spec, Geometry const& g, int64_t n, int64_t h, int64_t w)
{
    int64_t const ho = outputSize(h, g.k[0], g.s[0], g.p[0], g.p[2], g.d[0]);
    int64_t const wo = outputSize(w, g.k[1], g.s[1], g.p[1], g.p[3], g.d[1]);
    std::vector<std::vector<int64_t>> shapes;
    for (size_t i = 0; i < spec.inputs.size(); ++i)
    {
        std::vector<int64_t> d = spec.inputs[i].dims;
        if (static_cast<int32_t>(i) != contract::kInputW && static_cast<int32_t>(i) != g.biasIndex)
        {
            d[0] = n;
            d[2] = i == 0 ? h : ho;
            d[3] = i == 0 ? w : wo;
        }
        shapes.push_back(d);
    }
    return shapes;
}

void checkOutputShapes(NodeSpec const& spec, Geometry const& g, PluginParts const& p, TensorRTLibrary const& trt)
{
    int32_t const nbInputs = static_cast<int32_t>(spec.inputs.size());
    std::string const where = spec.name + ": getOutputShapes";
    // Constant dims: the exported shapes.
    {
        ExprBuilder builder;
        std::vector<DimsExprs> in(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            in[i].nbDims = static_cast<int32_t>(spec.inputs[i].dims.size());
            for (int32_t j = 0; j < in[i].nbDims; ++j)
            {
                in[i].d[j] = builder.value(spec.inputs[i].dims[j]);
            }
        }
        DimsExprs out{};
        bool ok = check(p.build->getOutputShapes(in.data(), nbInputs, nullptr, 0, &out, 1, builder) == 0, where + " (constant)");
        std::vector<int64_t> got;
        for (int32_t j = 0; ok && j < out.nbDims; ++j)
        {
            ok = check(builder.owns(out.d[j]) && static_cast<Expr const*>(out.d[j])->constant(),
                where + ": constant inputs give constant dims");
            got.push_back(ok ? static_cast<Expr const*>(out.d[j])->evaluate({}) : -1);
        }
        if (ok)
        {
            check(got == spec.outputDims, where + ": " + dimsText(got) + " == the exported " + dimsText(spec.outputDims));
        }
    }
    // Symbolic N, H, W (and the maps' H_out, W_out): evaluated for several sizes, including too small ones.
    {
        ExprBuilder builder;
        std::vector<DimsExprs> in(nbInputs);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            in[i].nbDims = static_cast<int32_t>(spec.inputs[i].dims.size());
            for (int32_t j = 0; j < in[i].nbDims; ++j)
            {
                bool const isMap = i != contract::kInputW && i != g.biasIndex;
                bool const dynamic = isMap && j != 1;
                int32_t const symbol = j == 0 ? 0 : (i == 0 ? j - 1 : j + 1); // N; H, W of X; H_out, W_out of maps
                in[i].d[j] = dynamic ? static_cast<IDimensionExpr const*>(builder.symbol(symbol))
                                     : builder.value(spec.inputs[i].dims[j]);
            }
        }
        DimsExprs out{};
        if (check(p.build->getOutputShapes(in.data(), nbInputs, nullptr, 0, &out, 1, builder) == 0, where + " (symbolic)")
            && check(out.nbDims == 4, where + ": rank 4"))
        {
            int64_t const h0 = spec.inputs[0].dims[2];
            int64_t const w0 = spec.inputs[0].dims[3];
            for (auto const& nhw : std::vector<std::array<int64_t, 3>>{{1, h0, w0}, {3, h0 + 7, w0 + 3}, {2, 1, 1},
                     {1, 0, 2}, {1, g.d[0] * (g.k[0] - 1), g.d[1] * (g.k[1] - 1) + 1}})
            {
                int64_t const ho = outputSize(nhw[1], g.k[0], g.s[0], g.p[0], g.p[2], g.d[0]);
                int64_t const wo = outputSize(nhw[2], g.k[1], g.s[1], g.p[1], g.p[3], g.d[1]);
                std::vector<int64_t> const env{nhw[0], nhw[1], nhw[2], ho, wo};
                std::vector<int64_t> got;
                for (int32_t j = 0; j < 4; ++j)
                {
                    got.push_back(builder.owns(out.d[j]) ? static_cast<Expr const*>(out.d[j])->evaluate(env) : -1);
                }
                std::vector<int64_t> const want{nhw[0], spec.inputs[contract::kInputW].dims[0], ho, wo};
                check(got == want, where + " for N, H, W = " + dimsText({nhw[0], nhw[1], nhw[2]}) + ": " + dimsText(got)
                        + " == " + dimsText(want) + " (never negative)");
            }
        }
    }
    // A known input smaller than the kernel's extent: a build error with a reason, not a negative dim.
    int64_t const tooSmall = g.d[0] * (g.k[0] - 1) - g.p[0] - g.p[2];
    if (tooSmall >= 0)
    {
        ExprBuilder builder;
        std::vector<DimsExprs> in(nbInputs);
        auto const shapes = shapesFor(spec, g, 1, tooSmall, spec.inputs[0].dims[3]);
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            in[i].nbDims = static_cast<int32_t>(shapes[i].size());
            for (int32_t j = 0; j < in[i].nbDims; ++j)
            {
                in[i].d[j] = builder.value(shapes[i][j]);
            }
        }
        DimsExprs out{};
        size_t const logged = trt.logText().size();
        check(p.build->getOutputShapes(in.data(), nbInputs, nullptr, 0, &out, 1, builder) == -1,
            where + ": an input of height " + std::to_string(tooSmall) + " is refused");
        check(trt.log == nullptr || trt.logText().size() > logged, where + ": the refusal is logged");
    }
}

//! The format answers the contract asks for (stated independently of the plugin): X linear fp32/fp16, or
//! fp16 kHWC8 when its channels are a multiple of 8; W, offset, bias and mask linear in X's type; Y kHWC8
//! fp16 exactly when X is, and then only when the output channels are a multiple of 8.
bool expectedFormat(NodeSpec const& spec, int32_t pos, DataType type, TensorFormat format, DataType xType,
    TensorFormat xFormat)
{
    int32_t const nbInputs = static_cast<int32_t>(spec.inputs.size());
    bool const linear = format == TensorFormat::kLINEAR;
    if (pos == contract::kInputX)
    {
        bool const floatType = type == DataType::kFLOAT || type == DataType::kHALF;
        return (linear && floatType)
            || (format == TensorFormat::kHWC8 && type == DataType::kHALF && spec.inputs[0].dims[1] % 8 == 0);
    }
    if (pos == nbInputs && xFormat == TensorFormat::kHWC8)
    {
        return format == TensorFormat::kHWC8 && type == DataType::kHALF && spec.outputDims[1] % 8 == 0;
    }
    return linear && type == xType;
}

//! TensorRT's descriptions at the query: dims as built (the batch and spatial sizes dynamic: -1).
std::vector<DynamicPluginTensorDesc> formatQueryDescs(NodeSpec const& spec, Geometry const& g)
{
    int32_t const nbInputs = static_cast<int32_t>(spec.inputs.size());
    std::vector<DynamicPluginTensorDesc> io(nbInputs + 1);
    for (int32_t i = 0; i <= nbInputs; ++i)
    {
        std::vector<int64_t> dims = i < nbInputs ? spec.inputs[i].dims : spec.outputDims;
        if (i != contract::kInputW && i != g.biasIndex)
        {
            dims[0] = dims[2] = dims[3] = -1;
        }
        io[i].desc.dims = toDims(dims);
        io[i].desc.scale = 1.0F;
    }
    return io;
}

//! Garbage of the kind the header warns about in inOut[pos + 1 ..]: any type, format and dims.
void fillGarbage(std::vector<DynamicPluginTensorDesc>& io, int32_t from, uint32_t seed)
{
    for (size_t i = static_cast<size_t>(from); i < io.size(); ++i)
    {
        seed = seed * 1664525u + 1013904223u;
        io[i].desc.type = static_cast<DataType>(static_cast<int32_t>(seed >> 8) % 16 - 2);
        io[i].desc.format = static_cast<TensorFormat>(static_cast<int32_t>(seed >> 12) % 24 - 2);
        io[i].desc.dims.nbDims = static_cast<int32_t>(seed >> 16) % 11 - 1;
        for (int32_t j = 0; j < Dims::MAX_DIMS; ++j)
        {
            seed = seed * 1664525u + 1013904223u;
            int64_t const kinds[] = {-1, 0, 7, 8, 16, 3, int64_t(1) << 40, -(int64_t(1) << 35)};
            io[i].desc.dims.d[j] = kinds[(seed >> 20) % 8];
        }
        io[i].min = io[i].opt = io[i].max = io[i].desc.dims;
    }
}

void checkFormats(NodeSpec const& spec, Geometry const& g, PluginParts const& p)
{
    int32_t const nbInputs = static_cast<int32_t>(spec.inputs.size());
    int32_t const nb = nbInputs + 1;
    std::string const where = spec.name + ": supportsFormatCombination";
    int32_t const nbTypes = EnumMax<DataType>();
    int32_t const nbFormats = EnumMax<TensorFormat>();
    struct XChoice
    {
        DataType type;
        TensorFormat format;
    };
    for (XChoice const x : {XChoice{DataType::kFLOAT, TensorFormat::kLINEAR}, XChoice{DataType::kHALF, TensorFormat::kLINEAR},
             XChoice{DataType::kHALF, TensorFormat::kHWC8}})
    {
        if (!expectedFormat(spec, 0, x.type, x.format, x.type, x.format))
        {
            continue; // kHWC8 X for channels that are not a multiple of 8: refused at position 0 (checked below)
        }
        for (int32_t pos = 0; pos < nb; ++pos)
        {
            std::vector<DynamicPluginTensorDesc> io = formatQueryDescs(spec, g);
            for (int32_t i = 0; i < pos; ++i) // earlier positions hold an accepted combination
            {
                bool const channelsLast = x.format == TensorFormat::kHWC8 && (i == 0 || i == nbInputs);
                io[i].desc.type = x.type;
                io[i].desc.format = channelsLast ? TensorFormat::kHWC8 : TensorFormat::kLINEAR;
            }
            for (int32_t t = 0; t < nbTypes; ++t)
            {
                for (int32_t f = 0; f < nbFormats; ++f)
                {
                    DataType const type = static_cast<DataType>(t);
                    TensorFormat const format = static_cast<TensorFormat>(f);
                    io[pos].desc.type = type;
                    io[pos].desc.format = format;
                    std::string const what = where + "(pos " + std::to_string(pos) + ", type " + std::to_string(t)
                        + ", format " + std::to_string(f) + ", X " + std::to_string(static_cast<int32_t>(x.type)) + "/"
                        + std::to_string(static_cast<int32_t>(x.format)) + ")";
                    bool const want = expectedFormat(spec, pos, type, format, x.type, x.format);
                    bool const accepted = p.build->supportsFormatCombination(pos, io.data(), nbInputs, 1);
                    if (!check(accepted == want, what + (want ? " is accepted" : " is refused")))
                    {
                        continue;
                    }
                    // The header: inOut[pos + 1 ..] hold invalid values. The answer must not depend on them.
                    for (uint32_t seed : {1u, 2u, 3u})
                    {
                        std::vector<DynamicPluginTensorDesc> garbage = io;
                        fillGarbage(garbage, pos + 1, seed * 7919u + static_cast<uint32_t>(pos * 64 + t * 8 + f));
                        check(p.build->supportsFormatCombination(pos, garbage.data(), nbInputs, 1) == accepted,
                            what + ": the same answer with garbage in the later positions");
                    }
                }
            }
        }
    }
    std::vector<DynamicPluginTensorDesc> io = formatQueryDescs(spec, g);
    check(!p.build->supportsFormatCombination(nb, io.data(), nbInputs, 1), where + ": pos past the end is refused");
    check(!p.build->supportsFormatCombination(-1, io.data(), nbInputs, 1), where + ": pos -1 is refused");
}

//! One candidate combination the builder configures and times, and may pick.
struct Variant
{
    DataType type;
    TensorFormat format; //!< of X and Y (the others are linear)
    std::string name;    //!< fp32, fp16 or fp16-hwc8: the output files' suffix
};

std::vector<DynamicPluginTensorDesc> dynamicDescs(NodeSpec const& spec, Geometry const& g, Variant const& v,
    int64_t minH, int64_t minW)
{
    int64_t const h = spec.inputs[0].dims[2];
    int64_t const w = spec.inputs[0].dims[3];
    auto const minShapes = shapesFor(spec, g, 1, minH, minW);
    auto const optShapes = shapesFor(spec, g, spec.inputs[0].dims[0], h, w);
    auto const maxShapes = shapesFor(spec, g, 2 * spec.inputs[0].dims[0], 2 * h, 2 * w);
    std::vector<DynamicPluginTensorDesc> in(spec.inputs.size());
    for (size_t i = 0; i < in.size(); ++i)
    {
        bool const isMap = static_cast<int32_t>(i) != contract::kInputW && static_cast<int32_t>(i) != g.biasIndex;
        std::vector<int64_t> runtimeDims = optShapes[i];
        if (isMap)
        {
            runtimeDims[0] = runtimeDims[2] = runtimeDims[3] = -1;
        }
        in[i].desc.dims = toDims(runtimeDims);
        in[i].desc.type = v.type;
        in[i].desc.format = i == 0 ? v.format : TensorFormat::kLINEAR;
        in[i].desc.scale = 1.0F;
        in[i].min = toDims(minShapes[i]);
        in[i].opt = toDims(optShapes[i]);
        in[i].max = toDims(maxShapes[i]);
    }
    return in;
}

DynamicPluginTensorDesc outputDesc(NodeSpec const& spec, std::vector<DynamicPluginTensorDesc> const& in, Geometry const& g)
{
    DynamicPluginTensorDesc out{};
    auto const outOf = [&](Dims const& x) {
        std::vector<int64_t> d{x.d[0], spec.outputDims[1], outputSize(x.d[2], g.k[0], g.s[0], g.p[0], g.p[2], g.d[0]),
            outputSize(x.d[3], g.k[1], g.s[1], g.p[1], g.p[3], g.d[1])};
        return toDims(d);
    };
    out.desc.dims = toDims({-1, spec.outputDims[1], -1, -1});
    out.desc.type = in[0].desc.type;
    out.desc.format = in[0].desc.format;
    out.min = outOf(in[0].min);
    out.opt = outOf(in[0].opt);
    out.max = outOf(in[0].max);
    return out;
}

size_t countOf(std::vector<int64_t> const& dims)
{
    size_t n = 1;
    for (int64_t d : dims)
    {
        n *= static_cast<size_t>(d);
    }
    return n;
}

//! NCHW float values as the bytes enqueue reads: float32, or binary16 bits; NHWC when ``nhwc``.
std::vector<unsigned char> encode(std::vector<float> const& values, std::vector<int64_t> const& dims, DataType type,
    bool nhwc)
{
    size_t const elementBytes = type == DataType::kHALF ? 2 : 4;
    std::vector<unsigned char> bytes(values.size() * elementBytes);
    int64_t const plane = dims.size() == 4 ? dims[2] * dims[3] : 1;
    int64_t const channels = dims.size() == 4 ? dims[1] : 1;
    for (size_t i = 0; i < values.size(); ++i)
    {
        size_t to = i;
        if (nhwc)
        {
            int64_t const n = static_cast<int64_t>(i) / (channels * plane);
            int64_t const c = static_cast<int64_t>(i) / plane % channels;
            int64_t const pixel = static_cast<int64_t>(i) % plane;
            to = static_cast<size_t>((n * plane + pixel) * channels + c);
        }
        if (type == DataType::kHALF)
        {
            uint16_t const h = deformrt::floatToHalfBits(values[i]);
            std::memcpy(bytes.data() + to * 2, &h, 2);
        }
        else
        {
            std::memcpy(bytes.data() + to * 4, &values[i], 4);
        }
    }
    return bytes;
}

//! The inverse of encode for an output: NCHW float32 values.
std::vector<float> decode(std::vector<unsigned char> const& bytes, std::vector<int64_t> const& dims, DataType type,
    bool nhwc)
{
    size_t const count = countOf(dims);
    std::vector<float> values(count);
    int64_t const plane = dims[2] * dims[3];
    for (size_t i = 0; i < count; ++i)
    {
        size_t from = i;
        if (nhwc)
        {
            int64_t const n = static_cast<int64_t>(i) / (dims[1] * plane);
            int64_t const c = static_cast<int64_t>(i) / plane % dims[1];
            int64_t const pixel = static_cast<int64_t>(i) % plane;
            from = static_cast<size_t>((n * plane + pixel) * dims[1] + c);
        }
        if (type == DataType::kHALF)
        {
            uint16_t h;
            std::memcpy(&h, bytes.data() + from * 2, 2);
            values[i] = deformrt::halfBitsToFloat(h);
        }
        else
        {
            std::memcpy(&values[i], bytes.data() + from * 4, 4);
        }
    }
    return values;
}

//! The memory one execution context's enqueue calls see: host buffers, or (HARNESS_CUDA) device copies
//! made once, so that a tensor keeps its address across enqueues (a refit writes new values in place).
class Buffers
{
public:
    Buffers(std::vector<std::vector<unsigned char>> inputs, size_t outputBytes, size_t workspaceBytes)
        : mHost(std::move(inputs))
        , mOutput(outputBytes, 0xff)
        , mWorkspace(workspaceBytes > 0 ? workspaceBytes : 1, 0xab)
    {
        for (auto const& t : mHost)
        {
            mInputs.push_back(t.data());
        }
        mOutputPtr = mOutput.data();
        mWorkspacePtr = workspaceBytes > 0 ? mWorkspace.data() : nullptr;
#if HARNESS_CUDA
        mOk = cudaStreamCreate(&mStream) == cudaSuccess;
        for (size_t i = 0; mOk && i < mHost.size(); ++i)
        {
            void* p = nullptr;
            mOk = cudaMalloc(&p, mHost[i].size()) == cudaSuccess;
            mDevice.push_back(p);
            mInputs[i] = p;
            mOk = mOk && cudaMemcpy(p, mHost[i].data(), mHost[i].size(), cudaMemcpyHostToDevice) == cudaSuccess;
        }
        void* out = nullptr;
        void* ws = nullptr;
        mOk = mOk && cudaMalloc(&out, outputBytes) == cudaSuccess
            && (workspaceBytes == 0 || cudaMalloc(&ws, workspaceBytes) == cudaSuccess)
            && (workspaceBytes == 0 || cudaMemset(ws, 0xab, workspaceBytes) == cudaSuccess);
        mDevice.push_back(out);
        mDevice.push_back(ws);
        mOutputPtr = out;
        mWorkspacePtr = ws;
#endif
    }
    Buffers(Buffers const&) = delete;
    Buffers& operator=(Buffers const&) = delete;
    ~Buffers()
    {
#if HARNESS_CUDA
        for (void* p : mDevice)
        {
            cudaFree(p);
        }
        if (mStream != nullptr)
        {
            cudaStreamDestroy(mStream);
        }
#endif
    }

    //! New contents for input ``i`` at the same address (a refit).
    void setInput(size_t i, std::vector<unsigned char> const& bytes)
    {
        std::memcpy(mHost[i].data(), bytes.data(), bytes.size());
#if HARNESS_CUDA
        mOk = mOk && cudaMemcpy(mDevice[i], bytes.data(), bytes.size(), cudaMemcpyHostToDevice) == cudaSuccess;
#endif
    }

    //! enqueue, then the output's bytes (empty when enqueue failed).
    std::vector<unsigned char> run(IPluginV3OneRuntime& runtime, PluginTensorDesc const* in, PluginTensorDesc const* out)
    {
        if (!mOk)
        {
            return {};
        }
        void* outputs[] = {mOutputPtr};
#if HARNESS_CUDA
        int32_t const status = runtime.enqueue(in, out, mInputs.data(), outputs, mWorkspacePtr, mStream);
        if (status != 0 || cudaStreamSynchronize(mStream) != cudaSuccess
            || cudaMemcpy(mOutput.data(), mOutputPtr, mOutput.size(), cudaMemcpyDeviceToHost) != cudaSuccess)
        {
            return {};
        }
#else
        if (runtime.enqueue(in, out, mInputs.data(), outputs, mWorkspacePtr, nullptr) != 0)
        {
            return {};
        }
#endif
        return mOutput;
    }

private:
    std::vector<std::vector<unsigned char>> mHost;
    std::vector<unsigned char> mOutput;
    std::vector<unsigned char> mWorkspace;
    std::vector<void const*> mInputs;
    void* mOutputPtr{nullptr};
    void* mWorkspacePtr{nullptr};
    bool mOk{true};
#if HARNESS_CUDA
    std::vector<void*> mDevice;
    cudaStream_t mStream{nullptr};
#endif
};

//! The node's tensors for the first ``batch`` images (the maps' leading images; W and bias whole).
struct Run
{
    std::vector<std::vector<float>> values;
    std::vector<std::vector<int64_t>> dims;
    std::vector<int64_t> outputDims;
};

Run firstImages(NodeSpec const& spec, Geometry const& g, int64_t batch)
{
    Run r;
    for (size_t i = 0; i < spec.inputs.size(); ++i)
    {
        Tensor const& t = spec.inputs[i];
        bool const isMap = static_cast<int32_t>(i) != contract::kInputW && static_cast<int32_t>(i) != g.biasIndex;
        std::vector<int64_t> dims = t.dims;
        size_t count = t.values.size();
        if (isMap)
        {
            count = count / static_cast<size_t>(dims[0]) * static_cast<size_t>(batch);
            dims[0] = batch;
        }
        r.values.emplace_back(t.values.begin(), t.values.begin() + static_cast<std::ptrdiff_t>(count));
        r.dims.push_back(dims);
    }
    r.outputDims = spec.outputDims;
    r.outputDims[0] = batch;
    return r;
}

//! The runtime descriptions of a run in variant ``v``.
std::vector<PluginTensorDesc> runtimeDescs(Run const& r, Variant const& v, PluginTensorDesc& out)
{
    std::vector<PluginTensorDesc> in(r.dims.size());
    for (size_t i = 0; i < in.size(); ++i)
    {
        in[i].dims = toDims(r.dims[i]);
        in[i].type = v.type;
        in[i].format = i == 0 ? v.format : TensorFormat::kLINEAR;
        in[i].scale = 1.0F;
    }
    out = in[0];
    out.dims = toDims(r.outputDims);
    return in;
}

std::vector<std::vector<unsigned char>> encodeRun(Run const& r, Variant const& v)
{
    std::vector<std::vector<unsigned char>> bytes;
    for (size_t i = 0; i < r.values.size(); ++i)
    {
        bytes.push_back(encode(r.values[i], r.dims[i], v.type, i == 0 && v.format == TensorFormat::kHWC8));
    }
    return bytes;
}

void writeOutput(std::string const& path, std::vector<float> const& values, std::string const& where)
{
    std::ofstream file(path, std::ios::binary);
    file.write(reinterpret_cast<char const*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
    check(bool(file), where + ": write " + path);
}

//! TensorRT's real sequence for one node. Build: the parser's plugin cloned twice; each clone configured
//! with every candidate combination in turn (the order of the builder's timing, the last one fp32) with
//! getWorkspaceSize asked for each; the first clone serialised after its last configuration, whichever
//! combination then "wins". Run, for each winning combination: a runtime plugin created from those fields;
//! two execution contexts (attachToContext); onShapeChange on the first, then its first enqueue on a clone
//! made after it (TensorRT calls onShapeChange lazily, clones may come between); the second context at
//! batch 1; the two enqueued alternately (each must repeat its own result bit for bit); then the weight
//! changed in place (a refit) and both enqueued again. Every workspace is exactly getWorkspaceSize's
//! answer for the winning combination. Outputs go to SPEC.<variant>[.batch1][.refit].out.
void runBuilderSequence(NodeSpec const& spec, Geometry const& g, IPluginCreatorV3One& creator,
    PluginParts const& built, TensorRTLibrary const& trt)
{
    int32_t const nbInputs = static_cast<int32_t>(spec.inputs.size());
    std::vector<Variant> candidates{{DataType::kHALF, TensorFormat::kLINEAR, "fp16"}};
    {
        // kHWC8 is a candidate when the plugin offers it for X and Y (checkFormats checks when it must).
        std::vector<DynamicPluginTensorDesc> io = formatQueryDescs(spec, g);
        for (auto& d : io)
        {
            d.desc.type = DataType::kHALF;
            d.desc.format = TensorFormat::kLINEAR;
        }
        io[0].desc.format = io[nbInputs].desc.format = TensorFormat::kHWC8;
        if (built.build->supportsFormatCombination(0, io.data(), nbInputs, 1)
            && built.build->supportsFormatCombination(nbInputs, io.data(), nbInputs, 1))
        {
            candidates.push_back({DataType::kHALF, TensorFormat::kHWC8, "fp16-hwc8"});
        }
    }
    candidates.push_back({DataType::kFLOAT, TensorFormat::kLINEAR, "fp32"});

    // Build phase.
    PluginParts a = partsOf(built.plugin->clone());
    PluginParts b = partsOf(built.plugin->clone());
    if (!check(a.plugin != nullptr && b.plugin != nullptr, spec.name + ": clone() twice"))
    {
        delete a.plugin;
        delete b.plugin;
        return;
    }
    std::vector<size_t> workspace(candidates.size());
    std::string firstFields;
    for (size_t c = 0; c < candidates.size(); ++c)
    {
        Variant const& v = candidates[c];
        std::string const where = spec.name + " (" + v.name + ")";
        DataType outType = DataType::kINT8;
        std::vector<DataType> inTypes(nbInputs, v.type);
        check(a.build->getOutputDataTypes(&outType, 1, inTypes.data(), nbInputs) == 0 && outType == v.type,
            where + ": getOutputDataTypes gives the input type");
        auto in = dynamicDescs(spec, g, v, spec.inputs[0].dims[2], spec.inputs[0].dims[3]);
        auto out = outputDesc(spec, in, g);
        check(a.build->configurePlugin(in.data(), nbInputs, &out, 1) == 0, where + ": configurePlugin");
        workspace[c] = a.build->getWorkspaceSize(in.data(), nbInputs, &out, 1);
        // The timing clone sees the combinations in the opposite order.
        Variant const& other = candidates[candidates.size() - 1 - c];
        auto otherIn = dynamicDescs(spec, g, other, spec.inputs[0].dims[2], spec.inputs[0].dims[3]);
        auto otherOut = outputDesc(spec, otherIn, g);
        check(b.build->configurePlugin(otherIn.data(), nbInputs, &otherOut, 1) == 0, where + ": configurePlugin (clone)");
        std::string const fields = fieldsSignature(a.runtime->getFieldsToSerialize());
        if (c == 0)
        {
            firstFields = fields;
        }
        check(fields == firstFields,
            where + ": the serialised fields do not depend on the last configuration (TensorRT may serialise an "
                    "instance last configured with a combination that did not win)");
    }
    check(fieldsSignature(b.runtime->getFieldsToSerialize()) == firstFields, spec.name + ": the clones serialise alike");
    // A profile whose minimum allows no output: refused with a reason.
    int64_t const tooSmall = g.d[0] * (g.k[0] - 1) - g.p[0] - g.p[2];
    if (tooSmall >= 0)
    {
        PluginParts q = partsOf(built.plugin->clone());
        auto badIn = dynamicDescs(spec, g, candidates.back(), tooSmall, spec.inputs[0].dims[3]);
        auto badOut = outputDesc(spec, badIn, g);
        size_t const logged = trt.logText().size();
        check(q.build->configurePlugin(badIn.data(), nbInputs, &badOut, 1) == -1,
            spec.name + ": configurePlugin refuses a minimum height of " + std::to_string(tooSmall));
        check(trt.log == nullptr || trt.logText().size() > logged, spec.name + ": that refusal is logged");
        delete q.plugin;
    }
    PluginFieldCollection const* serialized = a.runtime->getFieldsToSerialize();

    // Run phase, once per winning combination.
    for (size_t c = 0; c < candidates.size(); ++c)
    {
        Variant const& v = candidates[c];
        std::string const where = spec.name + " (" + v.name + " won)";
        bool const nhwc = v.format == TensorFormat::kHWC8;
        PluginParts r = partsOf(creator.createPlugin(spec.name.c_str(), serialized, TensorRTPhase::kRUNTIME));
        if (!check(r.plugin != nullptr && r.runtime != nullptr, where + ": createPlugin(kRUNTIME) from the fields"))
        {
            continue;
        }
        check(fieldsSignature(r.runtime->getFieldsToSerialize()) == firstFields,
            where + ": the runtime plugin serialises the same fields");
        check(std::string(r.core->getPluginName()) == creator.getPluginName()
                && std::string(r.core->getPluginVersion()) == creator.getPluginVersion()
                && std::string(r.core->getPluginNamespace()) == creator.getPluginNamespace(),
            where + ": name, version and namespace match the creator's");
        ResourceContext context1;
        ResourceContext context2;
        PluginParts ctx1 = partsOf(r.runtime->attachToContext(&context1));
        PluginParts ctx2 = partsOf(r.runtime->attachToContext(&context2));
        if (!check(ctx1.plugin != nullptr && ctx2.plugin != nullptr && ctx1.plugin != r.plugin
                    && ctx1.runtime != nullptr && ctx2.runtime != nullptr,
                where + ": attachToContext returns a new plugin per context"))
        {
            delete ctx1.plugin;
            delete ctx2.plugin;
            delete r.plugin;
            continue;
        }
        Run const full = firstImages(spec, g, spec.inputs[0].dims[0]);
        Run const one = firstImages(spec, g, 1);
        PluginTensorDesc fullOut{};
        PluginTensorDesc oneOut{};
        auto const fullIn = runtimeDescs(full, v, fullOut);
        auto const oneIn = runtimeDescs(one, v, oneOut);
        size_t const elementBytes = v.type == DataType::kHALF ? 2 : 4;
        Buffers fullBuffers(encodeRun(full, v), countOf(full.outputDims) * elementBytes, workspace[c]);
        Buffers oneBuffers(encodeRun(one, v), countOf(one.outputDims) * elementBytes, workspace[c]);

        check(ctx1.runtime->onShapeChange(fullIn.data(), nbInputs, &fullOut, 1) == 0, where + ": onShapeChange");
        PluginParts lazy = partsOf(ctx1.plugin->clone()); // made after onShapeChange, enqueued without one
        auto const first = lazy.runtime != nullptr ? fullBuffers.run(*lazy.runtime, fullIn.data(), &fullOut)
                                                   : std::vector<unsigned char>{};
        bool const ok = check(!first.empty(), where + ": the first enqueue, on a clone made after onShapeChange");
        check(ctx2.runtime->onShapeChange(oneIn.data(), nbInputs, &oneOut, 1) == 0, where + ": onShapeChange (batch 1)");
        auto const firstOne = oneBuffers.run(*ctx2.runtime, oneIn.data(), &oneOut);
        check(!firstOne.empty(), where + ": enqueue in a second context at batch 1");
        if (ok)
        {
            check(fullBuffers.run(*lazy.runtime, fullIn.data(), &fullOut) == first,
                where + ": the first context repeats its result after the second ran another shape");
            check(oneBuffers.run(*ctx2.runtime, oneIn.data(), &oneOut) == firstOne,
                where + ": the second context repeats its result after the first ran");
            writeOutput(spec.path + "." + v.name + ".out", decode(first, full.outputDims, v.type, nhwc), where);
            writeOutput(spec.path + "." + v.name + ".batch1.out", decode(firstOne, one.outputDims, v.type, nhwc), where);
            // Refit: the weight negated in place (same address, same size), then both contexts again.
            std::vector<float> negated = full.values[contract::kInputW];
            for (float& w : negated)
            {
                w = -w;
            }
            auto const negatedBytes = encode(negated, full.dims[contract::kInputW], v.type, false);
            fullBuffers.setInput(contract::kInputW, negatedBytes);
            oneBuffers.setInput(contract::kInputW, negatedBytes);
            auto const refit = fullBuffers.run(*lazy.runtime, fullIn.data(), &fullOut);
            auto const refitOne = oneBuffers.run(*ctx2.runtime, oneIn.data(), &oneOut);
            if (check(!refit.empty() && !refitOne.empty(), where + ": enqueue after a refit"))
            {
                check(refit != first, where + ": a refit into the same address changes the result");
                writeOutput(spec.path + "." + v.name + ".refit.out", decode(refit, full.outputDims, v.type, nhwc), where);
                writeOutput(spec.path + "." + v.name + ".refit.batch1.out",
                    decode(refitOne, one.outputDims, v.type, nhwc), where);
            }
        }
        delete lazy.plugin;
        delete ctx1.plugin;
        delete ctx2.plugin;
        delete r.plugin;
    }
    delete a.plugin;
    delete b.plugin;
}

int runNodes(std::string const& nvinfer, std::string const& pluginDir, std::vector<std::string> const& specs)
{
    TensorRTLibrary trt = openTensorRT(nvinfer, RTLD_LOCAL);
    if (!check(trt.registry != nullptr, "getPluginRegistry() answers")
        || !check(trt.registry->loadLibrary((pluginDir + "/libdeformrt_plugin.so").c_str()) != nullptr,
            "loadLibrary(libdeformrt_plugin.so)"))
    {
        return gFailures;
    }
    for (std::string const& path : specs)
    {
        NodeSpec spec;
        if (!readSpec(path, spec))
        {
            continue;
        }
        IPluginCreatorV3One* creator = findCreatorLikeOnnxParser(*trt.registry, spec.opType, spec.attrs);
        if (!check(creator != nullptr, spec.name + ": the ONNX parser's lookup finds the creator"))
        {
            continue;
        }
        Fields fields;
        buildFieldsLikeOnnxParser(*creator, spec.attrs, fields);
        PluginParts built = partsOf(creator->createPlugin(spec.name.c_str(), fields.collection(), TensorRTPhase::kBUILD));
        if (!check(built.plugin != nullptr && built.core != nullptr && built.build != nullptr && built.runtime != nullptr,
                spec.name + ": createPlugin(kBUILD) with the parser's fields gives a plugin with all three capabilities"))
        {
            continue;
        }
        Geometry const g = geometryOf(spec);
        checkOutputShapes(spec, g, built, trt);
        checkFormats(spec, g, built);
        runBuilderSequence(spec, g, *creator, built, trt);
        delete built.plugin; // the parser deletes its plugin once TensorRT has cloned it
    }
    checkNoContractFailures(trt);
    return gFailures;
}

// -------------------------------------------------------------------------------------------------
// fuzz: malformed field collections and bad calls; every one must be refused with a logged reason

struct Fuzzer
{
    TensorRTLibrary const& trt;
    IPluginCreatorV3One& creator;
    int cases{0};

    //! Runs ``call``; it must report failure (``refused``) and log a line.
    void expectRefused(std::string const& what, std::function<bool()> const& call)
    {
        ++cases;
        size_t const logged = trt.logText().size();
        check(call(), what + ": refused");
        check(trt.logText().size() > logged, what + ": a reason is logged");
    }

    void createRefused(std::string const& what, PluginFieldCollection const* fc, TensorRTPhase phase = TensorRTPhase::kBUILD)
    {
        expectRefused("createPlugin with " + what, [&] {
            IPluginV3* plugin = creator.createPlugin("fuzz", fc, phase);
            delete plugin;
            return plugin == nullptr;
        });
    }
};

//! Whether value v of contract field ``name`` is valid (the contract, stated independently of the plugin).
bool validValue(std::string const& name, int64_t v)
{
    int64_t const kLimit = int64_t(1) << 30;
    if (name == contract::kAttrModulated || name == contract::kAttrHasBias)
    {
        return v == 0 || v == 1;
    }
    if (name == contract::kAttrPads)
    {
        return v >= 0 && v < kLimit;
    }
    return v >= 1 && v < kLimit;
}

void fuzzFields(Fuzzer& fz)
{
    fz.createRefused("no field collection", nullptr);
    PluginFieldCollection nullFields{3, nullptr};
    fz.createRefused("3 fields and a null array", &nullFields);
    PluginFieldCollection negative{-1, nullptr};
    fz.createRefused("-1 fields", &negative);

    Fields base;
    contractFields(base);
    size_t const nbFields = base.fields.size();
    for (size_t i = 0; i < nbFields; ++i)
    {
        std::string const name = base.fields[i].name;
        {
            Fields f;
            contractFields(f);
            f.fields.erase(f.fields.begin() + static_cast<std::ptrdiff_t>(i));
            fz.createRefused("'" + name + "' missing", f.collection());
        }
        {
            Fields f;
            contractFields(f);
            f.fields.push_back(f.fields[i]);
            fz.createRefused("'" + name + "' repeated", f.collection());
        }
        for (PluginFieldType type : {PluginFieldType::kFLOAT16, PluginFieldType::kFLOAT32, PluginFieldType::kFLOAT64,
                 PluginFieldType::kINT8, PluginFieldType::kINT16, PluginFieldType::kCHAR, PluginFieldType::kDIMS,
                 PluginFieldType::kUNKNOWN, static_cast<PluginFieldType>(99), static_cast<PluginFieldType>(-5)})
        {
            Fields f;
            contractFields(f);
            f.fields[i].type = type;
            fz.createRefused("'" + name + "' of type " + std::to_string(static_cast<int32_t>(type)), f.collection());
        }
        for (int32_t length : {0, -1, base.fields[i].length - 1, base.fields[i].length + 1,
                 std::numeric_limits<int32_t>::max()})
        {
            if (length == base.fields[i].length)
            {
                continue;
            }
            Fields f;
            contractFields(f);
            f.fields[i].length = length;
            fz.createRefused("'" + name + "' of length " + std::to_string(length), f.collection());
        }
        {
            Fields f;
            contractFields(f);
            f.fields[i].data = nullptr;
            fz.createRefused("'" + name + "' with null data", f.collection());
        }
        for (int64_t value : {int64_t(std::numeric_limits<int32_t>::min()), int64_t(-1), int64_t(0), int64_t(2),
                 int64_t(1) << 30, int64_t(std::numeric_limits<int32_t>::max())})
        {
            Fields f;
            contractFields(f);
            std::vector<int32_t>& values = f.ints[i];
            values.back() = static_cast<int32_t>(value);
            std::string const what = "'" + name + "' = " + std::to_string(value);
            if (validValue(name, value))
            {
                ++fz.cases;
                IPluginV3* plugin = fz.creator.createPlugin("fuzz", f.collection(), TensorRTPhase::kBUILD);
                check(plugin != nullptr, "createPlugin with " + what + " (valid) succeeds");
                delete plugin;
            }
            else
            {
                fz.createRefused(what, f.collection());
            }
        }
        // int64 values are read too; outside int32 they are refused.
        for (int64_t value : {int64_t(1) << 40, -(int64_t(1) << 40)})
        {
            Fields f;
            contractFields(f);
            f.longs.emplace_back(static_cast<size_t>(base.fields[i].length), value);
            f.fields[i].data = f.longs.back().data();
            f.fields[i].type = PluginFieldType::kINT64;
            fz.createRefused("'" + name + "' = int64 " + std::to_string(value), f.collection());
        }
    }
    {
        Fields f;
        contractFields(f);
        f.addInt32("not_a_field", {1});
        fz.createRefused("an extra unknown field", f.collection());
    }
    {
        Fields f;
        contractFields(f);
        f.fields.emplace_back(nullptr, f.ints[0].data(), PluginFieldType::kINT32, 1);
        fz.createRefused("a field without a name", f.collection());
    }
    // weight_layout: a STRING attribute, a kCHAR field as the ONNX parser builds it (length counts the NUL).
    auto const layoutField = [](Fields& f, std::string const& value, PluginFieldType type, int32_t length) {
        f.strings.push_back(contract::kAttrWeightLayout);
        char const* name = f.strings.back().c_str();
        f.strings.push_back(value);
        f.fields.emplace_back(name, f.strings.back().c_str(), type, length);
    };
    for (char const* layout : {contract::kWeightLayoutOIHW, contract::kWeightLayoutOHWI})
    {
        Fields f;
        contractFields(f);
        layoutField(f, layout, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(layout) + 1));
        ++fz.cases;
        IPluginV3* plugin = fz.creator.createPlugin("fuzz", f.collection(), TensorRTPhase::kBUILD);
        check(plugin != nullptr, std::string("createPlugin with weight_layout ") + layout + " succeeds");
        delete plugin;
    }
    for (auto const& bad : std::vector<std::pair<std::string, int32_t>>{{"NCHW", 5}, {"ohwi", 5}, {"", 1}, {"OHWI", 0},
             {"OHWIX", 6}, {"OIH", 4}})
    {
        Fields f;
        contractFields(f);
        layoutField(f, bad.first, PluginFieldType::kCHAR, bad.second);
        fz.createRefused("weight_layout '" + bad.first + "' of length " + std::to_string(bad.second), f.collection());
    }
    {
        Fields f;
        contractFields(f);
        layoutField(f, contract::kWeightLayoutOHWI, PluginFieldType::kINT32, 1);
        fz.createRefused("weight_layout as an int32 field", f.collection());
        Fields twice;
        contractFields(twice);
        layoutField(twice, contract::kWeightLayoutOHWI, PluginFieldType::kCHAR, 5);
        layoutField(twice, contract::kWeightLayoutOIHW, PluginFieldType::kCHAR, 5);
        fz.createRefused("weight_layout given twice", twice.collection());
        Fields null;
        contractFields(null);
        layoutField(null, contract::kWeightLayoutOHWI, PluginFieldType::kCHAR, 5);
        null.fields.back().data = nullptr;
        fz.createRefused("weight_layout with null data", null.collection());
    }
    {
        // Engines serialised by earlier builds carry a workspace_bytes field: accepted, not used.
        Fields f;
        contractFields(f);
        int64_t bytes = 4096;
        f.fields.emplace_back("workspace_bytes", &bytes, PluginFieldType::kINT64, 1);
        ++fz.cases;
        IPluginV3* plugin = fz.creator.createPlugin("fuzz", f.collection(), TensorRTPhase::kRUNTIME);
        check(plugin != nullptr, "createPlugin(kRUNTIME) of an older engine's fields (workspace_bytes) succeeds");
        delete plugin;
    }
}

void fuzzCalls(Fuzzer& fz)
{
    Fields base;
    contractFields(base); // DCNv2 with bias: 5 inputs X, W, offset, B, mask
    PluginParts p = partsOf(fz.creator.createPlugin("fuzz", base.collection(), TensorRTPhase::kBUILD));
    if (!check(p.plugin != nullptr, "a valid plugin for the call fuzzing"))
    {
        return;
    }
    int32_t const nbInputs = 5;
    std::vector<std::vector<int64_t>> const shapes{{1, 4, 8, 8}, {6, 4, 3, 3}, {1, 18, 8, 8}, {6}, {1, 9, 8, 8}};

    // getOutputShapes / getOutputDataTypes
    ExprBuilder builder;
    std::vector<DimsExprs> exprs(nbInputs + 2);
    for (size_t i = 0; i < exprs.size(); ++i)
    {
        auto const& shape = shapes[i % shapes.size()];
        exprs[i].nbDims = static_cast<int32_t>(shape.size());
        for (size_t j = 0; j < shape.size(); ++j)
        {
            exprs[i].d[j] = builder.value(shape[j]);
        }
    }
    DimsExprs out{};
    for (int32_t n : {0, 2, 4, 6, -1})
    {
        fz.expectRefused("getOutputShapes with " + std::to_string(n) + " inputs",
            [&] { return p.build->getOutputShapes(exprs.data(), n, nullptr, 0, &out, 1, builder) == -1; });
    }
    fz.expectRefused("getOutputShapes with null inputs",
        [&] { return p.build->getOutputShapes(nullptr, nbInputs, nullptr, 0, &out, 1, builder) == -1; });
    fz.expectRefused("getOutputShapes with null outputs",
        [&] { return p.build->getOutputShapes(exprs.data(), nbInputs, nullptr, 0, nullptr, 1, builder) == -1; });
    for (int32_t n : {0, 2})
    {
        fz.expectRefused("getOutputShapes with " + std::to_string(n) + " outputs",
            [&] { return p.build->getOutputShapes(exprs.data(), nbInputs, nullptr, 0, &out, n, builder) == -1; });
    }
    for (int32_t rank : {3, 0, -1, 9})
    {
        auto bad = exprs;
        bad[0].nbDims = rank;
        fz.expectRefused("getOutputShapes with an input of rank " + std::to_string(rank),
            [&] { return p.build->getOutputShapes(bad.data(), nbInputs, nullptr, 0, &out, 1, builder) == -1; });
    }
    {
        auto bad = exprs;
        bad[0].d[2] = nullptr;
        fz.expectRefused("getOutputShapes with a null dimension expression",
            [&] { return p.build->getOutputShapes(bad.data(), nbInputs, nullptr, 0, &out, 1, builder) == -1; });
    }
    std::vector<DataType> types(8, DataType::kFLOAT);
    DataType outType{};
    fz.expectRefused("getOutputDataTypes with null types",
        [&] { return p.build->getOutputDataTypes(nullptr, 1, types.data(), nbInputs) == -1; });
    fz.expectRefused("getOutputDataTypes with 2 inputs", [&] { return p.build->getOutputDataTypes(&outType, 1, types.data(), 2) == -1; });

    // supportsFormatCombination
    std::vector<DynamicPluginTensorDesc> io(nbInputs + 1);
    for (auto& d : io)
    {
        d.desc.type = DataType::kFLOAT;
        d.desc.format = TensorFormat::kLINEAR;
    }
    for (int32_t pos : {-1, nbInputs + 1, 1000, std::numeric_limits<int32_t>::min()})
    {
        fz.expectRefused("supportsFormatCombination at pos " + std::to_string(pos),
            [&] { return !p.build->supportsFormatCombination(pos, io.data(), nbInputs, 1); });
    }
    fz.expectRefused("supportsFormatCombination with null descs",
        [&] { return !p.build->supportsFormatCombination(0, nullptr, nbInputs, 1); });
    fz.expectRefused("supportsFormatCombination with -1 inputs",
        [&] { return !p.build->supportsFormatCombination(0, io.data(), -1, 1); });

    // configurePlugin / getWorkspaceSize / onShapeChange
    std::vector<DynamicPluginTensorDesc> dyn(nbInputs + 2);
    std::vector<PluginTensorDesc> fixed(nbInputs + 2);
    for (size_t i = 0; i < dyn.size(); ++i)
    {
        Dims const d = toDims(shapes[i % shapes.size()]);
        dyn[i].desc.dims = dyn[i].min = dyn[i].opt = dyn[i].max = d;
        dyn[i].desc.type = DataType::kFLOAT;
        dyn[i].desc.format = TensorFormat::kLINEAR;
        fixed[i] = dyn[i].desc;
    }
    DynamicPluginTensorDesc dynOut{};
    dynOut.desc.dims = dynOut.min = dynOut.opt = dynOut.max = toDims({1, 6, 8, 8});
    dynOut.desc.type = DataType::kFLOAT;
    PluginTensorDesc fixedOut = dynOut.desc;
    check(p.build->configurePlugin(dyn.data(), nbInputs, &dynOut, 1) == 0, "configurePlugin with valid shapes (fuzz base)");
    check(p.runtime->onShapeChange(fixed.data(), nbInputs, &fixedOut, 1) == 0, "onShapeChange with valid shapes (fuzz base)");
    for (int32_t n : {0, 3, 4, 6, 7, -1})
    {
        fz.expectRefused("configurePlugin with " + std::to_string(n) + " inputs",
            [&] { return p.build->configurePlugin(dyn.data(), n, &dynOut, 1) == -1; });
        fz.expectRefused("onShapeChange with " + std::to_string(n) + " inputs",
            [&] { return p.runtime->onShapeChange(fixed.data(), n, &fixedOut, 1) == -1; });
    }
    fz.expectRefused("configurePlugin with null inputs", [&] { return p.build->configurePlugin(nullptr, nbInputs, &dynOut, 1) == -1; });
    fz.expectRefused("configurePlugin with null outputs", [&] { return p.build->configurePlugin(dyn.data(), nbInputs, nullptr, 1) == -1; });
    fz.expectRefused("configurePlugin with 2 outputs", [&] { return p.build->configurePlugin(dyn.data(), nbInputs, &dynOut, 2) == -1; });
    fz.expectRefused("onShapeChange with null inputs", [&] { return p.runtime->onShapeChange(nullptr, nbInputs, &fixedOut, 1) == -1; });
    for (int32_t rank : {3, -1, 9, std::numeric_limits<int32_t>::max()})
    {
        auto badDyn = dyn;
        auto badFixed = fixed;
        badDyn[2].desc.dims.nbDims = rank;
        badFixed[2].dims.nbDims = rank;
        fz.expectRefused("configurePlugin with an offset of rank " + std::to_string(rank),
            [&] { return p.build->configurePlugin(badDyn.data(), nbInputs, &dynOut, 1) == -1; });
        fz.expectRefused("onShapeChange with an offset of rank " + std::to_string(rank),
            [&] { return p.runtime->onShapeChange(badFixed.data(), nbInputs, &fixedOut, 1) == -1; });
    }
    {
        auto badDyn = dyn;
        badDyn[0].desc.dims.d[1] = 5; // channels disagree with the weight
        fz.expectRefused("configurePlugin with mismatched channels",
            [&] { return p.build->configurePlugin(badDyn.data(), nbInputs, &dynOut, 1) == -1; });
        badDyn = dyn;
        badDyn[3].desc.type = DataType::kINT8;
        fz.expectRefused("configurePlugin with an int8 bias",
            [&] { return p.build->configurePlugin(badDyn.data(), nbInputs, &dynOut, 1) == -1; });
    }
    fz.expectRefused("getWorkspaceSize with null inputs",
        [&] { return p.build->getWorkspaceSize(nullptr, nbInputs, &dynOut, 1) == 0; });

    // enqueue (host kernels: host pointers)
    std::vector<std::vector<float>> buffers;
    std::vector<void const*> inputs;
    for (auto const& shape : shapes)
    {
        size_t n = 1;
        for (int64_t d : shape)
        {
            n *= static_cast<size_t>(d);
        }
        buffers.emplace_back(n, 0.5F);
    }
    for (auto const& b : buffers)
    {
        inputs.push_back(b.data());
    }
    std::vector<float> y(6 * 8 * 8);
    void* outputs[] = {y.data()};
    check(p.runtime->enqueue(fixed.data(), &fixedOut, inputs.data(), outputs, nullptr, nullptr) == 0, "enqueue (fuzz base)");
    fz.expectRefused("enqueue with null descs", [&] { return p.runtime->enqueue(nullptr, &fixedOut, inputs.data(), outputs, nullptr, nullptr) == -1; });
    fz.expectRefused("enqueue with null inputs", [&] { return p.runtime->enqueue(fixed.data(), &fixedOut, nullptr, outputs, nullptr, nullptr) == -1; });
    fz.expectRefused("enqueue with null outputs", [&] { return p.runtime->enqueue(fixed.data(), &fixedOut, inputs.data(), nullptr, nullptr, nullptr) == -1; });
    {
        auto badInputs = inputs;
        badInputs[2] = nullptr;
        fz.expectRefused("enqueue with a null offset tensor",
            [&] { return p.runtime->enqueue(fixed.data(), &fixedOut, badInputs.data(), outputs, nullptr, nullptr) == -1; });
    }
    {
        auto badFixed = fixed;
        badFixed[0].dims.d[1] = -3;
        fz.expectRefused("enqueue with negative channels",
            [&] { return p.runtime->enqueue(badFixed.data(), &fixedOut, inputs.data(), outputs, nullptr, nullptr) == -1; });
    }
    delete p.plugin;
}

int runFuzz(std::string const& nvinfer, std::string const& pluginDir)
{
    TensorRTLibrary trt = openTensorRT(nvinfer, RTLD_LOCAL);
    if (!check(trt.registry != nullptr && trt.log != nullptr, "the stand-in's registry and log answer")
        || !check(trt.registry->loadLibrary((pluginDir + "/libdeformrt_plugin.so").c_str()) != nullptr,
            "loadLibrary(libdeformrt_plugin.so)"))
    {
        return gFailures;
    }
    IPluginCreatorV3One* creator = deformrtCreator(trt);
    if (!check(creator != nullptr, "the creator is registered"))
    {
        return gFailures;
    }
    Fuzzer fz{trt, *creator};
    fuzzFields(fz);
    fuzzCalls(fz);
    checkNoContractFailures(trt);
    std::printf("fuzz cases: %d\n", fz.cases);
    return gFailures;
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::string> const args(argv + 1, argv + argc);
    int failures = -1;
    if (args.size() == 4 && args[0] == "load")
    {
        failures = runLoad(args[1], args[2], args[3]);
    }
    else if (args.size() >= 4 && args[0] == "nodes")
    {
        failures = runNodes(args[1], args[2], std::vector<std::string>(args.begin() + 3, args.end()));
    }
    else if (args.size() == 3 && args[0] == "fuzz")
    {
        failures = runFuzz(args[1], args[2]);
    }
    else
    {
        std::fprintf(stderr,
            "usage: contractHarness load SCENARIO NVINFER PLUGIN_DIR | nodes NVINFER PLUGIN_DIR SPEC... | fuzz NVINFER "
            "PLUGIN_DIR\n");
        return 2;
    }
    std::printf("%d checks, %d failed\n", gChecks, failures);
    return failures > 100 ? 100 : failures;
}
