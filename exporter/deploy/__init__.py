"""Deployment bundles: a self-contained folder that builds and checks itself on the target device.

- :mod:`.layout`: the bundle's file names and deploy.conf keys, shared by both sides (pure);
- :mod:`.bundle`: ``deformrt deploy`` on the workstation: the model's four flavours (plugin op or
  standard DeformConv, fp32 or mixed fp16), the plugin's CMake project, PyTorch fp32 reference inputs
  and outputs, deploy.conf, metadata.json, SHA256SUMS, build.sh and README;
- :mod:`.check`: on the device: an engine's outputs against the bundle's references, with numpy
  only (no torch, onnx or onnxruntime; tensorrt only when it runs an engine itself); a detector's
  detections as sets;
- :mod:`.predict`: on the device: ``deformrt predict`` with a detector bundle's engine (numpy,
  Pillow and tensorrt), through :mod:`exporter.evaluation.predict`.

Layering: the CLI imports this package; :mod:`.bundle` may import :mod:`exporter.evaluation`,
:mod:`exporter.trt`, :mod:`exporter.onnx`, :mod:`exporter.util` and :mod:`models`. :mod:`.check` and
:mod:`.layout` import only numpy, :mod:`models.errors`, :mod:`exporter.evaluation.detections` and
(lazily, to run an engine) the device-side TensorRT modules :mod:`exporter.trt.engine` and
:mod:`exporter.trt.session`; :mod:`.predict` adds :mod:`exporter.evaluation.predict` (torch-free).
The bundle carries them all in its ``python/`` folder.
"""
