"""Where the tests find TensorRT's public headers and CUDA's, for the builds that need no TensorRT library.

Header sets: every ``*/include`` of ``../shared/third_party/tensorrt-headers/`` (10.3.0, 10.13.3,
11.1 on every machine, CI included) and every directory in ``$TENSORRT_INCLUDE_DIR`` (``:``-separated).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Optional

HEADER_SETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "third_party" / "tensorrt-headers"


def header_sets() -> list[Path]:
    """Every TensorRT include directory to build against, each once."""
    dirs = sorted(p for p in HEADER_SETS_DIR.glob("*/include") if (p / "NvInferRuntime.h").is_file())
    dirs += [Path(d) for d in os.environ.get("TENSORRT_INCLUDE_DIR", "").split(os.pathsep) if d]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def header_set_id(include: Path) -> str:
    """Test id of a header set: its release folder's name (``10.3.0``)."""
    return include.parent.name


def tensorrt_major(include: Path) -> int:
    """The major version the headers in ``include`` declare (10.13 names it through TRT_MAJOR_ENTERPRISE)."""
    text = (include / "NvInferVersion.h").read_text()
    return int(re.search(r"#define (?:NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE) (\d+)", text).group(1))


@lru_cache(maxsize=None)
def cuda_include() -> Optional[Path]:
    """The directory holding cuda_runtime_api.h (TensorRT's headers include it; types only, nothing CUDA
    runs here): $CUDA_HOME and friends, else where nvcc includes from (asked with --dryrun, since nvcc
    may be a wrapper script), else /usr/local/cuda."""
    candidates = [Path(os.environ[v]) / "include" for v in ("CUDA_HOME", "CUDA_PATH", "CUDAToolkit_ROOT")
                  if os.environ.get(v)]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        dry = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", "/dev/null", "-o", "/dev/null"],
                             capture_output=True, text=True).stderr
        candidates += [Path(p) for p in re.findall(r'-I"?([^"\s]+)', dry)]
        candidates.append(Path(nvcc).resolve().parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)
