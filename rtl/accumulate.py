"""The accumulator: adds each pass's sums into the MAC stage's ABUF bank.

A command's sums arrive as one vector per walked pixel and pass (from the PE array, the
depthwise FIR, or in the bypass modes the window vectors themselves). The first pass writes its
pixel's accumulator (unless the command continues a partial sum, ``acc_cont``), later passes add
(MAXPOOL: take the larger); SUMPOOL sums every pixel into accumulator 0.

ABUF is two memories (``cols x acc_bits`` per output pixel), one per bank: the MAC stage fills
one while the post stage drains the other (``drain``: the post stage owns its bank until it is
done, even after the MAC stage has moved on to that bank number).

A vector's result is computed two cycles after it is taken, so that no path has more than one
LUT level and one carry chain after a register or the memory's output:

* **take**: the vector is registered; its accumulator's read is issued.
* **in**: PAIRS clamps the sums (below); the memory's word arrives and is registered.
* **wr**: ``old`` op ``sums`` is computed into a register and written back in the next cycle.
  The read missed the results of the three cycles before: the value comes from the newest of them
  that hit the same accumulator (``source``: address compares made a stage ahead, registered).

PAIRS (fbgemm's saturating tap pairs): each pass's first vector is the zero-point sums ``kz``;
its pixels then add ``sat16(s + kz) - kz = clamp(s, -2^15 - kz, 2^15 - 1 - kz)``, bounds kept
per column.
"""

from amaranth import Array, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig

from .buffers import BankedBuffer
from .common import replica
from .decode import mode_layout

__all__ = ["Accumulator"]

#: Selects drive at most this many sum bits (the design rules' fanout bound, with margin).
GROUP_BITS = 32


class Accumulator(wiring.Component):
    """Members
    -------
    start: In(1)
        Pulse before a command's first vector (``op``, ``mode``, ``passes``, ``pixels`` hold).
    sums: In(stream)
        The command's vectors in walk order (always ready).
    bank: In(1)
        The bank the MAC stage fills.
    drain, drain_bank, drain_addr: In; drain_data: Out
        The post stage's read port: while ``drain``, bank ``drain_bank`` is read at
        ``drain_addr``; the word is on ``drain_data`` a cycle later.
    written: Out(1)
        An accumulator's new value was computed this cycle (:attr:`LATENCY` cycles after its
        vector was taken; it is in the memory for reads issued from the next cycle on);
        ``done`` (with it): the command's last.
    """

    #: Cycles from a vector taken to its accumulator written.
    LATENCY = 2

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        word = data.ArrayLayout(signed(cfg.acc_bits), cfg.cols)
        abits = Shape.cast(range(cfg.acc_buffer_depth)).width
        super().__init__({
            "start": In(1),
            "op": In(isa.ConvOp),
            "mode": In(mode_layout),
            "passes": In(16),
            "pixels": In(24),
            "sums": In(stream.Signature(word)),
            "bank": In(1),
            "drain": In(1),
            "drain_bank": In(1),
            "drain_addr": In(abits),
            "drain_data": Out(word),
            "written": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        C = cfg.cols
        m = Module()
        op, mode = self.op, self.mode
        word = data.ArrayLayout(signed(cfg.acc_bits), C)
        abits = len(self.drain_addr)
        # Column groups: each has its own copy of the selects that reach every sum bit.
        per = max(1, GROUP_BITS // cfg.acc_bits)
        groups = [range(g, min(g + per, C)) for g in range(0, C, per)]

        # -- in: walk position of the taken vector --------------------------------------------
        pixel = Signal(24)                # the next vector's accumulator
        npass = Signal(16)                # ... and pass
        m.d.comb += self.sums.ready.eq(1)
        take = self.sums.valid
        kz_next = Signal()                # the next vector is a PAIRS pass's zero-point sums
        kz_take = Signal()
        m.d.comb += kz_take.eq(take & kz_next)
        # Limits as registers (loaded every cycle; the first vector comes cycles after start),
        # and "last" flags kept a vector ahead: the take's decisions are flags, not compares.
        pixels_m2 = Signal(24)
        passes_m1 = Signal(16)
        one_pixel = Signal()
        m.d.sync += [pixels_m2.eq(self.pixels - 2), passes_m1.eq(self.passes - 1),
                     one_pixel.eq(self.pixels == 1)]
        pixel_last = Signal()             # pixel + 1 == pixels
        pass_last = Signal()              # npass + 1 == passes
        m.d.comb += pass_last.eq(npass == passes_m1)
        with m.If(self.start):
            m.d.sync += [pixel.eq(0), npass.eq(0), kz_next.eq(mode.pairs),
                         pixel_last.eq(self.pixels == 1)]
        with m.Elif(kz_take):
            m.d.sync += kz_next.eq(0)
        with m.Elif(take):
            with m.If(pixel_last):
                m.d.sync += [pixel.eq(0), npass.eq(npass + 1), kz_next.eq(mode.pairs),
                             pixel_last.eq(one_pixel)]
            with m.Else():
                m.d.sync += [pixel.eq(pixel + 1), pixel_last.eq(pixel == pixels_m2)]
        addr = Signal(abits)              # the taken vector's accumulator
        m.d.comb += addr.eq(Mux(mode.sumpool, 0, pixel))

        # The stages' vector, its accumulator, flags: in (the cycle after the take), then wr
        # (the write).
        in_sum = Signal(word)
        in_kz = Signal()
        wr_sum = Signal(word)
        in_valid, wr_valid = Signal(), Signal()
        in_addr, wr_addr = Signal(abits), Signal(abits)
        in_first, in_last, wr_last = Signal(), Signal(), Signal()
        m.d.sync += [
            in_sum.eq(self.sums.payload), in_kz.eq(kz_take),
            in_valid.eq(take & ~kz_next), in_addr.eq(addr),
            in_first.eq((npass == 0) & (~mode.sumpool | (pixel == 0)) & ~op.acc_cont),
            in_last.eq(pass_last & pixel_last),
            wr_valid.eq(in_valid), wr_addr.eq(in_addr), wr_last.eq(in_last),
        ]
        # A result is written to the memory a cycle after it is computed, from its register
        # (new_d1). The read issued with the take misses the writes of that cycle and the next
        # two, i.e. the results computed in the three cycles before the vector's own: the wr
        # stage takes the newest of them that hit the same accumulator. The choice is made a
        # stage ahead from address compares and registered, one copy per column group:
        # ``source`` 0 the memory word, 1..3 the result of 1..3 cycles before.
        mem_valid, mem_addr = Signal(), Signal(abits)     # the result being written
        mem_bank = Signal()               # ... to the bank of its command
        m.d.sync += [mem_valid.eq(wr_valid), mem_addr.eq(wr_addr), mem_bank.eq(self.bank)]
        hit3_in = Signal()                # at the take: the result being written
        hit2_in = Signal()                # ... the result computed
        m.d.sync += [hit3_in.eq(mem_valid & (mem_addr == addr)),
                     hit2_in.eq(wr_valid & (wr_addr == addr))]
        hit1 = wr_valid & (wr_addr == in_addr)
        source_next = Mux(hit1, 1, Mux(hit2_in, 2, Mux(hit3_in, 3, 0)))

        # -- in: PAIRS clamp; the memory word arrives -----------------------------------------
        sat_lo = Signal(word)
        sat_hi = Signal(word)
        pairs_g = [replica(m, mode.pairs, f"pairs_g{g}") for g in range(len(groups))]
        for g, cols in enumerate(groups):
            for c in cols:
                sc = in_sum[c]
                with m.If(in_kz):
                    m.d.sync += [sat_lo[c].eq(-(2 ** 15) - sc), sat_hi[c].eq(2 ** 15 - 1 - sc)]
                pm = pairs_g[g]
                m.d.sync += wr_sum[c].eq(Mux(pm & (sc < sat_lo[c]), sat_lo[c],
                                             Mux(pm & (sc > sat_hi[c]), sat_hi[c], sc)))

        new = Signal(word)
        new_d1 = Signal(word)             # the results of the last three cycles
        new_d2 = Signal(word)
        new_d3 = Signal(word)
        m.d.sync += [new_d1.eq(new), new_d2.eq(new_d1), new_d3.eq(new_d2)]
        banks = []
        for k in range(2):
            m.submodules[f"abuf{k}"] = buf = BankedBuffer(cfg.acc_buffer_depth, word.size,
                                                          banks=1)
            banks.append(buf)
            drain = self.drain & (self.drain_bank == k)
            m.d.comb += [
                buf.r.en.eq(1),
                buf.r.bank.eq(0),
                buf.r.addr.eq(Mux(drain, self.drain_addr, addr)),
                buf.w.bank.eq(0),
                buf.w.addr.eq(mem_addr),
                buf.w.data.eq(new_d1),
                buf.w.en.eq((mem_bank == k) & mem_valid),
            ]
        m.d.comb += self.drain_data.eq(Mux(self.drain_bank, banks[1].r.data, banks[0].r.data))
        mem_word = Signal(word)           # the accumulator's word, read with the take
        m.d.sync += mem_word.eq(Mux(self.bank, banks[1].r.data, banks[0].r.data))

        # -- wr: old op sums, written back ----------------------------------------------------
        for g, cols in enumerate(groups):
            source = replica(m, source_next, f"source_g{g}")
            first = replica(m, in_first, f"first_g{g}")
            maxpool = replica(m, op.mode == isa.Mode.MAXPOOL, f"maxpool_g{g}")
            for c in cols:
                old = Array([mem_word[c], new_d1[c], new_d2[c], new_d3[c]])[source]
                s = wr_sum[c]
                m.d.comb += new[c].eq(Mux(first, s, Mux(maxpool, Mux(s > old, s, old),
                                                        old + s)))
        m.d.comb += [self.written.eq(wr_valid), self.done.eq(wr_valid & wr_last)]
        return m
