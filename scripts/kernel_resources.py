"""Registers, local memory (stack / spills) and shared memory of deformrt's CUDA kernels per GPU
architecture, and whether the tensor-core kernels' SASS issues HMMA / HGMMA (tensor-core) instructions.
The Hopper wgmma kernel (deformConvWgmma.cu) is sm_90a code: it is compiled for sm_90a when 90 is among the
architectures and listed under arch 90.

    python scripts/kernel_resources.py [--arch 80 87 90] [--json]

Compiles plugins/src/*.cu with nvcc (-Xptxas -v, no GPU needed) into a temporary folder. The SASS check
needs cuobjdump and nvdisasm (the CUDA toolkit's, or the nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm
wheels); without them it reports "n/a". tests/test_kernel_resources.py asserts on the same data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
KERNEL_SOURCES = ("deformConvTensorCore.cu", "deformConvKernel.cu")
# Sources of architecture-specific code: (source, the architecture whose list entry builds it, its target,
# the definition the CMake build gives it).
ARCH_SPECIFIC_SOURCES = (("deformConvWgmma.cu", 90, "90a", "DEFORMRT_WGMMA_SM90A=1"),)
CHECK_ARCHS = (80, 87, 90)  # Ampere, Jetson Orin, Hopper

sys.path.insert(0, str(REPO / "scripts"))
from ptxexec.capture import DEVICES  # noqa: E402

# Largest dynamic + static shared memory one block may opt in to, per compute capability (sm_80/87 163 KB,
# sm_86/89 99 KB, sm_90 227 KB, sm_75 64 KB): the PTX executor's device table, which the plugin's launch
# planning runs against.
SHARED_OPTIN_BYTES = {int(name.removeprefix("sm_")): device["shared_optin"] for name, device in DEVICES.items()}


@dataclasses.dataclass
class KernelResources:
    arch: int
    kernel: str
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    static_shared_bytes: int


def short_name(mangled: str) -> str:
    """A readable kernel name: demangled (c++filt when present), namespaces and argument lists dropped."""
    name = mangled
    if shutil.which("c++filt"):
        name = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip() or mangled
    name = name.replace("(anonymous namespace)::", "").removeprefix("void ")
    name = re.sub(r"\([^()]*\)$", "", name)  # the argument list
    name = re.sub(r"\b\w+::", "", name)
    name = name.replace("TileShape<", "").replace("WgmmaShape<", "")
    return name.replace(" >", ">").replace(", ", ",").replace(">>", ">")


def compile_with_report(source: str, archs: tuple, out_dir: Path, defines: tuple = (),
                        src_dir: Path = PLUGINS / "src") -> tuple[Path, str]:
    """nvcc -c of <src_dir>/<source> (plugins/src by default) for ``archs`` (numbers, or targets such as "90a")
    with ptxas' resource report; (object, report)."""
    obj = out_dir / (source + ".o")
    cmd = ["nvcc", "-c", "-O3", "-std=c++17", "--expt-relaxed-constexpr", "--threads", "2", "-Xptxas", "-v",
           "-I", str(PLUGINS / "include"), "-I", str(src_dir), str(src_dir / source), "-o", str(obj)]
    cmd += [f"-D{d}" for d in defines]
    for arch in archs:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed:\n{done.stderr[-4000:]}")
    return obj, done.stderr + done.stdout


def parse_ptxas(report: str) -> list[KernelResources]:
    """One entry per (architecture, kernel) from ``-Xptxas -v`` output."""
    rows: list[KernelResources] = []
    current: Optional[dict] = None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for 'sm_(\d+)a?'", line)
        if m:
            current = dict(kernel=short_name(m.group(1)), arch=int(m.group(2)))
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack_bytes=int(m.group(1)), spill_store_bytes=int(m.group(2)),
                           spill_load_bytes=int(m.group(3)))
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m:
            smem = re.search(r"(\d+) bytes smem", line)
            rows.append(KernelResources(registers=int(m.group(1)),
                                        static_shared_bytes=int(smem.group(1)) if smem else 0,
                                        **{"stack_bytes": 0, "spill_store_bytes": 0, "spill_load_bytes": 0,
                                           **current}))
            current = None
    return rows


def _nvidia_wheel_tool(name: str) -> Optional[Path]:
    """``name`` from an installed nvidia-cuda-* wheel (nvidia/cu*/bin/), if any."""
    for entry in sys.path:
        for candidate in sorted(Path(entry or ".").glob(f"nvidia/cu*/bin/{name}")):
            if candidate.is_file():
                return candidate
    return None


def find_cuobjdump() -> Optional[tuple[str, dict]]:
    """cuobjdump and an environment in which it finds nvdisasm, or None when either is missing."""
    cuobjdump = shutil.which("cuobjdump") or _nvidia_wheel_tool("cuobjdump")
    nvdisasm = shutil.which("nvdisasm") or _nvidia_wheel_tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        return None
    env = dict(os.environ, PATH=f"{Path(nvdisasm).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return str(cuobjdump), env


def sass_functions(sass: str) -> dict[tuple[int, str], list[str]]:
    """The lines of each (architecture, short kernel name) function in ``cuobjdump -sass`` output."""
    functions: dict[tuple[int, str], list[str]] = {}
    arch, current = 0, None
    for line in sass.splitlines():
        m = re.search(r"arch = sm_(\d+)", line)
        if m:
            arch = int(m.group(1))
            continue
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = functions.setdefault((arch, short_name(m.group(1))), [])
            continue
        if current is not None:
            current.append(line)
    return functions


def sass_text(obj: Path) -> Optional[str]:
    """``cuobjdump -sass`` of the compiled object ``obj``; None without cuobjdump. Disassembled once per
    version of the file: the HMMA counts here and scripts/sass_loop.py's loop statistics read the same text."""
    stat = obj.stat()
    return _sass_text(str(obj), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _sass_text(obj: str, mtime_ns: int, size: int) -> Optional[str]:
    tool = find_cuobjdump()
    if tool is None:
        return None
    cuobjdump, env = tool
    return subprocess.run([cuobjdump, "-sass", obj], capture_output=True, text=True, env=env, check=True).stdout


def hmma_counts(obj: Path) -> Optional[dict[tuple[int, str], int]]:
    """Number of HMMA (mma.sync) or HGMMA (wgmma) instructions per (architecture, kernel) in ``obj``'s SASS;
    None without cuobjdump."""
    sass = sass_text(obj)
    if sass is None:
        return None
    return {key: sum(bool(re.search(r"\bHG?MMA\.", line)) for line in lines)
            for key, lines in sass_functions(sass).items()}


def collect(archs: tuple[int, ...], out_dir: Path,
            src_dir: Path = PLUGINS / "src") -> tuple[list[KernelResources], Optional[dict]]:
    rows: list[KernelResources] = []
    hmma: Optional[dict] = {}
    builds = [(source, tuple(archs), ()) for source in KERNEL_SOURCES]
    builds += [(source, (target,), (define,))
               for source, arch, target, define in ARCH_SPECIFIC_SOURCES if arch in archs]
    for source, targets, defines in builds:
        obj, report = compile_with_report(source, targets, out_dir, defines, src_dir)
        rows += parse_ptxas(report)
        counts = hmma_counts(obj)
        hmma = None if counts is None or hmma is None else {**hmma, **counts}
    return rows, hmma


def format_table(rows: list[KernelResources], hmma: Optional[dict]) -> str:
    lines = [f"{'arch':>5} {'kernel':40} {'regs':>5} {'stack':>6} {'spill st/ld':>12} {'static smem':>12} "
             f"{'HMMA':>5}"]
    for r in sorted(rows, key=lambda r: (r.arch, r.kernel)):
        count = "n/a" if hmma is None else str(hmma.get((r.arch, r.kernel), 0))
        lines.append(f"sm_{r.arch:<2} {r.kernel[:40]:40} {r.registers:5d} {r.stack_bytes:6d} "
                     f"{r.spill_store_bytes:5d}/{r.spill_load_bytes:<6d} {r.static_shared_bytes:12d} {count:>5}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    from exporter.util.usage import ScriptParser, first_paragraph

    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--arch", type=int, nargs="+", default=list(CHECK_ARCHS),
                        choices=sorted(SHARED_OPTIN_BYTES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        print("error: nvcc not found: kernel_resources compiles the kernels with it", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        rows, hmma = collect(tuple(args.arch), Path(tmp))
    if args.json:
        print(json.dumps([dataclasses.asdict(r) | {"hmma": None if hmma is None else hmma.get((r.arch, r.kernel), 0)}
                          for r in rows], indent=2))
    else:
        print(format_table(rows, hmma))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
