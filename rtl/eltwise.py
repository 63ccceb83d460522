"""Element-wise addition of two quantized code streams, in each framework's add semantics.

:class:`EltwiseAdd` computes, ``lanes`` codes per cycle, bit for bit what ``zynqnn.numerics.ops``
computes:

* ``TORCH``: ``ops.add_torch`` (``quantized::add[_relu]`` on fbgemm/x86): each input dequantized
  with a float32 FMA ``fma(s, q, f32(-zp*s))`` (vector path) or ``f32(s * (q - zp))`` (scalar
  tail), a float32 add, the product with ``f32(1/s_out)``, and ``zp + rne(.)`` (vector) or
  ``rne(f32(. + zp))`` (scalar);
* ``QNNPACK``: ``ops.add_qnnpack``: 22-bit fixed-point multipliers, one rounding shift (ties away);
* ``ONNXRUNTIME``: ``ops.add_onnxruntime`` (MLAS QLinearAdd): ``fma(a, r_a, fma(b, r_b, fixed))``,
  ``rne``, saturate;
* ``TFLITE``: ``ops.add_tflite``: inputs shifted left by ``left_shift`` (20; 15 for int16),
  rescaled by their own quantized multipliers, summed, rescaled to the output (default double
  rounding or ``TFLITE_SINGLE_ROUNDING``).

A fused ReLU is the clamp ``clamp_min = max(qmin, zp_out)``: in every semantics it gives the same
codes as the framework's ReLU (PyTorch applies it to the float sum, which rounds to ``zp_out``).

Per-layer inputs: ``zynqnn.hw.add.add_params_layout`` (built by ``add_layer``), ``zp_out``,
``clamp_min``, ``clamp_max``. Per lane: two code x constant multipliers and one 33 x 24 multiplier
(4 DSP48E1); TFLite's 31-bit multipliers take their top 7 bits in small LUT multipliers. Every
stage is registered and the pipeline never stalls (``CreditBuffer``).

Stages of a lane (``EltwiseAdd.LATENCY`` = 36)::

    1-5    q x K for both inputs (DSP, two registers after the product; K's top bits in LUTs)
    6-9    qnnpack: 32-bit sum, rounding shift, zero point and clamp
    6-10   TFLite inputs: rounding at bit 11 (16), then RoundingDivideByPOT; int32 sum
    6-10   float inputs: FMA constant (PyTorch vector path), normalize, round to 24 bits
           (PyTorch) or keep the exact product (ONNX Runtime)
    11-22  two float additions (PyTorch: d_a + d_b, then exact; ONNX Runtime: the FMA chain)
    23-27  X x K: PyTorch's f32(1/s_out), ONNX Runtime's 1.0, TFLite's output multiplier
    28-33  rounding to 24 bits / at bit 31, round to integer / RoundingDivideByPOT, sign,
           saturation, zero point, clamp
    29-35  PyTorch scalar path: rne(f32(y + zp_out)), clamp
    36     output select
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.add import AddSemantics, add_params_layout
from zynqnn.hw.config import HwConfig

from .common import CreditBuffer
from .postproc import (
    _YW,
    Pipe,
    Rounding,
    Staged,
    clamp,
    float_add_stages,
    mul_pieces,
    normalize_stages,
    right_amount,
    round_top,
    saturate,
    scalar_prep_stage,
    scalar_quantize_stages,
    shift_round_stages,
    stage_mul,
    sum_pieces,
)

__all__ = ["eltwise_in_layout", "eltwise_out_layout", "EltwiseAdd"]


def eltwise_in_layout(cfg: HwConfig, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.signed_operand_bits), lanes)


def eltwise_out_layout(cfg: HwConfig, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.signed_operand_bits), lanes)


# ------------------------------------------------------------------------------------------------
# hardware


def _lut_mul_stages(p: Pipe, s: int, name: str, x, k):
    """``x * k`` for a small unsigned ``k`` (up to 8 bits) in LUTs: shifted copies of ``x``
    summed in two stages (s, s+1). ``x``, ``k`` read in stage ``s - 1``."""
    st = p.stage(s)
    xv, kv = Value.cast(st[x]), Value.cast(st[k])
    w = len(xv) + len(kv)
    terms = [Mux(kv[j], xv.as_signed() << j, 0) for j in range(len(kv))]
    half = (len(terms) + 1) // 2
    lo = st.reg(f"{name}_lo", sum(terms[:half]), signed(w))
    hi = st.reg(f"{name}_hi", sum(terms[half:]) if terms[half:] else 0, signed(w))
    st = p.stage(s + 1)
    return st.reg(f"{name}_sum", st[lo] + st[hi], signed(w + 1))


class EltwiseAdd(wiring.Component):
    """``lanes`` parallel quantized adds ``o = a + b`` in one framework's semantics.

    Members
    -------
    a, b: In(stream)
        ``lanes`` input codes each (``signed_operand_bits``); a transfer takes one word of each,
        when both are valid.
    o: Out(stream)
        ``lanes`` output codes.
    params: In(add_params_layout)
        Semantics and constants (:func:`add_layer`).
    zp_out, clamp_min, clamp_max: In
        Output zero point and clamp (ReLU: ``clamp_min = max(qmin, zp_out)``).

    Per-layer inputs must be stable from a layer's first accepted input until its last result has
    left (``LATENCY`` cycles later).

    ``scalar_tail=False`` leaves out the PyTorch scalar-tail quantizer (``path="scalar"`` layers
    then get the vector formula); ``LATENCY`` does not change.
    """

    LATENCY = 36

    def __init__(self, cfg: HwConfig, lanes: int | None = None, *, scalar_tail: bool = True):
        self._cfg = cfg
        self._lanes = cfg.requant_lanes if lanes is None else lanes
        if not isinstance(self._lanes, int) or self._lanes < 1:
            raise ValueError(f"EltwiseAdd: lanes must be an int >= 1, not {self._lanes!r}")
        self.scalar_tail = bool(scalar_tail)
        q = signed(cfg.signed_operand_bits)
        lay = eltwise_in_layout(cfg, self._lanes)
        super().__init__({
            "a": In(stream.Signature(lay)),
            "b": In(stream.Signature(lay)),
            "o": Out(stream.Signature(eltwise_out_layout(cfg, self._lanes))),
            "params": In(add_params_layout(cfg)),
            "zp_out": In(q),
            "clamp_min": In(q),
            "clamp_max": In(q),
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
        m.submodules.out_buffer = obuf = CreditBuffer(eltwise_out_layout(cfg, lanes),
                                                      self.LATENCY + 4)
        accept = Signal()
        # A join: each input is ready when the other is valid and a result slot is free.
        m.d.comb += [
            self.a.ready.eq(obuf.can_accept & self.b.valid),
            self.b.ready.eq(obuf.can_accept & self.a.valid),
            accept.eq(self.a.valid & self.b.valid & obuf.can_accept),
            obuf.accept.eq(accept),
        ]
        c = _AddControl(m, self)
        out = Signal(eltwise_out_layout(cfg, lanes))
        for n in range(lanes):
            q = _add_lane(Pipe(m, f"l{n}_"), cfg, c, self.a.payload[n], self.b.payload[n],
                          self.scalar_tail)
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


class _AddControl:
    """Per-layer inputs decoded and registered once (read from stage 1 on)."""

    def __init__(self, m: Module, ea: EltwiseAdd):
        q = signed(ea.cfg.signed_operand_bits)
        prm = ea.params

        def r(name, expr, shape=1):
            s = Signal(shape, name=f"ctl_{name}")
            m.d.sync += s.eq(expr)
            return s

        sem = prm.semantics
        self.torch = r("torch", sem == AddSemantics.TORCH)
        self.qnn = r("qnn", sem == AddSemantics.QNNPACK)
        self.ort = r("ort", sem == AddSemantics.ONNXRUNTIME)
        self.tfl = r("tfl", sem == AddSemantics.TFLITE)
        self.flt = r("flt", (sem == AddSemantics.TORCH) | (sem == AddSemantics.ONNXRUNTIME))
        self.scalar = r("scalar", (sem == AddSemantics.TORCH) & prm.scalar)
        self.zp = r("zp", ea.zp_out, q)
        self.zp_add = r("zp_add", Mux(sem == AddSemantics.ONNXRUNTIME, 0, ea.zp_out), q)
        self.lo = r("lo", ea.clamp_min, q)
        self.hi = r("hi", ea.clamp_max, q)
        self.prm = Signal(add_params_layout(ea.cfg), name="ctl_params")
        m.d.sync += self.prm.eq(prm)
        tk = prm.c.tflite      # TFLite's right shifts (its multipliers are below one)
        self.sha = r("sha", -tk.sha, 5)
        self.shb = r("shb", -tk.shb, 5)
        self.sho = r("sho", -tk.sho, 5)
        self.raw = prm          # the ports, for stage 1 only


def _add_lane(p: Pipe, cfg: HwConfig, c: _AddControl, a_in, b_in, scalar_tail) -> Staged:
    m = p.m
    qb = cfg.signed_operand_bits
    fw = qb + 24            # float operands: exact q x r products, normalized to fw bits
    raw = c.raw
    sem = raw.semantics
    k = c.prm.c
    a0, b0 = Staged(Value.cast(a_in), 0), Staged(Value.cast(b_in), 0)

    # -- 1-5: q x K for both inputs ---------------------------------------------------------------
    rc = raw.c

    def operand(q, zp, sig_torch, m_qnn, r_ort, m_tfl):
        sub = ((sem == AddSemantics.TORCH) & raw.scalar) | (sem == AddSemantics.TFLITE)
        qop = Mux(sub, q - zp, q)
        kop = mux4(sem, sig_torch, m_qnn, r_ort, Value.cast(m_tfl)[:24])
        khi = Mux(sem == AddSemantics.TFLITE, Value.cast(m_tfl)[24:31], 0)
        return Staged(qop, 0), Staged(kop, 0), Staged(khi, 0)

    qa_op, ka, ka_hi = operand(a0.sig, raw.zp_a, rc.torch.sa_sig, rc.qnnpack.ma,
                               rc.onnxruntime.ra_sig, rc.tflite.ma)
    qb_op, kb, kb_hi = operand(b0.sig, raw.zp_b, rc.torch.sb_sig, rc.qnnpack.mb,
                               rc.onnxruntime.rb_sig, rc.tflite.mb)
    pa_lo = stage_mul(p, 1, "ma", qa_op, ka)
    pb_lo = stage_mul(p, 1, "mb", qb_op, kb)
    st = p.stage(1)
    qa1 = st.reg("qa", st[qa_op], signed(qb + 2))
    qb1 = st.reg("qb", st[qb_op], signed(qb + 2))
    ka_hi1 = st.reg("ka_hi", st[ka_hi], unsigned(7))
    kb_hi1 = st.reg("kb_hi", st[kb_hi], unsigned(7))
    pa_hi = _lut_mul_stages(p, 2, "mah", qa1, ka_hi1)
    pb_hi = _lut_mul_stages(p, 2, "mbh", qb1, kb_hi1)
    st = p.stage(5)
    pw = qb + 2 + 32
    pa = st.reg("pa", st[pa_lo] + (st[pa_hi] << 24), signed(pw))
    pb = st.reg("pb", st[pb_lo] + (st[pb_hi] << 24), signed(pw))

    # -- 6-9: qnnpack: 32-bit sum, shift (ties away from zero), zero point, clamp --------------
    st = p.stage(6)
    qacc = st.reg("q_acc", (k.qnnpack.zpp + st[pa] + st[pb])[:32].as_signed(), signed(32))
    q_r, _ = shift_round_stages(p, 7, "q_r", qacc, k.qnnpack.shift, Rounding.HALF_AWAY,
                                max_right=31)
    st = p.stage(9)
    q_qnn = st.reg("q_qnn", clamp(st[q_r] + c.zp, c.lo, c.hi)[:qb].as_signed(), signed(qb))

    # -- 6-10: TFLite inputs: MultiplyByQuantizedMultiplier((q - zp) << left_shift) ------------
    # The product (q - zp) * M is shifted by 31 - left_shift (11 or 16) first: the doubling high
    # multiply rounds there (half up); single rounding floors there and rounds once after.
    tk = k.tflite
    first = 31 - Value.cast(tk.left_shift)
    mode_a = Mux(tk.single, Rounding.FLOOR, Rounding.HALF_UP)

    def tfl_in(name, prod, right):
        y1, _, rnd, sticky = shift_round_stages(p, 6, f"{name}1", prod, first, mode_a,
                                                positions=(11, 16), dropped=True)
        keep = Staged(tk.single, 6)
        r_in = p.reg(f"{name}_rin", 7, p.at(rnd, 6) & p.at(keep, 6))
        s_in = p.reg(f"{name}_sin", 7, p.at(sticky, 6) & p.at(keep, 6))
        y2, _ = shift_round_stages(p, 8, f"{name}2", y1, right,
                                   Mux(tk.single, Rounding.HALF_UP, Rounding.HALF_AWAY),
                                   max_right=31, rnd_in=r_in, sticky_in=s_in)
        return y2

    xa = tfl_in("ta", pa, c.sha)
    xb = tfl_in("tb", pb, c.shb)
    st = p.stage(10)
    tsum = st.reg("t_sum", (st[xa] + st[xb])[:32].as_signed(), signed(32))

    # -- 6-10: float inputs: FMA constant, normalize, round (PyTorch) or keep (ONNX Runtime) -----
    tc, oc = k.torch, k.onnxruntime

    def float_in(name, prod, c_sig, c_shift, e_torch, e_ort):
        st = p.stage(6)
        n = st.reg(f"{name}_n", Value.cast(st[prod]) + Mux(
            c.torch & ~c.scalar, c_sig << c_shift, 0), signed(fw + 1))
        st = p.stage(7)
        nv = Value.cast(st[n])
        mag = st.reg(f"{name}_mag", Mux(nv < 0, -nv, nv)[:fw], unsigned(fw))
        neg = st.reg(f"{name}_neg", nv < 0)
        norm, lz = normalize_stages(p, 8, name, mag)
        st = p.stage(10)
        nm = Value.cast(st[norm])
        sig, carry = round_top(nm)
        mag_r = st.reg(f"{name}_mw", Mux(c.torch, Cat(Const(0, fw - 24), sig), nm), unsigned(fw))
        e_src = Mux(c.torch, e_torch, e_ort)
        e_r = st.reg(f"{name}_ew", e_src - st[lz] + Mux(c.torch, carry, 0), signed(12))
        return mag_r, e_r, st.reg(f"{name}_neg10", st[neg])

    fa = float_in("fa", pa, tc.ca_sig, tc.ca_shift, tc.ea, oc.ra_exp)
    fb = float_in("fb", pb, tc.cb_sig, tc.cb_shift, tc.eb, oc.rb_exp)
    fixed = (Cat(Const(0, fw - 24), oc.fixed_sig), Value.cast(oc.fixed_exp) - (fw - 24),
             oc.fixed_neg)

    # -- 11-16: PyTorch d_a + d_b; ONNX Runtime fma(b, r_b, fixed) ------------------------------
    st = p.stage(11)
    g1_a = tuple(Staged(Mux(c.torch, st[x], st[y]), 10) for x, y in zip(fa, fb, strict=True))
    g1_b = tuple(Staged(Mux(c.torch, st[x], y), 10) for x, y in zip(fb, fixed, strict=True))
    # (the sum's exponent comes out for a fw-bit significand: it feeds the second addition)
    c_sig, c_exp, c_neg, _ = float_add_stages(p, 11, "g1", g1_a, g1_b, fw, -(fw - 24))

    # -- 17-22: PyTorch: exact (+ 0); ONNX Runtime: fma(a, r_a, inner) ----------------------------
    st = p.stage(17)
    inner = (Cat(Const(0, fw - 24), st[c_sig]), st[c_exp], st[c_neg])
    fa16 = tuple(st[x] for x in fa)
    g2_a = tuple(Staged(Mux(c.torch, x, y), 16) for x, y in zip(inner, fa16, strict=True))
    g2_b = tuple(Staged(Mux(c.torch, 0, y), 16) for y in inner)
    y_sig, y_exp, y_neg, _ = float_add_stages(p, 17, "g2", g2_a, g2_b, fw)

    # -- 23-27: X x K: PyTorch's f32(1 / s_out), ONNX Runtime's 1.0, TFLite's output multiplier --
    st = p.stage(23)
    xop = Mux(c.flt, Cat(st[y_sig], Const(0, 1)).as_signed(), st[tsum])
    mo = Value.cast(tk.mo)
    inv_sig = Mux(c.torch, tc.inv_sig, 1 << 23)
    e_inv = Mux(c.torch, Value.cast(tc.e_inv), -23)
    wx = st.reg("w_x", xop, signed(33))
    wk = st.reg("w_k", Mux(c.flt, inv_sig, mo[:24]), unsigned(24))
    wkh = st.reg("w_kh", Mux(c.tfl, mo[24:31], 0), unsigned(7))
    e_base = st.reg("e_base", st[y_exp] + e_inv + 23, signed(12))
    wp = mul_pieces(m, f"{p.prefix}w", wx.sig, wk.sig)
    wlo = p.reg("w_lo", 26, sum_pieces(wp), signed(58))
    whi = _lut_mul_stages(p, 24, "w_hi", wx, wkh)
    st = p.stage(27)
    prod = st.reg("w_prod", st[wlo] + (Value.cast(st[whi])[:40].as_signed() << 24), signed(64))

    # -- 28-29: first rounding at a fixed position: float 23/24 (ties to even), TFLite 31 (the
    # doubling high multiply: half up; single rounding: floor, the dropped bits go on) -------
    st = p.stage(28)
    pv = Value.cast(st[prod])
    p47 = pv[47]
    pos = Staged(Mux(c.flt, Mux(p47, 24, 23), 31), 27)
    mode1 = Staged(Mux(c.flt, Rounding.HALF_EVEN, Mux(tk.single, Rounding.FLOOR,
                                                       Rounding.HALF_UP)), 27)
    e_y = st.reg("e_y", st[e_base] + p47, signed(12))        # float: y = y1 * 2^e_y
    y1, _, rnd1, sticky1 = shift_round_stages(p, 28, "ru1", prod, pos, mode1,
                                              positions=(23, 24, 31), dropped=True)
    # 29: the second shift's amount (float: to an integer; TFLite: RoundingDivideByPOT or the
    # rest of the single rounding)
    st = p.stage(29)
    eyv = Value.cast(st[e_y])
    s2 = st.reg("s2", Mux(c.flt, right_amount(-eyv, 31), c.sho), unsigned(5))
    left = st.reg("left", c.flt & (eyv > 0))
    single = c.tfl & tk.single
    r_in = st.reg("r2_rin", st[rnd1] & single)
    s_in = st.reg("r2_sin", st[sticky1] & single)
    if scalar_tail:
        prep = scalar_prep_stage(p, 29, "sc", e_y, Staged(Const(0, 1), 28), qb)

    # -- 30-31: second rounding ------------------------------------------------------------------
    st = p.stage(30)
    y1v = Value.cast(st[y1])
    sat_f = st.reg("sat_f", st[left] & (y1v != 0))
    mode2 = Staged(Mux(c.flt, Rounding.HALF_EVEN, Mux(tk.single, Rounding.HALF_UP,
                                                       Rounding.HALF_AWAY)), 29)
    y1n = Staged(y1v[:34].as_signed(), 29)
    y2, ovf2 = shift_round_stages(p, 30, "ru2", y1n, s2, mode2, max_right=31, rnd_in=r_in,
                                  sticky_in=s_in)

    # -- 32-33: sign, saturation, zero point, clamp ---------------------------------------------
    st = p.stage(32)
    yv = Value.cast(st[y2])
    fneg = c.flt & st[y_neg]
    ovf = st[ovf2] | st[sat_f]
    z = st.reg("z", saturate(Mux(fneg, -yv, yv), ovf, fneg, _YW) + c.zp_add, signed(_YW + 2))
    st = p.stage(33)
    q_main = st.reg("q_main", clamp(st[z], c.lo, c.hi)[:qb].as_signed(), signed(qb))

    # -- 30-35: PyTorch scalar path: rne(f32(y + zp_out)) -----------------------------------------
    q_sc = None
    if scalar_tail:
        ysig = Staged(Value.cast(p.at(y1, 29))[:25], 29)
        rs, sat_s = scalar_quantize_stages(p, 30, "sc", ysig, prep, y_neg, c.zp, qb)
        st = p.stage(35)
        q_sc = st.reg("q_sc", Mux(st[sat_s], Mux(st[y_neg], c.lo, c.hi),
                                  clamp(st[rs], c.lo, c.hi))[:qb].as_signed(), signed(qb))

    # -- 36: the output ---------------------------------------------------------------------------
    st = p.stage(36)
    q_fl = Mux(c.scalar, st[q_sc], st[q_main]) if q_sc is not None else st[q_main]
    q = Mux(c.qnn, st[q_qnn], q_fl)
    return st.reg("q", q[:qb].as_signed(), signed(qb))


def mux4(sel, a, b, c, d) -> Value:
    sel = Value.cast(sel)
    return Mux(sel[1], Mux(sel[0], d, c), Mux(sel[0], b, a))
