"""What a deployment bundle contains and where (``deformrt deploy`` writes it, the device reads it).

Pure names and constants: imported on the workstation by :mod:`exporter.deploy.bundle` and on the
device by :mod:`exporter.deploy.check` (numpy only there), so the two never disagree::

    build.sh                        the on-device build and self-check (plugins/deploy/build.sh)
    README.md                       for the person at the device (plugins/deploy/README.md)
    bundle.json                     the manifest (:data:`MANIFEST_KEYS`)
    model.onnx                      plugin flavour (deformrt.DeformConv2d), fp32
    model-fp16.onnx                 plugin flavour, mixed fp16 (TensorRT 11 builds fp16 strongly typed)
    model-onnxdcn.onnx              standard ONNX DeformConv, fp32: the fallback that needs no plugin
    plugins/                        the plugin's and runtime's CMake project (sources only)
    python/                         deformrt's device-side Python (numpy and tensorrt only)
    reference/inputs/NAME.npy       one preprocessed float32 array per model input
    reference/outputs/NAME.npy      PyTorch fp32 outputs on those inputs, one per model output

The reference folders hold one ``NAME.npy`` per tensor, as ``deformrt-run --inputs DIR --check DIR``
reads them.
"""

from __future__ import annotations

SCHEMA = 1
MANIFEST = "bundle.json"
BUILD_SCRIPT = "build.sh"
README = "README.md"
MODEL_PLUGIN = "model.onnx"
MODEL_PLUGIN_FP16 = "model-fp16.onnx"
MODEL_ONNX_DCN = "model-onnxdcn.onnx"
PLUGINS_DIR = "plugins"
PYTHON_DIR = "python"
REFERENCE_INPUTS = "reference/inputs"
REFERENCE_OUTPUTS = "reference/outputs"

# The plugin implements IPluginV3 (TensorRT 10 and 11); build.sh refuses other majors.
TENSORRT_MAJORS = (10, 11)
DEFAULT_PRECISION = "fp16"
PRECISIONS = ("fp32", "fp16")

# Top-level keys of bundle.json (schema 1).
MANIFEST_KEYS = ("schema", "deformrt_version", "created_at", "source", "model", "input", "outputs", "files",
                 "precision", "profile", "trtexec", "tensorrt_majors", "tolerances", "reference", "sha256")
