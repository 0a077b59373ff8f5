"""A tiny progress reporter for long steps: one line to stderr when a step starts, one when it ends.

    progress = Progress()
    with progress.step("exporting R-101-FPN"):
        ...
    # stderr:  [deformrt] exporting R-101-FPN ...
    #          [deformrt] exporting R-101-FPN: done in 12.3 s

Lines go to stderr so stdout stays clean for results and ``--json``. ``Progress(enabled=False)``
(or ``Progress.quiet()``) reports nothing; library code takes an optional ``Progress`` and uses
the quiet one by default.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, Optional, TextIO


class Progress:
    """Reports the start, end and duration of named steps on a text stream (stderr by default)."""

    def __init__(self, enabled: bool = True, stream: Optional[TextIO] = None, prefix: str = "[deformrt]"):
        self.enabled = enabled
        self._stream = stream
        self.prefix = prefix

    @classmethod
    def quiet(cls) -> "Progress":
        return cls(enabled=False)

    def info(self, message: str) -> None:
        """Print one progress line (nothing when disabled)."""
        if self.enabled:
            stream = self._stream or sys.stderr
            stream.write(f"{self.prefix} {message}\n")
            stream.flush()

    @contextlib.contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Report ``message ...`` on entry and ``message: done in T s`` (or ``failed``) on exit."""
        self.info(f"{message} ...")
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.info(f"{message}: failed after {time.perf_counter() - start:.1f} s")
            raise
        self.info(f"{message}: done in {time.perf_counter() - start:.1f} s")
