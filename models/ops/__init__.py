"""PyTorch ops used by the backbones: deformable convolution and its backends."""

from models.ops.deform_conv import BACKEND_NAMES, deform_conv2d, register_cuda_backend, select_backend, use_backend

__all__ = ["BACKEND_NAMES", "deform_conv2d", "register_cuda_backend", "select_backend", "use_backend"]
