"""Benchmark deformrt's DCN kernels side by side with torchvision's deform_conv2d and the cuDNN dense
convolution of the same shape (the maskrcnn-benchmark R-50 DCN stages of dcn-performance.md).

    python scripts/bench_dcn.py [--kernel-lib PATH] [--iters 20] [--json] [--json-file FILE]

For each stage (conv3 128ch 100x168, conv4 256ch 50x84, conv5 512ch 25x42; 3x3, stride 1, pad 1, one
offset group, with mask), batch 1 and 8, fp16 and fp32 (TF32 off everywhere), and smooth trained-like
or i.i.d. random offsets, it times:
  ours NCHW   deformrt_dcn_forward (fp16 on sm_80+: NHWC staging + tensor-core kernel)
  ours NHWC   deformrt_dcn_forward_nhwc, OHWI weights read in place (the plugin's kHWC8 path; fp16, sm_80+;
              a workspace only for split-K partial sums)
  NHWC mma    on Hopper (compute capability 9.0) only: ours NHWC kept on mma.sync (DEFORMRT_TC_WGMMA=0) beside
              the default wgmma kernel
  NHWC+T      the same with an OIHW weight, transposed into the workspace on every call (files from before
              weight_layout; the column shows what that transpose costs)
  torchvision torchvision.ops.deform_conv2d (NCHW)
  cuDNN       F.conv2d of the same shape, NCHW and channels_last
Every call is captured in a CUDA graph (no Python work inside the timing) and replayed; the time is
the best of 3 replays divided by the calls in the graph ("eager" marks a fallback to back-to-back
launches when capture fails). Ratios are ours / theirs (lower is better); the targets are NHWC /
cuDNN channels_last <= 1.5 and ours / torchvision <= 0.1 (fp16, batch 1, H100).
Needs a CUDA GPU and the kernel library (`deformrt build-plugin`); exits 1 with one line otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from exporter.util.usage import ScriptParser, first_paragraph, print_error, whole_number
from exporter.util.fsutil import atomic_write_text
from models.native import KERNEL_ENV, WGMMA_ENV, find_kernel_library
from models.errors import DeformRTError

# (C_in = C_out, H, W) at 800x1344 input; 3x3, stride 1, pad 1, one offset group, modulated.
STAGES = {"conv3": (128, 100, 168), "conv4": (256, 50, 84), "conv5": (512, 25, 42)}


def time_ms(fn: Callable[[], object], iters: int) -> tuple[float, str]:
    """Mean ms per call of ``fn`` replayed from a CUDA graph (best of 3), or of eager calls if capture fails."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as graph capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(iters):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        run, mode = graph.replay, "graph"
    except Exception:  # a library call that cannot be captured: time eager launches instead
        torch.cuda.synchronize()

        def run():
            for _ in range(iters):
                fn()

        mode = "eager"
    best = math.inf
    for _ in range(3):
        start.record()
        run()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best, mode


def torchvision_deform_conv2d() -> Optional[Callable]:
    try:
        from torchvision.ops import deform_conv2d
    except Exception:
        return None
    return deform_conv2d


def make_offsets(kind: str, batch: int, h: int, w: int, dtype,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets [batch, 18, h, w] and mask [batch, 9, h, w]: "smooth" (a low-frequency field of a few pixels,
    like a trained offset conv's) or "random" (i.i.d., the worst case for gather locality)."""
    if kind == "smooth":
        coarse = torch.randn(batch, 27, max(2, h // 8), max(2, w // 8), generator=gen, device="cuda")
        field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        offset, mask = field[:, :18] * 2.0, torch.sigmoid(field[:, 18:] * 2.0)
    else:
        offset = torch.randn(batch, 18, h, w, generator=gen, device="cuda") * 2.0
        mask = torch.rand(batch, 9, h, w, generator=gen, device="cuda")
    return offset.to(dtype).contiguous(), mask.to(dtype).contiguous()


@contextlib.contextmanager
def wgmma_off():
    """The plugin's launcher keeps a compute capability 9.0 GPU on mma.sync (it reads DEFORMRT_TC_WGMMA at
    each launch, so also while a CUDA graph is captured)."""
    before = os.environ.get(WGMMA_ENV)
    os.environ[WGMMA_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(WGMMA_ENV, None)
        else:
            os.environ[WGMMA_ENV] = before


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def bench(iters: int, log=print) -> list[dict]:
    from models.ops import cuda_kernels

    lib = cuda_kernels._library()
    hopper = torch.cuda.get_device_capability() == (9, 0)  # the plugin's wgmma kernel runs there
    tv = torchvision_deform_conv2d()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for name, (c, h, w) in STAGES.items():
        for dtype in (torch.float16, torch.float32):
            for batch in (1, 8):
                for kind in ("smooth", "random"):
                    x = torch.randn(batch, c, h, w, generator=gen, device="cuda").to(dtype)
                    weight = (torch.randn(c, c, 3, 3, generator=gen, device="cuda") / (9 * c) ** 0.5).to(dtype)
                    offset, mask = make_offsets(kind, batch, h, w, dtype, gen)
                    args = ((1, 1), (1, 1), (1, 1))
                    t = {}
                    t["ours_nchw"] = time_ms(
                        lambda: cuda_kernels.deform_conv2d_cuda(x, offset, weight, None, mask, *args), iters)
                    ohwi = weight.permute(0, 2, 3, 1).contiguous()
                    desc = cuda_kernels.make_desc(x, offset, ohwi, None, mask, *args, "OHWI")
                    if dtype == torch.float16 and lib.deformrt_dcn_nhwc_supported(ctypes.byref(desc)):
                        x_cl = x.contiguous(memory_format=torch.channels_last)
                        y_cl = torch.empty_like(x_cl)
                        # the split-K partial sums where the launch splits K (none otherwise)
                        split_bytes = lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc))
                        split_space = torch.empty(max(split_bytes, 1), dtype=torch.uint8, device="cuda")

                        def nhwc_call(descriptor, weight_tensor, space, space_bytes, layout):
                            def call():
                                status = lib.deformrt_dcn_forward_nhwc(
                                    ctypes.byref(descriptor), x_cl.data_ptr(), weight_tensor.data_ptr(),
                                    offset.data_ptr(), None, mask.data_ptr(), y_cl.data_ptr(), space.data_ptr(),
                                    space_bytes, torch.cuda.current_stream().cuda_stream)
                                if status != 0:
                                    raise RuntimeError(f"deformrt_dcn_forward_nhwc ({layout}): cudaError {status}")
                            return call

                        t["ours_nhwc"] = time_ms(nhwc_call(desc, ohwi, split_space, split_bytes, "OHWI"), iters)
                        if hopper:  # the same call kept on mma.sync: what the wgmma kernel gains (or not)
                            with wgmma_off():
                                mma_bytes = lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc))
                                mma_space = torch.empty(max(mma_bytes, 1), dtype=torch.uint8, device="cuda")
                                t["ours_nhwc_mma_sync"] = time_ms(
                                    nhwc_call(desc, ohwi, mma_space, mma_bytes, "OHWI, mma.sync"), iters)
                        legacy = cuda_kernels.make_desc(x, offset, weight, None, mask, *args, "OIHW")
                        ws_bytes = lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(legacy))
                        workspace = torch.empty(ws_bytes, dtype=torch.uint8, device="cuda")
                        t["nhwc_oihw"] = time_ms(nhwc_call(legacy, weight, workspace, ws_bytes, "OIHW"), iters)
                    if tv is not None:
                        t["torchvision"] = time_ms(lambda: tv(x, offset, weight, None, (1, 1), (1, 1), (1, 1), mask),
                                                   iters)
                    t["cudnn_nchw"] = time_ms(lambda: F.conv2d(x, weight, None, 1, 1), iters)
                    x_cl2 = x.contiguous(memory_format=torch.channels_last)
                    w_cl = weight.contiguous(memory_format=torch.channels_last)
                    t["cudnn_cl"] = time_ms(lambda: F.conv2d(x_cl2, w_cl, None, 1, 1), iters)
                    ms = {k: v[0] for k, v in t.items()}
                    best_ours = min(v for k, v in ms.items() if k.startswith("ours"))
                    row = dict(stage=name, dtype=str(dtype).removeprefix("torch."), batch=batch, offsets=kind,
                               **{f"{k}_ms": v for k, v in ms.items()},
                               timing={k: v[1] for k, v in t.items()},
                               ours_vs_cudnn_cl=_ratio(best_ours, ms["cudnn_cl"]),
                               ours_vs_cudnn_nchw=_ratio(ms["ours_nchw"], ms["cudnn_nchw"]),
                               ours_vs_torchvision=_ratio(best_ours, ms.get("torchvision")))
                    rows.append(row)
                    log(format_row(row))
    return rows


def _fmt(v: Optional[float], width: int, digits: int = 3) -> str:
    return f"{v:{width}.{digits}f}" if v is not None else f"{'n/a':>{width}}"


HEADER = (f"{'stage':6} {'dtype':8} {'N':>2} {'offsets':7} {'ours NCHW':>10} {'ours NHWC':>10} {'NHWC mma':>9} "
          f"{'NHWC+T':>9} "
          f"{'torchvis':>10} "
          f"{'cuDNN':>9} {'cuDNN cl':>9} {'/cuDNNcl':>9} {'/cuDNN':>7} {'/tv':>7}")


def format_row(r: dict) -> str:
    return (f"{r['stage']:6} {r['dtype']:8} {r['batch']:2d} {r['offsets']:7} {_fmt(r.get('ours_nchw_ms'), 10)} "
            f"{_fmt(r.get('ours_nhwc_ms'), 10)} {_fmt(r.get('ours_nhwc_mma_sync_ms'), 9)} "
            f"{_fmt(r.get('nhwc_oihw_ms'), 9)} {_fmt(r.get('torchvision_ms'), 10)} "
            f"{_fmt(r['cudnn_nchw_ms'], 9)} "
            f"{_fmt(r['cudnn_cl_ms'], 9)} {_fmt(r['ours_vs_cudnn_cl'], 9, 2)} {_fmt(r['ours_vs_cudnn_nchw'], 7, 2)} "
            f"{_fmt(r['ours_vs_torchvision'], 7, 2)}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--kernel-lib", help="libdeformrt_kernels.so (default: $DEFORMRT_KERNEL_LIB, plugins/build)")
    parser.add_argument("--iters", type=whole_number(1), default=20, help="calls captured per CUDA graph")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    parser.add_argument("--json-file", metavar="FILE", help="also write the rows as JSON to this file (replaced)")
    parser.add_argument("--json-out", dest="json_file", help=argparse.SUPPRESS)  # the old spelling
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU available; bench_dcn has nothing to benchmark", file=sys.stderr)
        return 1
    try:
        os.environ[KERNEL_ENV] = str(find_kernel_library(args.kernel_lib))
    except DeformRTError as exc:
        print_error(exc)
        return 1
    # Compare fp32 with fp32: PyTorch's cuDNN and matmul "fp32" are TF32 unless switched off.
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.cuda.get_device_name()
    if not args.json:
        print(f"device: {device}\n{HEADER}")
    rows = bench(args.iters, log=(lambda _: None) if args.json else print)
    report = {"device": device, "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
    if args.json_file:
        atomic_write_text(Path(args.json_file), json.dumps(report, indent=2) + "\n", force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
