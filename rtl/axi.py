"""AXI interfaces of the accelerator and the AXI4-Lite subordinate of its register file.

Signatures are written from the manager's side, with AXI's own member names (``awaddr``, ...), so
that a flat top-level port is ``<prefix>_<member>`` (``s_axi_awaddr``), the names Vivado infers
interfaces from (see :mod:`zynqnn.hw.platform`).
"""

from amaranth import Module, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "Resp",
    "Burst",
    "AxiLiteSignature",
    "AxiSignature",
    "AxiReadSignature",
    "AxiWriteSignature",
    "RegBusSignature",
    "AxiLiteSubordinate",
    "connect_flat",
]


class Resp(enum.IntEnum, shape=2):
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


class Burst(enum.IntEnum, shape=2):
    FIXED = 0
    INCR = 1
    WRAP = 2


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, manager's view.

    Parameters
    ----------
    addr_bits, data_bits:
        Address width and data width (32 or 64).
    """

    def __init__(self, addr_bits: int, data_bits: int = 32):
        if data_bits not in (32, 64):
            raise ValueError(f"AXI4-Lite data_bits must be one of 32, 64, not {data_bits}")
        if not 1 <= addr_bits <= 64:
            raise ValueError(f"AXI4-Lite addr_bits must be between 1 and 64, not {addr_bits}")
        self._addr_bits, self._data_bits = addr_bits, data_bits
        super().__init__({
            "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    @property
    def addr_bits(self):
        return self._addr_bits

    @property
    def data_bits(self):
        return self._data_bits

    def __eq__(self, other):
        return (isinstance(other, AxiLiteSignature) and self.addr_bits == other.addr_bits
                and self.data_bits == other.data_bits)

    def __repr__(self):
        return f"AxiLiteSignature({self.addr_bits}, {self.data_bits})"


def _axi_write_members(aw, dw, iw):
    return {
        "awid": Out(iw), "awaddr": Out(aw), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awlock": Out(1), "awcache": Out(4), "awprot": Out(3),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(dw), "wstrb": Out(dw // 8), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(iw), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


def _axi_read_members(aw, dw, iw):
    return {
        "arid": Out(iw), "araddr": Out(aw), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arlock": Out(1), "arcache": Out(4), "arprot": Out(3),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(iw), "rdata": In(dw), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    }


class _AxiBase(wiring.Signature):
    _parts = ()

    def __init__(self, addr_bits: int, data_bits: int, id_bits: int = 1):
        if data_bits not in (32, 64, 128):
            raise ValueError(f"AXI data_bits must be one of 32, 64, 128, not {data_bits}")
        if not 12 <= addr_bits <= 64:
            raise ValueError(f"AXI addr_bits must be between 12 and 64, not {addr_bits}")
        if not 1 <= id_bits <= 16:
            raise ValueError(f"AXI id_bits must be between 1 and 16, not {id_bits}")
        self._addr_bits, self._data_bits, self._id_bits = addr_bits, data_bits, id_bits
        members = {}
        for part in self._parts:
            members.update(part(addr_bits, data_bits, id_bits))
        super().__init__(members)

    @property
    def addr_bits(self):
        return self._addr_bits

    @property
    def data_bits(self):
        return self._data_bits

    @property
    def id_bits(self):
        return self._id_bits

    def __eq__(self, other):
        return (type(other) is type(self) and self.addr_bits == other.addr_bits
                and self.data_bits == other.data_bits and self.id_bits == other.id_bits)

    def __repr__(self):
        return f"{type(self).__name__}({self.addr_bits}, {self.data_bits}, {self.id_bits})"


class AxiSignature(_AxiBase):
    """AXI4 (full), manager's view; the members of :func:`zynqnn.hw.platform.top_ports`' ``m_axi``.

    Parameters
    ----------
    addr_bits, data_bits, id_bits:
        Address, data (32, 64 or 128) and transaction id widths.
    """

    _parts = (_axi_write_members, _axi_read_members)


class AxiReadSignature(_AxiBase):
    """The read half (AR, R) of :class:`AxiSignature`."""

    _parts = (_axi_read_members,)


class AxiWriteSignature(_AxiBase):
    """The write half (AW, W, B) of :class:`AxiSignature`."""

    _parts = (_axi_write_members,)


class RegBusSignature(wiring.Signature):
    """A single-cycle register bus, from the bus bridge's side.

    Members
    -------
    w_en, w_addr, w_data, w_strb: Out
        A write, for one cycle. ``w_addr`` is held from the cycle before (the register file
        decodes it into registers); ``w_ok`` says whether a register is mapped at ``w_addr``.
    r_en, r_addr: Out
        A read, for one cycle, ``r_addr`` held from the cycle before; ``r_data`` and ``r_ok``
        answer in that cycle and any read side effect happens at the clock edge that ends it.
    """

    def __init__(self, addr_bits: int, data_bits: int = 32):
        super().__init__({
            "w_en": Out(1), "w_addr": Out(addr_bits), "w_data": Out(data_bits),
            "w_strb": Out(data_bits // 8), "w_ok": In(1),
            "r_en": Out(1), "r_addr": Out(addr_bits), "r_data": In(data_bits), "r_ok": In(1),
        })


class AxiLiteSubordinate(wiring.Component):
    """AXI4-Lite subordinate that turns each transaction into a :class:`RegBusSignature` access.

    Write address and write data are accepted independently, in either order (and in the same
    cycle); the write happens the cycle after both are held (the register file decodes the
    address in between), and its response (OKAY, or SLVERR for an offset where no register is
    mapped) is registered. A read takes three cycles from the address handshake to ``rvalid``.
    One write and one read may be in progress at a time.

    Members
    -------
    axi: In(AxiLiteSignature)
        The bus from the interconnect.
    regs: Out(RegBusSignature)
        To the register file.
    """

    def __init__(self, addr_bits: int, data_bits: int = 32):
        self._addr_bits, self._data_bits = addr_bits, data_bits
        super().__init__({
            "axi": In(AxiLiteSignature(addr_bits, data_bits)),
            "regs": Out(RegBusSignature(addr_bits, data_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        axi, regs = self.axi, self.regs

        # -- writes ------------------------------------------------------------------------------
        aw_full = Signal()
        aw_addr = Signal(self._addr_bits)
        w_full = Signal()
        w_data = Signal(self._data_bits)
        w_strb = Signal(self._data_bits // 8)
        b_valid = Signal()
        b_resp = Signal(2)
        m.d.comb += [
            axi.awready.eq(~aw_full),
            axi.wready.eq(~w_full),
            axi.bvalid.eq(b_valid),
            axi.bresp.eq(b_resp),
        ]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(axi.awaddr)]
        with m.If(axi.wvalid & axi.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(axi.wdata), w_strb.eq(axi.wstrb)]
        do_write = Signal()
        w_armed = Signal()   # both held for a cycle: the register file has decoded the address
        m.d.sync += w_armed.eq(aw_full & w_full & ~b_valid & ~w_armed)
        m.d.comb += [
            do_write.eq(w_armed),
            regs.w_en.eq(do_write),
            regs.w_addr.eq(aw_addr),
            regs.w_data.eq(w_data),
            regs.w_strb.eq(w_strb),
        ]
        with m.If(do_write):
            m.d.sync += [
                aw_full.eq(0),
                w_full.eq(0),
                b_valid.eq(1),
                b_resp.eq(Resp.OKAY),
            ]
            with m.If(~regs.w_ok):
                m.d.sync += b_resp.eq(Resp.SLVERR)
        with m.Elif(b_valid & axi.bready):
            m.d.sync += b_valid.eq(0)

        # -- reads -------------------------------------------------------------------------------
        ar_full = Signal()
        ar_addr = Signal(self._addr_bits)
        r_valid = Signal()
        r_data = Signal(self._data_bits)
        r_resp = Signal(2)
        r_armed = Signal()   # the address held for a cycle: decoded
        m.d.sync += r_armed.eq(ar_full & ~r_armed)
        m.d.comb += [
            axi.arready.eq(~ar_full & ~r_valid),
            axi.rvalid.eq(r_valid),
            axi.rdata.eq(r_data),
            axi.rresp.eq(r_resp),
            regs.r_en.eq(r_armed),
            regs.r_addr.eq(ar_addr),
        ]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(axi.araddr)]
        with m.If(r_armed):
            m.d.sync += [
                ar_full.eq(0),
                r_valid.eq(1),
                r_data.eq(regs.r_data),
                r_resp.eq(Resp.OKAY),
            ]
            with m.If(~regs.r_ok):
                m.d.sync += [r_resp.eq(Resp.SLVERR), r_data.eq(0)]
        with m.Elif(r_valid & axi.rready):
            m.d.sync += r_valid.eq(0)
        return m


def connect_flat(m: Module, prefix: str, flat, iface):
    """Connect ``iface`` (an interface object) to members ``<prefix>_<name>`` of ``flat``.

    ``flat`` is a component with flat top-level ports (Vivado's naming); each member of
    ``iface`` is driven from, or drives, the flat port of the same name according to its flow.
    """
    for name, member in iface.signature.members.items():
        port = getattr(flat, f"{prefix}_{name}")
        inner = getattr(iface, name)
        if member.flow == In:
            m.d.comb += inner.eq(port)
        else:
            m.d.comb += port.eq(inner)
