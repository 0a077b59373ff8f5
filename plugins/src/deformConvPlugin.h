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

//! Serialised with the contract's fields (never an ONNX attribute, never listed by getFieldNames): the
//! workspace bytes the build asked TensorRT for, i.e. what enqueue's workspace holds at run time.
constexpr char const* kWorkspaceBytesField = "workspace_bytes";

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

//! The contract's fields of ``attrs`` in contract order (the single list used to parse, serialise and
//! advertise fields).
std::array<AttrField, contract::kNumAttributes> attrFields(DeformConvAttrs& attrs);

//! Parse a field collection (integer fields, int32 or int64); throws std::invalid_argument naming the
//! offending field when a field is missing, has the wrong type or length, or the values are invalid.
DeformConvAttrs parseAttrs(nvinfer1::PluginFieldCollection const* fc);

//! The serialised kWorkspaceBytesField (0 when absent, as in a build-phase collection); throws
//! std::invalid_argument when it is malformed or negative.
int64_t parseWorkspaceBytes(nvinfer1::PluginFieldCollection const* fc);

class DeformConv2dPlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime
{
public:
    //! ``workspaceBytes``: what TensorRT allocates for enqueue (from a serialised engine; 0 until configured).
    explicit DeformConv2dPlugin(DeformConvAttrs const& attrs, int64_t workspaceBytes = 0);
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
    // The weights are an input tensor (the initializer arrives as a constant input), so "packed once"
    // means: a packed copy in device memory owned by this plugin instance (one per execution context:
    // attachToContext clones), allocated in onShapeChange (never inside enqueue, which may be captured in
    // a CUDA graph) and re-packed in enqueue only when the weight tensor's address or size changes (or the
    // last pack was only recorded into a graph being captured).
    // Refitting new weights into the same address is not detected (the engine is not built refittable).

    //! Whether X / Y of this format query may be kHWC8: fp16 channel counts that are multiples of 8 (so
    //! kHWC8 is dense NHWC) and a current device that runs the tensor-core kernel for the problem.
    bool channelsLastSupported(nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs) const;
    //! At least ``bytes`` of packed-weight storage; false (logged) when cudaMalloc fails.
    bool reservePackedWeights(uint64_t bytes);
    //! The kHWC8 forward pass; 0 or -1 (logged).
    int32_t enqueueChannelsLast(DeformrtConvDesc const& desc, void const* x, void const* weight, void const* offset,
        void const* bias, void const* mask, void* y, cudaStream_t stream);

    void* mPackedWeights{nullptr}; //!< never copied: each instance packs into its own storage
    uint64_t mPackedCapacity{0};
    void const* mPackedFrom{nullptr}; //!< weight tensor the packed copy was made from
    uint64_t mPackedBytes{0};         //!< its packed size

    //! Workspace size for these input/output descs' max dims (getWorkspaceSize's answer).
    size_t workspaceFor(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const;

    DeformConvAttrs mAttrs;
    //! getWorkspaceSize's answer recorded at configurePlugin (serialised): the bytes enqueue receives.
    int64_t mWorkspaceBytes{0};
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
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
