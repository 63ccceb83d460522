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

Datapath of a lane (register stages; a result leaves ``PostProc.LATENCY`` = 50 cycles after its
input was accepted)::

    1-2    bias: int32 add (tflite, qnnpack, onnxruntime), aligned add (pow2, fixed16)
    3-5    int32 -> float32: normalize (log-step shifts), round to 24 bits
    6-11   float add of the fbgemm bias: order, align with sticky bit, add, normalize, round
    12-16  the multiplier X x K (X 33 bits, K 32 bits): operand registers, two product
           registers, X x K[0:24] + (X x K[24:32] << 24)
    17-20  two rounding shifts (all eight rounding modes; float: round to 24 bits, then to an
           integer; tflite: doubling high multiply, then RoundingDivideByPOT)
    21-24  sign, int32 overflow rule, saturation, zero point, wrap to ``bits``, clamp
    25-28  code x constant: (q - zp) x mult (leaky_relu_fixed) or s_in x q (PyTorch FMA)
    29-32  leaky_relu_fixed: rounding shift, zero point, clamp
    29-43  PyTorch leaky_relu: FMA sum and rounding, slope multiply (d <= 0), x f32(1/s_out)
    44-48  ... vector path: shift amounts, zp_out + rne(y), saturate, clamp
    45-49  ... scalar path: rne(f32(y + zp_out)), clamp
    50     output select

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
                       dropped: bool = False):
    """``shift_round(v, sh, mode)`` of ``zynqnn.numerics.rounding`` in stages s and s+1.

    ``v``: signed value; ``sh``: the right shift, unsigned, at most ``max_right`` (shifts past
    the top of ``v`` are fine); ``mode``: a :class:`Rounding` value; all read in stage ``s - 1``.
    ``rnd_in``/``sticky_in``: the first and the other bits already dropped below ``v`` (a
    rounding split over two shifts). ``positions``: the only shifts ``sh`` takes (a few
    constants: muxes instead of a shifter). Returns staged ``(y, ovf)`` of stage ``s + 1``: the
    low ``yw`` bits of the result and whether it does not fit ``yw`` signed bits; with
    ``dropped``, also the dropped bits ``(rnd, sticky)`` of stage ``s``.
    """
    st = p.stage(s)
    vv = Value.cast(st[v])
    if not vv.shape().signed:
        vv = Cat(vv, Const(0, 1)).as_signed()
    shv = Value.cast(st[sh])
    w = len(vv)
    r_in = Const(0, 1) if rnd_in is None else st[rnd_in]
    s_in = Const(0, 1) if sticky_in is None else st[sticky_in]
    if positions is not None:
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
    else:
        assert not shv.shape().signed, "the shift amount must be unsigned"
        sr = shv[:_ubits(max_right)]
        v2 = Cat(r_in, vv).as_signed()        # one bit more: t[0] is the rounding bit
        t = v2 >> sr
        fl = st.reg(f"{name}_fl", t[1:], signed(w))
        rnd = st.reg(f"{name}_rnd", t[0])
        sticky = st.reg(f"{name}_sticky", (v2.as_unsigned() & low_mask(sr, w + 1)).any() | s_in)
    neg = st.reg(f"{name}_neg", vv[-1])
    md = st.reg(f"{name}_mode", st[mode], unsigned(3))
    st = p.stage(s + 1)
    flv = Value.cast(st[fl])
    inc = round_inc(st[md], st[neg], flv[0], st[rnd], st[sticky])
    low = flv[:yw].as_signed() if w > yw else flv
    y = Signal(signed(yw + 1), name=f"{p.prefix}{name}_inc")
    p.m.d.comb += y.eq(low + inc)
    ovf = overflows(flv, yw) | (y[yw] != y[yw - 1])
    out = (st.reg(f"{name}_y", y[:yw].as_signed(), signed(yw)), st.reg(f"{name}_ovf", ovf))
    return out + (rnd, sticky) if dropped else out


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
    """Stage ``s`` of :func:`scalar_quantize_stages`: the alignment of ``y`` (from ``e_y`` read in
    stage ``s - 1``). Returns the staged ``(lsh, rsh, sat)``."""
    st = p.stage(s)
    ey = Value.cast(st[e_y])
    shv = ey + _SCALAR_FRAC
    lmax = qb + 4
    return (st.reg(f"{name}_lsh", right_amount(shv, lmax)),
            st.reg(f"{name}_rsh", right_amount(-shv, 31)),
            st.reg(f"{name}_sat", ~st[y_zero] & (ey + 23 >= qb + 2)))


def scalar_quantize_stages(p: Pipe, s: int, name: str, y, prep, y_neg, zp, qb: int):
    """``rne(f32(y + zp))`` (PyTorch's scalar ``quantize_val``) in stages s .. s+4.

    ``y = (-1)^y_neg * y * 2^e_y`` (``y`` 25 bits, at most 2^24; read in stage ``s - 1``),
    ``prep`` from :func:`scalar_prep_stage` (stage ``s - 1``), ``zp`` an integer. The exact
    ``t = y + zp`` is formed with ``_SCALAR_FRAC`` fraction bits and a sticky bit. Its float32
    rounding moves it by at most half a unit of its 24th bit, so ``rne(f32(t))`` is ``rne(t)``
    except when ``f32(t)`` is exactly a half-integer: then ``|frac(t) - 1/2|`` is within half a
    unit of ``t``'s 24th bit, and the tie goes to the even integer. Returns staged ``(r, sat)``
    of stage ``s + 4``: ``r`` the integer; when ``sat`` (``|y| >= 2^(qb+2)``) the sign of ``y``
    decides the clamp instead.
    """
    fr = _SCALAR_FRAC
    lsh, rsh, sat = prep
    st = p.stage(s)
    ys = Value.cast(st[y])
    lv, rv = st[lsh], st[rsh]
    lmax = qb + 4
    sticky = (ys & low_mask(rv, len(ys))).any()
    yfix = st.reg(f"{name}_yfix", Mux(rv != 0, (ys >> rv) | sticky, ys << lv),
                  unsigned(len(ys) + lmax))
    st = p.stage(s + 1)
    yf = Value.cast(st[yfix])
    zpf = Value.cast(st[zp]) << fr
    tw = len(yf) + 2
    t = st.reg(f"{name}_t", Mux(st[y_neg], zpf - yf, zpf + yf), signed(tw))
    st = p.stage(s + 2)
    tv = Value.cast(st[t])
    k = st.reg(f"{name}_k", tv >> fr, signed(tw - fr))
    frac = tv[:fr]
    half = 1 << (fr - 1)
    gt = st.reg(f"{name}_gt", frac > half)
    d2 = st.reg(f"{name}_d2", Mux(frac >= half, frac - half, half - frac) << 1, unsigned(fr + 1))
    mag = st.reg(f"{name}_mag", Mux(tv < 0, -tv, tv)[:tw], unsigned(tw))
    st = p.stage(s + 3)
    dv = Value.cast(st[d2])
    mv = Value.cast(st[mag])
    smear = dv
    for k_ in (1, 2, 4, 8, 16):
        smear = smear | (smear >> k_)
    pow2 = (dv & (dv - 1)[:len(dv)]) == 0
    # 2d <= 2^(bits(t) - 24): f32(t) is the half-integer
    tie = st.reg(f"{name}_tie", ((mv >> 23) > smear) | (pow2 & ((mv >> 22) > smear)))
    st = p.stage(s + 4)
    kv = Value.cast(st[k])
    inc = Mux(st[tie], kv[0], st[gt])
    return st.reg(f"{name}_r", kv + inc, signed(tw - fr + 1)), sat


def low_mask(n, width: int) -> Value:
    """``width`` bits, the ``n`` lowest set (all set when ``n >= width``)."""
    return ~(Const((1 << width) - 1, width) << n)[:width]


def normalize_stages(p: Pipe, s: int, name: str, mag):
    """Shift an unsigned ``mag`` up until its MSB is set, in stages s and s+1 (log steps: by
    32, 16, 8 in the first, 4, 2, 1 in the second, each when the top bits are zero).

    Returns staged ``(norm, lz)`` of stage ``s + 1``; ``lz`` is the count of leading zeros
    (unspecified for zero).
    """
    st = p.stage(s)
    x = Value.cast(st[mag])
    w = len(x)
    steps = [k for k in (32, 16, 8, 4, 2, 1) if k < w]
    first = [k for k in steps if k >= 8]
    second = [k for k in steps if k < 8]

    def shift_steps(x, ks):
        bits = []
        for k in ks:
            z = x[w - k:] == 0
            x = Mux(z, Cat(Const(0, k), x[:w - k]), x)
            bits.append((z, k))
        return x, bits

    x1, b1 = shift_steps(x, first)
    lz_bits = 6
    c1 = sum((Mux(z, k, 0) for z, k in b1), Const(0, lz_bits))
    n1 = st.reg(f"{name}_n1", x1, unsigned(w))
    l1 = st.reg(f"{name}_l1", c1, unsigned(lz_bits))
    st = p.stage(s + 1)
    x2, b2 = shift_steps(Value.cast(st[n1]), second)
    c2 = st[l1] + sum((Mux(z, k, 0) for z, k in b2), Const(0, 3))
    return st.reg(f"{name}_norm", x2, unsigned(w)), st.reg(f"{name}_lz", c2[:lz_bits],
                                                            unsigned(lz_bits))


def round_top(norm, keep: int = 24):
    """Round a normalized value to its top ``keep`` bits, ties to even.

    Returns ``(sig, carry)``: ``sig`` renormalized (``2^(keep-1)`` on carry), ``carry`` set when
    the rounding carried into a new bit (the exponent grows by one).
    """
    norm = Value.cast(norm)
    w = len(norm)
    top = norm[w - keep:]
    rnd = norm[w - keep - 1]
    sticky = norm[:w - keep - 1].any() if w - keep - 1 > 0 else Const(0, 1)
    s = top + (rnd & (sticky | top[0]))
    carry = s[keep]
    return Mux(carry, 1 << (keep - 1), s[:keep]), carry


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
    Six stages (s .. s+5): order by magnitude, align with sticky bit, add, normalize (two),
    round. Returns staged ``(sig, exp, neg, zero)`` of stage ``s + 5``
    (``2^23 <= sig < 2^24`` unless zero; the value is ``sig * 2^(exp - exp_offset)``).
    """
    g = _GUARD
    w = width
    st = p.stage(s)
    am, ae, an = (Value.cast(st[x]) for x in a)
    bm, be, bn = (Value.cast(st[x]) for x in b)
    az, bz = am == 0, bm == 0
    # the larger magnitude first, so that the sum of magnitudes never goes negative
    a_big = ~az & (bz | (ae > be) | ((ae == be) & (am >= bm)))
    dmax = w + g
    dab, dba = ae - be, be - ae            # both in parallel, then choose
    d_ab = Mux(dab > dmax, dmax, dab)
    d_ba = Mux(dba > dmax, dmax, dba)
    dd = st.reg(f"{name}_d", Mux(az | bz, dmax, Mux(a_big, d_ab, d_ba))[:_ubits(dmax)])
    big_m = st.reg(f"{name}_big", Mux(a_big, am, bm), unsigned(w))
    big_e = st.reg(f"{name}_big_e", Mux(a_big, ae, be), signed(12))
    big_n = st.reg(f"{name}_big_n", Mux(a_big, an, bn))
    sml_m = st.reg(f"{name}_sml", Mux(a_big, bm, am), unsigned(w))
    sub = st.reg(f"{name}_sub", an ^ bn)

    st = p.stage(s + 1)
    sm = Cat(Const(0, g), st[sml_m])
    dv = st[dd]
    sticky = (sm & low_mask(dv, w + g)).any()
    big_al = st.reg(f"{name}_big_al", Cat(Const(0, g), st[big_m]), unsigned(w + g))
    sml_al = st.reg(f"{name}_sml_al", (sm >> dv) | sticky, unsigned(w + g))

    st = p.stage(s + 2)
    x, y = st[big_al], st[sml_al]
    mag = st.reg(f"{name}_sum", Mux(st[sub], x - y, x + y)[:w + g + 1], unsigned(w + g + 1))

    norm, lz = normalize_stages(p, s + 3, f"{name}_n", mag)

    st = p.stage(s + 5)
    sig, carry = round_top(st[norm])
    return (st.reg(f"{name}_r_sig", sig, unsigned(24)),
            st.reg(f"{name}_r_exp", st[big_e] + (w + 1 - 24 + exp_offset) - st[lz] + carry,
                   signed(12)),
            st.reg(f"{name}_r_neg", st[big_n]),
            st.reg(f"{name}_r_zero", st[mag] == 0))


def round24_stages(p: Pipe, s: int, name: str, n):
    """An integer ``n`` rounded to 24 significant bits, ties to even; stages s .. s+3.

    Returns staged ``(sig, exp, neg, zero)`` of stage ``s + 3`` with
    ``n ~ (-1)^neg * sig * 2^exp`` (``2^23 <= sig < 2^24`` unless zero).
    """
    st = p.stage(s)
    nv = Value.cast(st[n])
    w = len(nv)
    mag = st.reg(f"{name}_mag", Mux(nv < 0, -nv, nv)[:w], unsigned(w))
    neg = st.reg(f"{name}_neg", nv < 0)
    norm, lz = normalize_stages(p, s + 1, name, mag)
    st = p.stage(s + 3)
    nm = Value.cast(st[norm])
    if w < 26:
        nm = Cat(Const(0, 26 - w), nm)
    sig, carry = round_top(nm)
    return (st.reg(f"{name}_sig", sig, unsigned(24)),
            st.reg(f"{name}_exp", (len(nm) - 24) - (len(nm) - w) - st[lz] + carry, signed(9)),
            st.reg(f"{name}_sign", st[neg]),
            st.reg(f"{name}_zero", st[mag] == 0))


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
    LATENCY = 50

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
            q = _Lane(m, Pipe(m, f"l{n}_"), cfg, self, ctl).build(
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
        q = signed(pp.cfg.signed_operand_bits)

        def r(name, expr, shape=1):
            s = Signal(shape, name=f"ctl_{name}")
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
        self.act = Signal(act_params_layout(pp.cfg), name="ctl_act")
        m.d.sync += self.act.eq(act)
        self.scheme = sch     # the raw port, for stage 1 only


class _Lane:
    """One lane's datapath (see the module docstring for the stages)."""

    def __init__(self, m: Module, p: Pipe, cfg: HwConfig, pp: PostProc, c: _Control):
        self.m, self.p, self.cfg, self.pp, self.c = m, p, cfg, pp, c
        self.xw = max(33, cfg.acc_bits + 1)
        # Operand registers of the multiplier's second half (X x K[24:31]): loaded from the
        # main path (stage 13) for tflite, from the leaky slope multiply for the float schemes.
        self.mb_x = Signal(signed(self.xw), name=f"{p.prefix}mb_x", reset_less=True)
        self.mb_k = Signal(unsigned(24), name=f"{p.prefix}mb_k", reset_less=True)
        self.mb_pieces = mul_pieces(m, f"{p.prefix}mb", self.mb_x, self.mb_k)

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

        # -- 1: int32 bias add, aligned bias (the ports decide: the control is not yet loaded)
        st = p.stage(1)
        sch = c.scheme
        w = pbuf_word_layout(st[word0])
        tfl = (sch == S.TFLITE) | (sch == S.TFLITE_SINGLE_ROUNDING)
        intb = (sch == S.TORCH_QNNPACK) | (sch == S.ONNXRUNTIME)
        fix = (sch == S.POW2) | (sch == S.FIXED16)
        bias32 = Mux(tfl, w.tflite.bias, Mux(intb, w.float.bias, 0))
        acc = Value.cast(st[acc0])
        x32 = st.reg("x32", (acc[:32].as_signed() + bias32)[:32].as_signed(), signed(32))
        fx = w.fixed
        bal = st.reg("bias_al", Mux(fix, (fx.bias << fx.bias_shift)[:aw].as_signed(), 0),
                     signed(aw))
        acc1 = st.reg("acc", acc, signed(aw))
        word1 = st.reg("word", st[word0], unsigned(PBUF_WORD_BITS))

        # -- 2: accumulator + aligned bias; tflite's left shift; |x| for int -> float --------
        st = p.stage(2)
        w = pbuf_word_layout(st[word1])
        v = st[acc1] + st[bal]
        x = st[x32]
        sh = w.tflite.shift
        xl = (x << Mux(sh > 0, sh[:5], 0))[:32].as_signed()
        x_int = st.reg("x_int", Mux(c.tfl_d, xl, Mux(c.tfl_s, x, v)), signed(xw))
        absx = st.reg("absx", Mux(x < 0, -x, x)[:32], unsigned(32))
        negx = st.reg("negx", x < 0)
        word2 = st.reg("word2", st[word1], unsigned(PBUF_WORD_BITS))

        # -- 3: the integer schemes' multiplier and shifts; 3-5: int32 -> float32 ----------
        st = p.stage(3)
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

        xnorm, xlz = normalize_stages(p, 3, "i2f", absx)
        st = p.stage(5)
        t_sig, t_carry = round_top(st[xnorm])
        t_mag = st.reg("t_mag", Cat(Const(0, 24), t_sig), unsigned(48))
        t_exp = st.reg("t_exp", 8 - 24 - st[xlz] + t_carry, signed(12))

        # -- 6-11: + fbgemm's float bias (zero for the other float schemes: then exact) ----
        r_sig, r_exp, r_neg, _ = float_add_stages(p, 6, "fadd", (t_mag, t_exp, negx),
                                                  (b_mag, b_exp, b_neg))

        # -- 12-16: X x K --------------------------------------------------------------------
        st = p.stage(12)
        xop = Mux(c.flt, Cat(st[r_sig], Const(0, 1)).as_signed(), st[x_int])
        kop = Mux(c.flt, st[m_sig], st[k_int])
        e_base = st.reg("e_base", st[r_exp] + st[m_exp] + 23, signed(12))
        ma_x = st.reg("ma_x", xop, signed(xw))
        ma_k = st.reg("ma_k", kop[:24], unsigned(24))
        self.k_hi = Staged(Value.cast(p.at(k_int, 11))[24:32], 11)
        self.x_int = x_int
        self.mb_stage = 12
        pa = mul_pieces(m, f"{p.prefix}ma", ma_x.sig, ma_k.sig)
        pa_sum = p.reg("pa", 15, sum_pieces(pa), signed(xw + 25))
        pb_main = self._mb_product(15, ~c.flt)     # the float schemes use it for the slope
        st = p.stage(16)
        # |X x K[24:32]| < 2^(xw + 7): its low xw + 8 bits hold it
        hi = Value.cast(st[pb_main])[:xw + 8].as_signed()
        prod = st.reg("prod", st[pa_sum] + (hi << 24), signed(xw + 31))

        # -- 17-18: first rounding shift -------------------------------------------------------
        st = p.stage(17)
        pv = Value.cast(st[prod])
        p47 = pv[47]
        s1 = Staged(Mux(c.flt, Mux(p47, 24, 23), st[s1_int]), 16)
        mode1 = Staged(Mux(c.flt, Rounding.HALF_EVEN, st[mode1_int]), 16)
        e_y = st.reg("e_y", st[e_base] + p47, signed(12))     # float: y = y1 * 2^e_y
        pneg = st.reg("pneg", pv[-1])
        y1, ovf1 = shift_round_stages(p, 17, "ru1", prod, s1, mode1, max_right=78)
        st = p.stage(18)
        eyv = Value.cast(st[e_y])
        s2 = st.reg("s2", Mux(c.flt, right_amount(-eyv, 40), st[s2_int]), unsigned(6))
        left = st.reg("left", right_amount(eyv, 15), unsigned(4))

        # -- 19-20: second rounding shift (tflite RoundingDivideByPOT; float to integer) -------
        st = p.stage(19)
        sat_f, big_f = float_int_flags(st[left], Value.cast(st[y1])[:25], 24)
        sat_f = st.reg("sat_f", c.flt & sat_f)
        big_f = st.reg("big_f", c.torch & big_f)
        y1n = Staged(Value.cast(st[y1])[:34].as_signed(), 18)
        mode2 = Mux(c.flt, Rounding.HALF_EVEN, Rounding.HALF_AWAY)
        y2, ovf2 = shift_round_stages(p, 19, "ru2", y1n, s2, mode2, max_right=40)

        # -- 21-23: sign, overflow rules, zero point, clamp (or wrap) -------------------------
        st = p.stage(21)
        two = c.tfl_d | c.flt
        yv = Mux(two, st[y2], st[y1])
        ys = st.reg("ys", Mux(c.flt & st[r_neg], -yv, yv), signed(_YW + 1))
        ovf = st.reg("ovf", Mux(c.flt, st[sat_f], Mux(two, st[ovf2], st[ovf1])))
        neg = st.reg("neg", Mux(c.flt, st[r_neg], st[pneg]))
        big = st.reg("big", st[big_f])

        st = p.stage(22)
        yv = st[ys]
        # PyTorch converts with cvtps2dq: beyond int32 is INT32_MIN (then the low clamp);
        # wrap (fixed16) keeps the exact low bits; everything else saturates
        y_fin = Mux(st[big], -(2**31), Mux(st[wrap], yv, saturate(yv, st[ovf], st[neg], _YW)))
        z = st.reg("z", y_fin + c.zp1, signed(_YW + 2))

        st = p.stage(23)
        zv = Value.cast(st[z])
        # wrap: sign-extend from bit wrap_bits - 1
        keep = st[wrap_keep]
        top = (zv >> st[wrap_top])[0]
        wrapped = Mux(top, zv[:qb] | ~keep, zv[:qb] & keep).as_signed()
        zw = st.reg("zw", Mux(st[wrap], wrapped, zv), signed(_YW + 2))
        st = p.stage(24)
        q1 = st.reg("q1", clamp(st[zw], c.lo1, c.hi1)[:qb].as_signed(), signed(qb))
        return self._activation(q1, 25)

    def _activation(self, q1: Staged, s: int) -> Staged:
        m, p, cfg, c = self.m, self.p, self.cfg, self.c
        qb = cfg.signed_operand_bits
        act = c.act

        # -- s: code x constant (leaky_relu_fixed: (q - zp) * mult; PyTorch: s_in * q) -----
        st = p.stage(s)
        qv = st[q1]
        dq = qv - c.zp
        a_op = Staged(Mux(c.act_torch, Mux(act.scalar, qv - c.zp1, qv), dq), s - 1)
        k_op = Staged(Mux(c.act_torch, act.s_sig, act.mult), s - 1)
        vneg = st.reg("lk_vneg", dq < 0)
        vpos = st.reg("lk_v", dq, signed(qb + 2))
        cprod = stage_mul(p, s, "cm", a_op, k_op)
        s += 4                                                  # cprod valid in s - 1

        # -- leaky_relu_fixed: rounding shift, zero point, clamp ------------------------------
        ly, _ = shift_round_stages(p, s, "lk", cprod, act.shift, act.rounding, max_right=31)
        st = p.stage(s + 2)
        lres = st.reg("lk_res", Mux(st[vneg], st[ly], st[vpos]) + c.zp, signed(_YW + 2))
        st = p.stage(s + 3)
        fq = st.reg("lk_q", clamp(st[lres], c.lo, c.hi)[:qb].as_signed(), signed(qb))

        out_stage = self.pp.LATENCY
        if not self.pp.leaky_torch:
            m.d.sync += [self.mb_x.eq(p.at(self.x_int, self.mb_stage - 1)),
                         self.mb_k.eq(p.at(self.k_hi, self.mb_stage - 1))]
            st = p.stage(out_stage)
            return st.reg("q", Mux(c.act_fixed, st[fq], st[q1]), signed(qb))

        # -- PyTorch: d = fma(s_in, q, c) = round24(s_sig*q + c_sig << c_shift) ---------------
        st = p.stage(s)
        n = st.reg("fma_n", Value.cast(st[cprod]) + (act.c_sig << act.c_shift), signed(qb + 27))
        d_sig, d_exp, d_neg, d_zero = round24_stages(p, s + 1, "d", n)
        s += 5                                                  # d valid in s - 1

        # -- d <= 0: f32(d * slope), on the multiplier's second half --------------------------
        st = p.stage(s)
        slope = Value.cast(act.slope_sig)
        slope_neg = slope < 0
        m.d.sync += [
            self.mb_x.eq(Mux(c.flt, Cat(st[d_sig], Const(0, 1)).as_signed(),
                             p.at(self.x_int, self.mb_stage - 1))),
            self.mb_k.eq(Mux(c.flt, Mux(slope_neg, -slope, slope)[:24],
                             p.at(self.k_hi, self.mb_stage - 1))),
        ]
        use_slope = st.reg("use_slope", st[d_neg] | st[d_zero])
        ps_prod = self._mb_product(s + 3)
        st = p.stage(s + 4)
        ps = Value.cast(st[ps_prod])[:48]
        ptop = ps[47]
        s_sig, s_carry = round_top(Mux(ptop, ps, ps << 1)[:48])
        us = st[use_slope]
        dd_sig = st.reg("dd_sig", Mux(us, s_sig, st[d_sig]), unsigned(24))
        dd_exp = st.reg("dd_exp", st[d_exp] + Mux(us, act.slope_exp + 23 + ptop + s_carry, 0),
                        signed(12))
        dd_neg = st.reg("dd_neg", st[d_neg] ^ (us & slope_neg))
        dd_zero = st.reg("dd_zero", st[d_zero] | (us & (slope == 0)))
        s += 5                                                  # dd valid in s - 1

        # -- y = f32(d * inv) ------------------------------------------------------------------
        st = p.stage(s)
        ix = Staged(Cat(st[dd_sig], Const(0, 1)).as_signed(), s - 1)
        pinv = stage_mul(p, s, "inv", ix, Staged(act.inv_sig, s - 1))
        e_pre = st.reg("e_pre", st[dd_exp] + act.exp + 23, signed(12))
        st = p.stage(s + 4)
        pv = Value.cast(st[pinv])[:48]
        ptop = pv[47]
        nrm = Mux(ptop, pv, pv << 1)[:48]
        y_sig = st.reg("y_sig", nrm[24:] + (nrm[23] & (nrm[:23].any() | nrm[24])), unsigned(25))
        e_y = st.reg("e_y", st[e_pre] + ptop, signed(12))
        y_neg = st.reg("y_neg", st[dd_neg])
        y_zero = st.reg("y_zero", st[dd_zero])
        s += 5                                                  # y valid in s - 1

        # -- s: shift amounts ------------------------------------------------------------------
        st = p.stage(s)
        ey = Value.cast(st[e_y])
        v_sh = st.reg("v_sh", right_amount(-ey, 31))
        v_left = st.reg("v_left", Mux(ey > 0, 1, 0))
        prep = scalar_prep_stage(p, s, "sc", e_y, y_zero, qb) if self.pp.scalar_tail else None
        s += 1

        # -- vector path: zp_out + rne(y), saturating -------------------------------------------
        st = p.stage(s)
        ysv = Value.cast(st[y_sig])
        y_s = Staged(Mux(st[y_neg], -ysv, ysv), s - 1)
        sat_v = st.reg("v_sat", st[v_left] & (ysv != 0))
        rv, rovf = shift_round_stages(p, s, "rv", y_s, v_sh, Rounding.HALF_EVEN, max_right=31)
        st = p.stage(s + 2)
        zv = st.reg("v_z", saturate(st[rv], st[rovf] | st[sat_v], st[y_neg], _YW) + c.zp,
                    signed(_YW + 2))
        st = p.stage(s + 3)
        qvec = st.reg("v_q", clamp(st[zv], c.lo, c.hi)[:qb].as_signed(), signed(qb))

        # -- scalar path: rne(f32(y + zp_out)) -------------------------------------------------
        st = p.stage(out_stage)
        qt = st[qvec]
        if self.pp.scalar_tail:
            rs, sat_s = scalar_quantize_stages(p, s, "sc", y_sig, prep, y_neg, c.zp, qb)
            assert rs.stage == out_stage - 1
            qsc = Mux(st[sat_s], Mux(st[y_neg], c.lo, c.hi), clamp(st[rs], c.lo, c.hi))
            qt = Mux(act.scalar, qsc, qt)

        # -- the output ----------------------------------------------------------------------
        q = Mux(c.act_torch, qt, Mux(c.act_fixed, st[fq], st[q1]))
        return st.reg("q", q[:qb].as_signed(), signed(qb))
