"""Evaluation: running exported models and judging them against PyTorch.

- :mod:`.inputs`: images from files or at random, preprocessed as the model expects;
- :mod:`.ort`: ONNX Runtime sessions (the plugin flavour through standard ``DeformConv``);
- :mod:`.runners`: Polygraphy runners for PyTorch, ONNX Runtime and TensorRT;
- :mod:`.verify`: the export-time check (ONNX Runtime vs PyTorch);
- :mod:`.compare` and :mod:`.bench`: ``deformrt compare`` and ``deformrt bench``;
- :mod:`.conditioning`: the one rule and note verify and compare share for ill-conditioned models
  (random DCN offsets), judged against float64 PyTorch;
- :mod:`.synthetic`: calibrated synthetic checkpoints (``deformrt synthetic-checkpoint``, the demo).

May import :mod:`exporter.trt`, :mod:`exporter.onnx`, :mod:`exporter.util` and :mod:`models`;
never the CLI.
"""
