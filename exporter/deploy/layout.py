"""What a deployment bundle contains and where: ``deformrt deploy`` writes it, ``build.sh`` and
:mod:`exporter.deploy.check` read it on the device.

Names and constants, imported on the workstation by :mod:`exporter.deploy.bundle` and on the
device by :mod:`exporter.deploy.check`, so the two never disagree. The names are the ones
``plugins/deploy/build.sh`` reads::

    build.sh                    builds plugin, runtime and engine on the device, runs the self-check
    README.md                   for the person at the device (plugins/deploy/bundle-README.md, with
                                :data:`README_BUNDLE_MARKER` replaced by the bundle folder's name)
    deploy.conf                 key=value lines (:data:`CONF_KEYS`); build.sh reads it with sed
    metadata.json               the model's ``deformrt.*`` ONNX metadata (key -> string), which build.sh
                                copies into the engine's sidecar as ``onnx_metadata``
    SHA256SUMS                  every other file, ``sha256sum -c SHA256SUMS`` checks a copied bundle
    onnx/plugin-fp32.onnx       deformrt.DeformConv2d (the plugin), fp32
    onnx/plugin-fp16.onnx       the same, mixed fp16 (fp16 weights and compute, fp32 inputs/outputs,
                                normalisation in fp32): fp16 engines are built strongly typed from it
    onnx/onnx-fp32.onnx         standard ONNX DeformConv (TensorRT's own, no plugin): the fallback
    onnx/onnx-fp16.onnx         the same, mixed fp16
    plugins/                    the plugin's and runtime's CMake project (sources only)
    python/                     deformrt's device-side Python (numpy and tensorrt only)
    reference/inputs/NAME.npy   one preprocessed array per model input (a detector's: images float32
                                and image_sizes int32)
    reference/outputs/NAME.npy  fp32 outputs on those inputs, one per model output: PyTorch's for a
                                backbone; ONNX Runtime's detections for a detector (num_detections,
                                detection_boxes, ... as the file outputs them)

The reference folders hold one ``NAME.npy`` per tensor, as ``deformrt-run --inputs DIR --check DIR``
reads them.
"""

from __future__ import annotations

from exporter.evaluation.detection_sets import DETECTION_TOLERANCES as _COMPARE_TOLERANCES

CONF = "deploy.conf"
CONF_FORMAT = 1
METADATA = "metadata.json"
CHECKSUMS = "SHA256SUMS"
BUILD_SCRIPT = "build.sh"
README = "README.md"
README_BUNDLE_MARKER = "@BUNDLE@"  # in bundle-README.md: the bundle folder's name (its `cd` line)
ONNX_DIR = "onnx"
PLUGINS_DIR = "plugins"
PYTHON_DIR = "python"
REFERENCE_INPUTS = "reference/inputs"
REFERENCE_OUTPUTS = "reference/outputs"

DCN_FLAVOURS = ("plugin", "onnx")  # deformrt's plugin op, standard DeformConv
PRECISIONS = ("fp32", "fp16")
DEFAULT_PRECISION = "fp16"
# The plugin implements IPluginV3 (TensorRT 10 and 11); build.sh refuses other majors.
TENSORRT_MAJORS = (10, 11)

# deploy.conf keys in the order written, each after a comment line saying what it is (the format of
# plugins/deploy/deploy.conf.example). build.sh reads format, deformrt_version, tensorrt_majors, the
# shapes and the tolerances; the rest says what the bundle holds and where its references came from.
CONF_KEYS = {
    "format": "Format of this file.",
    "deformrt_version": "deformrt's version, recorded in the engine sidecar.",
    "body": "The backbone, and its weights (a checkpoint file name, or seed:N for seeded random init).",
    "weights": None,
    "tensorrt_majors": "TensorRT majors the bundle's plugin sources support; build.sh refuses any other.",
    "model": "backbone or detector; a detector's kind, classes (background included), fixed number of detections "
             "D, mask size (0: no masks), score threshold and NMS IoU threshold (empty for a backbone).",
    "detector_kind": None,
    "classes": None,
    "detections": None,
    "mask_size": None,
    "score_threshold": None,
    "nms_threshold": None,
    "precision": "Engine precision deformrt deploy was asked for (./build.sh --fp32 or --fp16 chooses either way).",
    "inputs": "Model inputs and outputs: reference/inputs/NAME.npy and reference/outputs/NAME.npy.",
    "outputs": None,
    "min_shapes": "trtexec shape profile, name:NxCxHxW per input (all three empty for a static model).",
    "opt_shapes": None,
    "max_shapes": None,
    "tolerance_fp32": "Pass threshold of the self-check: max |engine - PyTorch fp32| / max |PyTorch fp32|, per output.",
    "tolerance_fp16": None,
    "match_iou_fp32": "A detector's self-check compares detections as sets (deformrt-run --check): a pair needs the "
                      "same class and IoU >= match_iou; pairs' score and mask-probability errors within the "
                      "tolerances; an unmatched detection whose score is within borderline of a cut (the score "
                      "threshold, or the lowest score of a side that filled all D rows), or whose IoU with a "
                      "same-class detection is within borderline of the NMS threshold, is a named near-tie; any "
                      "other unmatched detection fails (empty for a backbone).",
    "score_tolerance_fp32": None,
    "mask_tolerance_fp32": None,
    "borderline_fp32": None,
    "match_iou_fp16": None,
    "score_tolerance_fp16": None,
    "mask_tolerance_fp16": None,
    "borderline_fp16": None,
    "reference_shape": "The reference input: its shape, random images (seed) or the images given, and what computed "
                       "the reference outputs.",
    "reference_source": None,
    "reference_seed": None,
    "reference_images": None,
    "reference_by": None,
}


# The self-check of a detector engine against the fp32 reference detections, per engine precision
# (deploy.conf's match_iou_*, score_tolerance_*, mask_tolerance_*, borderline_*; README "Detector
# bundles"): `deformrt compare`'s detector tolerances, one table for both.
DETECTION_TOLERANCES = {
    p: {"match_iou": _COMPARE_TOLERANCES[p].iou, "score_tolerance": _COMPARE_TOLERANCES[p].score,
        "mask_tolerance": _COMPARE_TOLERANCES[p].mask, "borderline": _COMPARE_TOLERANCES[p].margin}
    for p in PRECISIONS
}
DETECTOR_INPUTS = ("images", "image_sizes")


def onnx_model(dcn: str, precision: str) -> str:
    """The bundle path of one model flavour, as build.sh names it: ``onnx/<dcn>-<precision>.onnx``."""
    return f"{ONNX_DIR}/{dcn}-{precision}.onnx"
