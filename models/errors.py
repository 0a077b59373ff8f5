"""The one exception type users see, and the checks of user input that every reader shares (an input
file, a positive or finite number).

Anything raised as :class:`DeformRTError` is a problem with the user's input or environment
(unknown body name, bad config value, unsafe checkpoint, missing plugin library ...). The CLI
prints its message as one line and exits with status 1; other exceptions are bugs and keep
their traceback.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union


class DeformRTError(Exception):
    """A user-facing error whose message is a complete, one-line explanation."""


def require_file(path: Union[str, os.PathLike], what: str) -> Path:
    """``path`` when it is a file; else a DeformRTError that names ``what`` ("checkpoint", "image"):
    ``checkpoint not found: X``, or ``checkpoint X is a directory, not a file``."""
    path = Path(path)
    if path.is_dir():
        raise DeformRTError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise DeformRTError(f"{what} not found: {path}")
    return path


def require_positive(value: float, flag: str) -> float:
    """``value`` when it is a finite number above 0; else a DeformRTError naming ``flag`` (a plain
    ``value <= 0`` test lets nan and inf through, and every comparison with nan then passes or fails)."""
    if not 0 < value < math.inf:
        raise DeformRTError(f"{flag} must be positive and finite, got {value:g}")
    return value


def require_finite(value: float, flag: str) -> float:
    """``value`` when it is a finite number; else a DeformRTError naming ``flag``."""
    if not math.isfinite(value):
        raise DeformRTError(f"{flag} must be a finite number, got {value:g}")
    return value
