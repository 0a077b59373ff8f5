"""Benchmark deformrt's DCN kernel side by side with torchvision's deform_conv2d and the cuDNN dense
convolution of the same shape (the maskrcnn-benchmark DCN stages of dcn-performance.md).

    python scripts/bench_dcn.py [--kernel-lib PATH] [--iters 50] [--json]

Times are CUDA-event averages per call after warm-up; ratios are ours / theirs (lower is better).
Needs a CUDA GPU and the kernel library (`deformrt build-plugin`); exits 1 with one line otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from models.native import KERNEL_ENV, find_kernel_library
from models.errors import DeformRTError

# (C_in = C_out, H, W) at 800x1344 input; 3x3, stride 1, pad 1, one offset group, modulated.
STAGES = {"conv3": (128, 100, 168), "conv4": (256, 50, 84), "conv5": (512, 25, 42)}


def time_ms(fn: Callable[[], object], iters: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def torchvision_deform_conv2d() -> Optional[Callable]:
    try:
        from torchvision.ops import deform_conv2d
    except Exception:
        return None
    return deform_conv2d


def bench(iters: int) -> list[dict]:
    from models.ops import cuda_kernels

    tv = torchvision_deform_conv2d()
    rows = []
    for name, (c, h, w) in STAGES.items():
        for dtype in (torch.float32, torch.float16):
            for batch in (1, 8):
                x = torch.randn(batch, c, h, w, device="cuda", dtype=dtype)
                weight = torch.randn(c, c, 3, 3, device="cuda", dtype=dtype) / (9 * c) ** 0.5
                offset = torch.randn(batch, 18, h, w, device="cuda", dtype=dtype) * 2
                mask = torch.rand(batch, 9, h, w, device="cuda", dtype=dtype)
                args = ((1, 1), (1, 1), (1, 1))
                ours = time_ms(lambda: cuda_kernels.deform_conv2d_cuda(x, offset, weight, None, mask, *args), iters)
                dense = time_ms(lambda: F.conv2d(x, weight, None, 1, 1), iters)
                theirs = (time_ms(lambda: tv(x, offset, weight, None, (1, 1), (1, 1), (1, 1), mask), iters)
                          if tv is not None else None)
                rows.append(dict(stage=name, dtype=str(dtype).removeprefix("torch."), batch=batch, deformrt_ms=ours,
                                 torchvision_ms=theirs, cudnn_dense_ms=dense, vs_cudnn=ours / dense,
                                 vs_torchvision=ours / theirs if theirs else None))
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-lib", help="libdeformrt_kernels.so (default: $DEFORMRT_KERNEL_LIB, plugins/build)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_dcn: no CUDA GPU available; nothing to benchmark", file=sys.stderr)
        return 1
    try:
        os.environ[KERNEL_ENV] = str(find_kernel_library(args.kernel_lib))
    except DeformRTError as exc:
        print(f"bench_dcn: {exc}", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    rows = bench(args.iters)
    if args.json:
        print(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2))
        return 0
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"{'stage':6} {'dtype':8} {'N':>2} {'deformrt ms':>12} {'torchvision':>12} {'cuDNN dense':>12} "
          f"{'/cuDNN':>7} {'/tv':>7}")
    for r in rows:
        tv = f"{r['torchvision_ms']:12.3f}" if r["torchvision_ms"] else f"{'n/a':>12}"
        ratio_tv = f"{r['vs_torchvision']:7.2f}" if r["vs_torchvision"] else f"{'n/a':>7}"
        print(f"{r['stage']:6} {r['dtype']:8} {r['batch']:2d} {r['deformrt_ms']:12.3f} {tv} "
              f"{r['cudnn_dense_ms']:12.3f} {r['vs_cudnn']:7.2f} {ratio_tv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
