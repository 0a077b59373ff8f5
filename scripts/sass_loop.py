"""The main loop of each tensor-core kernel in its SASS: instructions per HMMA and whether every global
load's result waits for the loop's HMMAs (the pipelined gather), per GPU architecture.

    python scripts/sass_loop.py [--arch 80 87 90] [--json]

Reads ``cuobjdump -sass`` of plugins/src/deformConvTensorCore.cu compiled like scripts/kernel_resources.py
(no GPU needed; cuobjdump and nvdisasm from the CUDA toolkit or the test extra's wheels).

Definitions (static, from the SASS text):
- a loop is the address range from a backward branch's target to the branch;
- a main loop of a kernel is an innermost loop that contains HMMA or HGMMA instructions (the K loop; the
  kernel has one for its 16-byte vector path, which copies B with LDGSTS, and one for its scalar path);
- HMMA counts in m16n8k16 equivalents per warp: an HMMA is one; an sm_90 warpgroup HGMMA.64xNxK (one
  instruction in each of the warpgroup's 4 warps) does (64/16) x (N/8) x (K/16) m16n8k16s for the
  warpgroup, so N/8 x K/16 per warp (HGMMA.64x128x16: 16). Instructions per HMMA stays comparable between
  mma.sync and wgmma kernels;
- instructions per HMMA = the main loop's instructions (NOPs excluded) / its HMMAs. The main loop has no
  loop inside it, so the static ratio is the ratio it executes (counting both sides of its few branches:
  an upper bound). The tensor-core kernel before v2 kept its HMMAs in an inner loop of a few instructions
  (its gather in other inner loops), so this counts only that inner loop for it;
- a global (LDG) or generic (LD) load is *hidden* when, walking forward through the main loop from the load
  (around the loop's back edge), an HMMA (or HGMMA) comes before the first instruction that reads one of the load's
  destination registers. The pipelined gather needs every load of the vector path's main loop hidden (the
  scalar path, for channel counts that are not multiples of 8, copies B through registers unpipelined).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_resources  # noqa: E402

LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
HGMMA_SHAPE = re.compile(r"^HGMMA\.(\d+)x(\d+)x(\d+)")
TENSOR_OPCODES = ("HMMA", "HGMMA")
REGISTER = re.compile(r"\bR(\d+)\b")
LOAD_WIDTH = {"128": 4, "64": 2}


@dataclasses.dataclass
class Instruction:
    address: int
    predicate: str
    opcode: str      # with modifiers, e.g. LDG.E.128.CONSTANT
    operands: str
    text: str

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


def hmma_equivalents(ins: Instruction) -> int:
    """m16n8k16 HMMAs per warp an instruction stands for: 1 for HMMA, N/8 x K/16 for HGMMA.64xNxK (see the
    module docstring), 0 for anything else."""
    if ins.base == "HMMA":
        return 1
    if ins.base == "HGMMA":
        m = HGMMA_SHAPE.match(ins.opcode)
        if m is None:
            raise ValueError(f"HGMMA without its shape: {ins.text}")
        rows, n, k = (int(v) for v in m.groups())
        return rows // 16 * (n // 8) * max(k // 16, 1) // 4
    return 0


@dataclasses.dataclass
class LoopStats:
    arch: int
    kernel: str
    start: int
    end: int
    instructions: int
    hmma: int                     # m16n8k16 equivalents per warp (HGMMA counted as hmma_equivalents)
    global_loads: int
    unhidden_loads: list          # text of each LDG whose result is read before an HMMA
    inner_loops: list             # (start, end, instructions, hmma) of loops inside the main loop
    opcode_counts: dict

    @property
    def per_hmma(self) -> float:
        return self.instructions / max(self.hmma, 1)

    @property
    def path(self) -> str:
        """"vector" (16-byte gathers, B by cp.async) or "scalar" (channel counts off multiples of 8)."""
        return "vector" if self.opcode_counts.get("LDGSTS") else "scalar"


def parse_sass(sass: str) -> dict:
    """(arch, short kernel name) -> instructions, from ``cuobjdump -sass`` output."""
    functions: dict = {}
    for key, lines in kernel_resources.sass_functions(sass).items():
        code = functions.setdefault(key, [])
        for line in lines:
            m = LINE.search(line)
            if m is None:
                continue
            text = m.group(2).strip()
            predicate = ""
            if text.startswith("@"):
                predicate, text = text.split(None, 1)
            opcode, _, operands = text.partition(" ")
            code.append(Instruction(int(m.group(1), 16), predicate, opcode, operands.strip(), m.group(2).strip()))
    return functions


def _branch_target(ins: Instruction) -> Optional[int]:
    if ins.base != "BRA":
        return None
    m = re.search(r"0x([0-9a-f]+)\s*$", ins.operands)
    return int(m.group(1), 16) if m else None


def loops(code: list) -> list:
    """(start, end) address ranges of the backward branches."""
    out = []
    for ins in code:
        target = _branch_target(ins)
        if target is not None and target <= ins.address:
            out.append((target, ins.address))
    return out


def _destinations(ins: Instruction) -> set:
    """Registers a load writes (a 128-bit load writes four, a 64-bit one two)."""
    first = ins.operands.split(",")[0]
    m = REGISTER.search(first)
    if m is None:
        return set()
    width = next((LOAD_WIDTH[w] for w in ins.opcode.split(".") if w in LOAD_WIDTH), 1)
    return {int(m.group(1)) + i for i in range(width)}


def _reads(ins: Instruction) -> set:
    """Registers an instruction reads: every register operand but a written first one (stores, branches and
    HMMA's accumulator input are read too)."""
    parts = [p.strip() for p in ins.operands.split(",")]
    writes_first = ins.base not in ("STS", "STG", "ST", "STL", "RED", "ATOM", "BRA", "BAR", "LDGSTS", "BSYNC")
    sources = parts[1:] if writes_first and parts else parts
    regs = set()
    for p in sources:
        for m in re.finditer(r"\bR(\d+)(\.64|\.128)?", p):
            first = int(m.group(1))
            regs |= {first + i for i in range({"": 1, ".64": 2, ".128": 4}[m.group(2) or ""])}
    # an address operand [R2.64] reads R2 and R3
    for m in re.finditer(r"\[R(\d+)\.64", ins.operands):
        regs |= {int(m.group(1)), int(m.group(1)) + 1}
    # HGMMA D, A, gdesc[B], C: its A fragment (four registers, or a descriptor) and its accumulators (N/2
    # registers, the operand after B's descriptor)
    if ins.base == "HGMMA" and HGMMA_SHAPE.match(ins.opcode):
        n = int(HGMMA_SHAPE.match(ins.opcode).group(2))
        b_index = max((k for k, p in enumerate(parts) if p.startswith("gdesc")), default=len(parts))
        for k, width in ((1, 4), (b_index + 1, n // 2)):
            m = re.match(r"R(\d+)$", parts[k]) if 0 < k < len(parts) and k != b_index else None
            if m:
                regs |= {int(m.group(1)) + i for i in range(width)}
        return regs
    # HMMA/IMAD.WIDE sources given as the first register of a pair or quad
    if ins.base == "HMMA" and len(parts) >= 3:
        for p, width in ((parts[1], 4), (parts[2], 2), (parts[3] if len(parts) > 3 else "", 4)):
            m = REGISTER.search(p)
            if m:
                regs |= {int(m.group(1)) + i for i in range(width)}
    return regs


def _writes(ins: Instruction) -> set:
    if ins.base in ("STS", "STG", "ST", "STL", "RED", "BRA", "BAR", "LDGSTS", "BSYNC", "BSSY"):
        return set()
    m = REGISTER.search(ins.operands.split(",")[0]) if ins.operands else None
    if m is None:
        return set()
    width = 4 if ins.base == "HMMA" else 2 if ".WIDE" in ins.opcode or ".64" in ins.opcode else 1
    if ins.base == "HGMMA":
        shape = HGMMA_SHAPE.match(ins.opcode)
        width = int(shape.group(2)) // 2 if shape else 1
    if ins.base in ("LDG", "LDS", "LD", "LDSM"):
        width = next((LOAD_WIDTH[w] for w in ins.opcode.split(".") if w in LOAD_WIDTH), 1)
        if ins.base == "LDSM":
            width = {"M88.4": 4, "M88.2": 2}.get(next((w for w in ("M88.4", "M88.2") if w in ins.opcode), ""), 1)
    return {int(m.group(1)) + i for i in range(width)}


def innermost_tensor_loops(code: list, opcodes: tuple = TENSOR_OPCODES) -> tuple[list, list]:
    """(every loop, the innermost loops holding an instruction of ``opcodes``), as (start, end) ranges."""
    regions = sorted(set(loops(code)))
    with_mma = [(s, e) for s, e in regions if any(i.base in opcodes and s <= i.address <= e for i in code)]
    innermost = [(s, e) for s, e in with_mma
                 if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in with_mma)]
    return regions, innermost


def main_loops(arch: int, kernel: str, code: list) -> list:
    """Statistics of every innermost loop that contains HMMAs (the K loop; a kernel with a 16-byte vector
    path and a scalar one has one of each: the vector loop copies B with LDGSTS, cp.async)."""
    regions, innermost = innermost_tensor_loops(code)
    return [_loop_stats(arch, kernel, code, regions, s, e) for s, e in innermost]


def _loop_stats(arch: int, kernel: str, code: list, regions: list, start: int, end: int) -> LoopStats:
    body = [i for i in code if start <= i.address <= end and i.base != "NOP"]
    hmma = sum(hmma_equivalents(i) for i in body)
    inner = []
    for s, e in regions:
        if (s, e) != (start, end) and start <= s and e <= end:
            part = [i for i in body if s <= i.address <= e]
            inner.append((s, e, len(part), sum(hmma_equivalents(i) for i in part)))
    unhidden = []
    loads = [k for k, i in enumerate(body) if i.base in ("LDG", "LD")]
    for k in loads:
        dest = _destinations(body[k])
        seen_hmma = False
        for step in range(1, len(body) + 1):
            ins = body[(k + step) % len(body)]
            if ins.base in TENSOR_OPCODES:
                seen_hmma = True
            if _reads(ins) & dest:
                if not seen_hmma:
                    unhidden.append(body[k].text)
                break
            dest -= _writes(ins)  # a register written again no longer holds the load's result
            if not dest:
                break
    counts: dict = {}
    for i in body:
        counts[i.base] = counts.get(i.base, 0) + 1
    return LoopStats(arch, kernel, start, end, len(body), hmma, len(loads), unhidden, inner,
                     dict(sorted(counts.items(), key=lambda kv: -kv[1])))


sass_text = kernel_resources.sass_text  # one disassembly per object for both scripts


def collect(archs: tuple, out_dir: Path, source: str = "deformConvTensorCore.cu") -> Optional[list]:
    """Main-loop statistics of every kernel with HMMAs in ``source``; None without cuobjdump."""
    obj, _ = kernel_resources.compile_with_report(source, archs, out_dir)
    return stats_of(obj)


def stats_of(obj: Path) -> Optional[list]:
    """Main-loop statistics of every kernel with HMMAs in the compiled object ``obj``; None without cuobjdump."""
    sass = sass_text(obj)
    if sass is None:
        return None
    stats = []
    for (arch, kernel), code in parse_sass(sass).items():
        if any(i.base in TENSOR_OPCODES for i in code):
            stats += main_loops(arch, kernel, code)
    return stats


def format_table(stats: list) -> str:
    lines = [f"{'arch':>5} {'kernel':36} {'path':6} {'instr':>6} {'HMMA':>5} {'/HMMA':>6} {'LDG':>4} {'unhidden':>8} "
             f"{'inner':>5}  top opcodes"]
    for s in sorted(stats, key=lambda s: (s.arch, s.kernel, s.path)):
        top = " ".join(f"{k}:{v}" for k, v in list(s.opcode_counts.items())[:8])
        lines.append(f"sm_{s.arch:<2} {s.kernel[:36]:36} {s.path:6} {s.instructions:6d} {s.hmma:5d} {s.per_hmma:6.2f} "
                     f"{s.global_loads:4d} {len(s.unhidden_loads):8d} {len(s.inner_loops):5d}  {top}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    from exporter.util.usage import ScriptParser, first_paragraph

    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--arch", type=int, nargs="+", default=list(kernel_resources.CHECK_ARCHS),
                        choices=sorted(kernel_resources.SHARED_OPTIN_BYTES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stats = collect(tuple(args.arch), Path(tmp))
    if stats is None:
        print("error: cuobjdump / nvdisasm not found: sass_loop reads the kernels' SASS with them", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(s) | {"per_hmma": round(s.per_hmma, 3), "path": s.path} for s in stats],
                         indent=1))
    else:
        print(format_table(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
