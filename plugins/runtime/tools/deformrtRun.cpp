// deformrt-run: run an engine on .npy inputs, write .npy outputs, check them against references and
// time it; the self-check of the deploy bundle's build.sh (no Python needed on the device).
//
//   deformrt-run ENGINE [--plugin LIB] --inputs DIR [--outputs DIR] [--check REF_DIR --tolerance X]
//                [--warmup N] [--iterations N] [--device N] [--no-sidecar-check] [--verbose]
//   deformrt-run --platform [--device N]
//
// Tensors are files named after them: DIR/images.npy, REF_DIR/P2.npy, ... Results go to stdout; an
// error is one line on stderr. Exit status 0: ran (and passed the check); 1: an error or FAIL.
#include "deformrt/compare.h"
#include "deformrt/npy.h"
#include "deformrt/runtime.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace
{
struct Arguments
{
    std::string engine;
    std::string plugin;
    std::string inputs;
    std::string outputs;
    std::string check;
    double tolerance{-1.0};
    int warmup{10};
    int iterations{100};
    int device{-1};
    bool sidecarCheck{true};
    bool verbose{false};
    bool platform{false};
};

constexpr char const* kUsage
    = "usage: deformrt-run ENGINE [--plugin LIB] --inputs DIR [--outputs DIR] [--check REF_DIR --tolerance X]\n"
      "                    [--warmup N] [--iterations N] [--device N] [--no-sidecar-check] [--verbose]\n"
      "       deformrt-run --platform [--device N]\n";

class StderrLogger : public deformrt::Logger
{
public:
    explicit StderrLogger(bool verbose)
        : mVerbose(verbose)
    {
    }

    void log(deformrt::Severity severity, char const* message) noexcept override
    {
        static constexpr char const* kNames[] = {"error", "warning", "info", "verbose"};
        auto const level = static_cast<int>(severity);
        if (severity <= deformrt::Severity::kWarning || (mVerbose && severity == deformrt::Severity::kInfo))
        {
            std::fprintf(stderr, "[TensorRT %s] %s\n", kNames[level], message);
        }
    }

private:
    bool mVerbose;
};

int fail(std::string const& message)
{
    std::fprintf(stderr, "error: %s\n", message.c_str());
    return 1;
}

bool parseInt(char const* text, int& out)
{
    char* end = nullptr;
    long const value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 0 || value > 1000000)
    {
        return false;
    }
    out = static_cast<int>(value);
    return true;
}

//! Empty on success, else the one-line error.
std::string parseArguments(int argc, char** argv, Arguments& args)
{
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        auto value = [&]() -> char const* { return i + 1 < argc ? argv[++i] : nullptr; };
        if (arg == "--platform")
            args.platform = true;
        else if (arg == "--no-sidecar-check")
            args.sidecarCheck = false;
        else if (arg == "--verbose")
            args.verbose = true;
        else if (arg == "-h" || arg == "--help")
            return "help";
        else if (arg.rfind("--", 0) == 0)
        {
            char const* text = value();
            if (text == nullptr)
                return arg + " needs a value";
            if (arg == "--plugin")
                args.plugin = text;
            else if (arg == "--inputs")
                args.inputs = text;
            else if (arg == "--outputs")
                args.outputs = text;
            else if (arg == "--check")
                args.check = text;
            else if (arg == "--tolerance")
            {
                char* end = nullptr;
                args.tolerance = std::strtod(text, &end);
                if (end == text || *end != '\0' || !(args.tolerance >= 0.0))
                    return "--tolerance needs a non-negative number, not " + std::string(text);
            }
            else if (arg == "--warmup" || arg == "--iterations" || arg == "--device")
            {
                int& target = arg == "--warmup" ? args.warmup : arg == "--iterations" ? args.iterations : args.device;
                if (!parseInt(text, target))
                    return arg + " needs a non-negative integer, not " + std::string(text);
            }
            else
                return "unknown option " + arg;
        }
        else if (args.engine.empty())
            args.engine = arg;
        else
            return "unexpected argument " + arg;
    }
    if (args.platform)
        return "";
    if (args.engine.empty())
        return "no engine given";
    if (args.inputs.empty())
        return "--inputs DIR is needed (one NAME.npy per engine input)";
    if (!args.check.empty() && args.tolerance < 0.0)
        return "--check needs --tolerance";
    return "";
}

int printPlatform(int device)
{
    auto platform = deformrt::currentPlatform(device);
    if (!platform)
    {
        return fail(platform.status().message());
    }
    std::printf("tensorrt_version=%s\ngpu_name=%s\ncompute_capability=%s\n", platform->tensorrtVersion.c_str(),
        platform->gpuName.c_str(), platform->computeCapability.c_str());
    return 0;
}

//! The comparison table; true when every output passes.
bool checkOutputs(std::map<std::string, deformrt::HostTensor> const& outputs, std::string const& referenceDir,
    double tolerance, std::string& error)
{
    bool allPass = true;
    std::printf("%-12s %-20s %-12s %-12s %-10s %s\n", "output", "shape", "max_abs", "max_rel", "tolerance", "result");
    for (auto const& [name, output] : outputs)
    {
        auto reference = deformrt::readNpy(referenceDir + "/" + name + ".npy");
        if (!reference)
        {
            error = reference.status().message();
            return false;
        }
        deformrt::Comparison const c = deformrt::compareTensors(output, *reference);
        bool const pass = c.passes(tolerance);
        allPass = allPass && pass;
        std::string const verdict = pass ? "ok"
            : !c.sameShape               ? "FAIL (reference shape " + deformrt::formatShape(reference->shape) + ")"
            : !c.finite                  ? "FAIL (NaN or Inf)"
                                         : "FAIL";
        std::printf("%-12s %-20s %-12.3e %-12.3e %-10.3g %s\n", name.c_str(), deformrt::formatShape(output.shape).c_str(),
            c.maxAbs, c.maxRel, tolerance, verdict.c_str());
    }
    return allPass;
}
} // namespace

int main(int argc, char** argv)
{
    Arguments args;
    std::string const problem = parseArguments(argc, argv, args);
    if (problem == "help")
    {
        std::fputs(kUsage, stdout);
        return 0;
    }
    if (!problem.empty())
    {
        std::fputs(kUsage, stderr);
        return fail(problem);
    }
    if (args.platform)
    {
        return printPlatform(args.device);
    }

    StderrLogger logger(args.verbose);
    deformrt::EngineOptions options;
    options.pluginLibrary = args.plugin;
    options.checkSidecar = args.sidecarCheck;
    options.device = args.device;
    options.logger = &logger;
    auto engine = deformrt::Engine::load(args.engine, options);
    if (!engine)
    {
        return fail(engine.status().message());
    }

    std::map<std::string, deformrt::HostTensor> inputs;
    for (deformrt::TensorInfo const& tensor : engine->tensors())
    {
        if (tensor.io == deformrt::TensorIO::kInput)
        {
            auto data = deformrt::readNpy(args.inputs + "/" + tensor.name + ".npy");
            if (!data)
            {
                return fail(data.status().message());
            }
            inputs.emplace(tensor.name, std::move(*data));
        }
    }
    auto outputs = engine->infer(inputs);
    if (!outputs)
    {
        return fail(outputs.status().message());
    }
    if (!args.outputs.empty())
    {
        for (auto const& [name, tensor] : *outputs)
        {
            if (deformrt::Status status = deformrt::writeNpy(args.outputs + "/" + name + ".npy", tensor); !status)
            {
                return fail(status.message());
            }
        }
    }

    bool pass = true;
    if (!args.check.empty())
    {
        std::string error;
        pass = checkOutputs(*outputs, args.check, args.tolerance, error);
        if (!error.empty())
        {
            return fail(error);
        }
    }
    if (args.iterations > 0)
    {
        auto stats = engine->benchmark(inputs, nullptr, args.warmup, args.iterations);
        if (!stats)
        {
            return fail(stats.status().message());
        }
        std::printf("latency: p50 %.3f ms, p99 %.3f ms, mean %.3f ms (%d iterations after %d warm-up; %s, TensorRT %s)\n",
            stats->p50Ms, stats->p99Ms, stats->meanMs, stats->iterations, args.warmup,
            engine->platform().gpuName.c_str(), engine->platform().tensorrtVersion.c_str());
    }
    if (!args.check.empty())
    {
        std::printf("%s\n", pass ? "PASS" : "FAIL");
    }
    return pass ? 0 : 1;
}
