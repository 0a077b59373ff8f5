"""The TensorRT layer: plugin library loading, engine building, engine loading and running.

Modules and what they own:
- :mod:`.env`: importing ``tensorrt``, its version, the process-wide logger, the GPU;
- :mod:`.plugin`: finding and loading the deformrt plugin into TensorRT's registry;
- :mod:`.precision`: the fp16/tf32 plan per TensorRT major (pure);
- :mod:`.profiles`: input shape profiles (pure); :mod:`.sidecar`: the engine's JSON sidecar (pure);
- :mod:`.build`: ONNX -> engine; :mod:`.progress_bar`: its progress line;
- :mod:`.engine`: deserializing an engine; :mod:`.session`: running one;
- :mod:`.plugin_build`: CMake build of the native libraries.

Only these modules import ``tensorrt``, and only inside functions. This layer may import
:mod:`exporter.onnx`, :mod:`exporter.util` and :mod:`models`; never evaluation or the CLI.
"""
