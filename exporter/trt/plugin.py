"""Which deformrt plugin library a model needs, and loading it into TensorRT's registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from exporter.onnx import op_contract as oc
from models.errors import DeformRTError

def load_plugin(trt, logger, library: Path) -> None:
    """Register TensorRT's own plugins and our library's creators; DeformRTError when the library
    does not load or registers no ``deformrt::DeformConv2d`` creator."""
    trt.init_libnvinfer_plugins(logger, "")
    registry = trt.get_plugin_registry()
    try:
        handle = registry.load_library(str(library))
    except Exception as exc:  # the bindings raise a plain RuntimeError/TypeError
        raise DeformRTError(f"TensorRT could not load the plugin library {library} ({exc})") from None
    if handle is None:
        raise DeformRTError(f"TensorRT could not load the plugin library {library} (see the TensorRT log above)")
    creator = registry.get_creator(oc.PLUGIN_NAME, oc.PLUGIN_VERSION, oc.PLUGIN_NAMESPACE)
    if creator is None:
        raise DeformRTError(f"{library} loaded but registers no {oc.PLUGIN_NAMESPACE}::{oc.PLUGIN_NAME} version "
                            f"{oc.PLUGIN_VERSION} creator; rebuild the plugin (deformrt build-plugin)")


def resolve_plugin(explicit: Optional[Path], recorded: Optional[str] = None) -> Path:
    """The plugin library to use: ``explicit``, else the one an engine recorded (when it still
    exists), else the plugin finder's answer (which raises naming where it looked)."""
    from models.native import find_plugin_library

    if explicit is None and recorded and Path(recorded).is_file():
        return Path(recorded)
    try:
        return find_plugin_library(explicit)
    except DeformRTError as exc:
        raise DeformRTError(f"the model uses {oc.OP_DOMAIN}.{oc.OP_NAME}, which needs the deformrt TensorRT plugin: "
                            f"{exc}") from None


def uses_plugin(model) -> bool:
    """True when an ``onnx.ModelProto`` contains our custom DCN op."""
    from exporter.onnx.passes import is_plugin_deform_conv

    return any(is_plugin_deform_conv(node) for node in model.graph.node)

