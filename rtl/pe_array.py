"""Weight-stationary systolic PE array.

Dataflow (TPU-style): a ``rows x cols`` tile of weights sits in the array; each cycle one vector of
``rows`` input-channel activations (one pixel) enters from the left, skewed by one cycle per row,
and moves right; partial sums move down each column, so column ``c`` emits
``sum_r a[r] * w[r][c]`` for that pixel. The reduction over more input channels and kernel taps
happens in the accumulator buffer after the array.

Each PE is three registered stages, the DSP48E1's own pipeline: operand registers (A/B), the
product (M) and the accumulate (the P register with the column's partial sum arriving on the
cascade; a fabric register after one adder where the product is split or also leaves the array),
so nothing between two registers is more than one multiplier or one adder.

In the depthwise mode (``dw``, :attr:`HwConfig.dw_kernel`) a vector enters every row at once
and, within a row, every PE holding a tap (PE ``j`` holds taps ``j * pack ..``): row ``r``
multiplies channel ``r``'s operand by its tap weights, and the product registers leave the
array (``dw_products``, ``dw_valid``) for the depthwise FIR; no column sums are emitted.

Weights are double-buffered: a new tile is written row by row into shadow registers (the first
row sent into row 0) while the array computes with the active tile; the first activation vector
that uses the new tile carries ``swap``, and each PE copies its shadow weight when that vector
reaches it. The array enforces the ordering itself: a ``swap`` vector waits until a full tile is
loaded, and a new tile waits until the previous swap has passed every PE.

Timing (``docs/timing.md``, "Design rules"): ``weights.ready`` is a register and ``acts.ready``
one LUT after the output buffer's credit; every wide enable or select is a registered
copy driving at most :data:`MAX_FANOUT` flip-flops (a weight row lands in a stage register and is
written into its shadow row one cycle later under per-row, per-PE-group write enables; the tap
PEs' depthwise select is a per-row copy of ``dw``); column sums travel to the output buffer at
their exact width, which is split into column groups. None of this shows at the ports: the cycle
behaviour is that of the plain shift-register design. The datapath registers (operands, weights,
products, partial sums) have no reset, so the synchronous reset reaches only the control state
(swap and valid bits, pointers, counters) and the skew and deskew delay lines; those keep theirs
so that they stay flip-flops (reset-less delay lines map to SRL16E, a LUT each, and LUTs are the
resource the xc7z020 build runs short of). After a reset the active weights are whatever they
were until the first ``swap``, which the protocol puts on the first vector of every tile.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig

from .common import CreditBuffer, replica

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


#: Most flip-flops one enable or select may drive: wider ones are split into registered copies.
MAX_FANOUT = 128


def _split(n: int, k: int) -> list[range]:
    """``range(n)`` in ``k`` contiguous groups of nearly equal size."""
    k = max(1, min(n, k))
    cuts = [n * i // k for i in range(k + 1)]
    return [range(cuts[i], cuts[i + 1]) for i in range(k)]


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
        P = self.pack
        J = C // P
        DWJ = dw_pes(cfg)
        m = Module()

        # Narrowest exact width of a column sum (R products), as stored in the deskew registers
        # and the output buffer; the payload sign-extends it to ``acc_bits``.
        a_bits = cfg.signed_operand_bits
        w_bits = cfg.operand_bits
        pw_bits = 25 if P == 2 else w_bits
        prod_bits = a_bits + pw_bits
        field_bits = 16 if P == 2 else prod_bits  # one product's exact width
        out_bits = field_bits + (R - 1).bit_length()
        assert out_bits <= cfg.acc_bits
        # The output buffer in column groups, each its own CreditBuffer: all see the same writes
        # and reads and stay in step (group 0's credit and valid stand for all), but each has its
        # own read enable, which drives the group's output register and a dozen control sinks.
        per_group = max(1, (MAX_FANOUT - 16) // out_bits)
        col_groups = _split(C, -(-C // per_group))
        obufs = []
        for g, cols in enumerate(col_groups):
            obufs.append(CreditBuffer(data.ArrayLayout(signed(out_bits), len(cols)),
                                      self.latency + 4))
            m.submodules[f"out_buffer{g}" if g else "out_buffer"] = obufs[-1]
        obuf = obufs[0]

        # -- control: tile loading and swap ordering -------------------------------------------
        # ``acts.ready`` is one LUT over ``swap_ok`` (a whole tile sits in the shadow registers)
        # and the output buffer's credit; ``weights.ready`` is a register of its own. Only the
        # skew, ``swap_ok`` and ``swap_d`` take an accepted swap in its cycle; the write pointers
        # and the lockout follow it a cycle later, from ``swap_d``.
        swap_ok = Signal()
        swap_d = Signal()
        # A PE reads its shadow weight R + C/pack - 1 cycles after the swap is accepted at the
        # latest; the lockout, loaded a cycle after the swap, counts that down.
        assert R + J >= 3
        lockout = Signal(range(R + J))
        lock_zero = Signal(init=1)  # lockout == 0
        lock_one = Signal()         # lockout == 1
        lock_zero_next = ~swap_d & (lock_zero | lock_one)
        m.d.comb += self.acts.ready.eq(obuf.can_accept & (~self.acts.payload.swap | swap_ok))
        accept = Signal()
        accept_swap = Signal()
        dw = self.dw if DWJ else Const(0)
        m.d.comb += [
            accept.eq(self.acts.valid & self.acts.ready),
            accept_swap.eq(accept & self.acts.payload.swap),
        ]
        # Depthwise vectors leave as products, not column sums.
        m.d.comb += [b.accept.eq(accept & ~dw) for b in obufs]
        m.d.sync += [swap_d.eq(accept_swap), lock_zero.eq(lock_zero_next)]
        with m.If(swap_d):
            m.d.sync += [lockout.eq(R + J - 2), lock_one.eq(R + J - 2 == 1)]
        with m.Elif(~lock_zero):
            m.d.sync += [lockout.eq(lockout - 1), lock_one.eq(lockout == 2)]

        # Shadow writes: tile row i goes straight to shadow row i. The row arrives in a stage
        # register (no enable) and is written one cycle later under a registered per-row enable,
        # one per group of PEs. Each group has its own one-hot write pointer and its own copy of
        # ``weights.ready`` (registers whose next state reads their own, which Yosys does not
        # merge), so no enable, pointer or ready drives more than a group. A swap reads the
        # shadow no earlier than two cycles after the last row was accepted, and a new tile is
        # written only after the lockout: the stage cycle changes nothing at the ports.
        if P == 2:
            packed_in = [(self.weights.payload[2 * j + 1] << 16) + self.weights.payload[2 * j]
                         for j in range(J)]
        else:
            packed_in = [self.weights.payload[j] for j in range(J)]
        assert product_bits(cfg) == prod_bits
        w_stage = [Signal(signed(pw_bits), name=f"wstage_j{j}", reset_less=True) for j in range(J)]
        m.d.sync += [w_stage[j].eq(packed_in[j]) for j in range(J)]
        groups = _split(J, -(-J * pw_bits // MAX_FANOUT))
        w_en = [[None] * J for _ in range(R)]  # per row and PE: its group's write enable
        for g, pes in enumerate(groups):
            ptr = Signal(R, init=1, name=f"wptr_g{g}")  # one-hot: the row the next one fills
            ready = Signal(init=1, name=f"wready_g{g}")
            shift = ready & self.weights.valid
            last = shift & ptr[R - 1]
            with m.If(swap_d):
                m.d.sync += ptr.eq(1)
            with m.Elif(shift):
                m.d.sync += ptr.eq(ptr << 1)
            # ready = no whole tile, no lockout, no swap in the previous cycle. A swap needs
            # swap_ok, so ``swap_ok | last`` covers the cycle after it too.
            m.d.sync += ready.eq(~(swap_ok | last) & lock_zero_next)
            if g == 0:
                m.d.comb += self.weights.ready.eq(ready)
                with m.If(accept_swap):
                    m.d.sync += swap_ok.eq(0)
                with m.Elif(last):
                    m.d.sync += swap_ok.eq(1)
            for r in range(R):
                en = Signal(name=f"pe_r{r}_wen_g{g}")
                m.d.sync += en.eq(shift & ptr[r])
                for j in pes:
                    w_en[r][j] = en
        shadow = [[Signal(signed(pw_bits), name=f"pe_r{r}_j{j}_wshadow", reset_less=True)
                   for j in range(J)] for r in range(R)]
        for r in range(R):
            for j in range(J):
                with m.If(w_en[r][j]):
                    m.d.sync += shadow[r][j].eq(w_stage[j])

        # -- input skew: row r enters r cycles later -------------------------------------------
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

        # The depthwise select of the tap PEs: registered copies of ``dw``, one per group of tap
        # PEs of a row. A copy holds ``dw`` of the previous cycle, when the vector now in the
        # first skew register was accepted; ``dw`` is held while vectors are in the array, so
        # that is the mode of every vector a tap PE takes.
        dw_sel = [[None] * DWJ for _ in range(R)]
        if DWJ:
            for r in range(R):
                for g, pes in enumerate(_split(DWJ, -(-DWJ * (a_bits + 1) // MAX_FANOUT))):
                    sel = replica(m, dw, f"pe_r{r}_dw_g{g}")
                    for j in pes:
                        dw_sel[r][j] = sel

        # -- the PEs -----------------------------------------------------------------------------
        # With DSP packing a PE serves two adjacent columns sharing its activation: the weights
        # are stored pre-packed as w_hi * 2^16 + w_lo (25 bits, the DSP48E1's A/D width), one
        # 9x25 multiply gives a*w_hi * 2^16 + a*w_lo, and the two products are split in fabric:
        # lo = the low 16 bits sign-extended, hi = the upper bits plus the borrow lo took
        # (bit 15). |a*w| <= 255*128 < 2^15, so each product fits its 16-bit field exactly.
        north = [None] * J    # per position: list of P partial sums from the row above
        bottom = []
        for r in range(R):
            a_in, s_in = a_west[r]
            a_dw, s_dw = dw_west[r]
            for j in range(J):
                pfx = f"pe_r{r}_j{j}"
                # Partial sums of r + 1 products at their exact width where they are summed in
                # fabric (packed; the tap columns, whose product also leaves the array), else
                # at accumulator width (the DSP48E1's P cascade).
                sum_bits = field_bits + r.bit_length() if P == 2 or j < DWJ else cfg.acc_bits
                if j < DWJ:  # a tap PE: the row's operand without the skew in depthwise mode
                    sel = dw_sel[r][j]
                    a_in, s_in = Mux(sel, a_dw, a_in), Mux(sel, s_dw, s_in)
                a_reg = Signal(signed(a_bits), name=f"{pfx}_a", reset_less=True)  # A/B register
                s_reg = Signal(name=f"{pfx}_swap")
                w_act = Signal(signed(pw_bits), name=f"{pfx}_w", reset_less=True)
                prod = Signal(signed(prod_bits), name=f"{pfx}_m", reset_less=True)  # M register
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
                    psum = Signal(signed(sum_bits), name=f"{pfx}_p{k}", reset_less=True)  # P reg.
                    m.d.sync += psum.eq(term if north[j] is None else north[j][k] + term)
                    sums.append(psum)
                north[j] = sums
                a_in, s_in = a_reg, s_reg
                if r == R - 1:
                    bottom.append(sums)

        # -- output deskew: position j leaves j cycles after position 0 --------------------------
        out = [None] * C
        for j in range(J):
            for k in range(P):
                v = bottom[j][k][:out_bits].as_signed()
                for d in range(J - 1 - j):
                    v_d = Signal(signed(out_bits), name=f"deskew_c{j * P + k}_{d}")
                    m.d.sync += v_d.eq(v)
                    v = v_d
                out[j * P + k] = v

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

        for b, cols in zip(obufs, col_groups, strict=True):
            m.d.comb += [b.w_data[i].eq(out[c]) for i, c in enumerate(cols)]
            m.d.comb += [
                b.w_en.eq(valid),
                b.r_ready.eq(self.sums.ready),
            ]
            m.d.comb += [self.sums.payload[c].eq(b.r_data[i]) for i, c in enumerate(cols)]
        m.d.comb += self.sums.valid.eq(obuf.r_valid)
        return m
