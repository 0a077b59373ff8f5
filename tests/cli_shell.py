"""Running ``deformrt`` and printed command lines as a user does, in a shell (for tests/test_first_hour.py
and tests/test_demo.py), or in this process (:func:`deformrt`); ``scripts/*.py`` as modules (:func:`load_script`)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "80"}
ENV.pop("DEFORMRT_DEBUG", None)


def load_script(name: str):
    """scripts/<name>.py as a module named ``name`` (scripts/ is not a package and need not be on sys.path; the
    module is registered in sys.modules, where dataclasses and the scripts importing each other look it up)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def deformrt_process(*args, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``deformrt ARGS`` in a shell whose PATH has this environment's bin/ (for what only a real
    process shows: exit status of the console script, tracebacks, the environment)."""
    return subprocess.run(["deformrt", *map(str, args)], cwd=cwd, env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


class _Ran:
    def __init__(self, result):
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr


def deformrt(*args, cwd: Path = ROOT, env: dict | None = None) -> _Ran:
    """``deformrt ARGS`` through typer's runner in this process (as the other CLI tests run it: the
    same parsing, error boundary and output streams, without paying torch's import per command)."""
    from typer.testing import CliRunner

    from exporter import cli

    here = Path.cwd()
    os.chdir(cwd)
    try:
        return _Ran(CliRunner().invoke(cli.app, [str(a) for a in args], env=env))
    finally:
        os.chdir(here)


# A shell as after `make demo`: deformrt is not on PATH until the virtual environment is activated.
BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())


def shell(line: str, cwd: Path = ROOT, timeout: int = 600, path: str | None = None) -> subprocess.CompletedProcess:
    """A command line exactly as printed (quotes and all), run by bash."""
    env = {**ENV, "PATH": path} if path is not None else ENV
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def table_rows(text: str, verdict_word: str) -> list[str]:
    """The rows of a verification or comparison table whose verdict column starts with ``verdict_word``."""
    return [line for line in text.splitlines() if re.search(rf"\s{verdict_word}( \(.*\))?$", line)]


