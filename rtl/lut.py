"""The table-lookup lanes of the element-wise pass: ``o = table[code]`` for a 256-entry table.

An ``ELTWISE`` command with ``lut`` set (:data:`zynqnn.hw.isa.EltwiseOp`) maps every input code
through a per-layer table of 256 output codes (a unary activation: tanh, sigmoid, hardswish,
...; for an 8-bit input code every framework's result is a function of the code, so the table
is exact when the front end fills it with the framework's own arithmetic). The engine feeds
:class:`EltwiseLUT` from the same lane groups as the adder (``add_lanes`` codes per cycle):
first the table, ``256 / cols`` WBUF words whose codes are the entries in order (``fill``),
then the input codes from IBUF.

The table sits in block RAM: each pair of lanes shares one memory of 256 x 8 bits with one
read-write port per lane (a RAMB18 in true dual-port mode, ``ram_style = "block"``). While
``fill`` is high, lane ``n`` of the ``k``-th transfer writes its ``b`` code at entry
``k * lanes + n`` (entries past 255 are dropped); otherwise lane ``n`` reads entry ``a[n] mod
256`` (the code's byte: an int8 code ``c`` reads entry ``c & 0xFF``).

Stages (``LATENCY`` = 3): 1 the port's address, write enable and data registered; 2 the block
RAM's synchronous read; 3 the output register. ``i.ready`` is always high and ``o`` has no
backpressure: the reader must take ``o`` whenever it is valid (the engine's output assembly
does). ``fill`` must not change while transfers are in flight.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw.config import HwConfig

from .eltwise import eltwise_in_layout, eltwise_out_layout

__all__ = ["EltwiseLUT", "lut_in_layout", "TABLE_ENTRIES"]

TABLE_ENTRIES = 256


def lut_in_layout(cfg: HwConfig, lanes: int) -> data.StructLayout:
    lay = eltwise_in_layout(cfg, lanes)
    return data.StructLayout({"a": lay, "b": lay})


class EltwiseLUT(wiring.Component):
    """``lanes`` table lookups per cycle (see the module docstring).

    Members
    -------
    i: In(stream)
        ``a``: codes to look up; ``b``: table entries (with ``fill``).
    fill: In(1)
        Transfers write the table instead of reading it; low resets the entry counter.
    o: Out(stream)
        ``lanes`` output codes (the entries' bytes, zero-extended); no backpressure.
    """

    LATENCY = 3

    def __init__(self, cfg: HwConfig, lanes: int | None = None):
        self._cfg = cfg
        self._lanes = cfg.add_lanes if lanes is None else lanes
        if not isinstance(self._lanes, int) or self._lanes < 1:
            raise ValueError(f"EltwiseLUT: lanes must be an int >= 1, not {self._lanes!r}")
        super().__init__({
            "i": In(stream.Signature(lut_in_layout(cfg, self._lanes))),
            "fill": In(1),
            "o": Out(stream.Signature(eltwise_out_layout(cfg, self._lanes))),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        take = Signal()
        m.d.comb += [self.i.ready.eq(1), take.eq(self.i.valid)]
        # the next entry to write (9 bits: 256 means the table is full)
        nxt = Signal(range(TABLE_ENTRIES + lanes + 1))
        with m.If(~self.fill):
            m.d.sync += nxt.eq(0)
        with m.Elif(take):
            m.d.sync += nxt.eq(nxt + lanes)
        # stage 1: the ports' address, write enable and data
        v1 = Signal()
        m.d.sync += v1.eq(take & ~self.fill)
        addr = [Signal(8, name=f"addr{n}") for n in range(lanes)]
        we = [Signal(name=f"we{n}") for n in range(lanes)]
        wd = [Signal(8, name=f"wd{n}") for n in range(lanes)]
        for n in range(lanes):
            entry = nxt + n
            code = Value.cast(self.i.payload.a[n])[:8]
            m.d.sync += [
                addr[n].eq(Mux(self.fill, entry[:8], code)),
                we[n].eq(take & self.fill & (entry < TABLE_ENTRIES)),
                wd[n].eq(Value.cast(self.i.payload.b[n])[:8]),
            ]
        # stage 2: one block RAM per pair of lanes, a read-write port per lane
        rd = []
        for k in range(0, lanes, 2):
            mem = memory.Memory(shape=unsigned(8), depth=TABLE_ENTRIES, init=[],
                                attrs={"ram_style": "block"})
            m.submodules[f"table{k // 2}"] = mem
            for n in range(k, min(k + 2, lanes)):
                wp = mem.write_port()
                rp = mem.read_port()
                m.d.comb += [wp.addr.eq(addr[n]), wp.data.eq(wd[n]), wp.en.eq(we[n]),
                             rp.addr.eq(addr[n]), rp.en.eq(1)]
                rd.append(rp.data)
        v2 = Signal()
        m.d.sync += v2.eq(v1)
        # stage 3: the output register
        out = Signal(eltwise_out_layout(self._cfg, lanes))
        v3 = Signal()
        m.d.sync += v3.eq(v2)
        for n in range(lanes):
            m.d.sync += out[n].eq(rd[n])
        m.d.comb += [self.o.payload.eq(out), self.o.valid.eq(v3)]
        return m

