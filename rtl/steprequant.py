"""Step requantizer: a cheap lane for any monotone requantization on a bounded accumulator range.

A lane computes ``clamp((acc * mult + offset) >> step_frac_bits, clamp_min, clamp_max) + delta``
where ``delta`` is the correction of the (at most ``step_exceptions``) accumulator values the
host listed for the channel. ``zynqnn.numerics.stepfit.fit_steps`` finds ``mult``, ``offset``
and the exceptions so that the lane equals a scheme's requantization bit for bit on the
channel's reachable accumulators (a 3x3 depthwise sum is a ``dw_acc_bits`` number), including
the float32 arithmetic of the PyTorch and ONNX Runtime schemes, which the general lanes
(``zynqnn.rtl.postproc``) emulate with about 2.6 k LUTs and 7 DSP48E1 each.

Datapath of a lane, two DSP48E1 and no wide LUT adders::

    1  acc register; exception compares (acc == exc_acc[e])
    2  acc x mult[0:17]                      (DSP 0, M register)
    3  p0 = product + offset                 (DSP 0, C port and P register)
    4  acc x mult[17:34]                     (DSP 1, M register)
    5  p1 = product + (p0 >> 17)             (DSP 1, cascade)
    6  y = p1 >> (step_frac_bits - 17), clamp
    7  + delta

``(acc * mult + offset) >> 32 == (acc * mult_hi + ((acc * mult_lo + offset) >> 17)) >> 15``
because ``acc * mult_hi * 2^17`` is a multiple of 2^17. The pipeline never stalls (inputs are
taken while the output buffer has room); per-command inputs must be stable while results of the
command are in flight.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig
from zynqnn.hw.step import step_params_layout

from .common import CreditBuffer

__all__ = ["StepRequant"]

#: Width of one DSP48E1 multiplier piece of ``mult`` (the 18-bit B port, unsigned).
PIECE = 17


class StepRequant(wiring.Component):
    """``lanes`` step requantization lanes (see the module docstring).

    Members
    -------
    i: In(stream)
        ``lanes`` accumulators (signed ``dw_acc_bits``).
    o: Out(stream)
        ``lanes`` output codes (signed ``signed_operand_bits``).
    params: In
        Each lane's constants (:func:`step_params_layout`).
    clamp_min, clamp_max: In
        The output clamp (the code range, ReLU, ReLU6).
    """

    #: Cycles from an accepted input to its result entering the output buffer.
    LATENCY = 7

    def __init__(self, cfg: HwConfig, lanes: int | None = None):
        self._cfg = cfg
        self._lanes = cfg.cols if lanes is None else lanes
        if not isinstance(self._lanes, int) or self._lanes < 1:
            raise ValueError(f"StepRequant: lanes must be an int >= 1, not {self._lanes!r}")
        if cfg.step_frac_bits < PIECE:
            raise ValueError(f"StepRequant: step_frac_bits = {cfg.step_frac_bits} must be >= "
                             f"{PIECE} (the cascade drops {PIECE} bits)")
        if cfg.step_mult_bits != 2 * PIECE:
            raise ValueError(f"StepRequant: step_mult_bits = {cfg.step_mult_bits} must be "
                             f"{2 * PIECE} (two DSP48E1 pieces)")
        q = signed(cfg.signed_operand_bits)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(cfg.dw_acc_bits), self._lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(q, self._lanes))),
            "params": In(data.ArrayLayout(step_params_layout(cfg), self._lanes)),
            "clamp_min": In(q),
            "clamp_max": In(q),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        L, E = self._lanes, cfg.step_exceptions
        qbits = cfg.signed_operand_bits
        out_layout = data.ArrayLayout(signed(qbits), L)
        m.submodules.out_buffer = obuf = CreditBuffer(out_layout, self.LATENCY + 4)
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(obuf.can_accept),
            accept.eq(self.i.valid & self.i.ready),
            obuf.accept.eq(accept),
        ]

        out = Signal(out_layout)
        for n in range(L):
            prm = self.params[n]
            acc = self.i.payload[n]

            def reg(name, shape, _n=n):
                return Signal(shape, name=f"lane{_n}_{name}")

            # 1: operand register; at most one exception matches (the values are distinct).
            a1 = reg("s1_acc", signed(cfg.dw_acc_bits))
            d1 = reg("s1_delta", signed(2))
            hit = 0
            for e in range(E):
                hit = hit | Mux(acc == prm.exc_acc[e], prm.exc_delta[e], 0)
            m.d.sync += [a1.eq(acc), d1.eq(hit)]
            # 2-3: DSP 0: acc x mult[0:17] + offset.
            pr0 = reg("s2_prod0", signed(cfg.dw_acc_bits + PIECE + 1))
            a2 = reg("s2_acc", signed(cfg.dw_acc_bits))
            p0 = reg("s3_p0", signed(48))
            a3 = reg("s3_acc", signed(cfg.dw_acc_bits))
            m.d.sync += [
                pr0.eq(a1 * prm.mult[:PIECE]),
                a2.eq(a1),
                p0.eq(pr0 + prm.offset),
                a3.eq(a2),
            ]
            # 4-5: DSP 1: acc x mult[17:34] + (p0 >> 17).
            pr1 = reg("s4_prod1", signed(cfg.dw_acc_bits + PIECE + 1))
            p0d = reg("s4_p0", signed(48 - PIECE))
            p1 = reg("s5_p1", signed(cfg.dw_acc_bits + PIECE + 2))
            m.d.sync += [
                pr1.eq(a3 * prm.mult[PIECE:]),
                p0d.eq(p0 >> PIECE),
                p1.eq(pr1 + p0d),
            ]
            # 6: the integer part, clamped; 7: the exception's correction.
            y = Signal(signed(cfg.dw_acc_bits + PIECE + 2), name=f"lane{n}_s6_y")
            m.d.comb += y.eq(p1 >> (cfg.step_frac_bits - PIECE))
            q6 = reg("s6_q", signed(qbits))
            with m.If(y < self.clamp_min):
                m.d.sync += q6.eq(self.clamp_min)
            with m.Elif(y > self.clamp_max):
                m.d.sync += q6.eq(self.clamp_max)
            with m.Else():
                m.d.sync += q6.eq(y)
            d = d1
            for k in range(2, 7):
                dk = reg(f"s{k}_delta", signed(2))
                m.d.sync += dk.eq(d)
                d = dk
            q7 = reg("s7_q", signed(qbits))
            m.d.sync += q7.eq(q6 + d)
            m.d.comb += out[n].eq(q7)

        valid = accept
        for k in range(self.LATENCY):
            v_d = Signal(name=f"valid_d{k}")
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
