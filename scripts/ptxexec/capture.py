"""Build the plugin's CUDA sources for the executor: device code as PTX, host code linked against a
stand-in CUDA runtime (cuda_stub.c) whose launches come back to Python.

So the check runs the plugin's real C entry points (``deformrt_dcn_forward`` and friends): their launch
code chooses grids, tile shapes and shared-memory sizes and packs the kernel parameters exactly as on a
GPU, and every launch they make is run by the executor, in stream order.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from .ptx import Module, parse_module

HERE = Path(__file__).resolve().parent
STUB_SOURCE = HERE / "cuda_stub.c"

# Device attributes per architecture the stand-in runtime reports: compute capability, SM count of the
# GPU the check models (A100, Jetson AGX Orin, H100 SXM, ...) and the per-block shared-memory opt-in
# (CUDA programming guide, "Compute capabilities" table: 163 KB on 8.0/8.7, 99 KB on 8.6/8.9, 227 KB on 9.0) and
# the L2 size (datasheets: A100 40 MB, RTX 3080 6 MB, Jetson AGX Orin 4 MB, RTX 4090 72 MB, H100 SXM 50 MB).
DEVICES = {
    "sm_75": dict(major=7, minor=5, sms=40, shared_optin=64 * 1024, l2=4 << 20),
    "sm_80": dict(major=8, minor=0, sms=108, shared_optin=163 * 1024, l2=40 << 20),
    "sm_86": dict(major=8, minor=6, sms=84, shared_optin=99 * 1024, l2=6 << 20),
    "sm_87": dict(major=8, minor=7, sms=16, shared_optin=163 * 1024, l2=4 << 20),
    "sm_89": dict(major=8, minor=9, sms=128, shared_optin=99 * 1024, l2=72 << 20),
    "sm_90": dict(major=9, minor=0, sms=132, shared_optin=227 * 1024, l2=50 << 20),
}

_ATTRIBUTE_NAMES = {"major": "cudaDevAttrComputeCapabilityMajor", "minor": "cudaDevAttrComputeCapabilityMinor",
                    "sms": "cudaDevAttrMultiProcessorCount", "shared_optin": "cudaDevAttrMaxSharedMemoryPerBlockOptin",
                    "l2": "cudaDevAttrL2CacheSize"}


class BuildError(Exception):
    pass


def find_nvcc() -> Optional[str]:
    return shutil.which("nvcc")


def cuda_include_dir(nvcc: str) -> Path:
    """The toolkit's include directory, as nvcc itself reports it (nvcc may be a wrapper script)."""
    dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    candidates = re.findall(r'INCLUDES="-I([^"]+?)"', dry.stdout + dry.stderr)
    candidates.append(str(Path(nvcc).resolve().parent.parent / "include"))
    for inc in candidates:
        if (Path(inc.strip()) / "driver_types.h").is_file():
            return Path(inc.strip())
    raise BuildError(f"no CUDA headers (driver_types.h) found for {nvcc}")


def runtime_enums(include: Path) -> dict[str, int]:
    """The enum values the stand-in runtime needs, read from the toolkit's driver_types.h."""
    text = (include / "driver_types.h").read_text(errors="replace")
    out = {}
    for name in list(_ATTRIBUTE_NAMES.values()) + ["cudaFuncAttributeMaxDynamicSharedMemorySize"]:
        m = re.search(rf"\b{name}\s*=\s*(\d+)", text)
        if not m:
            raise BuildError(f"{name} not found in {include / 'driver_types.h'}")
        out[name] = int(m.group(1))
    return out


def _run(cmd: list, what: str):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(map(str, cmd[:3]))} ...):\n{(done.stderr + done.stdout)[-6000:]}")


@dataclasses.dataclass
class Build:
    library: Path
    ptx: dict            # source file name -> PTX text
    arch: str


def _includes(path: Path, dirs: tuple, seen: set) -> set:
    """``path`` and every file it includes with #include "..." from ``dirs``, transitively."""
    if path in seen or not path.is_file():
        return seen
    seen.add(path)
    for name in re.findall(r'^\s*#\s*include\s*"([^"]+)"', path.read_text(errors="replace"), re.M):
        for d in (path.parent,) + dirs:
            if (d / name).is_file():
                _includes((d / name).resolve(), dirs, seen)
                break
    return seen


def _digest(parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()[:20]


def _gencode(arch: str) -> str:
    """nvcc's -gencode value for PTX of ``arch``: "sm_80" -> compute_80; "sm_90a" -> compute_90a (the
    arch-specific target whose device code sees __CUDA_ARCH_FEAT_SM90_ALL and may use wgmma, setmaxnreg)."""
    number = arch.removeprefix("sm_")
    if not re.fullmatch(r"\d+a?", number):
        raise BuildError(f"unknown architecture {arch} (sm_NN or sm_NNa)")
    return f"arch=compute_{number},code=compute_{number}"


def _unit_dirs(nvcc: str, src_dir: Path, include_dir: Path, sources: tuple, arch: str, cache_dir: Path,
               kind: str = "") -> dict:
    """source -> its cache folder, named by the source, ``arch``, ``kind`` and a digest of nvcc's version and
    the content of every file the source includes."""
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    units = {}
    for s in sources:
        files = sorted(_includes((src_dir / s).resolve(), (src_dir.resolve(), include_dir.resolve()), set()),
                       key=lambda f: (f.name, str(f)))
        digest = _digest([version] + [f.name.encode() + f.read_bytes() for f in files])
        units[s] = cache_dir / f"{s}-{arch}{kind}-{digest}"
    return units


def build_ptx(src_dir: Path, include_dir: Path, sources: tuple, arch: str, cache_dir: Path, jobs: int = 2) -> dict:
    """Device code only: source -> PTX of ``sources`` compiled for ``arch`` (e.g. "sm_90a" beside a
    :func:`build` for sm_80, whose host library launches the same kernel names), cached like :func:`build`."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found on PATH")
    cache_dir.mkdir(parents=True, exist_ok=True)
    units = _unit_dirs(nvcc, src_dir, include_dir, sources, arch, cache_dir, "-ptx")
    procs = []
    for s in sources:
        if (units[s] / "unit.ptx").is_file():
            continue
        tmp = Path(tempfile.mkdtemp(prefix="tmp-unit-", dir=cache_dir))
        cmd = [nvcc, "-ptx", "-O3", "-DNDEBUG", "-std=c++17", "--expt-relaxed-constexpr", "-gencode", _gencode(arch),
               "-I", str(include_dir), "-I", str(src_dir), str(src_dir / s), "-o", str(tmp / "unit.ptx")]
        procs.append((s, tmp, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        if len(procs) >= jobs:
            _finish(procs.pop(0), units)
    for p in procs:
        _finish(p, units)
    for path in units.values():
        os.utime(path)
    _prune(cache_dir)
    return {s: (units[s] / "unit.ptx").read_text() for s in sources}


def build(src_dir: Path, include_dir: Path, sources: tuple, arch: str, cache_dir: Path, jobs: int = 2,
          defines: tuple = ()) -> Build:
    """Compile ``sources`` (in ``src_dir``) for ``arch`` (e.g. "sm_80"): PTX, host objects, and a shared
    library with the stand-in runtime. ``defines``: extra -D flags for every source (part of the cache key).
    Each source is cached in ``cache_dir`` by its content and that of the headers it includes (so a change
    to one source recompiles only that one)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found on PATH")
    cache_dir.mkdir(parents=True, exist_ok=True)
    units = _unit_dirs(nvcc, src_dir, include_dir, sources, arch, cache_dir,
                       f"-D{_digest(defines)[:8]}" if defines else "")
    lib_dir = cache_dir / f"lib-{_digest([STUB_SOURCE.read_bytes()] + [u.name for u in units.values()])}"
    lib = lib_dir / "libdeformrt_capture.so"
    # A unit pruned since its library was linked is compiled again, and the library linked again: nvcc
    # names a file's anonymous namespace afresh on each compile, so the old library's kernel names would
    # no longer match the new PTX.
    todo = [s for s in sources if not (units[s] / "unit.o").is_file()]
    if todo and lib_dir.is_dir():
        shutil.rmtree(lib_dir, ignore_errors=True)
    if todo or not lib.is_file():
        procs = []
        for s in todo:
            tmp = Path(tempfile.mkdtemp(prefix="tmp-unit-", dir=cache_dir))
            cmd = [nvcc, "-c", "-O3", "-DNDEBUG", *defines, "-std=c++17", "--expt-relaxed-constexpr",
                   "-gencode", _gencode(arch), "-Xcompiler", "-fPIC",
                   "-keep", "-keep-dir", str(tmp), "-I", str(include_dir), "-I", str(src_dir),
                   str(src_dir / s), "-o", str(tmp / "unit.o")]
            procs.append((s, tmp, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            if len(procs) >= jobs:
                _finish(procs.pop(0), units)
        for p in procs:
            _finish(p, units)
        tmp = Path(tempfile.mkdtemp(prefix="tmp-lib-", dir=cache_dir))
        try:
            stub = tmp / "cuda_stub.o"
            _run(["cc", "-c", "-O2", "-fPIC", str(STUB_SOURCE), "-o", str(stub)], "compiling the stand-in runtime")
            _run(["c++", "-shared", "-fPIC", "-Wl,-z,defs", *[str(units[s] / "unit.o") for s in sources], str(stub),
                  "-o", str(tmp / lib.name)],
                 "linking the host code against the stand-in CUDA runtime (a missing symbol is a runtime call "
                 "the stand-in lacks)")
            _publish(tmp, lib_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for path in list(units.values()) + [lib_dir]:
        os.utime(path)  # most recently used: kept by _prune
    _prune(cache_dir)
    return Build(lib, {s: (units[s] / "unit.ptx").read_text() for s in sources}, arch)


def build_host(src_dir: Path, include_dir: Path, cache_dir: Path, source: str = "deformConvHost.cpp") -> Path:
    """The kernels' CPU build (``source``: their tile code compiled for the host, mma emulated) as a shared
    library, cached in ``cache_dir`` by the content of the files it includes."""
    files = sorted(_includes((src_dir / source).resolve(), (src_dir.resolve(), include_dir.resolve()), set()),
                   key=lambda f: (f.name, str(f)))
    compiler = shutil.which("c++") or "c++"
    out_dir = cache_dir / f"host-{_digest([compiler] + [f.name.encode() + f.read_bytes() for f in files])}"
    lib = out_dir / "libdeformrt_host.so"
    if not lib.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="tmp-host-", dir=cache_dir))
        try:
            _run([compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-I", str(include_dir), "-I", str(src_dir),
                  str(src_dir / source), "-o", str(tmp / lib.name)], "compiling the CPU build of the kernels")
            _publish(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    os.utime(out_dir)
    return lib


def _prune(cache_dir: Path, keep: int = 36):
    """Keep the ``keep`` most recently used compiled units and libraries (scratch copies of the sources,
    e.g. the seeded-defect tests', would otherwise accumulate)."""
    for prefix in ("lib-", "host-", ""):
        entries = [p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith("tmp-")
                   and (p.name.startswith(prefix) if prefix else not p.name.startswith(("lib-", "host-")))]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[keep:]:
            shutil.rmtree(old, ignore_errors=True)


def _publish(tmp: Path, final: Path):
    """Move a finished folder into place (another process may have published the same one already)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise


def _finish(item, units):
    source, tmp, proc = item
    try:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise BuildError(f"nvcc failed for {source}:\n{(stderr + stdout)[-6000:]}")
        found = [p for p in tmp.glob("*.ptx")]
        if len(found) != 1:
            raise BuildError(f"nvcc left {len(found)} PTX files for {source}")
        out = tmp / "published"
        out.mkdir()
        if (tmp / "unit.o").is_file():  # build(); build_ptx() makes the PTX only
            os.replace(tmp / "unit.o", out / "unit.o")
        os.replace(found[0], out / "unit.ptx")
        _publish(out, units[source])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RecordedLaunch:
    kernel: str
    grid: tuple
    block: tuple
    dynamic_shared: int
    params: list          # bytes per parameter
    error: Optional[str]  # why the (real) runtime would have refused it


@dataclasses.dataclass
class RecordedMemoryOp:
    op: str               # "memset" | "memcpy"
    dst: int
    src_or_value: int
    nbytes: int


_MEMORY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)


class _Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


_LAUNCH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, _Dim3, _Dim3, ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_void_p), ctypes.c_longlong)


# nvcc names a file's anonymous namespace from its path (and build), e.g. _GLOBAL__N__4ff77004_23_
# deformConvTensorCore_cu_c8015e94: PTX compiled separately (another target, or the same sources copied
# elsewhere) names the same kernels with other hex digits.
_ANONYMOUS_NAMESPACE = re.compile(r"(_GLOBAL__N__)[0-9a-f]{8}(_\d+_\w+?_)[0-9a-f]{8}")


def _host_kernel_names(text: str, host_kernels) -> str:
    """``text`` with each .entry renamed to the host build's name of the same kernel (the name the host
    code launches), where only the anonymous-namespace digits differ."""
    by_shape = {_ANONYMOUS_NAMESPACE.sub(r"\1\2", name): name for name in host_kernels}
    for name in set(re.findall(r"\.entry\s+([\w$]+)", text)):
        host = by_shape.get(_ANONYMOUS_NAMESPACE.sub(r"\1\2", name))
        if host is not None and host != name:
            text = text.replace(name, host)
    return text


class CapturedLibrary:
    """The plugin's host code loaded with the stand-in runtime; :meth:`calls` records what one C call
    launched. ``modules`` maps each .entry name to its parsed PTX kernel (for the parameter sizes)."""

    def __init__(self, b: Build, device: str = "sm_80"):
        self.build = b
        self._ptx_sets: dict[str, tuple] = {}
        self.add_ptx(b.arch, b.ptx)
        self.use_ptx(b.arch)
        self.lib = ctypes.CDLL(str(b.library))
        self.enums = runtime_enums(cuda_include_dir(find_nvcc()))
        self.lib.deformrt_stub_set_enums(self.enums["cudaFuncAttributeMaxDynamicSharedMemorySize"],
                                         self.enums["cudaDevAttrMaxSharedMemoryPerBlockOptin"])
        self._records: list = []
        self._launch_cb = _LAUNCH_CB(self._on_launch)
        self._memory_cb = _MEMORY_CB(self._on_memory)
        self.lib.deformrt_stub_set_callbacks(self._launch_cb, self._memory_cb)
        self.set_device(device)

    def add_ptx(self, arch: str, ptx: dict):
        """Device code of the same sources built for another PTX target (capture.build_ptx), e.g. sm_90a
        beside the library's sm_80: the host code launches kernels by name, so either set can run them."""
        if self._ptx_sets:
            ptx = {src: _host_kernel_names(text, self._ptx_sets[self.build.arch][1]) for src, text in ptx.items()}
        modules = {src: parse_module(text, f"{src} ({arch})") for src, text in ptx.items()}
        kernel_module = {name: module for module in modules.values() for name in module.kernels}
        self._ptx_sets[arch] = (modules, kernel_module)

    def has_ptx(self, arch: str) -> bool:
        return arch in self._ptx_sets

    def use_ptx(self, arch: str):
        """Run the launches from now on with the device code built for ``arch`` (added by add_ptx)."""
        self.ptx_arch = arch
        self.modules, self.kernel_module = self._ptx_sets[arch]

    def set_device(self, device: str):
        attrs = DEVICES[device]
        self.device = device
        for key, enum_name in _ATTRIBUTE_NAMES.items():
            self.lib.deformrt_stub_set_attribute(self.enums[enum_name], attrs[key])
        self.lib.deformrt_stub_reset()

    def _on_launch(self, name, grid, block, shared, args, granted):
        try:
            kname = name.decode()
            module = self.kernel_module.get(kname)
            if module is None:
                self._records.append(RecordedLaunch(kname, (grid.x, grid.y, grid.z), (block.x, block.y, block.z),
                                                    int(shared), [], f"kernel {kname} is not in the PTX"))
                return 98  # cudaErrorInvalidDeviceFunction
            kernel = module.kernels[kname]
            params = [ctypes.string_at(args[i], p.size) for i, p in enumerate(kernel.params)]
            error = self._launch_error(kernel, (grid.x, grid.y, grid.z), (block.x, block.y, block.z), int(shared),
                                       int(granted))
            self._records.append(RecordedLaunch(kname, (grid.x, grid.y, grid.z), (block.x, block.y, block.z),
                                                int(shared), params, error))
            return 9 if error else 0  # cudaErrorInvalidConfiguration
        except Exception as exc:  # never let an exception cross into C
            self._records.append(RecordedLaunch(str(name), (0, 0, 0), (0, 0, 0), 0, [], f"capture failed: {exc}"))
            return 999

    def _launch_error(self, kernel, grid, block, shared, granted) -> Optional[str]:
        threads = block[0] * block[1] * block[2]
        if threads == 0 or threads > 1024 or block[2] > 64:
            return f"block {block} is not a valid CTA size"
        if kernel.max_threads is not None and threads > kernel.max_threads[0] * kernel.max_threads[1] * \
                kernel.max_threads[2]:
            return f"block of {threads} threads above the kernel's .maxntid {kernel.max_threads}"
        if grid[0] < 1 or grid[1] < 1 or grid[2] < 1 or grid[0] >= 2**31 or grid[1] > 65535 or grid[2] > 65535:
            return f"grid {grid} outside CUDA's limits"
        static = kernel.shared_layout()[1]
        if shared > 48 * 1024 and shared > granted:
            return (f"{shared} bytes of dynamic shared memory without cudaFuncSetAttribute opting in "
                    f"(granted {granted})")
        if static + shared > DEVICES[self.device]["shared_optin"]:
            return f"{static + shared} bytes of shared memory above the device's {DEVICES[self.device]['shared_optin']}"
        return None

    def _on_memory(self, op, dst, src_or_value, nbytes):
        self._records.append(RecordedMemoryOp("memset" if op == 0 else "memcpy", int(dst), int(src_or_value),
                                              int(nbytes)))
        return 0

    def calls(self):
        """A context: ``with lib.calls() as recorded: lib.lib.deformrt_...(...)``; ``recorded`` is the list."""
        lib = self

        class _Ctx:
            def __enter__(self):
                lib._records = []
                return lib._records

            def __exit__(self, *exc):
                return False
        return _Ctx()
