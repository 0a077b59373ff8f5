// Test driver for the TensorRT-free part of the deformrt runtime (.npy I/O, sidecar, comparison),
// compiled with g++ and sanitizers by tests/test_runtime_native.py. Prints results on stdout; an error
// is "error: <message>" on stderr with exit status 1, as a caller of the library would report it.
#include "deformrt/compare.h"
#include "deformrt/latency.h"
#include "deformrt/npy.h"
#include "deformrt/sidecar.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace
{
int fail(deformrt::Status const& status)
{
    std::fprintf(stderr, "error: %s\n", status.message().c_str());
    return 1;
}

int usage()
{
    std::fprintf(stderr,
        "usage: driver copy IN.npy OUT.npy | values IN.npy | compare OUT.npy REF.npy | "
        "sidecar ENGINE TRT_VERSION COMPUTE_CAPABILITY GPU_NAME | latency MS...\n");
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
    return usage();
}
