// Latency statistics over timed iterations (milliseconds); percentiles interpolate linearly between
// order statistics, as numpy.percentile does by default.
#pragma once

#include "deformrt/status.h"

#include <vector>

namespace deformrt
{

struct LatencyStats
{
    int iterations{0};
    double p50Ms{0.0};
    double p90Ms{0.0};
    double p99Ms{0.0};
    double meanMs{0.0};
    double minMs{0.0};
    double maxMs{0.0};
};

//! An error for an empty list or a non-finite or negative time.
Expected<LatencyStats> summarizeLatencies(std::vector<double> millisecondsPerIteration);

} // namespace deformrt
