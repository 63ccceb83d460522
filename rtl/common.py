"""Building blocks shared by the accelerator's pipelines."""

from amaranth import Elaboratable, Module, Shape, Signal
from amaranth.lib import fifo

__all__ = ["CreditBuffer", "replica"]


def replica(m: Module, value, name: str) -> Signal:
    """A register holding ``value`` of the previous cycle, like ``reg.eq(value)``, but loaded
    only when the two differ. The enable reads the register's own output, so Yosys cannot merge
    copies of one value into one flip-flop (its opt_merge merges flip-flops whose inputs are
    equal; a ``keep`` attribute on the signal does not stop it). Costs one LUT per copy: the way
    to split a high-fanout enable or select into copies of at most ~128 sinks each."""
    reg = Signal.like(value, name=name)
    with m.If(reg != value):
        m.d.sync += reg.eq(value)
    return reg


class CreditBuffer(Elaboratable):
    """Output FIFO for a pipeline that never stalls.

    Long pipelines (the PE array, the requantizer) run without a clock enable: stalling a few
    hundred registers on a ``ready`` that arrives late in the cycle would not close timing at
    150 MHz. Instead every accepted input reserves a FIFO slot ("credit") and the input is only
    ready while a slot is free, so a result always has room when it leaves the pipeline.

    Parameters
    ----------
    shape:
        Shape of one result.
    depth:
        FIFO depth; full throughput needs ``depth >= latency + 2``.

    Members
    -------
    accept: in
        The pipeline accepted an input this cycle (reserves a credit).
    can_accept: out
        A credit is free: the pipeline may accept an input.
    w_data, w_en: in
        The pipeline's result and its valid, ``latency`` cycles after ``accept``.
    r_data, r_valid, r_ready:
        The output stream.
    """

    def __init__(self, shape, depth, copies=1):
        self.shape = shape
        self.depth = depth
        self.accept = Signal()
        self.can_accept = Signal()
        #: ``can_accept`` and its register copies, for a producer whose enables fan out wide.
        self.can_accept_copies = [self.can_accept] + [
            Signal(name=f"can_accept_{i}") for i in range(1, copies)]
        self.w_data = Signal(shape)
        self.w_en = Signal()
        self.r_data = Signal(shape)
        self.r_valid = Signal()
        self.r_ready = Signal()

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(self.shape).width
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=width, depth=self.depth)
        outstanding = Signal(range(self.depth + 1))
        pop = Signal()
        # ``can_accept`` is a register (the next cycle's ``outstanding < depth``, computed a
        # cycle early): it gates a producer's whole update, so it must not start with a compare.
        free = Signal(init=1)
        next_outstanding = outstanding + self.accept - pop
        m.d.comb += [
            buf.w_data.eq(self.w_data),
            buf.w_en.eq(self.w_en),
            self.r_data.eq(buf.r_data),
            self.r_valid.eq(buf.r_rdy),
            buf.r_en.eq(self.r_ready),
            pop.eq(buf.r_rdy & self.r_ready),
            self.can_accept.eq(free),
        ]
        m.d.sync += [outstanding.eq(next_outstanding), free.eq(next_outstanding < self.depth)]
        # The copies change only with ``outstanding``: written so, each one's next state reads
        # its own output, and Yosys does not merge them back into one.
        for i, copy in enumerate(self.can_accept_copies[1:]):
            copy_free = Signal(init=1, name=f"free_{i + 1}")
            with m.If(self.accept | pop):
                m.d.sync += copy_free.eq(next_outstanding < self.depth)
            m.d.comb += copy.eq(copy_free)
        return m
