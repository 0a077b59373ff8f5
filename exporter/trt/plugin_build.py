"""Build the deformrt native libraries: CMake over ``plugins/`` (``deformrt build-plugin``).

Finding a built library is :mod:`models.native`; this module only configures and builds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from models.errors import DeformRTError
from models.native import DEFAULT_BUILD_DIR, PLUGIN_LIBRARY, PLUGINS_DIR

_ARCH = re.compile(r"^\d{2,3}[af]?(-real|-virtual)?$")

PathLike = Union[str, os.PathLike]


def _arch_list(archs: Union[str, Sequence[Union[str, int]], None]) -> Optional[str]:
    if archs is None:
        return None
    items = [a.strip() for a in re.split(r"[;,\s]+", archs)] if isinstance(archs, str) else [str(a) for a in archs]
    items = [a for a in items if a]
    bad = [a for a in items if not _ARCH.match(a)]
    if not items or bad:
        raise DeformRTError(f"invalid CUDA architecture list {archs!r}: use numbers such as 75;80;86;87;89;90 "
                            "(optionally with -real or -virtual)")
    return ";".join(items)


def _run(cmd: list[str], step: str) -> None:
    """Run ``cmd``, forwarding its output to stderr as progress; one-line DeformRTError on failure."""
    print(f"[deformrt] {step}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as exc:
        raise DeformRTError(f"{step} failed: cannot run {cmd[0]}: {exc.strerror}") from exc
    for line in proc.stdout:  # type: ignore[union-attr]
        sys.stderr.write(line)
    if proc.wait() != 0:
        raise DeformRTError(f"{step} failed (exit status {proc.returncode}); see the output above")


def cmake_minimum_version() -> str:
    """The CMake version ``plugins/CMakeLists.txt`` declares with cmake_minimum_required ("3.22")."""
    text = (PLUGINS_DIR / "CMakeLists.txt").read_text()
    return re.search(r"cmake_minimum_required\(VERSION ([0-9.]+)", text).group(1)


def _cmake_tool(cmake: Optional[PathLike]) -> str:
    """``cmake`` itself, else the cmake on PATH; a DeformRTError naming the minimum version when there is none."""
    tool = str(cmake) if cmake is not None else shutil.which("cmake")
    if tool is None:
        raise DeformRTError(f"cmake not found on PATH; install CMake >= {cmake_minimum_version()} to build the plugins")
    return tool


def cmake_configure(build_dir: PathLike, options: dict[str, str], unset: Sequence[str] = (),
                    cmake: Optional[PathLike] = None) -> Path:
    """Configure ``plugins/`` into ``build_dir``: first remove the cache entries ``unset`` (``-U``), then set
    ``options`` (``-D``). ``cmake``: the CMake to run (default: the one on PATH). Returns the build directory.
    Progress goes to stderr; a missing cmake or a failed configure is a DeformRTError."""
    out = Path(build_dir)
    _run([_cmake_tool(cmake), "-S", str(PLUGINS_DIR), "-B", str(out)] + [f"-U{name}" for name in unset]
         + [f"-D{k}={v}" for k, v in options.items()], "configure")
    return out


def cmake_build(build_dir: PathLike, options: dict[str, str], targets: Sequence[str] = (),
                jobs: Optional[int] = None, unset: Sequence[str] = (), cmake: Optional[PathLike] = None) -> Path:
    """Configure ``plugins/`` into ``build_dir`` (:func:`cmake_configure`) and build ``targets`` (all when
    empty); return the build directory. Progress goes to stderr; a missing cmake or a failed step is a
    DeformRTError."""
    out = cmake_configure(build_dir, options, unset, cmake)
    build = [_cmake_tool(cmake), "--build", str(out)]
    for target in targets:
        build += ["--target", target]
    if jobs is not None:
        build += ["--parallel", str(jobs)]
    _run(build, "build")
    return out


def build_plugin(build_dir: Optional[PathLike] = None, tensorrt_root: Optional[PathLike] = None,
                 tensorrt_include_dir: Optional[PathLike] = None,
                 archs: Union[str, Sequence[Union[str, int]], None] = None, jobs: Optional[int] = None) -> Path:
    """Configure and build ``plugins/`` with CMake; return the plugin library's path.

    ``tensorrt_root`` is a TensorRT install (include/, lib/); ``tensorrt_include_dir`` alone selects
    headers-only mode (no libnvinfer needed). ``archs`` sets CMAKE_CUDA_ARCHITECTURES (e.g. "87" for Jetson
    Orin); without it the build is for the project's default architectures, even in a build directory an
    earlier ``archs`` configured (the cached value is removed); ``jobs`` bounds build parallelism (also nvcc's per-architecture threads). Progress goes
    to stderr. Raises DeformRTError when an argument is invalid, a tool is missing, a step fails, or no
    plugin library results (TensorRT headers not found).
    """
    if jobs is not None and jobs < 1:
        raise DeformRTError(f"--jobs must be >= 1, got {jobs}")
    arch_list = _arch_list(archs)
    for name, value in (("TensorRT root", tensorrt_root), ("TensorRT include directory", tensorrt_include_dir)):
        if value is not None and not Path(value).is_dir():
            raise DeformRTError(f"{name} {value} is not a directory")
    if tensorrt_include_dir is not None and not (Path(tensorrt_include_dir) / "NvInferRuntime.h").is_file():
        raise DeformRTError(f"TensorRT include directory {tensorrt_include_dir} has no NvInferRuntime.h")
    if tensorrt_include_dir is None and tensorrt_root is not None \
            and not (Path(tensorrt_root) / "include" / "NvInferRuntime.h").is_file():
        # else CMake looks elsewhere and, finding no headers, builds the kernels but no plugin (minutes)
        raise DeformRTError(f"TensorRT root {tensorrt_root} has no include/NvInferRuntime.h: give the folder of a "
                            "TensorRT install (include/, lib/), or --tensorrt-include-dir for the headers alone")

    options = {"CMAKE_BUILD_TYPE": "Release", "Python3_EXECUTABLE": sys.executable}
    if tensorrt_root is not None:
        options["TENSORRT_ROOT"] = str(Path(tensorrt_root).resolve())
    if tensorrt_include_dir is not None:
        options["TENSORRT_INCLUDE_DIR"] = str(Path(tensorrt_include_dir).resolve())
    unset = []
    if arch_list is not None:
        options["CMAKE_CUDA_ARCHITECTURES"] = arch_list
    else:
        unset.append("CMAKE_CUDA_ARCHITECTURES")
    if jobs is not None:
        options["DEFORMRT_NVCC_THREADS"] = str(jobs)
    out = cmake_build(build_dir if build_dir is not None else DEFAULT_BUILD_DIR, options, jobs=jobs, unset=unset)
    library = out / PLUGIN_LIBRARY
    if not library.is_file():
        raise DeformRTError(f"the build finished without {PLUGIN_LIBRARY} (TensorRT headers not found?); "
                            "pass --tensorrt-root or --tensorrt-include-dir")
    return library.resolve()
