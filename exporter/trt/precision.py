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

from dataclasses import dataclass
from typing import Optional

from models.errors import DeformRTError

FP16_METHODS = ("auto", "builder-flag", "deformrt", "modelopt")


@dataclass(frozen=True)
class PrecisionPlan:
    """How to get the requested precision from a given TensorRT major version."""

    precision: str  # "fp32", "tf32" or "fp16" (recorded in the sidecar)
    fp16_method: Optional[str]  # "builder-flag", "deformrt", "modelopt"; None for fp32/tf32
    strongly_typed: bool  # build with NetworkDefinitionCreationFlag.STRONGLY_TYPED (always on in 11)
    set_flags: tuple[str, ...] = ()  # BuilderFlag names to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag names to clear

    @property
    def converts_onnx(self) -> bool:
        """True when the network is built from an fp16 ONNX made before parsing."""
        return self.fp16_method in ("deformrt", "modelopt")


def plan_precision(trt_major: int, fp16: bool, fp16_method: str = "auto", tf32: bool = False) -> PrecisionPlan:
    """Pick builder flags and network typing for ``fp16`` on TensorRT ``trt_major``."""
    if fp16_method not in FP16_METHODS:
        raise DeformRTError(f"unknown fp16 method {fp16_method!r}; choose from {', '.join(FP16_METHODS)}")
    strongly_typed_always = trt_major >= 11
    if not fp16:
        if fp16_method != "auto":
            raise DeformRTError(f"--fp16-via {fp16_method} needs --fp16")
        if tf32:
            return PrecisionPlan("tf32", None, strongly_typed_always, set_flags=("TF32",))
        return PrecisionPlan("fp32", None, strongly_typed_always, clear_flags=("TF32",))
    if tf32:
        raise DeformRTError("--tf32 applies to fp32 engines; drop it with --fp16")
    method = fp16_method if fp16_method != "auto" else ("deformrt" if strongly_typed_always else "builder-flag")
    if method == "builder-flag":
        if strongly_typed_always:
            raise DeformRTError(f"TensorRT {trt_major} is strongly typed only and has no FP16 builder flag; "
                                f"use --fp16-via deformrt or --fp16-via modelopt")
        return PrecisionPlan("fp16", method, False, set_flags=("FP16",))
    return PrecisionPlan("fp16", method, True)


def network_flags(trt, trt_major: int, strongly_typed: bool) -> int:
    """The ``create_network`` flag bits: STRONGLY_TYPED when asked on TensorRT 10 (on 11 the flag is
    deprecated and ignored because every network is strongly typed, so none is passed)."""
    if not strongly_typed or trt_major >= 11:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise DeformRTError(f"TensorRT {trt.__version__} has no strongly typed networks (needs 10.0 or newer)")
    return 1 << int(flag)

