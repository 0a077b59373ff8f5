"""The fp16 tensor-core kernel's accuracy at ResNet-101's DCN layer shapes, without a GPU: the CPU build
(libdeformrt_host.so: the kernel's own tile code, mma.sync and wgmma emulated per the PTX ISA) on random
inputs, against the float64 reference, as the RMS error relative to a dense fp16 convolution's on the same
data (tests/dcn_reference.py: the rule is <= 1.6).

    python scripts/fp16_accuracy.py [--layers res3,res4,res5] [--gpus "H100 SXM,A100,Jetson AGX Orin"] [--json]

Each layer runs with the launch the GPU launcher plans for each GPU (the kernel: wgmma on H100, whose K
order is its own; pixels per CTA and K splits: a K split adds partial sums in another order), at
800x1344, batch 1, 3x3, modulated, offsets N(0, 1) and smooth ones (a low-frequency field of amplitude 2).
Several minutes of CPU per layer.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from exporter.cli.options import pick_names, run_script  # noqa: E402
from exporter.util.usage import ScriptParser, first_paragraph  # noqa: E402
from exporter.util.progress import Progress  # noqa: E402
from models.errors import DeformRTError  # noqa: E402
from dcn_reference import FP16_RMS_RATIO, deform_conv2d_reference, fp16_error_ratio  # noqa: E402
from kernel_model import GPUS, layers  # noqa: E402
from ptxexec.capture import DEVICES  # noqa: E402

# (SMs, per-block shared-memory opt-in, L2 bytes) the plan is made for: scripts/kernel_model.py's GPUs with
# the device attributes the PTX executor's stand-in runtime reports for their architecture
GPU_LIMITS = {name: (DEVICES[gpu.arch]["sms"], DEVICES[gpu.arch]["shared_optin"], DEVICES[gpu.arch]["l2"])
              for name, gpu in GPUS.items()}


def host_library():
    import tempfile

    from exporter.trt.plugin_build import cmake_build
    from models.native import HOST_LIBRARY
    from models.ops.cuda_kernels import declare_host_api
    # The loaded library stays mapped after its build folder is removed.
    with tempfile.TemporaryDirectory(prefix="deformrt-host-") as build_dir:
        out = cmake_build(Path(build_dir), {"DEFORMRT_BUILD_CUDA": "OFF"}, ["deformrt_host"])
        return declare_host_api(ctypes.CDLL(str(out / HOST_LIBRARY)))


def inputs(c: int, h: int, w: int, smooth: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h, w, generator=g).half()
    weight = (torch.randn(c, c, 3, 3, generator=g) / (9 * c) ** 0.5).half()
    if smooth:
        coarse = torch.randn(1, 18, max(h // 8, 2), max(w // 8, 2), generator=g) * 2
        offset = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    else:
        offset = torch.randn(1, 18, h, w, generator=g)
    mask = torch.rand(1, 9, h, w, generator=g).half()
    return x, weight, offset.half(), mask


def plan_for(lib, desc, gpu: str):
    """The launch the GPU launcher plans for ``desc`` on ``gpu``: on a compute capability 9.0 GPU (the default
    build's sm_90a code) the wgmma kernel's where it takes the layer, else mma.sync's (plan.kernel says which)."""
    from models.ops.cuda_kernels import TcPlan
    plan = TcPlan()
    sms, optin, l2 = GPU_LIMITS[gpu]
    planner = lib.deformrt_dcn_tc_plan_sm90a if GPUS[gpu].arch == "sm_90" else lib.deformrt_dcn_tc_plan
    if planner(ctypes.byref(desc), sms, optin, l2, -1, 0, 0, ctypes.byref(plan)) != 0:
        raise DeformRTError(f"the tensor-core kernel does not take this layer on {gpu}")
    return plan


def run(lib, x, ohwi, offset, mask, desc, plan) -> torch.Tensor:
    """The CPU build's output (NCHW) for ``desc`` launched as ``plan``."""
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    y = torch.full((1, desc.outHeight, desc.outWidth, desc.outChannels), float("nan"), dtype=torch.float16)
    rc = lib.deformrt_dcn_forward_nhwc_host_plan(ctypes.byref(desc), x_nhwc.data_ptr(), ohwi.data_ptr(),
                                                 offset.contiguous().data_ptr(), None, mask.contiguous().data_ptr(),
                                                 y.data_ptr(), None, 0, ctypes.byref(plan))
    if rc != 0:
        raise SystemExit("the CPU build refused the call")
    return y.permute(0, 3, 1, 2)


def main(argv=None) -> int:
    from models.ops.cuda_kernels import make_desc
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--layers", default="res3,res4,res5")
    parser.add_argument("--gpus", default=",".join(GPU_LIMITS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    shapes = layers()
    layer_names = pick_names(args.layers, list(shapes), "--layers", "layer")
    gpus = pick_names(args.gpus, list(GPU_LIMITS), "--gpus", "GPU")  # both before the build
    progress = Progress()
    with progress.step("building the CPU build of the kernels (libdeformrt_host.so)"):
        lib = host_library()
    rows = []
    for layer in layer_names:
        c, h, w = shapes[layer]
        for smooth in (False, True):
            x, weight, offset, mask = inputs(c, h, w, smooth)
            ref = deform_conv2d_reference(x, offset, weight, None, (1, 1), (1, 1), (1, 1), mask)
            ohwi = weight.permute(0, 2, 3, 1).contiguous()
            desc = make_desc(x, offset, ohwi, None, mask, (1, 1), (1, 1), (1, 1), "OHWI")
            seen = {}
            for gpu in gpus:
                plan = plan_for(lib, desc, gpu)
                kernel = plan.kernel
                # the same K order gives the same bits: run (minutes of CPU) once; the wgmma kernel's
                # register-A K order is its own
                key = (kernel, plan.splitK, plan.stepsPerSplit)
                if key not in seen:
                    with progress.step(f"{layer}, {'smooth' if smooth else 'random'} offsets, {kernel}, split K "
                                       f"{plan.splitK}: the CPU build at {c}x{h}x{w}"):
                        y = run(lib, x, ohwi, offset, mask, desc, plan)
                    seen[key] = fp16_error_ratio(y, ref, x, weight, None, (1, 1), (1, 1), (1, 1), 1)
                rows.append({"layer": layer, "offsets": "smooth" if smooth else "random", "gpu": gpu,
                             "kernel": kernel, "split_k": plan.splitK, "rms_ratio": round(seen[key], 3)})
                print(f"{layer} {rows[-1]['offsets']:6} {gpu:16} {kernel:8} split K {plan.splitK}: fp16 RMS error "
                      f"{seen[key]:.3f}x a dense fp16 conv's (rule <= {FP16_RMS_RATIO})", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if all(r["rms_ratio"] <= FP16_RMS_RATIO for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(run_script(main))
