// Test driver for the TensorRT-free part of the deformrt runtime (.npy I/O, sidecar, comparison),
// compiled with g++ and sanitizers by tests/test_runtime_native.py. Prints results on stdout; an error
// is "error: <message>" on stderr with exit status 1, as a caller of the library would report it.
#include "deformrt/compare.h"
#include "deformrt/detections.h"
#include "deformrt/latency.h"
#include "deformrt/npy.h"
#include "deformrt/sidecar.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace
{
int fail(deformrt::Status const& status)
{
    std::fprintf(stderr, "error: %s\n", status.message().c_str());
    return 1;
}

//! A detector's outputs from DIR/NAME.npy (detection_masks.npy only when present).
deformrt::Expected<std::map<std::string, deformrt::HostTensor>> readDetections(std::string const& dir)
{
    namespace det = deformrt::detector;
    std::map<std::string, deformrt::HostTensor> outputs;
    for (char const* name : {det::kNumDetections, det::kBoxes, det::kScores, det::kClasses, det::kMasks})
    {
        std::string const path = dir + "/" + name + ".npy";
        if (name == std::string(det::kMasks) && !std::ifstream(path))
        {
            continue;
        }
        auto tensor = deformrt::readNpy(path);
        if (!tensor)
        {
            return tensor.status();
        }
        outputs.emplace(name, std::move(*tensor));
    }
    return outputs;
}

void printIndices(char const* label, std::vector<std::size_t> const& indices)
{
    std::printf("%s", label);
    for (std::size_t i : indices)
    {
        std::printf(" %zu", i);
    }
    std::printf("\n");
}

int usage()
{
    std::fprintf(stderr,
        "usage: driver copy IN.npy OUT.npy | values IN.npy | compare OUT.npy REF.npy | "
        "sidecar ENGINE TRT_VERSION COMPUTE_CAPABILITY GPU_NAME | latency MS... | "
        "match REF_DIR OUT_DIR IOU SCORE MASK BORDERLINE SCORE_THRESHOLD [NMS_THRESHOLD] | paste DIR IMAGE HEIGHT WIDTH OUT.npy [FROM_HEIGHT FROM_WIDTH]\n");
    return 2;
}
} // namespace

int main(int argc, char** argv)
{
    using namespace deformrt;
    if (argc < 3)
    {
        return usage();
    }
    std::string const command = argv[1];
    if (command == "copy" && argc == 4)
    {
        auto tensor = readNpy(argv[2]);
        if (!tensor)
        {
            return fail(tensor.status());
        }
        std::printf("%s %s\n", dtypeName(tensor->dtype), formatShape(tensor->shape).c_str());
        Status status = writeNpy(argv[3], *tensor);
        return status ? 0 : fail(status);
    }
    if (command == "values" && argc == 3)
    {
        auto tensor = readNpy(argv[2]);
        if (!tensor)
        {
            return fail(tensor.status());
        }
        for (double value : toDouble(*tensor))
        {
            std::printf("%.17g\n", value);
        }
        return 0;
    }
    if (command == "compare" && argc == 4)
    {
        auto output = readNpy(argv[2]);
        auto reference = readNpy(argv[3]);
        if (!output || !reference)
        {
            return fail(!output ? output.status() : reference.status());
        }
        Comparison const c = compareTensors(*output, *reference);
        std::printf("max_abs=%.17g max_rel=%.17g scale=%.17g finite=%d same_shape=%d\n", c.maxAbs, c.maxRel,
            c.referenceScale, c.finite, c.sameShape);
        return 0;
    }
    if (command == "sidecar" && argc == 6)
    {
        auto sidecar = readSidecar(argv[2]);
        if (!sidecar)
        {
            return fail(sidecar.status());
        }
        Platform const platform{argv[3], argv[4], argv[5]};
        if (Status status = checkSidecar(*sidecar, platform, argv[2]); !status)
        {
            return fail(status);
        }
        std::printf("ok precision=%s plugin=%s same_gpu=%d\n", sidecar->precision.c_str(), sidecar->pluginPath.c_str(),
            sameGpu(*sidecar, platform));
        return 0;
    }
    if (command == "latency")
    {
        std::vector<double> milliseconds;
        for (int i = 2; i < argc; ++i)
        {
            milliseconds.push_back(std::strtod(argv[i], nullptr));
        }
        auto stats = summarizeLatencies(milliseconds);
        if (!stats)
        {
            return fail(stats.status());
        }
        std::printf("n=%d p50=%.17g p90=%.17g p99=%.17g mean=%.17g min=%.17g max=%.17g\n", stats->iterations,
            stats->p50Ms, stats->p90Ms, stats->p99Ms, stats->meanMs, stats->minMs, stats->maxMs);
        return 0;
    }
    if (command == "match" && (argc == 9 || argc == 10))
    {
        auto reference = readDetections(argv[2]);
        auto other = readDetections(argv[3]);
        if (!reference || !other)
        {
            return fail(!reference ? reference.status() : other.status());
        }
        auto want = detectionsFromOutputs(*reference);
        auto got = detectionsFromOutputs(*other);
        if (!want || !got)
        {
            return fail(!want ? want.status() : got.status());
        }
        DetectionTolerances tolerances;
        tolerances.matchIou = std::strtod(argv[4], nullptr);
        tolerances.score = std::strtod(argv[5], nullptr);
        tolerances.mask = std::strtod(argv[6], nullptr);
        tolerances.borderline = std::strtod(argv[7], nullptr);
        tolerances.scoreThreshold = std::strtod(argv[8], nullptr);
        tolerances.nmsThreshold = argc == 10 ? std::strtod(argv[9], nullptr) : 0.0;
        auto const capacity = static_cast<std::size_t>(reference->at(detector::kScores).shape[1]);
        for (std::size_t image = 0; image < want->size() && image < got->size(); ++image)
        {
            DetectionMatch const match = matchDetections((*want)[image], (*got)[image], tolerances.matchIou);
            std::printf("image %zu\npairs", image);
            for (auto const& [i, j] : match.pairs)
            {
                std::printf(" %zu:%zu", i, j);
            }
            std::printf("\n");
            printIndices("unmatched_reference", match.unmatchedReference);
            printIndices("unmatched_other", match.unmatchedOther);
            DetectionCheck const c = checkDetections((*want)[image], (*got)[image], tolerances, capacity);
            std::printf("check matched=%zu borderline=%zu unmatched=%zu box=%.17g score=%.17g mask=%.17g finite=%d "
                        "pass=%d\n",
                c.matched, c.borderline, c.unmatched, c.maxBoxError, c.maxScoreError, c.maxMaskError, c.finite,
                c.passes(tolerances));
        }
        return 0;
    }
    if (command == "paste" && (argc == 7 || argc == 9))
    {
        auto outputs = readDetections(argv[2]);
        if (!outputs)
        {
            return fail(outputs.status());
        }
        auto images = detectionsFromOutputs(*outputs);
        if (!images)
        {
            return fail(images.status());
        }
        auto const image = static_cast<std::size_t>(std::strtoul(argv[3], nullptr, 10));
        if (image >= images->size())
        {
            return fail(Status::error("no image " + std::to_string(image)));
        }
        ImageDetections& found = (*images)[image];
        if (argc == 9)
        {
            Status status = scaleBoxes(found, std::strtoll(argv[7], nullptr, 10), std::strtoll(argv[8], nullptr, 10),
                std::strtoll(argv[4], nullptr, 10), std::strtoll(argv[5], nullptr, 10));
            if (!status)
            {
                return fail(status);
            }
        }
        auto pasted = pasteMasks(found, static_cast<int64_t>(found.size()), std::strtoll(argv[4], nullptr, 10),
            std::strtoll(argv[5], nullptr, 10));
        if (!pasted)
        {
            return fail(pasted.status());
        }
        Status status = writeNpy(argv[6], *pasted);
        return status ? 0 : fail(status);
    }
    return usage();
}
