"""Compile checks of the CUDA kernels for sm_80 (Ampere), sm_87 (Jetson Orin) and sm_90 (Hopper), no GPU
needed: no local memory (stack frames or register spills), shared memory within each architecture's
per-block opt-in limit at the R-50 DCN stage shapes, and tensor-core (HMMA) instructions in the
tensor-core kernel's SASS. ``pytest -s`` prints the registers and shared memory of every kernel."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from exporter.trt.plugin_build import cmake_build
from models.native import HOST_LIBRARY
from models.ops.cuda_kernels import ConvDesc, declare_host_api


def _load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package and need not be on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


kernel_resources = _load_script("kernel_resources")
CHECK_ARCHS, SHARED_OPTIN_BYTES = kernel_resources.CHECK_ARCHS, kernel_resources.SHARED_OPTIN_BYTES
collect, format_table = kernel_resources.collect, kernel_resources.format_table

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                                reason="nvcc and cmake are needed to compile the CUDA kernels")

TENSOR_CORE_KERNEL = "deformConvTensorCore<"
# R-50 DCN stages at 800x1344 (dcn-performance.md): (C_in = C_out, H, W); 3x3, stride 1, pad 1, modulated.
STAGES = {"conv3": (128, 100, 168), "conv4": (256, 50, 84), "conv5": (512, 25, 42)}


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    rows, hmma = collect(CHECK_ARCHS, tmp_path_factory.mktemp("kernel-resources"))
    print("\n" + format_table(rows, hmma))
    return rows, hmma


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    out = cmake_build(tmp_path_factory.mktemp("deformrt-host"), {"DEFORMRT_BUILD_CUDA": "OFF"}, ["deformrt_host"])
    return declare_host_api(ctypes.CDLL(str(out / HOST_LIBRARY)))


def _stage_desc(c, h, w, batch):
    return ConvDesc(batch, c, h, w, c, 3, 3, h, w, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0)


def test_every_kernel_compiles_for_each_architecture_without_local_memory(resources):
    rows, _ = resources
    assert {r.arch for r in rows} == set(CHECK_ARCHS)
    for arch in CHECK_ARCHS:
        names = {r.kernel for r in rows if r.arch == arch}
        assert sum(n.startswith(TENSOR_CORE_KERNEL) for n in names) == 3, names  # the three tile shapes
    spilling = [r for r in rows if r.stack_bytes or r.spill_store_bytes or r.spill_load_bytes]
    assert not spilling, spilling


def test_shared_memory_fits_each_architecture_at_the_stage_shapes(resources, host):
    rows, _ = resources
    for name, (c, h, w) in STAGES.items():
        for batch in (1, 8):
            desc = _stage_desc(c, h, w, batch)
            chosen = host.deformrt_dcn_tc_tile_shape(ctypes.byref(desc), 132)
            assert chosen in (0, 1, 2), f"{name} batch {batch}: the tensor-core kernel must take the stage"
            print(f"{name} batch {batch}: tile shape {chosen} on 132 SMs, "
                  f"{host.deformrt_dcn_tc_shared_bytes(ctypes.byref(desc), chosen)} B dynamic shared memory")
            for shape in range(3):
                dynamic = host.deformrt_dcn_tc_shared_bytes(ctypes.byref(desc), shape)
                assert dynamic > 48 * 1024 or shape != 0  # the large tile needs the opt-in: it is exercised
                for r in rows:
                    if r.kernel.startswith(TENSOR_CORE_KERNEL):
                        assert r.static_shared_bytes + dynamic <= SHARED_OPTIN_BYTES[r.arch], (name, shape, r)
    # Every other kernel uses static shared memory only, within the 48 KB of a plain launch.
    assert all(r.static_shared_bytes <= 48 * 1024 for r in rows)


def test_tensor_core_kernel_sass_contains_hmma(resources):
    rows, hmma = resources
    if hmma is None:
        pytest.skip("cuobjdump / nvdisasm not found (CUDA toolkit, or the nvidia-cuda-cuobjdump and "
                    "nvidia-cuda-nvdisasm wheels of the test extra)")
    for r in rows:
        count = hmma.get((r.arch, r.kernel), 0)
        if r.kernel.startswith(TENSOR_CORE_KERNEL):
            assert count > 0, f"no HMMA in {r.kernel} for sm_{r.arch}"
        else:
            assert count == 0, f"{r.kernel} for sm_{r.arch} was not expected to use tensor cores"
