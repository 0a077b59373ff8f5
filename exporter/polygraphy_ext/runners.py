"""The runners behind ``--deformrt-torch`` and ``--deformrt-onnxrt``, as the script ``polygraphy run``
generates (and ``--gen-script`` prints) builds them.

They are deformrt's own runners (:mod:`exporter.evaluation.runners`, the ones ``deformrt compare``
uses), with one difference: our errors (a checkpoint that does not match, a CUDA device that is not
there, a model ONNX Runtime refuses) are reported as Polygraphy reports user errors, one critical
log line and exit status 1, instead of a traceback.
"""

from __future__ import annotations

import functools
from typing import Optional

from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.logger import G_LOGGER

from exporter.evaluation.runners import DetectorTorchRunner, TorchRunner
from models.errors import DeformRTError


def report_errors(func):
    """``func``, with a DeformRTError turned into Polygraphy's critical log line (which raises
    PolygraphyException, so ``polygraphy run`` exits with status 1 and no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DeformRTError as exc:
            G_LOGGER.critical(f"deformrt: {exc}")

    return wrapper


class DeformrtTorchRunner(TorchRunner):
    """:class:`TorchRunner` reporting errors the Polygraphy way."""

    activate_impl = report_errors(TorchRunner.activate_impl)
    infer_impl = report_errors(TorchRunner.infer_impl)


class DeformrtDetectorTorchRunner(DetectorTorchRunner):
    """:class:`DetectorTorchRunner` reporting errors the Polygraphy way."""

    activate_impl = report_errors(DetectorTorchRunner.activate_impl)
    infer_impl = report_errors(DetectorTorchRunner.infer_impl)


class DeformrtOnnxrtRunner(OnnxrtRunner):
    """Polygraphy's ONNX Runtime runner, named apart from ``--onnxrt``'s."""

    def __init__(self, sess, name: Optional[str] = None):
        super().__init__(sess, name=name)
        if name is None:
            self.name = self.name.replace("onnxrt-runner", "deformrt-onnxrt-runner", 1)


@report_errors
def deformrt_torch_runner(model_path: str, weights: Optional[str] = None, device: str = "cpu",
                          precision: str = "fp32") -> DeformrtTorchRunner:
    """The PyTorch model ``model_path`` was exported from, rebuilt from its deformrt metadata with
    ``weights`` (a checkpoint) or the recorded seed; built when Polygraphy activates the runner."""
    import numpy as np
    from polygraphy.backend.onnx import onnx_from_path
    from polygraphy.common import TensorMetadata

    from exporter.evaluation.compare import single_input
    from exporter.onnx.metadata import DetectorMetadata, ExportMetadata

    model = onnx_from_path(str(model_path), ignore_external_data=True)
    meta = ExportMetadata.from_model(model)
    detector = DetectorMetadata.from_model(model)
    if detector is not None:  # the eager detector, its detections as the file's fixed-size outputs
        if precision != "fp32":
            raise DeformRTError("--deformrt-torch-precision fp64 is for backbone files; a detector runs in fp32")
        return DeformrtDetectorTorchRunner(meta, detector, meta.output_names, weights, device)
    name, dims = single_input(model)

    def build():
        from exporter.onnx.export import rebuild_model

        return rebuild_model(meta, None if weights is None else str(weights))

    # Symbolic dims stay strings, as Polygraphy's own runners report them; the data loader sizes
    # them from --input-shapes (which defaults to the export shape, see DeformrtModelArgs).
    input_metadata = TensorMetadata().add(name, np.float32, dims)
    return DeformrtTorchRunner(build, input_metadata, meta.output_names, device, precision=precision)


@report_errors
def deformrt_onnxrt_runner(model_path: str, provider: str = "cpu") -> DeformrtOnnxrtRunner:
    """ONNX Runtime on ``provider`` (``cpu`` or ``cuda``) for a model of either DCN flavour: our op is
    rewritten to standard DeformConv in memory, the file is untouched."""
    from polygraphy.backend.onnx import onnx_from_path

    from exporter.evaluation.ort import ort_session

    model = onnx_from_path(str(model_path))
    # The session is made when Polygraphy activates the runner (OnnxrtRunner calls this then).
    return DeformrtOnnxrtRunner(report_errors(
        lambda: ort_session(model, provider, provider_flag="--deformrt-onnxrt-provider")))
