"""deformrt's CUDA kernels on a GPU (skipped without one) against the float64 reference, and the
TensorRT plugin inside TensorRT's registry (skipped without TensorRT)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dcn_reference import deform_conv2d_reference
from exporter.onnx import op_contract as oc
from models import native
from exporter.trt import plugin_build
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
@pytest.mark.parametrize("name", list(STAGES) + ["batch3-stride2"])
def test_fp16_kernel_error_no_worse_than_dense_fp16_conv(kernels, name):
    tensors, args = _case({**STAGES, **ODD}[name], seed=1)
    half = [None if t is None else t.half() for t in tensors]
    y = _run(half, args, torch.float16)
    ref = deform_conv2d_reference(*half[:4], args["stride"], args["padding"], args["dilation"], half[4])
    # The dense fp16 convolution of the same shape, against its own float64 result.
    x, w = half[0], half[2]
    dense = F.conv2d(x.cuda(), w.cuda(), None, args["stride"], args["padding"], args["dilation"])
    dense_ref = F.conv2d(x.double(), w.double(), None, args["stride"], args["padding"], args["dilation"])
    assert y.dtype == torch.float16
    assert _rel(y, ref) <= 1.25 * _rel(dense, dense_ref)


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
