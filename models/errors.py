"""The one exception type users see, and the check of an input file every reader shares.

Anything raised as :class:`DeformRTError` is a problem with the user's input or environment
(unknown body name, bad config value, unsafe checkpoint, missing plugin library ...). The CLI
prints its message as one line and exits with status 1; other exceptions are bugs and keep
their traceback.
"""

from __future__ import annotations

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
