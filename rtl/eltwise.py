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

Stages of a lane (``EltwiseAdd.LATENCY`` = 54)::

    1-5    q x K for both inputs (DSP, two registers after the product; K's top bits in LUT
           multipliers, one adder level a stage)
    6-11   qnnpack: 32-bit sum, rounding shift (three), zero point, clamp
    6-11   TFLite inputs: rounding at bit 11 (16), then RoundingDivideByPOT (three); int32 sum
    6-13   float inputs: FMA constant (PyTorch vector path), |x|, normalize (four), round to
           24 bits (two, PyTorch) or keep the exact product (ONNX Runtime)
    14-37  two float additions of eleven stages, each after a stage choosing its operands
           (PyTorch: d_a + d_b, then exact; ONNX Runtime: the FMA chain)
    38-42  X x K: PyTorch's f32(1/s_out), ONNX Runtime's 1.0, TFLite's output multiplier
    43-51  rounding to 24 bits / at bit 31, the second shift's amount, round to integer /
           RoundingDivideByPOT (three), sign, saturation and zero point, clamp
    44-53  PyTorch scalar path: rne(f32(y + zp_out)), clamp
    54     output select

The stages follow the timing rules of ``rtl/postproc.py`` (one carry chain or a few LUTs a
stage; the per-layer shifted constants are registered once in the control, not per lane).
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
    control_tap,
    float_add_stages,
    mul_pieces,
    normalize_stages,
    right_amount,
    round_top_stages,
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
    summed as a tree, one adder level a stage (s .. s+2, at most 8 terms). ``x``, ``k`` read in
    stage ``s - 1``; returns the staged product of stage ``s + 2``."""
    st = p.stage(s)
    xv, kv = Value.cast(st[x]), Value.cast(st[k])
    assert len(kv) <= 8
    w = len(xv) + len(kv)
    terms = [Mux(kv[j], xv.as_signed() << j, 0) for j in range(len(kv))]
    for level in range(3):
        st = p.stage(s + level)
        if level:
            terms = [Value.cast(st[t]) for t in terms]
        sums = [terms[j] + terms[j + 1] if j + 1 < len(terms) else terms[j]
                for j in range(0, len(terms), 2)]
        terms = [st.reg(f"{name}_t{level}_{j}", t, signed(w + 1)) for j, t in enumerate(sums)]
    assert len(terms) == 1
    return terms[0]


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

    LATENCY = 54

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
                          self.scalar_tail, n)
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

        # Reloaded every cycle from the ports: no reset (a reset would join each one's
        # zeroing mux on the flip-flops' reset pin, behind the engine's wide reset net).
        def r(name, expr, shape=1):
            s = Signal(shape, name=f"ctl_{name}", reset_less=True)
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
        self.prm = Signal(add_params_layout(ea.cfg), name="ctl_params", reset_less=True)
        m.d.sync += self.prm.eq(prm)
        tk = prm.c.tflite      # TFLite's right shifts (its multipliers are below one)
        self.sha = r("sha", -tk.sha, 5)
        self.shb = r("shb", -tk.shb, 5)
        self.sho = r("sho", -tk.sho, 5)
        qs = prm.c.qnnpack.shift
        self.q_shift = r("q_shift", qs, Value.cast(qs).shape())
        # per-layer constants derived once (read from stage 6 on), not in every lane
        fw = ea.cfg.signed_operand_bits + 24
        tc, oc = self.prm.c.torch, self.prm.c.onnxruntime
        fma = self.torch & ~self.scalar
        self.ca_al = r("ca_al", Mux(fma, (tc.ca_sig << tc.ca_shift)[:fw + 1], 0), signed(fw + 1))
        self.cb_al = r("cb_al", Mux(fma, (tc.cb_sig << tc.cb_shift)[:fw + 1], 0), signed(fw + 1))
        self.fixed_e = r("fixed_e", Value.cast(oc.fixed_exp) - (fw - 24), signed(12))
        self.e_inv23 = r("e_inv23", Mux(self.torch, Value.cast(tc.e_inv), -23) + 23, signed(12))
        self.raw = prm          # the ports, for stage 1 only
        self._m = m
        self._taps = {}

    def tap(self, name: str, k: int) -> Signal:
        return control_tap(self._m, self._taps, getattr(self, name), name, k)


def _add_lane(p: Pipe, cfg: HwConfig, c: _AddControl, a_in, b_in, scalar_tail,
              lane: int = 0) -> Staged:
    m = p.m

    def t(name, group, groups, stage):
        """This lane's copy of a control register for one group of readers
        (:func:`~zynqnn.rtl.postproc.control_tap`), read from ``stage`` on."""
        k = 1 + lane * groups + group
        assert k < stage, (name, k, stage)
        return c.tap(name, k)

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

    # -- 6-11: qnnpack: 32-bit sum, shift (ties away from zero), zero point, clamp -------------
    st = p.stage(6)
    qacc = st.reg("q_acc", (k.qnnpack.zpp + st[pa] + st[pb])[:32].as_signed(), signed(32))
    # the shift amounts of the lanes' shifters: a tap each (their first stage's registers
    # would be merged across the lanes otherwise)
    q_r, _ = shift_round_stages(p, 7, "q_r", qacc, t("q_shift", 0, 1, 7), Rounding.HALF_AWAY,
                                max_right=31)
    st = p.stage(q_r.stage + 1)
    lo, hi = t("lo", 0, 1, st.n), t("hi", 0, 1, st.n)
    q_z = st.reg("q_z", st[q_r] + t("zp", 0, 1, st.n), signed(_YW + 1))
    st = p.stage(q_z.stage + 1)
    q_qnn = st.reg("q_qnn", clamp(st[q_z], lo, hi)[:qb].as_signed(), signed(qb))

    # -- 6-11: TFLite inputs: MultiplyByQuantizedMultiplier((q - zp) << left_shift) ------------
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

    xa = tfl_in("ta", pa, t("sha", 0, 1, 8))
    xb = tfl_in("tb", pb, t("shb", 0, 1, 8))
    st = p.stage(xa.stage + 1)
    tsum = st.reg("t_sum", (st[xa] + st[xb])[:32].as_signed(), signed(32))

    # -- 6-13: float inputs: FMA constant, normalize, round (PyTorch) or keep (ONNX Runtime) -----
    tc, oc = k.torch, k.onnxruntime

    torch_in = t("torch", 0, 3, 13)     # float_in's selects (both inputs)

    def float_in(name, prod, c_al, e_torch, e_ort):
        st = p.stage(6)
        n = st.reg(f"{name}_n", Value.cast(st[prod]) + c_al, signed(fw + 1))
        st = p.stage(7)
        nv = Value.cast(st[n])
        mag = st.reg(f"{name}_mag", Mux(nv < 0, -nv, nv)[:fw], unsigned(fw))
        neg = st.reg(f"{name}_neg", nv < 0)
        norm, lz = normalize_stages(p, 8, name, mag)
        st = p.stage(12)
        e_src = Mux(torch_in, e_torch, e_ort)
        e0 = st.reg(f"{name}_e0", e_src - st[lz], signed(12))
        sig, carry = round_top_stages(p, 12, f"{name}_r", norm)
        st = p.stage(13)
        mag_r = st.reg(f"{name}_mw", Mux(torch_in, Cat(Const(0, fw - 24), sig), st[norm]),
                       unsigned(fw))
        e_r = st.reg(f"{name}_ew", st[e0] + Mux(torch_in, carry, 0), signed(12))
        return mag_r, e_r, st.reg(f"{name}_neg13", st[neg])

    fa = float_in("fa", pa, c.ca_al, tc.ea, oc.ra_exp)
    fb = float_in("fb", pb, c.cb_al, tc.eb, oc.rb_exp)
    fixed = (Cat(Const(0, fw - 24), oc.fixed_sig), c.fixed_e, oc.fixed_neg)

    # -- G1 ..: PyTorch d_a + d_b; ONNX Runtime fma(b, r_b, fixed) ------------------------------
    # the operands are chosen a stage ahead (the select's fanout, then the compares)
    st = p.stage(fa[0].stage + 1)
    torch_g1 = t("torch", 1, 3, st.n)
    g1_a = tuple(st.reg(f"g1_oa{k}", Mux(torch_g1, st[x], st[y]))
                 for k, (x, y) in enumerate(zip(fa, fb, strict=True)))
    g1_b = tuple(st.reg(f"g1_ob{k}", Mux(torch_g1, st[x], y))
                 for k, (x, y) in enumerate(zip(fb, fixed, strict=True)))
    G1 = g1_a[0].stage + 1
    # (the sum's exponent comes out for a fw-bit significand: it feeds the second addition)
    c_sig, c_exp, c_neg, _ = float_add_stages(p, G1, "g1", g1_a, g1_b, fw, -(fw - 24))

    # -- G2 ..: PyTorch: exact (+ 0); ONNX Runtime: fma(a, r_a, inner) ----------------------------
    st = p.stage(c_sig.stage + 1)
    inner = (Cat(Const(0, fw - 24), st[c_sig]), st[c_exp], st[c_neg])
    fa16 = tuple(st[x] for x in fa)
    torch_g2 = t("torch", 2, 3, st.n)
    g2_a = tuple(st.reg(f"g2_oa{k}", Mux(torch_g2, x, y))
                 for k, (x, y) in enumerate(zip(inner, fa16, strict=True)))
    g2_b = tuple(st.reg(f"g2_ob{k}", Mux(torch_g2, 0, y), Value.cast(y).shape())
                 for k, y in enumerate(inner))
    G2 = g2_a[0].stage + 1
    y_sig, y_exp, y_neg, _ = float_add_stages(p, G2, "g2", g2_a, g2_b, fw)

    # -- W .. W+4: X x K: PyTorch's f32(1 / s_out), ONNX Runtime's 1.0, TFLite's output multiplier
    W = y_sig.stage + 1
    flt = t("flt", 0, 1, W)
    st = p.stage(W)
    xop = Mux(flt, Cat(st[y_sig], Const(0, 1)).as_signed(), st[tsum])
    mo = Value.cast(tk.mo)
    inv_sig = Mux(c.torch, tc.inv_sig, 1 << 23)
    wx = st.reg("w_x", xop, signed(33))
    wk = st.reg("w_k", Mux(flt, inv_sig, mo[:24]), unsigned(24))
    wkh = st.reg("w_kh", Mux(c.tfl, mo[24:31], 0), unsigned(7))
    e_base = st.reg("e_base", st[y_exp] + c.e_inv23, signed(12))
    wp = mul_pieces(m, f"{p.prefix}w", wx.sig, wk.sig)
    wlo = p.reg("w_lo", W + 3, sum_pieces(wp), signed(58))
    whi = _lut_mul_stages(p, W + 1, "w_hi", wx, wkh)
    st = p.stage(W + 4)
    prod = st.reg("w_prod", st[wlo] + (Value.cast(st[whi])[:40].as_signed() << 24), signed(64))

    # -- W+5: first rounding at a fixed position: float 23/24 (ties to even), TFLite 31 (the
    # doubling high multiply: half up; single rounding: floor, the dropped bits go on) -------
    st = p.stage(W + 5)
    pv = Value.cast(st[prod])
    p47 = pv[47]
    pos = Staged(Mux(flt, Mux(p47, 24, 23), 31), W + 4)
    mode1 = Staged(Mux(flt, Rounding.HALF_EVEN, Mux(tk.single, Rounding.FLOOR,
                                                       Rounding.HALF_UP)), W + 4)
    e_y = st.reg("e_y", st[e_base] + p47, signed(12))        # float: y = y1 * 2^e_y
    y1, _, rnd1, sticky1 = shift_round_stages(p, W + 5, "ru1", prod, pos, mode1,
                                              positions=(23, 24, 31), dropped=True)
    # W+6, W+7: the second shift's amount (float: to an integer; TFLite: RoundingDivideByPOT or
    # the rest of the single rounding)
    st = p.stage(W + 6)
    ney = st.reg("ney", -st[e_y], signed(13))
    single = c.tfl & tk.single
    r_in = st.reg("r2_rin", st[rnd1] & single)
    s_in = st.reg("r2_sin", st[sticky1] & single)
    st = p.stage(W + 7)
    eyv = Value.cast(st[e_y])
    s2 = st.reg("s2", Mux(flt, right_amount(st[ney], 31), c.sho), unsigned(5))
    left = st.reg("left", flt & (eyv > 0))
    if scalar_tail:
        prep = scalar_prep_stage(p, W + 6, "sc", e_y, Staged(Const(0, 1), W + 5), qb)

    # -- W+8 .. W+10: second rounding -----------------------------------------------------------
    st = p.stage(W + 8)
    y1v = Value.cast(st[y1])
    sat_f = st.reg("sat_f", st[left] & (y1v != 0))
    mode2 = Staged(Mux(flt, Rounding.HALF_EVEN, Mux(tk.single, Rounding.HALF_UP,
                                                       Rounding.HALF_AWAY)), W + 7)
    y1n = Staged(y1v[:34].as_signed(), W + 7)
    y2, ovf2 = shift_round_stages(p, W + 8, "ru2", y1n, s2, mode2, max_right=31, rnd_in=r_in,
                                  sticky_in=s_in)

    # -- sign, saturation, zero point, clamp ------------------------------------------------------
    st = p.stage(y2.stage + 1)
    yv = Value.cast(st[y2])
    fneg = flt & st[y_neg]
    yn = st.reg("yn", Mux(fneg, -yv, yv), signed(_YW + 1))
    ovf = st.reg("ovf", st[ovf2] | st[sat_f])
    sneg = st.reg("sneg", fneg)
    st = p.stage(yn.stage + 1)
    z = st.reg("z", saturate(st[yn], st[ovf], st[sneg], _YW) + t("zp_add", 0, 1, st.n),
               signed(_YW + 2))
    st = p.stage(z.stage + 1)
    q_main = st.reg("q_main", clamp(st[z], lo, hi)[:qb].as_signed(), signed(qb))

    # -- W+8 .. W+15: PyTorch scalar path: rne(f32(y + zp_out)) ---------------------------------
    q_sc = None
    if scalar_tail:
        ysig = Staged(Value.cast(p.at(y1, W + 7))[:25], W + 7)
        rs, sat_s = scalar_quantize_stages(p, W + 8, "sc", ysig, prep, y_neg,
                                           t("zp", 0, 1, 10), qb)
        st = p.stage(rs.stage + 1)
        q_sc = st.reg("q_sc", Mux(st[sat_s], Mux(st[y_neg], lo, hi),
                                  clamp(st[rs], lo, hi))[:qb].as_signed(), signed(qb))

    # -- the output -------------------------------------------------------------------------------
    st = p.stage(W + 16)
    q_fl = Mux(c.scalar, st[q_sc], st[q_main]) if q_sc is not None else st[q_main]
    q = Mux(c.qnn, st[q_qnn], q_fl)
    return st.reg("q", q[:qb].as_signed(), signed(qb))


def mux4(sel, a, b, c, d) -> Value:
    sel = Value.cast(sel)
    return Mux(sel[1], Mux(sel[0], d, c), Mux(sel[0], b, a))
