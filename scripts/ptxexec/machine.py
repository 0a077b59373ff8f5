"""The SIMT machine: runs a compiled PTX kernel over a batch of CTAs on the CPU, vectorised with numpy.

Execution model (PTX ISA, "Independent Thread Scheduling"):
- Every thread has its own registers and program counter. Threads at the same program counter form a
  *group* that executes one instruction for all its threads at once; a predicated branch splits a group,
  and the scheduler always resumes the group with the lowest program counter (within a schedule unit),
  so divergent paths reconverge where they meet again (at the immediate post-dominator for the
  compiler's block layout). Groups from different CTAs of a batch merge too (wider vectors).
- ``bar.sync`` parks its threads; a CTA's barrier releases when none of its threads can run any more.
  A release where some of the CTA's threads exited without arriving, or wait at a different barrier
  instruction, is a ``barrier_divergence`` finding; so is a warp-collective instruction (mma, ldmatrix,
  shfl, vote) reached by only part of its warp.
- Schedules: ``lockstep`` (one unit: all warps advance together), ``warps-forward`` and
  ``warps-reverse`` (each warp of the CTA is its own unit and runs until it blocks, in warp order or
  reversed). Racy code gives different results under different schedules.

Checks: global accesses outside every allocation (``out_of_bounds``), accesses not aligned to their
size (``misaligned``; a vector is aligned to its whole size), shared-memory reads of bytes no thread
wrote (``uninitialized_reads``), and racecheck (``races``): per shared byte the last writer and the
barrier interval it wrote in, and the smallest and largest reader thread of the current interval;
read-after-write, write-after-read and write-after-write between different threads in one interval
are hazards. ``cp.async`` data lands in shared memory when the issuing thread's ``cp.async.wait_*``
completes its group (that is when a correct program may read it).

``wgmma.mma_async`` (sm_90a) runs per warp at issue (its shared-memory operands read through their
descriptors, all four swizzle modes, K- and MN-major) and stays in flight until a ``wgmma.wait_group``
retires its group; reported as ``races``: accumulator or A registers accessed by other instructions while
in flight, shared memory written while an in-flight wgmma reads it, shared memory read by a wgmma after a
generic-proxy write (st.shared, cp.async) with no ``fence.proxy.async`` by the writer in between, a wgmma
with no ``wgmma.fence`` since its registers were written; as ``out_of_bounds`` / ``misaligned``: a
descriptor whose operand leaves the CTA's shared memory or does not start on its swizzle pattern.

Counters per CTA: warp-level instructions by class (ops.CLASSES); per launch: global bytes, requests
and 32-byte sectors per warp access (load sectors also per allocation), shared-memory requests,
wavefronts and bank conflicts (those of cp.async destinations also on their own); wgmma FLOP and the bytes
and 128-byte wavefronts of its shared-memory operands (per warp a quarter of the warpgroup instruction's).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np

from .ops import CLASSES, CLS, LOCAL_WINDOW, PARAM_WINDOW, SHARED_WINDOW, Compiler, Op
from .ptx import Kernel, PtxError

CATEGORIES = ("out_of_bounds", "misaligned", "races", "uninitialized_reads", "barrier_divergence")


class ExecutionError(Exception):
    """The kernel could not be run to its end (instruction budget, unsupported runtime situation)."""


# -------------------------------------------------------------------------------------------------
# Global memory: exact-size allocations, each at its own 2^36-aligned virtual base.

class GlobalMemory:
    SHIFT = 36
    MASK = (1 << 36) - 1

    def __init__(self):
        self.names: list[str] = ["<null>"]
        self.sizes: list[int] = [0]
        self._data: list[np.ndarray] = [np.zeros(0, np.uint8)]
        self.heap: Optional[np.ndarray] = None
        self._dirty = True

    def alloc(self, name: str, nbytes: int, data: Optional[np.ndarray] = None) -> int:
        """A new allocation of exactly ``nbytes``; filled with ``data`` (its raw bytes) or zero."""
        buf = np.zeros(nbytes, np.uint8)
        if data is not None:
            raw = np.ascontiguousarray(data).view(np.uint8).ravel()
            if raw.size != nbytes:
                raise ValueError(f"{name}: {raw.size} bytes of data for a {nbytes}-byte allocation")
            buf[:] = raw
        self.names.append(name)
        self.sizes.append(nbytes)
        self._data.append(buf)
        self._dirty = True
        return len(self.names) - 1 << self.SHIFT

    def _build(self):
        if not self._dirty:
            return
        offsets, total = [], 0
        for buf in self._data:
            offsets.append(total)
            total += (buf.size + 255) // 256 * 256
        heap = np.zeros(total + 256, np.uint8)
        for off, buf in zip(offsets, self._data):
            heap[off:off + buf.size] = buf
        self._data = [heap[off:off + size] for off, size in zip(offsets, self.sizes)]
        self.heap = heap
        self.storage = np.array(offsets, np.int64)
        self.size_arr = np.array(self.sizes, np.int64)
        self.views = {w: heap.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[w]) for w in (1, 2, 4, 8)}
        self._dirty = False

    def view(self, address: int, dtype=np.uint8) -> np.ndarray:
        """The allocation at ``address`` (its base) as a writable numpy array of ``dtype``."""
        self._build()
        index = address >> self.SHIFT
        if address & self.MASK or not 1 <= index < len(self.names):
            raise ValueError(f"{address:#x} is not the base of an allocation")
        return self._data[index].view(dtype)

    def snapshot(self) -> np.ndarray:
        self._build()
        return self.heap.copy()

    def restore(self, snap: np.ndarray):
        self._build()
        self.heap[:] = snap

    def describe(self, address: int) -> str:
        index, off = address >> self.SHIFT, address & self.MASK
        if 1 <= index < len(self.names):
            size = self.sizes[index]
            where = f"byte {off}" if off < size else f"{off - size} bytes past the end" if off < 1 << 35 else \
                f"{(1 << self.SHIFT) - off} bytes before the start"
            return f"{self.names[index]} ({size} bytes), {where}"
        return "no allocation"

    def resolve(self, addr: np.ndarray, nbytes: int):
        """(physical byte offsets, inside-an-allocation mask, aligned mask) for ``addr`` (uint64)."""
        self._build()
        a = addr.astype(np.int64)
        index = a >> self.SHIFT
        off = a & self.MASK
        valid = (index >= 1) & (index < len(self.names))
        index = np.where(valid, index, 0)
        inside = valid & (off + nbytes <= self.size_arr[index])
        aligned = (a & (nbytes - 1)) == 0
        return self.storage[index] + off, inside, aligned


# -------------------------------------------------------------------------------------------------
# Findings and counters

@dataclasses.dataclass
class Finding:
    category: str
    kind: str
    kernel: str
    line: int
    text: str
    count: int
    example: str

    def to_json(self) -> dict:
        return {"category": self.category, "kind": self.kind, "kernel": self.kernel, "ptx_line": self.line,
                "instruction": self.text, "count": self.count, "example": self.example}

    def __str__(self) -> str:
        return (f"{self.category} ({self.kind}) in {self.kernel}, PTX line {self.line} `{self.text}`: "
                f"{self.count} x, e.g. {self.example}")


class Findings:
    """Findings of one launch, one entry per (category, kind, PTX line) with a count and an example."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.items: dict[tuple, Finding] = {}

    def add(self, category: str, kind: str, line: int, text: str, count: int, example: str):
        key = (category, kind, line)
        f = self.items.get(key)
        if f is None:
            self.items[key] = Finding(category, kind, self.kernel, line, text, int(count), example)
        else:
            f.count += int(count)

    def counts(self) -> dict:
        out = {c: 0 for c in CATEGORIES}
        for f in self.items.values():
            out[f.category] += f.count
        return out

    def __iter__(self):
        return iter(self.items.values())


MEM_COUNTERS = ("global_load_bytes", "global_store_bytes", "global_load_requests", "global_store_requests",
                "global_load_sectors", "global_store_sectors", "shared_load_requests", "shared_store_requests",
                "shared_load_wavefronts", "shared_store_wavefronts", "shared_load_bank_conflicts",
                "shared_store_bank_conflicts", "shared_load_bytes", "shared_store_bytes", "cp_async_bytes",
                "cp_async_store_wavefronts", "wgmma_flop", "wgmma_shared_a_bytes", "wgmma_shared_b_bytes",
                "wgmma_shared_wavefronts")


@dataclasses.dataclass
class LaunchResult:
    kernel: str
    grid: tuple
    block: tuple
    ctas_total: int
    ctas_run: int
    per_cta_instructions: np.ndarray      # [len(CLASSES), ctas_run] warp-level instructions
    memory: dict                          # MEM_COUNTERS totals over the CTAs run
    thread_instructions: int
    warp_instructions: int
    seconds: float
    findings: Findings
    load_sectors_by_buffer: dict = dataclasses.field(default_factory=dict)  # allocation name -> global load
    #                                                                         sectors (per-warp distinct)

    def counters(self) -> dict:
        """Counters per CTA (means over the CTAs run) and totals, as plain numbers."""
        n = max(self.ctas_run, 1)
        per_class = self.per_cta_instructions.sum(axis=1)
        out = {"ctas_total": self.ctas_total, "ctas_run": self.ctas_run,
               "instructions_per_cta": {name: round(float(per_class[i]) / n, 2) for i, name in enumerate(CLASSES)
                                        if per_class[i]},
               "warp_instructions_per_cta": round(self.warp_instructions / n, 2),
               "mma_per_cta": round(float(per_class[CLS["mma"]]) / n, 2)}
        per_cta_total = self.per_cta_instructions.sum(axis=0)
        if len(per_cta_total):
            out["warp_instructions_per_cta_min_max"] = [int(per_cta_total.min()), int(per_cta_total.max())]
        if per_class[CLS["mma"]]:
            out["instructions_per_mma"] = round(self.warp_instructions / float(per_class[CLS["mma"]]), 2)
        if per_class[CLS["wgmma"]]:
            out["wgmma_per_cta"] = round(float(per_class[CLS["wgmma"]]) / n, 2)
        mem = self.memory
        out["memory_per_cta"] = {k: round(v / n, 2) for k, v in mem.items() if v}
        if mem["global_load_requests"]:
            out["global_load_sectors_per_request"] = round(mem["global_load_sectors"] / mem["global_load_requests"], 3)
        if mem["global_store_requests"]:
            out["global_store_sectors_per_request"] = round(
                mem["global_store_sectors"] / mem["global_store_requests"], 3)
        if mem["shared_load_requests"]:
            out["shared_load_wavefronts_per_request"] = round(
                mem["shared_load_wavefronts"] / mem["shared_load_requests"], 3)
        if mem["shared_store_requests"]:
            out["shared_store_wavefronts_per_request"] = round(
                mem["shared_store_wavefronts"] / mem["shared_store_requests"], 3)
        for kind in ("load", "store"):
            if mem[f"shared_{kind}_requests"]:
                out[f"shared_{kind}_bank_conflicts_per_request"] = round(
                    mem[f"shared_{kind}_bank_conflicts"] / mem[f"shared_{kind}_requests"], 3)
        return out


# -------------------------------------------------------------------------------------------------
# A compiled kernel

class Program:
    """A kernel's instructions compiled to closures, its shared layout and parameter windows."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        shared_addr, self.static_shared, self.dynamic_start = kernel.shared_layout()
        self.param_index = {p.name: i for i, p in enumerate(kernel.params)}
        symbols = dict(shared_addr)
        for i, p in enumerate(kernel.params):
            symbols[p.name] = PARAM_WINDOW + (i << 20)
        symbols.update(kernel.local_vars)
        self.symbols = symbols
        compiler = Compiler(kernel, symbols)
        self.ops: list[Op] = [compiler.compile(ins) for ins in kernel.instructions]
        self.wgmma_slots = compiler.wgmma_slots
        self.has_wgmma = any(ins.base == "wgmma" for ins in kernel.instructions)
        # falling off the end of the body is a return
        self.ops.append(Op("exit", None, CLS["control"], kernel.instructions[-1].line if kernel.instructions else 0,
                           "(end of kernel)"))
        self._line_text = {}
        for op in self.ops:
            self._line_text.setdefault(op.line, op.text)
        self.shadow_granule = _shadow_granule(kernel)

    def ops_text(self, line: int) -> str:
        return self._line_text.get(line, "")


def _shadow_granule(kernel: Kernel) -> int:
    """Bytes per shadow entry: the smallest shared access of the kernel (accesses are checked for
    alignment to their size, so every aligned access covers whole granules)."""
    from .ptx import TYPE_BYTES, Imm
    sizes = []
    for ins in kernel.instructions:
        if ins.base in ("ld", "st") and ("shared" in ins.mods or not any(
                m in ins.mods for m in ("global", "param", "local", "const"))):
            t = next((m for m in reversed(ins.mods) if m in TYPE_BYTES), "b8")
            count = 4 if "v4" in ins.mods else 2 if "v2" in ins.mods else 8 if "v8" in ins.mods else 1
            sizes.append(TYPE_BYTES[t] * count)
        elif ins.base == "cp" and len(ins.operands) >= 3 and isinstance(ins.operands[2], Imm):
            sizes.append(int(ins.operands[2].value))
        elif ins.base == "ldmatrix":
            sizes.append(16)
    g = min(sizes, default=16)
    g = min(16, g)
    while g & (g - 1):
        g &= g - 1
    return max(g, 1)


class _Group:
    __slots__ = ("pc", "ix", "unit")

    def __init__(self, pc, ix, unit):
        self.pc, self.ix, self.unit = pc, ix, unit


ALL = slice(None)


class Batch:
    """The state of a batch of CTAs of one launch; instruction closures receive it as ``c``."""

    def __init__(self, program: Program, memory: GlobalMemory, grid, block, dynamic_shared: int, params: list,
                 ctas: list, findings: Findings, schedule: str, budget: int, counters: bool = True):
        self.program, self.mem, self.findings = program, memory, findings
        self.counters_on = counters
        self.grid, self.block = grid, block
        kernel = program.kernel
        self.ntid = block[0] * block[1] * block[2]
        self.tpc = (self.ntid + 31) // 32 * 32
        self.nc = len(ctas)
        T = self.T = self.nc * self.tpc
        t = np.arange(T, dtype=np.int64)
        self.cta = t // self.tpc
        lin = t % self.tpc
        self.real = lin < self.ntid
        self.lin = lin
        self.warps_per_cta = self.tpc // 32
        self.W = T // 32
        ctas_arr = np.array(ctas, np.int64).reshape(-1, 3)
        u32 = np.uint32
        self.sreg = {
            "%tid.x": (lin % block[0]).astype(u32), "%tid.y": (lin // block[0] % block[1]).astype(u32),
            "%tid.z": (lin // (block[0] * block[1])).astype(u32),
            "%ntid.x": np.full(T, block[0], u32), "%ntid.y": np.full(T, block[1], u32),
            "%ntid.z": np.full(T, block[2], u32),
            "%ctaid.x": ctas_arr[self.cta, 0].astype(u32), "%ctaid.y": ctas_arr[self.cta, 1].astype(u32),
            "%ctaid.z": ctas_arr[self.cta, 2].astype(u32),
            "%nctaid.x": np.full(T, grid[0], u32), "%nctaid.y": np.full(T, grid[1], u32),
            "%nctaid.z": np.full(T, grid[2], u32),
            "%laneid": (lin & 31).astype(u32), "%warpid": (lin >> 5).astype(u32),
            "%nwarpid": np.full(T, self.warps_per_cta, u32),
        }
        lane = (lin & 31).astype(np.uint64)
        one = np.uint64(1)
        self.sreg["%lanemask_eq"] = (one << lane).astype(u32)
        self.sreg["%lanemask_lt"] = ((one << lane) - one).astype(u32)
        self.sreg["%lanemask_le"] = ((one << (lane + one)) - one).astype(u32)
        self.sreg["%lanemask_ge"] = (~((one << lane) - one) & np.uint64(0xffffffff)).astype(u32)
        self.sreg["%lanemask_gt"] = (~((one << (lane + one)) - one) & np.uint64(0xffffffff)).astype(u32)
        self.R = [np.zeros(T, r.storage) for r in kernel.registers]
        # shared memory (flat over the batch) and its shadow state
        self.smem_size = program.static_shared if dynamic_shared == 0 else program.dynamic_start + dynamic_shared
        self.smem_stride = (self.smem_size + 15) // 16 * 16 + 16
        nbytes = self.nc * self.smem_stride
        self.smem = np.zeros(nbytes, np.uint8)
        self.smem_views = {w: self.smem.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[w])
                           for w in (1, 2, 4, 8)}
        self.smem_base = self.cta * self.smem_stride
        self.granule = program.shadow_granule
        shadow = nbytes // self.granule + 1
        self.sh_init = np.zeros(shadow, np.bool_)
        self.sh_writer = np.full(shadow, -1, np.int32)
        self.sh_wepoch = np.full(shadow, -1, np.int32)
        self.sh_wline = np.zeros(shadow, np.int32)
        self.sh_rmin = np.zeros(shadow, np.int32)
        self.sh_rmax = np.zeros(shadow, np.int32)
        self.sh_repoch = np.full(shadow, -1, np.int32)
        self.epoch = 0
        # local memory (per-thread frames)
        self.local_size = kernel.local_bytes
        self.local = np.zeros(T * max(self.local_size, 1) + 16, np.uint8) if self.local_size else None
        self.params = params
        # thread state
        self.exited = ~self.real.copy()
        self.alive_per_warp = np.bincount(t[self.real] >> 5, minlength=self.W).astype(np.int64)
        self.real_per_warp = self.alive_per_warp.copy()
        self.cp_commits = np.zeros(T, np.int64)
        self.cp_pending: list[dict] = []
        # wgmma state: per watched register (ops.wgmma_register_slots) and thread, the in-flight wgmmas using
        # it and whether another instruction wrote it since the thread's last wgmma.fence; per thread its
        # wgmma-group count and fence.proxy.async count; per shared granule the in-flight wgmmas reading it
        # and its writer's fence.proxy.async count at the write
        self.has_wgmma = program.has_wgmma
        if self.has_wgmma:
            nk = max(len(program.wgmma_slots), 1)
            self.wg_busy = np.zeros((nk, T), np.int16)
            self.wg_dirty = np.zeros((nk, T), np.bool_)
            self.wg_fenced = np.zeros(T, np.bool_)
            self.wg_commits = np.zeros(T, np.int64)
            self.wg_pending: list[dict] = []
            self.proxy_fences = np.zeros(T, np.int32)
            self.sh_wg_busy = np.zeros(shadow, np.int16)
            self.sh_wfence = np.zeros(shadow, np.int32)
            self.wg_issued = np.zeros(self.W, np.int64)      # wgmma.mma_async per warp, and the last one's line
            self.wg_last_line = np.zeros(self.W, np.int64)
        # scheduling
        self.schedule = schedule
        self.groups: dict = {}
        self.waiting: list = []
        self.budget = budget
        self.dispatches = 0
        self.thread_instr = 0
        self.cls_counts = np.zeros((len(CLASSES), self.nc), np.int64)
        self.memc = {k: 0 for k in MEM_COUNTERS}
        self.load_sectors_by_buffer = np.zeros(len(memory.names), np.int64)
        if schedule == "lockstep":
            self.unit_order = {0: 0}
            ix = ALL if self.ntid == self.tpc else np.nonzero(self.real)[0]
            self.groups[(0, 0)] = _Group(0, ix, 0)
        elif schedule in ("warps-forward", "warps-reverse"):
            nw = self.warps_per_cta
            self.unit_order = {u: (u if schedule == "warps-forward" else nw - 1 - u) for u in range(nw)}
            for u in range(nw):
                ix = np.nonzero(self.real & ((lin >> 5) == u))[0]
                self.groups[(u, 0)] = _Group(0, ix, u)
        else:
            raise ValueError(f"unknown schedule {schedule}")
        self.all_warps = np.arange(self.W, dtype=np.int64)

    # --- small helpers ----------------------------------------------------------------------------
    def count(self, ix) -> int:
        return self.T if isinstance(ix, slice) else len(ix)

    def tids(self, ix) -> np.ndarray:
        return np.arange(self.T, dtype=np.int64) if isinstance(ix, slice) else ix

    def _warp_list(self, ix):
        """(warp of each thread, distinct warps) of ``ix``."""
        t = self.tids(ix)
        w = t >> 5
        if len(w) == 0:
            return w, w
        uniq = w[np.concatenate(([True], w[1:] != w[:-1]))] if np.all(w[1:] >= w[:-1]) else np.unique(w)
        return w, uniq

    def _who(self, t: int) -> str:
        c = int(self.cta[t])
        lin = int(self.lin[t])
        ctaid = (int(self.sreg["%ctaid.x"][t]), int(self.sreg["%ctaid.y"][t]), int(self.sreg["%ctaid.z"][t]))
        return f"CTA {ctaid} thread {lin} (warp {lin >> 5} lane {lin & 31})" if c >= 0 else "?"

    # --- scheduling -------------------------------------------------------------------------------
    def _insert(self, unit, pc, ix):
        key = (unit, pc)
        g = self.groups.get(key)
        if g is None:
            self.groups[key] = _Group(pc, ix, unit)
            return
        if isinstance(g.ix, slice) or isinstance(ix, slice):
            raise ExecutionError("internal: a full group met another group at the same pc")
        merged = np.concatenate((g.ix, ix))
        merged.sort()
        g.ix = ALL if len(merged) == self.T else merged

    def _flush(self, ix, counts: list, n_instr: int):
        if n_instr == 0:
            return
        if isinstance(ix, slice):
            per_cta = np.full(self.nc, self.warps_per_cta, np.int64)
            n = self.T
        else:
            _, uniq = self._warp_list(ix)
            per_cta = np.bincount(uniq // self.warps_per_cta, minlength=self.nc)
            n = len(ix)
        self.cls_counts += np.outer(np.asarray(counts, np.int64), per_cta)
        self.thread_instr += n * n_instr

    def run(self):
        groups = self.groups
        order = self.unit_order
        while True:
            if not groups:
                if self.waiting:
                    self._release()
                    continue
                break
            key = min(groups, key=lambda k: (order[k[0]], k[1]))
            g = groups.pop(key)
            self._run_group(g)
        self.cp_pending.clear()
        if self.has_wgmma:
            self.wg_pending.clear()
            self._check_warpgroups()

    def _check_warpgroups(self):
        """wgmma.mma_async is warpgroup-collective (.sync.aligned: all 4 warps of a warpgroup, warps 4g ..
        4g + 3 of the CTA, execute the same ones): the warps of a warpgroup that issued any must have issued
        as many, and the warpgroup must be whole."""
        issued = self.wg_issued.reshape(self.nc, self.warps_per_cta)
        for c in range(self.nc):
            for first in range(0, self.warps_per_cta, 4):
                group = issued[c, first:first + 4]
                if not group.any() or (len(group) == 4 and (group == group[0]).all()):
                    continue
                w = c * self.warps_per_cta + first + int(np.argmax(group))
                line = int(self.wg_last_line[w])
                counts = ", ".join(str(int(v)) for v in group)
                self.findings.add("barrier_divergence", "wgmma by part of its warpgroup", line,
                                  self.program.ops_text(line), 1,
                                  f"warps {first}..{first + 3} of {self._who(w * 32).split(' thread')[0]} issued "
                                  f"{counts} wgmma.mma_async (the CTA has {self.warps_per_cta} warps)")

    def _run_group(self, g: _Group):
        ops = self.program.ops
        R = self.R
        pc, ix, unit = g.pc, g.ix, g.unit
        groups = self.groups
        counts = [0] * len(CLASSES)
        n_instr = 0
        limit = self.budget - self.dispatches
        try:
            while True:
                op = ops[pc]
                n_instr += 1
                if n_instr > limit:
                    raise ExecutionError(f"instruction budget of {self.budget} dispatches exhausted at PTX line "
                                         f"{op.line} (an endless loop?)")
                counts[op.cls] += 1
                act = ix
                if op.guard is not None:
                    p = R[op.guard][ix]
                    if op.guard_negated:
                        p = ~p
                    if p.all():
                        pass
                    elif not p.any():
                        act = None
                    else:
                        act = np.nonzero(p)[0] if isinstance(ix, slice) else ix[p]
                kind = op.kind
                if kind == "normal" or kind == "warpsync" or act is None:
                    if act is not None:
                        if kind == "warpsync":
                            self._check_whole_warps(act, op)
                        op.fn(self, act)
                    pc += 1
                    if groups and (unit, pc) in groups:  # falling through onto waiting threads: join them
                        self._insert(unit, pc, ix)
                        return
                    continue
                rest = None
                if act is not ix:
                    rest = np.nonzero(~p)[0] if isinstance(ix, slice) else ix[~p]
                if kind == "branch":
                    if rest is None:
                        if not groups:
                            pc = op.target
                            continue
                        self._insert(unit, op.target, ix)
                        return
                    self._insert(unit, op.target, act)
                    self._insert(unit, pc + 1, rest)
                    return
                if kind == "barrier":
                    self.waiting.append((unit, pc, act))
                elif kind == "exit":
                    self._exit(act)
                else:
                    raise ExecutionError(f"internal: unknown op kind {kind}")
                if rest is not None:
                    self._insert(unit, pc + 1, rest)
                return
        finally:
            self.dispatches += n_instr
            self._flush(ix, counts, n_instr)

    def _exit(self, act):
        t = self.tids(act)
        self.exited[t] = True
        np.subtract.at(self.alive_per_warp, t >> 5, 1)

    def _release(self):
        entries, self.waiting = self.waiting, []
        wait_pc = np.full(self.T, -1, np.int64)
        for _, pc, ix in entries:
            wait_pc[ix] = pc
        waiting = wait_pc >= 0
        per_cta = np.bincount(self.cta[waiting], minlength=self.nc)
        lo = np.full(self.nc, np.iinfo(np.int64).max)
        hi = np.full(self.nc, -1)
        np.minimum.at(lo, self.cta[waiting], wait_pc[waiting])
        np.maximum.at(hi, self.cta[waiting], wait_pc[waiting])
        ops = self.program.ops
        for c in np.nonzero(per_cta)[0]:
            if per_cta[c] < self.ntid:
                line = ops[lo[c]].line
                t0 = int(np.nonzero(waiting & (self.cta == c))[0][0])
                self.findings.add("barrier_divergence", "partial barrier", line, ops[lo[c]].text, 1,
                                  f"{per_cta[c]} of {self.ntid} threads of {self._who(t0).split(' thread')[0]} "
                                  f"arrived; the others exited without reaching it")
            if lo[c] != hi[c]:
                t0 = int(np.nonzero(waiting & (self.cta == c))[0][0])
                self.findings.add("barrier_divergence", "different barriers", ops[lo[c]].line, ops[lo[c]].text, 1,
                                  f"threads of {self._who(t0).split(' thread')[0]} wait at PTX lines "
                                  f"{ops[lo[c]].line} and {ops[hi[c]].line} at once")
        self.epoch += 1
        for unit, pc, ix in entries:
            self._insert(unit, pc + 1, ix)

    def _check_whole_warps(self, act, op: Op, member_mask=None) -> bool:
        if isinstance(act, slice):
            return True  # every thread of the batch is here
        w, uniq = self._warp_list(act)
        arrived = np.bincount(w, minlength=self.W)
        bad = uniq[arrived[uniq] != self.real_per_warp[uniq]]
        if len(bad) == 0:
            return True
        w0 = int(bad[0])
        t0 = w0 * 32
        n_arrived = int(np.bincount(self.tids(act) >> 5, minlength=self.W)[w0])
        self.findings.add("barrier_divergence", "partial warp", op.line, op.text, len(bad),
                          f"{n_arrived} of {int(self.real_per_warp[w0])} lanes of {self._who(t0).split(' (')[0]}'s "
                          f"warp execute this warp-collective instruction")
        return False

    # --- global / shared / local / param memory -------------------------------------------------
    def _oob(self, category, kind, line, mask, t, addr, nbytes, space):
        idx = np.nonzero(mask)[0]
        i0 = int(idx[0])
        a0 = int(addr[i0])
        where = self.mem.describe(a0) if space == "global" else f"offset {a0} of {space} memory " \
            f"({self.smem_size if space == 'shared' else self.local_size} bytes)"
        self.findings.add(category, kind, line, self.program.ops_text(line), len(idx),
                          f"{self._who(int(t[i0]))}: {nbytes}-byte access at {a0:#x}: {where}")

    def load_param(self, addr, width, count, ix, line):
        addr = np.asarray(addr)
        if addr.ndim == 0:
            a = int(addr)
            i, off = (a - PARAM_WINDOW) >> 20, (a - PARAM_WINDOW) & 0xfffff
            if not 0 <= i < len(self.params) or off + width * count > len(self.params[i]):
                raise ExecutionError(f"ld.param outside the parameters at PTX line {line}")
            raw = np.frombuffer(self.params[i], np.uint8, width * count, off)
            return [v for v in raw.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width])]
        vals = [np.zeros(len(addr), {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width])
                for _ in range(count)]
        for u in np.unique(addr):
            sel = addr == u
            for k, v in enumerate(self.load_param(np.uint64(u), width, count, ix, line)):
                vals[k][sel] = v
        return vals

    def load(self, space, addr, width, count, ix, line):
        return self._access(space, addr, width, count, ix, line, None)

    def store(self, space, addr, width, count, vals, ix, line):
        self._access(space, addr, width, count, ix, line, vals)

    def _access(self, space, addr, width, count, ix, line, vals):
        n = self.count(ix)
        if not (isinstance(addr, np.ndarray) and addr.shape == (n,) and addr.dtype == np.uint64):
            addr = np.broadcast_to(np.asarray(addr, np.uint64), (n,))
        if space == "generic":
            return self._generic(addr, width, count, ix, line, vals)
        if space == "global":
            return self._global(addr, width, count, ix, line, vals)
        if space == "shared":
            return self._shared(addr.astype(np.int64), width, count, ix, line, vals)
        if space == "local":
            return self._local(addr.astype(np.int64), width, count, ix, line, vals)
        raise ExecutionError(f"memory space {space} at PTX line {line}")

    def _generic(self, addr, width, count, ix, line, vals):
        t = self.tids(ix)
        a = addr.astype(np.int64)
        spaces = {"shared": (a >= SHARED_WINDOW) & (a < SHARED_WINDOW + (1 << 32)),
                  "local": (a >= LOCAL_WINDOW) & (a < LOCAL_WINDOW + (1 << 32)),
                  "param": (a >= PARAM_WINDOW) & (a < PARAM_WINDOW + (1 << 32))}
        if np.any(spaces["param"]):
            raise ExecutionError(f"generic access to kernel parameters at PTX line {line}")
        glob = ~(spaces["shared"] | spaces["local"])
        out = np.zeros((len(t), count), {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]) \
            if vals is None else None
        for space, sel in (("global", glob), ("shared", spaces["shared"]), ("local", spaces["local"])):
            if not np.any(sel):
                continue
            sub = t[sel]
            base = {"global": 0, "shared": SHARED_WINDOW, "local": LOCAL_WINDOW}[space]
            sub_addr = (a[sel] - base).astype(np.uint64)
            sub_vals = None if vals is None else vals[sel]
            if space == "global":
                r = self._global(sub_addr, width, count, sub, line, sub_vals)
            elif space == "shared":
                r = self._shared(sub_addr.astype(np.int64), width, count, sub, line, sub_vals)
            else:
                r = self._local(sub_addr.astype(np.int64), width, count, sub, line, sub_vals)
            if vals is None:
                out[sel] = r
        return out

    def _global(self, addr, width, count, ix, line, vals):
        nbytes = width * count
        t = self.tids(ix)
        phys, inside, aligned = self.mem.resolve(addr, nbytes)
        ok = inside & aligned
        kind = "load" if vals is None else "store"
        if not np.all(ok):
            if not np.all(inside):
                self._oob("out_of_bounds", f"global {kind}", line, ~inside, t, addr, nbytes, "global")
            if not np.all(aligned | ~inside):
                self._oob("misaligned", f"global {kind}", line, inside & ~aligned, t, addr, nbytes, "global")
        # counters: bytes, requests (warps), 32-byte sectors per warp
        if self.counters_on:
            self._global_counters(ix, ok, addr, nbytes, vals is None)
        view = self.mem.views[width]
        elem = phys[ok] // width
        if count > 1:
            elem = elem[:, None] + np.arange(count)
        else:
            elem = elem[:, None]
        if vals is None:
            out = np.zeros((len(t), count), view.dtype)
            out[ok] = view[elem]
            return out
        view[elem] = vals[ok] if vals.shape[0] == len(t) else vals
        return None

    def _global_counters(self, ix, ok, addr, nbytes, is_load):
        w, uniq = self._warp_list(ix)
        sectors = self._distinct_per_warp(w[ok], addr[ok].astype(np.int64) >> 5, (nbytes + 31) // 32,
                                          self.load_sectors_by_buffer if is_load else None)
        kind = "load" if is_load else "store"
        m = self.memc
        m[f"global_{kind}_bytes"] += int(ok.sum()) * nbytes
        m[f"global_{kind}_requests"] += len(uniq)
        m[f"global_{kind}_sectors"] += sectors

    @staticmethod
    def _distinct_per_warp(w, sector, span, by_buffer: Optional[np.ndarray] = None):
        """Distinct 32-byte sectors each warp touches (summed over warps); ``by_buffer`` (indexed by
        allocation) gets them added per allocation."""
        if len(w) == 0:
            return 0
        key = (w << 40) | (sector & ((1 << 40) - 1))
        if span > 1:
            key = (key[:, None] + np.arange(span)).ravel()
        key = np.sort(key)
        first = np.concatenate(([True], key[1:] != key[:-1]))
        if by_buffer is not None:
            buffers = (key[first] & ((1 << 40) - 1)) >> (GlobalMemory.SHIFT - 5)
            by_buffer += np.bincount(buffers, minlength=len(by_buffer))[:len(by_buffer)]
        return int(np.count_nonzero(first))

    def _check_window(self, space, off, nbytes, size, t, line, what):
        """Lanes whose ``nbytes`` at offset ``off`` of a ``size``-byte window are inside it and aligned;
        the others are findings."""
        inside = (off >= 0) & (off + nbytes <= size)
        aligned = (off & (nbytes - 1)) == 0
        ok = inside & aligned
        if not np.all(ok):
            if not np.all(inside):
                self._oob("out_of_bounds", f"{space} {what}", line, ~inside, t, off, nbytes, space)
            if not np.all(aligned | ~inside):
                self._oob("misaligned", f"{space} {what}", line, inside & ~aligned, t, off, nbytes, space)
        return ok

    def _shared(self, off, width, count, ix, line, vals, t=None, counters=True):
        nbytes = width * count
        if t is None:
            t = self.tids(ix)
        ok = self._check_window("shared", off, nbytes, self.smem_size, t, line, "load" if vals is None else "store")
        tt, oo = (t, off) if ok.all() else (t[ok], off[ok])
        flat = self.smem_base[tt] + oo
        if counters:
            self._bank_counters(tt, oo, nbytes, vals is None)
        self._shadow(flat, nbytes, tt, line, vals is None)
        view = self.smem_views[width]
        elem = (flat // width)[:, None] + np.arange(count) if count > 1 else (flat // width)[:, None]
        if vals is None:
            if len(tt) == len(t):
                return view[elem]
            out = np.zeros((len(t), count), view.dtype)
            out[ok] = view[elem]
            return out
        view[elem] = vals if len(tt) == len(t) else vals[ok]
        return None

    def _bank_counters(self, t, off, nbytes, is_load, phase_of=None):
        """Requests, wavefronts and bank conflicts of one shared access by threads ``t`` (warp by warp;
        a warp's lanes go in phases of 128 bytes: 32 lanes of <= 4 bytes, 16 of 8, 8 of 16). A phase
        takes as many wavefronts as the most distinct 4-byte words any one bank serves in it."""
        m = self.memc
        if len(t) == 0 or not self.counters_on:
            return
        w = t >> 5
        if phase_of is None:
            lanes_per_phase = 32 if nbytes <= 4 else 128 // nbytes
            phase = (t & 31) // lanes_per_phase
        else:
            phase = phase_of
        key1 = w * 4 + phase
        k1_lo = int(key1.min())
        key1 = key1 - k1_lo
        words = off >> 2
        nw = max(1, nbytes // 4)
        if nw > 1:
            words = (words[:, None] + np.arange(nw)).ravel()
            key1 = np.repeat(key1, nw)
        key = np.sort((key1 << 34) | words)
        uniq = key[np.concatenate(([True], key[1:] != key[:-1]))]
        kb = (uniq >> 34) * 32 + (uniq & 31)
        per_bank = np.bincount(kb, minlength=(int(kb.max()) // 32 + 1) * 32).reshape(-1, 32)
        worst = per_bank.max(axis=1)
        wavefronts = int(worst.sum())
        phases = int(np.count_nonzero(worst))
        if phase_of is None:
            requests = int(np.count_nonzero(w[1:] != w[:-1])) + 1 if np.all(w[1:] >= w[:-1]) else len(np.unique(w))
        else:
            requests = phases
        if is_load:
            m["shared_load_requests"] += requests
            m["shared_load_wavefronts"] += wavefronts
            m["shared_load_bank_conflicts"] += wavefronts - phases
            m["shared_load_bytes"] += len(t) * nbytes
        else:
            m["shared_store_requests"] += requests
            m["shared_store_wavefronts"] += wavefronts
            m["shared_store_bank_conflicts"] += wavefronts - phases
            m["shared_store_bytes"] += len(t) * nbytes

    def _shadow(self, flat, nbytes, t, line, is_load):
        """initcheck and racecheck of one shared access (bytes flat..flat+nbytes of each thread t)."""
        if len(flat) == 0:
            return
        g = self.granule
        per = max(nbytes // g, 1)
        if per == 1:
            b = flat // g
            tb = t
        else:
            b = (flat[:, None] // g + np.arange(per)).ravel()
            tb = np.repeat(t, per)
        tb = tb.astype(np.int32)
        E = self.epoch
        if is_load:
            uninit = ~self.sh_init[b]
            if uninit.any():
                i0 = int(np.nonzero(uninit)[0][0])
                lanes = np.unique(tb[uninit])
                self.findings.add("uninitialized_reads", "shared load", line, self.program.ops_text(line), len(lanes),
                                  f"{self._who(int(tb[i0]))} reads shared byte "
                                  f"{int(b[i0] * self.granule % self.smem_stride)} that no thread wrote")
            raw = (self.sh_wepoch[b] == E) & (self.sh_writer[b] != tb) & ~uninit
            if raw.any():
                self._race("read-after-write", raw, b, tb, line)
            stale = self.sh_repoch[b] != E
            if stale.any():
                sb = b[stale]
                self.sh_rmin[sb] = np.iinfo(np.int32).max
                self.sh_rmax[sb] = -1
                self.sh_repoch[sb] = E
            np.minimum.at(self.sh_rmin, b, tb)
            np.maximum.at(self.sh_rmax, b, tb)
            return
        waw = (self.sh_wepoch[b] == E) & (self.sh_writer[b] != tb)
        if len(b) > per:
            order = np.argsort(b, kind="stable")
            bs, ts = b[order], tb[order]
            dup = np.zeros(len(b), np.bool_)
            dup[order[1:]] = (bs[1:] == bs[:-1]) & (ts[1:] != ts[:-1])
            waw |= dup
        if self.has_wgmma:
            self._wgmma_shared_write(b, tb, line)
        if waw.any():
            self._race("write-after-write", waw, b, tb, line)
        war = (self.sh_repoch[b] == E) & ((self.sh_rmin[b] != tb) | (self.sh_rmax[b] != tb))
        if war.any():
            self._race("write-after-read", war, b, tb, line)
        self.sh_writer[b] = tb
        self.sh_wepoch[b] = E
        self.sh_wline[b] = line
        self.sh_init[b] = True

    def _race(self, kind, mask, b, tb, line):
        i0 = int(np.nonzero(mask)[0][0])
        other = int(self.sh_writer[b[i0]]) if kind != "write-after-read" else int(
            self.sh_rmin[b[i0]] if self.sh_rmin[b[i0]] != tb[i0] else self.sh_rmax[b[i0]])
        prev_line = int(self.sh_wline[b[i0]])
        same_warp = other >= 0 and (other >> 5) == (int(tb[i0]) >> 5)
        detail = f" (its write: PTX line {prev_line})" if kind != "write-after-read" and prev_line else ""
        n = len(np.unique(tb[mask]))
        self.findings.add("races", kind, line, self.program.ops_text(line), n,
                          f"{self._who(int(tb[i0]))} and {'' if other < 0 else self._who(other)}"
                          f"{' (same warp)' if same_warp else ''} on shared byte "
                          f"{int(b[i0] * self.granule % self.smem_stride)} "
                          f"in one barrier interval{detail}")

    def _local(self, off, width, count, ix, line, vals):
        nbytes = width * count
        t = self.tids(ix)
        ok = self._check_window("local", off, nbytes, self.local_size, t, line, "load" if vals is None else "store")
        if self.local is None:
            return np.zeros((len(t), count), np.uint8) if vals is None else None
        flat = t[ok] * self.local_size + off[ok]
        dt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
        byte_idx = flat[:, None] + np.arange(nbytes)
        if vals is None:
            out = np.zeros((len(t), count), dt)
            out[ok] = self.local[byte_idx].view(dt).reshape(-1, count)
            return out
        self.local[byte_idx] = np.ascontiguousarray(vals[ok]).view(np.uint8).reshape(-1, nbytes)
        return None

    # --- cp.async -------------------------------------------------------------------------------
    def cp_async(self, dst, src, size, src_size, ix, line):
        t = self.tids(ix)
        n = len(t)
        dst = np.broadcast_to(np.asarray(dst, np.uint64), (n,)).astype(np.int64)
        src = np.broadcast_to(np.asarray(src, np.uint64), (n,))
        src_size = np.asarray(src_size, np.int64)
        if np.any((src_size < 0) | (src_size > size)):
            raise ExecutionError(f"cp.async src-size outside [0, {size}] at PTX line {line}")
        d_ok = self._check_window("shared", dst, size, self.smem_size, t, line, "cp.async destination")
        reads = src_size > 0
        data = np.zeros((n, size), np.uint8)
        ok_src = np.ones(n, np.bool_)
        if np.any(reads):
            # the source is checked for the bytes actually read; alignment to the copy size
            for nb in np.unique(src_size[reads]):
                sel = reads & (src_size == nb)
                phys, inside, _ = self.mem.resolve(src[sel], int(nb))
                aligned = (src[sel].astype(np.int64) & (size - 1)) == 0
                if not np.all(inside):
                    self._oob("out_of_bounds", "cp.async global source", line, ~inside, t[sel], src[sel], int(nb),
                              "global")
                if not np.all(aligned | ~inside):
                    self._oob("misaligned", "cp.async global source", line, inside & ~aligned, t[sel], src[sel],
                              size, "global")
                good = inside & aligned
                rows = np.nonzero(sel)[0][good]
                data[rows, :nb] = self.mem.heap[phys[good][:, None] + np.arange(int(nb))]
                ok_src[np.nonzero(sel)[0][~good]] = False
            if self.counters_on:
                w, uniq = self._warp_list(ix)
                self.memc["global_load_bytes"] += int(src_size[reads & ok_src].sum())
                self.memc["global_load_requests"] += len(uniq)
                self.memc["global_load_sectors"] += self._distinct_per_warp(
                    w[reads & ok_src], src[reads & ok_src].astype(np.int64) >> 5, (size + 31) // 32,
                    self.load_sectors_by_buffer)
        self.memc["cp_async_bytes"] += int(src_size.sum())
        good = d_ok & ok_src
        before = self.memc["shared_store_wavefronts"]
        self._bank_counters(t[good], dst[good], size, False)
        self.memc["cp_async_store_wavefronts"] += self.memc["shared_store_wavefronts"] - before
        self.cp_pending.append({"t": t[good], "group": self.cp_commits[t[good]].copy(),
                                "flat": self.smem_base[t[good]] + dst[good], "data": data[good],
                                "done": np.zeros(int(good.sum()), np.bool_), "line": line})

    def cp_async_commit(self, ix):
        self.cp_commits[ix] += 1

    def cp_async_wait(self, ix, keep, commit_first, line):
        if commit_first:
            self.cp_async_commit(ix)
        sel = np.zeros(self.T, np.bool_)
        sel[ix] = True
        still = []
        for e in self.cp_pending:
            t = e["t"]
            land = ~e["done"] & sel[t] & (e["group"] < self.cp_commits[t] - keep)
            if land.any():
                flat = e["flat"][land]
                self._shadow(flat, e["data"].shape[1], t[land], e["line"], False)
                self.smem[(flat[:, None] + np.arange(e["data"].shape[1]))] = e["data"][land]
                e["done"] |= land
            if not e["done"].all():
                still.append(e)
        self.cp_pending = still

    # --- warp-collective --------------------------------------------------------------------------
    def _lane_table(self, ix, values, dtype):
        full = np.zeros(self.T, dtype)
        full[ix] = values
        return full

    def ldmatrix(self, addr, num, trans, generic, ix, line):
        t = self.tids(ix)
        a = np.broadcast_to(np.asarray(addr, np.uint64), (len(t),)).astype(np.int64)
        if generic:
            a = a - SHARED_WINDOW
        full = self._lane_table(ix, a, np.int64)
        _, warps = self._warp_list(ix)
        # row r of matrix m comes from lane 8m + r
        providers = (warps[:, None] * 32 + np.arange(8 * num)).ravel()
        row_addr = full[providers]
        ok = self._check_window("shared", row_addr, 16, self.smem_size, providers, line, "ldmatrix row")
        flat = self.smem_base[providers] + np.where(ok, row_addr, 0)
        self._bank_counters(providers[ok], row_addr[ok], 16, True,
                            phase_of=(np.arange(len(providers)) // 8 % num)[ok])
        self._shadow(flat[ok], 16, providers[ok], line, True)
        rows = self.smem[flat[:, None] + np.arange(16)].view(np.uint16).reshape(len(warps), num, 8, 8)
        rows = np.where(ok.reshape(len(warps), num, 8)[..., None], rows, 0)
        lane = np.arange(32)
        if not trans:
            lo = rows[:, :, lane // 4, 2 * (lane % 4)]
            hi = rows[:, :, lane // 4, 2 * (lane % 4) + 1]
        else:
            lo = rows[:, :, 2 * (lane % 4), lane // 4]
            hi = rows[:, :, 2 * (lane % 4) + 1, lane // 4]
        regs = lo.astype(np.uint32) | (hi.astype(np.uint32) << np.uint32(16))  # [W, num, 32]
        out = np.zeros((self.T, num), np.uint32)
        out[(warps[:, None] * 32 + lane).ravel()] = regs.transpose(0, 2, 1).reshape(-1, num)
        return out[t]

    def _member_check(self, mask, ix, line, what):
        t = self.tids(ix)
        lanes = t & 31
        m = np.asarray(mask, np.uint64)
        in_mask = ((np.broadcast_to(m, (len(t),)) >> lanes.astype(np.uint64)) & np.uint64(1)) == 1
        if not np.all(in_mask):
            t0 = int(t[~in_mask][0])
            self.findings.add("barrier_divergence", f"{what} outside its member mask", line,
                              self.program.ops_text(line), int((~in_mask).sum()),
                              f"{self._who(t0)} executes it but is not in the member mask")
        # every non-exited member lane must be here
        w, uniq = self._warp_list(ix)
        arrived = np.zeros(self.T, np.bool_)
        arrived[t] = True
        members = (uniq[:, None] * 32 + np.arange(32)).ravel()
        mm = int(np.broadcast_to(m, (len(t),))[0])
        want = ((np.uint64(mm) >> np.tile(np.arange(32, dtype=np.uint64), len(uniq))) & np.uint64(1)) == 1
        missing = want & ~arrived[members] & ~self.exited[members]
        if missing.any():
            t0 = int(members[missing][0])
            self.findings.add("barrier_divergence", f"{what} member missing", line, self.program.ops_text(line),
                              int(missing.sum()), f"member lane {self._who(t0)} does not execute it with its warp")
        return arrived

    def shfl(self, mode, a_reader, b, c, membermask, ix, line):
        t = self.tids(ix)
        arrived = self._member_check(membermask, ix, line, "shfl.sync")
        a = np.broadcast_to(np.asarray(a_reader(self, ix), np.uint32), (len(t),))
        full = self._lane_table(ix, a, np.uint32)
        lane = (t & 31).astype(np.int64)
        bval = np.broadcast_to(np.asarray(b, np.int64), (len(t),)) & 31
        cv = np.broadcast_to(np.asarray(c, np.int64), (len(t),))
        cval = cv & 31
        seg = (cv >> 8) & 31
        max_lane = (lane & seg) | (cval & ~seg)
        min_lane = lane & seg
        if mode == "up":
            j = lane - bval
            p = j >= max_lane
        elif mode == "down":
            j = lane + bval
            p = j <= max_lane
        elif mode == "bfly":
            j = lane ^ bval
            p = j <= max_lane
        else:
            j = min_lane | (bval & ~seg)
            p = j <= max_lane
        j = np.where(p, j, lane)
        src = t - lane + j
        inactive = ~arrived[src]
        if inactive.any():
            t0 = int(t[inactive][0])
            self.findings.add("barrier_divergence", "shfl from an inactive lane", line, self.program.ops_text(line),
                              int(inactive.sum()), f"{self._who(t0)} reads lane {int(j[inactive][0])}, "
                                                   f"which does not execute the shfl")
        return full[src], p

    def vote(self, mode, pred, membermask, ix, line):
        t = self.tids(ix)
        self._member_check(membermask, ix, line, "vote.sync")
        pred = np.broadcast_to(np.asarray(pred, np.bool_), (len(t),))
        w = t >> 5
        bits = np.zeros(self.W, np.uint64)
        np.bitwise_or.at(bits, w, np.where(pred, np.uint64(1) << (t & 31).astype(np.uint64), np.uint64(0)))
        if mode == "ballot":
            return bits[w].astype(np.uint32)
        n_true = np.bincount(w, weights=pred, minlength=self.W)
        n_all = np.bincount(w, minlength=self.W)
        if mode == "all":
            return (n_true == n_all)[w]
        if mode == "any":
            return (n_true > 0)[w]
        return ((n_true == 0) | (n_true == n_all))[w]

    def warp_sync(self, membermask, ix, line):
        self._member_check(membermask, ix, line, "bar.warp.sync")

    def elect(self, membermask, ix, line):
        """elect.sync: the lowest member lane of each warp executing it leads."""
        t = self.tids(ix)
        self._member_check(membermask, ix, line, "elect.sync")
        m = np.broadcast_to(np.asarray(membermask, np.uint64), (len(t),))
        member = ((m >> (t & 31).astype(np.uint64)) & np.uint64(1)) == 1
        leader = np.full(self.W, 32, np.int64)
        np.minimum.at(leader, (t >> 5)[member], (t & 31)[member])
        lead = leader[t >> 5]
        return np.where(lead < 32, lead, 0).astype(np.uint32), (t & 31) == lead

    # --- wgmma (sm_90a warpgroup MMA) ---------------------------------------------------------------
    # PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions" and "Async Proxy":
    # - wgmma.fence orders the warp's earlier register accesses before later wgmma.mma_async: needed before
    #   the first wgmma and after any other instruction wrote an accumulator or A-fragment register;
    # - accessing those registers, or writing shared memory a wgmma reads, before the wgmma.wait_group that
    #   retires it is undefined;
    # - wgmma reads shared memory through the async proxy: generic-proxy writes (st.shared, cp.async) need a
    #   fence.proxy.async by the writing thread before it (a barrier alone does not order proxies).
    # The math runs eagerly at issue; these rules are checked against the tracked state.
    WGMMA_SWIZZLE_BYTES = {0: 0, 1: 128, 2: 64, 3: 32}   # descriptor bits 62-63

    def wgmma_register_access(self, k, ix, line, write):
        busy = self.wg_busy[k][ix]
        if busy.any():
            t = self.tids(ix)
            hit = np.nonzero(busy)[0]
            self.findings.add("races", "wgmma register accessed before its wait_group", line,
                              self.program.ops_text(line), len(hit),
                              f"{self._who(int(t[hit[0]]))} {'writes' if write else 'reads'} an accumulator or A "
                              f"register of a wgmma.mma_async no wgmma.wait_group has retired yet")
        if write:
            self.wg_dirty[k][ix] = True

    def proxy_async_fence(self, ix):
        if self.has_wgmma:
            self.proxy_fences[ix] += 1

    def wgmma_fence(self, ix):
        self.wg_dirty[:, ix] = False
        self.wg_fenced[ix] = True

    def wgmma_commit(self, ix):
        self.wg_commits[ix] += 1

    def wgmma_wait(self, ix, keep, line):
        sel = np.zeros(self.T, np.bool_)
        sel[ix] = True
        still = []
        for e in self.wg_pending:
            t0 = e["t"][0]
            if sel[t0] and e["group"] < self.wg_commits[t0] - keep:
                if e["slots"]:
                    self.wg_busy[np.ix_(e["slots"], e["t"])] -= 1
                self.sh_wg_busy[e["granules"]] -= 1
            else:
                still.append(e)
        self.wg_pending = still

    def _wgmma_shared_write(self, b, tb, line):
        busy = self.sh_wg_busy[b] > 0
        if busy.any():
            i0 = int(np.nonzero(busy)[0][0])
            self.findings.add("races", "shared write to bytes an in-flight wgmma reads", line,
                              self.program.ops_text(line), len(np.unique(tb[busy])),
                              f"{self._who(int(tb[i0]))} writes shared byte "
                              f"{int(b[i0] * self.granule % self.smem_stride)} before the wgmma.wait_group that "
                              f"retires the wgmma.mma_async reading it")
        self.sh_wfence[b] = self.proxy_fences[tb]

    def _wgmma_operand(self, desc: int, rows: np.ndarray, mn_major: bool, lane0: int, line: int, what: str):
        """Shared-memory byte offsets [len(rows), 16] of a 16-bit operand (rows = M or N index, 16 K
        elements) described by ``desc`` (PTX ISA "Matrix Descriptor Format" and "Shared Memory Matrix
        Layout"): start address, leading and stride byte offsets (bits 0-13, 16-29, 32-45, each >> 4),
        base offset (49-51), swizzle mode (62-63).
        K-major (imm-trans 0): without swizzle, 8-row x 16-byte core matrices (rows 16 bytes apart), the
        next 8 K elements at the leading byte offset, the next 8 rows at the stride byte offset; with a
        W-byte swizzle (W = 128, 64, 32), rows W bytes apart, K contiguous in a row, the next 8 rows at the
        stride byte offset, the leading byte offset not used.
        MN-major (imm-trans 1): without swizzle, core matrices of 8 K rows x 8 contiguous M/N elements
        (16 bytes), the next 8 K at the leading byte offset, the next 8 M/N at the stride byte offset; with
        a W-byte swizzle, K rows W bytes apart holding W/2 contiguous M/N elements, the next 8 K at the
        stride byte offset, the next W/2 M/N at the leading byte offset.
        Swizzled: the 16-byte chunk address bits 4.. XORed with bits 7.. of the shared address (W/16 - 1
        of them: the pattern repeats every 8 W bytes)."""
        start = (desc & 0x3FFF) << 4
        lbo = ((desc >> 16) & 0x3FFF) << 4
        sbo = ((desc >> 32) & 0x3FFF) << 4
        base_offset = (desc >> 49) & 7
        width = self.WGMMA_SWIZZLE_BYTES[(desc >> 62) & 3]
        k = np.arange(16, dtype=np.int64)
        r = rows.astype(np.int64)[:, None]
        if width == 0:
            if mn_major:
                return start + (r // 8) * sbo + (r % 8) * 2 + (k // 8) * lbo + (k % 8) * 16
            return start + (r // 8) * sbo + (r % 8) * 16 + (k // 8) * lbo + (k % 8) * 2
        if base_offset:
            raise ExecutionError(f"wgmma descriptor with a non-zero base offset at PTX line {line}: not implemented")
        if start % (8 * width) >= width:
            self.findings.add("misaligned", f"wgmma {what} descriptor", line, self.program.ops_text(line), 1,
                              f"{self._who(lane0)}: start address {start:#x} is not in the first row of a "
                              f"{8 * width}-byte {width}B-swizzle pattern (base offset 0)")
        if mn_major:
            per_row = width // 2
            addr = start + (r // per_row) * lbo + (r % per_row) * 2 + (k // 8) * sbo + (k % 8) * width
        else:
            addr = start + (r // 8) * sbo + (r % 8) * width + k * 2
        return addr ^ (((addr >> 7) & (width // 16 - 1)) << 4)

    def _wgmma_read(self, off, lane0, line, what):
        """The 16-bit values at shared offsets ``off`` of the CTA of thread ``lane0`` (checked, counted in
        the shadow state as a read by ``lane0``), and the shadow granules read."""
        inside = (off >= 0) & (off + 2 <= self.smem_size)
        if not inside.all():
            i0 = np.unravel_index(int(np.argmin(inside)), off.shape)
            self.findings.add("out_of_bounds", f"wgmma {what} operand", line, self.program.ops_text(line), 1,
                              f"{self._who(lane0)}: the descriptor's operand reaches shared offset "
                              f"{int(off[i0]):#x} of {self.smem_size} bytes")
        flat = self.smem_base[lane0] + np.where(inside, off, 0)
        vals = np.where(inside, self.smem_views[2][flat // 2], 0).astype(np.uint16)
        g = self.granule
        granules = np.unique(flat[inside] // g)
        self._shadow(granules * g, g, np.full(len(granules), lane0, np.int64), line, True)
        writers = self.sh_writer[granules]
        written = writers >= 0
        unfenced = written & (self.proxy_fences[np.where(written, writers, 0)] <= self.sh_wfence[granules])
        if unfenced.any():
            i0 = int(np.nonzero(unfenced)[0][0])
            self.findings.add("races", "wgmma reads generic-proxy writes without fence.proxy.async", line,
                              self.program.ops_text(line), int(unfenced.sum()),
                              f"{self._who(lane0)}'s wgmma reads shared byte "
                              f"{int(granules[i0] * g % self.smem_stride)} that {self._who(int(writers[i0]))} wrote "
                              f"(PTX line {int(self.sh_wline[granules[i0]])}) with no fence.proxy.async after it")
        return vals, granules

    # accumulator register i of lane (g, t) in each warp's 16 x N slice: row g (+ 8 for i % 4 >= 2),
    # column 8 (i / 4) + 2 t + i % 2 (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16")
    @staticmethod
    def _wgmma_d_positions(n: int) -> np.ndarray:
        lane = np.arange(32)[:, None]
        i = np.arange(n // 2)[None, :]
        return ((lane >> 2) + 8 * ((i >> 1) & 1)) * n + 8 * (i >> 2) + 2 * (lane & 3) + (i & 1)

    def wgmma(self, n, a, b_desc, d_vals, scale_d, scale_a, scale_b, trans_a, trans_b, bf, d_slots, a_slots, ix,
              line):
        t = self.tids(ix)
        _, warps = self._warp_list(ix)
        nw = len(warps)
        lanes = (warps[:, None] * 32 + np.arange(32)).ravel()
        pos = np.full(self.T, -1, np.int64)
        pos[t] = np.arange(len(t))
        li = pos[lanes]
        if (li < 0).any():  # part of a warp: a barrier_divergence finding already; not executed
            return np.stack([np.broadcast_to(np.asarray(v, np.float32), (len(t),)) for v in d_vals], axis=-1)
        self.wg_issued[warps] += 1
        self.wg_last_line[warps] = line
        slots = d_slots + a_slots
        # wgmma.fence since the registers were last written by another instruction (or ever)
        stale = ~self.wg_fenced[t]
        if slots:
            stale |= self.wg_dirty[np.ix_(slots, t)].any(axis=0)
        if stale.any():
            t0 = int(t[np.nonzero(stale)[0][0]])
            self.findings.add("races", "wgmma without wgmma.fence", line, self.program.ops_text(line),
                              int(stale.sum()), f"{self._who(t0)}: no wgmma.fence since "
                              f"{'its accumulator or A registers were written' if self.wg_fenced[t0] else 'the start'}")
        registers_a = isinstance(a, list)
        bdesc = np.broadcast_to(np.asarray(b_desc, np.uint64), (len(t),))[li].reshape(nw, 32)
        adesc = None if registers_a else np.broadcast_to(np.asarray(a, np.uint64), (len(t),))[li].reshape(nw, 32)
        sd = np.broadcast_to(np.asarray(scale_d, np.bool_), (len(t),))[li].reshape(nw, 32)
        D = np.stack([np.broadcast_to(np.asarray(v, np.float32), (len(t),))[li] for v in d_vals], axis=-1)
        D = D.reshape(nw, 32, n // 2).astype(np.float64)
        if registers_a:
            halves = []
            for r in a:
                v = np.broadcast_to(np.asarray(r, np.uint32), (len(t),))[li]
                halves += [(v & np.uint32(0xffff)).astype(np.uint16), (v >> np.uint32(16)).astype(np.uint16)]
            a_lanes = self._half_values(np.stack(halves, axis=-1).reshape(nw, 256), bf)
        d_pos = self._wgmma_d_positions(n).ravel()
        out = np.empty((nw, 32, n // 2))
        for w in range(nw):
            lane0 = int(lanes[w * 32])
            quarter = int(self.lin[lane0] >> 5) & 3
            if registers_a:
                A = np.empty(256)
                A[self.POS_A] = a_lanes[w]
                A = A.reshape(16, 16)
                a_granules = np.zeros(0, np.int64)
            else:
                off = self._wgmma_operand(int(adesc[w, 0]), 16 * quarter + np.arange(16), bool(trans_a), lane0,
                                          line, "A")
                raw, a_granules = self._wgmma_read(off, lane0, line, "A")
                A = self._half_values(raw, bf)
            off = self._wgmma_operand(int(bdesc[w, 0]), np.arange(n), bool(trans_b), lane0, line, "B")
            raw, b_granules = self._wgmma_read(off, lane0, line, "B")
            B = self._half_values(raw, bf).T            # [16 k, n]
            C = np.zeros(16 * n)
            if sd[w, 0]:
                C[d_pos] = D[w].ravel()
            res = (scale_a * A) @ (scale_b * B) + C.reshape(16, n)
            out[w] = res.ravel()[d_pos].reshape(32, n // 2)
            granules = np.unique(np.concatenate((a_granules, b_granules)))
            self.sh_wg_busy[granules] += 1
            lane_t = lanes[w * 32:(w + 1) * 32]
            self.wg_pending.append({"t": lane_t, "group": int(self.wg_commits[lane_t[0]]), "slots": slots,
                                    "granules": granules})
        if slots:
            self.wg_busy[np.ix_(slots, lanes)] += 1
        if self.counters_on:
            m = self.memc
            m["wgmma_flop"] += nw * 2 * 16 * n * 16                 # a quarter of m64nNk16 per warp
            a_bytes = 0 if registers_a else nw * 16 * 16 * 2
            b_bytes = nw * n * 16 * 2 // 4                          # a quarter of B per warp
            m["wgmma_shared_a_bytes"] += a_bytes
            m["wgmma_shared_b_bytes"] += b_bytes
            m["wgmma_shared_wavefronts"] += (a_bytes + b_bytes) / 128
        flat = out.reshape(nw * 32, n // 2).astype(np.float32)
        back = np.full(self.T, -1, np.int64)
        back[lanes] = np.arange(nw * 32)
        return flat[back[t]]

    @staticmethod
    def _half_values(raw, bf: bool):
        if bf:
            return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
        return raw.view(np.float16).astype(np.float64)

    # fragment positions of mma.m16n8k16 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
    _lane = np.arange(32)
    _g, _tq = _lane >> 2, _lane & 3
    _e8 = np.arange(8)
    POS_A = ((_g[:, None] + 8 * ((_e8[None, :] >> 1) & 1)) * 16
             + (2 * _tq[:, None] + (_e8[None, :] & 1) + 8 * (_e8[None, :] >= 4))).ravel()
    _e4 = np.arange(4)
    POS_B = ((2 * _tq[:, None] + (_e4[None, :] & 1) + 8 * (_e4[None, :] >= 2)) * 8 + _g[:, None]).ravel()
    POS_C = ((_g[:, None] + 8 * (_e4[None, :] >= 2)) * 8 + 2 * _tq[:, None] + (_e4[None, :] & 1)).ravel()

    def mma_m16n8k16(self, a_regs, b_regs, c_regs, bf, ctype, dtype, ix):
        t = self.tids(ix)
        _, warps = self._warp_list(ix)
        lanes = (warps[:, None] * 32 + self._lane).ravel()
        nw = len(warps)
        in_order = len(t) == len(lanes) and (isinstance(ix, slice) or np.array_equal(t, lanes))

        def gather(vals, dt):
            if in_order:
                return np.broadcast_to(np.asarray(vals, dt), (len(t),)).reshape(nw, 32)
            full = np.zeros(self.T, dt)
            full[t] = vals
            return full[lanes].reshape(nw, 32)

        def halves(regs):
            out = []
            for r in regs:
                v = gather(r, np.uint32)
                out += [(v & np.uint32(0xffff)).astype(np.uint16), (v >> np.uint32(16)).astype(np.uint16)]
            h = np.stack(out, axis=-1)  # [W, 32, 2 * len(regs)]
            if bf:
                return (h.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
            return h.view(np.float16).astype(np.float64)

        A = np.empty((nw, 256))
        A[:, self.POS_A] = halves(a_regs).reshape(nw, 256)
        B = np.empty((nw, 128))
        B[:, self.POS_B] = halves(b_regs).reshape(nw, 128)
        C = np.empty((nw, 128))
        if ctype == "f32":
            C[:, self.POS_C] = np.stack([gather(r, np.float32) for r in c_regs], axis=-1).reshape(nw, 128)
        else:
            C[:, self.POS_C] = halves(c_regs).reshape(nw, 128)
        D = np.matmul(A.reshape(nw, 16, 16), B.reshape(nw, 16, 8)) + C.reshape(nw, 16, 8)
        Dl = D.reshape(nw, 128)[:, self.POS_C].reshape(nw * 32, 4)
        if in_order:
            picked = Dl
        else:
            back = np.full(self.T, -1, np.int64)
            back[lanes] = np.arange(nw * 32)
            picked = Dl[back[t]]
        if dtype == "f32":
            vals = picked.astype(np.float32)
            return [vals[:, k] for k in range(4)]
        h = picked.astype(np.float16).view(np.uint16).astype(np.uint32)
        return [h[:, 0] | (h[:, 1] << np.uint32(16)), h[:, 2] | (h[:, 3] << np.uint32(16))]


# -------------------------------------------------------------------------------------------------
# Launches

class Launcher:
    """Runs launches of one PTX module's kernels against a GlobalMemory."""

    def __init__(self, module, memory: GlobalMemory, programs: Optional[dict] = None):
        """``programs``: a cache of compiled kernels by name, to share between launchers."""
        self.module = module
        self.memory = memory
        self._programs: dict[str, Program] = {} if programs is None else programs

    def program(self, name: str) -> Program:
        p = self._programs.get(name)
        if p is None:
            if name not in self.module.kernels:
                raise PtxError(f"no .entry {name} in {self.module.source_name}")
            p = Program(self.module.kernels[name])
            self._programs[name] = p
        return p

    def run(self, name: str, grid, block, dynamic_shared: int, params: list, ctas=None, schedule: str = "lockstep",
            batch_threads: int = 2048, budget: int = 50_000_000, label: Optional[str] = None,
            counters: bool = True) -> LaunchResult:
        """Run CTAs ``ctas`` (default: every CTA of ``grid``) of kernel ``name``; ``params`` holds each
        parameter's bytes. CTAs run in batches of about ``batch_threads`` threads. ``counters=False``
        skips the memory counters (a second run only checking for order-dependent results)."""
        program = self.program(name)
        kernel = program.kernel
        if len(params) != len(kernel.params):
            raise ExecutionError(f"{name}: {len(params)} parameters given, the kernel has {len(kernel.params)}")
        for p, raw in zip(kernel.params, params):
            if len(raw) != p.size:
                raise ExecutionError(f"{name}: parameter {p.name} has {len(raw)} bytes, the PTX declares {p.size}")
        grid = tuple(int(v) for v in grid)
        block = tuple(int(v) for v in block)
        if ctas is None:
            ctas = [(x, y, z) for z in range(grid[2]) for y in range(grid[1]) for x in range(grid[0])]
        findings = Findings(label or name)
        per_cta = []
        memc = {k: 0 for k in MEM_COUNTERS}
        by_buffer = np.zeros(len(self.memory.names), np.int64)
        thread_instr = 0
        t0 = time.perf_counter()
        tpc = (block[0] * block[1] * block[2] + 31) // 32 * 32
        per_batch = max(1, batch_threads // tpc)
        for i in range(0, len(ctas), per_batch):
            chunk = ctas[i:i + per_batch]
            batch = Batch(program, self.memory, grid, block, dynamic_shared, params, chunk, findings, schedule, budget,
                          counters)
            batch.run()
            per_cta.append(batch.cls_counts)
            thread_instr += batch.thread_instr
            for k, v in batch.memc.items():
                memc[k] += v
            by_buffer += batch.load_sectors_by_buffer
        counts = np.concatenate(per_cta, axis=1) if per_cta else np.zeros((len(CLASSES), 0), np.int64)
        return LaunchResult(name, grid, block, grid[0] * grid[1] * grid[2], len(ctas), counts, memc, thread_instr,
                            int(counts.sum()), time.perf_counter() - t0, findings,
                            {self.memory.names[i]: int(v) for i, v in enumerate(by_buffer) if v})
