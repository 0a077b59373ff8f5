"""The JSON sidecar written next to every engine: what it was built from, with and for.

``deformrt build-engine -o model.plan`` writes ``model.plan`` and ``model.plan.json``. A TensorRT
engine only runs with the TensorRT version and on the kind of GPU it was built for, and needs the
plugin library it was built with; TensorRT's own failure for a mismatch is a terse log line and a
null engine. The sidecar records those facts so :func:`check_compatible` can say plainly what
differs before deserialising. Keys (``schema`` 1)::

    schema, deformrt_version, tensorrt_version, gpu_name, compute_capability, precision,
    fp16_method, profiles [{name, min, opt, max}], plugin_path, plugin_sha256, onnx_path,
    onnx_sha256, onnx_metadata {deformrt.* -> str}, built_at (UTC ISO 8601), build_options {...},
    plugin_layer_types, outputs [{name, shape, dtype}], detector {kind, num_classes, ...} or null

This module is pure (no TensorRT); the environment is passed in as a :class:`RuntimeEnv`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO, Union

from exporter.trt.profiles import ShapeProfile
from models.errors import DeformRTError, require_file

SCHEMA = 1
PRECISIONS = ("fp32", "tf32", "fp16")


def sidecar_path(engine: Union[str, Path]) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


@dataclass(frozen=True)
class RuntimeEnv:
    """The TensorRT version and GPU an engine is built or loaded on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"


@dataclass
class EngineMeta:
    """The sidecar's content (see the module docstring)."""

    deformrt_version: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: list[ShapeProfile]
    onnx_path: str
    onnx_sha256: str
    onnx_metadata: dict[str, str]
    fp16_method: Optional[str] = None  # "builder-flag", "deformrt" or "modelopt" when precision is fp16
    plugin_path: Optional[str] = None
    plugin_sha256: Optional[str] = None
    built_at: str = ""
    build_options: dict = field(default_factory=dict)
    # Output element types of the engine's plugin (DCN) layers as the engine inspector reports them,
    # e.g. {"fp16": 13}: what really runs, which weakly typed TensorRT may choose unlike `precision`.
    plugin_layer_types: Optional[dict[str, int]] = None
    # The ONNX file's outputs [{name, shape, dtype}] (a detector's fixed-size detection tensors),
    # and a whole detector's own metadata (kind, classes, detection rows, mask size); None in
    # sidecars written before these fields existed.
    outputs: Optional[list[dict]] = None
    detector: Optional[dict] = None
    schema: int = SCHEMA

    def to_json(self) -> str:
        d = {
            "schema": self.schema,
            "deformrt_version": self.deformrt_version,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "fp16_method": self.fp16_method,
            "profiles": [p.to_dict() for p in self.profiles],
            "plugin_path": self.plugin_path,
            "plugin_sha256": self.plugin_sha256,
            "onnx_path": self.onnx_path,
            "onnx_sha256": self.onnx_sha256,
            "onnx_metadata": dict(sorted(self.onnx_metadata.items())),
            "built_at": self.built_at,
            "build_options": self.build_options,
            "plugin_layer_types": self.plugin_layer_types,
            "outputs": self.outputs,
            "detector": self.detector,
        }
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> "EngineMeta":
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise DeformRTError(f"{source} is not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise DeformRTError(f"{source} is not a JSON object")
        if d.get("schema") != SCHEMA:
            raise DeformRTError(f"{source} has schema {d.get('schema')!r}; this deformrt reads schema {SCHEMA}")
        try:
            meta = cls(
                deformrt_version=str(d["deformrt_version"]),
                tensorrt_version=str(d["tensorrt_version"]),
                gpu_name=str(d["gpu_name"]),
                compute_capability=str(d["compute_capability"]),
                precision=str(d["precision"]),
                profiles=[ShapeProfile.from_dict(p) for p in d["profiles"]],
                onnx_path=str(d["onnx_path"]),
                onnx_sha256=str(d["onnx_sha256"]),
                onnx_metadata={str(k): str(v) for k, v in d["onnx_metadata"].items()},
                fp16_method=d.get("fp16_method"),
                plugin_path=d.get("plugin_path"),
                plugin_sha256=d.get("plugin_sha256"),
                built_at=str(d.get("built_at", "")),
                build_options=dict(d.get("build_options") or {}),
                plugin_layer_types=({str(k): int(v) for k, v in d["plugin_layer_types"].items()}
                                    if d.get("plugin_layer_types") else None),
                outputs=([{"name": str(o["name"]), "shape": list(o["shape"]), "dtype": str(o["dtype"])}
                          for o in d["outputs"]] if d.get("outputs") is not None else None),
                detector=dict(d["detector"]) if d.get("detector") is not None else None,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DeformRTError(f"{source} is missing or has a malformed field ({type(exc).__name__}: {exc})") from None
        if meta.precision not in PRECISIONS:
            raise DeformRTError(f"{source}: precision {meta.precision!r} is not one of {', '.join(PRECISIONS)}")
        return meta

    def profile(self, name: str) -> ShapeProfile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise DeformRTError(f"the engine has no input {name!r} (inputs: {', '.join(p.name for p in self.profiles)})")


def read_sidecar(engine: Union[str, Path]) -> EngineMeta:
    """Read ``<engine>.json``; DeformRTError when the engine or its sidecar is missing or malformed."""
    engine = require_file(engine, "engine file")
    side = sidecar_path(engine)
    if not side.is_file():
        raise DeformRTError(f"{engine} has no sidecar {side.name}: deformrt only loads engines it built with "
                            f"`deformrt build-engine` (rebuild it)")
    return EngineMeta.from_json(side.read_text(encoding="utf-8"), source=str(side))


def _version_key(version: str) -> tuple[str, ...]:
    """Major.minor.patch: TensorRT engines are tied to the exact release, not the build number."""
    return tuple(version.split(".")[:3])


def check_compatible(meta: EngineMeta, env: RuntimeEnv, engine: str = "the engine",
                     warn: Optional[TextIO] = None) -> None:
    """DeformRTError when the engine cannot run on ``env``: another TensorRT release, or a GPU of
    another compute capability. A GPU of the same compute capability but another name only
    warns (TensorRT itself allows it, possibly with lower performance)."""
    if _version_key(meta.tensorrt_version) != _version_key(env.tensorrt_version):
        raise DeformRTError(f"{engine} was built with TensorRT {meta.tensorrt_version}, this is TensorRT "
                            f"{env.tensorrt_version}; engines only load in the release that built them: rebuild it "
                            f"with `deformrt build-engine {meta.onnx_path}`")
    if meta.compute_capability != env.compute_capability:
        raise DeformRTError(f"{engine} was built for {meta.gpu_name} (compute capability {meta.compute_capability}), "
                            f"this GPU is {env.gpu_name} (compute capability {env.compute_capability}): rebuild it "
                            f"on this machine with `deformrt build-engine {meta.onnx_path}`")
    if meta.gpu_name != env.gpu_name:
        print(f"warning: {engine} was built on {meta.gpu_name}, running on {env.gpu_name} (same compute capability "
              f"{env.compute_capability}); rebuild it here for best performance", file=warn or sys.stderr)
