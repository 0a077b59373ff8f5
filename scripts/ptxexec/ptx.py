"""PTX text -> kernels: parameters, registers, shared variables, labels and instructions.

Written from the PTX ISA's grammar (statements end in ';', '{' '}' open and close register scopes,
'label:' marks a statement, '@%p' / '@!%p' guards an instruction). Only the parts our kernels and the
executor's tests need are understood; anything else raises :class:`PtxError` naming the line.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Union

import numpy as np


class PtxError(Exception):
    """PTX the executor cannot parse or run; the message names the line."""


# Storage of a register declared with each type (predicates as bool; fp16/bf16 values travel as bits).
REG_STORAGE = {
    "pred": np.bool_,
    "b8": np.uint8, "u8": np.uint8, "s8": np.uint8,
    "b16": np.uint16, "u16": np.uint16, "s16": np.uint16, "f16": np.uint16, "bf16": np.uint16,
    "b32": np.uint32, "u32": np.uint32, "s32": np.uint32, "f16x2": np.uint32, "bf16x2": np.uint32,
    "f32": np.float32,
    "b64": np.uint64, "u64": np.uint64, "s64": np.uint64,
    "f64": np.float64,
}

# Bytes of a scalar of each type, as ld/st/param declarations use them.
TYPE_BYTES = {"pred": 1, "b8": 1, "u8": 1, "s8": 1, "b16": 2, "u16": 2, "s16": 2, "f16": 2, "bf16": 2,
              "b32": 4, "u32": 4, "s32": 4, "f32": 4, "f16x2": 4, "bf16x2": 4, "b64": 8, "u64": 8, "s64": 8,
              "f64": 8}

SPECIAL_REGISTERS = {"%tid.x", "%tid.y", "%tid.z", "%ntid.x", "%ntid.y", "%ntid.z", "%ctaid.x", "%ctaid.y",
                     "%ctaid.z", "%nctaid.x", "%nctaid.y", "%nctaid.z", "%laneid", "%warpid", "%nwarpid",
                     "%lanemask_eq", "%lanemask_lt", "%lanemask_le", "%lanemask_gt", "%lanemask_ge"}


@dataclasses.dataclass(frozen=True)
class Reg:
    slot: int
    name: str
    storage: type


@dataclasses.dataclass(frozen=True)
class Imm:
    value: Union[int, float]
    text: str
    is_float_bits: bool = False  # 0fXXXXXXXX / 0dXXXXXXXXXXXXXXXX: the value is raw IEEE bits


@dataclasses.dataclass(frozen=True)
class Special:
    name: str


@dataclasses.dataclass(frozen=True)
class Symbol:
    name: str  # a label, a shared/global/param variable or a function name


@dataclasses.dataclass(frozen=True)
class Vector:
    items: tuple  # of Reg / Imm / Sink


@dataclasses.dataclass(frozen=True)
class Address:
    base: Union[Reg, Symbol, None]
    offset: int


@dataclasses.dataclass(frozen=True)
class Sink:
    pass


@dataclasses.dataclass(frozen=True)
class NotPred:
    reg: Reg


@dataclasses.dataclass(frozen=True)
class PredPair:
    first: Optional[Reg]  # None for '_' (elect.sync _|%p)
    second: Optional[Reg]


Operand = Union[Reg, Imm, Special, Symbol, Vector, Address, Sink, NotPred, PredPair]


@dataclasses.dataclass
class Instruction:
    opcode: str                 # full opcode with modifiers, e.g. "ld.global.v4.u32"
    base: str                   # "ld"
    mods: tuple                 # ("global", "v4", "u32")
    operands: list
    guard: Optional[Reg]
    guard_negated: bool
    line: int
    text: str


@dataclasses.dataclass
class Param:
    name: str
    size: int
    align: int


@dataclasses.dataclass
class SharedVar:
    name: str
    size: int      # 0 for an extern (dynamic) array
    align: int
    extern: bool


@dataclasses.dataclass
class Kernel:
    name: str
    params: list
    registers: list               # Reg per slot
    instructions: list
    labels: dict                  # label -> instruction index
    shared: list                  # SharedVar declared in the body, then the module's
    local_bytes: int
    local_vars: dict              # name -> offset in the thread's local frame
    line: int
    max_threads: Optional[tuple] = None

    def shared_layout(self) -> tuple[dict, int, int]:
        """(symbol -> shared address, static bytes, alignment of the dynamic part) for this kernel:
        static variables first in declaration order, the extern (dynamic) array after them."""
        addresses: dict[str, int] = {}
        offset = 0
        dynamic_align = 16
        for var in self.shared:
            if var.extern:
                dynamic_align = max(dynamic_align, var.align)
                continue
            offset = (offset + var.align - 1) // var.align * var.align
            addresses[var.name] = offset
            offset += var.size
        dynamic_start = (offset + dynamic_align - 1) // dynamic_align * dynamic_align
        for var in self.shared:
            if var.extern:
                addresses[var.name] = dynamic_start
        return addresses, offset, dynamic_start


@dataclasses.dataclass
class Module:
    kernels: dict                 # name -> Kernel
    source_name: str


# -------------------------------------------------------------------------------------------------
# Lexing

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def _strip_comments(text: str) -> str:
    """Comments replaced by spaces (newlines kept, so line numbers stay right)."""
    return _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _statements(body: str, first_line: int):
    """Yield (line, kind, text) for a function body: kind is 'stmt', 'label', 'open' or 'close'.
    A '{' at the start of a statement opens a register scope; inside a statement it opens a vector
    operand ({%r1, %r2}), copied through to its '}'."""
    i, line, n = 0, first_line, len(body)
    start_line = line
    buf: list[str] = []
    nonblank = False
    while i < n:
        ch = body[i]
        if ch == "{" and nonblank:
            j = body.index("}", i)
            line += body.count("\n", i, j)
            buf.append(body[i:j + 1])
            i = j + 1
            continue
        if ch == ":" and nonblank and body[i + 1:i + 2] != ":" and body[i - 1:i] != ":":
            text = "".join(buf).strip()
            if re.match(r"^[$%\w.]+$", text):
                yield start_line, "label", text
                buf, nonblank = [], False
                i += 1
                continue
        if ch in "{};":
            text = "".join(buf).strip()
            buf, nonblank = [], False
            if text:
                yield from _split_labels(text, start_line)
            if ch == "{":
                yield line, "open", "{"
            elif ch == "}":
                yield line, "close", "}"
            i += 1
            continue
        if ch == "\n":
            line += 1
        elif not nonblank and not ch.isspace():
            nonblank = True
            start_line = line
        buf.append(ch)
        i += 1
    if nonblank:
        raise PtxError(f"line {start_line}: statement without ';' at the end of a function body")


def _split_labels(text: str, line: int):
    while True:
        m = re.match(r"^([$%\w.]+)\s*:(?!:)\s*", text)
        if not m:
            break
        yield line, "label", m.group(1)
        text = text[m.end():]
    if text:
        yield line, "stmt", text


def _split_operands(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


# -------------------------------------------------------------------------------------------------
# Parsing

_INT = re.compile(r"^-?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uU]?$")


def parse_int(text: str) -> Optional[int]:
    t = text.strip()
    if not _INT.match(t):
        return None
    neg = t.startswith("-")
    t = t.lstrip("-").rstrip("uU")
    if t.lower().startswith("0x"):
        v = int(t, 16)
    elif len(t) > 1 and t.startswith("0"):
        v = int(t, 8)
    else:
        v = int(t)
    return -v if neg else v


class _FunctionParser:
    def __init__(self, name: str, line: int, module_shared: list):
        self.name = name
        self.line = line
        self.registers: list[Reg] = []
        self.scopes: list[dict] = [{}]
        self.instructions: list[Instruction] = []
        self.labels: dict[str, int] = {}
        self.shared: list[SharedVar] = []
        self.module_shared = module_shared
        self.local_bytes = 0
        self.local_vars: dict[str, int] = {}

    def error(self, line: int, msg: str):
        raise PtxError(f"{self.name}: PTX line {line}: {msg}")

    def declare_regs(self, line: int, text: str):
        m = re.match(r"^\.reg\s+\.(\w+)\s+(.*)$", text, re.S)
        if not m or m.group(1) not in REG_STORAGE:
            self.error(line, f"unsupported register declaration '{text}'")
        storage = REG_STORAGE[m.group(1)]
        for item in _split_operands(m.group(2)):
            rng = re.match(r"^(%[\w$]+)<(\d+)>$", item)
            names = [f"{rng.group(1)}{i}" for i in range(int(rng.group(2)))] if rng else [item]
            for nm in names:
                # identifiers (PTX ISA, "Identifiers"): a letter then letters, digits, _ and $, or one of _ $ %
                # then at least one of those (cuda_fp16.h's inline PTX declares registers such as "low")
                if not re.match(r"^(?:[A-Za-z][\w$]*|[_$%][\w$]+)$", nm):
                    self.error(line, f"bad register name '{nm}'")
                reg = Reg(len(self.registers), nm, storage)
                self.registers.append(reg)
                self.scopes[-1][nm] = reg

    def declare_var(self, line: int, text: str):
        m = re.match(r"^(\.extern\s+)?\.(shared|local)\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+([\w$]+)(?:\[(\d*)\])?\s*$",
                     text)
        if not m:
            self.error(line, f"unsupported variable declaration '{text}'")
        extern, space, align, typ, name, count = m.groups()
        if typ not in TYPE_BYTES:
            self.error(line, f"unsupported variable type .{typ}")
        elem = TYPE_BYTES[typ]
        size = elem * (int(count) if count else 1) if count != "" else 0
        align_v = int(align) if align else elem
        if space == "shared":
            self.shared.append(SharedVar(name, size, align_v, bool(extern) or count == ""))
        else:
            self.local_bytes = (self.local_bytes + align_v - 1) // align_v * align_v
            self.local_vars[name] = self.local_bytes
            self.local_bytes += size

    def scoped(self, name: str) -> Optional[Reg]:
        """The register ``name`` names in the innermost scope declaring it, or None."""
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def lookup(self, line: int, name: str) -> Reg:
        reg = self.scoped(name)
        if reg is None:
            self.error(line, f"undeclared register {name}")
        return reg

    def operand(self, line: int, text: str) -> Operand:
        t = text.strip()
        if t == "_":
            return Sink()
        if t.startswith("{") and t.endswith("}"):
            return Vector(tuple(self.operand(line, p) for p in _split_operands(t[1:-1])))
        if t.startswith("[") and t.endswith("]"):
            inner = t[1:-1].strip()
            m = re.match(r"^([%$\w.]+)?\s*(?:\+\s*(-?\s*[0-9xXa-fA-F]+))?$", inner)
            if not m:
                num = parse_int(inner)
                if num is not None:
                    return Address(None, num)
                self.error(line, f"unsupported address '{t}'")
            base_text, off_text = m.group(1), m.group(2)
            offset = parse_int(off_text.replace(" ", "")) if off_text else 0
            if base_text is None:
                return Address(None, offset)
            num = parse_int(base_text)
            if num is not None:
                return Address(None, num + offset)
            base = self.lookup(line, base_text) if base_text.startswith("%") else \
                self.scoped(base_text) or Symbol(base_text)
            return Address(base, offset)
        if t.startswith("!"):
            return NotPred(self.lookup(line, t[1:].strip()))
        if "|" in t:
            a, b = t.split("|")
            first = None if a.strip() == "_" else self.lookup(line, a.strip())
            second = None if b.strip() == "_" else self.lookup(line, b.strip())
            return PredPair(first, second)
        if t in SPECIAL_REGISTERS:
            return Special(t)
        declared = self.scoped(t)
        if declared is not None:
            return declared
        if t.startswith("%"):  # not declared in any scope (looked up just above)
            if re.match(r"^%(tid|ntid|ctaid|nctaid|clock|globaltimer|smid|nsmid|gridid|envreg|pm)", t):
                self.error(line, f"unimplemented special register {t}")
            self.error(line, f"undeclared register {t}")
        m = re.match(r"^0[fF]([0-9a-fA-F]{8})$", t)
        if m:
            return Imm(int(m.group(1), 16), t, True)
        m = re.match(r"^0[dD]([0-9a-fA-F]{16})$", t)
        if m:
            return Imm(int(m.group(1), 16), t, True)
        num = parse_int(t)
        if num is not None:
            return Imm(num, t)
        if re.match(r"^-?\d+\.\d*([eE][-+]?\d+)?$", t):
            return Imm(float(t), t)
        if re.match(r"^[$\w.]+$", t):
            return Symbol(t)
        self.error(line, f"unsupported operand '{t}'")

    def statement(self, line: int, text: str):
        if text.startswith(".reg"):
            self.declare_regs(line, text)
            return
        if re.match(r"^(\.extern\s+)?\.(shared|local)\b", text):
            self.declare_var(line, text)
            return
        if text.startswith(".pragma") or text.startswith(".loc") or text.startswith(".file"):
            return
        if text.startswith("."):
            self.error(line, f"unsupported directive '{text.split()[0]}'")
        guard, negated = None, False
        m = re.match(r"^@(!?)\s*(%[\w$]+)\s+", text)
        if m:
            negated = m.group(1) == "!"
            guard = self.lookup(line, m.group(2))
            text = text[m.end():]
        parts = text.split(None, 1)
        opcode = parts[0]
        try:
            operands = [self.operand(line, p) for p in _split_operands(parts[1])] if len(parts) > 1 else []
        except PtxError as exc:
            raise PtxError(f"unimplemented PTX instruction '{opcode}' ({str(exc).split(': ', 2)[-1]}) at PTX line "
                           f"{line}: {text}") from None
        pieces = opcode.split(".")
        self.instructions.append(Instruction(opcode, pieces[0], tuple(pieces[1:]), operands, guard, negated, line,
                                             text.strip()))

    def parse_body(self, body: str, first_line: int):
        for line, kind, text in _statements(body, first_line):
            if kind == "open":
                self.scopes.append({})
            elif kind == "close":
                if len(self.scopes) == 1:
                    self.error(line, "unbalanced '}'")
                self.scopes.pop()
            elif kind == "label":
                self.labels[text] = len(self.instructions)
            else:
                self.statement(line, text)


def _parse_params(text: str, kernel: str, line: int) -> list[Param]:
    params = []
    for item in _split_operands(text):
        m = re.match(r"^\.param\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+(?:\.ptr\s+(?:\.\w+\s+)*)?([\w$]+)(?:\[(\d+)\])?$",
                     item.strip())
        if not m or m.group(2) not in TYPE_BYTES:
            raise PtxError(f"{kernel}: PTX line {line}: unsupported parameter '{item.strip()}'")
        align, typ, name, count = m.groups()
        elem = TYPE_BYTES[typ]
        params.append(Param(name, elem * (int(count) if count else 1), int(align) if align else elem))
    return params


def parse_module(text: str, source_name: str = "<ptx>") -> Module:
    """Parse a PTX module. Kernels (.entry) are parsed fully; a .func is an error only when called."""
    clean = _strip_comments(text)
    kernels: dict[str, Kernel] = {}
    module_shared: list[SharedVar] = []
    pos = 0
    header = re.compile(r"(?:\.visible\s+|\.weak\s+|\.extern\s+)?\.(entry|func)\s+(?:\([^)]*\)\s*)?([\w$]+)\s*"
                        r"(?:\(([^)]*)\))?", re.S)
    var_decl = re.compile(r"^\s*(\.extern\s+)?\.shared\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+([\w$]+)(?:\[(\d*)\])?\s*;",
                          re.M)
    for m in var_decl.finditer(clean):
        extern, align, typ, name, count = m.groups()
        # only module-level declarations (outside every function body)
        if clean.count("{", 0, m.start()) != clean.count("}", 0, m.start()):
            continue
        elem = TYPE_BYTES.get(typ, 1)
        module_shared.append(SharedVar(name, elem * int(count) if count else 0, int(align) if align else elem,
                                       bool(extern) or count == ""))
    for m in re.finditer(r"^\s*\.(global|const)\s+", clean, re.M):
        if clean.count("{", 0, m.start()) == clean.count("}", 0, m.start()):
            line = clean.count("\n", 0, m.start()) + 1
            raise PtxError(f"{source_name}: PTX line {line}: module-level .{m.group(1)} variables are not implemented")
    while True:
        m = header.search(clean, pos)
        if not m:
            break
        kind, name, params_text = m.group(1), m.group(2), m.group(3) or ""
        line = clean.count("\n", 0, m.start()) + 1
        # performance directives, then the body in braces (or ';' for a declaration)
        i = m.end()
        directives_start = i
        while i < len(clean) and clean[i] not in "{;":
            i += 1
        if i >= len(clean) or clean[i] == ";":
            pos = i + 1
            continue
        directives = clean[directives_start:i]
        depth, j = 0, i
        while j < len(clean):
            if clean[j] == "{":
                depth += 1
            elif clean[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        body = clean[i + 1:j]
        body_line = clean.count("\n", 0, i + 1) + 1
        pos = j + 1
        if kind == "func":
            continue
        parser = _FunctionParser(name, line, module_shared)
        parser.parse_body(body, body_line)
        for label_target in parser.labels.values():
            if label_target > len(parser.instructions):
                raise PtxError(f"{name}: label past the end")
        maxntid = re.search(r"\.(?:maxntid|reqntid)\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?", directives)
        kernels[name] = Kernel(
            name=name, params=_parse_params(params_text, name, line), registers=parser.registers,
            instructions=parser.instructions, labels=parser.labels, shared=parser.shared + module_shared,
            local_bytes=parser.local_bytes, local_vars=parser.local_vars, line=line,
            max_threads=tuple(int(g or 1) for g in maxntid.groups()) if maxntid else None)
    return Module(kernels, source_name)


def entry_names(text: str) -> list[str]:
    """The .entry names of a PTX module, in order (cheap: no full parse)."""
    return re.findall(r"\.entry\s+([\w$]+)\s*\(", _strip_comments(text))
