"""TensorRT's build phases (``IProgressMonitor`` callbacks) drawn as one progress line on stderr."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

class BuildProgressBar:
    """Renders TensorRT's build phases (IProgressMonitor callbacks) as a progress line on stderr.

    On a terminal one line is redrawn (at most ``max_fps`` times a second) showing the nested phases
    with their step counts; elsewhere (logs, CI) a line is printed when a top-level phase starts
    and ends. Callbacks may arrive from several TensorRT threads, hence the lock.
    """

    def __init__(self, stream: Optional[TextIO] = None, enabled: bool = True, max_fps: float = 10.0,
                 clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._phases: dict[str, list] = {}  # name -> [parent, steps, done], insertion-ordered
        self._lock = threading.Lock()
        self._interval = 1.0 / max_fps
        self._clock = clock
        self._last_draw = -1e9
        self.cancelled = False

    def line(self) -> str:
        """The current status: ``phase 2/5 > sub-phase 10/40``."""
        return " > ".join(f"{name} {done}/{steps}" for name, (_, steps, done) in self._phases.items())

    def _emit(self, text: str, redraw: bool) -> None:
        if not self.enabled:
            return
        if self.tty and redraw:
            self.stream.write("\r\x1b[2K[deformrt] " + text[-150:])
        else:
            self.stream.write(f"[deformrt] {text}\n")
        self.stream.flush()

    def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
        with self._lock:
            self._phases[phase_name] = [parent_phase, num_steps, 0]
            if self.tty:
                self._draw(force=True)
            elif parent_phase is None:
                self._emit(f"{phase_name} ({num_steps} steps) ...", redraw=False)

    def step_complete(self, phase_name: str, step: int) -> bool:
        """Record a finished step; returns False to ask TensorRT to cancel the build."""
        with self._lock:
            if phase_name in self._phases:
                self._phases[phase_name][2] = step + 1
            if self.tty:
                self._draw(force=False)
        return not self.cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            entry = self._phases.pop(phase_name, None)
            if entry is None:
                return
            # A phase ends with its children (TensorRT may finish them implicitly).
            for name in [n for n, (parent, _, _) in self._phases.items() if parent == phase_name]:
                self._phases.pop(name)
            if self.tty and self._phases:
                self._draw(force=True)
            elif self.tty and self.enabled:  # the build is over: clear the status line
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
            elif entry[0] is None:
                self._emit(f"{phase_name}: done", redraw=False)

    def _draw(self, force: bool) -> None:
        now = self._clock()
        if force or now - self._last_draw >= self._interval:
            self._last_draw = now
            self._emit(self.line(), redraw=True)

