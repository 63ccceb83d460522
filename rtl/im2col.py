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

from amaranth import Cat, Module, Mux, Shape, Signal, signed, unsigned
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
        The IBUF read port's address (bank: ``op.ibuf_bank``) and its word ``read_latency``
        cycles later (2: the IBUF's output register).
    acts: Out(stream)
        The window vectors (``swap`` on a pass's first), to the PE array or, in the bypass
        modes, straight to the accumulator.
    """

    def __init__(self, cfg: HwConfig, read_latency: int = 1):
        self._cfg = cfg
        self._latency = read_latency
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
        iy = Signal(signed(16))
        ix = Signal(signed(16))
        first = Signal()                  # next pixel is the first of its pass
        tap = Signal(6)                   # PAIRS: ky * kernel + kx
        phase = Signal(2)
        half = Signal()                   # channel half of the pass (PAIRS)
        advance = Signal()                # the walker reads this cycle

        # The read FIFO's free slot gates the whole walk: three copies (``pre``, the control,
        # the datapath).
        reader = MemoryReader(m, "a_reader", act_layout(cfg), copies=3,
                              latency=self._latency)

        # The walk's constants as registers, loaded every cycle: the walk is set in the cycle of
        # ``start`` and first used a cycle later. Every decision below is then a register or an
        # equality of registers, and every address a single adder from registers.
        def const(name, expr, shape):
            sig = Signal(shape, name=name)
            m.d.sync += sig.eq(expr)
            return sig
        k_last = const("k_last", walk.kernel - 1, 4)
        taps_m2 = const("taps_m2", walk.taps - 2, signed(8))
        kx_pair_fits = const("kx_pair_fits", kx + 2 < walk.kernel, 1)   # PAIRS: kx + 2 in row
        pairs_done = const("pairs_done", tap >= taps_m2, 1)             # PAIRS: the last pair
        in_h_m1 = const("in_h_m1", op.in_h - 1, signed(14))
        in_w_m1 = const("in_w_m1", op.in_w - 1, signed(14))
        in_w_k = const("in_w_k", op.in_w + walk.kernel - 1, signed(15))
        row_step = const("row_step", Mux(walk.stride == 2, op.in_w << 1, op.in_w), 16)
        next_row_tap = const("next_row_tap", op.in_w - walk.kernel + 1, signed(16))  # kx=k-1 -> 0
        pair_wrap = const("pair_wrap", op.in_w - walk.kernel + 2, signed(16))   # kx + 2 - k, ky+1
        x_start = const("x_start", 2 - walk.kernel, signed(5))                  # kx + 2 - k

        # The walk's control registers (counters, flags, ``tr``, ``running``) are written as
        # their next value ``*_n``, so that ``pre`` below can decode the next cycle's strobes
        # from them a cycle early. ``*_n`` is the value ``start`` loads, else ``*_s``: the
        # walk's step (a comb default of the current value). ``pre`` decodes the two apart,
        # so ``start`` (which fans out to every walk register) is its last select only.
        def reg(name, shape=1):
            cur = Signal(shape, name=name)
            nxt, stp = Signal(shape, name=f"{name}_n"), Signal(shape, name=f"{name}_s")
            m.d.comb += [stp.eq(cur), nxt.eq(stp)]
            m.d.sync += cur.eq(nxt)
            return cur, nxt, stp

        # Counters whose "at the limit" flag is a register: set from a compare of the value
        # before the step (``value == limit - 2``), so the walk's decisions see no comparator.
        # ``near`` (``value == limit - 2``, the step before the last) is a register too, set
        # from ``value == limit - 3`` a step before.
        def counter(name, width, limit):
            value, value_n, value_s = reg(name, width)
            end, end_n, end_s = reg(f"{name}_end")
            near, near_n, near_s = reg(f"{name}_near")
            lim_m1 = const(f"{name}_lim_m1", limit - 1, width)
            lim_m2 = const(f"{name}_lim_m2", limit - 2, width)
            lim_m3 = const(f"{name}_lim_m3", limit - 3, width)

            # The value's and the flags' updates, apart (each from its own copy of ``pre``).
            def clear(now=False):         # now: in the cycle of ``start`` (limit registers stale)
                if now:
                    return [value_n.eq(0)], [end_n.eq(limit == 1), near_n.eq(limit == 2)]
                return [value_s.eq(0)], [end_s.eq(lim_m1 == 0), near_s.eq(lim_m2 == 0)]

            def step():
                return [value_s.eq(value + 1)], [end_s.eq(near), near_s.eq(value == lim_m3)]
            return value, value_s, end, end_s, near, clear, step
        # 13 bits: a DW walk spans up to 2 * out_h + 1 rows.
        ox, _, ox_end, ox_end_s, ox_near, ox_clear, ox_step = counter("ox", 13, walk.out_w)
        oy, oy_s, oy_end, _, oy_near, oy_clear, oy_step = counter("oy", 13, walk.out_h)
        cb = Signal(8)
        cb_near = Signal()                # cb == cb_m2: kept a step ahead
        cb_m2 = const("cb_m2", op.cin_blocks - 2, 8)
        cb_m3 = const("cb_m3", op.cin_blocks - 3, 8)
        cb_is1 = const("cb_is1", op.cin_blocks == 1, 1)
        k_m2 = const("k_m2", walk.kernel - 2, 3)
        k_is1 = const("k_is1", walk.kernel == 1, 1)

        # What ends the current pass (one-hot, a register): non-PAIRS the next channel block,
        # tap column or tap row; PAIRS the second channel half or the next tap pair. Set for
        # the next pass when a pass ends, from the flags that pass will have, so that a pass of
        # one pixel (a 1x1 output) can follow another in the next cycle.
        tr, tr_n, tr_s = reg("tr", data.StructLayout({
            "cb": 1, "kx": 1, "ky": 1, "half": 1, "pfit": 1, "pwrap": 1, "done": 1}))

        def nonpairs_tr(cb_end, kx_end, ky_end):
            return {"cb": ~cb_end, "kx": cb_end & ~kx_end, "ky": cb_end & kx_end & ~ky_end,
                    "done": cb_end & kx_end & ky_end}

        # Addresses, kept incrementally. ``tap_addr`` is the IBUF address of the pass's first
        # pixel for channel block 0, ``cb_addr`` for the pass's channel block, ``row_addr`` of
        # the current row's first pixel, ``pix_addr`` of the pixel; ``ix0``/``iy0`` are the
        # pass's first coordinates (tap offset + walk offset).
        A = signed(25)
        tap_addr = Signal(A)
        cb_addr = Signal(A)
        row_addr = Signal(A)
        pix_addr = Signal(A)
        ix0 = Signal(signed(16))
        iy0 = Signal(signed(16))

        # Tap t + 1 (PAIRS): the next column, or the first of the next row; its address a
        # cycle after the pixel's (the P1 read is never the first of a pixel).
        wrap2 = Signal()
        m.d.comb += wrap2.eq(kx == k_last)
        pix_addr2 = const("pix_addr2", pix_addr + Mux(wrap2, next_row_tap, 1), A)
        second = Signal()                 # this cycle reads tap t + 1
        m.d.comb += second.eq(pairs & (phase == PH_1))
        # What the read issued last cycle is (``rd_*``), and what the word on the read port is
        # (the same, ``read_latency - 1`` cycles later).
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
        for _ in range(self._latency - 1):
            now = (rd_pad, rd_first, rd_phase, rd_half, rd_valid)
            later = [Signal.like(sig, name=f"{sig.name}_d") for sig in now]
            m.d.sync += [new.eq(old) for new, old in zip(later, now, strict=True)]
            rd_pad, rd_first, rd_phase, rd_half, rd_valid = later

        # Strobes: a registered "what the next read does" (``pre``, decoded from the control
        # registers' next values) and the read FIFO's registered free slot, so that each of
        # them is one LUT from registers. Every register below takes at most one of them
        # (they are exclusive), after ``start``.
        go = self.start
        running, running_n, running_s = reg("running")
        # this read ends a pixel (PAIRS: the 2nd); ox_end & oy_end: the pass's last pixel
        last_read, last_read_n, last_read_s = reg("last_read")
        last_pix, last_pix_n, last_pix_s = reg("last_pix")
        # Three copies of ``pre``: for the output counters' values, the other control
        # registers, and the addresses and coordinates (each copy's next state reads its own
        # output, so Yosys keeps them apart).
        pre_layout = data.StructLayout({
            "ph": 1, "x": 1, "y": 1, "y_in": 1, "pass_": 1, "stop": 1})
        pre_o, pre_c, pre_d = (Signal(pre_layout, name=f"pre_{s}") for s in "ocd")
        free, free_c, free_d = reader.can_issue_copies
        m.d.comb += advance.eq(running & free)

        def pre_of(pre, running, last_read, ox_end, last_pix, tr_done, oy0):
            pix = running & last_read
            return [
                pre.ph.eq(running & ~last_read),
                pre.x.eq(pix & ~ox_end),
                pre.y.eq(pix & ox_end & ~last_pix),
                # the next row moves the input row (upsampling repeats each row twice)
                pre.y_in.eq(pix & ox_end & ~last_pix & (~op.upsample | oy0)),
                pre.pass_.eq(pix & last_pix & ~tr_done),
                pre.stop.eq(pix & last_pix & tr_done),
            ]
        # What ``start`` loads (below), from the walk alone.
        go_last_read = ~pairs & ~dw_pairs
        go_ox_end = walk.out_w == 1
        go_last_pix = (walk.out_w == 1) & (walk.out_h == 1)
        go_done = ~pairs & (op.cin_blocks == 1) & (walk.kernel == 1)
        for pre in (pre_o, pre_c, pre_d):
            with m.If(go):
                m.d.sync += pre_of(pre, 1, go_last_read, go_ox_end, go_last_pix, go_done, 0)
            with m.Elif(free):
                m.d.sync += pre_of(pre, running_s, last_read_s, ox_end_s, last_pix_s,
                                   tr_s.done, oy_s[0])
        # Within ``m.If(go | free_*)`` below:
        # ``ph``: PAIRS K -> P0 -> P1, DW_PAIRS K -> P0; ``x``: the next pixel of the row;
        # ``y``: the first pixel of the next row, ``y_in`` of the next input row; ``pass_``:
        # the pass's last pixel, another pass follows; ``stop``: the walk's last pixel.
        x_move, y_move, y_move_in, pass_end = pre_d.x, pre_d.y, pre_d.y_in, pre_d.pass_
        # The next pass's first coordinates and addresses, by what ends this one.
        n_iy0 = Mux(tr.pwrap | tr.ky, iy0 + 1, iy0)
        n_ix0 = Mux(tr.pfit, ix0 + 2, Mux(tr.pwrap, ix0 + x_start,
                    Mux(tr.kx, ix0 + 1, Mux(tr.ky, walk.x_off, ix0))))
        # (one-hot AND-OR: ``tr`` is a register)
        tap_delta = (Mux(tr.pfit, 2, 0) | Mux(tr.pwrap, pair_wrap, 0) | Mux(tr.kx, 1, 0)
                     | Mux(tr.ky, next_row_tap, 0))
        n_tap = tap_addr + tap_delta.as_signed()
        n_addr = Mux(tr.cb, cb_addr + walk.in_hw, n_tap)
        y_step = Mux(op.upsample, 1, walk.stride)
        row_inc = Mux(op.upsample, op.in_w, row_step)
        x_step = Mux(op.upsample, ox[0], walk.stride)
        first_addr = op.ibuf_addr + walk.yoff_iw + walk.x_off

        ow_is1 = const("ow_is1", walk.out_w == 1, 1)
        oh_is1 = const("oh_is1", walk.out_h == 1, 1)
        # Each control block: the walk's step (``*_s`` and the registers' step), then what
        # ``start`` loads (``*_n``; its register writes come later and win).
        with m.If(free_c):
            for part, pre in ((0, pre_o), (1, pre_c)):     # counter values; their flags
                with m.If(pre.x):
                    m.d.comb += ox_step()[part]
                with m.Elif(pre.y):
                    m.d.comb += ox_clear()[part] + oy_step()[part]
                with m.Elif(pre.pass_):
                    m.d.comb += ox_clear()[part] + oy_clear()[part]
            with m.If(pre_c.x):
                m.d.comb += last_pix_s.eq(ox_near & oy_end)
            with m.Elif(pre_c.y):
                m.d.comb += last_pix_s.eq(ow_is1 & oy_near)
            with m.Elif(pre_c.pass_):
                m.d.comb += last_pix_s.eq(ow_is1 & oh_is1)
        with m.If(go):
            for part in (0, 1):
                m.d.comb += ox_clear(now=True)[part] + oy_clear(now=True)[part]
            m.d.comb += last_pix_n.eq(go_last_pix)

        with m.If(go | free_d):
            with m.If(go):
                m.d.sync += [ix.eq(walk.x_off), ix0.eq(walk.x_off)]
            with m.Elif(x_move):
                m.d.sync += ix.eq(ix + x_step)
            with m.Elif(y_move):
                m.d.sync += ix.eq(ix0)
            with m.Elif(pass_end):
                m.d.sync += [ix.eq(n_ix0), ix0.eq(n_ix0)]

        with m.If(go | free_d):
            with m.If(go):
                m.d.sync += [iy.eq(walk.y_off), iy0.eq(walk.y_off)]
            with m.Elif(y_move_in):
                m.d.sync += iy.eq(iy + y_step)
            with m.Elif(pass_end):
                m.d.sync += [iy.eq(n_iy0), iy0.eq(n_iy0)]

        with m.If(go | free_d):
            with m.If(go):
                m.d.sync += [pix_addr.eq(first_addr), row_addr.eq(first_addr),
                             cb_addr.eq(first_addr), tap_addr.eq(first_addr)]
            with m.Elif(x_move):
                m.d.sync += pix_addr.eq(pix_addr + x_step)
            with m.Elif(y_move_in):
                m.d.sync += [pix_addr.eq(row_addr + row_inc), row_addr.eq(row_addr + row_inc)]
            with m.Elif(y_move):
                m.d.sync += pix_addr.eq(row_addr)
            with m.Elif(pass_end):
                m.d.sync += [pix_addr.eq(n_addr), row_addr.eq(n_addr), cb_addr.eq(n_addr),
                             tap_addr.eq(n_tap)]

        # Tap and channel-block counters, and what ends the next pass.
        with m.If(free_c):
            with m.If(pre_c.pass_):
                # PAIRS: passes (tap pair, half), half inner; the next pair is two taps on
                # (``kx_pair_fits`` and ``pairs_done`` are a cycle old: a PAIRS pass takes three
                # reads at least).
                with m.If(tr.half):
                    m.d.sync += half.eq(1)
                with m.If(tr.pfit | tr.pwrap):
                    m.d.sync += [half.eq(0), tap.eq(tap + 2),
                                 kx.eq(Mux(tr.pfit, kx + 2, kx + x_start))]
                with m.If(tr.pwrap):
                    m.d.sync += ky.eq(ky + 1)
                with m.If(tr.cb):
                    m.d.sync += [cb.eq(cb + 1), cb_near.eq(cb == cb_m3)]
                with m.If(tr.kx):
                    m.d.sync += [cb.eq(0), cb_near.eq(cb_m2 == 0), kx.eq(kx + 1)]
                with m.If(tr.ky):
                    m.d.sync += [cb.eq(0), cb_near.eq(cb_m2 == 0), kx.eq(0), ky.eq(ky + 1)]
                # What ends the next pass, by what ends this one: ``tr`` is one-hot, so an
                # AND-OR of the cases (not a chain of selects).
                cases = [
                    (tr.half, {"done": pairs_done, "pfit": ~pairs_done & kx_pair_fits,
                               "pwrap": ~pairs_done & ~kx_pair_fits}),
                    (tr.pfit | tr.pwrap, {"half": 1}),
                    (tr.cb, nonpairs_tr(cb_near, kx == k_last, ky == k_last)),
                    (tr.kx, nonpairs_tr(cb_is1, kx == k_m2, ky == k_last)),
                    (tr.ky, nonpairs_tr(cb_is1, k_is1, ky == k_m2)),
                ]
                for f in ("cb", "kx", "ky", "half", "pfit", "pwrap", "done"):
                    m.d.comb += getattr(tr_s, f).eq(
                        Cat(*[sel & v[f] for sel, v in cases if f in v]).any())
        with m.If(go):
            m.d.sync += [ky.eq(0), kx.eq(0), tap.eq(0), cb.eq(0), half.eq(0),
                         cb_near.eq(cb_m2 == 0)]
            with m.If(pairs):
                m.d.comb += [tr_n.eq(0), tr_n.half.eq(1)]
            with m.Else():
                single_tap = walk.kernel == 1
                m.d.comb += tr_n.eq(0)
                for f, v in nonpairs_tr(op.cin_blocks == 1, single_tap, single_tap).items():
                    m.d.comb += getattr(tr_n, f).eq(v)

        # ``last_read`` follows the phase it describes.
        with m.If(free_c):
            with m.If(pre_c.ph):
                m.d.sync += [phase.eq(phase + 1), first.eq(0)]
                m.d.comb += last_read_s.eq(~pairs | (phase == PH_0))
            with m.Elif(pre_c.pass_):
                m.d.sync += [first.eq(1), phase.eq(Mux(pairs, PH_K, PH_0))]
                m.d.comb += last_read_s.eq(~pairs)
            with m.Elif(pre_c.x | pre_c.y | pre_c.stop):
                m.d.sync += [first.eq(0), phase.eq(PH_0)]
                m.d.comb += last_read_s.eq(~pairs)
                with m.If(pre_c.stop):
                    m.d.comb += running_s.eq(0)
        with m.If(go):
            m.d.sync += [first.eq(1), phase.eq(PH_K)]
            m.d.comb += [running_n.eq(1), last_read_n.eq(go_last_read)]

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
            # The first read of a PAIRS pixel reserves no FIFO slot: it writes none.
            reader.issue.eq(advance & ~(pairs & (phase == PH_0))),
            self.addr.eq(Mux(second, pix_addr2, pix_addr)[:len(self.addr)]),
            reader.buf.w_data.eq(vec),
            self.acts.payload.eq(reader.buf.r_data),
            self.acts.valid.eq(reader.buf.r_valid),
            reader.buf.r_ready.eq(self.acts.ready),
        ]
        return m
