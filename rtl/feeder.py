"""The weight feeder: a command's weight tiles from WBUF into the PE array, in pass order."""

from amaranth import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig

from .buffers import MemoryReader
from .pe_array import weight_row_layout

__all__ = ["WeightFeeder"]


class WeightFeeder(wiring.Component):
    """Reads ``count`` consecutive WBUF words from ``base`` into the array's weight stream.

    Members
    -------
    start: In(1)
        Pulse: load ``base`` and ``count`` (``passes x rows`` words; 0 for a bypass command).
    base, count: In
    addr: Out, data: In
        The WBUF read port's address and the word read from it a cycle later.
    weights: Out(stream)
        Weight tile rows, to ``PEArray.weights``.
    """

    def __init__(self, cfg: HwConfig):
        self._cfg = cfg
        abits = Shape.cast(range(cfg.weight_buffer_depth)).width
        super().__init__({
            "start": In(1),
            "base": In(16),
            "count": In(24),
            "addr": Out(abits + 1),
            "data": In(cfg.out_word_bits),
            "weights": Out(stream.Signature(weight_row_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        reader = MemoryReader(m, "w_reader", weight_row_layout(self._cfg))
        left = Signal(24)                 # words still to read
        with m.If(self.start):
            m.d.sync += [self.addr.eq(self.base), left.eq(self.count)]
        with m.Elif(reader.issue):
            m.d.sync += [self.addr.eq(self.addr + 1), left.eq(left - 1)]
        m.d.comb += [
            reader.issue.eq((left != 0) & reader.can_issue),
            reader.buf.w_data.eq(self.data),
            self.weights.payload.eq(reader.buf.r_data),
            self.weights.valid.eq(reader.buf.r_valid),
            reader.buf.r_ready.eq(self.weights.ready),
        ]
        return m
