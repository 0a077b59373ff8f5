// The JSON sidecar "<engine>.json" written next to every engine (by `deformrt build-engine`, see
// exporter/engine_meta.py, and by the deploy bundle's build.sh): which TensorRT release and GPU the
// engine was built for. TensorRT's own answer to a mismatch is a terse log line and a null engine;
// checking the sidecar first gives a clear error instead.
#pragma once

#include "deformrt/status.h"

#include <string>

namespace deformrt
{

//! The fields the runtime uses (schema 1); the sidecar holds more (profiles, ONNX metadata, ...).
struct EngineSidecar
{
    int schema{0};
    std::string tensorrtVersion; //!< "10.3.0" (a fourth build component, when present, is ignored)
    std::string computeCapability; //!< "8.7"
    std::string gpuName;
    std::string precision; //!< "fp32", "tf32" or "fp16"
    std::string pluginPath; //!< empty when the engine needs no plugin
};

//! What the engine is about to be loaded on.
struct Platform
{
    std::string tensorrtVersion;
    std::string computeCapability;
    std::string gpuName;
};

//! "model.plan" -> "model.plan.json"
std::string sidecarPath(std::string const& enginePath);

//! Parse a sidecar's text; `source` names it in errors.
Expected<EngineSidecar> parseSidecar(std::string const& text, std::string const& source);

//! Read "<enginePath>.json"; an error when it is missing, not JSON, or lacks a field.
Expected<EngineSidecar> readSidecar(std::string const& enginePath);

//! An error when the engine cannot run on `platform`: another TensorRT release (major.minor.patch)
//! or another compute capability. Another GPU name with the same compute capability is allowed
//! (TensorRT allows it), see sameGpu().
Status checkSidecar(EngineSidecar const& sidecar, Platform const& platform, std::string const& engineName);

//! False when the engine was built on a GPU of another name (it runs, possibly slower).
bool sameGpu(EngineSidecar const& sidecar, Platform const& platform);

} // namespace deformrt
