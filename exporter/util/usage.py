"""argparse with deformrt's usage-error convention, for everything that is not a typer command: the
scripts (``scripts/*.py``, through :mod:`exporter.cli.options`) and the device-side tools a bundle carries
(:mod:`exporter.deploy.check`, :mod:`exporter.deploy.predict`), which run where typer is not installed.
Standard library only."""

from __future__ import annotations

import argparse


class ScriptParser(argparse.ArgumentParser):
    """A usage error (unknown option, bad value) is one ``error:`` line and exit status 1, as for the
    deformrt commands (argparse's own is the usage text and status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(1, f"error: {' '.join(message.split())}\n")


def first_paragraph(doc: str) -> str:
    """The first paragraph of a module's docstring as one line: a script's ``--help`` description
    (its first line alone often stops mid-sentence)."""
    return " ".join(doc.strip().split("\n\n")[0].split())
