// deformrt-run: run an engine on .npy inputs, write .npy outputs, check them against references and
// time it; the self-check of the deploy bundle's build.sh (no Python needed on the device).
//
//   deformrt-run ENGINE [--plugin LIB] --inputs DIR [--outputs DIR] [--check REF_DIR --tolerance X]
//                [--warmup N] [--iterations N] [--device N] [--no-sidecar-check] [--verbose]
//   detector engines: --check REF_DIR --match-iou X --score-tolerance X --mask-tolerance X
//                [--borderline X] [--score-threshold X] [--nms-threshold X]; --paste-masks [--image-size HxW]
//                with --outputs
//   deformrt-run --platform [--device N]
//
// Tensors are files named after them: DIR/images.npy, REF_DIR/P2.npy, ... Results go to stdout; an
// error is one line on stderr. Exit status 0: ran (and passed the check); 1: an error or FAIL.
// A detector's outputs (num_detections, detection_boxes, ...) are checked as sets: per image, engine
// and reference detections matched by class and IoU, errors of the pairs, unmatched ones counted as
// borderline when their score is within --borderline of a cut (the score threshold, or the lowest score
// of a side that filled all D rows) or their IoU with a same-class detection is within --borderline of
// the NMS threshold (an NMS near-tie), else as failures.
#include "deformrt/compare.h"
#include "deformrt/detections.h"
#include "deformrt/npy.h"
#include "deformrt/runtime.h"

#include <algorithm>
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
    deformrt::DetectionTolerances detection;
    bool detectionTolerances{false};
    bool pasteMasks{false};
    int64_t imageHeight{0}; //!< --image-size: the original image's, boxes scaled from image_sizes
    int64_t imageWidth{0};
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
      "  detectors: [--check REF_DIR --match-iou X --score-tolerance X --mask-tolerance X [--borderline X]\n"
      "                    [--score-threshold X] [--nms-threshold X]] [--paste-masks [--image-size HxW]]\n"
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
        else if (arg == "--paste-masks")
            args.pasteMasks = true;
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
            else if (arg == "--match-iou" || arg == "--score-tolerance" || arg == "--mask-tolerance"
                || arg == "--borderline" || arg == "--score-threshold" || arg == "--nms-threshold")
            {
                double& target = arg == "--match-iou" ? args.detection.matchIou
                    : arg == "--score-tolerance"      ? args.detection.score
                    : arg == "--mask-tolerance"       ? args.detection.mask
                    : arg == "--borderline"           ? args.detection.borderline
                    : arg == "--score-threshold"      ? args.detection.scoreThreshold
                                                      : args.detection.nmsThreshold;
                char* end = nullptr;
                target = std::strtod(text, &end);
                if (end == text || *end != '\0' || !(target >= 0.0) || !(target <= 1e6))
                    return arg + " needs a non-negative number, not " + std::string(text);
                args.detectionTolerances = args.detectionTolerances || arg == "--match-iou";
            }
            else if (arg == "--image-size")
            {
                long long height = 0;
                long long width = 0;
                char tail = '\0';
                if (std::sscanf(text, "%lldx%lld%c", &height, &width, &tail) != 2 || height < 1 || width < 1
                    || height > 65536 || width > 65536)
                    return "--image-size needs HEIGHTxWIDTH (e.g. 480x640), not " + std::string(text);
                args.imageHeight = height;
                args.imageWidth = width;
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
    if (!args.check.empty() && args.tolerance < 0.0 && !args.detectionTolerances)
        return "--check needs --tolerance (a detector's: --match-iou, --score-tolerance and --mask-tolerance)";
    if (args.pasteMasks && args.outputs.empty())
        return "--paste-masks writes pasted_masks.npy and needs --outputs DIR";
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
std::string formatError(double value)
{
    char text[32];
    std::snprintf(text, sizeof text, "%.3e", value);
    return text;
}

//! A detector's outputs as sets against the reference detections, one row per image; true when all pass.
bool checkDetectorOutputs(std::map<std::string, deformrt::HostTensor> const& outputs, std::string const& referenceDir,
    deformrt::DetectionTolerances const& tolerances, std::string& error)
{
    std::map<std::string, deformrt::HostTensor> references;
    for (auto const& [name, output] : outputs)
    {
        auto reference = deformrt::readNpy(referenceDir + "/" + name + ".npy");
        if (!reference)
        {
            error = reference.status().message();
            return false;
        }
        references.emplace(name, std::move(*reference));
    }
    auto want = deformrt::detectionsFromOutputs(references);
    auto got = deformrt::detectionsFromOutputs(outputs);
    if (!want || !got)
    {
        error = (!want ? want.status().withContext("reference") : got.status()).message();
        return false;
    }
    if (want->size() != got->size())
    {
        error = "the reference has " + std::to_string(want->size()) + " images, the engine's outputs "
            + std::to_string(got->size());
        return false;
    }
    std::size_t const capacity = static_cast<std::size_t>(outputs.at(deformrt::detector::kScores).shape[1]);
    bool const masks = outputs.count(deformrt::detector::kMasks) != 0;
    std::printf("%-6s %-9s %-7s %-8s %-10s %-9s %-11s %-10s %-10s %s\n", "image", "reference", "engine", "matched",
        "borderline", "unmatched", "box err px", "score err", "mask err", "result");
    bool allPass = true;
    for (std::size_t image = 0; image < want->size(); ++image)
    {
        deformrt::DetectionCheck const c = deformrt::checkDetections((*want)[image], (*got)[image], tolerances, capacity);
        bool const pass = c.passes(tolerances);
        allPass = allPass && pass;
        std::string const verdict = pass ? (c.borderline > 0 ? "ok (borderline: near-ties at a score or NMS cut)" : "ok")
            : !c.finite                  ? "FAIL (NaN or Inf)"
            : c.unmatched > 0            ? "FAIL (unmatched detections)"
                                         : "FAIL (errors above tolerance)";
        std::printf("%-6zu %-9zu %-7zu %-8zu %-10zu %-9zu %-11s %-10s %-10s %s\n", image, c.referenceCount,
            c.otherCount, c.matched, c.borderline, c.unmatched, formatError(c.maxBoxError).c_str(),
            formatError(c.maxScoreError).c_str(), masks ? formatError(c.maxMaskError).c_str() : "-", verdict.c_str());
    }
    std::printf("tolerances: same class and IoU >= %g, score %g, mask %g, borderline %g (score threshold %g, NMS "
                "threshold %g)\n",
        tolerances.matchIou, tolerances.score, tolerances.mask, tolerances.borderline, tolerances.scoreThreshold,
        tolerances.nmsThreshold);
    return allPass;
}

//! DIR/pasted_masks.npy: [B, D, H, W] uint8, each image's masks at its image_sizes resolution (or --image-size,
//! boxes scaled to it as `deformrt predict` does), in the top-left corner when images differ in size.
deformrt::Status writePastedMasks(std::map<std::string, deformrt::HostTensor> const& inputs,
    std::map<std::string, deformrt::HostTensor> const& outputs, Arguments const& args)
{
    auto images = deformrt::detectionsFromOutputs(outputs);
    if (!images)
    {
        return images.status();
    }
    auto sizes = inputs.find(deformrt::detector::kImageSizes);
    if (sizes == inputs.end() || sizes->second.shape != std::vector<int64_t>{static_cast<int64_t>(images->size()), 2})
    {
        return deformrt::Status::error(std::string("--paste-masks needs the engine input ")
            + deformrt::detector::kImageSizes + " [B, 2]");
    }
    std::vector<double> const hw = deformrt::toDouble(sizes->second);
    for (double side : hw)
    {
        if (!(side >= 1.0 && side <= 65536.0))
        {
            return deformrt::Status::error(std::string(deformrt::detector::kImageSizes)
                + " holds a side outside 1..65536: " + std::to_string(side));
        }
    }
    int64_t const rows = outputs.at(deformrt::detector::kScores).shape[1];
    int64_t height = args.imageHeight;
    int64_t width = args.imageWidth;
    for (std::size_t i = 0; args.imageHeight == 0 && i < images->size(); ++i)
    {
        height = std::max(height, static_cast<int64_t>(hw[2 * i]));
        width = std::max(width, static_cast<int64_t>(hw[2 * i + 1]));
    }
    auto all = deformrt::HostTensor::allocate(
        deformrt::DType::kUInt8, {static_cast<int64_t>(images->size()), rows, height, width});
    if (!all)
    {
        return all.status();
    }
    for (std::size_t i = 0; i < images->size(); ++i)
    {
        auto const inHeight = static_cast<int64_t>(hw[2 * i]);
        auto const inWidth = static_cast<int64_t>(hw[2 * i + 1]);
        int64_t imageHeight = inHeight;
        int64_t imageWidth = inWidth;
        if (args.imageHeight > 0)
        {
            imageHeight = args.imageHeight;
            imageWidth = args.imageWidth;
            if (deformrt::Status status = deformrt::scaleBoxes((*images)[i], inHeight, inWidth, imageHeight, imageWidth);
                !status)
            {
                return status;
            }
        }
        auto pasted = deformrt::pasteMasks((*images)[i], rows, imageHeight, imageWidth);
        if (!pasted)
        {
            return pasted.status().withContext("image " + std::to_string(i));
        }
        auto* target = reinterpret_cast<uint8_t*>(all->data.data());
        auto const* source = reinterpret_cast<uint8_t const*>(pasted->data.data());
        for (int64_t d = 0; d < rows; ++d)
        {
            for (int64_t y = 0; y < imageHeight; ++y)
            {
                std::copy_n(source + (d * imageHeight + y) * imageWidth, imageWidth,
                    target + ((static_cast<int64_t>(i) * rows + d) * height + y) * width);
            }
        }
    }
    return deformrt::writeNpy(args.outputs + "/pasted_masks.npy", *all);
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
        if (args.pasteMasks)
        {
            if (deformrt::Status status = writePastedMasks(inputs, *outputs, args); !status)
            {
                return fail(status.message());
            }
        }
    }

    bool pass = true;
    if (!args.check.empty())
    {
        std::string error;
        if (deformrt::isDetectorOutputs(*outputs))
        {
            if (!args.detectionTolerances)
            {
                return fail("this engine is a detector: its --check compares sets and needs --match-iou, "
                            "--score-tolerance and --mask-tolerance");
            }
            pass = checkDetectorOutputs(*outputs, args.check, args.detection, error);
        }
        else
        {
            if (args.tolerance < 0.0)
            {
                return fail("--check of a backbone engine needs --tolerance");
            }
            pass = checkOutputs(*outputs, args.check, args.tolerance, error);
        }
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
