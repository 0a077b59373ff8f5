"""argparse with deformrt's command-line conventions, for everything that is not a typer command: the
scripts (``scripts/*.py``), ``python -m exporter.polygraphy_ext.inputs`` and the device-side tools a bundle
carries (:mod:`exporter.deploy.check`, :mod:`exporter.deploy.predict`), which run where typer is not
installed. Usage errors are one ``error:`` line and status 1 (:class:`ScriptParser`); argument types for
whole numbers and regular expressions; the range every ``--seed`` takes. Standard library only."""

from __future__ import annotations

import argparse
import re
from typing import Callable, Optional

SEED_RANGE = {"min": 0, "max": 2**32 - 1}
"""What every ``--seed`` takes: what torch, numpy's generators and legacy RandomState all accept."""


class ScriptParser(argparse.ArgumentParser):
    """A usage error (unknown option, bad value) is one ``error:`` line and exit status 1, as for the
    deformrt commands (argparse's own is the usage text and status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(1, error_line(message) + "\n")


def error_line(message: object) -> str:
    """The one line a usage error or a DeformRTError prints: ``error: `` and the message, its line breaks
    and runs of spaces folded into single spaces."""
    return "error: " + " ".join(str(message).split())


def print_error(message: object) -> None:
    """:func:`error_line` on stderr."""
    import sys

    print(error_line(message), file=sys.stderr)


def first_paragraph(doc: str) -> str:
    """The first paragraph of a module's docstring as one line: a script's ``--help`` description
    (its first line alone often stops mid-sentence)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def whole_number(minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum`` (``--repeat`` 1, ``--warmup`` 0) and at
    most ``maximum`` if given (``--seed``: :data:`SEED_RANGE`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    parse.__name__ = "N"  # argparse names the type in some messages (the N placeholder)
    return parse


def regex(text: str) -> re.Pattern:
    """An argparse ``type``: a regular expression, compiled."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular expression ({exc})") from None
