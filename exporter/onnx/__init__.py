"""The ONNX layer: everything about the exported file itself.

- :mod:`.export`: PyTorch backbone -> clean, checked ONNX (one dynamo export, then passes);
- :mod:`.passes`: the two DCN flavours and graph cleanup;
- :mod:`.op_contract`: the DCN op's contract, shared with the C++ plugin (generates its header);
- :mod:`.schema`: ONNX schema and shape inference for our custom op;
- :mod:`.fp16`: fp32 -> mixed-fp16 ONNX for strongly typed TensorRT builds;
- :mod:`.metadata`: the ``deformrt.*`` metadata_props; :mod:`.info`: ``deformrt info``.

May import :mod:`models` and :mod:`exporter.util`; never TensorRT, evaluation or the CLI
(verification is passed in by the caller).
"""
