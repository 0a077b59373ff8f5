"""Evaluation: running exported models and judging them against PyTorch.

- :mod:`.inputs`: images from files or at random, preprocessed as the model expects;
- :mod:`.ort`: ONNX Runtime sessions (the plugin flavour through standard ``DeformConv``);
- :mod:`.runners`: Polygraphy runners for PyTorch, ONNX Runtime and TensorRT;
- :mod:`.verify`: the export-time check (ONNX Runtime vs PyTorch);
- :mod:`.compare` and :mod:`.bench`: ``deformrt compare`` and ``deformrt bench``.

May import :mod:`exporter.trt`, :mod:`exporter.onnx`, :mod:`exporter.util` and :mod:`models`;
never the CLI.
"""
