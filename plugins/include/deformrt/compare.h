// Comparing an engine's output with a reference, as `deformrt compare` does: max abs error, max rel
// error = max abs / max |reference| (relative to the output's scale, so near-zero elements do not
// dominate), and pass when max rel <= tolerance, the shapes agree and every element is finite.
#pragma once

#include "deformrt/hostTensor.h"
#include "deformrt/status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace deformrt
{

struct Comparison
{
    double maxAbs{0.0};
    double maxRel{0.0};
    double referenceScale{0.0}; //!< max |reference|
    bool finite{true}; //!< no NaN or Inf in the output (or the reference)
    bool sameShape{true};

    bool passes(double tolerance) const noexcept
    {
        return sameShape && finite && maxRel <= tolerance;
    }
};

//! Works across element types (an fp16 output against an fp32 reference): both are widened to float64.
Comparison compareTensors(HostTensor const& output, HostTensor const& reference);

} // namespace deformrt
