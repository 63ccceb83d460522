"""On-chip buffers: banked memories with one write and one read port, and a streaming reader.

Every buffer has two banks (double buffering): the DMA fills one bank while the engine reads the
other. A bank is addressed as ``{bank, addr}`` in one memory, so each buffer is one block RAM
array with independent write and read ports (the BRAM's two ports).
"""

from amaranth import Module, Shape, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .common import CreditBuffer

__all__ = ["WritePort", "ReadPort", "BankedBuffer", "MemoryReader"]


class WritePort(wiring.Signature):
    """A buffer write port, from the writer's side: ``en`` writes ``data`` at ``{bank, addr}``.
    With ``chunks > 1``, ``mask`` selects which of the word's equal chunks are written."""

    def __init__(self, addr_bits: int, data_bits: int, chunks: int = 1):
        members = {
            "en": Out(1),
            "bank": Out(1),
            "addr": Out(addr_bits),
            "data": Out(data_bits),
        }
        if chunks > 1:
            members["mask"] = Out(chunks)
        super().__init__(members)


class ReadPort(wiring.Signature):
    """A buffer read port, from the reader's side: ``data`` is the word at the ``{bank, addr}``
    presented with ``en`` one cycle earlier (the buffer's ``latency`` cycles earlier)."""

    def __init__(self, addr_bits: int, data_bits: int):
        super().__init__({
            "en": Out(1),
            "bank": Out(1),
            "addr": Out(addr_bits),
            "data": In(data_bits),
        })


class BankedBuffer(wiring.Component):
    """``banks`` (2, or 1 for a single-buffered memory) banks of ``depth`` words of ``width``
    bits.

    ``latency = 2`` puts a register after the read port (the block RAM's output register, or
    flip-flops beside it): the word arrives a cycle later, but the RAM's 2.45 ns clock-to-out
    no longer starts the reader's logic (0.88 ns with the output register).

    Members
    -------
    w: In(WritePort)
    r: In(ReadPort)
    """

    def __init__(self, depth: int, width: int, granularity: int | None = None, banks: int = 2,
                 latency: int = 1):
        assert banks in (1, 2) and latency in (1, 2)
        self._depth, self._width, self._banks = depth, width, banks
        self.latency = latency
        self._gran = width if granularity is None else granularity
        assert width % self._gran == 0
        abits = Shape.cast(range(depth)).width
        super().__init__({
            "w": In(WritePort(abits, width, width // self._gran)),
            "r": In(ReadPort(abits, width)),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        abits = Shape.cast(range(self._depth)).width
        m.submodules.mem = mem = memory.Memory(
            shape=unsigned(self._width), depth=self._depth if self._banks == 1 else 2 << abits,
            init=[])
        wp = mem.write_port(granularity=self._gran)
        rp = mem.read_port()
        m.d.comb += [
            wp.addr.eq(self.w.addr if self._banks == 1 else (self.w.bank << abits) | self.w.addr),
            wp.data.eq(self.w.data),
            wp.en.eq(self.w.mask & self.w.en.replicate(self._width // self._gran)
                     if self._gran != self._width else self.w.en),
            rp.addr.eq(self.r.addr if self._banks == 1 else (self.r.bank << abits) | self.r.addr),
            rp.en.eq(self.r.en),
        ]
        if self.latency == 2:
            data_q = Signal(self._width, reset_less=True)
            m.d.sync += data_q.eq(rp.data)
            m.d.comb += self.r.data.eq(data_q)
        else:
            m.d.comb += self.r.data.eq(rp.data)
        return m


class MemoryReader:
    """Turns a one-per-cycle address sequence into a data stream with backpressure.

    The address side may issue (``issue``) whenever ``can_issue``; the word read arrives
    ``latency`` cycles later (the buffer's) and goes into a small FIFO whose free slots were
    reserved at issue time, so the read pipeline itself never stalls (see
    :class:`~zynqnn.rtl.common.CreditBuffer`).
    """

    def __init__(self, m: Module, name: str, shape, depth: int | None = None, copies: int = 1,
                 latency: int = 1):
        # A read per cycle keeps latency + 3 credits out: the read, the FIFO write, its buffered
        # output register, the pop.
        depth = latency + 3 if depth is None else depth
        self.buf = CreditBuffer(shape, depth, copies)
        m.submodules[name] = self.buf
        self.issue = self.buf.accept
        self.can_issue = self.buf.can_accept
        self.can_issue_copies = self.buf.can_accept_copies
        issued = self.issue
        for i in range(latency):
            issued_d = Signal(name=f"{name}_issued_d{i + 1}")
            m.d.sync += issued_d.eq(issued)
            issued = issued_d
        self.issued = issued
        m.d.comb += self.buf.w_en.eq(self.issued)
