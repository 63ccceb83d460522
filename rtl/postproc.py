"""Post-processing of the compute engine: requantization in every scheme, clamp, activations.

:class:`PostProc` turns accumulators into output codes, ``lanes`` per cycle, bit for bit as
``zynqnn.numerics`` computes them (``Requant.apply`` of each scheme, then ``ops.leaky_relu_fixed``
or ``ops.leaky_relu_torch``). Only integer arithmetic is used; the float32 steps of the PyTorch and
ONNX Runtime schemes are done the way ``zynqnn.numerics.f32int`` describes (24-bit significands,
an aligned add with sticky bit, exact products, one round-to-nearest-even per float operation).

Per output channel the datapath reads one constant word (``zynqnn.hw.post.pbuf_word_layout``,
``PBUF_WORD_BITS`` = 128 bits, a union over the schemes); per layer it takes the scheme, the
output zero point and clamp (ReLU and ReLU6 are clamps) and the activation parameters
(``act_params_layout``). The host builds both with ``zynqnn.hw.post.postproc_layer`` from a
numerics ``Requant`` object and an optional ``LeakyFixed`` / ``LeakyTorch``.

Datapath of a lane (register stages; a result leaves ``PostProc.LATENCY`` = 70 cycles after its
input was accepted)::

    1-3    bias: int32 add (tflite, qnnpack, onnxruntime); aligned bias, then its add (pow2,
           fixed16); tflite's left shift
    2-8    int32 -> float32: |x|, normalize (four stages), round to 24 bits (two)
    4      the integer schemes' multiplier, shifts and wrap constants
    9-19   float add of the fbgemm bias: compare, order, align with sticky bit (two), add,
           normalize (four), round (two)
    20-24  the multiplier X x K (X 33 bits, K 32 bits): operand registers, two product
           registers, X x K[0:24] + (X x K[24:32] << 24)
    25-30  two rounding shifts, each a shifter by 8s, one by 0..8 and the increment (all eight
           rounding modes; float: round to 24 bits, then to an integer; tflite: doubling high
           multiply, then RoundingDivideByPOT)
    31-35  select, sign, int32 overflow rule, saturation, zero point, wrap to ``bits``, clamp
    36-39  code x constant: (q - zp) x mult (leaky_relu_fixed) or s_in x q (PyTorch FMA)
    40-45  leaky_relu_fixed: rounding shift, select, zero point, clamp
    40-59  PyTorch leaky_relu: FMA sum and rounding, slope multiply (d <= 0), x f32(1/s_out)
    59-66  ... vector path: shift amounts, zp_out + rne(y), saturate, clamp
    60-69  ... scalar path: rne(f32(y + zp_out)), clamp
    70     output select

Timing (issue 24, ``docs/timing.md``): a stage holds at most one carry chain and a few LUTs
(a compare, an adder or a mux level), or one level of a split shifter: shifters by a data-
dependent amount take two stages (by 8s, then by 0..8), normalization four (at most two log
steps each, decided from the stage's input), a rounding to 24 bits two (the increment and the
decision, then the select). Flags from long delay lines (SRLs: 1.5 ns clock to out) are
re-registered through a LUT before they drive a wide mux; per-layer constants that need a
shift are shifted once, in the control registers.

The slope multiply of the PyTorch leaky ReLU borrows the ``X x K[24:32]`` half of the main
multiplier, which only the tflite schemes use (the leaky ReLU follows a float scheme). A lane of
the int8 build has 7 DSP48E1 (main multiplier 2 + 2, code x constant 1, reciprocal multiply 2;
5 without the PyTorch leaky stage); the 48-bit int16 build 9 (3 + 3 for its 49-bit X).

Limits beyond numerics' own: ``pow2``/``fixed16`` output shifts down to -31 (a left shift is
folded into the 32-bit multiplier; numerics allows -62 for fixed16), wrap to at most
``signed_operand_bits`` bits; the 32-bit schemes of the 48-bit build see the accumulator's low
32 bits (numerics models int32 accumulators). Every stage ends in registers, products have
two registers after them, data registers have no reset (delay lines become SRLs), and the
pipeline never stalls: an input is accepted only when the output buffer
(:class:`~zynqnn.rtl.common.CreditBuffer`) has room for its result.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw import isa
from zynqnn.hw.config import PBUF_WORD_BITS, HwConfig
from zynqnn.hw.post import ActMode, Rounding, act_params_layout, pbuf_word_layout

from .common import CreditBuffer

__all__ = [
    "postproc_in_layout",
    "postproc_out_layout",
    "PostProc",
]

#: Fraction bits kept when the scalar PyTorch quantizer adds the zero point in float32 (two more
#: than the 24-bit rounding needs, then a sticky bit: round-to-odd is exact there).
_SCALAR_FRAC = 26
#: Width of a rounded result before the zero point and clamp (low bits exact, plus an overflow
#: flag): wide enough for wrapping to 32 bits and for the int32 overflow rule.
_YW = 40
#: Guard bits of the aligned float addition (operands normalized to 33..48 bits, results keep
#: 24: two guard bits and a sticky bit make the rounding exact).
_GUARD = 2


def postproc_in_layout(cfg: HwConfig, lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(cfg.acc_bits), lanes),
        "word": data.ArrayLayout(pbuf_word_layout, lanes),
    })


def postproc_out_layout(cfg: HwConfig, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.signed_operand_bits), lanes)


# ------------------------------------------------------------------------------------------------
# building blocks (shared with rtl/eltwise.py)


class Staged:
    """A value and the pipeline stage in which it is valid."""

    __slots__ = ("sig", "stage")

    def __init__(self, sig, stage: int):
        self.sig = sig
        self.stage = stage


class Pipe:
    """Named pipeline registers with automatic delay lines.

    A value of stage ``n`` is registered from values of stage ``n - 1``. A value read in a later
    stage goes through a delay line made on first use and shared by every later reader, so a
    stage only ever combines values of the same data item. Plain (unstaged) values are per-layer
    inputs, stable while a layer is in flight, and are read as they are.

    Data registers have no reset (validity travels in a separate, reset shift register), so delay
    lines map to SRL shift registers and the reset net stays small.
    """

    def __init__(self, m: Module, prefix: str):
        self.m = m
        self.prefix = prefix
        self._chains = {}

    def at(self, v, stage: int):
        if not isinstance(v, Staged):
            return v
        if stage < v.stage:
            raise ValueError(f"{v.sig!r} is valid from stage {v.stage}, read in stage {stage}")
        chain = self._chains.setdefault(id(v), (v, [v.sig]))[1]
        while len(chain) <= stage - v.stage:
            prev = chain[-1]
            base = getattr(prev, "name", None) or f"{self.prefix}x{len(self._chains)}"
            d = Signal(prev.shape(), name=f"{base}_d", reset_less=True)
            self.m.d.sync += d.eq(prev)
            chain.append(d)
        return chain[stage - v.stage]

    def stage(self, n: int) -> PipeStage:
        return PipeStage(self, n)

    def reg(self, name: str, stage: int, expr, shape=None) -> Staged:
        expr = Value.cast(expr)
        s = Signal(expr.shape() if shape is None else shape, name=f"{self.prefix}{name}",
                   reset_less=True)
        self.m.d.sync += s.eq(expr)
        return Staged(s, stage)


class PipeStage:
    """Computing the registers of stage ``n`` from the values of stage ``n - 1``."""

    def __init__(self, pipe: Pipe, n: int):
        self.p = pipe
        self.n = n

    def __getitem__(self, v):
        return self.p.at(v, self.n - 1)

    def reg(self, name, expr, shape=None) -> Staged:
        return self.p.reg(name, self.n, expr, shape)


def control_tap(m: Module, taps: dict, reg, name: str, k: int) -> Signal:
    """Control register ``reg`` delayed by ``k`` cycles (``taps`` keeps the delay line). Each
    lane (and group of readers in a lane) reads its own tap, so that no copy drives much more
    than 100 sinks: Yosys merges registers with equal inputs, not the taps of one delay line,
    and a line whose taps all have readers does not become an SRL. A tap read in stage n is
    valid when ``k < n`` (the per-layer inputs are stable while a layer is in flight)."""
    chain = taps.setdefault(name, [reg])
    while len(chain) <= k:
        d = Signal.like(chain[-1], name=f"ctl_{name}_t{len(chain)}", reset_less=True)
        m.d.sync += d.eq(chain[-1])
        chain.append(d)
    return chain[k]


def _ubits(n: int) -> int:
    return max(int(n).bit_length(), 1)


def mux_table(sel, table: list) -> Value:
    """``table[sel]`` as a tree of 2:1 muxes (``len(table) == 2 ** len(sel)``)."""
    sel = Value.cast(sel)
    level = [Value.cast(t) for t in table]
    for bit in range(len(sel)):
        level = [Mux(sel[bit], level[i + 1], level[i]) for i in range(0, len(level), 2)]
    return level[0]


def round_inc(mode, neg, lsb, rnd, sticky) -> Value:
    """Increment of a floor shift in each :class:`Rounding` mode. ``rnd``: first dropped bit;
    ``sticky``: any lower dropped bit; ``lsb``: last kept bit; ``neg``: the value is negative."""
    return mux_table(mode, [
        Const(0, 1),                 # FLOOR
        rnd | sticky,                # CEIL
        neg & (rnd | sticky),        # TOWARD_ZERO
        rnd,                         # HALF_UP
        rnd & sticky,                # HALF_DOWN
        rnd & (sticky | lsb),        # HALF_EVEN
        rnd & (sticky | ~neg),       # HALF_AWAY
        rnd & (sticky | neg),        # HALF_ZERO
    ])


def clamp(v, lo, hi) -> Value:
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def saturate(v, ovf, neg, width: int) -> Value:
    """``v`` when it fits (``ovf`` clear), else the extreme of ``width`` signed bits by ``neg``."""
    return Mux(ovf, Mux(neg, -(1 << (width - 1)), (1 << (width - 1)) - 1), v)


def overflows(v, width: int) -> Value:
    """``v`` (signed) does not fit ``width`` signed bits."""
    v = Value.cast(v)
    if len(v) <= width:
        return Const(0, 1)
    hi = v[width - 1:]
    return hi.any() & ~hi.all()


def shift_round_stages(p: Pipe, s: int, name: str, v, sh, mode, *, max_right: int = 0,
                       yw: int = _YW, rnd_in=None, sticky_in=None, positions=None,
                       dropped: bool = False, plus1=None):
    """``shift_round(v, sh, mode)`` of ``zynqnn.numerics.rounding``.

    ``v``: signed value; ``sh``: the right shift, unsigned, at most ``max_right`` (shifts past
    the top of ``v`` are fine); ``mode``: a :class:`Rounding` value; all read in stage ``s - 1``.
    ``rnd_in``/``sticky_in``: the first and the other bits already dropped below ``v`` (a
    rounding split over two shifts). ``positions``: the only shifts ``sh`` takes (a few
    constants: muxes in stage s instead of a shifter in stages s and s+1,
    :func:`shr_sticky_stages`). The increment takes the stage after the shift. Returns staged
    ``(y, ovf)`` of that stage (``y.stage``): the low ``yw`` bits of the result and whether it
    does not fit ``yw`` signed bits; with ``dropped``, also the dropped bits ``(rnd, sticky)``
    of the shift's last stage. ``plus1``: one more bit of right shift (stage ``s - 1``, the
    shifter only), kept out of the first stage's select logic.
    """
    st = p.stage(s)
    vv = Value.cast(st[v])
    if not vv.shape().signed:
        vv = Cat(vv, Const(0, 1)).as_signed()
    w = len(vv)
    r_in = Const(0, 1) if rnd_in is None else st[rnd_in]
    if positions is not None:
        shv = Value.cast(st[sh])
        s_in = Const(0, 1) if sticky_in is None else st[sticky_in]
        fl_v, rnd_v, st_v = vv, r_in, s_in
        for k in positions:
            hit = shv == k
            fl_v = Mux(hit, vv >> k, fl_v)
            rnd_v = Mux(hit, vv[k - 1] if k else r_in, rnd_v)
            st_v = Mux(hit, (vv[:k - 1].any() if k > 1 else 0) | (r_in | s_in if k else s_in),
                       st_v)
        fl = st.reg(f"{name}_fl", fl_v, signed(w))
        rnd = st.reg(f"{name}_rnd", rnd_v)
        sticky = st.reg(f"{name}_sticky", st_v)
        last = s + 1
    else:
        # one bit more below v: the shifted value's bit 0 is the rounding bit
        v2 = Staged(Cat(r_in, vv).as_signed(), s - 1)
        t, sticky = shr_sticky_stages(p, s, name, v2, sh, max_right, plus1=plus1,
                                      lost_in=sticky_in)
        last = s + 2
        tv = Value.cast(t.sig)
        fl = Staged(tv[1:].as_signed(), s + 1)
        rnd = Staged(tv[0], s + 1)
    neg = st.reg(f"{name}_neg", vv[-1])
    md = st.reg(f"{name}_mode", st[mode], unsigned(3))
    st = p.stage(last)
    flv = Value.cast(st[fl])
    inc = round_inc(st[md], st[neg], flv[0], st[rnd], st[sticky])
    low = flv[:yw].as_signed() if w > yw else flv
    y = Signal(signed(yw + 1), name=f"{p.prefix}{name}_inc")
    p.m.d.comb += y.eq(low + inc)
    # low + inc leaves yw signed bits only from the largest value (a compare beside the adder,
    # not after it)
    top = ((low == (1 << (yw - 1)) - 1) & inc) if len(low) >= yw else Const(0, 1)
    ovf = overflows(flv, yw) | top
    out = (st.reg(f"{name}_y", y[:yw].as_signed(), signed(yw)), st.reg(f"{name}_ovf", ovf))
    return out + (rnd, sticky) if dropped else out


def shr_sticky_stages(p: Pipe, s: int, name: str, v, sh, max_right: int, *, jam: bool = False,
                      plus1=None, lost_in=None):
    """``v >> sh`` (arithmetic for a signed ``v``, same width) and whether a set bit was dropped,
    in stages s (by multiples of 8) and s+1 (by 0..7): a log shifter in one stage is too deep.
    ``v``, ``sh`` (unsigned, at most ``max_right``) are read in stage ``s - 1``. Returns staged
    ``(t, sticky)`` of stage ``s + 1``; with ``jam``, ``t | sticky`` (the sticky bit ORed into
    bit 0) and ``sticky``. ``plus1`` (one bit, stage ``s - 1``) adds one to the second stage's
    amount (0..8); ``lost_in`` (one bit, stage ``s``) is ORed into ``sticky``."""
    st = p.stage(s)
    vv = Value.cast(st[v])
    w = len(vv)
    shv = Value.cast(st[sh])[:_ubits(max_right)]
    hi = shv[3:]
    lost_c = Const(0, 1)
    for g in range(min((w + 7) // 8, (1 << len(hi)) - 1)):     # group g: dropped if hi > g
        lost_c = lost_c | (vv[8 * g:min(8 * g + 8, w)].any() & (hi > g))
    c = st.reg(f"{name}_sc", vv >> Cat(Const(0, 3), hi), vv.shape())
    lc = st.reg(f"{name}_lc", lost_c)
    fine = shv[:3] if plus1 is None else shv[:3] + st[plus1]
    lo = st.reg(f"{name}_lo", fine, unsigned(4 if plus1 is not None else 3))
    st = p.stage(s + 1)
    cv, lov = Value.cast(st[c]), Value.cast(st[lo])
    nf = min(8 if plus1 is not None else 7, w)
    lost = (cv[:nf] & low_mask(lov, nf)).any() | st[lc]
    if lost_in is not None:
        lost = lost | st[lost_in]
    t = cv >> lov
    if jam:
        t = t | lost
    return st.reg(f"{name}_sf", t, vv.shape()), st.reg(f"{name}_lost", lost)


def right_amount(sh, limit: int) -> Value:
    """``sh`` (signed) clamped to ``0..limit``, unsigned."""
    sh = Value.cast(sh)
    return Mux(sh < 0, 0, Mux(sh > limit, limit, sh))[:_ubits(limit)]


def float_int_flags(left, y, top: int):
    """For ``y * 2^left`` (``left >= 0``, ``2^23 <= y <= 2^24`` unless zero): ``(sat, big)``:
    the value is at least 2^23 (beyond every clamp: saturate) and at least 2^31 (PyTorch's
    conversion gives INT32_MIN)."""
    y = Value.cast(y)
    nz = y != 0
    sat = (left > 0) & nz
    big = nz & ((left >= 8) | ((left == 7) & y[top]))
    return sat, big


def scalar_prep_stage(p: Pipe, s: int, name: str, e_y, y_zero, qb: int):
    """Stages ``s`` and ``s + 1`` of :func:`scalar_quantize_stages`: the alignment of ``y``
    (from ``e_y`` read in stage ``s - 1``). Returns the staged ``(shift, sat)`` of stage
    ``s + 1``."""
    st = p.stage(s)
    ey = Value.cast(st[e_y])
    lmax = qb + 4
    # y << lsh or y >> rsh (sticky) is (y << lmax) >> (lmax - (e_y + _SCALAR_FRAC)), clamped
    na = st.reg(f"{name}_na", (lmax - _SCALAR_FRAC) - ey, signed(14))
    sat = st.reg(f"{name}_sat", ~st[y_zero] & (ey >= qb + 2 - 23))
    st = p.stage(s + 1)
    return (st.reg(f"{name}_sh", right_amount(st[na], lmax + 31)),
            st.reg(f"{name}_sat1", st[sat]))


def _at_most_one(v) -> Value:
    """No two bits of ``v`` are set (a tree, not ``v & (v - 1)``'s carry chain)."""
    pairs = [(b, Const(0, 1)) for b in Value.cast(v)]
    while len(pairs) > 1:
        nxt = []
        for k in range(0, len(pairs) - 1, 2):
            (a1, m1), (a2, m2) = pairs[k], pairs[k + 1]
            nxt.append((a1 | a2, m1 | m2 | (a1 & a2)))
        if len(pairs) % 2:
            nxt.append(pairs[-1])
        pairs = nxt
    return ~pairs[0][1]


def scalar_quantize_stages(p: Pipe, s: int, name: str, y, prep, y_neg, zp, qb: int):
    """``rne(f32(y + zp))`` (PyTorch's scalar ``quantize_val``) in stages s .. s+6.

    ``y = (-1)^y_neg * y * 2^e_y`` (``y`` 25 bits, at most 2^24; read in stage ``s - 1``),
    ``prep`` from :func:`scalar_prep_stage` (stage ``s - 1``), ``zp`` an integer. The exact
    ``t = y + zp`` is formed with ``_SCALAR_FRAC`` fraction bits and a sticky bit. Its float32
    rounding moves it by at most half a unit of its 24th bit, so ``rne(f32(t))`` is ``rne(t)``
    except when ``f32(t)`` is exactly a half-integer: then ``|frac(t) - 1/2|`` is within half a
    unit of ``t``'s 24th bit, and the tie goes to the even integer. Returns staged ``(r, sat)``
    of stage ``s + 6``: ``r`` the integer; when ``sat`` (``|y| >= 2^(qb+2)``) the sign of ``y``
    decides the clamp instead.
    """
    fr = _SCALAR_FRAC
    sh, sat = prep
    lmax = qb + 4
    st = p.stage(s)
    ys = Value.cast(st[y])
    yw = Staged(Cat(Const(0, lmax), ys), s - 1)
    yfix, _ = shr_sticky_stages(p, s, f"{name}_yf", yw, sh, lmax + 31, jam=True)
    st = p.stage(s + 2)
    yf = Value.cast(st[yfix])
    zpf = Value.cast(st[zp]) << fr
    tw = len(yf) + 2
    t = st.reg(f"{name}_t", Mux(st[y_neg], zpf - yf, zpf + yf), signed(tw))
    st = p.stage(s + 3)
    tv = Value.cast(st[t])
    k = st.reg(f"{name}_k", tv >> fr, signed(tw - fr))
    frac = tv[:fr]
    half = 1 << (fr - 1)
    # frac >= half is frac's top bit; frac - half its other bits
    gt = st.reg(f"{name}_gt", frac[fr - 1] & frac[:fr - 1].any())
    d2 = st.reg(f"{name}_d2", Mux(frac[fr - 1], frac[:fr - 1], half - frac) << 1,
                unsigned(fr + 1))
    mag = st.reg(f"{name}_mag", Mux(tv < 0, -tv, tv)[:tw], unsigned(tw))
    st = p.stage(s + 4)
    dv = Value.cast(st[d2])
    nd = len(dv)
    # smear (bit i: any bit of d2 at or above i) over two stages: ORs of six, then of five
    or6 = st.reg(f"{name}_or6", Cat(*(dv[i:i + 6].any() for i in range(nd))), unsigned(nd))
    pow2 = st.reg(f"{name}_pow2", _at_most_one(dv))
    st = p.stage(s + 5)
    mv = Value.cast(st[mag])
    o6 = Value.cast(st[or6])
    smv = Cat(*(Cat(*(o6[j] for j in range(i, nd, 6))).any() for i in range(nd)))
    # 2d <= 2^(bits(t) - 24): f32(t) is the half-integer. m > smear (all ones below d2's top
    # bit) when m has a bit above it: an AND-OR tree instead of a compare's carry chain.
    def above(mm):
        mm = Value.cast(mm)
        ext = Cat(smv, Const(0, max(len(mm) - nd, 0)))
        return (mm & ~ext[:len(mm)]).any()
    tie = st.reg(f"{name}_tie", above(mv >> 23) | (st[pow2] & above(mv >> 22)))
    st = p.stage(s + 6)
    kv = Value.cast(st[k])
    inc = Mux(st[tie], kv[0], st[gt])
    return st.reg(f"{name}_r", kv + inc, signed(tw - fr + 1)), sat


def low_mask(n, width: int) -> Value:
    """``width`` bits, the ``n`` lowest set (all set when ``n >= width``)."""
    return ~(Const((1 << width) - 1, width) << n)[:width]


def normalize_stages(p: Pipe, s: int, name: str, mag):
    """Shift an unsigned ``mag`` up until its MSB is set, in stages s .. s+3 (log steps by 32;
    16; 8 and 4; 2 and 1; each when the top bits are zero). A stage decides its steps from its
    input's top bits (the second flag a zero test of one of two windows, chosen by the first),
    then shifts once: at most two flags (windows of at most 12 bits) and a 4:1 mux a stage.

    Returns staged ``(norm, lz)`` of stage ``s + 3``; ``lz`` is the count of leading zeros
    (unspecified for zero). Its bits are the steps taken: no adder.
    """
    lz_bits = 6
    x_s, lz_s = mag, None
    for n, ks in enumerate(((32,), (16,), (8, 4), (2, 1))):
        st = p.stage(s + n)
        x = Value.cast(st[x_s])
        w = len(x)

        def zero(hi, lo, x=x):
            """x[lo:hi] == 0, bits below 0 count as zero."""
            lo = max(lo, 0)
            return x[lo:hi] == 0 if hi > lo else Const(1, 1)

        def up(v, k, w=w):
            return Cat(Const(0, k), v[:w - k]) if k < w else Const(0, w)

        flags = []
        for j, k in enumerate(ks):
            if k >= w:
                flags.append(Const(0, 1))
                continue
            # the top k bits after the earlier steps of this stage: one window per choice
            offs = [sum(ks[b] for b in range(j) if t >> b & 1) for t in range(1 << j)]
            flags.append(_select_by_flags(flags, [zero(w - o, w - o - k) for o in offs]))
        shifted = [up(x, sum(ks[b] for b in range(len(ks)) if t >> b & 1)) if t else x
                   for t in range(1 << len(ks))]
        xo = _select_by_flags(flags, shifted)
        bits = {32: 5, 16: 4, 8: 3, 4: 2, 2: 1, 1: 0}
        lz = Const(0, lz_bits) if lz_s is None else Value.cast(st[lz_s])
        for k, z in zip(ks, flags, strict=True):
            lz = lz | (z.as_unsigned() << bits[k])
        x_s = st.reg(f"{name}_n{n}", xo, unsigned(w))
        lz_s = st.reg(f"{name}_l{n}", lz[:lz_bits], unsigned(lz_bits))
    return x_s, lz_s


def _select_by_flags(flags, table):
    """``table[sum(flag_b << b)]`` as a mux tree (``len(table) == 2 ** len(flags)``)."""
    level = [Value.cast(t) for t in table]
    for f in flags:
        level = [Mux(f, level[i + 1], level[i]) for i in range(0, len(level), 2)]
    return level[0]


def round_top_stages(p: Pipe, s: int, name: str, norm, keep: int = 24):
    """Round a normalized value to its top ``keep`` bits, ties to even, over stages s (the
    increment and whether to take it) and s+1 (the select: no carry chain after the decision).
    ``norm`` is read in stage ``s - 1``. Returns ``(sig, carry)`` as expressions of stage
    ``s + 1``'s inputs, for the caller to register in stage s + 1: ``sig`` renormalized
    (``2^(keep-1)`` on carry), ``carry`` set when the rounding carried into a new bit (the
    exponent grows by one)."""
    st = p.stage(s)
    nv = Value.cast(st[norm])
    w = len(nv)
    top = nv[w - keep:]
    rnd = nv[w - keep - 1]
    sticky = nv[:w - keep - 1].any() if w - keep - 1 > 0 else Const(0, 1)
    t = st.reg(f"{name}_top", top, unsigned(keep))
    t1 = st.reg(f"{name}_top1", top + 1, unsigned(keep + 1))
    inc = st.reg(f"{name}_rinc", rnd & (sticky | top[0]))
    st = p.stage(s + 1)
    t1v = Value.cast(st[t1])
    carry = st[inc] & t1v[keep]
    sig = Mux(st[inc], Mux(t1v[keep], 1 << (keep - 1), t1v[:keep]), st[t])
    return sig, carry


def mul_pieces(m: Module, name: str, a, b, regs: int = 2) -> list:
    """``a * b`` (``a`` signed, ``b`` unsigned of at most 24 bits) as DSP48E1-sized products.

    ``a`` is cut into 17-bit unsigned pieces and a signed top piece (one DSP48E1 each); each
    product is followed by ``regs`` registers. Returns ``[(product, shift), ...]``.
    """
    a = Value.cast(a)
    b = Value.cast(b)
    assert len(b) <= 24 and not b.shape().signed
    pieces = []
    lo, w = 0, len(a)
    while lo < w:
        hi = min(lo + 17, w)
        if w - hi == 1:     # never leave a 1-bit signed top piece
            hi = w
        part = a[lo:hi].as_signed() if hi == w else Cat(a[lo:hi], Const(0, 1)).as_signed()
        cur = part * b
        for k in range(regs):
            r = Signal(cur.shape(), name=f"{name}_p{lo}_r{k}", reset_less=True)
            m.d.sync += r.eq(cur)
            cur = r
        pieces.append((cur, lo))
        lo = hi
    return pieces


def sum_pieces(pieces) -> Value:
    total = None
    for prod, sh in pieces:
        term = prod << sh if sh else prod
        total = term if total is None else total + term
    return total


def float_add_stages(p: Pipe, s: int, name: str, a, b, width: int = 48, exp_offset: int = 0):
    """Float addition of two normalized operands with one rounding to 24 bits (ties to even).

    ``a``, ``b``: ``(mag, exp, neg)`` read in stage ``s - 1``; ``mag`` is 0 or normalized to
    ``width`` bits (``2^(width-1) <= mag < 2^width``), the value ``(-1)^neg * mag * 2^exp``.
    Eleven stages (s .. s+10): compare, order by magnitude, align with sticky bit (two), add,
    normalize (four), round (two). Returns staged ``(sig, exp, neg, zero)`` of stage ``s + 10``
    (``2^23 <= sig < 2^24`` unless zero; the value is ``sig * 2^(exp - exp_offset)``).
    """
    g = _GUARD
    w = width
    dmax = w + g
    st = p.stage(s)
    am, ae, an = (Value.cast(st[x]) for x in a)
    bm, be, bn = (Value.cast(st[x]) for x in b)
    # the compares, registered: each a carry chain of its own
    az = st.reg(f"{name}_az", am == 0)
    bz = st.reg(f"{name}_bz", bm == 0)
    e_gt = st.reg(f"{name}_egt", ae > be)
    e_eq = st.reg(f"{name}_eeq", ae == be)
    m_ge = st.reg(f"{name}_mge", am >= bm)
    dab = st.reg(f"{name}_dab", ae - be, signed(13))     # both in parallel, then choose
    dba = st.reg(f"{name}_dba", be - ae, signed(13))
    a1 = tuple(st.reg(f"{name}_a{k}", x) for k, x in enumerate((am, ae, an)))
    b1 = tuple(st.reg(f"{name}_b{k}", x) for k, x in enumerate((bm, be, bn)))

    st = p.stage(s + 1)
    am, ae, an = (Value.cast(st[x]) for x in a1)
    bm, be, bn = (Value.cast(st[x]) for x in b1)
    # the larger magnitude first, so that the sum of magnitudes never goes negative
    a_big = ~st[az] & (st[bz] | st[e_gt] | (st[e_eq] & st[m_ge]))
    dv_ab, dv_ba = Value.cast(st[dab]), Value.cast(st[dba])
    d_ab = Mux(dv_ab > dmax, dmax, dv_ab)
    d_ba = Mux(dv_ba > dmax, dmax, dv_ba)
    dd = st.reg(f"{name}_d", Mux(st[az] | st[bz], dmax, Mux(a_big, d_ab, d_ba))[:_ubits(dmax)])
    big_m = st.reg(f"{name}_big", Mux(a_big, am, bm), unsigned(w))
    big_e = st.reg(f"{name}_big_e", Mux(a_big, ae, be), signed(12))
    big_n = st.reg(f"{name}_big_n", Mux(a_big, an, bn))
    sml_m = st.reg(f"{name}_sml", Mux(a_big, bm, am), unsigned(w))
    sub = st.reg(f"{name}_sub", an ^ bn)

    sm = Staged(Cat(Const(0, g), p.at(sml_m, s + 1)), s + 1)
    sml_al, _ = shr_sticky_stages(p, s + 2, f"{name}_al", sm, dd, dmax, jam=True)

    st = p.stage(s + 4)
    x, y = Cat(Const(0, g), st[big_m]), st[sml_al]
    mag = st.reg(f"{name}_sum", Mux(st[sub], x - y, x + y)[:w + g + 1], unsigned(w + g + 1))

    norm, lz = normalize_stages(p, s + 5, f"{name}_n", mag)

    st = p.stage(s + 9)
    e0 = st.reg(f"{name}_e0", st[big_e] + (w + 1 - 24 + exp_offset) - st[lz], signed(12))
    zero = st.reg(f"{name}_zero", st[mag] == 0)
    sig, carry = round_top_stages(p, s + 9, f"{name}_r", norm)
    st = p.stage(s + 10)
    return (st.reg(f"{name}_r_sig", sig, unsigned(24)),
            st.reg(f"{name}_r_exp", st[e0] + carry, signed(12)),
            st.reg(f"{name}_r_neg", st[big_n]),
            st.reg(f"{name}_r_zero", st[zero]))


def round24_stages(p: Pipe, s: int, name: str, n):
    """An integer ``n`` rounded to 24 significant bits, ties to even; stages s .. s+6.

    Returns staged ``(sig, exp, neg, zero)`` of stage ``s + 6`` with
    ``n ~ (-1)^neg * sig * 2^exp`` (``2^23 <= sig < 2^24`` unless zero).
    """
    st = p.stage(s)
    nv = Value.cast(st[n])
    w = len(nv)
    mag = st.reg(f"{name}_mag", Mux(nv < 0, -nv, nv)[:w], unsigned(w))
    neg = st.reg(f"{name}_neg", nv < 0)
    zero = st.reg(f"{name}_zero0", nv == 0)
    norm, lz = normalize_stages(p, s + 1, name, mag)
    st = p.stage(s + 5)
    nm = Value.cast(st[norm])
    if w < 26:
        nm = Cat(Const(0, 26 - w), nm)
    e0 = st.reg(f"{name}_e0", (len(nm) - 24) - (len(nm) - w) - st[lz], signed(9))
    sig, carry = round_top_stages(p, s + 5, f"{name}_r", Staged(nm, s + 4))
    st = p.stage(s + 6)
    return (st.reg(f"{name}_sig", sig, unsigned(24)),
            st.reg(f"{name}_exp", st[e0] + carry, signed(9)),
            st.reg(f"{name}_sign", st[neg]),
            st.reg(f"{name}_zero", st[zero]))


def stage_mul(p: Pipe, s: int, name: str, a, b):
    """``a * b`` through DSP48E1 pieces: operand registers in stage s, products in s+1 and s+2,
    their sum in s+3. ``a``, ``b`` are read in stage ``s - 1``. Returns the staged product."""
    st = p.stage(s)
    av = Value.cast(st[a])
    bv = Value.cast(st[b])
    ra = st.reg(f"{name}_a", av)
    rb = st.reg(f"{name}_b", bv)
    pieces = mul_pieces(p.m, f"{p.prefix}{name}", ra.sig, rb.sig)
    width = len(av) + len(bv) + 1
    return p.reg(f"{name}_prod", s + 3, sum_pieces(pieces), signed(width))


# ------------------------------------------------------------------------------------------------
# the component


class PostProc(wiring.Component):
    """``lanes`` parallel post-processing lanes: requantization, clamp and activation.

    Members
    -------
    i: In(stream)
        ``acc``: ``lanes`` accumulators (signed ``acc_bits``), ``word``: each one's channel
        constants (:data:`pbuf_word_layout`).
    o: Out(stream)
        ``lanes`` output codes, ``signed_operand_bits`` wide (uint8, int8 or int16 codes).
    scheme: In(isa.Scheme)
        The layer's requantization scheme.
    zp_out, clamp_min, clamp_max: In
        Output zero point and clamp (ReLU: ``clamp_min = zp_out``; ReLU6: ``clamp_max``).
    act: In(act_params_layout)
        Activation (none, fixed-point leaky, PyTorch quantized leaky_relu) and its constants.

    Per-layer inputs must be stable from the first accepted input of a layer until its last
    result has left the pipeline (``LATENCY`` cycles after it was accepted). Results leave in
    order; the pipeline accepts one input per cycle while its output buffer has room for it,
    whatever ``o.ready`` does.

    The 48-bit accumulators of the int16 build enter the 32-bit schemes (tflite and the float
    schemes) as their low 32 bits; ``pow2``, ``fixed16`` and ``COPY`` use all bits.

    Parameters
    ----------
    cfg: the hardware config; lanes: parallel lanes (default ``cfg.requant_lanes``).
    leaky_torch: build the PyTorch quantized leaky_relu stage (``ActMode.LEAKY_TORCH``); without
        it that mode outputs the requantized code unchanged. Saves 2 DSP48E1 per lane and about
        a third of the lane's logic.
    scalar_tail: build the scalar-tail quantizer of that stage (``LeakyTorch(path="scalar")``);
        without it the vector formula is used for every element.
    ``LATENCY`` is the same for every choice.
    """

    #: Cycles from an accepted input to its result entering the output buffer.
    LATENCY = 70

    def __init__(self, cfg: HwConfig, lanes: int | None = None, *, leaky_torch: bool = True,
                 scalar_tail: bool = True):
        self._cfg = cfg
        self._lanes = cfg.requant_lanes if lanes is None else lanes
        if not isinstance(self._lanes, int) or self._lanes < 1:
            raise ValueError(f"PostProc: lanes must be an int >= 1, not {self._lanes!r}")
        self.leaky_torch = bool(leaky_torch)
        self.scalar_tail = bool(scalar_tail) and self.leaky_torch
        q = signed(cfg.signed_operand_bits)
        super().__init__({
            "i": In(stream.Signature(postproc_in_layout(cfg, self._lanes))),
            "o": Out(stream.Signature(postproc_out_layout(cfg, self._lanes))),
            "scheme": In(isa.Scheme),
            "zp_out": In(q),
            "clamp_min": In(q),
            "clamp_max": In(q),
            "act": In(act_params_layout(cfg)),
        })

    @property
    def cfg(self) -> HwConfig:
        return self._cfg

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        cfg, lanes = self._cfg, self._lanes
        m.submodules.out_buffer = obuf = CreditBuffer(postproc_out_layout(cfg, lanes),
                                                      self.LATENCY + 4)
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(obuf.can_accept),
            accept.eq(self.i.valid & self.i.ready),
            obuf.accept.eq(accept),
        ]
        ctl = _Control(m, self)
        out = Signal(postproc_out_layout(cfg, lanes))
        for n in range(lanes):
            q = _Lane(m, Pipe(m, f"l{n}_"), cfg, self, ctl, n).build(
                self.i.payload.acc[n], self.i.payload.word[n])
            assert q.stage == self.LATENCY, (q.stage, self.LATENCY)
            m.d.comb += out[n].eq(q.sig)

        valid = accept
        for k in range(self.LATENCY):
            v_d = Signal(name=f"valid_s{k + 1}")
            m.d.sync += v_d.eq(valid)
            valid = v_d
        m.d.comb += [
            obuf.w_data.eq(out),
            obuf.w_en.eq(valid),
            self.o.payload.eq(obuf.r_data),
            self.o.valid.eq(obuf.r_valid),
            obuf.r_ready.eq(self.o.ready),
        ]
        return m


class _Control:
    """The per-layer inputs decoded and registered once, shared by the lanes (read from stage 1
    on; stage 1 itself reads the ports)."""

    def __init__(self, m: Module, pp: PostProc):
        S = isa.Scheme
        qb = pp.cfg.signed_operand_bits
        q = signed(qb)

        # Reloaded every cycle from the ports: no reset (a reset would join each one's
        # zeroing mux on the flip-flops' reset pin, behind the engine's wide reset net).
        def r(name, expr, shape=1):
            s = Signal(shape, name=f"ctl_{name}", reset_less=True)
            m.d.sync += s.eq(expr)
            return s

        sch = pp.scheme
        act = pp.act
        self.tfl_d = r("tfl_d", sch == S.TFLITE)
        self.tfl_s = r("tfl_s", sch == S.TFLITE_SINGLE_ROUNDING)
        self.tfl = r("tfl", (sch == S.TFLITE) | (sch == S.TFLITE_SINGLE_ROUNDING))
        self.fb = r("fb", sch == S.TORCH_FBGEMM)
        self.flt = r("flt", (sch == S.TORCH_FBGEMM) | (sch == S.TORCH_QNNPACK)
                     | (sch == S.ONNXRUNTIME))
        self.torch = r("torch", (sch == S.TORCH_FBGEMM) | (sch == S.TORCH_QNNPACK))
        self.fix = r("fix", (sch == S.POW2) | (sch == S.FIXED16))
        self.act_fixed = r("act_fixed", act.mode == ActMode.LEAKY_FIXED)
        self.act_torch = r("act_torch", act.mode == ActMode.LEAKY_TORCH)
        mid = act.mode != ActMode.NONE
        self.zp1 = r("zp1", Mux(mid, act.zp_mid, pp.zp_out), q)
        self.lo1 = r("lo1", Mux(mid, act.lo_mid, pp.clamp_min), q)
        self.hi1 = r("hi1", Mux(mid, act.hi_mid, pp.clamp_max), q)
        self.zp = r("zp", pp.zp_out, q)
        self.lo = r("lo", pp.clamp_min, q)
        self.hi = r("hi", pp.clamp_max, q)
        self.act = Signal(act_params_layout(pp.cfg), name="ctl_act", reset_less=True)
        m.d.sync += self.act.eq(act)
        # the PyTorch FMA's constant, aligned once per layer (read from stage 30 on)
        self.c_al = r("c_al", (self.act.c_sig << self.act.c_shift)[:qb + 27].as_signed(),
                      signed(qb + 27))
        self.scheme = sch     # the raw port, for stage 1 only
        self._m = m
        self._taps = {}

    def tap(self, name: str, k: int) -> Signal:
        return control_tap(self._m, self._taps, getattr(self, name), name, k)


class _Lane:
    """One lane's datapath (see the module docstring for the stages)."""

    def __init__(self, m: Module, p: Pipe, cfg: HwConfig, pp: PostProc, c: _Control,
                 lane: int = 0):
        self.m, self.p, self.cfg, self.pp, self.c = m, p, cfg, pp, c
        self.lane = lane
        self.xw = max(33, cfg.acc_bits + 1)
        # Operand registers of the multiplier's second half (X x K[24:31]): loaded from the
        # main path (stage 13) for tflite, from the leaky slope multiply for the float schemes.
        self.mb_x = Signal(signed(self.xw), name=f"{p.prefix}mb_x", reset_less=True)
        self.mb_k = Signal(unsigned(24), name=f"{p.prefix}mb_k", reset_less=True)
        self.mb_pieces = mul_pieces(m, f"{p.prefix}mb", self.mb_x, self.mb_k)

    def t(self, name: str, group: int, groups: int, stage: int) -> Signal:
        """This lane's copy of control register ``name`` for reader group ``group`` of
        ``groups``, read from stage ``stage`` on (:meth:`_Control.tap`)."""
        k = 1 + self.lane * groups + group
        assert k < stage, (name, k, stage)
        return self.c.tap(name, k)

    def _mb_product(self, stage: int, enable=None) -> Staged:
        """The second half's product (zero unless ``enable``), for operands loaded
        ``stage - 3``."""
        s = Signal(signed(self.xw + 25), name=f"{self.p.prefix}mb_prod_s{stage}",
                   reset_less=True)
        total = sum_pieces(self.mb_pieces)
        self.m.d.sync += s.eq(total if enable is None else Mux(enable, total, 0))
        return Staged(s, stage)

    def build(self, acc_in, word_in) -> Staged:
        m, p, cfg, c = self.m, self.p, self.cfg, self.c
        S = isa.Scheme
        aw, qb, xw = cfg.acc_bits, cfg.signed_operand_bits, self.xw
        acc0 = Staged(Value.cast(acc_in), 0)
        word0 = Staged(Value.cast(word_in), 0)

        # -- 1: int32 bias add (the ports decide: the control is not yet loaded) ------------
        st = p.stage(1)
        sch = c.scheme
        w = pbuf_word_layout(st[word0])
        tfl = (sch == S.TFLITE) | (sch == S.TFLITE_SINGLE_ROUNDING)
        intb = (sch == S.TORCH_QNNPACK) | (sch == S.ONNXRUNTIME)
        fix = (sch == S.POW2) | (sch == S.FIXED16)
        bias32 = Mux(tfl, w.tflite.bias, Mux(intb, w.float.bias, 0))
        acc = Value.cast(st[acc0])
        x32 = st.reg("x32", (acc[:32].as_signed() + bias32)[:32].as_signed(), signed(32))
        sh = w.tflite.shift
        lsh = st.reg("lsh", Mux(sh > 0, sh[:5], 0), unsigned(5))
        fixb = st.reg("fixb", fix)
        acc1 = st.reg("acc", acc, signed(aw))
        word1 = st.reg("word", st[word0], unsigned(PBUF_WORD_BITS))

        # -- 2: the aligned bias; tflite's left shift; |x| for int -> float -----------------
        st = p.stage(2)
        w = pbuf_word_layout(st[word1])
        fx = w.fixed
        bal = st.reg("bias_al", Mux(st[fixb], (fx.bias << fx.bias_shift)[:aw].as_signed(), 0),
                     signed(aw))
        x = st[x32]
        xl = st.reg("xl", (x << st[lsh])[:32].as_signed(), signed(32))
        absx = st.reg("absx", Mux(x < 0, -x, x)[:32], unsigned(32))
        negx = st.reg("negx", x < 0)
        word2 = st.reg("word2", st[word1], unsigned(PBUF_WORD_BITS))

        # -- 3: accumulator + aligned bias ---------------------------------------------------
        st = p.stage(3)
        v = st[acc1] + st[bal]
        x_int = st.reg("x_int", Mux(c.tfl_d, st[xl], Mux(c.tfl_s, st[x32], v)), signed(xw))

        # -- 4: the integer schemes' multiplier and shifts -----------------------------------
        st = p.stage(4)
        w = pbuf_word_layout(st[word2])
        fx = w.fixed
        vneg = st[x_int][-1]
        k_int = st.reg("k_int", Mux(c.tfl, w.tflite.multiplier[:31], Mux(
            c.fix, Mux(vneg, fx.mult_neg, fx.mult_pos), 1)), unsigned(32))
        s1_int = st.reg("s1_int", Mux(c.tfl_d, 31, Mux(c.tfl_s, 31 - w.tflite.shift, Mux(
            c.fix, Mux(vneg, fx.shift_neg, fx.shift_pos), 0))), unsigned(7))
        mode1_int = st.reg("mode1_int", Mux(c.tfl, Rounding.HALF_UP,
                                            Mux(c.fix, fx.rounding, Rounding.FLOOR)), unsigned(3))
        s2_int = st.reg("s2_int", Mux(w.tflite.shift < 0, -w.tflite.shift, 0)[:5], unsigned(5))
        wrap = st.reg("wrap", c.fix & fx.wrap)
        wrap_top = st.reg("wrap_top", fx.wrap_bits - 1, unsigned(6))
        wrap_keep = st.reg("wrap_keep", low_mask(fx.wrap_bits, qb), unsigned(qb))
        m_sig = st.reg("m_sig", w.float.m_sig, unsigned(24))
        m_exp = st.reg("m_exp", w.float.m_exp, signed(9))
        fb = w.fbgemm
        b_mag = st.reg("b_mag", Mux(c.fb, fb.b_mag, 0), unsigned(48))
        b_exp = st.reg("b_exp", fb.b_exp, signed(12))
        b_neg = st.reg("b_neg", fb.b_neg)

        # -- 3-8: int32 -> float32: normalize, round to 24 bits ------------------------------
        xnorm, xlz = normalize_stages(p, 3, "i2f", absx)
        st = p.stage(7)
        t_e0 = st.reg("t_e0", 8 - 24 - st[xlz], signed(12))
        t_sig, t_carry = round_top_stages(p, 7, "i2f_r", xnorm)
        st = p.stage(8)
        t_mag = st.reg("t_mag", Cat(Const(0, 24), t_sig), unsigned(48))
        t_exp = st.reg("t_exp", st[t_e0] + t_carry, signed(12))

        # -- 9-19: + fbgemm's float bias (zero for the other float schemes: then exact) ----
        r_sig, r_exp, r_neg, _ = float_add_stages(p, 9, "fadd", (t_mag, t_exp, negx),
                                                  (b_mag, b_exp, b_neg))

        # -- M .. M+4: X x K -----------------------------------------------------------------
        M = r_sig.stage + 1
        flt_a = self.t("flt", 0, 3, M)          # operand selects (57 bits)
        flt = self.t("flt", 2, 3, M)            # the other readers
        st = p.stage(M)
        xop = Mux(flt_a, Cat(st[r_sig], Const(0, 1)).as_signed(), st[x_int])
        kop = Mux(flt_a, st[m_sig], st[k_int])
        e_base = st.reg("e_base", st[r_exp] + st[m_exp] + 23, signed(12))
        ma_x = st.reg("ma_x", xop, signed(xw))
        ma_k = st.reg("ma_k", kop[:24], unsigned(24))
        self.k_hi = Staged(Value.cast(p.at(k_int, M - 1))[24:32], M - 1)
        self.x_int = x_int
        self.mb_stage = M
        pa = mul_pieces(m, f"{p.prefix}ma", ma_x.sig, ma_k.sig)
        pa_sum = p.reg("pa", M + 3, sum_pieces(pa), signed(xw + 25))
        pb_main = self._mb_product(M + 3, ~flt)     # the float schemes use it for the slope
        st = p.stage(M + 4)
        # |X x K[24:32]| < 2^(xw + 7): its low xw + 8 bits hold it
        hi = Value.cast(st[pb_main])[:xw + 8].as_signed()
        prod = st.reg("prod", st[pa_sum] + (hi << 24), signed(xw + 31))
        # the first shift's amount but for the float schemes' product-top bit: a register
        # beside the product (not a delay line's SRL in front of the shifter)
        s1_r = st.reg("s1_r", Mux(flt, 23, st[s1_int]), unsigned(7))
        flt_r = st.reg("flt_r", flt)

        # -- M+5 .. M+7: first rounding shift ------------------------------------------------
        st = p.stage(M + 5)
        pv = Value.cast(st[prod])
        p47 = pv[47]
        # float: 23 + p47 (the extra bit goes to the second shifter stage)
        s1_plus = Staged(st[flt_r] & p47, M + 4)
        mode1 = Staged(Mux(st[flt_r], Rounding.HALF_EVEN, st[mode1_int]), M + 4)
        e_y = st.reg("e_y", st[e_base] + p47, signed(12))     # float: y = y1 * 2^e_y
        pneg = st.reg("pneg", pv[-1])
        y1, ovf1 = shift_round_stages(p, M + 5, "ru1", prod, s1_r, mode1, max_right=78,
                                      plus1=s1_plus)
        st = p.stage(M + 6)
        ney = st.reg("ney", -st[e_y], signed(13))
        st = p.stage(M + 7)
        eyv = Value.cast(st[e_y])
        s2 = st.reg("s2", Mux(flt, right_amount(st[ney], 40), st[s2_int]), unsigned(6))
        left = st.reg("left", right_amount(eyv, 15), unsigned(4))

        # -- R2 .. R2+2: second rounding shift (tflite RoundingDivideByPOT; float to integer) --
        R2 = y1.stage + 1
        st = p.stage(R2)
        sat_f, big_f = float_int_flags(st[left], Value.cast(st[y1])[:25], 24)
        sat_f = st.reg("sat_f", flt & sat_f)
        big_f = st.reg("big_f", c.torch & big_f)
        y1n = Staged(Value.cast(st[y1])[:34].as_signed(), R2 - 1)
        mode2 = Mux(flt, Rounding.HALF_EVEN, Rounding.HALF_AWAY)
        y2, ovf2 = shift_round_stages(p, R2, "ru2", y1n, s2, mode2, max_right=40)

        # -- sign, overflow rules, zero point, clamp (or wrap) ---------------------------------
        st = p.stage(y2.stage + 1)
        two = self.t("tfl_d", 0, 1, st.n) | flt
        yv = st.reg("yv", Mux(two, st[y2], st[y1]), signed(_YW))
        nflag = st.reg("nflag", flt & st[r_neg])
        ovf = st.reg("ovf", Mux(flt, st[sat_f], Mux(two, st[ovf2], st[ovf1])))
        neg = st.reg("neg", Mux(flt, st[r_neg], st[pneg]))
        big = st.reg("big", st[big_f])
        st = p.stage(yv.stage + 1)
        yvv = Value.cast(st[yv])
        ys = st.reg("ys", Mux(st[nflag], -yvv, yvv), signed(_YW + 1))
        # the final select's flags, registered from the delay lines (no SRL output into
        # a wide mux)
        f_big = st.reg("f_big", st[big])
        f_wrap = st.reg("f_wrap", st[wrap] & ~st[big])
        f_sat = st.reg("f_sat", ~st[wrap] & ~st[big] & st[ovf])
        f_neg = st.reg("f_neg", st[neg])
        f_top = st.reg("f_top", Mux(st[wrap], st[wrap_top], 0), unsigned(6))

        st = p.stage(ys.stage + 1)
        yv = st[ys]
        # PyTorch converts with cvtps2dq: beyond int32 is INT32_MIN (then the low clamp);
        # wrap (fixed16) keeps the exact low bits; everything else saturates
        y_fin = Mux(st[f_big], -(2**31), saturate(yv, st[f_sat], st[f_neg], _YW))
        z = st.reg("z", y_fin + self.t("zp1", 0, 1, st.n), signed(_YW + 2))
        wrap_z = st.reg("wrap_z", st[f_wrap])

        st = p.stage(z.stage + 1)
        zv = Value.cast(st[z])
        # wrap: sign-extend from bit wrap_bits - 1 (below qb)
        keep = st[wrap_keep]
        top = (zv[:qb] >> st[f_top])[0]
        wrapped = Mux(top, zv[:qb] | ~keep, zv[:qb] & keep).as_signed()
        zw = st.reg("zw", Mux(st[wrap_z], wrapped, zv), signed(_YW + 2))
        st = p.stage(zw.stage + 1)
        q1 = st.reg("q1", clamp(st[zw], self.t("lo1", 0, 1, st.n), self.t("hi1", 0, 1, st.n))
                    [:qb].as_signed(), signed(qb))
        return self._activation(q1, q1.stage + 1)

    def _activation(self, q1: Staged, s: int) -> Staged:
        m, p, cfg, c = self.m, self.p, self.cfg, self.c
        qb = cfg.signed_operand_bits
        act = c.act

        # -- s: code x constant (leaky_relu_fixed: (q - zp) * mult; PyTorch: s_in * q) -----
        zp_a = self.t("zp", 0, 2, s)             # the leaky_relu_fixed readers
        zp_b = self.t("zp", 1, 2, s)             # the PyTorch readers
        lo, hi = self.t("lo", 0, 1, s), self.t("hi", 0, 1, s)
        st = p.stage(s)
        qv = st[q1]
        dq = qv - zp_a
        a_op = Staged(Mux(c.act_torch, Mux(act.scalar, qv - self.t("zp1", 0, 1, s), qv), dq),
                      s - 1)
        k_op = Staged(Mux(c.act_torch, act.s_sig, act.mult), s - 1)
        vneg = st.reg("lk_vneg", dq < 0)
        vpos = st.reg("lk_v", dq, signed(qb + 2))
        cprod = stage_mul(p, s, "cm", a_op, k_op)
        s += 4                                                  # cprod valid in s - 1

        # -- leaky_relu_fixed: rounding shift, zero point, clamp ------------------------------
        ly, _ = shift_round_stages(p, s, "lk", cprod, act.shift, act.rounding, max_right=31)
        st = p.stage(ly.stage + 1)
        lsel = st.reg("lk_sel", Mux(st[vneg], st[ly], st[vpos]), signed(_YW))
        st = p.stage(lsel.stage + 1)
        lres = st.reg("lk_res", st[lsel] + zp_a, signed(_YW + 2))
        st = p.stage(lres.stage + 1)
        fq = st.reg("lk_q", clamp(st[lres], lo, hi)[:qb].as_signed(), signed(qb))

        out_stage = self.pp.LATENCY
        if not self.pp.leaky_torch:
            m.d.sync += [self.mb_x.eq(p.at(self.x_int, self.mb_stage - 1)),
                         self.mb_k.eq(p.at(self.k_hi, self.mb_stage - 1))]
            st = p.stage(out_stage)
            return st.reg("q", Mux(c.act_fixed, st[fq], st[q1]), signed(qb))

        # -- PyTorch: d = fma(s_in, q, c) = round24(s_sig*q + c_sig << c_shift) ---------------
        st = p.stage(s)
        n = st.reg("fma_n", Value.cast(st[cprod]) + c.c_al, signed(qb + 27))
        d_sig, d_exp, d_neg, d_zero = round24_stages(p, s + 1, "d", n)
        s = d_sig.stage + 1

        # -- d <= 0: f32(d * slope), on the multiplier's second half --------------------------
        flt_b = self.t("flt", 1, 3, self.mb_stage)   # the multiplier half's operand select
        st = p.stage(s)
        slope = Value.cast(act.slope_sig)
        slope_neg = slope < 0
        m.d.sync += [
            self.mb_x.eq(Mux(flt_b, Cat(st[d_sig], Const(0, 1)).as_signed(),
                             p.at(self.x_int, self.mb_stage - 1))),
            self.mb_k.eq(Mux(flt_b, Mux(slope_neg, -slope, slope)[:24],
                             p.at(self.k_hi, self.mb_stage - 1))),
        ]
        use_slope = st.reg("use_slope", st[d_neg] | st[d_zero])
        ps_prod = self._mb_product(s + 3)
        st = p.stage(s + 4)
        ps = Value.cast(st[ps_prod])[:48]
        ptop = ps[47]
        us = st[use_slope]
        dd_e0 = st.reg("dd_e0", st[d_exp] + Mux(us, act.slope_exp + 23 + ptop, 0), signed(12))
        s_sig, s_carry = round_top_stages(p, s + 4, "ps_r",
                                          Staged(Mux(ptop, ps, ps << 1)[:48], s + 3))
        st = p.stage(s + 5)
        us = st[use_slope]
        dd_sig = st.reg("dd_sig", Mux(us, s_sig, st[d_sig]), unsigned(24))
        dd_exp = st.reg("dd_exp", st[dd_e0] + (us & s_carry), signed(12))
        dd_neg = st.reg("dd_neg", st[d_neg] ^ (us & slope_neg))
        dd_zero = st.reg("dd_zero", st[d_zero] | (us & (slope == 0)))
        s += 6                                                  # dd valid in s - 1

        # -- y = f32(d * inv) ------------------------------------------------------------------
        st = p.stage(s)
        ix = Staged(Cat(st[dd_sig], Const(0, 1)).as_signed(), s - 1)
        pinv = stage_mul(p, s, "inv", ix, Staged(act.inv_sig, s - 1))
        e_pre = st.reg("e_pre", st[dd_exp] + act.exp + 23, signed(12))
        st = p.stage(s + 4)
        pv = Value.cast(st[pinv])[:48]
        ptop = pv[47]
        # the top 24 bits and the rounding decision (ties to even; the carry stays in bit 24)
        y_hi = st.reg("y_hi", Mux(ptop, pv[24:48], pv[23:47]), unsigned(24))
        y_rnd = Mux(ptop, pv[23] & (pv[:23].any() | pv[24]), pv[22] & (pv[:22].any() | pv[23]))
        y_inc = st.reg("y_inc", y_rnd)
        e_y = st.reg("e_y", st[e_pre] + ptop, signed(12))
        st = p.stage(s + 5)
        y_sig = st.reg("y_sig", st[y_hi] + st[y_inc], unsigned(25))
        y_neg = st.reg("y_neg", st[dd_neg])
        y_zero = st.reg("y_zero", st[dd_zero])
        s += 6                                                  # y valid in s - 1

        # -- s, s+1: shift amounts; the signed y -------------------------------------------
        st = p.stage(s - 1)
        ey = Value.cast(st[e_y])
        ney = st.reg("v_ney", -ey, signed(13))
        st = p.stage(s)
        ey = Value.cast(st[e_y])
        v_sh = st.reg("v_sh", right_amount(st[ney], 31))
        v_left = st.reg("v_left", Mux(ey > 0, 1, 0))
        ysv = Value.cast(st[y_sig])
        y_s = st.reg("v_ys", Mux(st[y_neg], -ysv, ysv), signed(26))
        prep = scalar_prep_stage(p, s, "sc", e_y, y_zero, qb) if self.pp.scalar_tail else None
        s += 2

        # -- vector path: zp_out + rne(y), saturating -------------------------------------------
        st = p.stage(s)
        sat_v = st.reg("v_sat", st[v_left] & (Value.cast(st[y_sig]) != 0))
        rv, rovf = shift_round_stages(p, s, "rv", y_s, v_sh, Rounding.HALF_EVEN, max_right=31)
        st = p.stage(rv.stage + 1)
        zv = st.reg("v_z", saturate(st[rv], st[rovf] | st[sat_v], st[y_neg], _YW) + zp_b,
                    signed(_YW + 2))
        st = p.stage(zv.stage + 1)
        qvec = st.reg("v_q", clamp(st[zv], lo, hi)[:qb].as_signed(), signed(qb))

        # -- scalar path: rne(f32(y + zp_out)) -------------------------------------------------
        st = p.stage(out_stage)
        qt = st[qvec]
        if self.pp.scalar_tail:
            rs, sat_s = scalar_quantize_stages(p, s, "sc", y_sig, prep, y_neg, zp_b, qb)
            st = p.stage(rs.stage + 1)
            qsc = st.reg("sc_q", Mux(st[sat_s], Mux(st[y_neg], lo, hi),
                                     clamp(st[rs], lo, hi))[:qb].as_signed(), signed(qb))
            assert qsc.stage == out_stage - 1, (qsc.stage, out_stage)
            st = p.stage(out_stage)
            qt = Mux(act.scalar, st[qsc], st[qvec])

        # -- the output ----------------------------------------------------------------------
        q = Mux(c.act_torch, qt, Mux(c.act_fixed, st[fq], st[q1]))
        return st.reg("q", q[:qb].as_signed(), signed(qb))
