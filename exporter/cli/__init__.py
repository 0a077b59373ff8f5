"""The ``deformrt`` command line: thin typer commands over library functions.

Commands live in this package's modules (``export``, ``plugin``, ``engine``, ``deploy``,
``synthetic``), each with a ``register(app)`` function; the options they share and the conventions
they follow are in :mod:`exporter.cli.options`. This module owns what is common to every command:

- the one error boundary: a :class:`models.errors.DeformRTError` (or a typer usage error) prints
  one ``error:`` line and exits with status 1; ``--debug`` (anywhere on the command line) or
  ``DEFORMRT_DEBUG=1`` shows the traceback instead;
- ``deformrt`` alone prints the help and exits 0;
- old spellings are rewritten (:func:`exporter.cli.options.rewrite_deprecated`) with a notice;
- help is plain text in one column layout (as Polygraphy's and trtexec's), never truncated, with
  the placeholders of :mod:`exporter.cli.options`.
"""

from __future__ import annotations

import os
import sys
import textwrap
from importlib import import_module
from typing import Annotated, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.exceptions import TyperException

from exporter.cli import options as cli_options
from models.errors import DeformRTError
from models.version import __version__

try:  # typer >= 0.2x vendors click; older ones use click itself
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed typer
    import click

DEBUG_FLAG = "--debug"
DEBUG_ENV = "DEFORMRT_DEBUG"


class _State:
    debug: bool = False


state = _State()


def debug_from_env() -> bool:
    """``DEFORMRT_DEBUG`` set to anything but empty, 0, false, no or off."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def take_debug(args: list[str]) -> tuple[list[str], bool]:
    """``args`` without ``--debug`` (wherever it is, up to a ``--``), and whether it was there."""
    if "--" in args:
        cut = args.index("--")
        head, found = take_debug(args[:cut])
        return head + args[cut:], found
    rest = [a for a in args if a != DEBUG_FLAG]
    return rest, len(rest) != len(args)


def error(message: str) -> None:
    """Print a one-line user error to stderr (:func:`exporter.util.usage.error_line`, in red on a terminal)."""
    from exporter.util.usage import error_line

    typer.secho(error_line(message), err=True, fg=typer.colors.RED)


# Modules that add commands to the app, in help order.
COMMAND_MODULES = ("exporter.cli.export", "exporter.cli.synthetic", "exporter.cli.predict", "exporter.cli.plugin",
                   "exporter.cli.engine", "exporter.cli.deploy")


def _plain_format_options(command, ctx, formatter) -> None:
    """Arguments and options in two plain definition lists; an argument shows only its placeholder."""
    arguments, opts = [], []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if isinstance(param, TyperArgument):
            arguments.append((param.metavar or param.name.upper(), record[1]))
        else:
            opts.append(record)
    for title, rows in (("Arguments", arguments), ("Options", opts)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def _usage_pieces(command, ctx) -> list[str]:
    """``[OPTIONS] ONNX`` / ``[BODY] [KEY VALUE]...``: click's classic usage line."""
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.metavar or param.name.upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
    return pieces


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, never breaking a word or an option name at a hyphen."""
    return textwrap.wrap(text, max(width, 20), break_on_hyphens=False, break_long_words=False) or [""]


class _HelpFormatter(click.HelpFormatter):
    """click's help layout, except that text wraps only at spaces: `--no-verify` and
    `deformrt list-models` stay whole (textwrap's default breaks them after the hyphen)."""

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
        for i, paragraph in enumerate(paragraphs):
            if i:
                self.write("\n")
            self.write("".join(f"{indent}{line}\n" for line in _wrap(paragraph, self.width - self.current_indent)))

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first = min(max((len(term) for term, _ in rows), default=0), col_max)
        column = self.current_indent + first + col_spacing
        for term, definition in rows:
            lines = _wrap(" ".join(definition.split()), self.width - column)
            self.write(" " * self.current_indent + term)
            if len(term) <= first:
                self.write(" " * (first - len(term) + col_spacing) + lines[0] + "\n")
                lines = lines[1:]
            else:
                self.write("\n")
            self.write("".join(" " * column + line + "\n" for line in lines))


class _Context(click.Context):
    formatter_class = _HelpFormatter


class PlainHelpCommand(TyperCommand):
    """A typer command whose ``--help`` is plain text: rich's boxes truncate long option names and
    label flags ``<bool>``; this layout does neither."""

    context_class = _Context

    def format_help(self, ctx, formatter) -> None:
        super(TyperCommand, self).format_help(ctx, formatter)

    def format_options(self, ctx, formatter) -> None:
        _plain_format_options(self, ctx, formatter)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return _usage_pieces(self, ctx)


class _DeformrtGroup(TyperGroup):
    """The ``deformrt`` group: plain help, ``--debug`` anywhere, help on no arguments, old spellings
    rewritten, and the error boundary (a DeformRTError from any command: one line, exit status 1)."""

    context_class = _Context

    def format_help(self, ctx, formatter) -> None:
        super(TyperGroup, self).format_help(ctx, formatter)

    def format_options(self, ctx, formatter) -> None:
        _plain_format_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx, formatter) -> None:
        """Each command with the first paragraph of its help, whole (click cuts it at 45 characters or
        at the first period, "e.g." included)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                first = command.short_help or (command.help or "").split("\n\n")[0]
                rows.append((name, " ".join(first.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def parse_args(self, ctx, args):
        args, flag = take_debug(list(args))
        state.debug = flag or debug_from_env()
        if not args and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(0)
        command_at = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
        args = args[:command_at] + cli_options.rewrite_deprecated(args[command_at:])
        return super().parse_args(ctx, args)

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
    cls=_DeformrtGroup,
    help="Export maskrcnn-benchmark backbones with deformable convolution to ONNX and TensorRT.",
    epilog="Run `deformrt COMMAND --help` for a command's options. --debug (anywhere) or DEFORMRT_DEBUG=1 "
           "shows tracebacks.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"deformrt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option(DEBUG_FLAG, help="Show full tracebacks on errors (also after the command, "
                                                         "or DEFORMRT_DEBUG=1).")] = False,
) -> None:
    # --debug is taken out of the arguments before parsing (it may follow the command); see parse_args.
    del version, debug


for _name in COMMAND_MODULES:
    import_module(_name).register(app)
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):  # typer's default, whatever a typer version stores for it
        _info.cls = PlainHelpCommand


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point with the error boundary."""
    args = list(sys.argv[1:] if argv is None else argv)
    state.debug = take_debug(args)[1] or debug_from_env()
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
