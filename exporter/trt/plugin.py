"""Which deformrt plugin library a model needs, and loading it into TensorRT's registry."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from exporter.onnx import op_contract as oc
from exporter.trt.env import init_trt_plugins
from models.errors import DeformRTError

# Handles TensorRT returned for the libraries this process loaded, kept so they stay referenced.
_LOADED: dict[str, object] = {}
_LOAD_LOCK = threading.Lock()


def registered_creator(registry):
    """Our creator when TensorRT's registry has it, else None."""
    return registry.get_creator(oc.PLUGIN_NAME, oc.PLUGIN_VERSION, oc.PLUGIN_NAMESPACE)


def load_plugin(trt, log, library: Path) -> None:
    """Make ``deformrt::DeformConv2d`` available in TensorRT's registry, loading ``library`` at most
    once per process. TensorRT's ``load_library`` refuses a library whose creator is already
    registered, so a creator that is already there (this library loaded earlier, or registered
    through ``ctypes.CDLL``/Polygraphy ``--plugins``) is reused as it is. DeformRTError when the
    library does not load or registers no such creator."""
    init_trt_plugins(trt, log)
    registry = trt.get_plugin_registry()
    with _LOAD_LOCK:
        if registered_creator(registry) is not None:
            return
        try:
            handle = registry.load_library(str(library))
        except Exception as exc:  # the bindings raise a plain RuntimeError/TypeError
            raise DeformRTError(f"TensorRT could not load the plugin library {library} ({exc})") from None
        if handle is None:
            raise DeformRTError(f"TensorRT could not load the plugin library {library} (see the TensorRT log "
                                f"above; was it built for this TensorRT major version?)")
        _LOADED[str(library)] = handle
        if registered_creator(registry) is None:
            raise DeformRTError(f"{library} loaded but registers no {oc.PLUGIN_NAMESPACE}::{oc.PLUGIN_NAME} "
                                f"version {oc.PLUGIN_VERSION} creator; rebuild the plugin (deformrt build-plugin)")


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

