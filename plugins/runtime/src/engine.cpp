// deformrt::Engine: a deserialized TensorRT engine and its execution context, driven by tensor names
// (TensorRT 10/11 API: getNbIOTensors, setInputShape, setTensorAddress, enqueueV3).
#include "deformrt/runtime.h"

#include "cudaStatus.h"
#include "deviceBuffer.h"
#include "fileIo.h"
#include "pluginLoader.h"
#include "tensorrtLogger.h"
#include "tensorrtTypes.h"

#include <NvInferRuntime.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <optional>

namespace deformrt
{

using detail::cudaStatus;

Expected<Platform> currentPlatform(int device)
{
    if (device < 0)
    {
        if (Status status = cudaStatus(cudaGetDevice(&device), "cudaGetDevice"); !status)
        {
            return status.withContext("no usable CUDA GPU");
        }
    }
    cudaDeviceProp properties{};
    if (Status status = cudaStatus(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties"); !status)
    {
        return status.withContext("no usable CUDA GPU");
    }
    // (MAJOR * 100 + MINOR) * 100 + PATCH, see NvInferRuntimeBase.h.
    int32_t const version = getInferLibVersion();
    Platform platform;
    platform.tensorrtVersion = std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "."
        + std::to_string(version % 100);
    platform.computeCapability = std::to_string(properties.major) + "." + std::to_string(properties.minor);
    platform.gpuName = properties.name;
    return platform;
}

namespace detail
{
//! Device memory for an output whose shape TensorRT only knows while it runs (a data-dependent
//! shape, e.g. a NonMaxSuppression count): TensorRT asks for the bytes, then reports the shape.
//! deformrt's detector files pad their outputs to a fixed size, so their engines never need it.
class GrowingOutput : public nvinfer1::IOutputAllocator
{
public:
    void* reallocateOutputAsync(char const* /*tensorName*/, void* /*currentMemory*/, uint64_t size,
        uint64_t /*alignment*/, cudaStream_t /*stream*/) noexcept override
    {
        // cudaMalloc's alignment (256 bytes) covers what TensorRT asks for.
        if (size > mBuffer.bytes() || mBuffer.data() == nullptr)
        {
            mBuffer = DeviceBuffer(); // free the old block first
            auto grown = DeviceBuffer::allocate(static_cast<std::size_t>(size));
            if (!grown)
            {
                mError = grown.status().message();
                return nullptr;
            }
            mBuffer = std::move(*grown);
        }
        return mBuffer.data();
    }

    void notifyShape(char const* /*tensorName*/, nvinfer1::Dims const& dims) noexcept override
    {
        mDims = dims;
        mShapeKnown = true;
    }

    void* data() const noexcept
    {
        return mBuffer.data();
    }
    //! The shape TensorRT reported for the last run; empty optional before one.
    std::optional<std::vector<int64_t>> shape() const
    {
        return mShapeKnown ? std::optional<std::vector<int64_t>>(fromDims(mDims)) : std::nullopt;
    }
    std::string const& error() const noexcept
    {
        return mError;
    }

private:
    DeviceBuffer mBuffer;
    nvinfer1::Dims mDims{};
    bool mShapeKnown{false};
    std::string mError;
};
} // namespace detail

struct Engine::Impl
{
    explicit Impl(Logger* target)
        : logger(target)
    {
    }

    // Members are destroyed in reverse order: the context before the engine, the engine before the
    // runtime, and the logger last, because TensorRT requires it to outlive everything made with it.
    detail::TensorRTLogger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    // Before the context: it is destroyed first and may still refer to the allocators.
    std::map<std::string, std::unique_ptr<detail::GrowingOutput>> growingOutputs;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    std::string path;
    int device{0};
    Platform platform;
    std::vector<TensorInfo> tensors;

    TensorInfo const* find(std::string const& name) const
    {
        auto it = std::find_if(tensors.begin(), tensors.end(), [&](TensorInfo const& t) { return t.name == name; });
        return it == tensors.end() ? nullptr : &*it;
    }

    std::string names(TensorIO io) const
    {
        std::string list;
        for (TensorInfo const& tensor : tensors)
        {
            if (tensor.io == io)
            {
                list += (list.empty() ? "" : ", ") + tensor.name;
            }
        }
        return list;
    }

    Status onOwnDevice() const
    {
        int current = -1;
        if (Status status = cudaStatus(cudaGetDevice(&current), "cudaGetDevice"); !status)
        {
            return status;
        }
        if (current != device)
        {
            return Status::error(path + " was loaded on CUDA device " + std::to_string(device)
                + ", the calling thread's current device is " + std::to_string(current) + ": call cudaSetDevice("
                + std::to_string(device) + ") first");
        }
        return Status();
    }

    Status inspectTensors()
    {
        for (int32_t i = 0; i < engine->getNbIOTensors(); ++i)
        {
            char const* name = engine->getIOTensorName(i);
            auto dtype = detail::fromTensorRT(engine->getTensorDataType(name));
            if (!dtype)
            {
                return Status::error(path + ": tensor " + name + " has an element type the runtime cannot hold");
            }
            if (engine->getTensorLocation(name) != nvinfer1::TensorLocation::kDEVICE)
            {
                return Status::error(path + ": tensor " + name + " lives in host memory (a shape tensor); the runtime "
                    "binds device tensors only");
            }
            bool const input = engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
            tensors.push_back(TensorInfo{name, input ? TensorIO::kInput : TensorIO::kOutput, *dtype,
                detail::fromDims(engine->getTensorShape(name))});
        }
        return Status();
    }

    //! An output whose shape stays unknown once every input shape is set: TensorRT sizes it while running.
    bool dataDependent(std::string const& name) const
    {
        if (!context->allInputDimensionsSpecified())
        {
            return false;
        }
        nvinfer1::Dims const dims = context->getTensorShape(name.c_str());
        return dims.nbDims < 0 || std::any_of(dims.d, dims.d + dims.nbDims, [](int64_t d) { return d < 0; });
    }

    //! Give every input and output its device address (an output of data-dependent shape may have none:
    //! the runtime's own allocator serves it, see infer()); every tensor needs one, and no other name is accepted.
    Status bind(std::map<std::string, void*> const& buffers)
    {
        for (auto const& [name, address] : buffers)
        {
            if (find(name) == nullptr)
            {
                return Status::error("the engine has no tensor " + name + " (inputs: " + names(TensorIO::kInput)
                    + "; outputs: " + names(TensorIO::kOutput) + ")");
            }
        }
        for (TensorInfo const& tensor : tensors)
        {
            auto it = buffers.find(tensor.name);
            if ((it == buffers.end() || it->second == nullptr) && tensor.io == TensorIO::kOutput
                && dataDependent(tensor.name))
            {
                auto& allocator = growingOutputs[tensor.name];
                if (!allocator)
                {
                    allocator = std::make_unique<detail::GrowingOutput>();
                }
                if (!context->setOutputAllocator(tensor.name.c_str(), allocator.get()))
                {
                    return detail::withTensorRTError(logger, "TensorRT refused an output allocator for " + tensor.name);
                }
                continue;
            }
            if (it == buffers.end() || it->second == nullptr)
            {
                return Status::error("no device buffer for " + std::string(tensor.io == TensorIO::kInput ? "input " : "output ")
                    + tensor.name);
            }
            if (!context->setTensorAddress(tensor.name.c_str(), it->second))
            {
                return detail::withTensorRTError(logger, "TensorRT refused the address of " + tensor.name);
            }
        }
        if (!context->allInputDimensionsSpecified())
        {
            return Status::error("set the shape of every dynamic input (setInputShape) before running; inputs: "
                + names(TensorIO::kInput));
        }
        return Status();
    }
};

namespace
{
//! Device buffers for every tensor, with the host inputs copied in; owned for one inference or benchmark.
struct DeviceBindings
{
    std::vector<detail::DeviceBuffer> buffers;
    std::map<std::string, void*> addresses;
};

//! `deferred(name)`: an output of data-dependent shape, left to TensorRT's output allocator (no buffer here).
Expected<DeviceBindings> upload(Engine& engine, std::map<std::string, HostTensor> const& inputs, cudaStream_t stream,
    std::function<bool(std::string const&)> const& deferred)
{
    auto const& tensors = engine.tensors();
    for (auto const& input : inputs)
    {
        bool const known = std::any_of(tensors.begin(), tensors.end(),
            [&](TensorInfo const& t) { return t.name == input.first && t.io == TensorIO::kInput; });
        if (!known)
        {
            return Status::error("the engine has no input " + input.first);
        }
    }
    for (TensorInfo const& info : engine.tensors())
    {
        if (info.io != TensorIO::kInput)
        {
            continue;
        }
        auto it = inputs.find(info.name);
        if (it == inputs.end())
        {
            return Status::error("no data for input " + info.name);
        }
        if (it->second.dtype != info.dtype)
        {
            return Status::error("input " + info.name + " is " + dtypeName(it->second.dtype) + ", the engine expects "
                + dtypeName(info.dtype));
        }
        if (Status status = engine.setInputShape(info.name, it->second.shape); !status)
        {
            return status;
        }
    }
    DeviceBindings bindings;
    for (TensorInfo const& info : engine.tensors())
    {
        if (info.io == TensorIO::kOutput && deferred(info.name))
        {
            continue;
        }
        auto shape = engine.tensorShape(info.name);
        if (!shape)
        {
            return shape.status();
        }
        auto count = elementCount(*shape);
        if (!count)
        {
            return count.status().withContext(info.name);
        }
        auto buffer = detail::DeviceBuffer::allocate(static_cast<std::size_t>(*count) * dtypeSize(info.dtype));
        if (!buffer)
        {
            return buffer.status().withContext("allocating " + info.name);
        }
        if (info.io == TensorIO::kInput)
        {
            HostTensor const& host = inputs.at(info.name);
            Status status = cudaStatus(
                cudaMemcpyAsync(buffer->data(), host.data.data(), host.data.size(), cudaMemcpyHostToDevice, stream),
                "copying an input to the GPU");
            if (!status)
            {
                return status;
            }
        }
        bindings.addresses[info.name] = buffer->data();
        bindings.buffers.push_back(std::move(*buffer));
    }
    return Expected<DeviceBindings>(std::move(bindings));
}
} // namespace

Expected<Engine> Engine::load(std::string const& enginePath, EngineOptions const& options)
{
    auto impl = std::make_unique<Impl>(options.logger);
    impl->path = enginePath;
    // The sidecar first: a missing or malformed one is an error about files, whatever the GPU.
    std::optional<EngineSidecar> sidecar;
    if (options.checkSidecar)
    {
        auto read = readSidecar(enginePath);
        if (!read)
        {
            return read.status();
        }
        sidecar = std::move(*read);
    }
    if (options.device >= 0)
    {
        if (Status status = cudaStatus(cudaSetDevice(options.device), "cudaSetDevice"); !status)
        {
            return status.withContext("no usable CUDA GPU");
        }
    }
    if (Status status = cudaStatus(cudaGetDevice(&impl->device), "cudaGetDevice"); !status)
    {
        return status.withContext("no usable CUDA GPU");
    }
    auto platform = currentPlatform(impl->device);
    if (!platform)
    {
        return platform.status();
    }
    impl->platform = *platform;
    if (sidecar)
    {
        if (Status status = checkSidecar(*sidecar, impl->platform, enginePath); !status)
        {
            return status;
        }
        if (!sameGpu(*sidecar, impl->platform))
        {
            impl->logger.forward(Severity::kWarning, enginePath + " was built on " + sidecar->gpuName + ", running on "
                    + impl->platform.gpuName + " (same compute capability): rebuild it here for best performance");
        }
    }

    impl->runtime.reset(nvinfer1::createInferRuntime(impl->logger));
    if (!impl->runtime)
    {
        return detail::withTensorRTError(impl->logger, "TensorRT could not create a runtime");
    }
    // TensorRT's own plugins (the standard-DeformConv flavour's); their messages reach this Engine's logger
    // while it loads.
    detail::PluginMessagesTo const pluginMessages(impl->logger);
    detail::registerTensorRTPlugins(impl->logger);
    if (!options.pluginLibrary.empty())
    {
        // The process-wide registry, not the runtime's local one: every Engine's runtime finds the creator
        // there (parent search), so the library is loaded once per process however many Engines exist.
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr)
        {
            return detail::withTensorRTError(impl->logger, "TensorRT has no plugin registry");
        }
        Status status = detail::ensurePluginLoaded(*registry, options.pluginLibrary, impl->logger);
        if (!status)
        {
            return status;
        }
    }

    auto blob = detail::readFile(enginePath);
    if (!blob)
    {
        return blob.status();
    }
    impl->engine.reset(impl->runtime->deserializeCudaEngine(blob->data(), blob->size()));
    if (!impl->engine)
    {
        return detail::withTensorRTError(impl->logger, enginePath + " could not be deserialized"
                + std::string(options.pluginLibrary.empty() ? "; an engine with deformrt plugin layers needs the plugin "
                                                              "library (EngineOptions::pluginLibrary)"
                                                            : ""));
    }
    impl->context.reset(impl->engine->createExecutionContext());
    if (!impl->context)
    {
        return detail::withTensorRTError(impl->logger, enginePath + ": TensorRT could not create an execution context");
    }
    if (Status status = impl->inspectTensors(); !status)
    {
        return status;
    }
    return Engine(std::move(impl));
}

Engine::Engine(std::unique_ptr<Impl> impl)
    : mImpl(std::move(impl))
{
}

Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

std::vector<TensorInfo> const& Engine::tensors() const noexcept
{
    return mImpl->tensors;
}

Platform const& Engine::platform() const noexcept
{
    return mImpl->platform;
}

Status Engine::setInputShape(std::string const& name, std::vector<int64_t> const& shape)
{
    TensorInfo const* info = mImpl->find(name);
    if (info == nullptr || info->io != TensorIO::kInput)
    {
        return Status::error("the engine has no input " + name + " (inputs: " + mImpl->names(TensorIO::kInput) + ")");
    }
    if (shape.size() != info->shape.size())
    {
        return Status::error("input " + name + " has rank " + std::to_string(info->shape.size()) + ", not "
            + std::to_string(shape.size()) + " (" + formatShape(shape) + ")");
    }
    auto dims = detail::toDims(shape);
    if (!dims)
    {
        return dims.status();
    }
    if (!mImpl->context->setInputShape(name.c_str(), *dims))
    {
        return detail::withTensorRTError(mImpl->logger,
            "input " + name + " cannot take shape " + formatShape(shape) + " (outside the engine's profile?)");
    }
    return Status();
}

Expected<std::vector<int64_t>> Engine::tensorShape(std::string const& name) const
{
    if (mImpl->find(name) == nullptr)
    {
        return Status::error("the engine has no tensor " + name);
    }
    std::vector<int64_t> shape = detail::fromDims(mImpl->context->getTensorShape(name.c_str()));
    if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; }))
    {
        if (mImpl->context->allInputDimensionsSpecified())
        {
            // deformrt's detector files pad their outputs to a fixed size D (num_detections says how many
            // rows count), so only a file from elsewhere gets here.
            return Status::error("output " + name + " has a data-dependent shape (" + formatShape(shape)
                + "), known only once the engine has run: infer() allocates it; with enqueue() leave it out of "
                  "your buffers (the runtime allocates it) or export the model with fixed-size outputs");
        }
        return Status::error("the shape of " + name + " is not known yet (" + formatShape(shape)
            + "): set the shape of every dynamic input first");
    }
    return shape;
}

Status Engine::enqueue(std::map<std::string, void*> const& deviceBuffers, cudaStream_t stream)
{
    if (Status status = mImpl->onOwnDevice(); !status)
    {
        return status;
    }
    if (Status status = mImpl->bind(deviceBuffers); !status)
    {
        return status;
    }
    if (!mImpl->context->enqueueV3(stream))
    {
        return detail::withTensorRTError(mImpl->logger, mImpl->path + ": enqueueV3 failed");
    }
    return Status();
}

Expected<std::map<std::string, HostTensor>> Engine::infer(
    std::map<std::string, HostTensor> const& inputs, cudaStream_t stream)
{
    auto deferred = [this](std::string const& name) { return mImpl->dataDependent(name); };
    auto bindings = upload(*this, inputs, stream, deferred);
    if (!bindings)
    {
        cudaStreamSynchronize(stream); // copies already queued read host memory the caller may free next
        return bindings.status();
    }
    std::map<std::string, HostTensor> outputs;
    // Every exit waits for the stream: queued copies must not outlive the buffers they read or write.
    auto finish = [stream](Status status) {
        Status const synchronized = cudaStatus(cudaStreamSynchronize(stream), "running the engine");
        return status ? synchronized : status;
    };
    if (Status status = enqueue(bindings->addresses, stream); !status)
    {
        return finish(status);
    }
    for (TensorInfo const& info : mImpl->tensors)
    {
        if (info.io != TensorIO::kOutput)
        {
            continue;
        }
        // An output of data-dependent shape: TensorRT has reported its shape by the time enqueueV3 returned.
        std::optional<std::vector<int64_t>> shape;
        void const* source = nullptr;
        auto growing = bindings->addresses.count(info.name) == 0 ? mImpl->growingOutputs.find(info.name)
                                                                 : mImpl->growingOutputs.end();
        if (growing != mImpl->growingOutputs.end())
        {
            if (!growing->second->error().empty())
            {
                return finish(Status::error("allocating output " + info.name + ": " + growing->second->error()));
            }
            shape = growing->second->shape();
            source = growing->second->data();
            if (!shape || source == nullptr)
            {
                return finish(Status::error("TensorRT reported no shape for output " + info.name));
            }
        }
        else
        {
            auto known = tensorShape(info.name);
            if (!known)
            {
                return finish(known.status());
            }
            shape = std::move(*known);
            source = bindings->addresses.at(info.name);
        }
        auto host = HostTensor::allocate(info.dtype, *shape);
        if (!host)
        {
            return finish(host.status());
        }
        // The vector's heap block does not move with the HostTensor, so the queued copy's target stays valid.
        auto& target = outputs.emplace(info.name, std::move(*host)).first->second;
        Status status = target.data.empty() ? Status()
                                            : cudaStatus(cudaMemcpyAsync(target.data.data(), source, target.data.size(),
                                                             cudaMemcpyDeviceToHost, stream),
                                                "copying an output from the GPU");
        if (!status)
        {
            return finish(status);
        }
    }
    if (Status status = finish(Status()); !status)
    {
        return status;
    }
    return Expected<std::map<std::string, HostTensor>>(std::move(outputs));
}

Expected<LatencyStats> Engine::benchmark(
    std::map<std::string, void*> const& deviceBuffers, cudaStream_t stream, int warmup, int iterations)
{
    if (iterations < 1 || warmup < 0)
    {
        return Status::error("benchmark needs iterations >= 1 and warmup >= 0");
    }
    // Events are created with timing enabled and released on every path.
    struct Event
    {
        cudaEvent_t event{nullptr};
        ~Event()
        {
            if (event != nullptr)
            {
                cudaEventDestroy(event);
            }
        }
    } start, stop;
    if (Status status = cudaStatus(cudaEventCreate(&start.event), "cudaEventCreate"); !status)
    {
        return status;
    }
    if (Status status = cudaStatus(cudaEventCreate(&stop.event), "cudaEventCreate"); !status)
    {
        return status;
    }
    for (int i = 0; i < warmup; ++i)
    {
        if (Status status = enqueue(deviceBuffers, stream); !status)
        {
            return status;
        }
    }
    std::vector<double> milliseconds;
    for (int i = 0; i < iterations; ++i)
    {
        // One inference at a time, each waited for: this measures latency, not pipelined throughput.
        Status status = cudaStatus(cudaEventRecord(start.event, stream), "cudaEventRecord");
        if (status)
        {
            status = enqueue(deviceBuffers, stream);
        }
        if (status)
        {
            status = cudaStatus(cudaEventRecord(stop.event, stream), "cudaEventRecord");
        }
        if (status)
        {
            status = cudaStatus(cudaEventSynchronize(stop.event), "running the engine");
        }
        float elapsed = 0.0F;
        if (status)
        {
            status = cudaStatus(cudaEventElapsedTime(&elapsed, start.event, stop.event), "cudaEventElapsedTime");
        }
        if (!status)
        {
            return status;
        }
        milliseconds.push_back(elapsed);
    }
    return summarizeLatencies(std::move(milliseconds));
}

Expected<LatencyStats> Engine::benchmark(
    std::map<std::string, HostTensor> const& inputs, cudaStream_t stream, int warmup, int iterations)
{
    auto bindings = upload(*this, inputs, stream, [this](std::string const& name) { return mImpl->dataDependent(name); });
    if (!bindings)
    {
        return bindings.status();
    }
    auto stats = benchmark(bindings->addresses, stream, warmup, iterations);
    // Queued work may still read the buffers when a call failed midway: wait before freeing them.
    cudaStreamSynchronize(stream);
    return stats;
}

} // namespace deformrt
