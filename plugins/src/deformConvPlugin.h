// TensorRT IPluginV3 plugin for the deformrt DeformConv2d op (contract: deformrt/opContract.h).
// Only TensorRT interface code lives here; the math is in the kernels (deformrt/deformConvKernel.h).
#pragma once

#include "deformrt/deformConvDesc.h"
#include "deformrt/opContract.h"

#include <NvInferRuntime.h>

#include <array>
#include <string>
#include <vector>

namespace deformrt
{
namespace plugin
{

//! A field engines serialised by earlier builds of the plugin carry (the workspace size of the last
//! configurePlugin call). Accepted and ignored: enqueue derives its workspace from the tensors it gets.
constexpr char const* kObsoleteWorkspaceBytesField = "workspace_bytes";

//! The op's attributes, exactly the contract's fields.
struct DeformConvAttrs
{
    int32_t kernelShape[2]{};
    int32_t strides[2]{};
    int32_t pads[4]{}; //!< top, left, bottom, right
    int32_t dilations[2]{};
    int32_t group{};
    int32_t offsetGroup{};
    int32_t modulated{};
    int32_t hasBias{};
    int32_t weightLayout{DEFORMRT_WEIGHT_OIHW}; //!< contract weight_layout (DeformrtWeightLayout); default OIHW

    int32_t numInputs() const;
    //! Why the attributes break the contract (one sentence), or "" when they are valid.
    std::string invalidReason() const;
};

//! One contract field: its name, number of int32 values and where they live in a DeformConvAttrs.
struct AttrField
{
    char const* name;
    int32_t length;
    int32_t* data;
};

//! The contract's integer fields of ``attrs`` in contract order (the single list used to parse, serialise
//! and advertise them); weight_layout, the one string field, follows them.
std::array<AttrField, contract::kNumIntAttributes> attrFields(DeformConvAttrs& attrs);

//! The contract's name of a DeformrtWeightLayout ("OIHW", "OHWI").
char const* weightLayoutName(int32_t layout);

//! Parse a field collection (integer fields, int32 or int64; weight_layout as a string, optional); throws
//! std::invalid_argument naming the offending field when a field is missing, unknown, has the wrong type or
//! length, or the values are invalid.
DeformConvAttrs parseAttrs(nvinfer1::PluginFieldCollection const* fc);

class DeformConv2dPlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit DeformConv2dPlugin(DeformConvAttrs const& attrs);
    DeformConv2dPlugin(DeformConv2dPlugin const& other);
    DeformConv2dPlugin& operator=(DeformConv2dPlugin const&) = delete;
    ~DeformConv2dPlugin() override;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getTimingCacheID() noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void initFields();
    //! Why these input shapes do not fit the attributes ("" when they do); unknown (-1) dims are skipped.
    std::string shapeMismatch(nvinfer1::Dims const* inputs, int32_t nbInputs) const;
    //! 0 when ``nbInputs`` input descs and one output fit the attributes, else logs why (prefixed with
    //! ``where``) and returns -1: the shared check of configurePlugin and onShapeChange.
    template <typename TensorDesc>
    int32_t checkShapes(
        char const* where, TensorDesc const* in, int32_t nbInputs, void const* out, int32_t nbOutputs) const;
    //! The kernel problem for concrete input and output shapes.
    DeformrtConvDesc makeDesc(nvinfer1::Dims const& x, nvinfer1::Dims const& w, nvinfer1::Dims const& y) const;

    // --- fp16 channels-last (TensorRT kHWC8) on the tensor-core kernel ----------------------------
    // No state: the kernel reads an OHWI weight in place, and an OIHW one is transposed into TensorRT's
    // workspace on every enqueue. Every decision enqueue makes (format, type, workspace) comes from the
    // descriptors it is given, never from configurePlugin (called once per candidate combination while
    // TensorRT times them) or onShapeChange (called lazily, on clones, in any order).

    //! Whether X may be kHWC8 (supportsFormatCombination at X's position, from X alone): fp16, a known
    //! channel count that is a multiple of 8 (kHWC8 is then dense NHWC) and a tensor-core kernel that
    //! takes those channels.
    bool channelsLastInput(nvinfer1::PluginTensorDesc const& x) const;
    //! Whether Y may be kHWC8 after X was (at Y's position, from X, W and Y): W's output channels a multiple
    //! of 8 and the tensor-core kernel runs the whole problem.
    bool channelsLastOutput(nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs) const;
    //! The kHWC8 forward pass; 0 or -1 (logged).
    int32_t enqueueChannelsLast(DeformrtConvDesc const& desc, void const* x, void const* weight, void const* offset,
        void const* bias, void const* mask, void* y, void* workspace, cudaStream_t stream);

    //! Workspace bytes enqueue needs for concrete shapes in ``xFormat`` and ``type``: getWorkspaceSize asks
    //! it for the profile's largest shapes, enqueue for the shapes it runs (never more, deformConvDesc.h).
    static uint64_t workspaceBytes(DeformrtConvDesc const& desc, nvinfer1::TensorFormat xFormat, nvinfer1::DataType type);

    DeformConvAttrs mAttrs;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
    std::string mWeightLayoutName; //!< serialised weight_layout (kCHAR, with its NUL)
    std::string mDescription;
};

class DeformConv2dCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    DeformConv2dCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace deformrt
