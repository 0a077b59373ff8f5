// Example: the deformrt runtime inside an application that owns its GPU memory and CUDA stream (a
// camera pipeline that already has the preprocessed image on the GPU, say).
//
//   deformrt-example ENGINE PLUGIN_LIBRARY IMAGES.npy
//
// IMAGES.npy stands in for the application's own preprocessing: a float32 N x 3 x H x W tensor,
// normalised with the model's mean/std and padded to its size divisibility (the bundle's
// reference/inputs/images.npy is one). Prints each output's shape and its mean.
#include "deformrt/npy.h"
#include "deformrt/runtime.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace
{
// The application's logger: here, warnings and errors to stderr.
class AppLogger : public deformrt::Logger
{
public:
    void log(deformrt::Severity severity, char const* message) noexcept override
    {
        if (severity <= deformrt::Severity::kWarning)
        {
            std::fprintf(stderr, "[deformrt] %s\n", message);
        }
    }
};

// The application's own device memory; the runtime only borrows the pointers.
struct CudaFree
{
    void operator()(void* pointer) const noexcept
    {
        cudaFree(pointer);
    }
};
using DevicePointer = std::unique_ptr<void, CudaFree>;

DevicePointer deviceAlloc(std::size_t bytes)
{
    void* pointer = nullptr;
    return DevicePointer(cudaMalloc(&pointer, bytes == 0 ? 1 : bytes) == cudaSuccess ? pointer : nullptr);
}

int fail(std::string const& message)
{
    std::fprintf(stderr, "error: %s\n", message.c_str());
    return 1;
}

std::size_t byteSize(deformrt::DType dtype, std::vector<int64_t> const& shape)
{
    auto count = deformrt::elementCount(shape);
    return count ? static_cast<std::size_t>(*count) * deformrt::dtypeSize(dtype) : 0;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 4)
    {
        std::fprintf(stderr, "usage: %s ENGINE PLUGIN_LIBRARY IMAGES.npy\n", argv[0]);
        return 2;
    }
    AppLogger logger;
    deformrt::EngineOptions options;
    options.pluginLibrary = argv[2];
    options.logger = &logger;
    auto engine = deformrt::Engine::load(argv[1], options);
    if (!engine)
    {
        return fail(engine.status().message());
    }
    auto images = deformrt::readNpy(argv[3]);
    if (!images)
    {
        return fail(images.status().message());
    }

    cudaStream_t stream = nullptr;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess)
    {
        return fail("cudaStreamCreate failed");
    }
    std::unique_ptr<CUstream_st, decltype(&cudaStreamDestroy)> streamOwner(stream, &cudaStreamDestroy);

    // 1. Input shapes first: they fix the output shapes of a dynamic-shape engine.
    std::string inputName;
    for (deformrt::TensorInfo const& tensor : engine->tensors())
    {
        if (tensor.io == deformrt::TensorIO::kInput)
        {
            inputName = tensor.name; // deformrt backbones have one input, "images"
        }
    }
    if (deformrt::Status status = engine->setInputShape(inputName, images->shape); !status)
    {
        return fail(status.message());
    }

    // 2. One device buffer per input and output, sized from the engine.
    std::map<std::string, DevicePointer> memory;
    std::map<std::string, void*> buffers;
    std::map<std::string, std::vector<int64_t>> shapes;
    for (deformrt::TensorInfo const& tensor : engine->tensors())
    {
        auto shape = engine->tensorShape(tensor.name);
        if (!shape)
        {
            return fail(shape.status().message());
        }
        DevicePointer pointer = deviceAlloc(byteSize(tensor.dtype, *shape));
        if (!pointer)
        {
            return fail("cudaMalloc failed for " + tensor.name);
        }
        shapes[tensor.name] = *shape;
        buffers[tensor.name] = pointer.get();
        memory[tensor.name] = std::move(pointer);
    }

    // 3. The application's data into its buffer, inference, results back: all on the application's stream.
    if (cudaMemcpyAsync(buffers[inputName], images->data.data(), images->data.size(), cudaMemcpyHostToDevice, stream)
        != cudaSuccess)
    {
        return fail("copying the input to the GPU failed");
    }
    if (deformrt::Status status = engine->enqueue(buffers, stream); !status)
    {
        return fail(status.message());
    }
    std::map<std::string, deformrt::HostTensor> outputs;
    for (deformrt::TensorInfo const& tensor : engine->tensors())
    {
        if (tensor.io != deformrt::TensorIO::kOutput)
        {
            continue;
        }
        auto host = deformrt::HostTensor::allocate(tensor.dtype, shapes[tensor.name]);
        if (!host)
        {
            return fail(host.status().message());
        }
        auto& target = outputs.emplace(tensor.name, std::move(*host)).first->second;
        if (cudaMemcpyAsync(target.data.data(), buffers[tensor.name], target.data.size(), cudaMemcpyDeviceToHost, stream)
            != cudaSuccess)
        {
            cudaStreamSynchronize(stream); // copies already queued write into `outputs`
            return fail("copying " + tensor.name + " from the GPU failed");
        }
    }
    if (cudaError_t error = cudaStreamSynchronize(stream); error != cudaSuccess)
    {
        return fail(std::string("inference failed: ") + cudaGetErrorString(error));
    }

    for (auto const& [name, tensor] : outputs)
    {
        std::vector<double> const values = deformrt::toDouble(tensor);
        double sum = 0.0;
        for (double value : values)
        {
            sum += value;
        }
        std::printf("%-6s %-20s mean %.6g\n", name.c_str(), deformrt::formatShape(tensor.shape).c_str(),
            values.empty() ? 0.0 : sum / static_cast<double>(values.size()));
    }
    return 0;
}
