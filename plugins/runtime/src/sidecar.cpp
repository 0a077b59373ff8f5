#include "deformrt/sidecar.h"

#include "fileIo.h"
#include "json.h"

#include <fstream>

namespace deformrt
{
namespace
{
constexpr int kSchema = 1; // exporter/engine_meta.py SCHEMA
constexpr char const* kPrecisions[] = {"fp32", "tf32", "fp16"};

//! TensorRT engines are tied to a release (major.minor.patch), not to its build number.
std::string releaseOf(std::string const& version)
{
    int dots = 0;
    for (std::size_t i = 0; i < version.size(); ++i)
    {
        if (version[i] == '.' && ++dots == 3)
        {
            return version.substr(0, i);
        }
    }
    return version;
}

Status requireString(detail::JsonValue const& root, char const* key, std::string& out)
{
    detail::JsonValue const* value = root.find(key);
    if (value == nullptr || value->kind != detail::JsonValue::Kind::kString || value->text.empty())
    {
        return Status::error(std::string("missing or non-string field \"") + key + "\"");
    }
    out = value->text;
    return Status();
}
} // namespace

std::string sidecarPath(std::string const& enginePath)
{
    return enginePath + ".json";
}

Expected<EngineSidecar> parseSidecar(std::string const& text, std::string const& source)
{
    auto root = detail::parseJson(text);
    if (!root)
    {
        return root.status().withContext(source);
    }
    if (root->kind != detail::JsonValue::Kind::kObject)
    {
        return Status::error(source + ": not a JSON object");
    }
    EngineSidecar sidecar;
    detail::JsonValue const* schema = root->find("schema");
    if (schema == nullptr || schema->kind != detail::JsonValue::Kind::kNumber || schema->text != std::to_string(kSchema))
    {
        return Status::error(source + ": sidecar schema " + (schema ? schema->text : std::string("missing"))
            + "; this runtime reads schema " + std::to_string(kSchema));
    }
    sidecar.schema = kSchema;
    for (auto [key, field] : {std::pair{"tensorrt_version", &sidecar.tensorrtVersion},
             std::pair{"compute_capability", &sidecar.computeCapability}, std::pair{"gpu_name", &sidecar.gpuName},
             std::pair{"precision", &sidecar.precision}})
    {
        if (Status status = requireString(*root, key, *field); !status)
        {
            return status.withContext(source);
        }
    }
    bool knownPrecision = false;
    for (char const* precision : kPrecisions)
    {
        knownPrecision = knownPrecision || sidecar.precision == precision;
    }
    if (!knownPrecision)
    {
        return Status::error(source + ": precision \"" + sidecar.precision + "\" is not one of fp32, tf32, fp16");
    }
    if (detail::JsonValue const* plugin = root->find("plugin_path"))
    {
        if (plugin->kind == detail::JsonValue::Kind::kString)
        {
            sidecar.pluginPath = plugin->text;
        }
        else if (plugin->kind != detail::JsonValue::Kind::kNull)
        {
            return Status::error(source + ": \"plugin_path\" is neither a string nor null");
        }
    }
    return sidecar;
}

Expected<EngineSidecar> readSidecar(std::string const& enginePath)
{
    std::string const path = sidecarPath(enginePath);
    if (!std::ifstream(path))
    {
        return Status::error(enginePath + " has no sidecar " + path
            + ": it records the TensorRT release and GPU the engine was built for; rebuild the engine with "
              "`deformrt build-engine` or the bundle's build.sh");
    }
    auto text = detail::readFile(path);
    if (!text)
    {
        return text.status();
    }
    return parseSidecar(*text, path);
}

Status checkSidecar(EngineSidecar const& sidecar, Platform const& platform, std::string const& engineName)
{
    if (releaseOf(sidecar.tensorrtVersion) != releaseOf(platform.tensorrtVersion))
    {
        return Status::error(engineName + " was built with TensorRT " + sidecar.tensorrtVersion + ", this is TensorRT "
            + platform.tensorrtVersion + "; engines only load in the release that built them: rebuild the engine here");
    }
    if (sidecar.computeCapability != platform.computeCapability)
    {
        return Status::error(engineName + " was built for " + sidecar.gpuName + " (compute capability "
            + sidecar.computeCapability + "), this GPU is " + platform.gpuName + " (compute capability "
            + platform.computeCapability + "): rebuild the engine on this GPU");
    }
    return Status();
}

bool sameGpu(EngineSidecar const& sidecar, Platform const& platform)
{
    return sidecar.gpuName == platform.gpuName;
}

} // namespace deformrt
