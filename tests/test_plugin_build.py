"""Building plugins/: the README's commands exactly as written build every default architecture (also when
run twice, and after a build for other architectures), with the machine's CMake and with the oldest one
CMakeLists.txt declares; the kernel library's C API works without a GPU; the TensorRT plugin (with its CUDA
kernels) compiles and links against each set of TensorRT headers alone (tests/trt_headers.py); and the plugin
sources take every contract name from opContract.h."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cmake_tools import OLDEST_CMAKE, cmake_id, cmake_version, cmakes, configured_cuda_archs
from exporter.cli import app
from exporter.onnx import op_contract as oc
from exporter.trt import plugin_build
from exporter.trt.plugin_build import cmake_build, cmake_configure, cmake_minimum_version
from models.native import AUTOLOAD_PLUGIN_LIBRARY, KERNEL_LIBRARY, PLUGIN_LIBRARY, PLUGINS_DIR
from models.ops.cuda_kernels import DESC_FIELDS, ConvDesc, declare_c_api, make_desc
from trt_headers import HEADER_SETS_DIR, header_set_id, header_sets

needs_nvcc = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("nvcc") is None,
                                reason="cmake and nvcc are needed to compile the CUDA kernels")

# nvcc's per-architecture compilation runs in parallel threads; two keep a shared 2-core CI usable.
THREADS = "2"


def _nvcc_version() -> tuple[int, int]:
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = re.search(r"release (\d+)\.(\d+)", out).groups()
    return int(major), int(minor)


def _expected_archs() -> set[int]:
    archs = {75, 80, 86, 87, 89, 90}
    if _nvcc_version() >= (12, 8):
        archs |= {100, 120}
    if _nvcc_version() >= (13, 0):
        archs |= {110}
    return archs


def _expected_ptx() -> set[int]:
    return {max(_expected_archs())}


README_HEADERS = HEADER_SETS_DIR / "10.3.0" / "include"


def _readme_build_plugin(build_dir: Path, *args: str):
    """`deformrt build-plugin ARGS` as the README writes it, its build directory (plugins/build for a user)
    moved to ``build_dir``. CMAKE_BUILD_PARALLEL_LEVEL (read by `cmake --build`) keeps both nvcc jobs busy."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plugin_build, "DEFAULT_BUILD_DIR", build_dir)
        mp.setenv("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        return CliRunner().invoke(app, ["build-plugin", *args])


def _listing(library: Path) -> str:
    """cuobjdump's list of the cubins and PTX embedded in a built library."""
    cuobjdump = shutil.which("cuobjdump") or next(
        (str(p) for entry in sys.path for p in Path(entry or ".").glob("nvidia/cu*/bin/cuobjdump")), None)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found (CUDA toolkit or the nvidia-cuda-cuobjdump wheel of the test extra)")
    return subprocess.run([cuobjdump, "--list-elf", "--list-ptx", str(library)], capture_output=True, text=True,
                          check=True).stdout


def _binary_archs(library: Path) -> tuple[set[int], set[int]]:
    """(SASS, PTX) architectures embedded in a built library (architecture-specific ones, e.g. sm_90a, apart)."""
    listing = _listing(library)
    return ({int(a) for a in re.findall(r"\.sm_(\d+)\.cubin", listing)},
            {int(a) for a in re.findall(r"\.sm_(\d+)\.ptx", listing)})


def _specific_archs(library: Path) -> set[str]:
    """Architecture-specific SASS (sm_90a: the Hopper wgmma kernel) embedded in a built library."""
    return set(re.findall(r"\.sm_(\d+a)\.cubin", _listing(library)))


@pytest.fixture(scope="module")
def readme_build(tmp_path_factory):
    """The README's headers-only build, exactly as written (no --archs): every default architecture."""
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("cmake and nvcc are needed to compile the CUDA kernels")
    out = tmp_path_factory.mktemp("readme-build-plugin")
    result = _readme_build_plugin(out, "--tensorrt-include-dir", str(README_HEADERS))
    assert result.exit_code == 0, result.output
    return out, result


@needs_nvcc
def test_readme_build_plugin_builds_every_default_architecture_and_again_when_run_twice(readme_build):
    out, first = readme_build
    assert first.stdout.strip() == str((out / PLUGIN_LIBRARY).resolve())
    expected = (_expected_archs(), _expected_ptx())
    assert f"building for architectures {';'.join(f'{a}-real' for a in sorted(expected[0])[:-1])};" in first.stderr
    for library in (KERNEL_LIBRARY, PLUGIN_LIBRARY, AUTOLOAD_PLUGIN_LIBRARY):
        assert _binary_archs(out / library) == expected, library
        # the default list has 90: the wgmma kernel's sm_90a code too (deformConvWgmma.cu)
        assert _specific_archs(out / library) == {"90a"}, library
    # The same command again (CMake used to cache nvcc's own default, sm_75, at the first configure and build
    # only that the second time, without the fp16 tensor-core kernel).
    second = _readme_build_plugin(out, "--tensorrt-include-dir", str(README_HEADERS))
    assert second.exit_code == 0, second.output
    assert configured_cuda_archs(out) == expected
    for library in (KERNEL_LIBRARY, PLUGIN_LIBRARY):
        assert _binary_archs(out / library) == expected, library


@needs_nvcc
def test_kernels_compile_for_every_default_architecture(readme_build):
    out, _ = readme_build
    assert configured_cuda_archs(out) == (_expected_archs(), _expected_ptx())
    assert (out / KERNEL_LIBRARY).is_file()


def _plain_configure(cmake: Path, build_dir: Path, *args: str) -> str:
    """`cmake -S plugins -B DIR ARGS` with ``cmake`` (the README's plain-CMake command); its output."""
    proc = subprocess.run([str(cmake), "-S", str(PLUGINS_DIR), "-B", str(build_dir), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@needs_nvcc
@pytest.mark.parametrize("cmake", cmakes(), ids=cmake_id)
def test_plain_cmake_configure_twice_and_switching_architectures(tmp_path, cmake):
    """The README's plain CMake configure, with each CMake: the default architectures, again on a second
    configure, 87 when asked, and the default again when build-plugin configures without --archs."""
    default = (_expected_archs(), _expected_ptx())
    _plain_configure(cmake, tmp_path, f"-DTENSORRT_INCLUDE_DIR={README_HEADERS}")
    assert configured_cuda_archs(tmp_path) == default
    _plain_configure(cmake, tmp_path)
    assert configured_cuda_archs(tmp_path) == default, "a second configure keeps the default"
    assert "(the project's default)" in _plain_configure(cmake, tmp_path)
    _plain_configure(cmake, tmp_path, "-DCMAKE_CUDA_ARCHITECTURES=87")
    assert configured_cuda_archs(tmp_path) == ({87}, {87})
    _plain_configure(cmake, tmp_path)
    assert configured_cuda_archs(tmp_path) == ({87}, {87}), "an architecture the user set stays set, as in CMake"
    # build-plugin without --archs: the default again, in the folder an `--archs 87` build left.
    cmake_configure(tmp_path, {"CMAKE_BUILD_TYPE": "Release"}, unset=["CMAKE_CUDA_ARCHITECTURES"], cmake=cmake)
    assert configured_cuda_archs(tmp_path) == default


def test_the_oldest_cmake_is_the_declared_minimum():
    if not OLDEST_CMAKE.is_file():
        pytest.fail(f"{OLDEST_CMAKE} is missing: `make venv` installs it (Makefile CMAKE_OLDEST_VERSION)")
    declared = tuple(int(p) for p in cmake_minimum_version().split("."))
    assert cmake_version(OLDEST_CMAKE)[:len(declared)] == declared


@needs_nvcc
def test_kernel_library_c_api_without_a_gpu(readme_build):
    lib = declare_c_api(ctypes.CDLL(str(readme_build[0] / KERNEL_LIBRARY)))
    x, offset, weight = torch.randn(2, 4, 6, 6), torch.randn(2, 18, 6, 6), torch.randn(8, 4, 3, 3)
    desc = make_desc(x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    assert ctypes.sizeof(ConvDesc) == 8 * len(DESC_FIELDS)
    assert lib.deformrt_dcn_validate(ctypes.byref(desc)) is None
    assert lib.deformrt_dcn_workspace_size(ctypes.byref(desc), 0) == 0
    # fp16: NHWC staging of x (2*4*6*6 halves = 576 B) and the OIHW weight transposed to OHWI (8*4*9 halves =
    # 576 B), each rounded up to 256 bytes; an OHWI weight needs no copy. The CPU build gives the same sizes
    # (tests/test_plugin_host.py).
    assert lib.deformrt_dcn_workspace_size(ctypes.byref(desc), 1) == 768 + 768
    assert lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc)) == 768
    ohwi = make_desc(x, offset, weight.permute(0, 2, 3, 1), None, None, (1, 1), (1, 1), (1, 1), "OHWI")
    assert lib.deformrt_dcn_workspace_size(ctypes.byref(ohwi), 1) == 768
    assert lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(ohwi)) == 0
    assert lib.deformrt_dcn_nhwc_supported(ctypes.byref(desc)) == 0  # no GPU here
    # K = 256 x 9 >= 2048: the split-K partial sums too (8 splits of 54 x 96 fp32 values), as in the CPU build
    long_k = make_desc(torch.empty(1, 256, 6, 9), torch.empty(1, 18, 6, 9), torch.empty(96, 3, 3, 256), None, None,
                       (1, 1), (1, 1), (1, 1), "OHWI")
    assert lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(long_k)) == -(-8 * 54 * 96 * 4 // 256) * 256
    fake = ctypes.c_void_p(16)
    not_supported = 801  # cudaErrorNotSupported: no sm_80+ device to run the tensor-core kernel on
    assert lib.deformrt_dcn_forward_nhwc(ctypes.byref(ohwi), fake, fake, fake, None, None, fake, None, 0,
                                         None) == not_supported
    # Too small a workspace for the OIHW weight's transpose: refused before anything touches the GPU.
    assert lib.deformrt_dcn_forward_nhwc(ctypes.byref(desc), fake, fake, fake, None, None, fake, fake, 767, None) == 1
    desc.offsetGroup = 3
    assert b"offset_group" in lib.deformrt_dcn_validate(ctypes.byref(desc))
    # An invalid problem is refused before anything touches the GPU: cudaErrorInvalidValue (1).
    assert lib.deformrt_dcn_forward_nhwc(ctypes.byref(desc), fake, fake, fake, None, None, fake, None, 0, None) == 1
    assert lib.deformrt_dcn_forward(ctypes.byref(desc), 0, fake, fake, fake, None, None, fake, None, 0, None) == 1


@needs_nvcc
@pytest.mark.skipif(not header_sets(), reason=f"no TensorRT headers in {HEADER_SETS_DIR} or $TENSORRT_INCLUDE_DIR")
@pytest.mark.parametrize("include_dir", header_sets() or [Path("none")], ids=header_set_id)
def test_plugin_builds_headers_only_without_tensorrt_symbols(tmp_path, include_dir):
    out = cmake_build(tmp_path, {"TENSORRT_INCLUDE_DIR": str(include_dir), "CMAKE_CUDA_ARCHITECTURES": "75-real",
                                 "DEFORMRT_NVCC_THREADS": THREADS}, ["deformrt_plugin", "deformrt_plugin_autoload"],
                      jobs=2)
    exported = {}
    for name in (PLUGIN_LIBRARY, AUTOLOAD_PLUGIN_LIBRARY):
        library = out / name
        undefined = subprocess.run(["nm", "-D", "-u", str(library)], capture_output=True, text=True, check=True).stdout
        names = {line.split()[-1].split("@")[0] for line in undefined.splitlines() if line.strip()}
        # TensorRT is reached only through dlopen/dlsym of libnvinfer.so.<major>: no libnvinfer symbol is
        # needed to link or load, and with headers alone there is no library to depend on.
        assert not {n for n in names if "nvinfer" in n or n in ("getPluginRegistry", "getLogger")}
        libs = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
        assert "libnvinfer" not in libs
        assert not _specific_archs(library)  # no 90 in the list: no sm_90a wgmma code either
        defined = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True,
                                 check=True).stdout
        exported[name] = {line.split()[-1] for line in defined.splitlines() if " T " in line}
    # loadLibrary's file exports what TensorRT calls; the self-registering file must not look like one.
    assert {"getCreators", "setLoggerFinder", "deformrt_dcn_forward"} <= exported[PLUGIN_LIBRARY]
    assert "deformrt_dcn_forward" in exported[AUTOLOAD_PLUGIN_LIBRARY]
    assert not {"getCreators", "setLoggerFinder"} & exported[AUTOLOAD_PLUGIN_LIBRARY]


def test_plugin_sources_take_contract_names_from_the_header():
    sources = sorted((PLUGINS_DIR / "src").glob("*.[ch]*"))
    assert sources
    literals = {oc.OP_NAME, oc.OP_DOMAIN, oc.PLUGIN_NAME, oc.PLUGIN_NAMESPACE, *oc.ATTRIBUTE_NAMES}
    for path in sources:
        text = path.read_text()
        found = literals & set(re.findall(r'"([^"\\]*)"', text))
        assert not found, f"{path.name} spells contract names {sorted(found)}; use deformrt/opContract.h"
    plugin_files = [p for p in sources if p.name.startswith(("deformConvPlugin", "pluginEntry", "tensorrtRuntime"))]
    assert any('#include "deformrt/opContract.h"' in p.read_text() for p in plugin_files)
