"""A pickle reader for untrusted checkpoint files that can only build data.

Unpickling runs whatever callables the file names, so a hostile ``.pkl`` can execute code the
moment it is read. :func:`load_pickle` reads a pickle through an unpickler whose ``find_class``
hands out only a fixed allowlist: numpy's array, dtype and scalar reconstructors and a few
harmless builtins. Plain containers, numbers and strings need no global at all. Any other name
(``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) stops the read with a
:class:`DeformRTError` *before* the callable is fetched, so nothing named by the file runs.

Persistent ids (``persistent_load``) are refused by the base class. Strings written by Python 2
(Detectron's Caffe2 pickles) are decoded as latin-1, the only lossless choice for numpy buffers.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import importlib
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from models.errors import DeformRTError


def _numpy_attr(*dotted: str):
    """The first of ``dotted`` (``module:attr``) that this numpy has (numpy 2 moved ``core`` to ``_core``)."""
    for spec in dotted:
        module, attr = spec.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {dotted} exists in numpy {np.__version__}")


def _build_allowlist() -> dict[tuple[str, str], object]:
    reconstruct = _numpy_attr("numpy._core.multiarray:_reconstruct", "numpy.core.multiarray:_reconstruct")
    scalar = _numpy_attr("numpy._core.multiarray:scalar", "numpy.core.multiarray:scalar")
    frombuffer = _numpy_attr("numpy._core.numeric:_frombuffer", "numpy.core.numeric:_frombuffer")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes as _codecs.encode(text, "latin1") under protocols 0-2.
        ("_codecs", "encode"): _codecs.encode,
        ("collections", "OrderedDict"): OrderedDict,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    for name, value in (("set", set), ("frozenset", frozenset), ("complex", complex)):
        allowed[("builtins", name)] = value
    return allowed


_ALLOWED = _build_allowlist()


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):
        # Protocols 0-2 may spell names the Python 2 way (__builtin__, copy_reg ...).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DeformRTError(f"refusing to load {self._source}: it asks to run {module}.{name}") from None


def load_pickle(path: str | Path, file: BinaryIO | None = None) -> object:
    """Read one pickled object from ``path`` (or from the already open binary ``file``) safely.

    Returns containers, numbers, strings and numpy arrays only. Raises :class:`DeformRTError`
    when the pickle names any other global (nothing it names is run), and a one-line
    :class:`DeformRTError` for a truncated or malformed pickle. Unreadable paths are the caller's
    concern (``OSError`` passes through).
    """
    if file is None:
        with open(path, "rb") as handle:
            return load_pickle(path, handle)
    try:
        return _DataOnlyUnpickler(file, str(path)).load()
    except DeformRTError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, EOFError) or "truncated" in reason:
            raise DeformRTError(f"cannot read {path}: the pickle ends early (truncated file?)") from None
        raise DeformRTError(f"cannot read {path}: not a valid pickle ({reason})") from None
