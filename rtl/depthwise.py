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

The two line delays of every row share one simple dual-port memory (``max_width`` deep, BRAM)
written with ``s_2`` and ``s_5`` as they are produced and read ``width - 2`` writes later; the
read is issued a cycle ahead (sync read) and is transparent for ``width = 3``.
"""

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.config import HwConfig

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
        Walk pixels per line (``isa.dw_walk(out_w, stride)``), 3 .. ``dw_line_depth + 2``.
    stride2: In(1)
        The command's stride is 2 (every other window is an output).
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
            "stride2": In(1),
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

        ev = self.i_valid
        depth = 1 << (self._depth - 1).bit_length()
        line_bits = bits[2] + bits[5]
        m.submodules.line = line = memory.Memory(shape=unsigned(R * line_bits), depth=depth,
                                                 init=[])
        wr = line.write_port()
        rd = line.read_port(transparent_for=(wr,))
        wp = Signal(range(depth))
        with m.If(ev):
            m.d.sync += wp.eq(wp + 1)
        # The entry written width - 2 events before the next one.
        m.d.comb += [rd.en.eq(1), rd.addr.eq(wp + ev - (self.width - 2))]

        line_in = []
        for r in range(R):
            p = self._taps(self.i_products[r])
            s = [Signal(signed(bits[t]), name=f"fir_r{r}_s{t}") for t in range(9)]
            old = rd.data.word_select(r, line_bits)
            delayed = {3: old[:bits[2]].as_signed(), 6: old[bits[2]:].as_signed()}
            nxt = []
            for t in range(9):
                if t == 0:
                    nxt.append(p[0])
                else:
                    nxt.append(delayed.get(t, s[t - 1]) + p[t])
            with m.If(ev):
                m.d.sync += [s[t].eq(nxt[t]) for t in range(9)]
            line_in.append(Cat(nxt[2].as_signed()[:bits[2]], nxt[5].as_signed()[:bits[5]]))
            m.d.sync += self.o_sums[r].eq(s[8])  # one register after s_8 for routing to ABUF
        m.d.comb += [wr.en.eq(ev), wr.addr.eq(wp), wr.data.eq(Cat(*line_in))]

        # Walk position of the arriving pixel; the window it completes is an output at x, y >= 2
        # (every other one at stride 2).
        x = Signal(range(self._depth + 3))
        y = Signal(16)
        with m.If(self.start):
            m.d.sync += [x.eq(0), y.eq(0)]
        with m.Elif(ev):
            with m.If(x + 1 == self.width):
                m.d.sync += [x.eq(0), y.eq(y + 1)]
            with m.Else():
                m.d.sync += x.eq(x + 1)
        out = Signal()
        m.d.sync += out.eq(ev & (x >= 2) & (y >= 2) & ~(self.stride2 & (x[0] | y[0])))
        # s_8 is registered on the event; o_sums one cycle later.
        m.d.sync += self.o_valid.eq(out)
        return m

