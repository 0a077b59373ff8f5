#include "deformConvPlugin.h"

#include "deformrt/deformConvKernel.h"
#include "tensorrtRuntime.h"
#if DEFORMRT_PLUGIN_HOST_KERNELS
#include "deformrt/deformConvHost.h"
#endif

#include <string.h> // strnlen

#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace deformrt
{
namespace plugin
{
namespace
{
using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimensionOperation;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

template <typename T>
std::string join(T const* values, int32_t n)
{
    std::ostringstream os;
    os << '[';
    for (int32_t i = 0; i < n; ++i)
    {
        os << (i ? ", " : "") << values[i];
    }
    os << ']';
    return os.str();
}

std::string dimsString(Dims const& d)
{
    if (d.nbDims < 0 || d.nbDims > Dims::MAX_DIMS)
    {
        return "(rank " + std::to_string(d.nbDims) + ")";
    }
    return join(d.d, d.nbDims);
}

bool known(int64_t v)
{
    return v >= 0;
}

bool differs(int64_t a, int64_t b)
{
    return known(a) && known(b) && a != b;
}

//! Output size along one axis (the contract's formula); -1 when the input size is unknown.
int64_t outSize(int64_t in, int32_t k, int32_t stride, int32_t padBegin, int32_t padEnd, int32_t dilation)
{
    if (!known(in))
    {
        return -1;
    }
    int64_t const span = int64_t(dilation) * (k - 1) + 1;
    int64_t const num = in + padBegin + padEnd - span;
    return num < 0 ? 0 : num / stride + 1;
}

Dims const& dimsOf(nvinfer1::DynamicPluginTensorDesc const& t)
{
    return t.desc.dims;
}

Dims const& dimsOf(nvinfer1::PluginTensorDesc const& t)
{
    return t.dims;
}

bool supportedType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

Dims toDims4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    Dims dims{};
    dims.nbDims = 4;
    dims.d[0] = a;
    dims.d[1] = b;
    dims.d[2] = c;
    dims.d[3] = d;
    return dims;
}

} // namespace

// -------------------------------------------------------------------------------------------------
// Attributes

std::array<AttrField, contract::kNumIntAttributes> attrFields(DeformConvAttrs& a)
{
    static_assert(sizeof(a.kernelShape) / sizeof(int32_t) == contract::kAttrKernelShapeLength, "contract drift");
    static_assert(sizeof(a.strides) / sizeof(int32_t) == contract::kAttrStridesLength, "contract drift");
    static_assert(sizeof(a.pads) / sizeof(int32_t) == contract::kAttrPadsLength, "contract drift");
    static_assert(sizeof(a.dilations) / sizeof(int32_t) == contract::kAttrDilationsLength, "contract drift");
    static_assert(contract::kAttrGroupLength == 1 && contract::kAttrOffsetGroupLength == 1
            && contract::kAttrModulatedLength == 1 && contract::kAttrHasBiasLength == 1,
        "contract drift");
    return {{
        {contract::kAttrKernelShape, contract::kAttrKernelShapeLength, a.kernelShape},
        {contract::kAttrStrides, contract::kAttrStridesLength, a.strides},
        {contract::kAttrPads, contract::kAttrPadsLength, a.pads},
        {contract::kAttrDilations, contract::kAttrDilationsLength, a.dilations},
        {contract::kAttrGroup, contract::kAttrGroupLength, &a.group},
        {contract::kAttrOffsetGroup, contract::kAttrOffsetGroupLength, &a.offsetGroup},
        {contract::kAttrModulated, contract::kAttrModulatedLength, &a.modulated},
        {contract::kAttrHasBias, contract::kAttrHasBiasLength, &a.hasBias},
    }};
}

char const* weightLayoutName(int32_t layout)
{
    return layout == DEFORMRT_WEIGHT_OHWI ? contract::kWeightLayoutOHWI : contract::kWeightLayoutOIHW;
}

int32_t DeformConvAttrs::numInputs() const
{
    return contract::numInputs(hasBias != 0, modulated != 0);
}

std::string DeformConvAttrs::invalidReason() const
{
    // Sizes of 2^30 and more can never run (deformConvDesc.h, kMaxExtent): refused when the plugin is created.
    auto const atLeast = [](int32_t const* v, int32_t n, int32_t lo) {
        for (int32_t i = 0; i < n; ++i)
        {
            if (v[i] < lo || v[i] >= kMaxExtent)
            {
                return false;
            }
        }
        return true;
    };
    std::ostringstream os;
    if (!atLeast(kernelShape, 2, 1))
    {
        os << "field '" << contract::kAttrKernelShape << "' must be in [1, 2^30), got " << join(kernelShape, 2);
    }
    else if (!atLeast(strides, 2, 1))
    {
        os << "field '" << contract::kAttrStrides << "' must be in [1, 2^30), got " << join(strides, 2);
    }
    else if (!atLeast(pads, 4, 0))
    {
        os << "field '" << contract::kAttrPads << "' must be in [0, 2^30), got " << join(pads, 4);
    }
    else if (!atLeast(dilations, 2, 1))
    {
        os << "field '" << contract::kAttrDilations << "' must be in [1, 2^30), got " << join(dilations, 2);
    }
    else if (group < 1 || group >= kMaxExtent)
    {
        os << "field '" << contract::kAttrGroup << "' must be in [1, 2^30), got " << group;
    }
    else if (offsetGroup < 1 || offsetGroup >= kMaxExtent)
    {
        os << "field '" << contract::kAttrOffsetGroup << "' must be in [1, 2^30), got " << offsetGroup;
    }
    else if (modulated != 0 && modulated != 1)
    {
        os << "field '" << contract::kAttrModulated << "' must be 0 or 1, got " << modulated;
    }
    else if (hasBias != 0 && hasBias != 1)
    {
        os << "field '" << contract::kAttrHasBias << "' must be 0 or 1, got " << hasBias;
    }
    return os.str();
}

DeformConvAttrs parseAttrs(nvinfer1::PluginFieldCollection const* fc)
{
    if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        throw std::invalid_argument("no plugin fields given");
    }
    DeformConvAttrs attrs;
    auto fields = attrFields(attrs);
    std::array<bool, contract::kNumIntAttributes> seen{};
    bool layoutSeen = false;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        size_t j = 0;
        while (j < fields.size() && (f.name == nullptr || std::strcmp(f.name, fields[j].name) != 0))
        {
            ++j;
        }
        if (j == fields.size() && f.name != nullptr && std::strcmp(f.name, kObsoleteWorkspaceBytesField) == 0)
        {
            continue;
        }
        if (j == fields.size() && f.name != nullptr && std::strcmp(f.name, contract::kAttrWeightLayout) == 0)
        {
            std::string const where = std::string("field '") + contract::kAttrWeightLayout + "'";
            if (layoutSeen)
            {
                throw std::invalid_argument(where + " is given twice");
            }
            // A STRING attribute: the ONNX parser passes kCHAR with a NUL counted in the length.
            if (f.type != PluginFieldType::kCHAR || f.data == nullptr || f.length < 1 || f.length > 64)
            {
                throw std::invalid_argument(where + " must be a string (" + contract::kWeightLayoutOIHW + " or "
                    + contract::kWeightLayoutOHWI + ")");
            }
            auto const* chars = static_cast<char const*>(f.data);
            std::string const value(chars, strnlen(chars, static_cast<size_t>(f.length)));
            if (value == contract::kWeightLayoutOIHW || value == contract::kWeightLayoutOHWI)
            {
                attrs.weightLayout = value == contract::kWeightLayoutOHWI ? DEFORMRT_WEIGHT_OHWI : DEFORMRT_WEIGHT_OIHW;
            }
            else
            {
                throw std::invalid_argument(where + " must be " + contract::kWeightLayoutOIHW + " or "
                    + contract::kWeightLayoutOHWI + ", got '" + value + "'");
            }
            layoutSeen = true;
            continue;
        }
        if (j == fields.size())
        {
            // A misspelt name would otherwise leave its value at a default nobody chose.
            throw std::invalid_argument(std::string("unknown field '") + (f.name ? f.name : "(null)") + "'");
        }
        AttrField const& spec = fields[j];
        std::string const where = std::string("field '") + spec.name + "'";
        if (seen[j])
        {
            throw std::invalid_argument(where + " is given twice");
        }
        if (f.length != spec.length || f.data == nullptr)
        {
            throw std::invalid_argument(where + " must have " + std::to_string(spec.length) + " value(s), got "
                + std::to_string(f.data == nullptr ? 0 : f.length));
        }
        if (f.type == PluginFieldType::kINT32)
        {
            std::memcpy(spec.data, f.data, sizeof(int32_t) * spec.length);
        }
        else if (f.type == PluginFieldType::kINT64)
        {
            auto const* values = static_cast<int64_t const*>(f.data);
            for (int32_t k = 0; k < spec.length; ++k)
            {
                if (values[k] < std::numeric_limits<int32_t>::min() || values[k] > std::numeric_limits<int32_t>::max())
                {
                    throw std::invalid_argument(where + " value " + std::to_string(values[k]) + " is out of range");
                }
                spec.data[k] = static_cast<int32_t>(values[k]);
            }
        }
        else
        {
            throw std::invalid_argument(where + " must hold int32 or int64 values");
        }
        seen[j] = true;
    }
    for (size_t j = 0; j < fields.size(); ++j)
    {
        if (!seen[j])
        {
            throw std::invalid_argument(std::string("field '") + fields[j].name + "' is missing");
        }
    }
    std::string const reason = attrs.invalidReason();
    if (!reason.empty())
    {
        throw std::invalid_argument(reason);
    }
    return attrs;
}

// -------------------------------------------------------------------------------------------------
// Plugin

DeformConv2dPlugin::DeformConv2dPlugin(DeformConvAttrs const& attrs)
    : mAttrs(attrs)
{
    initFields();
}

DeformConv2dPlugin::DeformConv2dPlugin(DeformConv2dPlugin const& other)
    : IPluginV3()
    , IPluginV3OneCore()
    , IPluginV3OneBuild()
    , IPluginV3OneRuntime()
    , mAttrs(other.mAttrs)
{
    initFields();
}

DeformConv2dPlugin::~DeformConv2dPlugin() = default;

void DeformConv2dPlugin::initFields()
{
    mFields.clear();
    std::ostringstream description;
    for (AttrField const& f : attrFields(mAttrs))
    {
        mFields.emplace_back(f.name, f.data, PluginFieldType::kINT32, f.length);
        description << f.name << '=' << join(f.data, f.length) << ';';
    }
    mWeightLayoutName = weightLayoutName(mAttrs.weightLayout);
    mFields.emplace_back(contract::kAttrWeightLayout, mWeightLayoutName.c_str(), PluginFieldType::kCHAR,
        static_cast<int32_t>(mWeightLayoutName.size() + 1));
    description << contract::kAttrWeightLayout << '=' << mWeightLayoutName << ';';
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
    mDescription = description.str();
}

nvinfer1::IPluginCapability* DeformConv2dPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* DeformConv2dPlugin::clone() noexcept
{
    try
    {
        return new DeformConv2dPlugin(*this);
    }
    catch (std::exception const& e)
    {
        trt::logError("clone failed: ", e.what());
    }
    return nullptr;
}

char const* DeformConv2dPlugin::getPluginName() const noexcept
{
    return contract::kPluginName;
}

char const* DeformConv2dPlugin::getPluginVersion() const noexcept
{
    return contract::kPluginVersion;
}

char const* DeformConv2dPlugin::getPluginNamespace() const noexcept
{
    return contract::kPluginNamespace;
}

std::string DeformConv2dPlugin::shapeMismatch(Dims const* in, int32_t nbInputs) const
{
    bool const hasBias = mAttrs.hasBias != 0;
    bool const modulated = mAttrs.modulated != 0;
    if (nbInputs != mAttrs.numInputs())
    {
        return "expects " + std::to_string(mAttrs.numInputs()) + " inputs for " + contract::kAttrHasBias + "="
            + std::to_string(mAttrs.hasBias) + ", " + contract::kAttrModulated + "=" + std::to_string(mAttrs.modulated)
            + ", got " + std::to_string(nbInputs);
    }
    int32_t const biasIndex = contract::biasInputIndex(hasBias);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        int32_t const rank = i == biasIndex ? 1 : 4;
        if (in[i].nbDims != rank)
        {
            return "input " + std::to_string(i) + " must have rank " + std::to_string(rank) + ", got shape "
                + dimsString(in[i]);
        }
    }
    Dims const& x = in[contract::kInputX];
    Dims const& w = in[contract::kInputW];
    Dims const& off = in[contract::kInputOffset];
    int64_t const taps = int64_t(mAttrs.kernelShape[0]) * mAttrs.kernelShape[1];
    bool const ohwi = mAttrs.weightLayout == DEFORMRT_WEIGHT_OHWI;
    int64_t const wKh = w.d[ohwi ? 1 : 2];
    int64_t const wKw = w.d[ohwi ? 2 : 3];
    int64_t const wChannels = w.d[ohwi ? 3 : 1];
    if (differs(wKh, mAttrs.kernelShape[0]) || differs(wKw, mAttrs.kernelShape[1]))
    {
        return "weight shape " + dimsString(w) + " (" + weightLayoutName(mAttrs.weightLayout) + ") does not match "
            + contract::kAttrKernelShape + " " + join(mAttrs.kernelShape, 2);
    }
    if (known(wChannels) && differs(x.d[1], wChannels * mAttrs.group))
    {
        return "input shape " + dimsString(x) + " and weight shape " + dimsString(w) + " disagree on the channels for "
            + contract::kAttrGroup + "=" + std::to_string(mAttrs.group);
    }
    if (known(x.d[1]) && x.d[1] % mAttrs.offsetGroup != 0)
    {
        return std::string(contract::kAttrOffsetGroup) + "=" + std::to_string(mAttrs.offsetGroup)
            + " does not divide the input channels of " + dimsString(x);
    }
    if (known(w.d[0]) && w.d[0] % mAttrs.group != 0)
    {
        return std::string(contract::kAttrGroup) + "=" + std::to_string(mAttrs.group)
            + " does not divide the output channels of " + dimsString(w);
    }
    int64_t const ho = outSize(x.d[2], mAttrs.kernelShape[0], mAttrs.strides[0], mAttrs.pads[0], mAttrs.pads[2],
        mAttrs.dilations[0]);
    int64_t const wo = outSize(x.d[3], mAttrs.kernelShape[1], mAttrs.strides[1], mAttrs.pads[1], mAttrs.pads[3],
        mAttrs.dilations[1]);
    if (ho == 0 || wo == 0)
    {
        return "input shape " + dimsString(x) + " is too small for the kernel, pads and dilations";
    }
    auto const matchesMap = [&](Dims const& t, int64_t channels) {
        return !(differs(t.d[0], x.d[0]) || differs(t.d[1], channels) || differs(t.d[2], ho) || differs(t.d[3], wo));
    };
    if (!matchesMap(off, 2 * mAttrs.offsetGroup * taps))
    {
        return "offset shape " + dimsString(off) + " must be [N, 2*offset_group*kH*kW, H_out, W_out] = [N, "
            + std::to_string(2 * mAttrs.offsetGroup * taps) + ", " + std::to_string(ho) + ", " + std::to_string(wo) + "]";
    }
    if (hasBias && differs(in[biasIndex].d[0], w.d[0]))
    {
        return "bias shape " + dimsString(in[biasIndex]) + " does not match the weight's output channels "
            + dimsString(w);
    }
    if (modulated)
    {
        Dims const& mask = in[contract::maskInputIndex(hasBias, modulated)];
        if (!matchesMap(mask, mAttrs.offsetGroup * taps))
        {
            return "mask shape " + dimsString(mask) + " must be [N, offset_group*kH*kW, H_out, W_out] = [N, "
                + std::to_string(mAttrs.offsetGroup * taps) + ", " + std::to_string(ho) + ", " + std::to_string(wo)
                + "]";
        }
    }
    return "";
}

DeformrtConvDesc DeformConv2dPlugin::makeDesc(Dims const& x, Dims const& w, Dims const& y) const
{
    DeformrtConvDesc d{};
    d.batch = x.d[0];
    d.inChannels = x.d[1];
    d.inHeight = x.d[2];
    d.inWidth = x.d[3];
    d.outChannels = w.d[0];
    d.kernelH = mAttrs.kernelShape[0];
    d.kernelW = mAttrs.kernelShape[1];
    d.outHeight = y.d[2];
    d.outWidth = y.d[3];
    d.strideH = mAttrs.strides[0];
    d.strideW = mAttrs.strides[1];
    d.padTop = mAttrs.pads[0];
    d.padLeft = mAttrs.pads[1];
    d.dilationH = mAttrs.dilations[0];
    d.dilationW = mAttrs.dilations[1];
    d.group = mAttrs.group;
    d.offsetGroup = mAttrs.offsetGroup;
    d.modulated = mAttrs.modulated;
    d.hasBias = mAttrs.hasBias;
    d.weightLayout = mAttrs.weightLayout;
    return d;
}

template <typename TensorDesc>
int32_t DeformConv2dPlugin::checkShapes(
    char const* where, TensorDesc const* in, int32_t nbInputs, void const* out, int32_t nbOutputs) const
{
    if (in == nullptr || out == nullptr || nbOutputs != 1 || nbInputs < 1 || nbInputs > contract::kMaxInputs)
    {
        trt::logError(std::string(where) + ": expects " + std::to_string(mAttrs.numInputs()) + " inputs and 1 output");
        return -1;
    }
    Dims dims[contract::kMaxInputs];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims[i] = dimsOf(in[i]);
    }
    std::string const reason = shapeMismatch(dims, nbInputs);
    if (!reason.empty())
    {
        trt::logError(std::string(where) + ": " + reason);
        return -1;
    }
    return 0;
}

int32_t DeformConv2dPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (checkShapes("configurePlugin", in, nbInputs, out, nbOutputs) != 0)
        {
            return -1;
        }
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            if (!supportedType(in[i].desc.type) || in[i].desc.type != in[0].desc.type)
            {
                trt::logError("configurePlugin: all inputs must be float32 or all float16");
                return -1;
            }
        }
        // getOutputShapes keeps symbolic output dims >= 0; an input range that allows no output is refused here.
        Dims const& xMin = in[contract::kInputX].min;
        if (xMin.nbDims == 4)
        {
            int64_t const hoMin = outSize(xMin.d[2], mAttrs.kernelShape[0], mAttrs.strides[0], mAttrs.pads[0],
                mAttrs.pads[2], mAttrs.dilations[0]);
            int64_t const woMin = outSize(xMin.d[3], mAttrs.kernelShape[1], mAttrs.strides[1], mAttrs.pads[1],
                mAttrs.pads[3], mAttrs.dilations[1]);
            if (hoMin == 0 || woMin == 0)
            {
                trt::logError("configurePlugin: the smallest input shape allowed, " + dimsString(xMin)
                    + ", is smaller than the kernel's extent (" + contract::kAttrKernelShape + " "
                    + join(mAttrs.kernelShape, 2) + ", " + contract::kAttrDilations + " " + join(mAttrs.dilations, 2)
                    + ", " + contract::kAttrPads + " " + join(mAttrs.pads, 4)
                    + "): raise the optimization profile's minimum shape");
                return -1;
            }
        }
        // Nothing is recorded: TensorRT configures once per candidate combination, and the instance it serialises
        // need not have been configured last with the combination that won.
        return 0;
    }
    catch (std::exception const& e)
    {
        trt::logError("configurePlugin: ", e.what());
    }
    return -1;
}

int32_t DeformConv2dPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != 1 || nbInputs != mAttrs.numInputs())
        {
            trt::logError(
                "getOutputDataTypes: expects " + std::to_string(mAttrs.numInputs()) + " inputs and 1 output");
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }
    catch (std::exception const& e)
    {
        trt::logError("getOutputDataTypes: ", e.what());
    }
    return -1;
}

int32_t DeformConv2dPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbOutputs != 1 || nbInputs != mAttrs.numInputs()
            || inputs[contract::kInputX].nbDims != 4 || inputs[contract::kInputW].nbDims != 4)
        {
            trt::logError("getOutputShapes: expects " + std::to_string(mAttrs.numInputs())
                + " inputs (X and W of rank 4) and 1 output");
            return -1;
        }
        // A known input size too small for the kernel is a build error; a symbolic one gets max(0, ...) so that
        // the output dims stay >= 0, and configurePlugin refuses a profile whose minimum allows no output.
        char const* tooSmall = nullptr;
        auto const outDim = [&exprBuilder, &tooSmall](nvinfer1::IDimensionExpr const* in, int32_t k, int32_t stride,
                                int32_t padBegin, int32_t padEnd, int32_t dilation,
                                char const* axis) -> nvinfer1::IDimensionExpr const* {
            if (in == nullptr)
            {
                return nullptr;
            }
            if (in->isConstant())
            {
                int64_t const size = outSize(in->getConstantValue(), k, stride, padBegin, padEnd, dilation);
                if (size < 1)
                {
                    tooSmall = axis;
                    return nullptr;
                }
                return exprBuilder.constant(size);
            }
            int64_t const span = int64_t(dilation) * (k - 1) + 1;
            auto const* shifted
                = exprBuilder.operation(DimensionOperation::kSUM, *in, *exprBuilder.constant(padBegin + padEnd - span));
            auto const* steps
                = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *shifted, *exprBuilder.constant(stride));
            auto const* size = exprBuilder.operation(DimensionOperation::kSUM, *steps, *exprBuilder.constant(1));
            return exprBuilder.operation(DimensionOperation::kMAX, *size, *exprBuilder.constant(0));
        };
        nvinfer1::DimsExprs const& x = inputs[contract::kInputX];
        nvinfer1::DimsExprs& y = outputs[0];
        y.nbDims = 4;
        y.d[0] = x.d[0];
        y.d[1] = inputs[contract::kInputW].d[0];
        y.d[2] = outDim(x.d[2], mAttrs.kernelShape[0], mAttrs.strides[0], mAttrs.pads[0], mAttrs.pads[2],
            mAttrs.dilations[0], "height");
        y.d[3] = outDim(x.d[3], mAttrs.kernelShape[1], mAttrs.strides[1], mAttrs.pads[1], mAttrs.pads[3],
            mAttrs.dilations[1], "width");
        if (tooSmall != nullptr)
        {
            trt::logError(std::string("getOutputShapes: the input's ") + tooSmall
                + " is smaller than the kernel's extent (" + contract::kAttrKernelShape + " "
                + join(mAttrs.kernelShape, 2) + ", " + contract::kAttrDilations + " " + join(mAttrs.dilations, 2)
                + ", " + contract::kAttrPads + " " + join(mAttrs.pads, 4) + "): no output");
            return -1;
        }
        if (y.d[0] == nullptr || y.d[1] == nullptr || y.d[2] == nullptr || y.d[3] == nullptr)
        {
            trt::logError("getOutputShapes: missing input dimension expressions");
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        trt::logError("getOutputShapes: ", e.what());
    }
    return -1;
}

bool DeformConv2dPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        if (inOut == nullptr || nbInputs < 0 || nbOutputs < 0 || pos < 0 || pos >= nbInputs + nbOutputs)
        {
            trt::logError("supportsFormatCombination: position out of range or no tensor descriptions");
            return false;
        }
        // Only inOut[0 .. pos] hold valid values (NvInferRuntime.h): every decision reads no later position.
        nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
        bool const xChannelsLast = inOut[contract::kInputX].desc.format == nvinfer1::TensorFormat::kHWC8;
        if (pos == contract::kInputX)
        {
            return d.format == nvinfer1::TensorFormat::kHWC8 ? channelsLastInput(d)
                                                             : d.format == nvinfer1::TensorFormat::kLINEAR
                    && supportedType(d.type);
        }
        if (pos == nbInputs) // Y: kHWC8 exactly when X is, fp16 then
        {
            if (xChannelsLast)
            {
                return d.format == nvinfer1::TensorFormat::kHWC8 && d.type == DataType::kHALF
                    && channelsLastOutput(inOut, nbInputs);
            }
            return d.format == nvinfer1::TensorFormat::kLINEAR && d.type == inOut[0].desc.type;
        }
        // W, offset, bias, mask: linear, X's type.
        return d.format == nvinfer1::TensorFormat::kLINEAR && d.type == inOut[0].desc.type;
    }
    catch (std::exception const& e)
    {
        trt::logError("supportsFormatCombination: ", e.what());
    }
    return false;
}

bool DeformConv2dPlugin::channelsLastInput(nvinfer1::PluginTensorDesc const& x) const
{
    if (x.type != DataType::kHALF || x.dims.nbDims != 4 || x.dims.d[1] <= 0 || x.dims.d[1] % 8 != 0
        || x.dims.d[1] % mAttrs.group != 0 || x.dims.d[1] % mAttrs.offsetGroup != 0)
    {
        return false;
    }
    // The channels, kernel and groups decide whether the tensor-core kernel takes the problem; sizes not yet
    // known (dynamic, or W and Y: later positions) are stood in for by the smallest ones.
    Dims const one = toDims4(1, 1, 1, 1);
    Dims xDims = x.dims;
    for (int32_t i = 0; i < 4; ++i)
    {
        xDims.d[i] = xDims.d[i] < 0 ? 1 : xDims.d[i];
    }
    DeformrtConvDesc desc = makeDesc(xDims, one, one);
    desc.outChannels = 8 * int64_t(mAttrs.group);
    return deformrt_dcn_nhwc_supported(&desc) == 1;
}

bool DeformConv2dPlugin::channelsLastOutput(nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs) const
{
    Dims dims[3] = {inOut[contract::kInputX].desc.dims, inOut[contract::kInputW].desc.dims, inOut[nbInputs].desc.dims};
    for (Dims& d : dims)
    {
        if (d.nbDims != 4)
        {
            return false;
        }
        for (int32_t i = 0; i < 4; ++i)
        {
            d.d[i] = d.d[i] < 0 ? 1 : d.d[i]; // dynamic sizes: any size works for the layout decision
        }
    }
    int64_t const outChannels = dims[1].d[0];
    DeformrtConvDesc const desc = makeDesc(dims[0], dims[1], dims[2]);
    return outChannels % 8 == 0 && deformrt_dcn_nhwc_supported(&desc) == 1;
}

int32_t DeformConv2dPlugin::enqueueChannelsLast(DeformrtConvDesc const& desc, void const* x, void const* weight,
    void const* offset, void const* bias, void const* mask, void* y, void* workspace, cudaStream_t stream)
{
    uint64_t const capacity = deformrt_dcn_nhwc_workspace_size(&desc);
#if DEFORMRT_PLUGIN_HOST_KERNELS
    (void) stream;
    if (deformrt_dcn_forward_nhwc_host(&desc, x, weight, offset, bias, mask, y, workspace, capacity, -1) != 0)
    {
        trt::logError("enqueue (kHWC8): the host kernels refused the call (a missing tensor or workspace)");
        return -1;
    }
    return 0;
#else
    cudaError_t const status
        = deformrt_dcn_forward_nhwc(&desc, x, weight, offset, bias, mask, y, workspace, capacity, stream);
    if (status != cudaSuccess)
    {
        trt::logError(std::string("enqueue (kHWC8): ") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
        return -1;
    }
    return 0;
#endif
}

int32_t DeformConv2dPlugin::getNbOutputs() const noexcept
{
    return 1;
}

uint64_t DeformConv2dPlugin::workspaceBytes(
    DeformrtConvDesc const& desc, nvinfer1::TensorFormat xFormat, nvinfer1::DataType type)
{
    if (xFormat == nvinfer1::TensorFormat::kHWC8)
    {
        return deformrt_dcn_nhwc_workspace_size(&desc);
    }
    return deformrt_dcn_workspace_size(&desc, type == DataType::kHALF ? DEFORMRT_FLOAT16 : DEFORMRT_FLOAT32);
}

size_t DeformConv2dPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbInputs != mAttrs.numInputs() || nbOutputs != 1)
        {
            trt::logError("getWorkspaceSize: expects " + std::to_string(mAttrs.numInputs()) + " inputs and 1 output");
            return 0;
        }
        // The profile's largest shapes: any smaller problem enqueue runs needs no more (deformConvDesc.h).
        nvinfer1::PluginTensorDesc const& x = inputs[contract::kInputX].desc;
        DeformrtConvDesc const desc
            = makeDesc(inputs[contract::kInputX].max, inputs[contract::kInputW].max, outputs[0].max);
        return static_cast<size_t>(workspaceBytes(desc, x.format, x.type));
    }
    catch (std::exception const& e)
    {
        trt::logError("getWorkspaceSize: ", e.what());
    }
    return 0;
}

char const* DeformConv2dPlugin::getTimingCacheID() noexcept
{
    return mDescription.c_str();
}

char const* DeformConv2dPlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t DeformConv2dPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        // Only a check: TensorRT may call it lazily inside enqueueV3 (possibly during CUDA-graph capture) and on
        // another clone than the one that enqueues, so enqueue depends on nothing done here.
        return checkShapes("onShapeChange", in, nbInputs, out, nbOutputs);
    }
    catch (std::exception const& e)
    {
        trt::logError("onShapeChange: ", e.what());
    }
    return -1;
}

int32_t DeformConv2dPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            trt::logError("enqueue: missing tensors");
            return -1;
        }
        Dims const& yDims = outputDesc[0].dims;
        for (int32_t i = 0; i < yDims.nbDims; ++i)
        {
            if (yDims.d[i] == 0)
            {
                return 0; // empty output: nothing to compute
            }
        }
        DeformrtConvDesc const desc
            = makeDesc(inputDesc[contract::kInputX].dims, inputDesc[contract::kInputW].dims, yDims);
        if (char const* why = deformrt_dcn_validate(&desc))
        {
            trt::logError(std::string("enqueue: ") + why);
            return -1;
        }
        DataType const type = inputDesc[0].type;
        if (!supportedType(type))
        {
            trt::logError("enqueue: unsupported data type");
            return -1;
        }
        int32_t const dtype = type == DataType::kHALF ? DEFORMRT_FLOAT16 : DEFORMRT_FLOAT32;
        bool const hasBias = mAttrs.hasBias != 0;
        bool const modulated = mAttrs.modulated != 0;
        void const* bias = hasBias ? inputs[contract::biasInputIndex(hasBias)] : nullptr;
        void const* mask = modulated ? inputs[contract::maskInputIndex(hasBias, modulated)] : nullptr;
        nvinfer1::TensorFormat const xFormat = inputDesc[contract::kInputX].format;
        if (xFormat != outputDesc[0].format || (xFormat == nvinfer1::TensorFormat::kHWC8 && type != DataType::kHALF)
            || (xFormat != nvinfer1::TensorFormat::kHWC8 && xFormat != nvinfer1::TensorFormat::kLINEAR))
        {
            trt::logError("enqueue: X and Y must both be linear, or both fp16 kHWC8");
            return -1;
        }
        if (xFormat == nvinfer1::TensorFormat::kHWC8)
        {
            return enqueueChannelsLast(desc, inputs[contract::kInputX], inputs[contract::kInputW],
                inputs[contract::kInputOffset], bias, mask, outputs[0], workspace, stream);
        }
        // TensorRT's workspace holds getWorkspaceSize's answer for the profile's largest shapes, at least what
        // these shapes need: that is the capacity the kernels may use.
        uint64_t const capacity = workspaceBytes(desc, xFormat, type);
#if DEFORMRT_PLUGIN_HOST_KERNELS
        // Test variant (CMake DEFORMRT_PLUGIN_HOST_KERNELS): host pointers, the kernels' CPU build, no stream.
        (void) stream;
        if (deformrt_dcn_forward_host(&desc, dtype, inputs[contract::kInputX], inputs[contract::kInputW],
                inputs[contract::kInputOffset], bias, mask, outputs[0], workspace, capacity)
            != 0)
        {
            trt::logError("enqueue: the host kernels refused the call (a missing tensor or workspace)");
            return -1;
        }
        return 0;
#else
        cudaError_t const status = deformrt_dcn_forward(&desc, dtype, inputs[contract::kInputX],
            inputs[contract::kInputW], inputs[contract::kInputOffset], bias, mask, outputs[0], workspace, capacity,
            stream);
        if (status != cudaSuccess)
        {
            trt::logError(std::string("enqueue: ") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
            return -1;
        }
        return 0;
#endif
    }
    catch (std::exception const& e)
    {
        trt::logError("enqueue: ", e.what());
    }
    return -1;
}

nvinfer1::IPluginV3* DeformConv2dPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* DeformConv2dPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

// -------------------------------------------------------------------------------------------------
// Creator

DeformConv2dCreator::DeformConv2dCreator()
{
    DeformConvAttrs layout;
    for (AttrField const& f : attrFields(layout))
    {
        mFieldNames.emplace_back(f.name, nullptr, PluginFieldType::kINT32, f.length);
    }
    mFieldNames.emplace_back(contract::kAttrWeightLayout, nullptr, PluginFieldType::kCHAR, 0);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

nvinfer1::IPluginV3* DeformConv2dCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        return new DeformConv2dPlugin(parseAttrs(fc));
    }
    catch (std::exception const& e)
    {
        trt::logError("cannot create the plugin: ", e.what());
    }
    return nullptr;
}

nvinfer1::PluginFieldCollection const* DeformConv2dCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

char const* DeformConv2dCreator::getPluginName() const noexcept
{
    return contract::kPluginName;
}

char const* DeformConv2dCreator::getPluginVersion() const noexcept
{
    return contract::kPluginVersion;
}

char const* DeformConv2dCreator::getPluginNamespace() const noexcept
{
    return contract::kPluginNamespace;
}

} // namespace plugin
} // namespace deformrt
