"""Compile checks of the CUDA kernels for sm_80 (Ampere), sm_87 (Jetson Orin) and sm_90 (Hopper), no GPU
needed: no local memory (stack frames or register spills), shared memory within each architecture's
per-block opt-in limit at the R-50 DCN stage shapes, tensor-core (HMMA) instructions in the tensor-core
kernel's SASS, and its main loop in the SASS (scripts/sass_loop.py): every global load's result waits for
the loop's HMMAs, and few instructions per HMMA. ``pytest -s`` prints the registers and shared memory of
every kernel and the main loops' counts."""

from __future__ import annotations

import ctypes
import re
import shutil

import pytest

from cli_shell import load_script
from exporter.trt.plugin_build import cmake_build
from models.native import HOST_LIBRARY
from models.ops.cuda_kernels import ConvDesc, TcPlan, declare_host_api


kernel_resources = load_script("kernel_resources")
sass_loop = load_script("sass_loop")  # puts scripts/ on sys.path
from ptxexec.capture import DEVICES  # noqa: E402
CHECK_ARCHS, SHARED_OPTIN_BYTES = kernel_resources.CHECK_ARCHS, kernel_resources.SHARED_OPTIN_BYTES
collect, format_table = kernel_resources.collect, kernel_resources.format_table

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                                reason="nvcc and cmake are needed to compile the CUDA kernels")

TENSOR_CORE_KERNEL = "deformConvTensorCore<"
WGMMA_KERNEL = "deformConvWgmma<"  # the Hopper wgmma kernel: sm_90a code, listed under arch 90
# R-50 DCN stages at 800x1344 (dcn-performance.md): (C_in = C_out, H, W); 3x3, stride 1, pad 1, modulated.
STAGES = {"conv3": (128, 100, 168), "conv4": (256, 50, 84), "conv5": (512, 25, 42)}


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel-resources")
    rows, hmma = collect(CHECK_ARCHS, out)
    print("\n" + format_table(rows, hmma))
    return rows, hmma, out


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    out = cmake_build(tmp_path_factory.mktemp("deformrt-host"), {"DEFORMRT_BUILD_CUDA": "OFF"}, ["deformrt_host"])
    return declare_host_api(ctypes.CDLL(str(out / HOST_LIBRARY)))


def _stage_desc(c, h, w, batch):
    return ConvDesc(batch, c, h, w, c, 3, 3, h, w, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0)


def test_every_kernel_compiles_for_each_architecture_without_local_memory(resources):
    rows, _, _ = resources
    assert {r.arch for r in rows} == set(CHECK_ARCHS)
    for arch in CHECK_ARCHS:
        names = {r.kernel for r in rows if r.arch == arch}
        assert sum(n.startswith(TENSOR_CORE_KERNEL) for n in names) == 3, names  # the three tile shapes
    spilling = [r for r in rows if r.stack_bytes or r.spill_store_bytes or r.spill_load_bytes]
    assert not spilling, spilling


# The GPU each architecture's plan is made for: (SMs, per-block shared-memory opt-in, L2 bytes), from sm_80
# on, as the PTX executor's stand-in runtime reports them.
PLAN_GPUS = {int(arch.removeprefix("sm_")): (d["sms"], d["shared_optin"], d["l2"])
             for arch, d in DEVICES.items() if d["major"] >= 8}


def test_shared_memory_fits_each_architecture_at_the_stage_shapes(resources, host):
    rows, _, _ = resources
    tensor_core = [r for r in rows if r.kernel.startswith(TENSOR_CORE_KERNEL)]
    for name, (c, h, w) in STAGES.items():
        for batch in (1, 8):
            desc = _stage_desc(c, h, w, batch)
            for arch, (sms, optin, l2) in PLAN_GPUS.items():
                plan = TcPlan()
                assert host.deformrt_dcn_tc_plan(ctypes.byref(desc), sms, optin, l2, -1, 0, 0, ctypes.byref(plan)) == 0
                # the plan's shape fits that architecture: the kernel's static and the plan's dynamic bytes
                static = max((r.static_shared_bytes for r in tensor_core if r.arch == arch), default=0)
                assert static + plan.sharedBytes <= SHARED_OPTIN_BYTES[arch], (name, batch, arch, plan.shape)
                if batch == 1:
                    print(f"{name} batch 1 on sm_{arch}: shape {plan.shape}, {plan.sharedBytes} B dynamic shared memory")
            for shape in range(3):
                dynamic = host.deformrt_dcn_tc_shared_bytes(ctypes.byref(desc), shape)
                # the two wide shapes need the opt-in at 3x3 (the opt-in path is exercised), the 64 x 64 one not
                assert (dynamic > 48 * 1024) == (shape != 2)
                for r in tensor_core:  # the planner never picks a shape above an architecture's limit
                    if r.static_shared_bytes + dynamic > SHARED_OPTIN_BYTES[r.arch]:
                        sms, optin, l2 = PLAN_GPUS[r.arch]
                        plan = TcPlan()
                        host.deformrt_dcn_tc_plan(ctypes.byref(desc), sms, optin, l2, shape, 0, 0, ctypes.byref(plan))
                        assert plan.shape == -1 or plan.shape != shape
    # Every other kernel uses static shared memory only, within the 48 KB of a plain launch.
    assert all(r.static_shared_bytes <= 48 * 1024 for r in rows)


def test_tensor_core_kernel_sass_contains_hmma(resources):
    rows, hmma, _ = resources
    if hmma is None:
        pytest.skip("cuobjdump / nvdisasm not found (CUDA toolkit, or the nvidia-cuda-cuobjdump and "
                    "nvidia-cuda-nvdisasm wheels of the test extra)")
    for r in rows:
        count = hmma.get((r.arch, r.kernel), 0)
        if r.kernel.startswith((TENSOR_CORE_KERNEL, WGMMA_KERNEL)):
            assert count > 0, f"no HMMA / HGMMA in {r.kernel} for sm_{r.arch}"
        else:
            assert count == 0, f"{r.kernel} for sm_{r.arch} was not expected to use tensor cores"


# Main-loop SASS instructions per HMMA of the 16-byte vector path (the one every layer whose channels are
# multiples of 8 runs). The 128 x 256 shape (more than 128 output channels: res4, res5) meets the issue's
# bound of 5. The 256 x 128 shape (res3's 128 channels) cannot: its fp32 blend alone, a conversion and an
# FMA per corner per channel, is 4 instructions per HMMA at 128 output channels (twice the 256-channel
# shape's share); the bound here holds what it reaches. The 64 x 64 shape (at most 64 output channels) has
# 16 HMMAs per step against the same gather and is not a performance shape.
PER_HMMA_BOUND = {"deformConvTensorCore<128,256,2,4>": 5.0, "deformConvTensorCore<256,128,4,2>": 8.1,
                  "deformConvTensorCore<64,64,2,4>": 18.0}


def test_main_loop_is_pipelined_with_few_instructions_per_hmma(resources):
    _, hmma, out = resources
    if hmma is None:
        pytest.skip("cuobjdump / nvdisasm not found (CUDA toolkit, or the nvidia-cuda-cuobjdump and "
                    "nvidia-cuda-nvdisasm wheels of the test extra)")
    stats = sass_loop.stats_of(out / "deformConvTensorCore.cu.o")
    print("\n" + sass_loop.format_table(stats))
    vector = {(s.arch, s.kernel): s for s in stats if s.path == "vector"}
    assert set(vector) == {(arch, kernel) for arch in CHECK_ARCHS for kernel in PER_HMMA_BOUND}
    for (arch, kernel), s in vector.items():
        # one loop, no loop inside it: the static count is what each step executes
        assert s.inner_loops == [] and s.hmma > 0, (arch, kernel)
        # every corner load of the next step is issued before this step's MMAs and consumed after them
        assert s.global_loads > 0 and s.unhidden_loads == [], (arch, kernel, s.unhidden_loads)
        assert s.opcode_counts.get("LDGSTS", 0) > 0 and s.opcode_counts.get("LDSM", 0) > 0  # cp.async, ldmatrix
        assert s.per_hmma <= PER_HMMA_BOUND[kernel], (arch, kernel, s.per_hmma)


# The wgmma kernel's main loop (sm_90a SASS): one HGMMA.64xNx16 of a warpgroup is N / 8 m16n8k16 MMAs per warp.
# 128 output channels give the same gather half as many MMAs as 256 (as for the mma.sync shapes above).
WGMMA_PER_HMMA_BOUND = {"deformConvWgmma<256>": 5.0, "deformConvWgmma<128>": 9.0}


def _wgmma_main_loop(code: list) -> list:
    """The instructions (NOPs excluded) of the innermost loop holding HGMMAs: the K loop."""
    regions, innermost = sass_loop.innermost_tensor_loops(code, ("HGMMA",))
    assert len(innermost) == 1, innermost
    start, end = innermost[0]
    assert not [r for r in regions if r != (start, end) and start <= r[0] and r[1] <= end], "a loop inside the K loop"
    return [i for i in code if start <= i.address <= end and i.base != "NOP"]


def test_wgmma_main_loop_overlaps_the_next_gather_with_the_wgmmas(resources):
    # Per step each warpgroup issues its wgmmas (async), then the next step's B copy (LDGSTS) and every
    # corner load (LDG), blends them into the other A register buffer, and only then waits for the wgmmas
    # (WARPGROUP.DEPBAR): every LDG of the loop is issued while a committed wgmma group runs, and its result
    # is consumed before the wait, so the gather's memory latency hides behind the tensor cores. A comes from
    # registers: every HGMMA's A operand is a register (not a shared-memory descriptor), and the loop stores
    # nothing to shared memory itself (no A tile; B arrives by LDGSTS).
    rows, hmma, out = resources
    if hmma is None:
        pytest.skip("cuobjdump / nvdisasm not found (CUDA toolkit, or the nvidia-cuda-cuobjdump and "
                    "nvidia-cuda-nvdisasm wheels of the test extra)")
    if 90 not in CHECK_ARCHS:
        pytest.skip("sm_90 is not among the checked architectures")
    wgmma_rows = {r.kernel: r for r in rows if r.kernel.startswith(WGMMA_KERNEL)}
    assert set(wgmma_rows) == set(WGMMA_PER_HMMA_BOUND) and all(r.arch == 90 for r in wgmma_rows.values())
    functions = sass_loop.parse_sass(sass_loop.sass_text(out / "deformConvWgmma.cu.o"))
    for (arch, kernel), code in functions.items():
        body = _wgmma_main_loop(code)
        waits = [k for k, i in enumerate(body) if i.opcode.startswith("WARPGROUP.DEPBAR")]
        loads = [k for k, i in enumerate(body) if i.base == "LDG"]
        assert waits and loads and any(i.base == "LDGSTS" for i in body), (kernel, [i.text for i in body][:20])
        hgmmas = [k for k, i in enumerate(body) if i.base == "HGMMA"]
        for k in hgmmas:
            a = re.match(r"R\d+, R(\d+), gdesc\[", body[k].operands)
            assert a, (kernel, body[k].text)
            # the gather writes the other register buffer: nothing writes these A registers until the wait
            a_registers = set(range(int(a.group(1)), int(a.group(1)) + 4))
            after = body[k + 1:] + body[:k]  # walking forward, around the back edge
            until_wait = after[:next(j for j, i in enumerate(after) if i.opcode.startswith("WARPGROUP.DEPBAR"))]
            assert not [i.text for i in until_wait if sass_loop._writes(i) & a_registers], (kernel, body[k].text)
        assert not [i.text for i in body if i.base == "STS"], kernel
        for k in loads:
            before = body[k::-1] + body[:k:-1]  # walking back from the load, around the back edge
            in_flight = next(i for i in before if i.base == "HGMMA" or i.opcode.startswith("WARPGROUP.DEPBAR"))
            assert in_flight.base == "HGMMA", (kernel, body[k].text)
        equivalents = sum(int(i.opcode.split(".")[1].split("x")[1]) // 8 for i in body if i.base == "HGMMA")
        per = len(body) / equivalents
        print(f"sm_90a {kernel}: main loop {len(body)} instructions, {equivalents} m16n8k16-equivalents per warp, "
              f"{per:.2f} per HMMA-equivalent, {len(loads)} LDG, registers {wgmma_rows[kernel].registers}")
        assert per <= WGMMA_PER_HMMA_BOUND[kernel], (kernel, per)


def test_wgmma_plans_fit_hoppers_shared_memory(resources, host):
    rows, _, _ = resources
    static = max((r.static_shared_bytes for r in rows if r.kernel.startswith(WGMMA_KERNEL)), default=0)
    for name, (c, h, w) in STAGES.items():
        for batch in (1, 8):
            plan = TcPlan()
            desc = _stage_desc(c, h, w, batch)
            sms, optin, l2 = PLAN_GPUS[90]
            rc = host.deformrt_dcn_tc_plan_wgmma(ctypes.byref(desc), sms, optin, l2, -1, 0, 0, ctypes.byref(plan))
            assert rc == 0
            assert static + plan.sharedBytes <= SHARED_OPTIN_BYTES[90], (name, batch, plan.shape)
