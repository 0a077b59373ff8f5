"""The PTX executor (scripts/ptxexec) on small hand-written PTX kernels, each checked against a reference
written here from the PTX ISA or the CUDA programming guide (not from the executor's code):
mma.sync m16n8k16 against numpy's matmul, ldmatrix (x1/x2/x4, .trans), cp.async (groups, zero fill),
shfl.sync (every mode, sub-warp widths), divergence and reconvergence, scalar integer/float semantics
(truncating division, saturating conversions, a correctly rounded fma where float64 rounding would be
wrong), and every finding category: out of bounds, misaligned, race, uninitialised shared read,
barrier divergence, order-dependent results. Needs only numpy (no nvcc, no GPU)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from ptxexec import GlobalMemory, Launcher, PtxError, parse_module  # noqa: E402

HEADER = ".version 8.0\n.target sm_80\n.address_size 64\n"


def run(ptx: str, kernel: str, buffers: dict, grid=(1, 1, 1), block=(32, 1, 1), schedule="lockstep", shared=0):
    """Run ``kernel`` with one u64 pointer parameter per buffer (in order); returns (memory views, result)."""
    module = parse_module(HEADER + ptx, "test.ptx")
    mem = GlobalMemory()
    addrs = {name: mem.alloc(name, data.nbytes, data) for name, data in buffers.items()}
    params = [struct.pack("<Q", a) for a in addrs.values()]
    result = Launcher(module, mem).run(kernel, grid, block, shared, params, schedule=schedule)
    views = {name: mem.view(a, buffers[name].dtype) for name, a in addrs.items()}
    return views, result


def line_of(ptx: str, snippet: str) -> int:
    """The PTX line (1-based, as the executor counts them) of the first line containing ``snippet``."""
    return next(i for i, text in enumerate((HEADER + ptx).splitlines(), 1) if snippet in text)


def no_findings(result):
    assert list(result.findings) == [], [str(f) for f in result.findings]


# -------------------------------------------------------------------------------------------------
# mma.sync.aligned.m16n8k16: fragment addresses computed in PTX from %laneid per the ISA's layout tables

MMA = """
.visible .entry mma_f32(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd)
{
    .reg .b16 %h<4>;
    .reg .b32 %r<16>;
    .reg .f32 %f<8>;
    .reg .b64 %rd<12>;
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pc];
    ld.param.u64 %rd4, [pd];
    mov.u32 %r1, %laneid;
    shr.u32 %r2, %r1, 2;              // groupID
    and.b32 %r3, %r1, 3;              // threadID_in_group
    shl.b32 %r4, %r3, 1;              // 2 * threadID_in_group
    // A 16x16 row-major: a0a1 = (g, 2t..2t+1), a2a3 = (g+8, ..), a4a5 = (g, 2t+8..), a6a7 = (g+8, 2t+8..)
    mad.lo.s32 %r5, %r2, 16, %r4;
    mul.wide.s32 %rd5, %r5, 2;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.u32 %r10, [%rd6];
    ld.global.u32 %r11, [%rd6+256];
    ld.global.u32 %r12, [%rd6+16];
    ld.global.u32 %r13, [%rd6+272];
    // B 16x8 (k rows, n columns) row-major: b0 = (2t, g), b1 = (2t+1, g), b2 = (2t+8, g), b3 = (2t+9, g)
    mad.lo.s32 %r6, %r4, 8, %r2;
    mul.wide.s32 %rd7, %r6, 2;
    add.s64 %rd8, %rd2, %rd7;
    ld.global.u16 %h0, [%rd8];
    ld.global.u16 %h1, [%rd8+16];
    ld.global.u16 %h2, [%rd8+128];
    ld.global.u16 %h3, [%rd8+144];
    mov.b32 %r14, {%h0, %h1};
    mov.b32 %r15, {%h2, %h3};
    // C, D 16x8 f32 row-major: c0c1 = (g, 2t..2t+1), c2c3 = (g+8, 2t..2t+1)
    mad.lo.s32 %r7, %r2, 8, %r4;
    mul.wide.s32 %rd9, %r7, 4;
    add.s64 %rd10, %rd3, %rd9;
    ld.global.v2.f32 {%f0, %f1}, [%rd10];
    ld.global.v2.f32 {%f2, %f3}, [%rd10+256];
    mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f4, %f5, %f6, %f7}, {%r10, %r11, %r12, %r13},
        {%r14, %r15}, {%f0, %f1, %f2, %f3};
    add.s64 %rd11, %rd4, %rd9;
    st.global.v2.f32 [%rd11], {%f4, %f5};
    st.global.v2.f32 [%rd11+256], {%f6, %f7};
    ret;
}
"""


def test_mma_m16n8k16_fragments_match_numpy_matmul():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 16)).astype(np.float16)
    b = rng.standard_normal((16, 8)).astype(np.float16)
    c = rng.standard_normal((16, 8)).astype(np.float32)
    views, result = run(MMA, "mma_f32", {"a": a, "b": b, "c": c, "d": np.full((16, 8), np.nan, np.float32)})
    no_findings(result)
    expected = a.astype(np.float64) @ b.astype(np.float64) + c
    np.testing.assert_allclose(views["d"].reshape(16, 8), expected, rtol=1e-6, atol=1e-6)
    assert result.counters()["mma_per_cta"] == 1


def test_mma_in_divergent_code_is_a_barrier_divergence_finding():
    # only lanes 0..15 reach the mma: the ISA requires the whole warp (.aligned)
    ptx = MMA.replace("mma_f32", "mma_partial").replace(
        "    mma.sync", "    setp.ge.u32 %p1, %r1, 16;\n    @%p1 bra DONE;\n    mma.sync").replace(
        "    ret;", "DONE:\n    ret;").replace(".reg .b16 %h<4>;", ".reg .b16 %h<4>;\n    .reg .pred %p<2>;")
    rng = np.random.default_rng(2)
    bufs = {"a": rng.standard_normal((16, 16)).astype(np.float16), "b": rng.standard_normal((16, 8)).astype(np.float16),
            "c": np.zeros((16, 8), np.float32), "d": np.zeros((16, 8), np.float32)}
    _, result = run(ptx, "mma_partial", bufs)
    counts = result.findings.counts()
    assert counts["barrier_divergence"] == 1
    assert "16 of 32 lanes" in next(iter(result.findings)).example


# -------------------------------------------------------------------------------------------------
# ldmatrix: 4 matrices of 8x8 b16 staged in shared memory with a padded row stride of 48 bytes

def ldmatrix_kernel(num: int, trans: bool) -> str:
    regs = ", ".join(f"%r{10 + i}" for i in range(num))
    return f"""
.visible .entry ldm(.param .u64 psrc, .param .u64 pout)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<20>;
    .reg .b64 %rd<8>;
    .shared .align 16 .b8 tiles[1536];
    ld.param.u64 %rd1, [psrc];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %laneid;
    // lane l copies row l % 8 of matrix l / 8 (16 bytes) into shared row l (stride 48 bytes)
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.v4.u32 {{%r2, %r3, %r4, %r5}}, [%rd4];
    mov.u32 %r6, tiles;
    mad.lo.s32 %r7, %r1, 48, %r6;
    st.shared.v4.u32 [%r7], {{%r2, %r3, %r4, %r5}};
    bar.sync 0;
    // lanes past the ones ldmatrix reads give a wild address: it must be ignored
    setp.lt.u32 %p1, %r1, {8 * num};
    selp.b32 %r8, %r7, 1048560, %p1;
    ldmatrix.sync.aligned.m8n8.x{num}{'.trans' if trans else ''}.shared.b16 {{{regs}}}, [%r8];
    mul.wide.u32 %rd5, %r1, {4 * num};
    add.s64 %rd6, %rd2, %rd5;
    {''.join(f'st.global.u32 [%rd6+{4 * i}], %r{10 + i};' for i in range(num))}
    ret;
}}
"""


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_gives_each_lane_its_row_pair(num, trans):
    rng = np.random.default_rng(num + 10 * trans)
    mats = rng.integers(0, 2**16, size=(4, 8, 8), dtype=np.uint16)
    views, result = run(ldmatrix_kernel(num, trans), "ldm",
                        {"src": mats, "out": np.zeros((32, num), np.uint32)})
    no_findings(result)
    out = views["out"].reshape(32, num)
    for lane in range(32):
        for m in range(num):
            # CUDA/PTX: thread l receives row l/4, elements 2*(l%4) and 2*(l%4)+1 (low half first);
            # .trans delivers the transposed matrix
            mat = mats[m].T if trans else mats[m]
            lo, hi = mat[lane // 4, 2 * (lane % 4)], mat[lane // 4, 2 * (lane % 4) + 1]
            assert out[lane, m] == int(lo) | int(hi) << 16, (lane, m)
    assert result.counters()["memory_per_cta"]["shared_load_wavefronts"] == num


# -------------------------------------------------------------------------------------------------
# cp.async: groups, wait_group, zero fill, a skipped source

CP_ASYNC = """
.visible .entry cpa(.param .u64 psrc, .param .u64 pout)
{
    .reg .b32 %r<24>;
    .reg .b64 %rd<12>;
    .shared .align 16 .b8 sa[512];
    .shared .align 16 .b8 sb[256];
    .shared .align 16 .b8 sc[128];
    ld.param.u64 %rd1, [psrc];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    mov.u32 %r2, sa;
    mad.lo.s32 %r3, %r1, 16, %r2;
    cp.async.cg.shared.global [%r3], [%rd4], 16;
    cp.async.commit_group;
    // group 2: 8-byte copies of which only 4 bytes are read (the rest zero-filled)
    mul.wide.u32 %rd5, %r1, 8;
    add.s64 %rd6, %rd1, %rd5;
    add.s64 %rd6, %rd6, 512;
    mov.u32 %r4, sb;
    mad.lo.s32 %r5, %r1, 8, %r4;
    cp.async.ca.shared.global [%r5], [%rd6], 8, 4;
    // a source size of 0 reads nothing: the (null) source pointer is never touched
    mov.u32 %r6, sc;
    mad.lo.s32 %r7, %r1, 4, %r6;
    mov.u64 %rd7, 0;
    cp.async.ca.shared.global [%r7], [%rd7], 4, 0;
    cp.async.commit_group;
    cp.async.wait_group 1;
    // this thread's own 16 bytes of group 1 have landed
    ld.shared.v4.u32 {%r8, %r9, %r10, %r11}, [%r3];
    mul.wide.u32 %rd8, %r1, 28;
    add.s64 %rd9, %rd2, %rd8;
    st.global.u32 [%rd9], %r8;
    st.global.u32 [%rd9+4], %r9;
    st.global.u32 [%rd9+8], %r10;
    st.global.u32 [%rd9+12], %r11;
    cp.async.wait_all;
    bar.sync 0;
    // the neighbour's group-2 data, after the barrier
    add.s32 %r12, %r1, 1;
    and.b32 %r12, %r12, 31;
    mad.lo.s32 %r13, %r12, 8, %r4;
    ld.shared.v2.u32 {%r14, %r15}, [%r13];
    mad.lo.s32 %r16, %r12, 4, %r6;
    ld.shared.u32 %r17, [%r16];
    st.global.u32 [%rd9+16], %r14;
    st.global.u32 [%rd9+20], %r15;
    st.global.u32 [%rd9+24], %r17;
    ret;
}
"""


def test_cp_async_groups_zero_fill_and_skipped_source():
    rng = np.random.default_rng(3)
    src = rng.integers(1, 2**32, size=128 + 64, dtype=np.uint32)
    views, result = run(CP_ASYNC, "cpa", {"src": src, "out": np.full((32, 7), 0xDEAD, np.uint32)})
    no_findings(result)
    out = views["out"].reshape(32, 7)
    for lane in range(32):
        np.testing.assert_array_equal(out[lane, :4], src[4 * lane:4 * lane + 4])
        nb = (lane + 1) % 32
        assert out[lane, 4] == src[128 + 2 * nb]   # the 4 bytes read
        assert out[lane, 5] == 0                    # zero fill of the other 4
        assert out[lane, 6] == 0                    # src-size 0: all zero
    memory = result.counters()["memory_per_cta"]
    assert memory["cp_async_bytes"] == 32 * (16 + 4)
    # global sectors read, per allocation: 512 contiguous bytes (16 sectors), then 4 bytes at an 8-byte stride
    # over 256 bytes (8 sectors); a source size of 0 reads none. The stores to "out" are not loads.
    assert result.load_sectors_by_buffer == {"src": 16 + 8}
    # the copies' shared-memory stores, conflict-free: 512 bytes (4 wavefronts of 128), 256 (2) and 128 (1)
    assert memory["cp_async_store_wavefronts"] == 4 + 2 + 1


def test_reading_cp_async_data_before_its_wait_is_uninitialised():
    early = CP_ASYNC.replace("cpa(", "cpa_early(").replace("    cp.async.wait_group 1;\n", "")
    rng = np.random.default_rng(4)
    _, result = run(early, "cpa_early", {"src": rng.integers(1, 2**32, size=192, dtype=np.uint32),
                                         "out": np.zeros((32, 7), np.uint32)})
    assert result.findings.counts()["uninitialized_reads"] == 32


# -------------------------------------------------------------------------------------------------
# shfl.sync against the CUDA programming guide's definitions of __shfl_{up,down,xor,idx}_sync(width)

SHFL = """
.visible .entry shfl(.param .u64 pout)
{
    .reg .pred %p<5>;
    .reg .b32 %r<20>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    mad.lo.s32 %r2, %r1, 3, 100;
    shfl.sync.up.b32 %r3|%p1, %r2, 3, 6144, -1;       // width 8: c = (32 - 8) << 8
    shfl.sync.down.b32 %r4|%p2, %r2, 2, 6175, -1;     // width 8: c = (32 - 8) << 8 | 31
    shfl.sync.bfly.b32 %r5|%p3, %r2, 5, 31, -1;       // width 32
    shfl.sync.idx.b32 %r6|%p4, %r2, 13, 6175, -1;     // width 8, source lane 13
    selp.b32 %r7, 1, 0, %p1;
    selp.b32 %r8, 1, 0, %p2;
    selp.b32 %r9, 1, 0, %p3;
    selp.b32 %r10, 1, 0, %p4;
    mul.wide.u32 %rd2, %r1, 32;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r3, %r4, %r5, %r6};
    st.global.v4.u32 [%rd3+16], {%r7, %r8, %r9, %r10};
    ret;
}
"""


def test_shfl_sync_modes_and_widths():
    views, result = run(SHFL, "shfl", {"out": np.zeros((32, 8), np.uint32)})
    no_findings(result)
    out = views["out"].reshape(32, 8)
    val = [100 + 3 * lane for lane in range(32)]
    for lane in range(32):
        up_ok = lane % 8 >= 3
        down_ok = lane % 8 + 2 < 8
        assert out[lane, 0] == val[lane - 3 if up_ok else lane] and out[lane, 4] == up_ok
        assert out[lane, 1] == val[lane + 2 if down_ok else lane] and out[lane, 5] == down_ok
        assert out[lane, 2] == val[lane ^ 5] and out[lane, 6] == 1
        assert out[lane, 3] == val[lane // 8 * 8 + 13 % 8] and out[lane, 7] == 1


# -------------------------------------------------------------------------------------------------
# divergence, loops with per-thread trip counts, reconvergence before a warp collective and a barrier

DIVERGE = """
.visible .entry diverge(.param .u64 pout)
{
    .reg .pred %p<6>;
    .reg .b32 %r<24>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b8 buf[256];
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    and.b32 %r2, %r1, 1;
    setp.eq.s32 %p1, %r2, 0;
    @%p1 bra EVEN;
    shl.b32 %r3, %r1, 1;              // odd: 2 * tid
    bra.uni JOIN;
EVEN:
    and.b32 %r4, %r1, 2;
    setp.ne.s32 %p2, %r4, 0;
    @!%p2 bra SEVEN;
    add.s32 %r3, %r1, 100;            // tid % 4 == 2: tid + 100
    bra.uni JOIN;
SEVEN:
    mov.u32 %r3, 7;                   // tid % 4 == 0: 7
JOIN:
    rem.u32 %r5, %r1, 5;              // loop tid % 5 times: acc += i + 1
    mov.u32 %r6, 0;
LOOP:
    setp.ge.u32 %p3, %r6, %r5;
    @%p3 bra DONE;
    add.s32 %r7, %r6, 1;
    add.s32 %r3, %r3, %r7;
    mov.u32 %r6, %r7;
    bra.uni LOOP;
DONE:
    shfl.sync.idx.b32 %r8, %r3, 0, 31, -1;          // needs the whole warp back together
    mov.u32 %r9, buf;
    mad.lo.s32 %r10, %r1, 4, %r9;
    st.shared.u32 [%r10], %r3;
    bar.sync 0;
    add.s32 %r11, %r1, 32;
    and.b32 %r11, %r11, 63;
    mad.lo.s32 %r12, %r11, 4, %r9;
    ld.shared.u32 %r13, [%r12];                     // the other warp's value
    mul.wide.u32 %rd2, %r1, 12;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r3;
    st.global.u32 [%rd3+4], %r8;
    st.global.u32 [%rd3+8], %r13;
    ret;
}
"""


@pytest.mark.parametrize("schedule", ["lockstep", "warps-forward", "warps-reverse"])
def test_divergent_branches_and_loops_reconverge(schedule):
    views, result = run(DIVERGE, "diverge", {"out": np.zeros((64, 3), np.uint32)}, block=(64, 1, 1),
                        schedule=schedule)
    no_findings(result)

    def value(t):
        v = 2 * t if t % 2 else (t + 100 if t % 4 == 2 else 7)
        return v + sum(i + 1 for i in range(t % 5))
    out = views["out"].reshape(64, 3)
    for t in range(64):
        assert tuple(out[t]) == (value(t), value(t // 32 * 32), value((t + 32) % 64)), t


# -------------------------------------------------------------------------------------------------
# findings

def test_out_of_bounds_and_misaligned_global_accesses_name_the_line():
    ptx = """
.visible .entry bad(.param .u64 pin, .param .u64 pout)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u32 %r2, [%rd4];
    add.s64 %rd5, %rd2, %rd3;
    st.global.u32 [%rd5], %r2;
    ld.global.v4.u32 {%r3, %r4, %r5, %r6}, [%rd1+4];
    ret;
}
"""
    _, result = run(ptx, "bad", {"in": np.arange(31, dtype=np.uint32), "out": np.zeros(32, np.uint32)})
    by_cat = {f.category: f for f in result.findings}
    assert set(by_cat) == {"out_of_bounds", "misaligned"}
    assert by_cat["out_of_bounds"].count == 1 and by_cat["out_of_bounds"].line == line_of(ptx, "ld.global.u32")
    assert "in (124 bytes), 0 bytes past the end" in by_cat["out_of_bounds"].example
    assert by_cat["misaligned"].count == 32 and by_cat["misaligned"].line == line_of(ptx, "ld.global.v4")


RACE = """
.visible .entry race(.param .u64 pout)
{
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b8 buf[256];
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, buf;
    mad.lo.s32 %r3, %r1, 4, %r2;
    add.s32 %r4, %r1, 7;
    st.shared.u32 [%r3], %r4;
    BARRIER
    add.s32 %r5, %r1, 32;
    and.b32 %r5, %r5, 63;
    mad.lo.s32 %r6, %r5, 4, %r2;
    ld.shared.u32 %r7, [%r6];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r7;
    ret;
}
"""


def test_missing_barrier_is_a_race_and_a_barrier_removes_it():
    expected = (np.arange(64) + 32) % 64 + 7
    views, result = run(RACE.replace("BARRIER", "bar.sync 0;"), "race", {"out": np.zeros(64, np.uint32)},
                        block=(64, 1, 1))
    no_findings(result)
    np.testing.assert_array_equal(views["out"], expected)
    for schedule in ("lockstep", "warps-reverse"):
        _, result = run(RACE.replace("BARRIER", ""), "race", {"out": np.zeros(64, np.uint32)}, block=(64, 1, 1),
                        schedule=schedule)
        counts = result.findings.counts()
        assert counts["races"] > 0, schedule
        assert all(f.kind in ("read-after-write", "write-after-read") for f in result.findings
                   if f.category == "races")


def test_missing_barrier_gives_order_dependent_results():
    racy = RACE.replace("BARRIER", "")
    lock, _ = run(racy, "race", {"out": np.zeros(64, np.uint32)}, block=(64, 1, 1))
    rev, result = run(racy, "race", {"out": np.zeros(64, np.uint32)}, block=(64, 1, 1), schedule="warps-forward")
    assert not np.array_equal(lock["out"], rev["out"])
    # run one warp at a time, warp 0 reads warp 1's words before they are written
    assert result.findings.counts()["uninitialized_reads"] == 32


BRANCHY_BARRIER = """
.visible .entry branchy(.param .u64 pout)
{{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, {split};
    @%p1 bra OTHER;
    bar.sync 0;
    bra.uni END;
OTHER:
    {other}
END:
    ret;
}}
"""


def test_barrier_reached_by_part_of_the_cta():
    ptx = BRANCHY_BARRIER.format(split=40, other="")  # threads below 40 skip the barrier and exit
    _, result = run(ptx, "branchy", {"out": np.zeros(1, np.uint32)}, block=(64, 1, 1))
    (f,) = list(result.findings)
    assert f.category == "barrier_divergence" and f.line == line_of(ptx, "bar.sync") and "24 of 64 threads" in f.example


def test_threads_at_two_different_barriers():
    ptx = BRANCHY_BARRIER.format(split=32, other="bar.sync 0;")
    _, result = run(ptx, "branchy", {"out": np.zeros(1, np.uint32)}, block=(64, 1, 1))
    assert [f.kind for f in result.findings] == ["different barriers"]


def test_uninitialised_shared_read():
    ptx = RACE.replace("    st.shared.u32 [%r3], %r4;\n", "").replace("BARRIER", "bar.sync 0;")
    _, result = run(ptx, "race", {"out": np.zeros(64, np.uint32)}, block=(64, 1, 1))
    assert result.findings.counts() == {"out_of_bounds": 0, "misaligned": 0, "races": 0,
                                        "uninitialized_reads": 64, "barrier_divergence": 0}


def test_unimplemented_instructions_are_errors_naming_them():
    base = """
.visible .entry k(.param .u64 pout)
{{
    .reg .b32 %r<4>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    {line}
    ret;
}}
"""
    for line, name in (("atom.global.add.u32 %r1, [%rd1], 1;", "atom.global.add.u32"),
                       ("add.rz.f32 %f1, %f2, %f3;", ".rz"),
                       ("tex.2d.v4.f32.f32 {%f0, %f1, %f2, %f3}, [%rd1, {%f1, %f2}];", "tex.2d")):
        with pytest.raises(PtxError) as err:
            run(base.format(line=line), "k", {"out": np.zeros(1, np.uint32)})
        assert name in str(err.value) and f"PTX line {line_of(base.format(line=line), line)}" in str(err.value)


# -------------------------------------------------------------------------------------------------
# scalar semantics: one thread per input triple, each op's 32-bit result stored

def _f(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _fv(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & 0xffffffff))[0]


def _s32(v: int) -> int:
    v &= 0xffffffff
    return v - (1 << 32) if v >> 31 else v


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _cvt_rzi_s32(x: float) -> int:
    if x != x:
        return 0
    if x >= 2**31:
        return 2**31 - 1
    if x <= -2**31:
        return -2**31
    return int(x)


SCALAR_OPS = [
    # (instruction(s) writing %o from %a %b %c (b32) / %fa %fb %fc (f32), reference on the raw 32-bit inputs)
    ("div.s32 %o, %a, %b;", lambda a, b, c: _trunc_div(_s32(a), _s32(b))),
    ("rem.s32 %o, %a, %b;", lambda a, b, c: _s32(a) - _trunc_div(_s32(a), _s32(b)) * _s32(b)),
    ("div.u32 %o, %a, %b;", lambda a, b, c: a // b),
    ("shr.s32 %o, %a, 7;", lambda a, b, c: _s32(a) >> 7),
    ("shr.u32 %o, %a, 7;", lambda a, b, c: a >> 7),
    ("mul.hi.s32 %o, %a, %b;", lambda a, b, c: (_s32(a) * _s32(b)) >> 32),
    ("mul.hi.u32 %o, %a, %b;", lambda a, b, c: (a * b) >> 32),
    ("mul.wide.s32 %d, %a, %b; cvt.u32.u64 %o, %d;", lambda a, b, c: _s32(a) * _s32(b)),
    ("mul.wide.s32 %d, %a, %b; shr.u64 %d, %d, 32; cvt.u32.u64 %o, %d;", lambda a, b, c: (_s32(a) * _s32(b)) >> 32),
    ("mad.lo.s32 %o, %a, %b, %c;", lambda a, b, c: a * b + c),
    ("min.s32 %o, %a, %b;", lambda a, b, c: min(_s32(a), _s32(b))),
    ("max.u32 %o, %a, %b;", lambda a, b, c: max(a, b)),
    ("neg.s32 %o, %a;", lambda a, b, c: -_s32(a)),
    ("bfe.u32 %o, %a, 5, 9;", lambda a, b, c: (a >> 5) & 0x1ff),
    ("bfe.s32 %o, %a, 5, 9;", lambda a, b, c: ((a >> 5) & 0x1ff) - (0x200 if (a >> 13) & 1 else 0)),
    ("prmt.b32 %o, %a, %b, 0x7340;", lambda a, b, c: (a & 0xff) | ((b >> 0) & 0xff) << 8 | ((a >> 24) & 0xff) << 16
     | ((b >> 24) & 0xff) << 24),
    ("brev.b32 %o, %a;", lambda a, b, c: int(f"{a:032b}"[::-1], 2)),
    ("clz.b32 %o, %a;", lambda a, b, c: 32 - a.bit_length()),
    ("popc.b32 %o, %a;", lambda a, b, c: bin(a).count("1")),
    ("setp.lt.s32 %p, %a, %b; selp.b32 %o, 11, 22, %p;", lambda a, b, c: 11 if _s32(a) < _s32(b) else 22),
    ("setp.lo.u32 %p, %a, %b; selp.b32 %o, 11, 22, %p;", lambda a, b, c: 11 if a < b else 22),
    # floats (inputs reinterpreted as f32 bits)
    ("cvt.rzi.s32.f32 %o, %fa;", lambda a, b, c: _cvt_rzi_s32(_fv(a))),
    ("cvt.rmi.f32.f32 %fo, %fa;", lambda a, b, c: _f(float(np.floor(np.float32(_fv(a)))))),
    ("setp.geu.f32 %p, %fa, %fb; selp.b32 %o, 1, 0, %p;",
     lambda a, b, c: int(not (_fv(a) < _fv(b)))),          # unordered: true when either is NaN
    ("setp.ge.f32 %p, %fa, %fb; selp.b32 %o, 1, 0, %p;", lambda a, b, c: int(_fv(a) >= _fv(b))),
    ("setp.ne.f32 %p, %fa, %fb; selp.b32 %o, 1, 0, %p;",
     lambda a, b, c: int(_fv(a) == _fv(a) and _fv(b) == _fv(b) and _fv(a) != _fv(b))),
    ("min.f32 %fo, %fa, %fb;", lambda a, b, c: _f(_fv(b) if _fv(a) != _fv(a) else _fv(a) if _fv(b) != _fv(b)
                                                  else min(_fv(a), _fv(b)))),
    ("fma.rn.f32 %fo, %fa, %fb, %fc;", None),  # checked separately below (needs exact rounding)
]


def scalar_kernel() -> str:
    body = []
    for k, (code, _) in enumerate(SCALAR_OPS):
        body.append(code)
        if "%fo" in code:
            body.append("mov.b32 %o, %fo;")
        body.append(f"st.global.u32 [%rd3+{4 * k}], %o;")
    return """
.visible .entry scalar(.param .u64 pin, .param .u64 pout)
{
    .reg .pred %p;
    .reg .b32 %a, %b, %c, %o, %r<4>;
    .reg .f32 %fa, %fb, %fc, %fo;
    .reg .b64 %d, %rd<6>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd4, %r1, 12;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.u32 %a, [%rd5];
    ld.global.u32 %b, [%rd5+4];
    ld.global.u32 %c, [%rd5+8];
    mov.b32 %fa, %a;
    mov.b32 %fb, %b;
    mov.b32 %fc, %c;
    mul.wide.u32 %rd4, %r1, """ + str(4 * len(SCALAR_OPS)) + """;
    add.s64 %rd3, %rd2, %rd4;
""" + "\n".join("    " + line for line in body) + "\n    ret;\n}\n"


def test_scalar_integer_and_float_semantics():
    rng = np.random.default_rng(5)
    triples = [(0x80000000, 0xffffffff, 5), (_f(float("nan")), _f(1.0), _f(2.0)), (_f(-1.5), _f(float("inf")), 0),
               (_f(3e10), _f(-3e10), 7), (7, 0xfffffffd, 0x12345678)]
    triples += [tuple(int(v) for v in rng.integers(1, 2**32, size=3)) for _ in range(11)]
    data = np.array(triples, np.uint32)
    views, result = run(scalar_kernel(), "scalar", {"in": data, "out": np.zeros((len(triples), len(SCALAR_OPS)),
                                                                              np.uint32)},
                        block=(len(triples), 1, 1))
    no_findings(result)
    out = views["out"].reshape(len(triples), len(SCALAR_OPS))
    for i, (a, b, c) in enumerate(triples):
        for k, (code, ref) in enumerate(SCALAR_OPS):
            if ref is None or (("div" in code or "rem" in code) and b == 0):
                continue
            assert int(out[i, k]) == ref(a, b, c) & 0xffffffff, (code, hex(a), hex(b), hex(c), hex(int(out[i, k])))


def test_fma_rounds_once():
    # a*b + c = 256 + 2^-15 + 2^-16 - 2^-46 exactly: just below the midpoint between 256 + 2^-15 and
    # 256 + 2^-14, so it rounds down. Rounded to float64 first it would land on the midpoint and
    # round to even (up).
    a, b, c = 2.0**-8 * (1 + 2.0**-15), 2.0**-8 * (1 - 2.0**-15), 256 + 2.0**-15
    triples = [(_f(a), _f(b), _f(c))] * 32
    k = [i for i, (code, _) in enumerate(SCALAR_OPS) if code.startswith("fma")][0]
    views, _ = run(scalar_kernel(), "scalar", {"in": np.array(triples, np.uint32),
                                               "out": np.zeros((32, len(SCALAR_OPS)), np.uint32)})
    assert int(views["out"].reshape(32, -1)[0, k]) == _f(256 + 2.0**-15) == 0x43800001


def test_half_conversion_rounds_ties_to_even():
    ptx = """
.visible .entry h(.param .u64 pin, .param .u64 pout)
{
    .reg .b16 %h;
    .reg .b32 %r<4>;
    .reg .f32 %f;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f, [%rd4];
    cvt.rn.f16.f32 %h, %f;
    mul.wide.u32 %rd3, %r1, 2;
    add.s64 %rd5, %rd2, %rd3;
    st.global.u16 [%rd5], %h;
    ret;
}
"""
    # 1 + 2^-11 is halfway between 1 (0x3c00) and 1 + 2^-10 (0x3c01): even is 0x3c00;
    # 1 + 3 * 2^-11 is halfway between 0x3c01 and 0x3c02: even is 0x3c02; 65520 rounds to infinity.
    vals = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, -(1 + 2.0**-11), 65520.0, 65519.0, 2.0**-25, 2.0**-24],
                    np.float32)
    views, _ = run(ptx, "h", {"in": vals, "out": np.zeros(len(vals), np.uint16)}, block=(len(vals), 1, 1))
    assert [hex(v) for v in views["out"]] == ["0x3c00", "0x3c02", "0xbc00", "0x7c00", "0x7bff", "0x0", "0x1"]


HALF_WARP_SHFL = """
.visible .entry half(.param .u64 pout)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %laneid;
    add.s32 %r2, %r1, 1000;
    mov.u32 %r3, 0;
    setp.ge.u32 %p1, %r1, 16;
    @%p1 bra SKIP;
    shfl.sync.bfly.b32 %r3, %r2, 1, 31, {mask};      // lanes 0..15 only
SKIP:
    rem.u32 %r4, %r1, 3;
    setp.eq.u32 %p2, %r4, 0;
    vote.sync.ballot.b32 %r5, %p2, -1;
    vote.sync.any.pred %p2, %p1, -1;
    selp.b32 %r6, 1, 0, %p2;
    mul.wide.u32 %rd2, %r1, 12;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r3;
    st.global.u32 [%rd3+4], %r5;
    st.global.u32 [%rd3+8], %r6;
    ret;
}}
"""


def test_shfl_by_the_lanes_of_its_member_mask_and_vote():
    views, result = run(HALF_WARP_SHFL.format(mask="0xffff"), "half", {"out": np.zeros((32, 3), np.uint32)})
    no_findings(result)
    out = views["out"].reshape(32, 3)
    ballot = sum(1 << lane for lane in range(32) if lane % 3 == 0)
    for lane in range(32):
        assert out[lane, 0] == (1000 + (lane ^ 1) if lane < 16 else 0)
        assert out[lane, 1] == ballot and out[lane, 2] == 1


def test_shfl_whose_member_mask_names_absent_lanes_is_a_finding():
    _, result = run(HALF_WARP_SHFL.format(mask="-1"), "half", {"out": np.zeros((32, 3), np.uint32)})
    kinds = {f.kind for f in result.findings}
    assert kinds == {"shfl.sync member missing"}, kinds


# Registers named without '%' (PTX ISA, "Identifiers": a letter then letters, digits, _ and $), in a nested
# scope, as cuda_fp16.h's inline PTX declares them ({.reg .f16 low, high; mov.b32 {low, high}, %r; ...}).
UNPACK = """
.visible .entry unpack(.param .u64 pin, .param .u64 pout)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u32 %r2, [%rd4];
    {
    .reg .f16 low, high;
    mov.b32 {low, high}, %r2;
    cvt.f32.f16 %f1, low;
    cvt.f32.f16 %f2, high;
    }
    mul.wide.u32 %rd5, %r1, 8;
    add.s64 %rd6, %rd2, %rd5;
    st.global.f32 [%rd6], %f1;
    st.global.f32 [%rd6+4], %f2;
    ret;
}
"""


def test_registers_named_without_a_percent_sign():
    rng = np.random.default_rng(9)
    halves = rng.standard_normal(64).astype(np.float16)
    views, result = run(UNPACK, "unpack", {"in": halves.view(np.uint32), "out": np.zeros(64, np.float32)})
    no_findings(result)
    # the low half of each word is the lower index: the words' halves, in memory order
    np.testing.assert_array_equal(views["out"], halves.astype(np.float32))
