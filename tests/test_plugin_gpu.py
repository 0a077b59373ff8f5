"""deformrt's CUDA kernels on a GPU (skipped without one) against the float64 reference, and the
TensorRT plugin inside TensorRT's registry (skipped without TensorRT)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dcn_reference import deform_conv2d_reference, fp16_error_ratio
from exporter.onnx import op_contract as oc
from exporter.trt import plugin_build
from models import native
from models.errors import DeformRTError
from models.ops import cuda_kernels, deform_conv2d, use_backend


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """The kernel library: the built one, else a fresh build for this GPU's architecture."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    mp = pytest.MonkeyPatch()
    try:
        native.find_kernel_library()
    except DeformRTError:
        if shutil.which("cmake") is None or shutil.which("nvcc") is None:
            pytest.skip("kernel library not built and cmake/nvcc missing to build it")
        out = plugin_build.cmake_build(tmp_path_factory.mktemp("deformrt-gpu"),
                                     {"CMAKE_CUDA_ARCHITECTURES": "native"}, ["deformrt_kernels"])
        mp.setenv(native.KERNEL_ENV, str(out / native.KERNEL_LIBRARY))
    cuda_kernels._library.cache_clear()
    assert cuda_kernels.is_available()
    yield
    mp.undo()
    cuda_kernels._library.cache_clear()


# (batch, C_in, C_out, H, W, kernel, stride, pad, dilation, groups, offset groups, modulated, bias)
STAGES = {  # maskrcnn-benchmark DCN stages at 800x1344 (dcn-performance.md)
    "conv3": (1, 128, 128, 100, 168, 3, 1, 1, 1, 1, 1, True, False),
    "conv4": (1, 256, 256, 50, 84, 3, 1, 1, 1, 1, 1, True, False),
    "conv5": (1, 512, 512, 25, 42, 3, 1, 1, 1, 1, 1, True, False),
}
ODD = {
    "batch3-stride2": (3, 64, 96, 33, 47, 3, 2, 1, 1, 1, 1, True, True),
    "dilated-dg4-v1": (2, 64, 64, 29, 31, 3, 1, 2, 2, 1, 4, False, True),
    "groups-1x1-nonsquare": (2, 48, 72, 17, 9, (1, 3), (2, 1), (0, 1), 1, 3, 2, True, False),
    "tiny": (1, 3, 5, 1, 1, 3, 1, 1, 1, 1, 1, True, True),
}


def _case(spec, seed=0):
    n, c, co, h, w, k, s, p, d, g, dg, modulated, has_bias = spec
    k, s, p, d = ((v, v) if isinstance(v, int) else v for v in (k, s, p, d))
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(co, c // g, *k, generator=gen, dtype=torch.float64) / (c // g * k[0] * k[1]) ** 0.5
    offset = torch.randn(n, 2 * dg * k[0] * k[1], ho, wo, generator=gen, dtype=torch.float64) * 2
    mask = torch.rand(n, dg * k[0] * k[1], ho, wo, generator=gen, dtype=torch.float64) if modulated else None
    bias = torch.randn(co, generator=gen, dtype=torch.float64) if has_bias else None
    args = dict(stride=s, padding=p, dilation=d)
    return (x, offset, weight, bias, mask), args


def _rel(y, ref):
    return ((y.double().cpu() - ref).abs().max() / ref.abs().max()).item()


def _run(tensors, args, dtype, device="cuda"):
    x, offset, weight, bias, mask = (None if t is None else t.to(device=device, dtype=dtype) for t in tensors)
    with use_backend("deformrt"):
        y = deform_conv2d(x, offset, weight, bias, mask=mask, **args)
    torch.cuda.synchronize()
    return y


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(STAGES) + list(ODD))
def test_fp32_kernel_matches_float64_reference(kernels, name):
    tensors, args = _case({**STAGES, **ODD}[name])
    y = _run(tensors, args, torch.float32)
    fp32_inputs = [None if t is None else t.float() for t in tensors]
    ref = deform_conv2d_reference(*fp32_inputs[:4], args["stride"], args["padding"], args["dilation"], fp32_inputs[4])
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert _rel(y, ref) <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(STAGES) + [n for n in ODD if n != "tiny"])  # "tiny": 5 outputs, no statistics
def test_fp16_kernel_rms_error_within_dense_fp16_conv_bound(kernels, name):
    # fp16 runs on the tensor-core kernel on sm_80+ (the tiled kernel before): RMS error at most 1.6x that of
    # cuDNN's dense fp16 conv of the same fp16 data (dcn_reference.fp16_error_ratio).
    tensors, args = _case({**STAGES, **ODD}[name], seed=1)
    half = [None if t is None else t.half() for t in tensors]
    y = _run(half, args, torch.float16)
    ref = deform_conv2d_reference(*half[:4], args["stride"], args["padding"], args["dilation"], half[4])
    x, w, b = half[0], half[2], half[3]
    groups = x.shape[1] // w.shape[1]
    dense16 = F.conv2d(x.cuda(), w.cuda(), None if b is None else b.cuda(), args["stride"], args["padding"],
                       args["dilation"], groups)
    assert y.dtype == torch.float16 and not torch.isnan(y).any()
    assert fp16_error_ratio(y, ref, x, w, b, args["stride"], args["padding"], args["dilation"], groups,
                            dense16=dense16.cpu()) <= 1.6


def _nhwc_forward(lib, x, offset, weight, bias, mask, args, weight_layout="OHWI"):
    """The channels-last entry the plugin uses for kHWC8, NHWC in and out: an OHWI weight (what the exporter
    writes) read in place, or an OIHW one transposed into the workspace."""
    w = weight.permute(0, 2, 3, 1).contiguous() if weight_layout == "OHWI" else weight
    desc = cuda_kernels.make_desc(x, offset, w, bias, mask, args["stride"], args["padding"], args["dilation"],
                                  weight_layout)
    nbytes = lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc))
    workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = torch.full((desc.batch, desc.outChannels, desc.outHeight, desc.outWidth), float("nan"), dtype=x.dtype,
                   device="cuda").contiguous(memory_format=torch.channels_last)
    ptr = [None if t is None else t.data_ptr() for t in (bias, mask)]
    assert lib.deformrt_dcn_forward_nhwc(ctypes.byref(desc), x_cl.data_ptr(), w.data_ptr(), offset.data_ptr(),
                                         ptr[0], ptr[1], y.data_ptr(), workspace.data_ptr(), nbytes, stream) == 0
    torch.cuda.synchronize()
    return y


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["conv4", "batch3-stride2", "dilated-dg4-v1", "groups-1x1-nonsquare"])
def test_nhwc_entry_matches_the_nchw_entry_bit_for_bit(kernels, name):
    lib = cuda_kernels._library()
    tensors, args = _case({**STAGES, **ODD}[name], seed=3)
    x, offset, weight, bias, mask = (None if t is None else t.half().cuda().contiguous() for t in tensors)
    desc = cuda_kernels.make_desc(x, offset, weight, bias, mask, args["stride"], args["padding"], args["dilation"])
    if torch.cuda.get_device_capability() < (8, 0):
        assert lib.deformrt_dcn_nhwc_supported(ctypes.byref(desc)) == 0
        pytest.skip("the tensor-core kernel needs sm_80 or newer")
    assert lib.deformrt_dcn_nhwc_supported(ctypes.byref(desc)) == 1
    y_nhwc = _nhwc_forward(lib, x, offset, weight, bias, mask, args)
    y_nchw = _run((x, offset, weight, bias, mask), args, torch.float16)
    # Same kernel, same tile shape, same K order: only the staging and the epilogue's layout differ.
    assert torch.equal(y_nhwc.contiguous().view(torch.int16), y_nchw.view(torch.int16))
    # An OIHW weight (a file from before weight_layout) is transposed in the workspace: the same bits.
    y_oihw = _nhwc_forward(lib, x, offset, weight, bias, mask, args, weight_layout="OIHW")
    assert torch.equal(y_oihw.contiguous().view(torch.int16), y_nchw.view(torch.int16))


@pytest.mark.gpu
def test_kernel_runs_on_the_current_stream_and_accepts_non_contiguous_inputs(kernels):
    tensors, args = _case(ODD["batch3-stride2"], seed=2)
    x, offset, weight, bias, mask = (None if t is None else t.float().cuda() for t in tensors)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), use_backend("deformrt"):
        y = deform_conv2d(x_nc, offset, weight, bias, mask=mask, **args)
    stream.synchronize()
    ref = deform_conv2d_reference(x.cpu(), offset.cpu(), weight.cpu(), bias.cpu(), args["stride"], args["padding"],
                                  args["dilation"], mask.cpu())
    assert _rel(y, ref) <= 1e-5


_REGISTRATION_CHECK = """
import ctypes, sys
import tensorrt as trt  # loads libnvinfer privately (RTLD_LOCAL)
name, version, namespace, first, second, fields = sys.argv[1:7]
registry = trt.get_plugin_registry()
if first.endswith("_autoload.so"):
    ctypes.CDLL(first)  # what polygraphy --plugins and trtexec --staticPlugins do
else:
    assert registry.load_library(first) is not None, "load_library of " + first
creator = registry.get_creator(name, version, namespace)
assert creator is not None, "no creator after loading " + first
assert [f.name for f in creator.field_names] == fields.split(","), [f.name for f in creator.field_names]
# The creator exists: TensorRT refuses to load the other file's creator again (documented), and keeps the first.
assert registry.load_library(second) is None, "a second registration must be refused"
assert registry.get_creator(name, version, namespace) is not None
print("ok")
"""


@pytest.mark.trt
@pytest.mark.parametrize("first", ["autoload", "load_library"])
def test_plugin_registers_with_tensorrt_each_way(first):
    """In a fresh process (registrations are per process): the autoload file registers itself when loaded by
    ctypes, the other file through load_library; either way a second registration is refused."""
    pytest.importorskip("tensorrt", reason="needs the TensorRT Python package and libraries")
    try:
        library = native.find_plugin_library()
    except DeformRTError as exc:
        pytest.skip(str(exc))
    autoload = library.with_name(native.AUTOLOAD_PLUGIN_LIBRARY)
    if not autoload.is_file():
        pytest.skip(f"{autoload} is not built")
    files = [str(autoload), str(library)] if first == "autoload" else [str(library), str(library)]
    proc = subprocess.run([sys.executable, "-c", _REGISTRATION_CHECK, oc.PLUGIN_NAME, oc.PLUGIN_VERSION,
                           oc.PLUGIN_NAMESPACE, *files, ",".join(oc.ATTRIBUTE_NAMES)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def host_emulation(tmp_path_factory):
    """The CPU build of the same kernels (mma.sync emulated): the device's bit-level twin."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    out = plugin_build.cmake_build(tmp_path_factory.mktemp("deformrt-host"), {"DEFORMRT_BUILD_CUDA": "OFF"},
                                 ["deformrt_host"])
    return cuda_kernels.declare_host_api(ctypes.CDLL(str(out / native.HOST_LIBRARY)))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", ["0", "1", "2", "3", "4"])
@pytest.mark.parametrize("name", ["batch3-stride2", "dilated-dg4-v1", "groups-1x1-nonsquare"])
def test_tensor_core_kernel_matches_its_cpu_emulation(kernels, host_emulation, monkeypatch, name, shape):
    # Same operand rounding and tile phases: the GPU and the CPU emulation (its default plan, the assumed
    # H100's wgmma kernel) differ only in how the fp32 sums are grouped (inside the tensor cores, and the
    # wgmma kernel's register-A K order against mma.sync's) and FMA contraction of the blend, so every output
    # is within 2 fp16 ulps of the emulated one (plus a floor near zero). Covers the device-only code:
    # 16-byte gathers (C % 8 == 0 here), the inline mma.sync / wgmma operands and descriptors, and each tile
    # shape (forced; 3 and 4 are the sm_90a wgmma kernel's, compute capability 9.0 only).
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("the tensor-core kernel needs sm_80 or newer")
    if shape in ("3", "4") and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the wgmma kernel runs on compute capability 9.0 only")
    monkeypatch.setenv("DEFORMRT_TC_TILE_SHAPE", shape)
    tensors, args = _case({**STAGES, **ODD}[name], seed=4)
    half = [None if t is None else t.half().contiguous() for t in tensors]
    y_gpu = _run(half, args, torch.float16).cpu()
    x, offset, weight, bias, mask = half
    desc = cuda_kernels.make_desc(x, offset, weight, bias, mask, args["stride"], args["padding"], args["dilation"])
    y_cpu = torch.full_like(y_gpu, float("nan"))
    ptr = [None if t is None else t.data_ptr() for t in (x, weight, offset, bias, mask, y_cpu)]
    assert host_emulation.deformrt_dcn_forward_host(ctypes.byref(desc), 1, *ptr, None, 0) == 0
    # 2 ulps at each output's magnitude, plus an absolute floor for outputs near zero (cancellation: the
    # fp32 sums' order differences are absolute, about 1e-6 here); a wrong index is off by O(rms).
    ulp = torch.exp2(torch.floor(torch.log2(y_cpu.float().abs().clamp_min(2.0**-14))) - 10)
    floor = 2.0**-10 * y_cpu.float().pow(2).mean().sqrt()
    assert ((y_gpu.float() - y_cpu.float()).abs() <= 2 * ulp + floor).all()


@pytest.mark.gpu
def test_tensor_core_kernel_in_a_new_context_after_cuda_device_reset_and_a_driver_api_context(kernels, tmp_path):
    """The large tile's shared-memory opt-in belongs to a CUDA context: a new primary context (after
    cudaDeviceReset) and a driver-API context must each get it (tests/native/tensorCoreContexts.cpp). A
    separate process: cudaDeviceReset would invalidate this process's PyTorch tensors."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is needed to build the context check")
    library = native.find_kernel_library()
    exe = tmp_path / "tensorCoreContexts"
    root = native.PLUGINS_DIR.parent
    subprocess.run(["nvcc", "-std=c++17", "-I", str(native.PLUGINS_DIR / "include"),
                    str(root / "tests" / "native" / "tensorCoreContexts.cpp"), "-o", str(exe), str(library),
                    f"-Wl,-rpath,{library.parent}", "-lcuda"], check=True)
    # shape 0: mma.sync's large tile; on compute capability 9.0 also shape 3, the wgmma kernel's (68 KB)
    shapes = ["0", "3"] if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0) else ["0"]
    for shape in shapes:
        proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "DEFORMRT_TC_TILE_SHAPE": shape})
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        assert proc.returncode == 0 and last in ("ok", "SKIP: the tensor-core kernel does not run here (sm_80 or "
                                                       "newer needed)"), proc.stdout + proc.stderr
