"""Weight-stationary systolic PE array.

Dataflow (TPU-style): a ``rows x cols`` tile of weights sits in the array; each cycle one vector of
``rows`` input-channel activations (one pixel) enters from the left, skewed by one cycle per row,
and moves right; partial sums move down each column, so column ``c`` emits
``sum_r a[r] * w[r][c]`` for that pixel. The reduction over more input channels and kernel taps
happens in the accumulator buffer after the array.

Each PE is three registered stages, the DSP48E1's own pipeline: operand registers (A/B), the
product (M) and the accumulate (P, with the column's partial sum arriving on the cascade), so
nothing between two registers is more than one multiplier or one adder.

In the depthwise mode (``dw``, :attr:`HwConfig.dw_kernel`) a vector enters every row at once
and, within a row, every PE holding a tap (PE ``j`` holds taps ``j * pack ..``): row ``r``
multiplies channel ``r``'s operand by its tap weights, and the product registers leave the
array (``dw_products``, ``dw_valid``) for the depthwise FIR; no column sums are emitted.

Weights are double-buffered: a new tile shifts into shadow registers (entering at the bottom row,
so the first row sent ends in row 0) while the array computes with the active tile; the first
activation vector that uses the new tile carries ``swap``, and each PE copies its shadow weight
when that vector reaches it. The array enforces the ordering itself: a ``swap`` vector waits until
a full tile is loaded, and a new tile waits until the previous swap has passed every PE.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig

from .common import CreditBuffer

__all__ = ["PEArray", "weight_row_layout", "act_layout", "sum_layout", "dw_products_layout"]


def weight_row_layout(cfg: HwConfig) -> data.ArrayLayout:
    """One row of the weight tile: ``cols`` signed weights."""
    return data.ArrayLayout(signed(cfg.operand_bits), cfg.cols)


def act_layout(cfg: HwConfig) -> data.StructLayout:
    """One activation vector: ``rows`` operands, one bit wider than the operand width so that
    uint8 (PyTorch, ONNX Runtime) and int8 (TFLite, pow2) activations share the same array.
    Operands lie in ``[-(2^B - 1), 2^B - 1]`` (the bit pattern ``-2^B`` is never sent: with DSP
    packing it would overflow a product's 16-bit field)."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(cfg.signed_operand_bits), cfg.rows),
        "swap": unsigned(1),
    })


def sum_layout(cfg: HwConfig) -> data.ArrayLayout:
    """One output vector: ``cols`` column sums at accumulator width."""
    return data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)


def _pack(cfg: HwConfig) -> int:
    return 2 if cfg.dsp_packing else 1


def product_bits(cfg: HwConfig) -> int:
    """Width of a PE's product register: the activation times the (packed) weight."""
    return cfg.signed_operand_bits + (25 if _pack(cfg) == 2 else cfg.operand_bits)


def dw_pes(cfg: HwConfig) -> int:
    """PEs per row that hold depthwise taps (0 without a depthwise mode)."""
    return -(-cfg.dw_kernel ** 2 // _pack(cfg))


def dw_products_layout(cfg: HwConfig) -> data.ArrayLayout:
    """The depthwise mode's product registers: per row, the first :func:`dw_pes` PEs' products
    (packed: tap ``2j`` in the low 16 bits, tap ``2j + 1`` above, as in the column sums)."""
    return data.ArrayLayout(data.ArrayLayout(signed(product_bits(cfg)), dw_pes(cfg)), cfg.rows)


class PEArray(wiring.Component):
    """The ``rows x cols`` systolic array of a :class:`~zynqnn.hw.config.HwConfig`.

    Members
    -------
    weights: In(stream)
        Weight tile rows, ``rows`` transfers per tile, row 0 first.
    acts: In(stream)
        Activation vectors; ``swap`` marks the first vector of a newly loaded tile.
    sums: Out(stream)
        One vector of ``cols`` sums per activation vector, in order (none in the depthwise mode).
    dw: In(1)
        Depthwise mode (configs with :attr:`HwConfig.dw_kernel`); held while vectors are in the
        array.
    dw_products, dw_valid: Out
        The product registers of the depthwise PEs, valid :attr:`DW_LATENCY` cycles after a
        vector was accepted in the depthwise mode.

    The array itself never stalls; ``acts`` is ready while the output buffer has a free slot.
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        members = {
            "weights": In(stream.Signature(weight_row_layout(cfg))),
            "acts": In(stream.Signature(act_layout(cfg))),
            "sums": Out(stream.Signature(sum_layout(cfg))),
        }
        if cfg.dw_kernel:
            members.update(dw=In(1), dw_products=Out(dw_products_layout(cfg)), dw_valid=Out(1))
        super().__init__(members)

    #: Cycles from an accepted depthwise vector to its products (skew register, A, M).
    DW_LATENCY = 3

    @property
    def cfg(self) -> HwConfig:
        return self._cfg

    @property
    def pack(self) -> int:
        """Columns per PE: 2 when two int8 products share a DSP48E1, else 1."""
        return _pack(self._cfg)

    @property
    def latency(self) -> int:
        """Cycles from an accepted activation vector to its sums entering the output buffer."""
        return self._cfg.rows + self._cfg.cols // self.pack + 2

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        m = Module()

        m.submodules.out_buffer = obuf = CreditBuffer(sum_layout(cfg), self.latency + 4)

        # -- control: tile loading and swap ordering -------------------------------------------
        loaded = Signal(range(R + 1))  # rows shifted into the shadow tile since the last swap
        # A PE reads its shadow weight R + C/pack - 1 cycles after the swap is accepted at the
        # latest.
        lockout = Signal(range(R + C))
        swap_ok = Signal()
        m.d.comb += [
            swap_ok.eq(loaded == R),
            self.weights.ready.eq((loaded < R) & (lockout == 0)),
            self.acts.ready.eq(obuf.can_accept & (~self.acts.payload.swap | swap_ok)),
        ]
        accept = Signal()
        accept_swap = Signal()
        DWJ = dw_pes(cfg)
        dw = self.dw if DWJ else Const(0)
        m.d.comb += [
            accept.eq(self.acts.valid & self.acts.ready),
            accept_swap.eq(accept & self.acts.payload.swap),
            # Depthwise vectors leave as products, not column sums.
            obuf.accept.eq(accept & ~dw),
        ]
        w_shift = Signal()
        m.d.comb += w_shift.eq(self.weights.valid & self.weights.ready)
        with m.If(accept_swap):
            m.d.sync += [loaded.eq(0), lockout.eq(R + C // self.pack - 1)]
        with m.Else():
            with m.If(w_shift):
                m.d.sync += loaded.eq(loaded + 1)
            with m.If(lockout != 0):
                m.d.sync += lockout.eq(lockout - 1)

        # -- input skew: row r enters r cycles later -------------------------------------------
        a_bits = cfg.signed_operand_bits
        w_bits = cfg.operand_bits
        a_west = []  # (operand, swap) entering PE (r, 0)
        dw_west = []  # the same without the skew: entering row r's tap PEs in depthwise mode
        for r in range(R):
            a, s = self.acts.payload.data[r], accept_swap
            for k in range(r + 1):
                a_d = Signal(signed(a_bits), name=f"skew_r{r}_a{k}")
                s_d = Signal(name=f"skew_r{r}_swap{k}")
                m.d.sync += [a_d.eq(a), s_d.eq(s)]
                a, s = a_d, s_d
                if k == 0:
                    dw_west.append((a, s))
            a_west.append((a, s))

        # -- the PEs -----------------------------------------------------------------------------
        # With DSP packing a PE serves two adjacent columns sharing its activation: the weights
        # are stored pre-packed as w_hi * 2^16 + w_lo (25 bits, the DSP48E1's A/D width), one
        # 9x25 multiply gives a*w_hi * 2^16 + a*w_lo, and the two products are split in fabric:
        # lo = the low 16 bits sign-extended, hi = the upper bits plus the borrow lo took
        # (bit 15). |a*w| <= 255*128 < 2^15, so each product fits its 16-bit field exactly.
        P = self.pack
        J = C // P
        if P == 2:
            pw_bits = 25
            packed_in = [(self.weights.payload[2 * j + 1] << 16) + self.weights.payload[2 * j]
                         for j in range(J)]
        else:
            pw_bits = w_bits
            packed_in = [self.weights.payload[j] for j in range(J)]
        assert product_bits(cfg) == a_bits + pw_bits
        shadow = [[Signal(signed(pw_bits), name=f"pe_r{r}_j{j}_wshadow") for j in range(J)]
                  for r in range(R)]
        with m.If(w_shift):
            for j in range(J):
                for r in range(R - 1):
                    m.d.sync += shadow[r][j].eq(shadow[r + 1][j])
                m.d.sync += shadow[R - 1][j].eq(packed_in[j])

        prod_bits = a_bits + pw_bits
        field_bits = 16 if P == 2 else prod_bits  # one product's exact width
        north = [None] * J    # per position: list of P partial sums from the row above
        bottom = []
        for r in range(R):
            a_in, s_in = a_west[r]
            a_dw, s_dw = dw_west[r]
            # Partial sums of r + 1 products; the packed build sums in fabric at minimal width,
            # the unpacked one at accumulator width (the DSP48E1's P cascade).
            sum_bits = field_bits + r.bit_length() if P == 2 else cfg.acc_bits
            for j in range(J):
                pfx = f"pe_r{r}_j{j}"
                if j < DWJ:  # a tap PE: the row's operand without the skew in depthwise mode
                    a_in, s_in = Mux(dw, a_dw, a_in), Mux(dw, s_dw, s_in)
                a_reg = Signal(signed(a_bits), name=f"{pfx}_a")        # A/B register
                s_reg = Signal(name=f"{pfx}_swap")
                w_act = Signal(signed(pw_bits), name=f"{pfx}_w")
                prod = Signal(signed(prod_bits), name=f"{pfx}_m")      # M register
                m.d.sync += [a_reg.eq(a_in), s_reg.eq(s_in)]
                with m.If(s_in):
                    m.d.sync += w_act.eq(shadow[r][j])
                m.d.sync += prod.eq(a_reg * w_act)
                if j < DWJ:
                    m.d.comb += self.dw_products[r][j].eq(prod)
                if P == 2:
                    terms = [prod[:16].as_signed(), prod[16:32].as_signed() + prod[15]]
                else:
                    terms = [prod]
                sums = []
                for k, term in enumerate(terms):
                    psum = Signal(signed(sum_bits), name=f"{pfx}_p{k}")   # P register
                    m.d.sync += psum.eq(term if north[j] is None else north[j][k] + term)
                    sums.append(psum)
                north[j] = sums
                a_in, s_in = a_reg, s_reg
                if r == R - 1:
                    bottom.append(sums)

        # -- output deskew: position j leaves j cycles after position 0 --------------------------
        out = Signal(sum_layout(cfg))
        for j in range(J):
            for k in range(P):
                v = bottom[j][k]
                for d in range(J - 1 - j):
                    v_d = Signal(signed(len(v)), name=f"deskew_c{j * P + k}_{d}")
                    m.d.sync += v_d.eq(v)
                    v = v_d
                m.d.comb += out[j * P + k].eq(v)

        if DWJ:
            v = accept & dw
            for k in range(self.DW_LATENCY):
                v_d = Signal(name=f"dw_valid_d{k}")
                m.d.sync += v_d.eq(v)
                v = v_d
            m.d.comb += self.dw_valid.eq(v)

        # The valid bit of an accepted vector, delayed by the array's latency.
        valid = accept & ~dw
        for k in range(self.latency):
            v_d = Signal(name=f"valid_d{k}")
            m.d.sync += v_d.eq(valid)
            valid = v_d

        m.d.comb += [
            obuf.w_data.eq(out),
            obuf.w_en.eq(valid),
            self.sums.payload.eq(obuf.r_data),
            self.sums.valid.eq(obuf.r_valid),
            obuf.r_ready.eq(self.sums.ready),
        ]
        return m
