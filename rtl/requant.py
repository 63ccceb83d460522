"""TFLite / gemmlowp integer requantization, per output channel.

Implements ``clamp(MultiplyByQuantizedMultiplier(acc + bias, M, shift) + zp, min, max)`` exactly as
``zynqnn.numerics.gemmlowp.requantize``: in the default (double rounding) mode a saturating
rounding doubling high multiply followed by a rounding divide by a power of two (ties away from
zero); with ``single_rounding`` set, ``(x * M + 2^(30 - shift)) >> (31 - shift)``.

Each lane is a seven-stage pipeline; the 32x32 multiply has an extra register after it so that
the synthesis tool can use the DSP48E1's M and P registers.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.config import HwConfig

from .common import CreditBuffer

__all__ = ["TfliteRequant", "lane_params_layout", "requant_in_layout", "requant_out_layout"]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: Per-output-channel constants of the TFLite scheme.
lane_params_layout = data.StructLayout({
    "bias": signed(32),
    "multiplier": signed(32),  # Q31, 0..2^31-1 from QuantizeMultiplier
    "shift": signed(6),        # -31..30; > 0 is a left shift
})


def requant_in_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(32), lanes),
        "params": data.ArrayLayout(lane_params_layout, lanes),
    })


def requant_out_layout(cfg: HwConfig, lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.signed_operand_bits), lanes)


class TfliteRequant(wiring.Component):
    """``lanes`` parallel TFLite requantizers.

    Members
    -------
    i: In(stream)
        Accumulators with their channels' constants (bias, Q31 multiplier, shift).
    o: Out(stream)
        Quantized outputs, ``signed_operand_bits`` wide (holds uint8 and int8 codes).
    zero_point, clamp_min, clamp_max: In
        Per-layer output zero point and clamp (the activation's range, or ReLU's).
    single_rounding: In(1)
        Use the ``TFLITE_SINGLE_ROUNDING`` arithmetic.

    Per-layer inputs must be stable while the layer's values are in flight.
    """

    LATENCY = 7

    def __init__(self, cfg: HwConfig, lanes: int | None = None):
        self._cfg = cfg
        self._lanes = cfg.requant_lanes if lanes is None else lanes
        qbits = cfg.signed_operand_bits
        super().__init__({
            "i": In(stream.Signature(requant_in_layout(self._lanes))),
            "o": Out(stream.Signature(requant_out_layout(cfg, self._lanes))),
            "zero_point": In(signed(qbits)),
            "clamp_min": In(signed(qbits)),
            "clamp_max": In(signed(qbits)),
            "single_rounding": In(1),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        qbits = self._cfg.signed_operand_bits
        m.submodules.out_buffer = obuf = CreditBuffer(
            requant_out_layout(self._cfg, L), self.LATENCY + 4)

        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(obuf.can_accept),
            accept.eq(self.i.valid & self.i.ready),
            obuf.accept.eq(accept),
        ]
        single = self.single_rounding

        out = Signal(requant_out_layout(self._cfg, L))
        for n in range(L):
            acc = self.i.payload.acc[n]
            prm = self.i.payload.params[n]

            def stage(name, shape, _n=n):
                return Signal(shape, name=f"lane{_n}_{name}")

            # s1: int32 add of the bias (wraps like the C++ reference).
            s1_x = stage("s1_x", signed(32))
            s1_q = stage("s1_q", signed(32))
            s1_sh = stage("s1_shift", signed(6))
            m.d.sync += [
                s1_x.eq((acc + prm.bias)[:32]),
                s1_q.eq(prm.multiplier),
                s1_sh.eq(prm.shift),
            ]
            # s2: the left shift of the double-rounding form, in int32.
            left = Mux(s1_sh > 0, s1_sh.as_unsigned()[:5], 0)
            s2_x = stage("s2_x", signed(32))
            s2_q = stage("s2_q", signed(32))
            s2_sh = stage("s2_shift", signed(6))
            m.d.sync += [
                s2_x.eq(Mux(single, s1_x, (s1_x << left)[:32])),
                s2_q.eq(s1_q),
                s2_sh.eq(s1_sh),
            ]
            # s3, s4: the 32x32 product, registered twice (DSP M and P registers).
            s3_p = stage("s3_p", signed(64))
            s3_ovf = stage("s3_ovf", 1)
            s3_sh = stage("s3_shift", signed(6))
            s4_p = stage("s4_p", signed(64))
            s4_ovf = stage("s4_ovf", 1)
            s4_sh = stage("s4_shift", signed(6))
            m.d.sync += [
                s3_p.eq(s2_x * s2_q),
                s3_ovf.eq((s2_x == INT32_MIN) & (s2_q == INT32_MIN)),
                s3_sh.eq(s2_sh),
                s4_p.eq(s3_p),
                s4_ovf.eq(s3_ovf),
                s4_sh.eq(s3_sh),
            ]
            # s5: double rounding: high word of the doubled product, rounded to nearest with the
            # gemmlowp nudge and truncating division; single rounding: one round-half-up shift.
            nudge = Mux(s4_p >= 0, Const(1 << 30, signed(64)), Const(1 - (1 << 30), signed(64)))
            t = Signal(signed(65), name=f"lane{n}_s5_t")
            m.d.comb += t.eq(s4_p + nudge)
            hi = Signal(signed(34), name=f"lane{n}_s5_hi")
            m.d.comb += hi.eq((t + Mux(t < 0, (1 << 31) - 1, 0)) >> 31)
            total = Signal(unsigned(6), name=f"lane{n}_s5_total")  # 31 - shift, 1..62
            m.d.comb += total.eq(31 - s4_sh)
            half = Signal(signed(64), name=f"lane{n}_s5_half")
            m.d.comb += half.eq(Const(1, signed(64)) << (total - 1)[:6])
            single_y = Signal(signed(66), name=f"lane{n}_s5_single")
            m.d.comb += single_y.eq((s4_p + half) >> total)
            # TFLite leaves results beyond int32 undefined; saturating far outside the int32
            # range keeps the final clamp identical to the unbounded arithmetic.
            single_sat = Signal(signed(34), name=f"lane{n}_s5_single_sat")
            with m.If(single_y > (2**33 - 1)):
                m.d.comb += single_sat.eq(2**33 - 1)
            with m.Elif(single_y < -(2**33)):
                m.d.comb += single_sat.eq(-(2**33))
            with m.Else():
                m.d.comb += single_sat.eq(single_y)
            s5_y = stage("s5_y", signed(34))
            s5_right = stage("s5_right", unsigned(5))
            s5_single = stage("s5_single", 1)
            m.d.sync += [
                s5_y.eq(Mux(single, single_sat, Mux(s4_ovf, INT32_MAX, hi))),
                s5_right.eq(Mux(s4_sh < 0, (-s4_sh).as_unsigned()[:5], 0)),
                s5_single.eq(single),
            ]
            # s6: rounding divide by 2^right, ties away from zero.
            mask = Signal(unsigned(32), name=f"lane{n}_s6_mask")
            m.d.comb += mask.eq((Const(1, unsigned(33)) << s5_right) - 1)
            rem = Signal(unsigned(32), name=f"lane{n}_s6_rem")
            m.d.comb += rem.eq(s5_y.as_unsigned()[:32] & mask)
            thr = Signal(unsigned(33), name=f"lane{n}_s6_thr")
            m.d.comb += thr.eq((mask >> 1) + s5_y[-1])
            rdbp = Signal(signed(34), name=f"lane{n}_s6_rdbp")
            m.d.comb += rdbp.eq((s5_y >> s5_right) + (rem > thr))
            s6_y = stage("s6_y", signed(34))
            m.d.sync += s6_y.eq(Mux(s5_single, s5_y, rdbp))
            # s7: output zero point and clamp.
            zy = Signal(signed(36), name=f"lane{n}_s7_zy")
            m.d.comb += zy.eq(s6_y + self.zero_point)
            s7_q = stage("s7_q", signed(qbits))
            with m.If(zy < self.clamp_min):
                m.d.sync += s7_q.eq(self.clamp_min)
            with m.Elif(zy > self.clamp_max):
                m.d.sync += s7_q.eq(self.clamp_max)
            with m.Else():
                m.d.sync += s7_q.eq(zy)
            m.d.comb += out[n].eq(s7_q)

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

