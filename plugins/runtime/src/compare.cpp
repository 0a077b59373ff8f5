#include "deformrt/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace deformrt
{

Comparison compareTensors(HostTensor const& output, HostTensor const& reference)
{
    Comparison result;
    if (output.shape != reference.shape)
    {
        result.sameShape = false;
        result.maxAbs = result.maxRel = std::numeric_limits<double>::infinity();
        return result;
    }
    std::vector<double> const got = toDouble(output);
    std::vector<double> const want = toDouble(reference);
    for (std::size_t i = 0; i < got.size() && i < want.size(); ++i)
    {
        if (!std::isfinite(got[i]) || !std::isfinite(want[i]))
        {
            result.finite = false;
            continue;
        }
        result.maxAbs = std::max(result.maxAbs, std::abs(got[i] - want[i]));
        result.referenceScale = std::max(result.referenceScale, std::abs(want[i]));
    }
    // Errors over the finite elements are still reported when some are not finite (passes() fails then).
    if (result.referenceScale > 0.0)
    {
        result.maxRel = result.maxAbs / result.referenceScale;
    }
    else
    {
        // An all-zero reference: any difference is infinitely large relative to it.
        result.maxRel = result.maxAbs == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
    }
    return result;
}

} // namespace deformrt
