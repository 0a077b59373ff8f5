// deformrt runtime: run a TensorRT engine built from a deformrt model inside your own application.
//
//   deformrt::EngineOptions options;
//   options.pluginLibrary = "libdeformrt_plugin.so";   // the engine's DeformConv2d layers need it
//   auto engine = deformrt::Engine::load("model-fp16.plan", options);
//   if (!engine) { report(engine.status().message()); return; }
//   engine->setInputShape("images", {1, 3, 800, 1344});
//   engine->enqueue({{"images", dImages}, {"P2", dP2}, ...}, stream);   // your device buffers, your stream
//
// Errors are values (Status / Expected), the library never prints or throws, and messages from
// TensorRT go to the Logger you supply. An Engine owns its TensorRT runtime, engine and execution
// context (RAII, move-only); one Engine runs one inference at a time: use one per thread or stream.
// The plugin library stays loaded for the life of the process once loaded, because TensorRT keeps
// references to its creators that engines of other Engine objects may still use.
#pragma once

#include "deformrt/hostTensor.h"
#include "deformrt/latency.h"
#include "deformrt/sidecar.h"
#include "deformrt/status.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace deformrt
{

enum class Severity
{
    kError,
    kWarning,
    kInfo,
    kVerbose,
};

//! Receives TensorRT's and the runtime's messages. Called from any thread TensorRT uses: implementations
//! must be thread-safe.
class Logger
{
public:
    virtual ~Logger() = default;
    virtual void log(Severity severity, char const* message) noexcept = 0;
};

enum class TensorIO
{
    kInput,
    kOutput,
};

struct TensorInfo
{
    std::string name;
    TensorIO io{TensorIO::kInput};
    DType dtype{DType::kFloat32};
    std::vector<int64_t> shape; //!< as built: -1 for a dynamic dimension
};

struct EngineOptions
{
    //! Path of libdeformrt_plugin.so; empty when the engine has no plugin layers (the standard-DeformConv
    //! flavour) or the application has registered the plugin already.
    std::string pluginLibrary;
    //! Refuse an engine whose sidecar "<engine>.json" is missing or names another TensorRT release or
    //! compute capability. Turn off only for engines built elsewhere that you know match.
    bool checkSidecar{true};
    //! CUDA device to load and run on (load() makes it current on the calling thread); -1: the calling
    //! thread's current device. Later calls must come from a thread where that device is current.
    int device{-1};
    //! Not owned; must outlive the Engine. nullptr: messages are dropped (errors still come back as values).
    Logger* logger{nullptr};
};

//! The TensorRT library version and the GPU this process runs on.
Expected<Platform> currentPlatform(int device = -1);

class Engine
{
public:
    static Expected<Engine> load(std::string const& enginePath, EngineOptions const& options = {});

    Engine(Engine&&) noexcept;
    Engine& operator=(Engine&&) noexcept;
    Engine(Engine const&) = delete;
    Engine& operator=(Engine const&) = delete;
    ~Engine();

    //! Inputs and outputs in the engine's order.
    std::vector<TensorInfo> const& tensors() const noexcept;
    Platform const& platform() const noexcept;

    //! Set the shape of a dynamic input before enqueue (within the engine's optimization profile).
    Status setInputShape(std::string const& name, std::vector<int64_t> const& shape);

    //! The concrete shape of a tensor once every input shape is set: size your output buffers with it. An
    //! output of data-dependent shape (known only while the engine runs) is an error here; deformrt's
    //! detector files have none (their outputs are padded to a fixed size).
    Expected<std::vector<int64_t>> tensorShape(std::string const& name) const;

    //! Enqueue one inference on `stream` with device buffers for every input and output, by name.
    //! Returns once the work is queued; synchronize the stream before reading the outputs.
    Status enqueue(std::map<std::string, void*> const& deviceBuffers, cudaStream_t stream);

    //! Host convenience: copy `inputs` to the device, run, and return every output (synchronous on `stream`).
    //! Outputs of data-dependent shape are allocated through TensorRT's IOutputAllocator and returned at the
    //! shape TensorRT reports.
    Expected<std::map<std::string, HostTensor>> infer(
        std::map<std::string, HostTensor> const& inputs, cudaStream_t stream = nullptr);

    //! Time `iterations` inferences on the given buffers with CUDA events, after `warmup` untimed ones.
    Expected<LatencyStats> benchmark(
        std::map<std::string, void*> const& deviceBuffers, cudaStream_t stream, int warmup, int iterations);

    //! The same on buffers the runtime allocates and fills from `inputs` (as infer() does).
    Expected<LatencyStats> benchmark(
        std::map<std::string, HostTensor> const& inputs, cudaStream_t stream, int warmup, int iterations);

private:
    struct Impl;
    explicit Engine(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> mImpl;
};

} // namespace deformrt
