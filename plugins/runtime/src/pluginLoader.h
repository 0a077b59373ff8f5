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

//! Register TensorRT's own plugins (initLibNvInferPlugins of libnvinfer_plugin.so.<major>) in the process-wide
//! registry, once per process: the standard-DeformConv flavour needs them (TensorRT 10.1+ parses DeformConv
//! into its own plugin), and so do detector graphs. libnvinfer_plugin is looked for beside the libnvinfer in
//! use, then by its soname. Where it is missing, or refuses, ``logger`` gets one warning line and nothing
//! else happens: engines without TensorRT's plugins load as before. TensorRT keeps the logger it is given
//! for the life of the process, so it gets a process-lifetime one that forwards to the Engine::load in
//! progress (PluginMessagesTo).
void registerTensorRTPlugins(TensorRTLogger& logger);

//! While alive, messages TensorRT's own plugins log go to ``logger`` (else they are dropped).
class PluginMessagesTo
{
public:
    explicit PluginMessagesTo(TensorRTLogger& logger) noexcept;
    ~PluginMessagesTo();
    PluginMessagesTo(PluginMessagesTo const&) = delete;
    PluginMessagesTo& operator=(PluginMessagesTo const&) = delete;

private:
    TensorRTLogger* mPrevious;
};

} // namespace detail
} // namespace deformrt
