"""The depthwise FIR: sums the PE rows' tap products into 3x3 windows (``isa.Mode.DW``).

In the depthwise mode PE row ``r`` holds channel ``r``'s nine tap weights (``w[t]``, ``t = ky * 3
+ kx``) and multiplies each input pixel of the walk (``isa.dw_walk``: the padded window span in
raster order, ``width`` pixels per line) by all nine. A window's sum needs products of nine
different pixels, so the row's products go through a transposed FIR: partial sums ``s_t`` move
one pixel per tap along a kernel row and one line (``width - 2`` pixels more) between kernel rows::

    s_0(n) = w[0] x(n)
    s_t(n) = s_{t-1}(n - 1) + w[t] x(n)              t = 1, 2, 4, 5, 7, 8
    s_t(n) = s_{t-1}(n - (width - 2)) + w[t] x(n)    t = 3, 6   (the line delays)

so ``s_8(n)`` is the window whose bottom-right pixel is ``n``. It is an output when that pixel
is at walk position (x, y) with x, y >= 2 and, at stride 2, x and y even. Every register moves
only when a product arrives (``i_valid``), so gaps in the stream cost time, not correctness.

A padding line or column carries only zero products, so in ``DW`` mode the engine skips the
walk's first line when it is the top padding (``skip_top``) and each line's first pixel when it
is the left padding (``skip_left``); positions count from the unskipped walk. The a-slot values
read on the first walked line are taken as zero (the skipped line's row-0 sums; on an unskipped
walk those reads only reach windows above the first output row), and on the first pixel of a
line ``s_0 = 0`` and ``s_3``, ``s_6`` take the line values read one event earlier (the skipped
pixel's). ``DW_PAIRS`` walks whole: a zero-point pair ``zp_in (w_0 + w_1)`` can saturate int16,
so its padding is not zero.

The two line delays of every row share one simple dual-port memory (``max_width`` deep, BRAM)
written with ``s_2`` and ``s_5`` as they are produced and read ``width - 2`` writes later; the
read is issued a cycle ahead (sync read) and is transparent for ``width = 3``.

With ``pairs`` (``isa.Mode.DW_PAIRS``, fbgemm's int16 tap pairs) the first product vector of a
command is the zero-point vector: it sets each row's bounds ``lo_m = -2^15 - kz_m``, ``hi_m =
2^15 - 1 - kz_m`` (``kz_m = P_2m + P_2m+1``) and moves nothing. A pair's two products must meet
before they join the window sum, so the FIR carries them apart: ``s_1`` is the clamped pair 0;
the line memory takes ``s_1`` and ``P_2`` (not their sum) and row 1 adds ``clamp(P_2 + P_3)``;
``s_4`` and ``s_6`` hold ``P_4`` and ``P_6`` while ``u`` and ``v`` carry the sums, so ``s_5 = u
+ clamp(P_4 + P_5)`` and ``s_7 = v + clamp(P_6 + P_7)``; ``s_8`` adds ``P_8`` alone.
"""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig

from .pe_array import dw_products_layout

__all__ = ["DepthwiseFIR", "dw_line_depth"]


def dw_line_depth(cfg: HwConfig) -> int:
    """Longest line delay (``width - 2`` pixels) the FIR holds."""
    return cfg.max_width


class DepthwiseFIR(wiring.Component):
    """Per-row transposed FIR over the depthwise PE products.

    Members
    -------
    i_products, i_valid: In
        The array's ``dw_products`` and ``dw_valid``.
    start: In(1)
        Pulse before a command's first product: restart the walk position.
    width: In
        Walked pixels per line (``isa.dw_walk(out_w, stride)`` less ``skip_left``), 3 ..
        ``dw_line_depth + 2``.
    skip_top, skip_left: In(1)
        The walk skips its first line / each line's first pixel (zero padding; not with
        ``pairs``).
    stride2: In(1)
        The command's stride is 2 (every other window is an output).
    pairs: In(1)
        ``DW_PAIRS`` (configs with :attr:`HwConfig.dw_pairs`): the first product vector after
        ``start`` sets the pair bounds.
    o_sums, o_valid: Out
        Window sums of the ``rows`` channels at accumulator width, one vector per output pixel in
        raster order, one cycle after the product of its bottom-right pixel.
    """

    def __init__(self, cfg: HwConfig):
        if cfg.dw_kernel != 3:
            raise ValueError(f"DepthwiseFIR: the config has no depthwise mode (rows = {cfg.rows},"
                             f" cols = {cfg.cols}; it needs rows == cols >= 9)")
        self._cfg = cfg
        self._depth = dw_line_depth(cfg)
        super().__init__({
            "i_products": In(dw_products_layout(cfg)),
            "i_valid": In(1),
            "start": In(1),
            "width": In(range(self._depth + 3)),
            "skip_top": In(1),
            "skip_left": In(1),
            "stride2": In(1),
            "pairs": In(1),
            "o_sums": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.rows)),
            "o_valid": Out(1),
        })

    def _taps(self, prod):
        """A PE row's nine products from its product registers."""
        if self._cfg.dsp_packing:
            # Packed as w_hi * 2^16 + w_lo: lo is the low field, hi the upper one plus the
            # borrow the low field took (as in the array's column sums).
            out = []
            for p in prod:
                out += [p[:16].as_signed(), p[16:32].as_signed() + p[15]]
            return out[:9]
        return [prod[t] for t in range(9)]

    def elaborate(self, platform):
        cfg = self._cfg
        R = cfg.rows
        m = Module()
        field = 16 if cfg.dsp_packing else len(self.i_products[0][0])
        bits = [field + t.bit_length() for t in range(9)]  # s_t sums t + 1 products
        PB = 18  # a clamped pair: |2^15 + kz| < 2^17 (kz = zp x two int8 weights)
        if cfg.dw_pairs:
            # s_1, s_2: one clamped pair; s_3: two; s_5, s_7, s_8: up to four and P_8.
            bits = [max(b, p) for b, p in zip(bits, [field, PB, PB, PB + 1, 0, PB + 2, 0,
                                                     PB + 2, PB + 2], strict=True)]
        pm = self.pairs if cfg.dw_pairs else 0

        def pair(x, lo, hi):
            """``x`` clamped to a pair's bounds in pairs mode."""
            return x if lo is None else Mux(pm & (x < lo), lo, Mux(pm & (x > hi), hi, x))

        # The zero-point vector (pairs) sets the bounds and is not part of the walk.
        k_pending = Signal()
        with m.If(self.start):
            m.d.sync += k_pending.eq(1)
        with m.Elif(self.i_valid):
            m.d.sync += k_pending.eq(0)
        kcap = Signal()
        ev = Signal()
        m.d.comb += [kcap.eq(self.i_valid & k_pending & pm), ev.eq(self.i_valid & ~kcap)]

        depth = 1 << (self._depth - 1).bit_length()
        slots = [bits[2], field if cfg.dw_pairs else 0, bits[5]]  # s_2 (or s_1), P_2, s_5
        line_bits = sum(slots)
        m.submodules.line = line = memory.Memory(shape=unsigned(R * line_bits), depth=depth,
                                                 init=[])
        wr = line.write_port()
        rd = line.read_port(transparent_for=(wr,))
        wp = Signal(range(depth))
        with m.If(ev):
            m.d.sync += wp.eq(wp + 1)
        # The entry written width - 2 events before the next one.
        m.d.comb += [rd.en.eq(1), rd.addr.eq(wp + ev - (self.width - 2))]

        # Walk position of the arriving pixel (walked x, y from 0); the window it completes is an
        # output at unskipped x, y >= 2 (every other one at stride 2).
        x = Signal(range(self._depth + 3))
        y = Signal(16)
        with m.If(self.start):
            m.d.sync += [x.eq(0), y.eq(0)]
        with m.Elif(ev):
            with m.If(x + 1 == self.width):
                m.d.sync += [x.eq(0), y.eq(y + 1)]
            with m.Else():
                m.d.sync += x.eq(x + 1)
        first_line = Signal()
        line_start = Signal()
        m.d.comb += [first_line.eq(y == 0), line_start.eq(self.skip_left & (x == 0))]

        line_in = []
        for r in range(R):
            p = self._taps(self.i_products[r])
            s = [Signal(signed(bits[t]), name=f"fir_r{r}_s{t}") for t in range(9)]
            old = rd.data.word_select(r, line_bits)
            a_raw = old[:slots[0]].as_signed()
            b_raw = old[slots[0]:slots[0] + slots[1]].as_signed()
            c_raw = old[slots[0] + slots[1]:].as_signed()
            if cfg.dw_pairs:
                lo = [Signal(signed(PB), name=f"fir_r{r}_lo{i}") for i in range(4)]
                hi = [Signal(signed(PB), name=f"fir_r{r}_hi{i}") for i in range(4)]
                u = Signal(signed(bits[3]), name=f"fir_r{r}_u")
                v = Signal(signed(bits[5]), name=f"fir_r{r}_v")
                with m.If(kcap):
                    for i in range(4):
                        kz = p[2 * i] + p[2 * i + 1]
                        m.d.sync += [lo[i].eq(-(2 ** 15) - kz), hi[i].eq(2 ** 15 - 1 - kz)]
            else:
                u = v = 0
                lo = hi = [None] * 4
            # The previous event's line values: the skipped pixel's, at a line's first pixel
            # (the first line's: zero).
            a_prev = Signal(signed(slots[0]), name=f"fir_r{r}_a_prev")
            c_prev = Signal(signed(slots[2]), name=f"fir_r{r}_c_prev")
            with m.If(self.start):
                m.d.sync += a_prev.eq(0)
            with m.Elif(ev):
                m.d.sync += [a_prev.eq(a_raw), c_prev.eq(c_raw)]
            # Row 0 of the first walked line's windows: the skipped padding line (zero). The row
            # 2 values read there only reach windows above the first output row.
            a_d = Mux(first_line, 0, a_raw)
            b_d = b_raw
            c_d = c_raw
            # What the skipped left pixel would have left in s_0, s_3, s_6 (DW only).
            s0 = Mux(line_start, 0, s[0])
            s3 = Mux(line_start, a_prev, s[3])
            s6 = Mux(line_start, c_prev, s[6])
            nxt = [
                p[0],
                pair(s0 + p[1], lo[0], hi[0]),
                s[1] + p[2],
                a_d + pair(Mux(pm, b_d, 0) + p[3], lo[1], hi[1]),
                Mux(pm, 0, s3) + p[4],
                Mux(pm, u, 0) + pair(s[4] + p[5], lo[2], hi[2]),
                Mux(pm, 0, c_d) + p[6],
                Mux(pm, v, 0) + pair(s6 + p[7], lo[3], hi[3]),
                s[7] + p[8],
            ]
            with m.If(ev):
                m.d.sync += [s[t].eq(nxt[t]) for t in range(9)]
                if cfg.dw_pairs:
                    m.d.sync += [u.eq(s[3]), v.eq(c_d)]
            # pairs: row 1 adds clamp(P_2 + P_3) to the clamped pair 0, so the line keeps both.
            a_in = Mux(pm, s[1], nxt[2]) if cfg.dw_pairs else nxt[2]
            fields = [a_in.as_signed()[:slots[0]]]
            if cfg.dw_pairs:
                fields.append(p[2].as_signed()[:slots[1]])
            fields.append(nxt[5].as_signed()[:slots[2]])
            line_in.append(Cat(*fields))
            m.d.sync += self.o_sums[r].eq(s[8])  # one register after s_8 for routing to ABUF
        m.d.comb += [wr.en.eq(ev), wr.addr.eq(wp), wr.data.eq(Cat(*line_in))]

        ux = Signal(range(self._depth + 4))
        uy = Signal(17)
        m.d.comb += [ux.eq(x + self.skip_left), uy.eq(y + self.skip_top)]
        out = Signal()
        m.d.sync += out.eq(ev & (ux >= 2) & (uy >= 2) & ~(self.stride2 & (ux[0] | uy[0])))
        # s_8 is registered on the event; o_sums one cycle later.
        m.d.sync += self.o_valid.eq(out)
        return m

