"""The ``deformrt`` command line: thin typer commands over library functions.

Commands live in this package's modules (``export``, ``plugin``, ``engine``), each with a
``register(app)`` function. This module owns the one error boundary: a :class:`models.errors.DeformRTError` (or a typer usage
error) prints one line and exits with status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from models.errors import DeformRTError
from models.version import __version__

class _State:
    debug: bool = bool(os.environ.get("DEFORMRT_DEBUG"))


state = _State()


def error(message: str) -> None:
    """Print a one-line user error to stderr."""
    first = " ".join(str(message).split())
    typer.secho(f"error: {first}", err=True, fg=typer.colors.RED)


# Modules that add commands to the app, in help order.
COMMAND_MODULES = ("exporter.cli.export", "exporter.cli.predict", "exporter.cli.plugin", "exporter.cli.engine",
                   "exporter.cli.deploy")

class _ErrorBoundaryGroup(TyperGroup):
    """Turns a DeformRTError raised by any command into one line on stderr and exit status 1."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except DeformRTError as exc:
            if state.debug:
                raise
            error(str(exc))
            ctx.exit(1)


app = typer.Typer(
    name="deformrt",
    cls=_ErrorBoundaryGroup,
    help="Export maskrcnn-benchmark backbones with deformable convolution to ONNX and TensorRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"deformrt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    if debug:
        state.debug = True


for _name in COMMAND_MODULES:
    import_module(_name).register(app)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point with the error boundary."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        state.debug = True
    try:
        rc = app(args=args, prog_name="deformrt", standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except TyperException as exc:
        # Usage errors (unknown option, bad value): one line plus the hint typer gives.
        if state.debug:
            raise
        error(exc.format_message())
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
