"""deformrt's extension to ``polygraphy run``: PyTorch and ONNX Runtime references for our models.

Polygraphy finds it through the ``polygraphy.run.plugins`` entry point (pyproject.toml), which
names :func:`export_argument_groups`; ``polygraphy run --help`` lists what it adds:

- ``--deformrt-torch``: the PyTorch model an export was made from, rebuilt from the file's
  ``deformrt.*`` metadata, with the checkpoint from ``--deformrt-weights`` (or the recorded seed),
  on ``--deformrt-torch-device cpu|cuda``, in ``--deformrt-torch-precision fp32|fp64``;
- ``--deformrt-onnxrt``: ONNX Runtime on either DCN flavour (our ``deformrt.DeformConv2d`` is
  rewritten to standard ``DeformConv`` in memory), on ``--deformrt-onnxrt-provider cpu|cuda``;
- for any runner, on a model with deformrt metadata: the input shape defaults to the export shape
  (also the TensorRT profile unless one is given) and ``--val-range`` to the range of preprocessed
  pixel values. ``python -m exporter.polygraphy_ext.inputs`` writes real or random images,
  preprocessed exactly as the model expects, for ``--load-inputs``.

Polygraphy's own options apply as usual (``--trt --plugins``, ``--onnxrt``, data loaders,
``--save-outputs``/``--load-outputs``, tolerances). Our errors are reported as Polygraphy reports
its own: one critical line, exit status 1.

Layering: a front end like :mod:`exporter.cli`; it imports :mod:`exporter.evaluation`,
:mod:`exporter.onnx` and polygraphy, and this module imports nothing heavy, since Polygraphy loads
it on every ``polygraphy run``.
"""


def export_argument_groups():
    """The argument groups Polygraphy adds to ``polygraphy run`` (its extension interface)."""
    from exporter.polygraphy_ext.args import DeformrtModelArgs, DeformrtOnnxrtRunnerArgs, DeformrtTorchRunnerArgs

    return [DeformrtModelArgs(), DeformrtTorchRunnerArgs(), DeformrtOnnxrtRunnerArgs()]
