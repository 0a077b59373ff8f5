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

Long work says how long it will still take:

- :meth:`Progress.loop` for ``total`` runs of the same thing (benchmark iterations)::

      with progress.loop("timing torch", 25) as tick:
          for _ in range(25):
              run(); tick()
      #  [deformrt] timing torch: 1/25 runs, 5.8 s each, about 2 min 19 s left
      #  ...
      #  [deformrt] timing torch: done in 145.2 s (25 runs, 5.8 s each)

  On a terminal the line is rewritten after every run; in a log a line is printed after the first
  run and then at most every :data:`LOG_EVERY_S` seconds.
- :meth:`Progress.plan` for a few steps of known relative cost (``weight``, e.g. pixels): once
  one step has run, each later step's start line estimates its own time and each end line the
  time left for the whole plan.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, Optional, TextIO

# In a log (not a terminal), a loop prints at most one line per this many seconds.
LOG_EVERY_S = 15.0


def format_duration(seconds: float) -> str:
    """``8.2 s``, ``45 s``, ``2 min 5 s``, ``1 h 3 min``: short and rounded for people."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


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

    def _tty(self) -> bool:
        return self.enabled and bool(getattr(self._stream or sys.stderr, "isatty", lambda: False)())

    def info(self, message: str) -> None:
        """Print one progress line (nothing when disabled)."""
        if self.enabled:
            self._write(message)

    @contextlib.contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Report ``message ...`` on entry and ``message: done in T s`` (or ``failed``) on exit."""
        with self._step(message) as done:
            yield
            done("")

    @contextlib.contextmanager
    def _step(self, message: str, start_note: str = "") -> Iterator[Callable[[str], None]]:
        """:meth:`step` whose end line gets a suffix: the caller calls the yielded function with it."""
        tty = self._tty()
        if self.enabled:
            self._write(f"{message}{start_note} ...", end="" if tty else "\n")
        start = time.perf_counter()
        suffix = []
        try:
            yield suffix.append
        except BaseException:
            if self.enabled:
                self._write(f"{message}: failed after {time.perf_counter() - start:.1f} s", replace_open=tty)
            raise
        if self.enabled:
            self._write(f"{message}: done in {time.perf_counter() - start:.1f} s{''.join(suffix)}", replace_open=tty)

    @contextlib.contextmanager
    def loop(self, message: str, total: int, unit: str = "runs") -> Iterator[Callable[[], None]]:
        """``total`` similar runs: yields ``tick``, to be called after each run; reports runs done,
        the time per run and the time left (see the module docstring)."""
        tty = self._tty()
        if self.enabled:
            self._write(f"{message}: 0/{total} {unit} ...", end="" if tty else "\n")
        start = time.perf_counter()
        state = {"done": 0, "last": start}

        def tick() -> None:
            state["done"] += 1
            now = time.perf_counter()
            done = state["done"]
            if not self.enabled or done >= total or (not tty and done > 1 and now - state["last"] < LOG_EVERY_S):
                return
            state["last"] = now
            each = (now - start) / done
            self._write(f"{message}: {done}/{total} {unit}, {format_duration(each)} each, about "
                        f"{format_duration(each * (total - done))} left", end="" if tty else "\n",
                        replace_open=tty)

        try:
            yield tick
        except BaseException:
            if self.enabled:
                self._write(f"{message}: failed after {time.perf_counter() - start:.1f} s", replace_open=tty)
            raise
        if self.enabled:
            elapsed = time.perf_counter() - start
            each = f", {format_duration(elapsed / state['done'])} each" if state["done"] else ""
            self._write(f"{message}: done in {elapsed:.1f} s ({state['done']} {unit}{each})", replace_open=tty)

    def plan(self, total_weight: float) -> "Plan":
        """Steps whose relative costs add up to ``total_weight`` (module docstring)."""
        return Plan(self, total_weight)


class Plan:
    """A few steps of known relative cost, reported through a :class:`Progress` with estimates of
    each step's time and of the time left, from the seconds per unit of weight measured so far."""

    def __init__(self, progress: Progress, total_weight: float):
        self.progress = progress
        self.total = float(total_weight)
        self.done_weight = 0.0
        self.seconds = 0.0

    def _rate(self) -> Optional[float]:
        return self.seconds / self.done_weight if self.done_weight > 0 else None

    def add(self, weight: float) -> None:
        """Make the plan bigger by ``weight`` (a step that turned out to be needed)."""
        self.total += weight

    @contextlib.contextmanager
    def step(self, message: str, weight: float) -> Iterator[None]:
        rate = self._rate()
        note = f" (about {format_duration(rate * weight)})" if rate is not None else ""
        start = time.perf_counter()
        with self.progress._step(message, note) as done:
            yield
            self.seconds += time.perf_counter() - start
            self.done_weight += weight
            left = max(0.0, self.total - self.done_weight) * (self._rate() or 0.0)
            if left > 0:
                done(f"; about {format_duration(left)} left")
