"""The CMakes the tests configure plugins/ with, and what a configured build directory compiles for.

Two CMakes: the machine's (``cmake`` on PATH) and the oldest that plugins/CMakeLists.txt declares
(``cmake_minimum_required``), which ``make venv`` installs from the package index's cmake wheel into
``.venv/cmake-oldest`` (Makefile: CMAKE_OLDEST_VERSION).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
OLDEST_CMAKE = ROOT / ".venv" / "cmake-oldest" / "cmake" / "data" / "bin" / "cmake"


def cmake_version(cmake: Path | str) -> tuple[int, ...]:
    out = subprocess.run([str(cmake), "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(p) for p in re.search(r"version (\d+)\.(\d+)\.(\d+)", out).groups())


def machine_cmake() -> Optional[Path]:
    found = shutil.which("cmake")
    return Path(found) if found else None


def cmakes() -> list[Path]:
    """The machine's CMake and the oldest supported one, each where present."""
    return [c for c in (machine_cmake(), OLDEST_CMAKE if OLDEST_CMAKE.is_file() else None) if c is not None]


def cmake_id(cmake: Path) -> str:
    return "cmake-oldest" if cmake == OLDEST_CMAKE else "cmake-machine"


def configured_cuda_archs(build_dir: Path, target: str = "deformrt_kernel_objects") -> tuple[set[int], set[int]]:
    """(SASS architectures, PTX architectures) nvcc is told to compile ``target`` for in a configured build
    directory: read from the generated build files (Unix Makefiles' flags.make or build.ninja), i.e. the
    nvcc command line itself, not from what CMakeLists.txt says it does."""
    flags = build_dir / "CMakeFiles" / f"{target}.dir" / "flags.make"
    text = flags.read_text() if flags.is_file() else (build_dir / "build.ninja").read_text()
    sass, ptx = set(), set()
    for arch, codes in re.findall(r"arch=compute_(\d+),code=\[?([^\s\]]+)", text):
        for code in codes.split(","):
            kind, number = code.split("_")
            (sass if kind == "sm" else ptx).add(int(number))
    return sass, ptx
