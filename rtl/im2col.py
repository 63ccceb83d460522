"""The activation feeder: walks a command's windows over the IBUF tile (im2col on the fly).

For every pass (kernel tap ``ky, kx`` and input-channel block, in the order ``ky, kx, cb``) the
walker visits the output pixels in raster order and reads the input word at the tapped position
of the tile (a line buffer of ``in_h`` lines per channel block), or substitutes padding outside
it, and subtracts the input zero point so that padding contributes exactly zero. Addresses are
kept incrementally. In DW mode the walk is the decoded span (:mod:`zynqnn.rtl.decode`) as a 1x1,
stride-1 walk.

PAIRS (``isa.pairs_passes``): every pass starts with the zero-point vector (phase K, whose column
sums are the raw codes' part ``zp_in x colsum(W)``); each output pixel then takes two reads, tap
``t = ky*k + kx`` (P0, held) and tap ``t + 1`` (P1), one vector per pixel. DW_PAIRS starts its one
walk with the zero-point vector.
"""

from amaranth import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig

from .buffers import MemoryReader
from .decode import mode_layout, walk_layout
from .pe_array import act_layout

__all__ = ["WindowWalker"]

# Phases of a PAIRS pixel: the pass's zero-point vector, the first and the second tap's read.
PH_K, PH_0, PH_1 = 0, 1, 2


class WindowWalker(wiring.Component):
    """Activation vectors of a command's passes, from IBUF.

    Members
    -------
    start: In(1)
        Pulse: start the command's walk (``op``, ``mode`` and ``walk`` hold while it runs).
    op: In(ConvOp), mode: In(mode_layout), walk: In(walk_layout)
    addr: Out, data: In
        The IBUF read port's address (bank: ``op.ibuf_bank``) and its word a cycle later.
    acts: Out(stream)
        The window vectors (``swap`` on a pass's first), to the PE array or, in the bypass
        modes, straight to the accumulator.
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        super().__init__({
            "start": In(1),
            "op": In(isa.ConvOp),
            "mode": In(mode_layout),
            "walk": In(walk_layout),
            "addr": Out(Shape.cast(range(cfg.act_buffer_depth)).width),
            "data": In(cfg.act_word_bits),
            "acts": Out(stream.Signature(act_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        R, B = cfg.rows, cfg.operand_bits
        m = Module()
        op, walk = self.op, self.walk
        pairs, dw_pairs = self.mode.pairs, self.mode.dw_pairs

        ky = Signal(3)
        kx = Signal(3)
        cb = Signal(8)
        oy = Signal(13)                   # 13 bits: a DW walk spans up to 2 * out_h + 1 rows
        ox = Signal(13)
        iy = Signal(signed(16))
        ix = Signal(signed(16))
        row_addr = Signal(signed(24))     # IBUF address of (cb, iy, 0)
        cb_base = Signal(24)              # cb * in_h * in_w
        ky_iw = Signal(24)                # ky * in_w
        first = Signal()                  # next pixel is the first of its pass
        running = Signal()
        row_step = Signal(16)             # IBUF words between output rows (stride x in_w)

        reader = MemoryReader(m, "a_reader", act_layout(cfg), depth=4)
        # Limits as registers (loaded every cycle: the walk is set in the cycle of ``start``,
        # the first read comes a cycle later), so that the walk's decisions are equality
        # compares of registers, without a carry chain in front.
        ow_last = Signal(13)              # out_w - 1
        oh_last = Signal(13)
        cb_last = Signal(8)
        k_last = Signal(4)                # kernel - 1
        taps_m2 = Signal(signed(8))       # taps - 2 (PAIRS: the last pair starts there or later)
        in_h_m1 = Signal(signed(14))
        in_w_m1 = Signal(signed(14))
        in_w_k = Signal(signed(15))       # in_w + kernel - 1
        m.d.sync += [
            ow_last.eq(walk.out_w - 1), oh_last.eq(walk.out_h - 1),
            cb_last.eq(op.cin_blocks - 1), k_last.eq(walk.kernel - 1),
            taps_m2.eq(walk.taps - 2),
            in_h_m1.eq(op.in_h - 1), in_w_m1.eq(op.in_w - 1),
            in_w_k.eq(op.in_w + walk.kernel - 1),
        ]
        tap = Signal(6)                   # PAIRS: ky * kernel + kx
        phase = Signal(2)
        half = Signal()                   # channel half of the pass (PAIRS)
        advance = Signal()                # the walker reads this cycle
        # Tap t + 1: the next column, or the first of the next row.
        wrap2 = Signal()
        ix2 = Signal(signed(16))
        m.d.comb += [
            wrap2.eq(kx == k_last),
            ix2.eq(Mux(wrap2, ix - (walk.kernel - 1), ix + 1)),
        ]
        second = Signal()                 # this cycle reads tap t + 1
        rd_ix = Signal(signed(16))
        rd_row = Signal(signed(24))
        m.d.comb += [
            second.eq(pairs & (phase == PH_1)),
            rd_ix.eq(Mux(second, ix2, ix)),
            rd_row.eq(Mux(second & wrap2, row_addr + op.in_w, row_addr)),
        ]
        # What the word on the read port (issued last cycle) is.
        rd_pad = Signal()                 # the pixel lies outside the tile
        rd_first = Signal()
        rd_phase = Signal(2)
        rd_half = Signal()
        rd_valid = Signal()               # a read was issued last cycle
        # Outside the tile: iy, ix, or for tap t + 1 (iy, ix + 1) or (iy + 1, ix - (k - 1)),
        # each compared with its limit in parallel.
        pad_y0 = (iy < 0) | (iy >= op.in_h)
        pad_y1 = (iy < -1) | (iy >= in_h_m1)
        pad_x0 = (ix < 0) | (ix >= op.in_w)
        pad_x1 = (ix < -1) | (ix >= in_w_m1)
        pad_xk = (ix < k_last) | (ix >= in_w_k)
        m.d.sync += [rd_pad.eq(Mux(second, Mux(wrap2, pad_y1 | pad_xk, pad_y0 | pad_x1),
                                   pad_y0 | pad_x0)),
                     rd_first.eq(first), rd_valid.eq(advance)]
        with m.If(advance):
            m.d.sync += [rd_phase.eq(Mux(pairs | dw_pairs, phase, PH_1)), rd_half.eq(half)]

        def start_pass(n_ky, n_kx, n_cb_base, n_ky_iw):
            return [
                oy.eq(0), ox.eq(0),
                iy.eq(n_ky + walk.y_off), ix.eq(n_kx + walk.x_off),
                row_addr.eq(op.ibuf_addr + n_cb_base + n_ky_iw + walk.yoff_iw),
                first.eq(1),
            ]

        with m.If(self.start):
            m.d.sync += [ky.eq(0), kx.eq(0), tap.eq(0), cb.eq(0), cb_base.eq(0), ky_iw.eq(0),
                         half.eq(0),
                         phase.eq(PH_K), running.eq(1),
                         row_step.eq(Mux(walk.stride == 2, op.in_w << 1, op.in_w))]
            m.d.sync += start_pass(0, 0, 0, 0)
        with m.Elif(advance & pairs & (phase != PH_1)):
            m.d.sync += [phase.eq(phase + 1), first.eq(0)]
        # DW_PAIRS: the zero-point vector, then the walk.
        with m.Elif(advance & dw_pairs & (phase == PH_K)):
            m.d.sync += [phase.eq(PH_0), first.eq(0)]
        # A pixel is done after its one read, or in PAIRS after its second.
        with m.Elif(advance):
            m.d.sync += [first.eq(0), phase.eq(PH_0)]
            # Upsampling repeats every input pixel and row twice.
            with m.If(ox != ow_last):
                m.d.sync += [ox.eq(ox + 1), ix.eq(ix + Mux(op.upsample, ox[0], walk.stride))]
            with m.Elif(oy != oh_last):
                m.d.sync += [ox.eq(0), ix.eq(kx + walk.x_off), oy.eq(oy + 1)]
                with m.If(~op.upsample):
                    m.d.sync += [iy.eq(iy + walk.stride), row_addr.eq(row_addr + row_step)]
                with m.Elif(oy[0]):
                    m.d.sync += [iy.eq(iy + 1), row_addr.eq(row_addr + op.in_w)]
            # PAIRS: pass (tap pair, half), half inner; the next pair is two taps on.
            with m.Elif(pairs & ~half):
                m.d.sync += [half.eq(1), phase.eq(PH_K)]
                m.d.sync += start_pass(ky, kx, 0, ky_iw)
            with m.Elif(pairs):
                m.d.sync += [half.eq(0), phase.eq(PH_K), tap.eq(tap + 2)]
                with m.If(tap >= taps_m2):
                    m.d.sync += running.eq(0)
                with m.Elif(kx + 2 < walk.kernel):
                    m.d.sync += kx.eq(kx + 2)
                    m.d.sync += start_pass(ky, kx + 2, 0, ky_iw)
                with m.Else():
                    m.d.sync += [kx.eq(kx + 2 - walk.kernel), ky.eq(ky + 1),
                                 ky_iw.eq(ky_iw + op.in_w)]
                    m.d.sync += start_pass(ky + 1, kx + 2 - walk.kernel, 0, ky_iw + op.in_w)
            with m.Elif(cb != cb_last):
                m.d.sync += [cb.eq(cb + 1), cb_base.eq(cb_base + walk.in_hw)]
                m.d.sync += start_pass(ky, kx, cb_base + walk.in_hw, ky_iw)
            with m.Elif(kx != k_last):
                m.d.sync += [cb.eq(0), cb_base.eq(0), kx.eq(kx + 1)]
                m.d.sync += start_pass(ky, kx + 1, 0, ky_iw)
            with m.Elif(ky != k_last):
                m.d.sync += [cb.eq(0), cb_base.eq(0), kx.eq(0), ky.eq(ky + 1),
                             ky_iw.eq(ky_iw + op.in_w)]
                m.d.sync += start_pass(ky + 1, 0, 0, ky_iw + op.in_w)
            with m.Else():
                m.d.sync += running.eq(0)

        # Input codes are unsigned or signed B-bit; the array gets (q - zp_in), zero outside.
        raw = data.ArrayLayout(unsigned(B), R)(self.data)
        vec = Signal(act_layout(cfg))
        # Max pooling ignores padding (-infinity, below any q - zp); convolution pads with the
        # zero point, which is 0 after the subtraction.
        pad_value = Mux(op.pad_min, -(2 ** B), 0)
        word = Signal(data.ArrayLayout(signed(cfg.signed_operand_bits), R))
        for r in range(R):
            q = Mux(op.in_signed, raw[r].as_signed(), raw[r].as_unsigned())
            m.d.comb += word[r].eq(Mux(rd_pad, pad_value, q - op.zp_in))
        m.d.comb += vec.swap.eq(rd_first)
        # PAIRS and DW_PAIRS: the zero-point vector is zp_in in every row.
        zero_point_vec = Signal()
        m.d.comb += zero_point_vec.eq((pairs | dw_pairs) & (rd_phase == PH_K))
        if R % 2 == 0:
            # PAIRS: rows [0, R/2) hold the half's channels under tap t (held from P0), rows
            # [R/2, R) the same channels under tap t + 1.
            H = R // 2
            hold = Signal(data.ArrayLayout(signed(cfg.signed_operand_bits), H))
            sel = [Mux(rd_half, word[H + i], word[i]) for i in range(H)]
            with m.If(rd_valid & (rd_phase == PH_0)):
                m.d.sync += [hold[i].eq(sel[i]) for i in range(H)]
            for i in range(H):
                m.d.comb += [
                    vec.data[i].eq(Mux(zero_point_vec, op.zp_in, Mux(~pairs, word[i], hold[i]))),
                    vec.data[H + i].eq(Mux(zero_point_vec, op.zp_in,
                                           Mux(~pairs, word[H + i], sel[i]))),
                ]
        else:
            m.d.comb += [vec.data[i].eq(Mux(zero_point_vec, op.zp_in, word[i]))
                         for i in range(R)]
        m.d.comb += [
            advance.eq(running & reader.can_issue),
            # The first read of a PAIRS pixel reserves no FIFO slot: it writes none.
            reader.issue.eq(advance & ~(pairs & (phase == PH_0))),
            self.addr.eq((rd_row + rd_ix)[:len(self.addr)]),
            reader.buf.w_data.eq(vec),
            self.acts.payload.eq(reader.buf.r_data),
            self.acts.valid.eq(reader.buf.r_valid),
            reader.buf.r_ready.eq(self.acts.ready),
        ]
        return m
