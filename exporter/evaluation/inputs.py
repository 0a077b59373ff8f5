"""Model inputs: images read from files or drawn at random, preprocessed as an exported model expects.

Preprocessing follows maskrcnn-benchmark: channel order and 0..255 / 0..1 scaling from the
metadata's ``to_bgr255`` and ``color_order``, then ``(x - pixel_mean) / pixel_std``, then zero
padding (after normalisation, as upstream's ``to_image_list``) on the bottom and right to a
multiple of the size divisibility. ``meta`` is anything with those attributes
(:class:`exporter.onnx.metadata.ExportMetadata`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from models.errors import DeformRTError, require_file

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: Path, hint: str = "") -> np.ndarray:
    """An HxWx3 uint8 RGB array from a file Pillow reads (PNG, JPEG ...); an unreadable, corrupt or
    truncated file is a one-line DeformRTError (``hint`` is added to the one for a missing Pillow)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DeformRTError(f"reading images needs Pillow (pip install pillow){hint}") from None
    path = require_file(path, "image")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DeformRTError(f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else 'not an image'}") \
            from None


def load_image(path: Path) -> np.ndarray:
    """An ``HxWx3`` float64 RGB array with values 0..255 from ``.npy``, PNG or JPEG."""
    path = require_file(path, "image")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:  # EOFError: an empty file
            raise DeformRTError(f"{path} is not a readable .npy array ({exc})") from None
    elif suffix in _IMAGE_SUFFIXES:
        array = read_image(path, hint="; or pass HxWx3 .npy arrays")
    else:
        raise DeformRTError(f"{path}: images must be .npy, .png, .jpg or .jpeg")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or not np.issubdtype(array.dtype, np.number):
        raise DeformRTError(f"{path}: expected an HxWx3 RGB image, got an array of shape {array.shape} "
                            f"({array.dtype})")
    return array.astype(np.float64)


def preprocess(images: Sequence[np.ndarray], meta) -> np.ndarray:
    """A float32 NCHW batch from ``HxWx3`` RGB 0..255 images, as the model expects (module docstring)."""
    color_order = (meta.color_order or ("BGR" if meta.to_bgr255 else "RGB")).upper()
    mean = np.asarray(meta.pixel_mean, dtype=np.float64)
    std = np.asarray(meta.pixel_std, dtype=np.float64)
    div = meta.size_divisibility
    height = max(img.shape[0] for img in images)
    width = max(img.shape[1] for img in images)
    if div > 0:
        height, width = -(-height // div) * div, -(-width // div) * div
    batch = np.zeros((len(images), 3, height, width), dtype=np.float32)
    for i, img in enumerate(images):
        x = img[:, :, ::-1] if color_order == "BGR" else img
        if not meta.to_bgr255:
            x = x / 255.0
        x = (x - mean) / std
        batch[i, :, :img.shape[0], :img.shape[1]] = x.transpose(2, 0, 1)
    return batch


def random_images(batch: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """``batch`` images of uniform random pixel values 0..255."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.0, 255.0, size=(height, width, 3)) for _ in range(batch)]
