"""The PTX executor's warpgroup MMA (sm_90a): wgmma.mma_async m64nNk16 (N = 24, 64, 128, 256) with A from a
shared-memory descriptor (SS) or from registers (RS), every swizzle mode of the K-major and (N = 64) the
MN-major descriptor layouts, scale-d both ways, a K loop of four k16 steps with commit_group / wait_group,
checked against a float64 numpy GEMM of fresh random inputs; each wgmma hazard the executor reports (no
fence.proxy.async after st.shared, an accumulator read before wait_group, B overwritten while a wgmma reads
it, a descriptor outside shared memory or off its swizzle pattern, no wgmma.fence) fires on a deliberately
wrong launch and not on the correct one; and the counters. The kernel is tests/ptx_fixtures/wgmma_gemm.cu,
compiled here by nvcc for sm_90a to PTX (cached in plugins/build/ptxexec-fixtures) and accepted by ptxas
-arch=sm_90a. Needs nvcc (no GPU). The fixture's layouts and the executor's descriptor decoding are both
written from the PTX ISA's layout sections: they agree with each other, which a GPU run would confirm."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from ptxexec import CLASSES, GlobalMemory, Launcher, parse_module  # noqa: E402
from ptxexec.capture import build_ptx  # noqa: E402

FIXTURE = REPO / "tests" / "ptx_fixtures" / "wgmma_gemm.cu"
CACHE = REPO / "plugins" / "build" / "ptxexec-fixtures"
K = 64
SWIZZLE_MODES = {"none": 0, "128B": 1, "64B": 2, "32B": 3}

# wgmmaGemm's `fault` values (the fixture's enum Fault)
NONE, NO_PROXY_FENCE, READ_BEFORE_WAIT, OVERWRITE_B, NO_WGMMA_FENCE = range(5)

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found (the fixture is compiled here)")


@pytest.fixture(scope="module")
def ptx() -> str:
    return build_ptx(FIXTURE.parent, FIXTURE.parent, (FIXTURE.name,), "sm_90a", CACHE)[FIXTURE.name]


@pytest.fixture(scope="module")
def launcher_parts(ptx):
    module = parse_module(ptx, FIXTURE.name)
    names = {}
    for name in module.kernels:  # wgmmaGemm<N, RegisterA, MnMajor>
        n, registers_a, mn_major = re.search(r"ILi(\d+)ELb([01])ELb([01])E", name).groups()
        names[(int(n), registers_a == "1", mn_major == "1")] = name
    return module, names, {}


def gemm(launcher_parts, n: int, registers_a: bool, mode: int, accumulate: bool, seed: int, fault: int = NONE,
         desc_shift: int = 0, schedule: str = "lockstep", mn_major: bool = False):
    """Run the fixture once: (a, bt, c, d, launch result)."""
    module, names, programs = launcher_parts
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((64, K)).astype(np.float16)
    bt = rng.standard_normal((n, K)).astype(np.float16)   # B^T: n rows of K (K-major)
    c = rng.standard_normal((64, n)).astype(np.float32)
    mem = GlobalMemory()
    addr = [mem.alloc("a", a.nbytes, a), mem.alloc("bt", bt.nbytes, bt), mem.alloc("c", c.nbytes, c),
            mem.alloc("d", 64 * n * 4, np.full(64 * n, np.nan, np.float32))]
    params = [struct.pack("<Q", v) for v in addr] + [struct.pack("<i", v) for v in (mode, int(accumulate), fault)]
    params.append(struct.pack("<Q", desc_shift))
    shared = (64 + n) * K * 2
    kernel = names[(n, registers_a, mn_major)]
    result = Launcher(module, mem, programs).run(kernel, (1, 1, 1), (128, 1, 1), shared, params, schedule=schedule)
    d = mem.view(addr[3], np.float32).reshape(64, n).copy()
    return a, bt, c, d, result


def expected(a, bt, c, accumulate: bool) -> np.ndarray:
    out = a.astype(np.float64) @ bt.astype(np.float64).T
    return out + c if accumulate else out


def assert_close(d, ref):
    # fp32 accumulation of 64 products of fp16 values (|a b| <~ 10): a few fp32 ulps of the partial sums
    np.testing.assert_allclose(d, ref, rtol=0, atol=1e-4 * (1 + np.abs(ref).max()))


def clean(result):
    assert list(result.findings) == [], [str(f) for f in result.findings]


CASES = [  # (N, A in registers, swizzle, accumulate)
    (64, False, "none", True), (64, False, "128B", False), (64, False, "64B", True), (64, False, "32B", False),
    (128, False, "none", False), (128, False, "128B", True), (128, False, "64B", False), (128, False, "32B", True),
    (256, False, "128B", True), (256, False, "none", False), (24, False, "64B", True), (24, False, "none", False),
    (64, True, "32B", True), (128, True, "64B", False), (256, True, "128B", False), (256, True, "none", True),
]
# imm-trans 1: M-major A and N-major B (N = 64)
MN_CASES = [(False, "none", True), (False, "128B", False), (False, "64B", True), (False, "32B", False),
            (True, "none", False), (True, "128B", True), (True, "64B", False), (True, "32B", True)]


def check_gemm(launcher_parts, n, registers_a, swizzle, accumulate, mn_major):
    seed = n + 7 * registers_a + 31 * SWIZZLE_MODES[swizzle] + 101 * accumulate + 1009 * mn_major
    mode = SWIZZLE_MODES[swizzle]
    a, bt, c, d, result = gemm(launcher_parts, n, registers_a, mode, accumulate, seed, mn_major=mn_major)
    clean(result)
    assert_close(d, expected(a, bt, c, accumulate))
    # B's descriptor claiming the next swizzle mode (bits 62-63 plus one) reads another layout: another product
    if n == 64:
        wrong = gemm(launcher_parts, n, registers_a, mode, accumulate, seed, desc_shift=1 << 62, mn_major=mn_major)[3]
        assert not np.allclose(wrong, expected(a, bt, c, accumulate), atol=1e-2)


@pytest.mark.parametrize("n, registers_a, swizzle, accumulate", CASES)
def test_wgmma_gemm_matches_float64(launcher_parts, n, registers_a, swizzle, accumulate):
    check_gemm(launcher_parts, n, registers_a, swizzle, accumulate, False)


@pytest.mark.parametrize("registers_a, swizzle, accumulate", MN_CASES)
def test_mn_major_operands_match_float64(launcher_parts, registers_a, swizzle, accumulate):
    check_gemm(launcher_parts, 64, registers_a, swizzle, accumulate, True)


def test_counters(launcher_parts):
    n = 128
    for registers_a in (False, True):
        *_, result = gemm(launcher_parts, n, registers_a, 1, True, 5)
        counters = result.counters()
        memory = result.memory
        per_class = dict(zip(CLASSES, result.per_cta_instructions.sum(axis=1)))
        # per warp: 4 mma_async + 4 commit + 3 wait_group 1 + 1 wait_group 0 + 1 fence, 4 warps
        assert per_class["wgmma"] == 4 * 13 and counters["wgmma_per_cta"] == 52
        steps = K // 16
        assert memory["wgmma_flop"] == steps * 2 * 64 * n * 16        # per warpgroup instruction, summed over warps
        assert memory["wgmma_shared_b_bytes"] == steps * n * 16 * 2
        assert memory["wgmma_shared_a_bytes"] == (0 if registers_a else steps * 64 * 16 * 2)
        assert memory["wgmma_shared_wavefronts"] == pytest.approx(
            (memory["wgmma_shared_a_bytes"] + memory["wgmma_shared_b_bytes"]) / 128)
        assert per_class["mma"] == 0


def kinds(result) -> set:
    return {(f.category, f.kind) for f in result.findings}


@pytest.mark.parametrize("registers_a", [False, True])
def test_missing_proxy_fence_is_a_finding(launcher_parts, registers_a):
    *_, result = gemm(launcher_parts, 64, registers_a, 1, True, 11, fault=NO_PROXY_FENCE)
    assert kinds(result) == {("races", "wgmma reads generic-proxy writes without fence.proxy.async")}
    f = next(iter(result.findings))
    assert f.text.startswith("wgmma.mma_async") and "no fence.proxy.async" in f.example


def test_reading_the_accumulator_before_wait_group_is_a_finding(launcher_parts):
    *_, result = gemm(launcher_parts, 64, False, 2, True, 12, fault=READ_BEFORE_WAIT)
    assert kinds(result) == {("races", "wgmma register accessed before its wait_group")}
    assert next(iter(result.findings)).count == 128


def test_overwriting_b_while_a_wgmma_reads_it_is_a_finding(launcher_parts):
    *_, result = gemm(launcher_parts, 128, False, 0, False, 13, fault=OVERWRITE_B)
    # (other warps' wgmmas read the same bytes in the same barrier interval: racecheck's write-after-read too)
    assert kinds(result) == {("races", "shared write to bytes an in-flight wgmma reads"), ("races", "write-after-read")}
    f = next(f for f in result.findings if f.kind == "shared write to bytes an in-flight wgmma reads")
    assert f.count == 1 and "thread 0 " in f.example


def test_missing_wgmma_fence_is_a_finding(launcher_parts):
    *_, result = gemm(launcher_parts, 64, True, 3, True, 14, fault=NO_WGMMA_FENCE)
    assert kinds(result) == {("races", "wgmma without wgmma.fence")}


def test_bad_descriptors_are_findings(launcher_parts):
    # B's start moved past the end of shared memory (in 16-byte units)
    *_, result = gemm(launcher_parts, 64, False, 0, True, 15, desc_shift=(64 + 64) * K * 2 // 16)
    assert kinds(result) == {("out_of_bounds", "wgmma B operand")}
    # B's start moved by one 128-byte row: no longer in the first row of its 128B swizzle pattern
    *_, result = gemm(launcher_parts, 64, False, 1, True, 16, desc_shift=128 // 16)
    assert ("misaligned", "wgmma B descriptor") in kinds(result)


def test_warps_one_at_a_time_give_the_same_result(launcher_parts):
    a, bt, c, d, result = gemm(launcher_parts, 128, False, 2, True, 17, schedule="warps-reverse")
    clean(result)
    assert_close(d, expected(a, bt, c, True))


def test_ptxas_accepts_the_fixture_for_sm_90a(ptx, tmp_path):
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas not found")
    source = tmp_path / "wgmma_gemm.ptx"
    source.write_text(ptx)
    done = subprocess.run([ptxas, "-arch=sm_90a", str(source), "-o", str(tmp_path / "wgmma_gemm.cubin")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ".target sm_90a" in ptx and ptx.count("wgmma.mma_async") == 9 * K // 16


# -------------------------------------------------------------------------------------------------
# The instructions an sm_90a kernel emits around wgmma, on hand-written PTX (no nvcc needed)

SM90A_HEADER = ".version 8.0\n.target sm_90a\n.address_size 64\n"  # of the hand-written kernels

ELECT = SM90A_HEADER + """
.visible .entry elect_kernel(.param .u64 pout)
{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    setmaxnreg.inc.sync.aligned.u32 232;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r7, %tid.x;
    elect.sync %r2|%p2, 0xfffffff0;
    selp.u32 %r3, 1, 0, %p2;
    shl.b32 %r4, %r2, 8;
    or.b32 %r5, %r4, %r3;
    fence.proxy.async.shared::cta;
    fence.proxy.async;
    fence.acq_rel.cta;
    mul.wide.u32 %rd2, %r7, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r5;
    ret;
}
"""


def test_elect_setmaxnreg_and_proxy_fences():
    module = parse_module(ELECT.replace("elect.sync %r2|%p2, 0xfffffff0;", "elect.sync %r2|%p2, 0xffffffff;"), "e")
    mem = GlobalMemory()
    out = mem.alloc("out", 64 * 4, np.zeros(64, np.uint32))
    result = Launcher(module, mem).run("elect_kernel", (1, 1, 1), (64, 1, 1), 0, [struct.pack("<Q", out)])
    assert list(result.findings) == []
    got = mem.view(out, np.uint32)
    # every lane learns its warp's leader (lane 0 of each warp), only the leader's predicate is true
    assert list(got >> 8) == [0] * 64 and list(got & 1) == [1] + [0] * 31 + [1] + [0] * 31
    # a member mask without lanes 0-3: lanes 0-3 execute it outside their mask (a finding), lane 4 leads
    module = parse_module(ELECT, "e")
    result = Launcher(module, mem).run("elect_kernel", (1, 1, 1), (32, 1, 1), 0, [struct.pack("<Q", out)])
    assert {(f.category, f.kind) for f in result.findings} == {("barrier_divergence",
                                                              "elect.sync outside its member mask")}
    assert list(mem.view(out, np.uint32)[:32] >> 8) == [4] * 32


def _edited_run(ptx: str, kernel: str, edit, a, bt, c, mode: int):
    """Run ``kernel`` of ``ptx`` with ``edit`` applied to its wgmma.mma_async lines (16-bit inputs as raw bits)."""
    text = "\n".join(edit(line) if "wgmma.mma_async" in line else line for line in ptx.splitlines())
    module = parse_module(text, "edited.ptx")
    n = bt.shape[0]
    mem = GlobalMemory()
    addr = [mem.alloc("a", a.nbytes, a), mem.alloc("bt", bt.nbytes, bt), mem.alloc("c", c.nbytes, c),
            mem.alloc("d", 64 * n * 4, np.full(64 * n, np.nan, np.float32))]
    params = [struct.pack("<Q", v) for v in addr] + [struct.pack("<i", v) for v in (mode, 1, NONE)]
    params.append(struct.pack("<Q", 0))
    result = Launcher(module, mem).run(kernel, (1, 1, 1), (128, 1, 1), (64 + n) * K * 2, params)
    return mem.view(addr[3], np.float32).reshape(64, n).copy(), result


def test_imm_scale_minus_one_and_bf16_operands(ptx, launcher_parts):
    _, names, _ = launcher_parts
    rng = np.random.default_rng(23)
    a = rng.standard_normal((64, K)).astype(np.float16)
    bt = rng.standard_normal((64, K)).astype(np.float16)
    c = rng.standard_normal((64, 64)).astype(np.float32)
    # imm-scale-a -1 (SS: "p, 1, 1, 0, 0" -> "p, -1, 1, 0, 0"): D = -A B + C
    d, result = _edited_run(ptx, names[(64, False, False)], lambda t: t.replace("p, 1, 1, 0, 0;", "p, -1, 1, 0, 0;"),
                            a, bt, c, 1)
    clean(result)
    assert_close(d, c - a.astype(np.float64) @ bt.astype(np.float64).T)
    # .bf16 operands: the same 16-bit words read as bfloat16 (the upper half of a float32)
    a16 = (rng.standard_normal((64, K)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    b16 = (rng.standard_normal((64, K)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    d, result = _edited_run(ptx, names[(64, True, False)], lambda t: t.replace(".f32.f16.f16", ".f32.bf16.bf16"),
                            a16, b16, c, 3)
    clean(result)

    def bf16(bits):
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    assert_close(d, bf16(a16) @ bf16(b16).T + c)


# warp 1 of the warpgroup branches around the wgmma: zero-filled operands (no swizzle, A and B at shared 0,
# leading byte offset 128, stride byte offset 256), m64n8k16, D = A B = 0
PART = SM90A_HEADER + """
.visible .entry part_kernel(.param .u64 pout)
{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    .shared .align 1024 .b8 smem[4096];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 5;
    mov.u32 %r3, smem;
    add.u32 %r4, %r3, %r2;
    mov.b32 %r5, 0;
    st.shared.v4.u32 [%r4], {%r5, %r5, %r5, %r5};
    st.shared.v4.u32 [%r4+16], {%r5, %r5, %r5, %r5};
    fence.proxy.async.shared::cta;
    bar.sync 0;
    mov.f32 %f0, 0f3F800000;
    mov.f32 %f1, 0f3F800000;
    mov.f32 %f2, 0f3F800000;
    mov.f32 %f3, 0f3F800000;
    setp.ne.u32 %p2, %r1, %r1;
    shr.u32 %r6, %r1, 5;
    setp.eq.u32 %p1, %r6, SKIPPED_WARP;
    @%p1 bra SKIP;
    wgmma.fence.sync.aligned;
    mov.b64 %rd1, 0x0000001000080000;
    wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%f0, %f1, %f2, %f3}, %rd1, %rd1, %p2, 1, 1, 0, 0;
    wgmma.commit_group.sync.aligned;
    wgmma.wait_group.sync.aligned 0;
SKIP:
    ld.param.u64 %rd2, [pout];
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd2, %rd2, %rd3;
    st.global.f32 [%rd2], %f0;
    ret;
}
"""


@pytest.mark.parametrize("schedule", ["lockstep", "warps-forward"])
def test_wgmma_by_part_of_its_warpgroup_is_a_finding(schedule):
    mem = GlobalMemory()
    out = mem.alloc("out", 128 * 4, np.zeros(128, np.float32))
    for skipped, expect in ((1, {("barrier_divergence", "wgmma by part of its warpgroup")}), (7, set())):
        module = parse_module(PART.replace("SKIPPED_WARP", str(skipped)), "part")
        result = Launcher(module, mem).run("part_kernel", (1, 1, 1), (128, 1, 1), 0, [struct.pack("<Q", out)],
                                           schedule=schedule)
        assert {(f.category, f.kind) for f in result.findings} == expect, [str(f) for f in result.findings]
        got = mem.view(out, np.float32)
        # scale-d false: D = A B = 0 in the warps that ran it; the skipping warp keeps its 1.0
        assert list(got[32:64] == 1.0) == [skipped == 1] * 32 and (got[:32] == 0).all() and (got[64:] == 0).all()
    # a CTA of 96 threads has no whole warpgroup
    module = parse_module(PART.replace("SKIPPED_WARP", "7"), "part")
    result = Launcher(module, mem).run("part_kernel", (1, 1, 1), (96, 1, 1), 0, [struct.pack("<Q", out)])
    assert ("barrier_divergence", "wgmma by part of its warpgroup") in {(f.category, f.kind) for f in result.findings}
