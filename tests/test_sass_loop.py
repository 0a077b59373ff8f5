"""scripts/sass_loop.py on SASS text written here (no compiler needed): a main loop with warpgroup HGMMAs
counts each HGMMA.64xNx16 as N/8 m16n8k16 HMMA-equivalents per warp (the warpgroup's 64xNx16 is 4 warps x
N/8 m16n8k16), so instructions per HMMA compare with an mma.sync loop's; a global load whose result an
instruction reads before the loop's next HGMMA is unhidden, one read only after it is hidden."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import sass_loop  # noqa: E402


def sass(body: list[str], name: str = "_Z4gemmv", arch: int = 90) -> str:
    """``cuobjdump -sass``-shaped text of one function whose instructions are ``body`` (16 bytes apart)."""
    lines = [f"\tarch = sm_{arch}", f"\t\tFunction : {name}", "\t.headerflags\t@\"EF_CUDA_SM90\""]
    for k, text in enumerate(body):
        lines.append(f"        /*{16 * k:04x}*/                   {text} ;   /* 0x0000000000000000 */")
    return "\n".join(lines) + "\n"


LOOP = [
    "MOV R2, c[0x0][0x210]",                               # 0x00 (before the loop)
    "LDG.E.128 R4, desc[UR6][R2.64]",                      # 0x10 loop start: a load for the next step
    "WARPGROUP.ARRIVE",                                    # 0x20
    "HGMMA.64x128x16.F32 R24, gdesc[UR8], R24, gsb0",      # 0x30 SS: A and B from shared memory
    "HGMMA.64x128x16.F32 R24, R160, gdesc[UR12], R24, gsb0",   # 0x40 RS: A from R160..R163
    "WARPGROUP.DEPBAR.LE gsb0, 0x1",                       # 0x50
    "STS.128 [R3], R4",                                    # 0x60 the load's use, after the HGMMAs
    "IADD3 R2, R2, 0x40, RZ",                              # 0x70
    "ISETP.NE.AND P0, PT, R2, R9, PT",                     # 0x80
    "NOP",                                                 # 0x90 (not counted)
    "@P0 BRA 0x10",                                        # 0xa0 back edge
    "EXIT",                                                # 0xb0
]


def test_hgmma_counts_n_over_8_hmma_equivalents_per_warp():
    code = sass_loop.parse_sass(sass(LOOP))
    (key, instructions), = code.items()
    assert key == (90, "gemm")
    stats = sass_loop.main_loops(90, "gemm", instructions)
    assert len(stats) == 1
    loop = stats[0]
    assert (loop.start, loop.end) == (0x10, 0xa0)
    assert loop.instructions == 9                      # 0x10..0xa0 without the NOP
    assert loop.hmma == 2 * 128 // 8                   # two HGMMA.64x128x16: 16 m16n8k16 per warp each
    assert loop.per_hmma == pytest.approx(9 / 32)
    assert loop.opcode_counts["HGMMA"] == 2
    assert loop.unhidden_loads == [] and loop.global_loads == 1


@pytest.mark.parametrize("opcode, equivalents", [("HGMMA.64x8x16.F32", 1), ("HGMMA.64x64x16.F32", 8),
                                                 ("HGMMA.64x256x16.F32", 32), ("HGMMA.64x128x32.F32.E4M3", 32),
                                                 ("HMMA.16816.F32", 1), ("FFMA", 0)])
def test_hmma_equivalents(opcode, equivalents):
    ins = sass_loop.Instruction(0, "", opcode, "R0, R1", f"{opcode} R0, R1")
    assert sass_loop.hmma_equivalents(ins) == equivalents


def test_a_load_read_before_the_next_hgmma_is_unhidden():
    body = list(LOOP)
    body[2] = "STS.128 [R3], R4"            # the use moves before the HGMMAs
    body[6] = "WARPGROUP.ARRIVE"
    loop, = sass_loop.main_loops(90, "gemm", next(iter(sass_loop.parse_sass(sass(body)).values())))
    assert loop.unhidden_loads == ["LDG.E.128 R4, desc[UR6][R2.64]"]
    # what an HGMMA reads: its A registers (RS) and its accumulators, after B's descriptor
    rs = sass_loop.Instruction(0, "", "HGMMA.64x16x16.F32", "R24, R160, gdesc[UR12], R24, gsb0", "")
    assert sass_loop._reads(rs) >= {160, 161, 162, 163} | set(range(24, 32))
    ss = sass_loop.Instruction(0, "", "HGMMA.64x16x16.F32", "R24, gdesc[UR8], R40, gsb0", "")
    assert sass_loop._reads(ss) >= set(range(40, 48)) and sass_loop._writes(ss) == set(range(24, 32))
