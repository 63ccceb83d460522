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
read is issued a cycle ahead (sync read), and a read of the entry being written takes it from a
register (per row) instead.

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

from .common import replica
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
        raster order, :attr:`latency` cycles after the product of its bottom-right pixel.
    """

    def __init__(self, cfg: HwConfig):
        if cfg.dw_kernel != 3:
            raise ValueError(f"DepthwiseFIR: the config has no depthwise mode (rows = {cfg.rows},"
                             f" cols = {cfg.cols}; it needs rows == cols >= 9)")
        self._cfg = cfg
        self._depth = dw_line_depth(cfg)
        self._pre = 3 if cfg.dw_pairs else 1   # pre-stages before the FIR (see elaborate)
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

    @property
    def latency(self) -> int:
        """Cycles from a product vector (``i_valid``) to the window sum it completes
        (``o_valid``): the pre-stages, the FIR's s_8 register, the output register."""
        return self._pre + 2

    def elaborate(self, platform):
        cfg = self._cfg
        R = cfg.rows
        m = Module()
        field = 16 if cfg.dsp_packing else len(self.i_products[0][0])
        bits = [field + t.bit_length() for t in range(9)]  # s_t sums t + 1 products
        PB = 18  # a clamped pair: |2^15 + kz| < 2^17 (kz = zp x two int8 weights)
        if cfg.dw_pairs:
            # s_1, s_2: one clamped pair; s_3 (before the clamp): a pair; s_5, s_7, s_8: up to
            # four and P_8.
            bits = [max(b, p) for b, p in zip(bits, [field, PB, PB, field + 1, 0, PB + 2, 0,
                                                     PB + 2, PB + 2], strict=True)]
        pairs = cfg.dw_pairs

        # Pre-stages (no enables): the products arrive from the DSP48E1s' M registers and are
        # registered (T) before any sum. In pairs builds two more stages form the pairs that
        # need no line value, q_0 = clamp(P_0' + P_1), q_2 = clamp(P_4' + P_5), q_3 =
        # clamp(P_6' + P_7) (P' of the previous walk event): the sums (U), then the clamps (V).
        # Control flags that reach every row are copied per row or half row, each copy a
        # register that survives Yosys' opt_merge (common.replica): no net drives more than
        # ~128 sinks.
        t_valid = Signal()                # the T registers hold a vector
        m.d.sync += t_valid.eq(self.i_valid)
        k_pending = Signal()              # the next vector is the zero-point vector (pairs)
        with m.If(self.start):
            m.d.sync += k_pending.eq(1)
        with m.Elif(t_valid):
            m.d.sync += k_pending.eq(0)
        kcap_t = Signal()                 # ... it is in T: it sets the bounds, moves nothing
        walk_t = Signal()                 # a walk vector is in T
        m.d.comb += [kcap_t.eq(t_valid & k_pending & self.pairs if pairs else 0),
                     walk_t.eq(t_valid & ~kcap_t)]
        if pairs:
            kcap_u = Signal()
            walk_u = Signal()
            walk_v = Signal()
            m.d.sync += [kcap_u.eq(kcap_t), walk_u.eq(walk_t), walk_v.eq(walk_u)]
            ev = walk_v                   # the FIR moves (control copy)
            before_ev = walk_u            # ... next cycle
        else:
            ev = walk_t
            before_ev = self.i_valid

        depth = 1 << (self._depth - 1).bit_length()
        slots = [bits[2], field if pairs else 0, bits[5]]  # s_2 (or s_1), P_2, s_5
        line_bits = sum(slots)
        m.submodules.line = line = memory.Memory(shape=unsigned(R * line_bits), depth=depth,
                                                 init=[])
        wr = line.write_port()
        # Not transparent: a read of the entry being written takes the written value from a
        # register instead, selected per row (a transparent port's one select would drive all
        # R * line_bits bits).
        rd = line.read_port()
        wp = Signal(range(depth))
        with m.If(ev):
            m.d.sync += wp.eq(wp + 1)
        # The entry written width - 2 events before the next one: rp = wp - (width - 2), kept
        # in step with wp (re-derived in every cycle without an event; a command's first
        # product comes many cycles after its width is set). An event's entry is written a
        # cycle after it, from registers: at width 3 the next event may need it in that cycle,
        # so it is forwarded from those registers (``forward``).
        back = Signal(range(self._depth + 1))
        rp = Signal.like(wp)
        m.d.sync += [back.eq(self.width - 2), rp.eq(Mux(ev, rp + 1, wp - back))]
        m.d.comb += [rd.en.eq(1), rd.addr.eq(rp + ev)]
        wr_en = Signal()
        wr_addr = Signal.like(wp)
        m.d.sync += [wr_en.eq(ev), wr_addr.eq(wp)]
        # This cycle's read (address rp + ev) is of the entry being written: both compares
        # (rp == wr_addr, rp + 1 == wr_addr) registered a cycle ahead from rp's and wr_addr's
        # next values, then ev picks one. (``ev`` from a copy of its own: ``walk_v`` drives
        # the whole FIR's moves.)
        aw = len(wp)
        rd_eq0, rd_eq1 = Signal(), Signal()
        m.d.sync += [rd_eq0.eq(Mux(ev, (rp + 1)[:aw] == wp, back == 0)),
                     rd_eq1.eq(Mux(ev, (rp + 2)[:aw] == wp, back == 1))]
        ev_c = replica(m, before_ev, "fir_ev_collide") if pairs else ev
        collide = Signal()
        m.d.comb += collide.eq(wr_en & Mux(ev_c, rd_eq1, rd_eq0))
        width3 = Signal()
        m.d.sync += width3.eq(self.width == 3)

        # Walk position of the arriving pixel (walked x, y from 0); the window it completes is an
        # output at unskipped x, y >= 2 (every other one at stride 2).
        x = Signal(range(self._depth + 3))
        y = Signal(16)
        line_end = Signal()               # x + 1 == width, kept a pixel ahead (width >= 3)
        with m.If(self.start):
            m.d.sync += [x.eq(0), y.eq(0), line_end.eq(0)]
        with m.Elif(ev):
            with m.If(line_end):
                m.d.sync += [x.eq(0), y.eq(y + 1), line_end.eq(0)]
            with m.Else():
                m.d.sync += [x.eq(x + 1), line_end.eq(x + 2 == self.width)]
        # The arriving pixel is on the first walked line / the first of its line: flags kept a
        # cycle ahead (their next values), so the per-row copies hold them in step.
        at_first_line = Signal()
        at_line_start = Signal()
        first_line_next = Mux(self.start, 1, Mux(ev & line_end, 0, at_first_line))
        line_start_next = Mux(self.start, 1, Mux(ev, line_end, at_line_start))
        m.d.sync += [at_first_line.eq(first_line_next), at_line_start.eq(line_start_next)]

        def clamp(x, lo, hi):
            return Mux(x < lo, lo, Mux(x > hi, hi, x))

        line_in = []
        for r in range(R):
            # Per-row copies of the mode (per half row: each drives ~60 selects), the moves
            # (one copy per three partial sums, one for the line values held: at most ~100
            # enables each), the line flags and the width-3 forward.
            pm_h = ([replica(m, self.pairs, f"fir_r{r}_pairs{h}") for h in range(2)]
                    if pairs else [0, 0])
            ev_h = [replica(m, before_ev, f"fir_r{r}_ev{h}") for h in range(4)]
            first_line = replica(m, first_line_next, f"fir_r{r}_first_line")
            line_start = replica(m, self.skip_left & line_start_next, f"fir_r{r}_line_start")
            forward = replica(m, width3 & ev, f"fir_r{r}_forward")

            p = self._taps(self.i_products[r])
            tap = [Signal(signed(len(p[t])), name=f"fir_r{r}_t{t}") for t in range(9)]
            m.d.sync += [tap[t].eq(p[t]) for t in range(9)]
            if pairs:
                # The bounds, from the zero-point vector: kz_m = P_2m + P_2m+1 (U), lo_m =
                # -2^15 - kz_m, hi_m = 2^15 - 1 - kz_m (loaded a cycle later, before the first
                # walk vector's clamp in V).
                kcap_h = [replica(m, kcap_t, f"fir_r{r}_kcap{h}") for h in range(2)]
                lo = [Signal(signed(PB), name=f"fir_r{r}_lo{i}") for i in range(4)]
                hi = [Signal(signed(PB), name=f"fir_r{r}_hi{i}") for i in range(4)]
                for i in range(4):
                    kz = Signal(signed(field + 1), name=f"fir_r{r}_kz{i}")
                    m.d.sync += kz.eq(tap[2 * i] + tap[2 * i + 1])
                    with m.If(kcap_h[i // 2]):
                        m.d.sync += [lo[i].eq(-(2 ** 15) - kz), hi[i].eq(2 ** 15 - 1 - kz)]
                # P_0, P_4, P_6 of the previous walk vector (T), the pair sums (U), the clamped
                # pairs (V); the taps move along.
                walk_r = replica(m, self.i_valid, f"fir_r{r}_walk") & ~(k_pending & pm_h[0])
                prev = {}
                for t in (0, 4, 6):
                    prev[t] = Signal(signed(field), name=f"fir_r{r}_prev{t}")
                    with m.If(walk_r):
                        m.d.sync += prev[t].eq(tap[t])
                tap_u = [Signal.like(tap[t], name=f"fir_r{r}_u{t}") for t in range(9)]
                tap_v = [Signal.like(tap[t], name=f"fir_r{r}_v{t}") for t in range(9)]
                m.d.sync += [tap_u[t].eq(tap[t]) for t in range(9)]
                m.d.sync += [tap_v[t].eq(tap_u[t]) for t in range(9)]
                q = {}
                for t, i in ((0, 0), (4, 2), (6, 3)):
                    pair_sum = Signal(signed(field + 1), name=f"fir_r{r}_pair{t}{t + 1}")
                    m.d.sync += pair_sum.eq(prev[t] + tap[t + 1])
                    q[i] = Signal(signed(PB), name=f"fir_r{r}_q{i}")
                    m.d.sync += q[i].eq(clamp(pair_sum, lo[i], hi[i]))
                p = tap_v
            else:
                p = tap

            s = [Signal(signed(bits[t]), name=f"fir_r{r}_s{t}") for t in range(9)]
            # This row's entry of the last event, written this cycle (forwarded at width 3).
            a_line = Signal(signed(slots[0]), name=f"fir_r{r}_a_line")
            b_line = Signal(signed(max(slots[1], 1)), name=f"fir_r{r}_b_line")
            held = Signal(line_bits, name=f"fir_r{r}_held")    # the entry written last cycle
            old = Mux(replica(m, collide, f"fir_r{r}_collide"), held,
                      rd.data.word_select(r, line_bits))
            a_raw = Mux(forward, a_line, old[:slots[0]].as_signed())
            b_raw = (Mux(forward, b_line, old[slots[0]:slots[0] + slots[1]].as_signed())
                     if pairs else 0)
            c_raw = Mux(forward, s[5], old[slots[0] + slots[1]:].as_signed())
            # The previous event's line values: the skipped pixel's, at a line's first pixel
            # (the first line's: zero).
            a_prev = Signal(signed(slots[0]), name=f"fir_r{r}_a_prev")
            c_prev = Signal(signed(slots[2]), name=f"fir_r{r}_c_prev")
            with m.If(self.start):
                m.d.sync += a_prev.eq(0)
            with m.Elif(ev_h[3]):
                m.d.sync += [a_prev.eq(a_raw), c_prev.eq(c_raw)]
            # Row 0 of the first walked line's windows: the skipped padding line (zero). The row
            # 2 values read there only reach windows above the first output row.
            a_d = Mux(first_line, 0, a_raw)
            c_d = c_raw
            # What the skipped left pixel would have left in s_0, s_3, s_6 (DW only).
            s0 = Mux(line_start, 0, s[0])
            s3 = Mux(line_start, a_prev, s[3])
            s6 = Mux(line_start, c_prev, s[6])
            if pairs:
                pm, pm1 = pm_h
                # s_3 holds the pair P_2 (read from the line) + P_3 before its clamp, a_hold the
                # line's s_1 beside it; u = a_hold + clamp(s_3), the clamp picking one of three
                # sums, so that no path has two carry chains.
                a_hold = Signal(signed(slots[0]), name=f"fir_r{r}_a_hold")
                u = Signal(signed(bits[3] + 1), name=f"fir_r{r}_u")
                v = Signal(signed(bits[5]), name=f"fir_r{r}_v")
                with m.If(ev_h[3]):
                    m.d.sync += [
                        a_hold.eq(a_d),
                        u.eq(Mux(s[3] < lo[1], a_hold + lo[1],
                                 Mux(s[3] > hi[1], a_hold + hi[1], a_hold + s[3]))),
                        v.eq(c_d),
                    ]
                nxt = [
                    p[0],
                    Mux(pm, 0, s0) + Mux(pm, q[0], p[1]),
                    s[1] + p[2],
                    Mux(pm, b_raw, a_d) + p[3],
                    Mux(pm, 0, s3) + p[4],
                    Mux(pm1, u, s[4]) + Mux(pm1, q[2], p[5]),
                    Mux(pm1, 0, c_d) + p[6],
                    Mux(pm1, v, s6) + Mux(pm1, q[3], p[7]),
                    s[7] + p[8],
                ]
            else:
                pm = 0
                nxt = [
                    p[0],
                    s0 + p[1],
                    s[1] + p[2],
                    a_d + p[3],
                    s3 + p[4],
                    s[4] + p[5],
                    c_d + p[6],
                    s6 + p[7],
                    s[7] + p[8],
                ]
            for t in range(9):
                with m.If(ev_h[t // 3]):
                    m.d.sync += s[t].eq(nxt[t])
            # pairs: row 1 adds clamp(P_2 + P_3) to the clamped pair 0, so the line keeps both.
            # The entry is registered every cycle and written the cycle after its event.
            m.d.sync += a_line.eq(Mux(pm, s[1], nxt[2]) if pairs else nxt[2])
            fields = [a_line]
            if pairs:
                m.d.sync += b_line.eq(p[2])
                fields.append(b_line)
            fields.append(s[5])
            line_in.append(Cat(*fields))
            m.d.sync += held.eq(Cat(*fields))
            m.d.sync += self.o_sums[r].eq(s[8])  # one register after s_8 for routing to ABUF
        m.d.comb += [wr.en.eq(wr_en), wr.addr.eq(wr_addr), wr.data.eq(Cat(*line_in))]

        ux = Signal(range(self._depth + 4))
        uy = Signal(17)
        m.d.comb += [ux.eq(x + self.skip_left), uy.eq(y + self.skip_top)]
        out = Signal()
        m.d.sync += out.eq(ev & (ux >= 2) & (uy >= 2) & ~(self.stride2 & (ux[0] | uy[0])))
        # s_8 is registered on the event; o_sums one cycle later.
        m.d.sync += self.o_valid.eq(out)
        return m
