"""Run deformrt's CUDA kernels' real device code (PTX) on the CPU under memcheck, racecheck and initcheck,
and compare every output with models.deform_conv2d. No GPU needed: nvcc compiles the sources, the PTX
executor (scripts/ptxexec) runs the device code, and the plugin's own C entry points, linked against a
stand-in CUDA runtime, decide every launch (grid, tile shape, shared memory, parameters).

    python scripts/ptx_check.py [--src DIR] [--arch sm_80] [--ptx-arch sm_90a] [--json] [--cases REGEX]

Every `__global__` kernel in DIR/deformConvKernel.cu and DIR/deformConvTensorCore.cu (default
plugins/src) must be launched by at least one case (CASES below); a PTX entry point no case reaches is an
error that names it. Cases cover both kernels, every tile shape (with 16-byte and with scalar gathers),
fewer pixels per CTA than a shape's, K splits with the reduction kernel's vector and scalar paths (with
and without a bias, a misaligned y among them), fp32 and fp16, the NCHW and NHWC entry points (with the
NCHW entry's two transposes), groups, offset groups, stride, dilation, padding, offsets that leave the
image, batch > 1, and channel counts on and off the tiles. Large shapes run a sample of the convolution
kernel's CTAs (the grid's corner CTAs plus random ones). Each launch's first CTAs run twice, warps in
lockstep and one warp at a time in reverse order; results that differ are races.

A case passes when the compared outputs are finite and within bounds of the float64 result of
models.deform_conv2d on the same (fp16-rounded) inputs, and, for the tensor-core kernel, equal bit for
bit to the kernels' CPU build (plugins/src/deformConvHost.cpp, compiled here) run with the same plan.
``error`` is, for fp32, the largest absolute error over the largest |reference| (bound 1e-5); for fp16,
the relative RMS error divided by a dense fp16 convolution's on the same data (bound
dcn_reference.FP16_RMS_RATIO, the host tests' rule).

The host code (launch planning) is built for --arch; the device code that runs is that build's PTX, or,
for a case with ``ptx_arch`` (or every case with --ptx-arch), the same sources' PTX for that target, built
on first use: sm_90a (compute_90a, __CUDA_ARCH_FEAT_SM90_ALL defined) is the target of sm_90-only code
such as wgmma, run with a case's device "sm_90" (132 SMs, 227 KB of shared memory per block).

Exit status 1 when any summary count other than ``cases`` is non-zero, or a kernel has no case (checked
before anything runs). An instruction the executor does not implement fails its case with a message
naming the instruction and its PTX line.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

from exporter.util.usage import ScriptParser, first_paragraph, print_error, regex  # noqa: E402
from models.native import WGMMA_ENV  # noqa: E402
from ptxexec import CATEGORIES, ExecutionError, GlobalMemory, Launcher, PtxError  # noqa: E402
from ptxexec.capture import (BuildError, CapturedLibrary, RecordedMemoryOp, build, build_host, build_ptx,  # noqa: E402
                              find_nvcc)

SOURCES = ("deformConvKernel.cu", "deformConvTensorCore.cu", "deformConvWgmma.cu")
# The host code is built as CMake builds it when the architectures include 90: the launcher may pick the
# wgmma kernel on compute capability 9.0. It does so only where the device code that runs is sm_90a's
# (Checker.call turns it off otherwise: the sm_80 PTX of that kernel is an empty body).
BUILD_DEFINES = ("-DDEFORMRT_WGMMA_SM90A=1",)
WGMMA_PTX = ("sm_90a",)
FP32_BOUND = 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of the plugin's C API. ``problem``: batch, C in, C out, H, W, kernel h, w, stride, pad,
    dilation, groups, offset groups, modulated, bias."""
    name: str
    entry: str                 # "nchw" (deformrt_dcn_forward, OIHW weight) | "nhwc" (forward_nhwc, OHWI weight)
    dtype: str                 # "fp32" | "fp16"
    problem: tuple
    tile: Optional[int] = None          # DEFORMRT_TC_TILE_SHAPE (None: the launcher's own choice)
    extent: Optional[int] = None        # DEFORMRT_TC_M_EXTENT: pixels per CTA (None: the launcher's choice)
    split: Optional[int] = None         # DEFORMRT_TC_SPLIT_K: K splits (None: the launcher's choice)
    device: Optional[str] = None        # device attributes the stand-in runtime reports (default --arch)
    sample: Optional[int] = None        # random CTAs of the main launch besides its corner CTAs (None: all)
    schedule_ctas: int = 8              # CTAs per launch also run one warp at a time, reversed (0: none;
    #                                     the racecheck itself does not depend on the schedule)
    offset_scale: float = 2.0           # offsets ~ N(0, scale): >= 2 puts many samples outside small images
    seed: int = 0
    ptx_arch: Optional[str] = None      # the PTX target whose device code runs (None: --ptx-arch, or --arch's
    #                                     build); e.g. "sm_90a" with device "sm_90" for sm_90a-only code (wgmma)
    y_offset: int = 0                   # bytes y starts past its allocation's base (2: a y misaligned for vectors)


# Every path the plugin can launch. The tiled fp16 kernel runs where the tensor-core kernel does not:
# on GPUs before sm_80 (the stand-in runtime reports 7.5 for that case; the device code is the same PTX).
# Tensor-core shapes: 0 (128 x 256, more than 128 output channels), 1 (256 x 128), 2 (64 x 64); 16-byte
# vectors where the channels are multiples of 8 (chunks of 24 and 16 pad the 32-deep step), scalar loads
# where not (c 6, 12); fewer pixels per CTA than the shape's (whole warps idle); K split with the reduction.
CASES = [
    Case("fp32-groups2-offsetgroups3-batch2", "nchw", "fp32", (2, 12, 20, 9, 11, 3, 3, 1, 1, 1, 2, 3, True, True)),
    Case("fp32-stride2-dil2-pad2-cout70", "nchw", "fp32", (1, 8, 70, 12, 10, 3, 3, 2, 2, 2, 1, 1, False, False),
         offset_scale=6.0),
    Case("fp16-tiled-pre-sm80-offsetgroups2", "nchw", "fp16", (2, 16, 24, 10, 9, 3, 3, 1, 1, 1, 1, 2, True, True),
         device="sm_75"),
    Case("fp16-nchw-tile-n256-batch2-cout140", "nchw", "fp16", (2, 32, 140, 11, 13, 3, 3, 1, 1, 1, 1, 1, True, True),
         tile=0),
    Case("fp16-nchw-tile-n128-groups2-dg4-dil2", "nchw", "fp16", (1, 64, 72, 9, 15, 3, 3, 1, 2, 2, 2, 4, True, False),
         tile=1),
    Case("fp16-nchw-tile-n64-stride2-c12-cout130", "nchw", "fp16",
         (3, 12, 130, 7, 9, 3, 3, 2, 1, 1, 1, 2, False, True), tile=2, offset_scale=5.0),
    Case("fp16-nhwc-tile-n256-c24", "nhwc", "fp16", (1, 24, 40, 12, 10, 3, 3, 1, 1, 1, 1, 1, True, True), tile=0),
    Case("fp16-nhwc-tile-n128-3x1-kernel", "nhwc", "fp16", (2, 16, 24, 9, 7, 3, 1, 1, 1, 1, 1, 2, True, False),
         tile=1),
    Case("fp16-nhwc-tile-n128-96-pixels-per-cta", "nhwc", "fp16", (1, 32, 100, 10, 14, 3, 3, 1, 1, 1, 1, 1, True, True),
         tile=1, extent=96),
    Case("fp16-nhwc-1x1-groups3", "nhwc", "fp16", (1, 6, 9, 5, 4, 1, 1, 1, 0, 1, 3, 1, True, True), tile=2),
    Case("fp16-nhwc-tile-n256-split-k3", "nhwc", "fp16", (1, 256, 96, 6, 9, 3, 3, 1, 1, 1, 1, 1, True, True),
         tile=0, extent=32, split=3),
    # The split-K reduction's paths: vector loads with NHWC stores (two channel blocks, a thread's second
    # run present and absent, rows not a multiple of a block's; no bias, which that path adds not at all) and
    # with NCHW stores (batch 2, groups, a bias), the scalar path where C_out is no multiple of 4 (NCHW) or y
    # is misaligned (NHWC).
    Case("fp16-nhwc-split-k2-cout264-21-pixels-no-bias", "nhwc", "fp16",
         (1, 256, 264, 3, 7, 3, 3, 1, 1, 1, 1, 1, True, False), tile=0, split=2),
    Case("fp16-nchw-split-k4-cout136-groups2-batch2", "nchw", "fp16",
         (2, 512, 136, 3, 4, 3, 3, 1, 1, 1, 2, 1, False, True), tile=2, split=4),
    Case("fp16-nchw-split-k3-cout70-batch2", "nchw", "fp16", (2, 256, 70, 3, 5, 3, 3, 1, 1, 1, 1, 1, True, False),
         tile=2, split=3),
    Case("fp16-nhwc-split-k2-cout136-misaligned-y", "nhwc", "fp16",
         (1, 256, 136, 4, 5, 3, 3, 1, 1, 1, 1, 1, True, True), tile=0, split=2, y_offset=2),
    Case("fp16-nchw-c256-sampled", "nchw", "fp16", (1, 256, 256, 20, 36, 3, 3, 1, 1, 1, 1, 1, True, True),
         sample=2, schedule_ctas=0, split=1),
    Case("fp32-c64-sampled", "nchw", "fp32", (1, 64, 96, 30, 44, 3, 3, 1, 1, 1, 1, 1, True, True), sample=2,
         schedule_ctas=0),
    # The Hopper path (deformConvWgmma.cu): its sm_90a PTX on a 9.0 device. Shapes 3 (128 x 256) and 4
    # (128 x 128), groups and offset groups, dilation, batch 2, a K split, fewer pixels per CTA, and the
    # launcher's own choice.
    Case("fp16-nhwc-wgmma-n256-cout140", "nhwc", "fp16", (1, 32, 140, 11, 13, 3, 3, 1, 1, 1, 1, 1, True, True),
         tile=3, device="sm_90", ptx_arch="sm_90a"),
    Case("fp16-nchw-wgmma-n128-groups2-dg4-dil2-batch2", "nchw", "fp16",
         (2, 64, 72, 9, 15, 3, 3, 1, 2, 2, 2, 4, True, False), tile=4, device="sm_90", ptx_arch="sm_90a"),
    Case("fp16-nhwc-wgmma-n128-split-k3-extent64", "nhwc", "fp16", (1, 256, 96, 6, 9, 3, 3, 1, 1, 1, 1, 1, True, True),
         tile=4, extent=64, split=3, device="sm_90", ptx_arch="sm_90a"),
    Case("fp16-nhwc-wgmma-default-c24", "nhwc", "fp16", (1, 24, 40, 12, 10, 3, 3, 1, 1, 1, 1, 1, True, True),
         device="sm_90", ptx_arch="sm_90a"),
]

# The environment variables through which a case forces parts of the tensor-core launch.
PLAN_ENV = {"tile": "DEFORMRT_TC_TILE_SHAPE", "extent": "DEFORMRT_TC_M_EXTENT", "split": "DEFORMRT_TC_SPLIT_K"}


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def demangle(names: list[str]) -> dict[str, str]:
    """Readable kernel names (c++filt, namespaces dropped), or the mangled name."""
    out = {n: n for n in names}
    if shutil.which("c++filt") and names:
        done = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
        for n, d in zip(names, done.stdout.splitlines()):
            d = d.replace("(anonymous namespace)::", "")
            d = re.sub(r"\([^()]*\)$", "", d).removeprefix("void ")
            out[n] = re.sub(r"\b\w+::", "", d)
    return out


# -------------------------------------------------------------------------------------------------
# One case

def _problem_tensors(case: Case):
    import torch

    n, c, co, h, w, kh, kw, stride, pad, dil, groups, dg, modulated, has_bias = case.problem
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    gen = torch.Generator().manual_seed(1000 + case.seed + sum(map(ord, case.name)))
    dtype = torch.float16 if case.dtype == "fp16" else torch.float32
    x = torch.randn(n, c, h, w, generator=gen).to(dtype)
    weight = (torch.randn(co, c // groups, kh, kw, generator=gen) / (c // groups * kh * kw) ** 0.5).to(dtype)
    offset = (torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=gen) * case.offset_scale)
    offset.view(-1)[::97] = 3e4  # far outside the image: samples zero
    offset = offset.to(dtype)
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=gen).to(dtype) if modulated else None
    bias = torch.randn(co, generator=gen).to(dtype) if has_bias else None
    return x, weight, offset, bias, mask, (stride, stride), (pad, pad), (dil, dil), groups


def _raw(t) -> np.ndarray:
    import torch

    return t.contiguous().view(torch.int16 if t.dtype == torch.float16 else torch.int32).numpy()


@dataclasses.dataclass
class CaseOutcome:
    entry: dict
    counters: dict
    kernels: list
    thread_instructions: int
    seconds: float


class Checker:
    def __init__(self, lib: CapturedLibrary, arch: str, host: Optional[Path] = None,
                 ptx_builder: Optional[Callable[[str], dict]] = None, ptx_arch: Optional[str] = None):
        """``host``: the kernels' CPU build (capture.build_host), to compare the tensor-core kernel's bits with.
        ``ptx_builder``: arch -> source -> PTX (capture.build_ptx of the same sources), called once for each
        other PTX target a case asks for; ``ptx_arch``: the target of the cases that name none (None: the
        library's own build)."""
        self.lib = lib
        self.arch = arch
        self.ptx_builder = ptx_builder
        self.default_ptx = ptx_arch or lib.build.arch
        self.programs_by_ptx: dict = {}
        from models.ops.cuda_kernels import declare_c_api, declare_host_api
        declare_c_api(lib.lib)
        self.host = declare_host_api(ctypes.CDLL(str(host))) if host is not None else None

    def select_ptx(self, arch: Optional[str] = None):
        """Point the library's launches at the device code built for ``arch`` (None: the default one),
        building it on first use."""
        arch = arch or self.default_ptx
        if not self.lib.has_ptx(arch):
            if self.ptx_builder is None:
                raise BuildError(f"no device code for {arch}, and no builder for it was given")
            self.lib.add_ptx(arch, self.ptx_builder(arch))
        self.lib.use_ptx(arch)

    def launcher(self, kernel: str, mem: GlobalMemory) -> Launcher:
        """A launcher of ``kernel`` from the selected PTX (each kernel compiled once for every case)."""
        programs = self.programs_by_ptx.setdefault(self.lib.ptx_arch, {})
        return Launcher(self.lib.kernel_module[kernel], mem, programs)

    def call(self, case: Case):
        """Allocate the case's tensors and call the plugin's C API: (memory, addresses, tensors, recorded
        launches and memory operations, problems)."""
        from models.ops.cuda_kernels import make_desc

        x, weight, offset, bias, mask, stride, padding, dilation, groups = _problem_tensors(case)
        nhwc = case.entry == "nhwc"
        # The NHWC entry gets the weight as the exporter writes it (OHWI, read in place); the NCHW entry gets
        # PyTorch's OIHW (transposed into the workspace by oihwToOhwiKernel on the tensor-core path).
        layout = "OHWI" if nhwc else "OIHW"
        weight_in = weight.permute(0, 2, 3, 1) if nhwc else weight
        desc = make_desc(x, offset, weight_in, bias, mask, stride, padding, dilation, layout)
        n, co, ho, wo = x.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]
        fp16 = case.dtype == "fp16"
        esize = 2 if fp16 else 4
        self.select_ptx(case.ptx_arch)
        self.lib.set_device(case.device or self.arch)
        if self.lib.ptx_arch in WGMMA_PTX:
            os.environ.pop(WGMMA_ENV, None)
        else:
            os.environ[WGMMA_ENV] = "0"
        for field, name in PLAN_ENV.items():
            value = getattr(case, field)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        mem = GlobalMemory()
        x_in = x.permute(0, 2, 3, 1) if nhwc else x
        addr = {"x": mem.alloc("x", x.numel() * esize, _raw(x_in)),
                "weight": mem.alloc("weight", weight.numel() * esize, _raw(weight_in)),
                "offset": mem.alloc("offset", offset.numel() * esize, _raw(offset))}
        addr["bias"] = mem.alloc("bias", bias.numel() * esize, _raw(bias)) if bias is not None else None
        addr["mask"] = mem.alloc("mask", mask.numel() * esize, _raw(mask)) if mask is not None else None
        y_bytes = n * co * ho * wo * esize
        span = case.y_offset + y_bytes
        addr["y_base"] = mem.alloc("y", span, np.full(span, 0xFF, np.uint8))  # NaN until written
        addr["y"] = addr["y_base"] + case.y_offset
        problems: list[str] = []
        recorded: list = []
        c_api = self.lib.lib
        d = ctypes.byref(desc)
        try:
            if not nhwc:
                ws = c_api.deformrt_dcn_workspace_size(d, 1 if fp16 else 0)
                addr["workspace"] = mem.alloc("workspace", ws, np.full(ws, 0xFF, np.uint8)) if ws else None
                with self.lib.calls() as rec:
                    status = c_api.deformrt_dcn_forward(d, 1 if fp16 else 0, addr["x"], addr["weight"], addr["offset"],
                                                        addr["bias"], addr["mask"], addr["y"], addr["workspace"], ws,
                                                        None)
                recorded += rec
                if status != 0:
                    problems.append(f"deformrt_dcn_forward returned cudaError {status}")
            else:
                if not c_api.deformrt_dcn_nhwc_supported(d):
                    problems.append("deformrt_dcn_nhwc_supported says no")
                ws = c_api.deformrt_dcn_nhwc_workspace_size(d)
                addr["workspace"] = mem.alloc("workspace", ws, np.full(ws, 0xFF, np.uint8)) if ws else None
                with self.lib.calls() as rec:
                    status = c_api.deformrt_dcn_forward_nhwc(d, addr["x"], addr["weight"], addr["offset"],
                                                             addr["bias"], addr["mask"], addr["y"], addr["workspace"],
                                                             ws, None)
                recorded += rec
                if status != 0:
                    problems.append(f"deformrt_dcn_forward_nhwc returned cudaError {status}")
        finally:
            for name in (*PLAN_ENV.values(), WGMMA_ENV):
                os.environ.pop(name, None)
        tensors = (x, weight, offset, bias, mask, stride, padding, dilation, groups)
        return mem, addr, tensors, recorded, problems

    def launched_kernels(self, case: Case) -> list:
        """The kernels a case launches (its C calls only; nothing is executed)."""
        return [r.kernel for r in self.call(case)[3] if not isinstance(r, RecordedMemoryOp)]

    def run_case(self, case: Case) -> CaseOutcome:
        import torch

        mem, addr, tensors, recorded, problems = self.call(case)
        x, weight, offset, bias, mask, stride, padding, dilation, groups = tensors
        n, co, ho, wo = x.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]
        fp16 = case.dtype == "fp16"
        nhwc = case.entry == "nhwc"
        findings, counters, kernels = [], {}, []
        thread_instr, seconds = 0, 0.0
        launches = [r for r in recorded if not isinstance(r, RecordedMemoryOp)]
        main = main_launch(launches)
        for rec in recorded:
            if isinstance(rec, RecordedMemoryOp):
                problems.append(f"the host code issued cudaMemsetAsync/cudaMemcpyAsync ({rec.op}); "
                                "ptx_check does not run those yet")
                continue
            if rec.error:
                problems.append(f"launch of {rec.kernel} refused: {rec.error}")
                continue
            sampled = rec is main and case.sample is not None
            ctas = _sample_ctas(rec.grid, case.sample, case.seed) if sampled else None
            try:
                result, order_findings = self._run_launch(rec, mem, ctas, case)
            except (PtxError, ExecutionError) as exc:
                problems.append(f"the executor could not run {rec.kernel}: {exc}")
                continue
            kernels.append(rec.kernel)
            findings += [f.to_json() for f in result.findings] + order_findings
            counters[f"{rec.kernel}/{case.name}"] = result.counters()
            thread_instr += result.thread_instructions
            seconds += result.seconds
        if main is None:
            problems.append("the call launched no kernel")

        # compare with models.deform_conv2d in float64
        import models
        from dcn_reference import FP16_RMS_RATIO, dense_fp16_rms_error, relative_rms_error

        bits = mem.view(addr["y_base"])[case.y_offset:].view(np.uint16 if fp16 else np.uint32).copy()
        shape = (n, ho, wo, co) if nhwc else (n, co, ho, wo)
        written = torch.from_numpy(bits != (0xFFFF if fp16 else 0xFFFFFFFF)).reshape(shape)
        values = torch.from_numpy(bits.view(np.float16) if fp16 else bits.view(np.float32)).reshape(shape)
        if nhwc:
            written, values = written.permute(0, 3, 1, 2), values.permute(0, 3, 1, 2)
        sel = written if case.sample is not None else torch.ones_like(written)
        y = values.double()[sel]
        ref = models.deform_conv2d(x.double(), offset.double(), weight.double(),
                                   None if bias is None else bias.double(), stride, padding, dilation,
                                   None if mask is None else mask.double())[sel]
        error = float("inf")
        if y.numel() == 0:
            problems.append("no output element was written")
        elif not torch.isfinite(y).all():
            problems.append(f"{int((~torch.isfinite(y)).sum())} of {y.numel()} outputs not finite (or never written)")
        elif fp16:
            dense = dense_fp16_rms_error(x, weight, bias, stride, padding, dilation, groups)
            error = relative_rms_error(y, ref) / dense
            if error > FP16_RMS_RATIO:
                problems.append(f"fp16 RMS error {error:.3f}x a dense fp16 conv's (bound {FP16_RMS_RATIO})")
        else:
            error = float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            if error > FP32_BOUND:
                problems.append(f"fp32 relative error {error:.3g} (bound {FP32_BOUND})")
        # (only where the device code ran clean: the CPU build shares its tile code, and would make the same
        # out-of-bounds writes into this process's memory)
        tensor_core = main is not None and re.search(r"deformConvTensorCoreI|deformConvWgmmaI", main.kernel)
        if self.host is not None and tensor_core and not findings:
            differ = self._host_bits_differ(main, tensors, bits.reshape(shape), nhwc, written)
            if differ:
                problems.append(f"the CPU build's outputs differ from the device code's in {differ} of "
                                f"{int(written.sum())} outputs (their tile code must agree bit for bit)")
        entry = {"name": case.name, "kernel": main.kernel if main else "", "ok": not problems,
                 "error": round(error, 9) if np.isfinite(error) else None, "findings": findings}
        if problems:
            entry["findings"] = findings + [{"category": "mismatch", "detail": p} for p in problems]
        return CaseOutcome(entry, counters, kernels, thread_instr, seconds)

    def _host_bits_differ(self, main, tensors, device_bits, nhwc: bool, written) -> int:
        """How many written outputs of the tensor-core launch ``main`` the CPU build, run with the same plan
        (the launch's TcPlan parameter), gives other bits for."""
        import torch

        from models.ops.cuda_kernels import TcPlan, make_desc
        x, weight, offset, bias, mask, stride, padding, dilation, _ = tensors
        plan = TcPlan()
        (plan.shape, plan.mExtent, plan.splitK, plan.stepsPerSplit, plan.nTiles,
         plan.mTiles) = struct.unpack_from("<5i4xq", main.params[2])
        ohwi = weight.permute(0, 2, 3, 1).contiguous()
        desc = make_desc(x, offset, ohwi, bias, mask, stride, padding, dilation, "OHWI")
        x_nhwc = x.permute(0, 2, 3, 1).contiguous()
        y = torch.full((desc.batch, desc.outHeight, desc.outWidth, desc.outChannels), float("nan"),
                       dtype=torch.float16)
        args = [None if t is None else t.contiguous() for t in (bias, mask)]
        rc = self.host.deformrt_dcn_forward_nhwc_host_plan(
            ctypes.byref(desc), x_nhwc.data_ptr(), ohwi.data_ptr(), offset.contiguous().data_ptr(),
            *[None if t is None else t.data_ptr() for t in args], y.data_ptr(), None, 0, ctypes.byref(plan))
        if rc != 0:
            return int(written.sum())
        host_bits = y.view(torch.int16).permute(0, 3, 1, 2)
        device = torch.from_numpy(device_bits.astype(np.int16))
        if nhwc:
            device = device.permute(0, 3, 1, 2)
        return int(((host_bits != device) & written).sum())

    def _run_launch(self, rec, mem: GlobalMemory, ctas, case: Case):
        """Run one recorded launch; its first CTAs also under a second warp schedule, compared byte by byte."""
        launcher = self.launcher(rec.kernel, mem)
        all_ctas = ctas if ctas is not None else [(x, y, z) for z in range(rec.grid[2]) for y in range(rec.grid[1])
                                                  for x in range(rec.grid[0])]
        head, tail = all_ctas[:case.schedule_ctas], all_ctas[case.schedule_ctas:]
        order_findings = []
        if not head:
            result = launcher.run(rec.kernel, rec.grid, rec.block, rec.dynamic_shared, rec.params, ctas=tail,
                                  label=rec.kernel)
            return result, order_findings
        before = mem.snapshot()
        first = launcher.run(rec.kernel, rec.grid, rec.block, rec.dynamic_shared, rec.params, ctas=head,
                             label=rec.kernel)
        after_first = mem.snapshot()
        mem.restore(before)
        second = launcher.run(rec.kernel, rec.grid, rec.block, rec.dynamic_shared, rec.params, ctas=head,
                              schedule="warps-reverse", label=rec.kernel, counters=False)
        after_second = mem.snapshot()
        differ = np.nonzero(after_first != after_second)[0]
        if len(differ):
            order_findings.append({"category": "races", "kind": "order-dependent result", "kernel": rec.kernel,
                                   "count": int(len(differ)),
                                   "example": f"{len(differ)} bytes of global memory differ between warps in "
                                              f"lockstep and one warp at a time in reverse order"})
        for f in second.findings:  # hazards only the second schedule showed
            if (f.category, f.kind, f.line) not in first.findings.items:
                first.findings.items[(f.category, f.kind, f.line)] = f
        mem.restore(after_first)
        result = first
        if tail:
            rest = launcher.run(rec.kernel, rec.grid, rec.block, rec.dynamic_shared, rec.params, ctas=tail,
                                label=rec.kernel)
            result = _merge(first, rest)
        result.ctas_run = len(all_ctas)
        return result, order_findings


def main_launch(launches: list):
    """The convolution kernel's launch among a call's launches (the transposes before it, the split-K
    reduction after it are not), or None."""
    main = [r for r in launches if re.search(r"deformConvTensorCoreI|deformConvWgmmaI|deformConvTiledI", r.kernel)]
    return main[-1] if main else (launches[-1] if launches else None)


def _merge(a, b):
    for key, f in b.findings.items.items():
        if key in a.findings.items:
            a.findings.items[key].count += f.count
        else:
            a.findings.items[key] = f
    a.per_cta_instructions = np.concatenate([a.per_cta_instructions, b.per_cta_instructions], axis=1)
    for k, v in b.memory.items():
        a.memory[k] += v
    a.thread_instructions += b.thread_instructions
    a.warp_instructions += b.warp_instructions
    a.seconds += b.seconds
    return a


def _sample_ctas(grid, extra: int, seed: int) -> list:
    """The grid's corner CTAs (every combination of first and last along each axis), then ``extra``
    random ones."""
    corners = sorted({(x, y, z) for x in {0, grid[0] - 1} for y in {0, grid[1] - 1} for z in {0, grid[2] - 1}})
    rng = np.random.default_rng(seed + 7)
    total = grid[0] * grid[1] * grid[2]
    chosen = list(corners)
    for _ in range(extra * 4):
        if len(chosen) >= min(total, len(corners) + extra):
            break
        i = int(rng.integers(total))
        cta = (i % grid[0], i // grid[0] % grid[1], i // (grid[0] * grid[1]))
        if cta not in chosen:
            chosen.append(cta)
    return chosen


# -------------------------------------------------------------------------------------------------

def build_sources(src: Path, include: Path, arch: str, cache: Path) -> tuple[CapturedLibrary, Callable[[str], dict]]:
    """The kernels' library for ``arch`` (host code built as CMake builds it: BUILD_DEFINES) and a builder of
    their device code for other PTX targets (Checker's ``ptx_builder``), both cached in ``cache``."""
    lib = CapturedLibrary(build(src, include, SOURCES, arch, cache, defines=BUILD_DEFINES), arch)

    def ptx_builder(ptx_arch: str) -> dict:
        t0 = time.perf_counter()
        ptx = build_ptx(src, include, SOURCES, ptx_arch, cache)
        log(f"ptx_check: built the device code of {', '.join(SOURCES)} for {ptx_arch} in "
            f"{time.perf_counter() - t0:.1f}s")
        return ptx
    return lib, ptx_builder


def main(argv: Optional[list] = None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--src", type=Path, default=REPO / "plugins" / "src",
                        help="folder with deformConvKernel.cu and deformConvTensorCore.cu (default plugins/src)")
    parser.add_argument("--arch", default="sm_80", help="PTX target and device to model (default sm_80)")
    parser.add_argument("--ptx-arch", default=None,
                        help="run the device code built for this PTX target instead (e.g. sm_90a: compute_90a, "
                             "__CUDA_ARCH_FEAT_SM90_ALL defined; the host code stays --arch's build)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--cases", type=regex, default=None, help="run only the cases whose name matches this regex")
    parser.add_argument("--cache", type=Path, default=REPO / "plugins" / "build" / "ptxexec-cache",
                        help="compiled PTX and host library cache (default plugins/build/ptxexec-cache)")
    args = parser.parse_args(argv)
    from ptxexec.capture import DEVICES
    if args.arch not in DEVICES:
        print(f"error: --arch must be one of {', '.join(DEVICES)}", file=sys.stderr)
        return 1
    ptx_targets = [*DEVICES, "sm_90a"]  # sm_90a: the Hopper kernel's architecture-specific build
    if args.ptx_arch is not None and args.ptx_arch not in ptx_targets:
        print(f"error: --ptx-arch must be one of {', '.join(ptx_targets)}", file=sys.stderr)
        return 1
    if find_nvcc() is None:
        print("error: nvcc not found: ptx_check compiles the kernels to PTX with it", file=sys.stderr)
        return 1
    src = args.src.resolve()
    missing = [s for s in SOURCES if not (src / s).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found in {src}", file=sys.stderr)
        return 1
    include = src.parent / "include" if (src.parent / "include" / "deformrt").is_dir() else REPO / "plugins" / "include"
    t0 = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    try:
        lib, ptx_builder = build_sources(src, include, args.arch, args.cache)
        host = build_host(src, include, args.cache)
    except BuildError as exc:
        print_error(exc)
        return 1
    log(f"ptx_check: built {', '.join(SOURCES)} for {args.arch} in {time.perf_counter() - t0:.1f}s")
    entries = [name for module in lib.modules.values() for name in module.kernels]
    names = demangle(entries)

    try:
        checker = Checker(lib, args.arch, host, ptx_builder, args.ptx_arch)
        if args.ptx_arch:
            checker.select_ptx(args.ptx_arch)
    except BuildError as exc:
        print_error(exc)
        return 1
    # every entry point must be launched by some case: checked first, from the C calls alone
    covered = {k for case in CASES for k in checker.launched_kernels(case)}
    no_case = [e for e in entries if e not in covered]
    for e in no_case:
        print(f"error: kernel {names.get(e, e)} ({e}) is in the PTX but no case of ptx_check.py launches it; "
              f"add one to CASES", file=sys.stderr)
    if no_case:
        return 1
    cases = [c for c in CASES if args.cases is None or re.search(args.cases, c.name)]
    if not cases:
        print(f"error: no case matches {args.cases.pattern!r}", file=sys.stderr)
        return 1
    report_cases, counters, launched = [], {}, []
    total_instr, exec_seconds = 0, 0.0
    for case in cases:
        t_case = time.perf_counter()
        out = checker.run_case(case)
        report_cases.append(out.entry)
        counters.update(out.counters)
        launched += [k for k in out.kernels if k not in launched]
        total_instr += out.thread_instructions
        exec_seconds += out.seconds
        log(f"  {'ok  ' if out.entry['ok'] else 'FAIL'} {case.name:44s} error {out.entry['error']}  "
            f"{time.perf_counter() - t_case:5.1f}s  {len(out.entry['findings'])} finding(s)")
    summary = {"cases": len(report_cases), "mismatches": sum(not c["ok"] for c in report_cases)}
    for category in CATEGORIES:
        summary[category] = sum(f.get("count", 1) for c in report_cases for f in c["findings"]
                                if f.get("category") == category)
    report = {"arch": args.arch, "kernels": launched, "summary": summary, "cases": report_cases,
              "counters": counters}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"PTX executor check ({args.arch}): {len(report_cases)} cases, {len(launched)} kernels")
        for c in report_cases:
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']:44s} {names.get(c['kernel'], c['kernel'])[:48]:48s} "
                  f"error {c['error']}")
            for f in c["findings"]:
                print(f"       {f.get('category')}: {f.get('kind', '')} {f.get('example', f.get('detail', ''))}"
                      f"{'  (PTX line %s: %s)' % (f['ptx_line'], f['instruction']) if 'ptx_line' in f else ''}")
        print("summary: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    wall = time.perf_counter() - t0
    log(f"ptx_check: {wall:.1f}s; executor {total_instr / max(exec_seconds, 1e-9):.3g} thread-instructions/s "
        f"({total_instr:.3g} in {exec_seconds:.1f}s)")
    failed = any(v for k, v in summary.items() if k != "cases")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
