"""Load a serialized engine: sidecar check against this machine, plugin, deserialization."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

from exporter.trt.env import current_env, import_tensorrt, init_trt_plugins, logger
from exporter.trt.plugin import load_plugin, resolve_plugin
from exporter.trt.sidecar import EngineMeta, check_compatible, read_sidecar
from exporter.util.fsutil import sha256_file
from models.errors import DeformRTError

@dataclass
class LoadedEngine:
    """A deserialized engine with what keeps it valid (runtime, plugin) and its sidecar."""

    engine: object
    meta: EngineMeta
    runtime: object = None
    logger: object = None


def deserialize(plan: bytes, meta: EngineMeta, plugin: Optional[Path], verbose: bool = False,
                name: str = "the engine") -> LoadedEngine:
    """Deserialize plan bytes after checking ``meta`` against this machine."""
    trt = import_tensorrt()
    check_compatible(meta, current_env(trt), engine=name)
    log = logger(trt, verbose)
    if plugin is not None:
        load_plugin(trt, log, plugin)
    else:
        init_trt_plugins(trt, log)
    runtime = trt.Runtime(log)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise DeformRTError(f"TensorRT could not deserialize {name} (see its log above); rebuild it with "
                            f"`deformrt build-engine`")
    return LoadedEngine(engine, meta, runtime, log)


def load_engine(path: Path, plugin: Optional[Path] = None, verbose: bool = False,
                warn: Optional[TextIO] = None) -> LoadedEngine:
    """Load ``path`` using its sidecar: version/GPU check, plugin (``plugin``, else the recorded one,
    else the finder; a plugin whose hash differs from the recorded one only warns)."""
    meta = read_sidecar(path)
    library = None
    if meta.plugin_path:
        library = resolve_plugin(plugin, meta.plugin_path)
        if meta.plugin_sha256 and sha256_file(library) != meta.plugin_sha256:
            print(f"warning: plugin {library} differs from the one {path} was built with ({meta.plugin_path}); "
                  f"rebuild the engine if it fails to load", file=warn or sys.stderr)
    return deserialize(Path(path).read_bytes(), meta, library, verbose, name=str(path))

