"""The command line's conventions, defined once for every ``deformrt`` command (README: "Command-line
conventions"). A new command takes its options from here instead of writing its own:

- **Placeholders** (``metavar``) are upper-case names of what goes there (:data:`ONNX`, :data:`FILE`,
  :data:`DIR`, :data:`N`, :data:`X`, :data:`LIST`, ``KEY VALUE``), shapes are written in their own syntax
  (:data:`HW`, :data:`PROFILE_SHAPE`) and a choice lists its values (:func:`choices`). Flags have none.
- **Image sizes** are ``--shape HxW`` (:data:`ShapeOpt`, parsed by :func:`parse_shape`), the batch is
  ``--batch N``; engine profiles take whole input shapes ``NxCxHxW`` (trtexec's form, optionally
  ``images:NxCxHxW``) in ``--min-shape/--opt-shape/--max-shape`` (:func:`profile_shape_option`).
- **--json** is a flag (:data:`JsonFlag`): stdout then holds exactly one JSON document and nothing
  else; tables go to stderr. Where a file is wanted as well, ``--json-file FILE`` (:data:`JsonFileOpt`).
  :func:`emit` does both.
- **Outputs** are checked before any work (:func:`check_output_file`, :func:`check_output_dir`,
  :func:`check_report_file`): the folder exists and is writable, and an existing result is kept
  unless ``--force``.
- **Lists** are comma-separated or repeated (:func:`parse_list`).
- **Old spellings** keep working with a one-line notice on stderr (:data:`DEPRECATED_SPELLINGS`,
  rewritten by :func:`rewrite_deprecated` before typer parses the command line).
- **Scripts** (``scripts/*.py``, argparse) follow the same rules: :mod:`exporter.util.usage`'s
  ``ScriptParser`` (usage errors are one line, status 1), ``whole_number`` and ``regex`` (argument types),
  and here :func:`pick_names` (names from a table) and :func:`run_script` (the error boundary, ``--debug``).

A command written this way (add its module to ``COMMAND_MODULES`` in :mod:`exporter.cli`; the plain
help layout and the error boundary then apply by themselves, and tests/test_first_hour.py checks its
help against these rules)::

    @app.command("predict")
    def predict(onnx: Annotated[Path, typer.Argument(metavar=o.ONNX, help="Model from `deformrt export`.")],
                output: Annotated[Optional[Path], o.output_option("Detections file (default: ...).")] = None,
                shape: o.ShapeOpt = None, batch: o.BatchOpt = 1, force: o.ForceOpt = False,
                as_json: o.JsonFlag = False) -> None:
        # the docstring: one line that says what it does (the help's first paragraph)
        o.check_output_file(output, force)  # before any work
        result = ...  # the library call, with exporter.util.progress.Progress() for long steps
        o.emit(as_json, result.to_dict, result.summary)

Nothing here imports torch, onnx or TensorRT, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Annotated, Callable, Optional, Sequence

import typer

from exporter.util.usage import SEED_RANGE, error_line, print_error

# ----------------------------------------------------------------------------------------------
# Placeholders

ONNX = "ONNX"  # an ONNX file written by `deformrt export`
FILE = "FILE"
DIR = "DIR"
N = "N"  # a whole number
X = "X"  # a number
LIST = "LIST"  # comma-separated or repeated values
HW = "HxW"  # an image size, e.g. 800x1344
PROFILE_SHAPE = "NxCxHxW"  # a whole input shape, e.g. 1x3x800x1344 (or images:1x3x800x1344)
SIZE = "SIZE"  # bytes with an optional unit: 4G, 512M

PLACEHOLDER_PATTERN = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?: [A-Z][A-Z0-9_]*)*|HxW|NxCxHxW|\[[a-z0-9-]+(?:\|[a-z0-9-]+)+\])$")
"""Every placeholder ``deformrt --help`` shows matches this (tests/test_cli_conventions.py checks)."""


def choices(*values: str) -> str:
    """The placeholder of an option taking one of ``values``: ``[plugin|onnx]``."""
    return "[" + "|".join(values) + "]"


# ----------------------------------------------------------------------------------------------
# Options that several commands share (Annotated aliases; a command's own wording goes in help=)

JsonFlag = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout and nothing else (tables and progress go to stderr).")]
JsonFileOpt = Annotated[Optional[Path], typer.Option(
    "--json-file", metavar=FILE, help="Also write the JSON document to FILE (replaced if it exists).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
ShapeOpt = Annotated[Optional[str], typer.Option(
    "--shape", metavar=HW, help="Input height and width, e.g. 800x1344, multiples of the model's size divisibility "
                                "(default: the export shape).")]
BatchOpt = Annotated[int, typer.Option("--batch", metavar=N, min=1, help="Batch size of the input.")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", metavar=FILE, help="Checkpoint the model was exported with (not needed for random-init exports).")]
SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", metavar=N, **SEED_RANGE, help="Seed of the random input (default: a fresh one, reported).")]
ImagesOpt = Annotated[Optional[list[str]], typer.Option(
    "--images", metavar=LIST, help="Real inputs: HxWx3 RGB .npy arrays (PNG/JPEG with Pillow), comma-separated or "
                                   "repeated; one batch.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Show TensorRT's and Polygraphy's logs.")]


def output_option(help: str, metavar: str = FILE):
    """``-o/--output FILE`` (or ``DIR``) with the command's own help text."""
    return typer.Option("--output", "-o", metavar=metavar, help=help, show_default=False)


def profile_shape_option(flag: str, help: str):
    """``--min-shape`` / ``--opt-shape`` / ``--max-shape NxCxHxW``."""
    return typer.Option(flag, metavar=PROFILE_SHAPE, help=help)


PROFILE_HELP = {
    "--min-shape": "Smallest input of the engine, e.g. 1x3x320x320 (default: from the model).",
    "--opt-shape": "Input shape TensorRT optimises for (default: the export shape).",
    "--max-shape": "Largest input of the engine, e.g. 4x3x1344x1344 (default: from the model).",
}
MinShapeOpt = Annotated[Optional[str], profile_shape_option("--min-shape", PROFILE_HELP["--min-shape"])]
OptShapeOpt = Annotated[Optional[str], profile_shape_option("--opt-shape", PROFILE_HELP["--opt-shape"])]
MaxShapeOpt = Annotated[Optional[str], profile_shape_option("--max-shape", PROFILE_HELP["--max-shape"])]


# ----------------------------------------------------------------------------------------------
# Parsing


def parse_shape(text: Optional[str], flag: str = "--shape") -> Optional[tuple[int, int]]:
    """``HxW`` (``800x1344``) -> ``(800, 1344)``; None stays None. One-line DeformRTError otherwise."""
    from exporter.trt.profiles import parse_hw  # numbers only, no TensorRT

    return None if text is None else parse_hw(text, flag)


def parse_list(values: Optional[Sequence[str]]) -> list[str]:
    """Repeated and/or comma-separated option values, in order."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


# ----------------------------------------------------------------------------------------------
# Outputs, checked before any work


def check_output_file(path: Optional[Path], force: bool, inputs: Sequence[Optional[Path]] = (),
                      flag: str = "--output") -> None:
    """A result file (ONNX, engine, checkpoint): writable folder, not existing unless ``force``, and
    none of the command's ``inputs`` (``--force`` is for an old result, not for the file being read)."""
    import os

    from exporter.util.fsutil import check_output_path
    from models.errors import DeformRTError

    if path is None:
        return
    check_output_path(path, force)
    if Path(path).is_file():
        for source in inputs:
            if source is not None and Path(source).is_file() and os.path.samefile(path, source):
                raise DeformRTError(f"{flag} {path} is the input {source}: the result would replace it; give "
                                    "another file")


def check_output_dir(path: Path, force: bool) -> None:
    """A result folder (a deploy bundle): writable parent, not existing unless ``force``."""
    from exporter.util.fsutil import check_output_directory

    check_output_directory(path, force)


def check_report_file(path: Optional[Path], inputs: Sequence[Optional[Path]] = ()) -> None:
    """A ``--json-file``: a report, replaced if it exists (but never one of the command's ``inputs``);
    its folder must be writable."""
    check_output_file(path, force=True, inputs=inputs, flag="--json-file")


def print_json(obj) -> None:
    """The one JSON document of ``--json`` on stdout."""
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


def emit(as_json: bool, document: Callable[[], dict], text: Callable[[], str],
         json_file: Optional[Path] = None, text_with_json: bool = True) -> None:
    """A command's result: ``text()`` on stdout, or with ``--json`` the JSON document on stdout and
    (``text_with_json``: for reports and summaries worth reading either way) the text on stderr;
    ``--json-file`` also writes the document there (atomically)."""
    from exporter.util.fsutil import atomic_write_text

    if text_with_json or not as_json:
        typer.echo(text(), err=as_json)
    if as_json or json_file is not None:
        doc = document()
        if as_json:
            print_json(doc)
        if json_file is not None:
            atomic_write_text(json_file, json.dumps(doc, indent=2, sort_keys=True) + "\n", force=True)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr."""
    typer.secho(f"warning: {' '.join(message.split())}", err=True, fg=typer.colors.YELLOW)


# ----------------------------------------------------------------------------------------------
# Old spellings (kept for scripts; each prints one notice)


def _json_path(command: str, args: list[str], i: int) -> Optional[tuple[list[str], str]]:
    """``--json FILE`` / ``--json -`` / ``--json=FILE`` of compare and bench before --json was a flag."""
    token = args[i]
    if token.startswith("--json="):
        value, used = token.split("=", 1)[1], 1
    elif token == "--json" and i + 1 < len(args) and (args[i + 1] == "-" or args[i + 1].endswith(".json")):
        value, used = args[i + 1], 2
    else:
        return None
    if value == "-":
        return ["--json"] + args[i + used:], f"`--json -` is now `--json` (deformrt {command})"
    return (["--json-file", value] + args[i + used:],
            "`--json FILE` is now `--json-file FILE` (`--json` alone prints the JSON on stdout)")


def _input_size(command: str, args: list[str], i: int) -> Optional[tuple[list[str], str]]:
    """``--input-size H W`` of export before --shape HxW."""
    if args[i] != "--input-size" or i + 2 >= len(args):
        return None
    height, width = args[i + 1], args[i + 2]
    return (["--shape", f"{height}x{width}"] + args[i + 3:],
            f"`--input-size {height} {width}` is now `--shape {height}x{width}`")


DEPRECATED_SPELLINGS: dict[str, tuple[Callable[[str, list[str], int], Optional[tuple[list[str], str]]], ...]] = {
    "export": (_input_size,),
    "compare": (_json_path,),
    "bench": (_json_path,),
}
"""command -> rewriters; each looks at ``args[i:]`` and returns (the replacement of ``args[i:]``,
the notice), or None when the old spelling is not there."""


def rewrite_deprecated(args: list[str], notify: Callable[[str], None] = warn) -> list[str]:
    """``args`` (the command and its arguments) with old spellings replaced, each with a notice."""
    if not args or args[0] not in DEPRECATED_SPELLINGS:
        return args
    command, out, i = args[0], list(args), 1
    while i < len(out):
        if out[i] == "--":
            break
        for rewrite in DEPRECATED_SPELLINGS[command]:
            found = rewrite(command, out, i)
            if found is not None:
                replacement, notice = found
                out[i:] = replacement
                notify(f"deprecated: {notice}")
                break
        i += 1
    return out


# ----------------------------------------------------------------------------------------------
# The argparse scripts (scripts/*.py) follow the same conventions


def pick_names(text: str, known: Sequence[str], flag: str, what: str) -> list[str]:
    """The comma-separated names in ``text`` (``--gpus "H100 SXM,A100"``), each one of ``known``; a
    DeformRTError naming the first unknown one, the closest known name and the choices otherwise."""
    from models.errors import DeformRTError
    from models.registry import did_you_mean

    names = parse_list([text])
    for name in names:
        if name not in known:
            raise DeformRTError(f"{flag}: unknown {what} {name!r}{did_you_mean(name, known)}; "
                                f"choose from {', '.join(known)}")
    if not names:
        raise DeformRTError(f"{flag}: name at least one {what} ({', '.join(known)})")
    return names


def run_script(main: Callable[[list[str]], int], argv: Optional[Sequence[str]] = None) -> int:
    """A script's error boundary, as the deformrt command's: ``main(args)``, where a DeformRTError is
    one ``error:`` line on stderr and status 1; ``--debug`` (anywhere; taken out of ``args``) or
    ``DEFORMRT_DEBUG=1`` shows the traceback instead. ``sys.exit(run_script(main))`` ends a script."""
    import sys

    from exporter.cli import debug_from_env, take_debug
    from models.errors import DeformRTError

    args, debug = take_debug(list(sys.argv[1:] if argv is None else argv))
    try:
        return main(args)
    except DeformRTError as exc:
        if debug or debug_from_env():
            raise
        print_error(exc)
        return 1


def add_script_shape_argument(parser, default: str, help: str) -> None:
    """``--shape HxW`` on an argparse parser, with the scripts' old ``--size H W`` accepted but
    hidden (:func:`script_shape` turns it into the new spelling with a notice)."""
    parser.add_argument("--shape", default=default, metavar=HW, help=help)
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help=argparse.SUPPRESS)


def script_shape(args, notify: Callable[[str], None] = warn) -> tuple[int, int]:
    """The ``(height, width)`` of a namespace made by :func:`add_script_shape_argument`; a
    DeformRTError for a malformed ``--shape``."""
    if args.size is not None:
        height, width = args.size
        notify(f"deprecated: `--size {height} {width}` is now `--shape {height}x{width}`")
        return height, width
    return parse_shape(args.shape)


def parse_script_args(parser, argv: Optional[Sequence[str]] = None):
    """``(args, (height, width))`` from a parser made with :func:`add_script_shape_argument`; a
    malformed shape is one ``error:`` line and exit status 1, as for the deformrt commands."""
    from models.errors import DeformRTError

    args = parser.parse_args(argv)
    try:
        return args, script_shape(args)
    except DeformRTError as exc:
        parser.exit(1, error_line(exc) + "\n")
