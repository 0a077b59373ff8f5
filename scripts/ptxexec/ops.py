"""PTX instruction semantics, compiled once per instruction into a closure ``fn(ctx, ix)`` that runs it for
the threads ``ix`` (an index array, or ``slice(None)`` for every thread of the batch) on numpy arrays.

Written from the PTX ISA's instruction descriptions: integer results wrap to their type, f32 arithmetic
rounds to nearest even (``fma``/``mad`` once, from the exact product), float -> int conversions saturate
and send NaN to 0, ``setp`` distinguishes ordered and unordered comparisons. Memory, warp-collective and
control instructions call into the machine (``ctx``); see machine.py. An opcode or modifier not listed
here raises :class:`PtxError` naming it and its PTX line.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional

import numpy as np

from .ptx import (Address, Imm, Instruction, NotPred, PredPair, PtxError, Reg, Sink, Special, Symbol, TYPE_BYTES,
                  Vector)

# numpy dtype of each PTX type as arithmetic sees it (fp16 / bf16 values are carried as bits).
DT = {
    "pred": np.dtype(np.bool_),
    "b8": np.dtype(np.uint8), "u8": np.dtype(np.uint8), "s8": np.dtype(np.int8),
    "b16": np.dtype(np.uint16), "u16": np.dtype(np.uint16), "s16": np.dtype(np.int16),
    "f16": np.dtype(np.uint16), "bf16": np.dtype(np.uint16),
    "b32": np.dtype(np.uint32), "u32": np.dtype(np.uint32), "s32": np.dtype(np.int32), "f32": np.dtype(np.float32),
    "f16x2": np.dtype(np.uint32), "bf16x2": np.dtype(np.uint32),
    "b64": np.dtype(np.uint64), "u64": np.dtype(np.uint64), "s64": np.dtype(np.int64), "f64": np.dtype(np.float64),
}
INT_TYPES = {"b8", "u8", "s8", "b16", "u16", "s16", "b32", "u32", "s32", "b64", "u64", "s64"}
SIGNED = {"s8", "s16", "s32", "s64"}
FLOAT_TYPES = {"f32", "f64"}
UNSIGNED_OF_SIZE = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}
SIGNED_OF_SIZE = {1: np.dtype(np.int8), 2: np.dtype(np.int16), 4: np.dtype(np.int32), 8: np.dtype(np.int64)}
ALL_TYPES = set(DT)

# Instruction classes the counters use.
CLASSES = ("int", "f32", "ld.global", "st.global", "ld.shared", "st.shared", "ld.param", "ld.local", "st.local",
           "cp.async", "mma", "barrier", "control", "warp", "other", "wgmma")
CLS = {name: i for i, name in enumerate(CLASSES)}


@dataclasses.dataclass
class Op:
    """One compiled instruction."""
    kind: str                     # normal | branch | barrier | exit | warpsync (normal but warp-collective)
    fn: Optional[Callable]
    cls: int
    line: int
    text: str
    guard: Optional[int] = None   # predicate register slot
    guard_negated: bool = False
    target: int = -1              # branch target (instruction index)


def unimplemented(ins: Instruction, what: str = "") -> PtxError:
    detail = f" ({what})" if what else ""
    return PtxError(f"unimplemented PTX instruction '{ins.opcode}'{detail} at PTX line {ins.line}: {ins.text}")


# -------------------------------------------------------------------------------------------------
# Operands

def _as_dtype(arr, dt: np.dtype):
    """Reinterpret or resize raw register contents to ``dt`` (truncate, zero-extend; floats by bits)."""
    if arr.dtype == dt:
        return arr
    if arr.dtype.itemsize == dt.itemsize:
        return arr.view(dt)
    raw = arr.view(UNSIGNED_OF_SIZE[arr.dtype.itemsize]) if arr.dtype != np.bool_ else arr.astype(np.uint8)
    return raw.astype(UNSIGNED_OF_SIZE[dt.itemsize]).view(dt)


def imm_value(imm: Imm, dt: np.dtype):
    """A numpy scalar of ``dt`` for an immediate."""
    if imm.is_float_bits:
        bits = imm.value
        src = np.array(bits, dtype=np.uint32 if len(imm.text) == 10 else np.uint64)
        fl = src.view(np.float32 if len(imm.text) == 10 else np.float64)
        if dt.kind == "f":
            return fl.astype(dt)[()]
        return src.astype(UNSIGNED_OF_SIZE[dt.itemsize]).view(dt)[()]
    if isinstance(imm.value, float):
        if dt.kind != "f":
            raise PtxError(f"float immediate {imm.text} for an integer operand")
        return np.array(imm.value, dtype=dt)[()]
    if dt == np.bool_:
        return np.bool_(imm.value != 0)
    if dt.kind == "f":
        return np.array(imm.value, dtype=dt)[()]
    mask = (1 << (8 * dt.itemsize)) - 1
    return np.array(imm.value & mask, dtype=UNSIGNED_OF_SIZE[dt.itemsize]).view(dt)[()]


class Compiler:
    """Compiles the instructions of one kernel; ``symbols`` resolves shared/param/local symbol addresses."""

    def __init__(self, kernel, symbols: dict):
        self.kernel = kernel
        self.symbols = symbols
        self.labels = kernel.labels
        self.wgmma_slots = wgmma_register_slots(kernel)

    # --- operand access ------------------------------------------------------------------------
    # Registers a wgmma.mma_async reads or writes (its accumulators, its A fragment) are watched when any
    # other instruction reads or writes them: the machine reports accesses while such a wgmma is in flight,
    # and remembers writes that need a wgmma.fence before the next wgmma (machine.Batch.wgmma_register_access).
    def reader(self, ins: Instruction, opnd, dt: np.dtype):
        read = self._reader(ins, opnd, dt)
        if ins.base == "wgmma" or not isinstance(opnd, Reg) or opnd.slot not in self.wgmma_slots:
            return read
        k, line = self.wgmma_slots[opnd.slot], ins.line

        def watched(c, ix):
            c.wgmma_register_access(k, ix, line, False)
            return read(c, ix)
        return watched

    def writer(self, ins: Instruction, opnd, vdt: np.dtype, signed: bool = False):
        write = self._writer(ins, opnd, vdt, signed)
        if ins.base == "wgmma" or not isinstance(opnd, Reg) or opnd.slot not in self.wgmma_slots:
            return write
        k, line = self.wgmma_slots[opnd.slot], ins.line

        def watched(c, ix, v):
            c.wgmma_register_access(k, ix, line, True)
            write(c, ix, v)
        return watched

    def _reader(self, ins: Instruction, opnd, dt: np.dtype):
        if isinstance(opnd, Reg):
            s, st = opnd.slot, np.dtype(opnd.storage)
            if st == dt:
                return lambda c, ix: c.R[s][ix]
            if st.itemsize == dt.itemsize:
                return lambda c, ix: c.R[s][ix].view(dt)
            return lambda c, ix: _as_dtype(c.R[s][ix], dt)
        if isinstance(opnd, Imm):
            v = imm_value(opnd, dt)
            return lambda c, ix: v
        if isinstance(opnd, Special):
            name = opnd.name
            if dt.itemsize == 4:
                return lambda c, ix: c.sreg[name][ix].view(dt)
            return lambda c, ix: _as_dtype(c.sreg[name][ix], dt)
        if isinstance(opnd, Symbol):
            if opnd.name not in self.symbols:
                raise PtxError(f"unknown symbol {opnd.name} at PTX line {ins.line}: {ins.text}")
            v = imm_value(Imm(self.symbols[opnd.name], str(self.symbols[opnd.name])), dt)
            return lambda c, ix: v
        if isinstance(opnd, NotPred):
            s = opnd.reg.slot
            return lambda c, ix: ~c.R[s][ix]
        raise unimplemented(ins, f"operand {opnd}")

    def _writer(self, ins: Instruction, opnd, vdt: np.dtype, signed: bool = False):
        """A function (c, ix, value) storing a value of dtype ``vdt`` into ``opnd``; a narrower value is
        sign-extended when ``signed``, else zero-extended; a wider one truncated."""
        if isinstance(opnd, Sink):
            return lambda c, ix, v: None
        if not isinstance(opnd, Reg):
            raise unimplemented(ins, f"destination {opnd}")
        s, st = opnd.slot, np.dtype(opnd.storage)
        if st == vdt:
            def w(c, ix, v):
                c.R[s][ix] = v
        elif st.itemsize == vdt.itemsize or st == np.bool_:
            if st == np.bool_:
                def w(c, ix, v):
                    c.R[s][ix] = np.asarray(v) != 0
            else:
                def w(c, ix, v):
                    c.R[s][ix] = np.asarray(v).view(st)
        elif vdt.itemsize < st.itemsize:
            ext = SIGNED_OF_SIZE[st.itemsize] if signed else UNSIGNED_OF_SIZE[st.itemsize]
            src = SIGNED_OF_SIZE[vdt.itemsize] if signed else UNSIGNED_OF_SIZE[vdt.itemsize]

            def w(c, ix, v):
                c.R[s][ix] = np.asarray(v).view(src).astype(ext).view(st)
        else:
            tgt = UNSIGNED_OF_SIZE[st.itemsize]

            def w(c, ix, v):
                c.R[s][ix] = np.asarray(v).view(UNSIGNED_OF_SIZE[vdt.itemsize]).astype(tgt).view(st)
        return w

    # --- compile ----------------------------------------------------------------------------------
    # Modifiers (besides types) the simple opcodes accept; the others check their own.
    PLAIN_MODIFIERS = {
        "and": set(), "or": set(), "xor": set(), "not": set(), "cnot": set(), "selp": set(), "mov": set(),
        "shl": set(), "shr": set(), "bfe": set(), "bfi": set(), "popc": set(), "clz": set(), "brev": set(),
        "prmt": set(), "lop3": set(), "rem": set(), "min": {"ftz"}, "max": {"ftz"},
        "membar": {"cta", "gl", "sys"},
        "exit": set(),
    }

    def compile(self, ins: Instruction) -> Op:
        builder = getattr(self, "op_" + ins.base.replace(".", "_"), None)
        if builder is None:
            raise unimplemented(ins)
        if ins.base in self.PLAIN_MODIFIERS:
            self._check_mods(ins, self.PLAIN_MODIFIERS[ins.base])
        op = builder(ins)
        op.line, op.text = ins.line, ins.text
        if ins.guard is not None:
            op.guard, op.guard_negated = ins.guard.slot, ins.guard_negated
        return op

    @staticmethod
    def _type(ins: Instruction, allowed=None) -> str:
        types = [m for m in ins.mods if m in ALL_TYPES]
        if not types:
            raise unimplemented(ins, "no type")
        t = types[-1]
        if allowed is not None and t not in allowed:
            raise unimplemented(ins, f"type .{t}")
        return t

    @staticmethod
    def _check_mods(ins: Instruction, known: set):
        for m in ins.mods:
            if m not in known and m not in ALL_TYPES:
                raise unimplemented(ins, f"modifier .{m}")

    def _normal(self, fn, cls="int") -> Op:
        return Op("normal", fn, CLS[cls], 0, "")

    # --- integer and float arithmetic ---------------------------------------------------------
    def _binary(self, ins, f_int=None, f_float=None, known=frozenset(), float_known=frozenset({"rn", "ftz"})):
        t = self._type(ins)
        if t in INT_TYPES and f_int is not None:
            self._check_mods(ins, known)
            dt = DT[t]
            a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
            w = self.writer(ins, ins.operands[0], dt)
            return self._normal(lambda c, ix: w(c, ix, f_int(a(c, ix), b(c, ix))))
        if t in FLOAT_TYPES and f_float is not None:
            self._check_mods(ins, float_known)
            dt = DT[t]
            a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
            w = self.writer(ins, ins.operands[0], dt)
            ftz, sat = "ftz" in ins.mods, "sat" in ins.mods
            if not ftz and not sat:
                return self._normal(lambda c, ix: w(c, ix, f_float(a(c, ix), b(c, ix))), "f32")
            return self._normal(lambda c, ix: w(c, ix, _post(f_float(_ftz(a(c, ix), ftz), _ftz(b(c, ix), ftz)),
                                                             ftz, sat)), "f32")
        if t in ("f16", "f16x2", "bf16", "bf16x2") and f_float is not None:
            return self._half_arith(ins, lambda x, y: f_float(x, y))
        raise unimplemented(ins, f"type .{t}")

    def op_add(self, ins):
        t = self._type(ins)
        if t == "s32" and "sat" in ins.mods:
            self._check_mods(ins, {"sat"})
            a, b = (self.reader(ins, o, DT[t]) for o in ins.operands[1:3])
            w = self.writer(ins, ins.operands[0], DT[t])
            return self._normal(lambda c, ix: w(c, ix, np.clip(np.asarray(a(c, ix), np.int64) + b(c, ix),
                                                                -2**31, 2**31 - 1).astype(np.int32)))
        if "cc" in ins.mods:
            raise unimplemented(ins, "carry (.cc)")
        return self._binary(ins, np.add, np.add, float_known={"rn", "ftz", "sat"})

    def op_sub(self, ins):
        if "cc" in ins.mods or "sat" in ins.mods and self._type(ins) in INT_TYPES:
            raise unimplemented(ins, "carry/saturation")
        return self._binary(ins, np.subtract, np.subtract, float_known={"rn", "ftz", "sat"})

    def op_min(self, ins):
        return self._binary(ins, np.minimum, np.fmin, float_known={"ftz"})

    def op_max(self, ins):
        return self._binary(ins, np.maximum, np.fmax, float_known={"ftz"})

    def op_and(self, ins):
        return self._logic(ins, np.bitwise_and)

    def op_or(self, ins):
        return self._logic(ins, np.bitwise_or)

    def op_xor(self, ins):
        return self._logic(ins, np.bitwise_xor)

    def _logic(self, ins, f):
        t = self._type(ins, {"pred", "b16", "b32", "b64"})
        dt = DT[t]
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        w = self.writer(ins, ins.operands[0], dt)
        return self._normal(lambda c, ix: w(c, ix, f(a(c, ix), b(c, ix))))

    def op_not(self, ins):
        t = self._type(ins, {"pred", "b16", "b32", "b64"})
        dt = DT[t]
        a = self.reader(ins, ins.operands[1], dt)
        w = self.writer(ins, ins.operands[0], dt)
        return self._normal(lambda c, ix: w(c, ix, np.invert(a(c, ix))))

    def op_cnot(self, ins):
        t = self._type(ins, {"b16", "b32", "b64"})
        dt = DT[t]
        a = self.reader(ins, ins.operands[1], dt)
        w = self.writer(ins, ins.operands[0], dt)
        return self._normal(lambda c, ix: w(c, ix, (np.asarray(a(c, ix)) == 0).astype(dt)))

    def op_neg(self, ins):
        return self._signed_unary(ins, np.negative)

    def op_abs(self, ins):
        return self._signed_unary(ins, np.abs)

    def _signed_unary(self, ins, f):
        t = self._type(ins, {"s16", "s32", "s64", "f32", "f64"})
        self._check_mods(ins, {"ftz"})
        dt = DT[t]
        a = self.reader(ins, ins.operands[1], dt)
        w = self.writer(ins, ins.operands[0], dt)
        ftz = "ftz" in ins.mods
        return self._normal(lambda c, ix: w(c, ix, f(_ftz(a(c, ix), ftz))), "f32" if t in FLOAT_TYPES else "int")

    def op_mul(self, ins):
        t = self._type(ins)
        if t in FLOAT_TYPES:
            return self._binary(ins, None, np.multiply, float_known={"rn", "ftz", "sat"})
        if t in ("f16", "f16x2", "bf16", "bf16x2"):
            return self._half_arith(ins, np.multiply)
        return self._int_multiply(ins, t, addend=False)

    def op_mad(self, ins):
        t = self._type(ins)
        if t in FLOAT_TYPES:
            return self._fma(ins)
        return self._int_multiply(ins, t, addend=True)

    def _int_multiply(self, ins, t: str, addend: bool):
        """mul.{lo,hi,wide} d, a, b and mad.{lo,hi,wide} d, a, b, c (the addend has d's type)."""
        mode = next((m for m in ins.mods if m in ("lo", "hi", "wide")), None)
        self._check_mods(ins, {"lo", "hi", "wide"})
        if mode is None:
            raise unimplemented(ins, f"{ins.base} without .lo/.hi/.wide")
        dt = DT[t]
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        if mode == "wide":
            if dt.itemsize == 8:
                raise unimplemented(ins, ".wide of 64-bit")
            out = SIGNED_OF_SIZE[2 * dt.itemsize] if t in SIGNED else UNSIGNED_OF_SIZE[2 * dt.itemsize]

            def product(c, ix):
                return np.multiply(np.asarray(a(c, ix)).astype(out), np.asarray(b(c, ix)).astype(out))
        elif mode == "lo":
            out = dt

            def product(c, ix):
                return np.multiply(a(c, ix), b(c, ix))
        else:
            out = dt

            def product(c, ix):
                return _mul_hi(np.asarray(a(c, ix)), np.asarray(b(c, ix)), t)
        w = self.writer(ins, ins.operands[0], out)
        if not addend:
            return self._normal(lambda c, ix: w(c, ix, product(c, ix)))
        cc = self.reader(ins, ins.operands[3], out)
        return self._normal(lambda c, ix: w(c, ix, np.add(product(c, ix), cc(c, ix))))

    def op_fma(self, ins):
        return self._fma(ins)

    def _fma(self, ins):
        t = self._type(ins)
        if t in ("f16", "f16x2", "bf16", "bf16x2"):
            return self._half_fma(ins)
        if t != "f32":
            raise unimplemented(ins, f"type .{t}")
        self._check_mods(ins, {"rn", "ftz", "sat"})
        if "rn" not in ins.mods:
            raise unimplemented(ins, "fma/mad.f32 without .rn")
        a, b, cc = (self.reader(ins, o, DT[t]) for o in ins.operands[1:4])
        w = self.writer(ins, ins.operands[0], DT[t])
        ftz, sat = "ftz" in ins.mods, "sat" in ins.mods
        if not ftz and not sat:
            return self._normal(lambda c, ix: w(c, ix, fma_f32(a(c, ix), b(c, ix), cc(c, ix))), "f32")
        return self._normal(lambda c, ix: w(c, ix, _post(fma_f32(_ftz(a(c, ix), ftz), _ftz(b(c, ix), ftz),
                                                                 _ftz(cc(c, ix), ftz)), ftz, sat)), "f32")

    def op_div(self, ins):
        t = self._type(ins)
        if t in INT_TYPES:
            self._check_mods(ins, set())
            dt = DT[t]
            a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
            w = self.writer(ins, ins.operands[0], dt)
            return self._normal(lambda c, ix: w(c, ix, _div_trunc(np.asarray(a(c, ix)), np.asarray(b(c, ix)), dt)[0]))
        # .rn is IEEE division; .approx and .full are within 2 ulp of it: computed exactly here.
        return self._binary(ins, None, np.divide, float_known={"rn", "approx", "full", "ftz"})

    def op_rem(self, ins):
        t = self._type(ins, INT_TYPES)
        dt = DT[t]
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        w = self.writer(ins, ins.operands[0], dt)
        return self._normal(lambda c, ix: w(c, ix, _div_trunc(np.asarray(a(c, ix)), np.asarray(b(c, ix)), dt)[1]))

    def _unary_float(self, ins, f, known):
        t = self._type(ins, {"f32", "f64"})
        self._check_mods(ins, known)
        dt = DT[t]
        a = self.reader(ins, ins.operands[1], dt)
        w = self.writer(ins, ins.operands[0], dt)
        ftz = "ftz" in ins.mods
        return self._normal(lambda c, ix: w(c, ix, _post(f(_ftz(np.asarray(a(c, ix)), ftz)).astype(dt), ftz, False)),
                            "f32")

    def op_rcp(self, ins):
        return self._unary_float(ins, lambda x: np.divide(np.array(1, x.dtype), x), {"rn", "approx", "ftz"})

    def op_sqrt(self, ins):
        return self._unary_float(ins, np.sqrt, {"rn", "approx", "ftz"})

    def op_rsqrt(self, ins):
        return self._unary_float(ins, lambda x: 1.0 / np.sqrt(x.astype(np.float64)), {"approx", "ftz"})

    def op_ex2(self, ins):
        return self._unary_float(ins, lambda x: np.exp2(x.astype(np.float64)), {"approx", "ftz"})

    def op_lg2(self, ins):
        return self._unary_float(ins, lambda x: np.log2(x.astype(np.float64)), {"approx", "ftz"})

    def op_sin(self, ins):
        return self._unary_float(ins, lambda x: np.sin(x.astype(np.float64)), {"approx", "ftz"})

    def op_cos(self, ins):
        return self._unary_float(ins, lambda x: np.cos(x.astype(np.float64)), {"approx", "ftz"})

    # --- fp16 / bf16 arithmetic (scalar and packed pairs) ------------------------------------------
    def _half_arith(self, ins, f):
        t = self._type(ins)
        self._check_mods(ins, {"rn", "ftz", "sat"})
        bf = t.startswith("bf")
        dt = DT[t]
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        w = self.writer(ins, ins.operands[0], dt)
        pair = t.endswith("x2")

        def run(c, ix):
            x, y = np.asarray(a(c, ix)), np.asarray(b(c, ix))
            return _half_map(lambda *v: _round_to_half(f(*v), bf), pair, bf, x, y)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)), "f32")

    def _half_fma(self, ins):
        t = self._type(ins)
        self._check_mods(ins, {"rn", "ftz", "sat"})
        bf = t.startswith("bf")
        dt = DT[t]
        a, b, cc = (self.reader(ins, o, dt) for o in ins.operands[1:4])
        w = self.writer(ins, ins.operands[0], dt)
        pair = t.endswith("x2")

        def one(x, y, z):
            return _round_sum_to_half(x * y, z, bf)

        def run(c, ix):
            return _half_map(one, pair, bf, np.asarray(a(c, ix)), np.asarray(b(c, ix)), np.asarray(cc(c, ix)))
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)), "f32")

    # --- shifts and bit fields -------------------------------------------------------------------
    def op_shl(self, ins):
        t = self._type(ins, {"b16", "b32", "b64"})
        return self._shift(ins, t, left=True)

    def op_shr(self, ins):
        t = self._type(ins, {"b16", "b32", "b64", "u16", "u32", "u64", "s16", "s32", "s64"})
        return self._shift(ins, t, left=False)

    def _shift(self, ins, t, left):
        dt = DT[t]
        bits = 8 * dt.itemsize
        a = self.reader(ins, ins.operands[1], dt)
        b = self.reader(ins, ins.operands[2], np.dtype(np.uint32))
        w = self.writer(ins, ins.operands[0], dt)
        if isinstance(ins.operands[2], Imm):
            amount = int(ins.operands[2].value) & 0xffffffff
            if amount >= bits:
                if left or t not in SIGNED:
                    zero = np.array(0, dt)[()]
                    return self._normal(lambda c, ix: w(c, ix, np.zeros_like(np.asarray(a(c, ix))) + zero))
                amount = bits - 1
            sh = np.array(amount, dt)[()]
            if left:
                return self._normal(lambda c, ix: w(c, ix, np.left_shift(a(c, ix), sh)))
            return self._normal(lambda c, ix: w(c, ix, np.right_shift(a(c, ix), sh)))

        def run(c, ix):
            x = np.asarray(a(c, ix))
            n = np.asarray(b(c, ix)).astype(np.int64)
            big = n >= bits
            n = np.minimum(n, bits - 1).astype(dt)
            if left:
                return np.where(big, np.array(0, dt), np.left_shift(x, n)).astype(dt)
            r = np.right_shift(x, n)
            if t in SIGNED:
                return r  # n clamped to bits - 1: the sign fill
            return np.where(big, np.array(0, dt), r).astype(dt)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    def op_bfe(self, ins):
        t = self._type(ins, {"u32", "s32", "u64", "s64"})
        dt = DT[t]
        bits = 8 * dt.itemsize
        a = self.reader(ins, ins.operands[1], dt)
        pos_r = self.reader(ins, ins.operands[2], np.dtype(np.uint32))
        len_r = self.reader(ins, ins.operands[3], np.dtype(np.uint32))
        w = self.writer(ins, ins.operands[0], dt)
        u = UNSIGNED_OF_SIZE[dt.itemsize]

        def run(c, ix):
            x = np.asarray(a(c, ix)).view(u).astype(object if bits == 64 else np.uint64)
            pos = np.asarray(pos_r(c, ix)).astype(np.int64) & 0xff
            ln = np.asarray(len_r(c, ix)).astype(np.int64) & 0xff
            shape = np.broadcast(x, pos, ln).shape
            x, pos, ln = (np.broadcast_to(v, shape) for v in (x, pos, ln))
            out = np.zeros(shape, dtype=object)
            for i in np.ndindex(shape):  # rare instruction: per element is fine
                xi, p, n = int(x[i]), int(pos[i]), int(ln[i])
                if t in SIGNED:
                    sbit = (xi >> min(p + n - 1, bits - 1)) & 1 if n > 0 else 0
                else:
                    sbit = 0
                val = 0
                for k in range(bits):
                    if k < n and p + k <= bits - 1:
                        val |= ((xi >> (p + k)) & 1) << k
                    elif k >= n or p + k > bits - 1:
                        val |= sbit << k
                out[i] = val
            return out.astype(u).view(dt)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    def op_bfi(self, ins):
        t = self._type(ins, {"b32", "b64"})
        dt = DT[t]
        bits = 8 * dt.itemsize
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        pos_r = self.reader(ins, ins.operands[3], np.dtype(np.uint32))
        len_r = self.reader(ins, ins.operands[4], np.dtype(np.uint32))
        w = self.writer(ins, ins.operands[0], dt)

        def run(c, ix):
            x, y = np.asarray(a(c, ix)).astype(np.uint64), np.asarray(b(c, ix)).astype(np.uint64)
            pos = np.asarray(pos_r(c, ix)).astype(np.int64) & 0xff
            ln = np.asarray(len_r(c, ix)).astype(np.int64) & 0xff
            ln = np.clip(np.minimum(ln, bits - pos), 0, bits)
            pos_c = np.minimum(pos, bits).astype(np.uint64)
            field = np.where(ln >= 64, np.uint64(0xffffffffffffffff),
                             (np.uint64(1) << ln.astype(np.uint64)) - np.uint64(1))
            mask = np.where(pos >= bits, np.uint64(0), field << pos_c)
            res = (y & ~mask) | ((x << pos_c) & mask)
            return res.astype(dt)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    def op_popc(self, ins):
        t = self._type(ins, {"b32", "b64"})
        a = self.reader(ins, ins.operands[1], DT[t])
        w = self.writer(ins, ins.operands[0], np.dtype(np.uint32))
        return self._normal(lambda c, ix: w(c, ix, np.bitwise_count(np.asarray(a(c, ix))).astype(np.uint32)))

    def op_clz(self, ins):
        t = self._type(ins, {"b32", "b64"})
        bits = 8 * DT[t].itemsize
        a = self.reader(ins, ins.operands[1], DT[t])
        w = self.writer(ins, ins.operands[0], np.dtype(np.uint32))

        def run(c, ix):
            y = np.asarray(a(c, ix)).astype(np.uint64)
            length = np.zeros(y.shape, np.int64)  # bit length, one bit at a time (a rare instruction)
            while np.any(y):
                length += y != 0
                y = y >> np.uint64(1)
            return (bits - length).astype(np.uint32)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    def op_brev(self, ins):
        t = self._type(ins, {"b32", "b64"})
        dt = DT[t]
        bits = 8 * dt.itemsize
        a = self.reader(ins, ins.operands[1], dt)
        w = self.writer(ins, ins.operands[0], dt)

        def run(c, ix):
            x = np.asarray(a(c, ix)).astype(np.uint64)
            r = np.zeros(x.shape, np.uint64)
            for k in range(bits):
                r |= ((x >> np.uint64(k)) & np.uint64(1)) << np.uint64(bits - 1 - k)
            return r.astype(dt)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    def op_prmt(self, ins):
        self._check_mods(ins, set())
        t = self._type(ins, {"b32"})
        a, b, sel = (self.reader(ins, o, DT[t]) for o in ins.operands[1:4])
        w = self.writer(ins, ins.operands[0], DT[t])

        def run(c, ix):
            x = np.asarray(a(c, ix)).astype(np.uint64)
            y = np.asarray(b(c, ix)).astype(np.uint64)
            s = np.asarray(sel(c, ix)).astype(np.uint64)
            both = x | (y << np.uint64(32))  # bytes 0..7: a's bytes 0..3, then b's
            out = np.zeros(np.broadcast(x, y, s).shape, np.uint64)
            for k in range(4):
                nib = (s >> np.uint64(4 * k)) & np.uint64(0xf)
                idx = nib & np.uint64(7)
                byte = (both >> (idx * np.uint64(8))) & np.uint64(0xff)
                sign = (byte >> np.uint64(7)) & np.uint64(1)
                byte = np.where((nib & np.uint64(8)) != 0, sign * np.uint64(0xff), byte)
                out |= byte << np.uint64(8 * k)
            return out.astype(np.uint32)
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    def op_lop3(self, ins):
        t = self._type(ins, {"b32"})
        a, b, cc = (self.reader(ins, o, DT[t]) for o in ins.operands[1:4])
        if not isinstance(ins.operands[4], Imm):
            raise unimplemented(ins, "non-immediate LUT")
        lut = int(ins.operands[4].value) & 0xff
        w = self.writer(ins, ins.operands[0], DT[t])

        def run(c, ix):
            x, y, z = np.asarray(a(c, ix)), np.asarray(b(c, ix)), np.asarray(cc(c, ix))
            out = np.zeros(np.broadcast(x, y, z).shape, np.uint32)
            for k in range(8):
                if lut >> k & 1:
                    tx = x if k & 4 else ~x
                    ty = y if k & 2 else ~y
                    tz = z if k & 1 else ~z
                    out |= tx & ty & tz
            return out
        return self._normal(lambda c, ix: w(c, ix, run(c, ix)))

    # --- compare and select -------------------------------------------------------------------
    _INT_CMP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
                "ge": np.greater_equal, "lo": np.less, "ls": np.less_equal, "hi": np.greater, "hs": np.greater_equal}
    _BOOL = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}

    def _compare(self, ins, cmp: str, t: str):
        dt = DT[t]
        if cmp in ("lo", "ls", "hi", "hs") and t in SIGNED:
            dt = UNSIGNED_OF_SIZE[dt.itemsize]
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        if t in INT_TYPES or t == "pred":
            if t.startswith("b") and cmp not in ("eq", "ne"):
                raise unimplemented(ins, f".{cmp} on .{t}")
            f = self._INT_CMP.get(cmp)
            if f is None:
                raise unimplemented(ins, f"comparison .{cmp}")
            return lambda c, ix: f(a(c, ix), b(c, ix))
        if t in FLOAT_TYPES or t in ("f16", "bf16"):
            conv = (lambda v: _half_to_f32(np.asarray(v), t == "bf16")) if t in ("f16", "bf16") else (lambda v: v)
            base = cmp[:-1] if cmp.endswith("u") and cmp not in ("equ",) else cmp
            if cmp == "equ":
                base = "eq"
            unordered = cmp.endswith("u") and cmp != "nu"
            if cmp == "num":
                return lambda c, ix: ~np.isnan(conv(a(c, ix))) & ~np.isnan(conv(b(c, ix)))
            if cmp == "nan":
                return lambda c, ix: np.isnan(conv(a(c, ix))) | np.isnan(conv(b(c, ix)))
            f = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
                 "ge": np.greater_equal}.get(base)
            if f is None:
                raise unimplemented(ins, f"comparison .{cmp}")
            if unordered:
                return lambda c, ix: _unordered(f, conv(a(c, ix)), conv(b(c, ix)))
            if base == "ne":
                return lambda c, ix: _ordered_ne(conv(a(c, ix)), conv(b(c, ix)))
            return lambda c, ix: f(conv(a(c, ix)), conv(b(c, ix)))
        raise unimplemented(ins, f"type .{t}")

    def op_setp(self, ins):
        t = self._type(ins)
        cmp = ins.mods[0]
        boolop = next((m for m in ins.mods[1:] if m in self._BOOL), None)
        self._check_mods(ins, {cmp, "ftz"} | set(self._BOOL))
        test = self._compare(ins, cmp, t)
        dest = ins.operands[0]
        first, second = (dest.first, dest.second) if isinstance(dest, PredPair) else (dest, None)
        wp = self.writer(ins, first, np.dtype(np.bool_))
        wq = self.writer(ins, second, np.dtype(np.bool_)) if second is not None else None
        if boolop is not None:
            g = self._BOOL[boolop]
            cpred = self.reader(ins, ins.operands[3], np.dtype(np.bool_))

            def run(c, ix):
                r = test(c, ix)
                cv = cpred(c, ix)
                wp(c, ix, g(r, cv))
                if wq is not None:
                    wq(c, ix, g(~r, cv))
        elif wq is not None:
            def run(c, ix):
                r = test(c, ix)
                wp(c, ix, r)
                wq(c, ix, ~r)
        else:
            def run(c, ix):
                wp(c, ix, test(c, ix))
        return self._normal(run, "f32" if t in FLOAT_TYPES else "int")

    def op_set(self, ins):
        types = [m for m in ins.mods if m in ALL_TYPES]
        if len(types) != 2:
            raise unimplemented(ins, "set needs destination and source types")
        dtype, stype = types
        cmp = ins.mods[0]
        self._check_mods(ins, {cmp, "ftz"})
        test = self._compare(ins, cmp, stype)
        ddt = DT[dtype]
        w = self.writer(ins, ins.operands[0], ddt)
        one = np.array(1.0, ddt)[()] if dtype == "f32" else np.array(-1, SIGNED_OF_SIZE[ddt.itemsize]).view(ddt)[()]
        zero = np.array(0, ddt)[()]
        return self._normal(lambda c, ix: w(c, ix, np.where(test(c, ix), one, zero).astype(ddt)))

    def op_selp(self, ins):
        t = self._type(ins)
        dt = DT[t]
        a, b = (self.reader(ins, o, dt) for o in ins.operands[1:3])
        p = self.reader(ins, ins.operands[3], np.dtype(np.bool_))
        w = self.writer(ins, ins.operands[0], dt)
        return self._normal(lambda c, ix: w(c, ix, np.where(p(c, ix), a(c, ix), b(c, ix)).astype(dt)))

    # --- moves and conversions ------------------------------------------------------------------
    def op_mov(self, ins):
        t = self._type(ins)
        dt = DT[t]
        dst, src = ins.operands[0], ins.operands[1]
        if isinstance(src, Vector):  # pack: the first element is the least significant
            parts = [self.reader(ins, o, UNSIGNED_OF_SIZE[dt.itemsize // len(src.items)]) for o in src.items]
            width = 8 * dt.itemsize // len(src.items)
            u = UNSIGNED_OF_SIZE[dt.itemsize]
            w = self.writer(ins, dst, u)

            def pack(c, ix):
                out = None
                for k, r in enumerate(parts):
                    v = np.asarray(r(c, ix)).astype(u) << np.array(width * k, u)
                    out = v if out is None else out | v
                return out
            return self._normal(lambda c, ix: w(c, ix, pack(c, ix)))
        if isinstance(dst, Vector):  # unpack
            width = dt.itemsize // len(dst.items)
            part = UNSIGNED_OF_SIZE[width]
            u = UNSIGNED_OF_SIZE[dt.itemsize]
            r = self.reader(ins, src, u)
            writers = [self.writer(ins, o, part) for o in dst.items]

            def unpack(c, ix):
                v = np.asarray(r(c, ix))
                for k, wk in enumerate(writers):
                    wk(c, ix, (v >> np.array(8 * width * k, u)).astype(part))
            return self._normal(unpack)
        r = self.reader(ins, src, dt)
        w = self.writer(ins, dst, dt)
        return self._normal(lambda c, ix: w(c, ix, r(c, ix)))

    def op_cvta(self, ins):
        # cvta.<space>.u64 p, a: to generic; cvta.to.<space>.u64 p, a: from generic.
        mods = [m for m in ins.mods if m not in ALL_TYPES]
        t = self._type(ins, {"u32", "u64"})
        to = "to" in mods
        space = next((m for m in mods if m in ("global", "shared", "local", "param", "const")), None)
        if space is None:
            raise unimplemented(ins, "space")
        dt = DT[t]
        a = self.reader(ins, ins.operands[1], np.dtype(np.uint64))
        w = self.writer(ins, ins.operands[0], np.dtype(np.uint64))
        if space == "global":
            return self._normal(lambda c, ix: w(c, ix, a(c, ix)))
        base = np.uint64({"shared": SHARED_WINDOW, "local": LOCAL_WINDOW, "param": PARAM_WINDOW}.get(space, 0))
        if space == "const":
            raise unimplemented(ins, ".const space")
        del dt
        if to:
            return self._normal(lambda c, ix: w(c, ix, np.subtract(a(c, ix), base)))
        return self._normal(lambda c, ix: w(c, ix, np.add(a(c, ix), base)))

    def op_cvt(self, ins):
        types = [m for m in ins.mods if m in ALL_TYPES]
        if len(types) != 2:
            raise unimplemented(ins, "cvt needs two types")
        dtype, stype = types
        rounding = next((m for m in ins.mods if m in ("rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi")), None)
        self._check_mods(ins, {"rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi", "ftz", "sat", "relu", "satfinite"})
        if "relu" in ins.mods or "satfinite" in ins.mods:
            raise unimplemented(ins, ".relu/.satfinite")
        sat, ftz = "sat" in ins.mods, "ftz" in ins.mods
        dst = ins.operands[0]
        if dtype in ("f16x2", "bf16x2"):
            if stype != "f32" or rounding != "rn":
                raise unimplemented(ins, "packed conversion other than .rn from .f32")
            ra, rb = (self.reader(ins, o, DT["f32"]) for o in ins.operands[1:3])
            w = self.writer(ins, dst, np.dtype(np.uint32))
            bf = dtype == "bf16x2"

            def pack(c, ix):
                hi = _f32_to_half_bits(np.asarray(ra(c, ix)), bf, sat).astype(np.uint32)
                lo = _f32_to_half_bits(np.asarray(rb(c, ix)), bf, sat).astype(np.uint32)
                return (hi << np.uint32(16)) | lo
            return self._normal(lambda c, ix: w(c, ix, pack(c, ix)), "f32")
        src_dt = DT[stype]
        r = self.reader(ins, ins.operands[1], src_dt)
        f = _conversion(ins, dtype, stype, rounding, sat, ftz)
        w = self.writer(ins, dst, DT[dtype], signed=dtype in SIGNED)
        cls = "int" if dtype in INT_TYPES and stype in INT_TYPES else "f32"
        return self._normal(lambda c, ix: w(c, ix, f(np.asarray(r(c, ix)))), cls)

    # --- memory ---------------------------------------------------------------------------------
    _LD_KNOWN = {"global", "shared", "local", "param", "const", "generic", "weak", "volatile", "relaxed", "acquire",
                 "ca", "cg", "cs", "lu", "cv", "nc", "v2", "v4", "v8", "cta", "gpu", "sys", "L1::evict_normal",
                 "L1::evict_unchanged", "L1::evict_first", "L1::evict_last", "L1::no_allocate", "L2::64B",
                 "L2::128B", "L2::256B", "L2::evict_first", "L2::evict_last", "L2::evict_normal", "wb", "wt"}

    def _mem_shape(self, ins):
        for m in ins.mods:
            if m not in self._LD_KNOWN and m not in ALL_TYPES and not m.startswith("shared::"):
                raise unimplemented(ins, f"modifier .{m}")
        t = self._type(ins)
        count = 4 if "v4" in ins.mods else 2 if "v2" in ins.mods else 8 if "v8" in ins.mods else 1
        space = next((m for m in ins.mods if m in ("global", "shared", "local", "param", "const")), "generic")
        if any(m.startswith("shared::") for m in ins.mods):
            if "shared::cta" not in ins.mods:
                raise unimplemented(ins, "shared::cluster")
            space = "shared"
        if space == "const":
            raise unimplemented(ins, ".const space")
        return t, count, space

    def _address(self, ins, opnd):
        if not isinstance(opnd, Address):
            raise unimplemented(ins, "address operand")
        off = np.uint64(opnd.offset & 0xffffffffffffffff)
        if opnd.base is None:
            return lambda c, ix: off
        if isinstance(opnd.base, Symbol):
            if opnd.base.name not in self.symbols:
                raise PtxError(f"unknown symbol {opnd.base.name} at PTX line {ins.line}: {ins.text}")
            v = np.uint64((self.symbols[opnd.base.name] + opnd.offset) & 0xffffffffffffffff)
            return lambda c, ix: v
        r = self.reader(ins, opnd.base, np.dtype(np.uint64))
        if opnd.offset == 0:
            return r
        return lambda c, ix: np.add(r(c, ix), off)

    def op_ld(self, ins):
        t, count, space = self._mem_shape(ins)
        dst = ins.operands[0]
        items = list(dst.items) if isinstance(dst, Vector) else [dst]
        if len(items) != count:
            raise unimplemented(ins, "vector size")
        width = TYPE_BYTES[t]
        raw = UNSIGNED_OF_SIZE[width]
        addr = self._address(ins, ins.operands[1])
        tdt = DT[t]
        writers = [self.writer(ins, o, tdt, signed=t in SIGNED) for o in items]
        line = ins.line
        if space == "param":
            def run(c, ix):
                vals = c.load_param(addr(c, ix), width, count, ix, line)
                for k, wk in enumerate(writers):
                    wk(c, ix, vals[k].view(tdt))
            return Op("normal", run, CLS["ld.param"], 0, "")

        def run(c, ix):
            vals = c.load(space, addr(c, ix), width, count, ix, line)
            for k, wk in enumerate(writers):
                wk(c, ix, vals[:, k].view(tdt) if vals.dtype == raw else vals[:, k].astype(raw).view(tdt))
        cls = {"global": "ld.global", "shared": "ld.shared", "local": "ld.local"}.get(space, "ld.global")
        return Op("normal", run, CLS[cls], 0, "")

    def op_st(self, ins):
        t, count, space = self._mem_shape(ins)
        if space == "param":
            raise unimplemented(ins, "st.param")
        src = ins.operands[1]
        items = list(src.items) if isinstance(src, Vector) else [src]
        if len(items) != count:
            raise unimplemented(ins, "vector size")
        width = TYPE_BYTES[t]
        raw = UNSIGNED_OF_SIZE[width]
        readers = [self.reader(ins, o, raw) for o in items]
        addr = self._address(ins, ins.operands[0])
        line = ins.line

        def run(c, ix):
            a = addr(c, ix)
            n = c.count(ix)
            vals = np.empty((n, count), raw)
            for k, rk in enumerate(readers):
                vals[:, k] = rk(c, ix)
            c.store(space, a, width, count, vals, ix, line)
        cls = {"global": "st.global", "shared": "st.shared", "local": "st.local"}.get(space, "st.global")
        return Op("normal", run, CLS[cls], 0, "")

    def op_cp(self, ins):
        # cp.async.{ca,cg}.shared{::cta}.global [dst], [src], cp-size{, src-size | , ignore-src}
        # cp.async.commit_group, cp.async.wait_group N, cp.async.wait_all
        if not ins.mods or ins.mods[0] != "async":
            raise unimplemented(ins)
        rest = ins.mods[1:]
        line = ins.line
        if rest == ("commit_group",):
            return Op("normal", lambda c, ix: c.cp_async_commit(ix), CLS["cp.async"], 0, "")
        if rest == ("wait_all",):
            return Op("normal", lambda c, ix: c.cp_async_wait(ix, 0, commit_first=True, line=line),
                      CLS["cp.async"], 0, "")
        if rest == ("wait_group",):
            n = ins.operands[0]
            if not isinstance(n, Imm):
                raise unimplemented(ins, "non-immediate group count")
            keep = int(n.value)
            return Op("normal", lambda c, ix: c.cp_async_wait(ix, keep, commit_first=False, line=line),
                      CLS["cp.async"], 0, "")
        if len(rest) < 3 or rest[0] not in ("ca", "cg") or rest[1] not in ("shared", "shared::cta") \
                or rest[2] != "global":
            raise unimplemented(ins, "form")
        for m in rest[3:]:
            if not (m.startswith("L2::") or m == "L2"):
                raise unimplemented(ins, f"modifier .{m}")
        if any(m == "L2::cache_hint" for m in rest[3:]):
            raise unimplemented(ins, "cache hint operand")
        dst = self._address(ins, ins.operands[0])
        src = self._address(ins, ins.operands[1])
        size_op = ins.operands[2]
        if not isinstance(size_op, Imm) or int(size_op.value) not in (4, 8, 16):
            raise unimplemented(ins, "cp-size")
        size = int(size_op.value)
        if rest[0] == "cg" and size != 16:
            raise unimplemented(ins, ".cg with a cp-size other than 16")
        src_size = None
        ignore = None
        if len(ins.operands) >= 4:
            extra = ins.operands[3]
            if isinstance(extra, (Reg, Imm)) and not (isinstance(extra, Reg) and np.dtype(extra.storage) == np.bool_):
                src_size = self.reader(ins, extra, np.dtype(np.uint32))
            elif isinstance(extra, (Reg, NotPred)):
                ignore = self.reader(ins, extra, np.dtype(np.bool_))
            else:
                raise unimplemented(ins, "fourth operand")
        if len(ins.operands) > 4:
            raise unimplemented(ins, "cache-policy operand")

        def run(c, ix):
            n = c.count(ix)
            if src_size is not None:
                ss = np.broadcast_to(np.asarray(src_size(c, ix)).astype(np.int64), (n,))
            elif ignore is not None:
                ss = np.where(np.broadcast_to(ignore(c, ix), (n,)), 0, size).astype(np.int64)
            else:
                ss = np.full(n, size, np.int64)
            c.cp_async(dst(c, ix), src(c, ix), size, ss, ix, line)
        return Op("normal", run, CLS["cp.async"], 0, "")

    # --- warp-collective ------------------------------------------------------------------------
    def op_ldmatrix(self, ins):
        mods = ins.mods
        if mods[:3] != ("sync", "aligned", "m8n8"):
            raise unimplemented(ins, "shape")
        num = next((int(m[1:]) for m in mods if m in ("x1", "x2", "x4")), None)
        if num is None:
            raise unimplemented(ins, "matrix count")
        trans = "trans" in mods
        for m in mods[3:]:
            if m not in ("x1", "x2", "x4", "trans", "shared", "shared::cta", "b16"):
                raise unimplemented(ins, f"modifier .{m}")
        if "b16" not in mods:
            raise unimplemented(ins, "element type")
        dst = ins.operands[0]
        items = list(dst.items) if isinstance(dst, Vector) else [dst]
        if len(items) != num:
            raise unimplemented(ins, "destination count")
        addr = self._address(ins, ins.operands[1])
        generic = "shared" not in mods and "shared::cta" not in mods
        writers = [self.writer(ins, o, np.dtype(np.uint32)) for o in items]
        line = ins.line

        def run(c, ix):
            vals = c.ldmatrix(addr(c, ix), num, trans, generic, ix, line)
            for k, wk in enumerate(writers):
                wk(c, ix, vals[:, k])
        return Op("warpsync", run, CLS["ld.shared"], 0, "")

    @staticmethod
    def _sync_mode(ins, modes: tuple) -> Optional[str]:
        """The mode of a warp-synchronous ``shfl.sync``/``vote.sync`` (None if absent); the
        non-``.sync`` forms (deprecated since sm_70) are not implemented."""
        if not ins.mods or ins.mods[0] != "sync":
            raise unimplemented(ins, f"{ins.base} without .sync")
        return next((m for m in ins.mods if m in modes), None)

    def op_shfl(self, ins):
        mode = self._sync_mode(ins, ("up", "down", "bfly", "idx"))
        self._check_mods(ins, {"sync", "up", "down", "bfly", "idx"})
        if mode is None or self._type(ins) != "b32":
            raise unimplemented(ins, "mode/type")
        dest = ins.operands[0]
        first, second = (dest.first, dest.second) if isinstance(dest, PredPair) else (dest, None)
        a = self.reader(ins, ins.operands[1], np.dtype(np.uint32))
        b = self.reader(ins, ins.operands[2], np.dtype(np.uint32))
        cc = self.reader(ins, ins.operands[3], np.dtype(np.uint32))
        mm = self.reader(ins, ins.operands[4], np.dtype(np.uint32))
        wd = self.writer(ins, first, np.dtype(np.uint32))
        wp = self.writer(ins, second, np.dtype(np.bool_)) if second is not None else None
        line = ins.line

        def run(c, ix):
            d, p = c.shfl(mode, a, b(c, ix), cc(c, ix), mm(c, ix), ix, line)
            wd(c, ix, d)
            if wp is not None:
                wp(c, ix, p)
        # not "warpsync": only the lanes of the member mask must take part (checked in c.shfl)
        return Op("normal", run, CLS["warp"], 0, "")

    def op_vote(self, ins):
        mode = self._sync_mode(ins, ("all", "any", "uni", "ballot"))
        if mode is None:
            raise unimplemented(ins, "mode")
        pred = self.reader(ins, ins.operands[1], np.dtype(np.bool_))
        mm = self.reader(ins, ins.operands[2], np.dtype(np.uint32))
        w = self.writer(ins, ins.operands[0], np.dtype(np.uint32) if mode == "ballot" else np.dtype(np.bool_))
        line = ins.line
        return Op("normal", lambda c, ix: w(c, ix, c.vote(mode, pred(c, ix), mm(c, ix), ix, line)), CLS["warp"], 0, "")

    def op_mma(self, ins):
        mods = ins.mods
        if mods[:2] != ("sync", "aligned") or len(mods) != 9 or mods[2] != "m16n8k16" or mods[3:5] != ("row", "col"):
            raise unimplemented(ins, "only mma.sync.aligned.m16n8k16.row.col")
        dtype, atype, btype, ctype = mods[5:9]
        if atype != btype or atype not in ("f16", "bf16") or dtype not in ("f32", "f16") or ctype not in ("f32", "f16"):
            raise unimplemented(ins, "types")
        if atype == "bf16" and (dtype != "f32" or ctype != "f32"):
            raise unimplemented(ins, "bf16 with f16 accumulators")
        d, a, b, cc = ins.operands
        nd = 4 if dtype == "f32" else 2
        nc = 4 if ctype == "f32" else 2
        if not all(isinstance(v, Vector) for v in (d, a, b, cc)) or len(d.items) != nd or len(a.items) != 4 \
                or len(b.items) != 2 or len(cc.items) != nc:
            raise unimplemented(ins, "operand vectors")
        ra = [self.reader(ins, o, np.dtype(np.uint32)) for o in a.items]
        rb = [self.reader(ins, o, np.dtype(np.uint32)) for o in b.items]
        rc = [self.reader(ins, o, np.dtype(np.float32) if ctype == "f32" else np.dtype(np.uint32)) for o in cc.items]
        wd = [self.writer(ins, o, np.dtype(np.float32) if dtype == "f32" else np.dtype(np.uint32)) for o in d.items]
        bf = atype == "bf16"

        def run(c, ix):
            out = c.mma_m16n8k16([r(c, ix) for r in ra], [r(c, ix) for r in rb], [r(c, ix) for r in rc], bf,
                                 ctype, dtype, ix)
            for k, wk in enumerate(wd):
                wk(c, ix, out[k])
        return Op("warpsync", run, CLS["mma"], 0, "")

    # --- control ---------------------------------------------------------------------------------
    def op_bra(self, ins):
        self._check_mods(ins, {"uni"})
        target = ins.operands[0]
        if not isinstance(target, Symbol) or target.name not in self.labels:
            raise unimplemented(ins, "indirect branch")
        return Op("branch", None, CLS["control"], 0, "", target=self.labels[target.name])

    def op_ret(self, ins):
        self._check_mods(ins, {"uni"})
        return Op("exit", None, CLS["control"], 0, "")

    def op_exit(self, ins):
        return Op("exit", None, CLS["control"], 0, "")

    def op_bar(self, ins):
        mods = ins.mods
        if mods and mods[0] == "warp":
            if mods[1:] != ("sync",):
                raise unimplemented(ins)
            mm = self.reader(ins, ins.operands[0], np.dtype(np.uint32))
            line = ins.line
            return Op("normal", lambda c, ix: c.warp_sync(mm(c, ix), ix, line), CLS["barrier"], 0, "")
        if mods not in (("sync",), ("sync", "aligned")):
            raise unimplemented(ins, "only bar.sync / barrier.sync")
        self._barrier_operands(ins)
        return Op("barrier", None, CLS["barrier"], 0, "")

    def op_barrier(self, ins):
        if ins.mods not in (("sync",), ("sync", "aligned")):
            raise unimplemented(ins, "only barrier.sync")
        self._barrier_operands(ins)
        return Op("barrier", None, CLS["barrier"], 0, "")

    def _barrier_operands(self, ins):
        ops = ins.operands
        if not ops or not isinstance(ops[0], Imm) or int(ops[0].value) != 0:
            raise unimplemented(ins, "named barriers other than 0")
        if len(ops) > 1:
            raise unimplemented(ins, "barrier thread count")

    def op_membar(self, ins):
        return Op("normal", lambda c, ix: None, CLS["other"], 0, "")

    def op_fence(self, ins):
        # fence{.sem}.scope, and the proxy fences; fence.proxy.async{.shared::cta, .global, .shared::cluster}
        # orders the executing thread's generic-proxy accesses before later async-proxy ones (wgmma's
        # shared-memory reads): the machine records it per thread.
        mods = ins.mods
        if mods[:2] == ("proxy", "async"):
            if len(mods) > 3 or (len(mods) == 3 and mods[2] not in ("shared::cta", "shared::cluster", "global")):
                raise unimplemented(ins, "proxy fence state space")
            return Op("normal", lambda c, ix: c.proxy_async_fence(ix), CLS["other"], 0, "")
        if mods[:1] == ("proxy",):
            if mods[1:] not in (("alias",),):
                raise unimplemented(ins, "proxy kind")
            return Op("normal", lambda c, ix: None, CLS["other"], 0, "")
        self._check_mods(ins, {"sc", "acq_rel", "cta", "gpu", "sys", "cluster"})
        return Op("normal", lambda c, ix: None, CLS["other"], 0, "")

    # --- warpgroup MMA (sm_90a) -----------------------------------------------------------------
    # wgmma.fence.sync.aligned; wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned N;
    # wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16} d, a-desc | {a0..a3}, b-desc, scale-d,
    #     imm-scale-a, imm-scale-b{, imm-trans-a (descriptor A only)}, imm-trans-b;
    # PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions". The instruction is
    # warpgroup-collective; each warp's 16 rows of D depend only on its rows of A and on B, so each warp is
    # executed on its own (and must be whole: "warpsync"), eagerly at issue; the machine tracks what is in
    # flight until the wait_group that retires it.
    def op_wgmma(self, ins):
        mods = ins.mods
        line = ins.line
        if len(mods) < 3 or mods[1:3] != ("sync", "aligned"):
            raise unimplemented(ins, "without .sync.aligned")
        kind = mods[0]
        if kind == "fence" and len(mods) == 3:
            return Op("warpsync", lambda c, ix: c.wgmma_fence(ix), CLS["wgmma"], 0, "")
        if kind == "commit_group" and len(mods) == 3:
            return Op("warpsync", lambda c, ix: c.wgmma_commit(ix), CLS["wgmma"], 0, "")
        if kind == "wait_group" and len(mods) == 3:
            n = ins.operands[0] if ins.operands else None
            if not isinstance(n, Imm):
                raise unimplemented(ins, "non-immediate group count")
            keep = int(n.value)
            return Op("warpsync", lambda c, ix: c.wgmma_wait(ix, keep, line), CLS["wgmma"], 0, "")
        if kind != "mma_async" or len(mods) != 7:
            raise unimplemented(ins, "form")
        shape = re.fullmatch(r"m64n(\d+)k16", mods[3])
        if shape is None or int(shape.group(1)) % 8 or not 8 <= int(shape.group(1)) <= 256:
            raise unimplemented(ins, f"shape .{mods[3]} (m64nNk16, N a multiple of 8 up to 256)")
        n = int(shape.group(1))
        dtype, atype, btype = mods[4:7]
        if dtype != "f32" or atype != btype or atype not in ("f16", "bf16"):
            raise unimplemented(ins, "types (.f32 accumulators, .f16/.bf16 operands)")
        ops = ins.operands
        d = ops[0]
        if not isinstance(d, Vector) or len(d.items) != n // 2 or not all(isinstance(r, Reg) for r in d.items):
            raise unimplemented(ins, f"accumulator vector of {n // 2} registers")
        registers_a = isinstance(ops[1], Vector)
        imm_count = 3 if registers_a else 4
        if len(ops) != 4 + imm_count or not all(isinstance(o, Imm) for o in ops[4:]):
            raise unimplemented(ins, "operands")
        imms = [int(o.value) for o in ops[4:]]
        scale_a, scale_b = imms[0], imms[1]
        trans_a, trans_b = (0, imms[2]) if registers_a else (imms[2], imms[3])
        if scale_a not in (1, -1) or scale_b not in (1, -1) or trans_a not in (0, 1) or trans_b not in (0, 1):
            raise unimplemented(ins, "imm-scale must be 1 or -1, imm-trans 0 or 1")
        u32, u64 = np.dtype(np.uint32), np.dtype(np.uint64)
        if registers_a:
            if len(ops[1].items) != 4 or not all(isinstance(r, Reg) for r in ops[1].items):
                raise unimplemented(ins, "A fragment of four .b32 registers")
            ra = [self.reader(ins, o, u32) for o in ops[1].items]
            a_slots = [self.wgmma_slots[o.slot] for o in ops[1].items]
        else:
            ra = self.reader(ins, ops[1], u64)
            a_slots = []
        rb = self.reader(ins, ops[2], u64)
        scale_d = self.reader(ins, ops[3], np.dtype(np.bool_))
        rd = [self.reader(ins, o, np.dtype(np.float32)) for o in d.items]
        wd = [self.writer(ins, o, np.dtype(np.float32)) for o in d.items]
        d_slots = [self.wgmma_slots[o.slot] for o in d.items]
        bf = atype == "bf16"

        def run(c, ix):
            a = [r(c, ix) for r in ra] if registers_a else ra(c, ix)
            out = c.wgmma(n, a, rb(c, ix), [r(c, ix) for r in rd], scale_d(c, ix), scale_a, scale_b, trans_a,
                          trans_b, bf, d_slots, a_slots, ix, line)
            for k, wk in enumerate(wd):
                wk(c, ix, out[:, k])
        return Op("warpsync", run, CLS["wgmma"], 0, "")

    def op_setmaxnreg(self, ins):
        # setmaxnreg.{inc,dec}.sync.aligned.u32 N: a register-allocation hint to the hardware; no effect on
        # what the program computes.
        if len(ins.mods) != 4 or ins.mods[0] not in ("inc", "dec") or ins.mods[1:] != ("sync", "aligned", "u32"):
            raise unimplemented(ins, "form")
        return Op("warpsync", lambda c, ix: None, CLS["other"], 0, "")

    def op_elect(self, ins):
        # elect.sync d|p, membermask: one leader among the member lanes executing it (the lowest here);
        # d gets its lane id in every lane, p is true in the leader only.
        if ins.mods != ("sync",) or len(ins.operands) != 2:
            raise unimplemented(ins, "form")
        dest = ins.operands[0]
        first, second = (dest.first, dest.second) if isinstance(dest, PredPair) else (dest, None)
        wd = None if first is None else self.writer(ins, first, np.dtype(np.uint32))
        wp = None if second is None else self.writer(ins, second, np.dtype(np.bool_))
        mm = self.reader(ins, ins.operands[1], np.dtype(np.uint32))
        line = ins.line

        def run(c, ix):
            leader, is_leader = c.elect(mm(c, ix), ix, line)
            if wd is not None:
                wd(c, ix, leader)
            if wp is not None:
                wp(c, ix, is_leader)
        return Op("normal", run, CLS["warp"], 0, "")


def wgmma_register_slots(kernel) -> dict:
    """Register slot -> compact index of every register a wgmma.mma_async of ``kernel`` uses as an
    accumulator or an A fragment."""
    slots: dict = {}
    for ins in kernel.instructions:
        if ins.base == "wgmma" and ins.mods[:1] == ("mma_async",):
            for opnd in ins.operands[:2]:
                if isinstance(opnd, Vector):
                    for r in opnd.items:
                        if isinstance(r, Reg) and r.slot not in slots:
                            slots[r.slot] = len(slots)
    return slots


# Generic-address windows (the global allocations live below 2^47).
SHARED_WINDOW = 0x7e00_0000_0000
LOCAL_WINDOW = 0x7d00_0000_0000
PARAM_WINDOW = 0x7c00_0000_0000


# -------------------------------------------------------------------------------------------------
# Numeric helpers

def _ftz(x, on: bool):
    if not on:
        return x
    x = np.asarray(x)
    tiny = np.finfo(x.dtype).tiny
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros_like(x), x), x)


def _post(x, ftz: bool, sat: bool):
    x = _ftz(x, ftz)
    if sat:
        x = np.asarray(x)
        x = np.where(np.isnan(x), np.zeros_like(x), np.clip(x, 0, 1)).astype(x.dtype)
    return x


def _unordered(f, a, b):
    return f(a, b) | np.isnan(a) | np.isnan(b)


def _ordered_ne(a, b):
    return (a != b) & ~np.isnan(a) & ~np.isnan(b)


def _two_sum_error(a, b, s):
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _correct_double_rounding(p, q, s, target):
    """``s`` = float64(p + q) rounded to ``target``, corrected where the float64 sum sits exactly on a
    midpoint of ``target`` while the exact sum does not (double rounding)."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = s.astype(target)
        e = _two_sum_error(p, q, s)
        if not np.any(e):
            return r  # the float64 sum is exact: one rounding only
        r64 = r.astype(np.float64)
        toward = np.nextafter(r, np.where(s > r64, np.inf, -np.inf).astype(target)).astype(np.float64)
        midpoint = (e != 0) & (r64 != s) & ((r64 + toward) * 0.5 == s) & np.isfinite(s)
    if np.any(midpoint):
        nudged = np.nextafter(s, np.where(e > 0, np.inf, -np.inf))
        r = np.where(midpoint, nudged.astype(target), r)
    return r


_F32_MID = np.uint64(0x10000000)
_F32_LOW = np.uint64(0x1FFFFFFF)


def fma_f32(a, b, c):
    """fma.rn.f32: a * b + c rounded once to float32 (the product is exact in float64; only a float64
    sum sitting exactly on a float32 midpoint, or in the subnormal range, needs the exact correction)."""
    p = np.multiply(np.asarray(a, np.float64), np.asarray(b, np.float64))
    q = np.asarray(c, np.float64)
    s = np.atleast_1d(p + q)
    bits = np.asarray(s).view(np.uint64)
    suspicious = (bits & _F32_LOW) == _F32_MID
    with np.errstate(invalid="ignore"):
        suspicious |= (np.abs(s) < 1.1754943508222875e-38) & (s != 0)
    with np.errstate(over="ignore"):
        r = s.astype(np.float32)
    if np.any(suspicious):
        i = np.nonzero(suspicious)
        p, q = np.broadcast_to(p, s.shape), np.broadcast_to(q, s.shape)
        r[i] = _correct_double_rounding(p[i], q[i], s[i], np.float32)
    return r


def _half_to_f32(bits, bf: bool):
    bits = np.asarray(bits, np.uint16)
    if bf:
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return bits.view(np.float16).astype(np.float32)


def _f32_to_half_bits(x, bf: bool, sat: bool = False):
    x = np.asarray(x, np.float32)
    if sat:
        x = np.where(np.isnan(x), np.float32(0), np.clip(x, 0, 1)).astype(np.float32)
    if not bf:
        with np.errstate(over="ignore"):
            return x.astype(np.float16).view(np.uint16)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = (u + np.uint64(0x7fff) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    nan = np.isnan(x)
    return np.where(nan, np.uint64(0x7fff), rounded).astype(np.uint16)


def _round_to_half(v64, bf: bool):
    """float64 -> fp16/bf16 bits, rounded to nearest even (numpy's float64 -> float16 is direct)."""
    v64 = np.asarray(v64, np.float64)
    if not bf:
        with np.errstate(over="ignore"):
            return v64.astype(np.float16).view(np.uint16)
    f32 = v64.astype(np.float32)  # exact enough: bf16 has 8 bits; correct via the midpoint rule below
    fix = _correct_double_rounding(v64, np.zeros_like(v64), v64, np.float32)
    return _f32_to_half_bits(np.where(f32 == fix, f32, fix), True)


def _round_sum_to_half(p, q, bf: bool):
    s = p + q
    if bf:
        return _round_to_half(s, True)
    with np.errstate(over="ignore"):
        r = _correct_double_rounding(p, q, s, np.float16)
    return r.view(np.uint16)


def _half_map(f, pair: bool, bf: bool, *args):
    """Apply f (float64 arrays -> half bits) to scalar halves or to both halves of packed pairs."""
    if not pair:
        return f(*[_half_to_f32(a.astype(np.uint16), bf).astype(np.float64) for a in args])
    lo = f(*[_half_to_f32((a & np.uint32(0xffff)).astype(np.uint16), bf).astype(np.float64) for a in args])
    hi = f(*[_half_to_f32((a >> np.uint32(16)).astype(np.uint16), bf).astype(np.float64) for a in args])
    return (np.asarray(hi).astype(np.uint32) << np.uint32(16)) | np.asarray(lo).astype(np.uint32)


def _mul_hi(a, b, t: str):
    bits = 8 * a.dtype.itemsize
    if bits <= 32:
        wide = np.int64 if t in SIGNED else np.uint64
        return ((a.astype(wide) * b.astype(wide)) >> (np.int64(bits) if t in SIGNED else np.uint64(bits))).astype(
            a.dtype)
    ua, ub = a.view(np.uint64), np.asarray(b).view(np.uint64)
    m32 = np.uint64(0xffffffff)
    a_lo, a_hi, b_lo, b_hi = ua & m32, ua >> np.uint64(32), ub & m32, ub >> np.uint64(32)
    lolo = a_lo * b_lo
    mid1 = a_hi * b_lo + (lolo >> np.uint64(32))
    mid2 = a_lo * b_hi + (mid1 & m32)
    hi = a_hi * b_hi + (mid1 >> np.uint64(32)) + (mid2 >> np.uint64(32))
    if t in SIGNED:
        hi = hi - np.where(a < 0, ub, np.uint64(0)) - np.where(np.asarray(b) < 0, ua, np.uint64(0))
    return hi.view(a.dtype)


def _div_trunc(a, b, dt):
    """(quotient, remainder) rounded toward zero; division by zero gives all-ones (quotient) and a."""
    a, b = np.broadcast_arrays(np.asarray(a, dt), np.asarray(b, dt))
    zero = b == 0
    safe = np.where(zero, np.array(1, dt), b)
    if dt.kind == "u":
        q = a // safe
        r = a - q * safe
    else:
        with np.errstate(over="ignore"):
            q = np.floor_divide(a, safe)
            r = a - q * safe
            fix = (r != 0) & ((a < 0) != (safe < 0))  # floor differs from truncation: one step back to zero
            q = np.where(fix, q + np.array(1, dt), q).astype(dt)
            r = (a - q * safe).astype(dt)
    q = np.where(zero, np.array(-1, SIGNED_OF_SIZE[dt.itemsize]).view(dt) if dt.kind == "i" else
                 np.array(np.iinfo(dt).max, dt), q).astype(dt)
    r = np.where(zero, a, r).astype(dt)
    return q, r


def _float_to_int(x, dtype: str, mode: str):
    x = np.asarray(x, np.float64)
    f = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}[mode]
    info = np.iinfo(DT[dtype])
    with np.errstate(invalid="ignore"):
        y = f(x)
        y = np.where(np.isnan(y), 0, np.clip(y, info.min, info.max))
    if DT[dtype].itemsize == 8:
        # float64 cannot hold 2^63 - 1 / 2^64 - 1 exactly: clip through Python ints at the edges
        big = y >= float(info.max)
        out = y.astype(DT[dtype]) if not np.any(big) else np.where(big, np.array(info.max, DT[dtype]),
                                                                   np.where(big, 0, y).astype(DT[dtype]))
        return out
    return y.astype(DT[dtype])


def _conversion(ins, dtype: str, stype: str, rounding: Optional[str], sat: bool, ftz: bool):
    d_int, s_int = dtype in INT_TYPES, stype in INT_TYPES
    ddt = DT[dtype]
    if d_int and s_int:
        if rounding is not None:
            raise unimplemented(ins, "rounding on an integer conversion")
        if not sat:
            if DT[stype].itemsize >= ddt.itemsize:
                return lambda x: x.view(UNSIGNED_OF_SIZE[x.dtype.itemsize]).astype(UNSIGNED_OF_SIZE[ddt.itemsize]) \
                    .view(ddt)
            return lambda x: x.astype(SIGNED_OF_SIZE[ddt.itemsize] if stype in SIGNED else
                                      UNSIGNED_OF_SIZE[ddt.itemsize]).view(ddt)
        info = np.iinfo(ddt)
        return lambda x: np.clip(x.astype(object), info.min, info.max).astype(ddt)
    if s_int and not d_int:
        if rounding not in (None, "rn"):
            raise unimplemented(ins, f"int -> float rounding .{rounding}")
        if dtype in ("f16", "bf16"):
            return lambda x: _f32_to_half_bits(x.astype(np.float64).astype(np.float32), dtype == "bf16", sat)
        return lambda x: _post(x.astype(ddt), ftz, sat)
    # float sources
    if stype in ("f16", "bf16"):
        to_f32 = (lambda x: _half_to_f32(x, stype == "bf16"))
    else:
        to_f32 = None
    if d_int:
        if rounding not in ("rni", "rzi", "rmi", "rpi"):
            raise unimplemented(ins, "float -> int needs .rni/.rzi/.rmi/.rpi")
        if to_f32 is not None:
            return lambda x: _float_to_int(to_f32(x), dtype, rounding)
        return lambda x: _float_to_int(_ftz(x, ftz), dtype, rounding)
    # float -> float
    if dtype in ("f16", "bf16"):
        if stype in ("f16", "bf16"):
            raise unimplemented(ins, "half -> half")
        if rounding != "rn":
            raise unimplemented(ins, f"rounding .{rounding} to a half type")
        if stype == "f64":
            return lambda x: _round_to_half(x, dtype == "bf16")
        return lambda x: _f32_to_half_bits(_ftz(x, ftz), dtype == "bf16", sat)
    if to_f32 is not None:
        return lambda x: _post(to_f32(x).astype(ddt), ftz, sat)
    if rounding in ("rni", "rzi", "rmi", "rpi"):
        f = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}[rounding]
        if stype != dtype:
            raise unimplemented(ins, "integer rounding between float sizes")
        return lambda x: _post(f(_ftz(x, ftz)).astype(ddt), ftz, sat)
    if stype == "f64" and dtype == "f32":
        if rounding != "rn":
            raise unimplemented(ins, f"rounding .{rounding}")
        return lambda x: _post(x.astype(np.float32), ftz, sat)
    if stype == "f32" and dtype == "f64":
        return lambda x: x.astype(np.float64)
    if stype == dtype:
        return lambda x: _post(_ftz(x, ftz), ftz, sat)
    raise unimplemented(ins, f"conversion .{dtype}.{stype}")
