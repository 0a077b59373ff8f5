#include "deformrt/latency.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace deformrt
{
namespace
{
double percentile(std::vector<double> const& sorted, double q)
{
    double const position = q / 100.0 * static_cast<double>(sorted.size() - 1);
    std::size_t const below = static_cast<std::size_t>(std::floor(position));
    std::size_t const above = std::min(below + 1, sorted.size() - 1);
    double const fraction = position - static_cast<double>(below);
    return sorted[below] + (sorted[above] - sorted[below]) * fraction;
}
} // namespace

Expected<LatencyStats> summarizeLatencies(std::vector<double> milliseconds)
{
    if (milliseconds.empty())
    {
        return Status::error("no timed iterations");
    }
    for (double value : milliseconds)
    {
        if (!std::isfinite(value) || value < 0.0)
        {
            return Status::error("invalid iteration time " + std::to_string(value) + " ms");
        }
    }
    std::sort(milliseconds.begin(), milliseconds.end());
    LatencyStats stats;
    stats.iterations = static_cast<int>(milliseconds.size());
    stats.p50Ms = percentile(milliseconds, 50.0);
    stats.p90Ms = percentile(milliseconds, 90.0);
    stats.p99Ms = percentile(milliseconds, 99.0);
    stats.meanMs = std::accumulate(milliseconds.begin(), milliseconds.end(), 0.0) / milliseconds.size();
    stats.minMs = milliseconds.front();
    stats.maxMs = milliseconds.back();
    return stats;
}

} // namespace deformrt
