"""deformrt models: maskrcnn-benchmark's backbone registry in PyTorch.

Public API: ``get_cfg``, ``build_backbone``, ``build_detector``, ``load_checkpoint``,
``deform_conv2d``, ``list_bodies``, ``body_info`` and ``DeformRTError``.
"""

from importlib import import_module

from models.errors import DeformRTError
from models.version import __version__

# Imported on first use: ``import models`` (the CLI imports models.version) must not import torch.
_LAZY = {
    "deform_conv2d": "models.ops",
    "get_cfg": "models.config",
    "build_backbone": "models.backbone",
    "build_detector": "models.detector",
    "list_bodies": "models.backbone",
    "body_info": "models.backbone",
    "load_checkpoint": "models.checkpoint",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = ["DeformRTError", "__version__", *_LAZY]
