// Making the deformrt plugin's creator available to TensorRT, once per process.
#pragma once

#include "deformrt/status.h"

#include <NvInferRuntime.h>

#include <string>

namespace deformrt
{
namespace detail
{

class TensorRTLogger;

//! Load `library` through IPluginRegistry::loadLibrary into the process-wide `registry`, unless it
//! already answers for the plugin named in deformrt/opContract.h (loaded by an earlier Engine or by the
//! application): loading the same library twice registers its creator twice, which TensorRT rejects.
//! The library is never unloaded (see runtime.h).
Status ensurePluginLoaded(nvinfer1::IPluginRegistry& registry, std::string const& library, TensorRTLogger& logger);

} // namespace detail
} // namespace deformrt
