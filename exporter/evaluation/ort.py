"""ONNX Runtime sessions for deformrt models.

ONNX Runtime has no kernel for our custom op, so a plugin-flavour model is run through a copy
rewritten to standard ``DeformConv`` (:func:`exporter.onnx.passes.to_onnx_op`), which changes
only the DCN nodes; the file on disk is untouched. The provider is always named explicitly: the
CPU provider alone on machines without CUDA (asking for CUDA there makes ONNX Runtime log an
error and fall back silently).
"""

from __future__ import annotations

from typing import Optional, Union

import onnx

from models.errors import DeformRTError

ORT_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def ort_model_bytes(model: Union[onnx.ModelProto, bytes]) -> bytes:
    """The serialized model ONNX Runtime can run: our DCN op rewritten to standard DeformConv."""
    from exporter.onnx.passes import is_plugin_deform_conv, to_onnx_op

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    if not any(is_plugin_deform_conv(n) for n in proto.graph.node):
        return model if isinstance(model, bytes) else proto.SerializeToString()
    if proto is model:  # the caller's model stays untouched; a model parsed here is rewritten in place
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    to_onnx_op(proto)
    return proto.SerializeToString()


def last_sentences(text: str, limit: int = 240) -> str:
    """The closing sentences of a long library message (where the reason usually is), one line."""
    sentences = " ".join(text.split()).split(". ")
    kept: list[str] = []
    for sentence in reversed(sentences):
        if kept and len(sentence) + sum(len(k) + 2 for k in kept) > limit:
            break
        kept.insert(0, sentence)
    return ". ".join(kept)


def ort_session(model: Union[onnx.ModelProto, bytes], provider: str = "cpu", hint: str = "",
                provider_flag: str = "--ort-provider", profile_prefix: Optional[str] = None):
    """An ONNX Runtime session on ``provider`` ("cpu" or "cuda") for a deformrt model of either
    flavour. A model ONNX Runtime refuses (the error carries ``hint``, e.g. what to try), or CUDA
    asked for where ONNX Runtime cannot use it (the error names ``provider_flag``, the caller's
    option for the provider), is a DeformRTError. ``profile_prefix``: profile every node's run
    (ONNX Runtime's profiler writes ``<prefix>_<time>.json`` at ``end_profiling()``)."""
    import onnxruntime as ort

    if provider not in ORT_PROVIDERS:
        raise DeformRTError(f"unknown ONNX Runtime provider {provider!r}; choose from {', '.join(ORT_PROVIDERS)}")
    try:
        data = ort_model_bytes(model)
        options = ort.SessionOptions()
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        session = ort.InferenceSession(data, options, providers=ORT_PROVIDERS[provider])
    except Exception as exc:  # onnx and onnxruntime raise their own exception types
        reason = last_sentences(str(exc)) or type(exc).__name__
        raise DeformRTError(f"ONNX Runtime {ort.__version__} cannot load the model{f' ({hint})' if hint else ''}: {reason}") from None
    if provider == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise DeformRTError(f"ONNX Runtime cannot use CUDA here (no GPU or no CUDA libraries); use {provider_flag} cpu")
    return session
