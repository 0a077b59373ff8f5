"""Building plugins/: nvcc compiles the kernels for every default architecture, the kernel library's
C API works without a GPU, the TensorRT plugin (with its CUDA kernels) compiles and links against
each set of TensorRT headers alone (tests/trt_headers.py), and the plugin sources take every contract name from opContract.h."""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from exporter.onnx import op_contract as oc
from exporter.trt.plugin_build import cmake_build
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


@pytest.fixture(scope="module")
def kernel_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("deformrt-kernels")
    cmake_build(out, {"DEFORMRT_BUILD_CUDA": "ON", "DEFORMRT_NVCC_THREADS": THREADS,
                      "CMAKE_EXPORT_COMPILE_COMMANDS": "ON"}, ["deformrt_kernels"], jobs=2)
    return out


@needs_nvcc
def test_kernels_compile_for_every_default_architecture(kernel_build):
    commands = json.loads((kernel_build / "compile_commands.json").read_text())
    cu = [c["command"] for c in commands if c["file"].endswith("deformConvKernel.cu")]
    assert len(cu) == 1
    sass = {int(a) for a in re.findall(r"code=\[?(?:compute_\d+,)?sm_(\d+)", cu[0])}
    assert sass == _expected_archs()
    newest = max(_expected_archs())
    assert re.search(rf"code=\[?compute_{newest}", cu[0]), "PTX of the newest architecture is embedded"
    assert (kernel_build / KERNEL_LIBRARY).is_file()


@needs_nvcc
def test_kernel_library_c_api_without_a_gpu(kernel_build):
    lib = declare_c_api(ctypes.CDLL(str(kernel_build / KERNEL_LIBRARY)))
    x, offset, weight = torch.randn(2, 4, 6, 6), torch.randn(2, 18, 6, 6), torch.randn(8, 4, 3, 3)
    desc = make_desc(x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    assert ctypes.sizeof(ConvDesc) == 8 * len(DESC_FIELDS)
    assert lib.deformrt_dcn_validate(ctypes.byref(desc)) is None
    assert lib.deformrt_dcn_workspace_size(ctypes.byref(desc), 0) == 0
    # fp16: NHWC staging of x (2*4*6*6 halves = 576 B) and the packed weights (8 output channels x 9 steps
    # x 16-deep K halves = 2304 B), each rounded up to 256 bytes.
    packed = 8 * 9 * 16 * 2
    assert lib.deformrt_dcn_packed_weight_size(ctypes.byref(desc)) == packed
    assert lib.deformrt_dcn_workspace_size(ctypes.byref(desc), 1) == 768 + 2304
    assert lib.deformrt_dcn_nhwc_supported(ctypes.byref(desc)) == 0  # no GPU here
    fake = ctypes.c_void_p(16)
    not_supported = 801  # cudaErrorNotSupported: no sm_80+ device to run the tensor-core kernel on
    assert lib.deformrt_dcn_forward_nhwc(ctypes.byref(desc), fake, fake, fake, None, None, fake, None) == not_supported
    desc.offsetGroup = 3
    assert b"offset_group" in lib.deformrt_dcn_validate(ctypes.byref(desc))
    # An invalid problem is refused before anything touches the GPU: cudaErrorInvalidValue (1).
    assert lib.deformrt_dcn_forward_nhwc(ctypes.byref(desc), fake, fake, fake, None, None, fake, None) == 1
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
