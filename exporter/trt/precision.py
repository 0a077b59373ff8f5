"""Precision decisions per TensorRT major version (pure functions, tested without TensorRT).

fp16. TensorRT 10 builds fp16 engines from the fp32 network with ``BuilderFlag.FP16`` (weak
typing). TensorRT 11 is strongly typed only and has no such flag: the network itself must be
fp16, so deformrt converts the fp32 ONNX to mixed fp16 (:mod:`exporter.onnx.fp16`) or, when asked,
with NVIDIA ModelOpt AutoCast, and builds it strongly typed. ``fp16_method`` picks the path:
``auto`` (the flag on 10, deformrt's conversion on 11), ``builder-flag`` (10 only), ``deformrt``
or ``modelopt`` (both work on 10 too, so a TensorRT 10 machine can test the 11 path).

fp32 engines are built without TF32 (TensorRT enables it by default on Ampere and newer) so an
"fp32" engine keeps fp32 accuracy; ``tf32=True`` allows it and records precision ``tf32``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Container, Mapping, Optional, Sequence, Union

from models.errors import DeformRTError

FP16_METHODS = ("auto", "builder-flag", "deformrt", "modelopt")
# BuilderFlag.FP16 is deprecated from TensorRT 10.12 ("superseded by strong typing") and gone in 11.
FP16_FLAG_DEPRECATED = (10, 12)


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get the requested precision from a given TensorRT version."""

    precision: str  # "fp32", "tf32" or "fp16" (recorded in the sidecar)
    fp16_method: Optional[str]  # "builder-flag", "deformrt", "modelopt"; None for fp32/tf32
    strongly_typed: bool  # build with NetworkDefinitionCreationFlag.STRONGLY_TYPED (always on in 11)
    set_flags: tuple[str, ...] = ()  # BuilderFlag names to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag names to clear
    # Weakly typed fp16 only *allows* fp16: TensorRT may time the plugin in fp32 and keep it
    # (NVIDIA/TensorRT#2246). The plugin layers then get fp16 precision and output types, obeyed.
    constrain_plugin_layers: bool = False

    @property
    def converts_onnx(self) -> bool:
        """True when the network is built from an fp16 ONNX made before parsing."""
        return self.fp16_method in ("deformrt", "modelopt")


def plan_precision(trt_version: Union[int, tuple[int, int]], fp16: bool, fp16_method: str = "auto",
                   tf32: bool = False) -> PrecisionPlan:
    """Pick builder flags and network typing for ``fp16`` on TensorRT ``trt_version`` ((major,
    minor), or a major alone meaning its first release). ``auto`` fp16 is the strongly typed path
    (deformrt's mixed-fp16 ONNX) wherever the FP16 flag is deprecated or gone, else the flag with
    the plugin layers constrained to fp16."""
    version = (trt_version, 0) if isinstance(trt_version, int) else tuple(trt_version)
    major = version[0]
    if fp16_method not in FP16_METHODS:
        raise DeformRTError(f"unknown fp16 method {fp16_method!r}; choose from {', '.join(FP16_METHODS)}")
    strongly_typed_always = major >= 11
    if not fp16:
        if fp16_method != "auto":
            raise DeformRTError(f"--fp16-via {fp16_method} needs --fp16")
        if tf32:
            return PrecisionPlan("tf32", None, strongly_typed_always, set_flags=("TF32",))
        return PrecisionPlan("fp32", None, strongly_typed_always, clear_flags=("TF32",))
    if tf32:
        raise DeformRTError("--tf32 applies to fp32 engines; drop it with --fp16")
    method = fp16_method
    if method == "auto":
        method = "deformrt" if version >= FP16_FLAG_DEPRECATED else "builder-flag"
    if method == "builder-flag":
        if strongly_typed_always:
            raise DeformRTError(f"TensorRT {major} is strongly typed only and has no FP16 builder flag; "
                                f"use --fp16-via deformrt or --fp16-via modelopt")
        return PrecisionPlan("fp16", method, False, set_flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"),
                             constrain_plugin_layers=True)
    return PrecisionPlan("fp16", method, True)


def constrain_plugin_layers(trt, network) -> int:
    """Give every plugin layer of ``network`` fp16 precision and fp16 outputs (for a weakly typed
    fp16 build with OBEY_PRECISION_CONSTRAINTS); return how many layers were constrained."""
    plugin_types = {getattr(trt.LayerType, n) for n in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN")
                    if hasattr(trt.LayerType, n)}
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in plugin_types:
            continue
        layer.precision = trt.float16
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float16)
        count += 1
    return count


def layer_precision_summary(engine_info: Union[str, dict], nodes: Optional[Container[str]] = None) -> dict[str, int]:
    """Count the output element types of an engine's plugin layers from the engine inspector's JSON
    (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` with DETAILED
    profiling verbosity): {"fp16": n, "fp32": m, ...}. Empty when the engine carries no layer detail.
    ``nodes``: count only the plugin layers made from these ONNX nodes (:func:`layer_node`; a
    detector's DCN nodes, leaving out its ROIAlign_TRT layers, which are fp32 by design)."""
    info = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    counts: dict[str, int] = {}
    for layer in info.get("Layers", []) if isinstance(info, dict) else []:
        if not isinstance(layer, dict) or "plugin" not in str(layer.get("LayerType", "")).lower():
            continue
        if nodes is not None and layer_node(str(layer.get("Name", "")), str(layer.get("Metadata", "")), nodes) is None:
            continue
        for out in layer.get("Outputs", []):
            text = str(out.get("Format/Datatype", "")) if isinstance(out, dict) else ""
            kind = next((name for tag, name in _TYPE_TAGS if tag in text), "other")
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# How the inspector spells element types inside its "Format/Datatype" strings.
_TYPE_TAGS = (("FP16", "fp16"), ("Half", "fp16"), ("BF16", "bf16"), ("FP32", "fp32"), ("Float", "fp32"),
              ("Int8", "int8"), ("INT8", "int8"))


def network_flags(trt, trt_major: int, strongly_typed: bool) -> int:
    """The ``create_network`` flag bits: STRONGLY_TYPED when asked on TensorRT 10 (on 11 the flag is
    deprecated and ignored because every network is strongly typed, so none is passed)."""
    if not strongly_typed or trt_major >= 11:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise DeformRTError(f"TensorRT {trt.__version__} has no strongly typed networks (needs 10.0 or newer)")
    return 1 << int(flag)



# ----------------------------------------------------------------------------------------------
# Whole-detector files on weakly typed fp16 (TensorRT 10 with the FP16 builder flag)
#
# The flag only allows fp16; box decoding, NMS, ROIAlign's coordinates and the scores must stay
# fp32 (fp16's spacing is 1 px above 1024 and 1e-3 on a score), and the DCN plugin layers must be
# fp16 (TensorRT may time them in fp32 and keep it). The ONNX side decides per node
# (:func:`exporter.onnx.detector_export.detector_node_precisions`); these functions carry that
# decision to TensorRT's layers, which the ONNX parser names after their node.

_ONNX_LAYER_TAG = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_UNIQUE_SUFFIX = re.compile(r"_\d+$")


def layer_node(layer_name: str, metadata: str, node_names: Container[str]) -> Optional[str]:
    """The ONNX node a parsed layer came from: the node the parser records in the layer's metadata
    (``[ONNX Layer: NAME]``, TensorRT 10.1+ parsers; the last one when nested), else the layer's own
    name, else that name without the ``_N`` suffixes the parser appends to make names unique (a
    node that became several layers). None for a layer the parser made on its own."""
    for name in reversed(_ONNX_LAYER_TAG.findall(metadata or "")):
        if name in node_names:
            return name
    name = layer_name
    while True:
        if name in node_names:
            return name
        shorter = _UNIQUE_SUFFIX.sub("", name)
        if shorter == name:
            return None
        name = shorter


@dataclass(frozen=True)
class LayerConstraint:
    """One layer's forced precision: ``dtype`` ("fp32" or "fp16") for the layer and each of its
    floating-point outputs (``outputs``: their indices)."""

    index: int
    dtype: str
    outputs: tuple[int, ...]


def detector_layer_constraints(layers: Sequence[tuple[str, str, Sequence[str]]],
                               node_precisions: Mapping[str, str]) -> list[LayerConstraint]:
    """The constraints for a parsed detector network: ``layers`` as (name, metadata, output element
    type names such as ``"FLOAT"``/``"HALF"``/``"INT32"``) in network order, ``node_precisions`` the
    ONNX node -> "fp32"/"fp16" decision. Only layers with floating-point outputs are constrained,
    and only those outputs get a type (an int32 index or a bool mask keeps its own); layers of no
    decided node are left to TensorRT."""
    constraints = []
    for index, (name, metadata, out_types) in enumerate(layers):
        node = layer_node(name, metadata, node_precisions)
        if node is None:
            continue
        floats = tuple(j for j, t in enumerate(out_types) if str(t).rsplit(".", 1)[-1] in _FLOAT_TYPE_NAMES)
        if floats:  # an integer or shape layer (index arithmetic) has no float precision to force
            constraints.append(LayerConstraint(index, node_precisions[node], floats))
    return constraints


_FLOAT_TYPE_NAMES = frozenset({"FLOAT", "HALF", "float32", "float16"})


def constrain_detector_layers(trt, network, node_precisions: Mapping[str, str]) -> dict[str, int]:
    """Apply :func:`detector_layer_constraints` to ``network`` (for a weakly typed fp16 build with
    OBEY_PRECISION_CONSTRAINTS); return how many layers went to each precision."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    described = [(layer.name, getattr(layer, "metadata", "") or "",
                  [getattr(layer.get_output(j).dtype, "name", str(layer.get_output(j).dtype))
                   for j in range(layer.num_outputs)]) for layer in layers]
    dtypes = {"fp32": trt.float32, "fp16": trt.float16}
    counts: dict[str, int] = {}
    for c in detector_layer_constraints(described, node_precisions):
        layer = layers[c.index]
        layer.precision = dtypes[c.dtype]
        for j in c.outputs:
            layer.set_output_type(j, dtypes[c.dtype])
        counts[c.dtype] = counts.get(c.dtype, 0) + 1
    return counts
