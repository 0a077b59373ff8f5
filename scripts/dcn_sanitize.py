"""A small driver for compute-sanitizer (memcheck, racecheck): runs deformrt's DCN kernels once on a
few problems that cover every kernel and tile shape, and checks the results loosely against the
float64 reference (the GPU tests hold the tight bounds).

    compute-sanitizer --tool memcheck python scripts/dcn_sanitize.py
    compute-sanitizer --tool racecheck python scripts/dcn_sanitize.py --quick

Problems: odd sizes, groups, offset groups, stride, dilation, batch > 1, bias and mask, fp32 (tiled
kernel) and fp16 (tensor-core kernel on sm_80+, through the NCHW entry and the NHWC entry), with the
tile shape forced to each of 0, 1, 2 (DEFORMRT_TC_TILE_SHAPE); one problem long enough in K to split is
also run with K split three ways (DEFORMRT_TC_SPLIT_K: the partial sums and their reduction kernel).
Exits 1 when a result is wrong.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dcn_reference import deform_conv2d_reference, relative_rms_error  # noqa: E402
from exporter.util.usage import ScriptParser, first_paragraph  # noqa: E402

# (batch, C_in, C_out, H, W, kernel, stride, pad, dilation, groups, offset groups, modulated, bias)
PROBLEMS = [
    (2, 24, 40, 11, 13, 3, 1, 1, 1, 1, 1, True, True),
    (1, 64, 72, 9, 15, 3, 1, 2, 2, 2, 4, True, False),
    (3, 16, 130, 7, 9, 3, 2, 1, 1, 1, 2, False, True),
    (1, 6, 9, 5, 4, 1, 1, 0, 1, 3, 1, True, True),
]
# K = 256 x 9 >= 2048: the tensor-core kernel may split K (run with DEFORMRT_TC_SPLIT_K=3)
SPLIT_PROBLEM = (1, 256, 40, 6, 9, 3, 1, 1, 1, 1, 1, True, True)


def run(problem, dtype, shape: str, nhwc: bool, split: str = "") -> float:
    from models.ops import cuda_kernels

    n, c, co, h, w, k, s, p, d, g, dg, modulated, has_bias = problem
    ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    gen = torch.Generator().manual_seed(n * c * co + h)
    x = torch.randn(n, c, h, w, generator=gen)
    weight = torch.randn(co, c // g, k, k, generator=gen) / (c // g * k * k) ** 0.5
    offset = torch.randn(n, 2 * dg * k * k, ho, wo, generator=gen) * 2
    mask = torch.rand(n, dg * k * k, ho, wo, generator=gen) if modulated else None
    bias = torch.randn(co, generator=gen) if has_bias else None
    cast = [None if t is None else t.to(dtype) for t in (x, offset, weight, bias, mask)]
    x, offset, weight, bias, mask = (None if t is None else t.cuda() for t in cast)
    os.environ["DEFORMRT_TC_TILE_SHAPE"] = shape
    os.environ["DEFORMRT_TC_SPLIT_K"] = split
    args = ((s, s), (p, p), (d, d))
    lib = cuda_kernels._library()
    if nhwc:
        ohwi = weight.permute(0, 2, 3, 1).contiguous()
        desc = cuda_kernels.make_desc(x, offset, ohwi, bias, mask, *args, "OHWI")
        if not lib.deformrt_dcn_nhwc_supported(ctypes.byref(desc)):
            return 0.0
        stream = torch.cuda.current_stream().cuda_stream
        x_cl = x.contiguous(memory_format=torch.channels_last)
        y = torch.empty(n, co, ho, wo, dtype=dtype, device="cuda").contiguous(memory_format=torch.channels_last)
        ptrs = [None if t is None else t.data_ptr() for t in (bias, mask)]
        nbytes = lib.deformrt_dcn_nhwc_workspace_size(ctypes.byref(desc))  # split-K partial sums, if any
        workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")
        status = lib.deformrt_dcn_forward_nhwc(ctypes.byref(desc), x_cl.data_ptr(), ohwi.data_ptr(),
                                               offset.data_ptr(), ptrs[0], ptrs[1], y.data_ptr(), workspace.data_ptr(),
                                               nbytes, stream)
        assert status == 0, f"cudaError {status}"
    else:
        y = cuda_kernels.deform_conv2d_cuda(x, offset, weight, bias, mask, *args)
    torch.cuda.synchronize()
    ref = deform_conv2d_reference(*[None if t is None else t.cpu() for t in (x, offset, weight, bias)], *args,
                                  None if mask is None else mask.cpu())
    return relative_rms_error(y.float().cpu(), ref)


def main(argv=None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--quick", action="store_true", help="fewer runs (racecheck is slow)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU; dcn_sanitize runs the kernels on one", file=sys.stderr)
        return 1
    problems = PROBLEMS[:2] if args.quick else PROBLEMS
    runs = [(problem, dtype, shape, nhwc, "") for problem in problems
            for dtype, shapes, layouts in ((torch.float32, [""], [False]), (torch.float16, ["0", "1", "2"],
                                                                            [False, True]))
            for shape in shapes for nhwc in layouts]
    runs += [(SPLIT_PROBLEM, torch.float16, "", nhwc, "3") for nhwc in (False, True)]
    failures = 0
    for problem, dtype, shape, nhwc, split in runs:
        err = run(problem, dtype, shape, nhwc, split)
        bound = 1e-5 if dtype == torch.float32 else 3e-3
        ok = err <= bound
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} {problem} {str(dtype)[6:]} shape={shape or '-'} split={split or '-'} "
              f"{'nhwc' if nhwc else 'nchw'} rel-rms {err:.2e}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
