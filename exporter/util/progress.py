"""A tiny progress reporter for long steps: one line to stderr when a step starts, one when it ends.

    progress = Progress()
    with progress.step("exporting R-101-FPN"):
        ...
    # stderr:  [deformrt] exporting R-101-FPN ...
    #          [deformrt] exporting R-101-FPN: done in 12.3 s

On a terminal a step's end rewrites its start line, so each step takes one line; in a log both
lines stay. Lines go to stderr so stdout stays clean for results and ``--json``. ``Progress(enabled=False)``
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
        self._open_line = False  # a step's start line, left open on a terminal

    @classmethod
    def quiet(cls) -> "Progress":
        return cls(enabled=False)

    def _write(self, text: str, end: str = "\n", replace_open: bool = False) -> None:
        stream = self._stream or sys.stderr
        if self._open_line:
            stream.write("\r\x1b[K" if replace_open else "\n")
        stream.write(f"{self.prefix} {text}{end}")
        stream.flush()
        self._open_line = end == ""

    def info(self, message: str) -> None:
        """Print one progress line (nothing when disabled)."""
        if self.enabled:
            self._write(message)

    @contextlib.contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Report ``message ...`` on entry and ``message: done in T s`` (or ``failed``) on exit."""
        tty = self.enabled and bool(getattr(self._stream or sys.stderr, "isatty", lambda: False)())
        if self.enabled:
            self._write(f"{message} ...", end="" if tty else "\n")
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            if self.enabled:
                self._write(f"{message}: failed after {time.perf_counter() - start:.1f} s", replace_open=tty)
            raise
        if self.enabled:
            self._write(f"{message}: done in {time.perf_counter() - start:.1f} s", replace_open=tty)
