"""The register file, generated from the register map in :mod:`zynqnn.hw.regs`.

Each register of the map becomes members of :class:`RegFile` by its access mode (names are the
register's name in lower case, payloads ``data.StructLayout`` views of its fields):

* ``RW``: ``Out(layout)``, the stored value;
* ``WO``: ``Out(layout)``, high for one cycle with the written bits;
* ``W1C``: ``In(layout)`` ``<name>_set`` (the hardware sets bits) and ``Out(layout)`` ``<name>``;
* ``RO`` driven by the hardware: ``In(layout)``;
* ``RO`` constant: no member (the value comes from the :class:`~zynqnn.hw.config.HwConfig`);
* a 64-bit counter ``<C>_LO`` / ``<C>_HI``: one ``In(64)`` member ``<c>``.
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw import platform
from zynqnn.hw.config import HwConfig
from zynqnn.hw.regs import REGMAP, Access, Register, RegisterMap

from .axi import RegBusSignature

__all__ = ["RegFile", "reg_layout"]


def reg_layout(reg: Register) -> data.StructLayout:
    """The register's fields as a 32-bit struct (gaps as ``_rsvd<lsb>`` members)."""
    members = {}
    pos = 0
    for f in sorted(reg.fields, key=lambda f: f.lsb):
        if f.lsb > pos:
            members[f"_rsvd{pos}"] = unsigned(f.lsb - pos)
        members[f.name] = unsigned(f.width)
        pos = f.msb + 1
    if pos < 32:
        members[f"_rsvd{pos}"] = unsigned(32 - pos)
    return data.StructLayout(members)


class RegFile(wiring.Component):
    """Registers of ``regmap`` (default :data:`zynqnn.hw.regs.REGMAP`) behind a register bus.

    Members
    -------
    bus: In(RegBusSignature)
        From :class:`~zynqnn.rtl.axi.AxiLiteSubordinate`.
    (one or two members per register, see the module documentation)
    """

    def __init__(self, cfg: HwConfig, regmap: RegisterMap = REGMAP):
        self._cfg = cfg
        self._regmap = regmap
        members = {"bus": In(RegBusSignature(platform.S_AXI_ADDR_BITS,
                                             platform.S_AXI_DATA_BITS))}
        for reg in regmap:
            name = reg.name.lower()
            if reg.counter is not None:
                if reg.half == 0:
                    members[reg.counter.lower()] = In(64)
            elif reg.access in (Access.RW, Access.WO):
                members[name] = Out(reg_layout(reg))
            elif reg.access is Access.W1C:
                members[f"{name}_set"] = In(reg_layout(reg))
                members[name] = Out(reg_layout(reg))
            elif reg.hw_driven:
                members[name] = In(reg_layout(reg))
        super().__init__(members)

    @property
    def cfg(self):
        return self._cfg

    @property
    def regmap(self):
        return self._regmap

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        w_word = bus.w_addr[2:]
        r_word = bus.r_addr[2:]

        strb_mask = Signal(32)
        for i in range(4):
            m.d.comb += strb_mask[8 * i:8 * i + 8].eq(bus.w_strb[i].replicate(8))
        w_bits = Signal(32)
        m.d.comb += w_bits.eq(bus.w_data & strb_mask)

        read_cases = {}  # word index -> value read
        hi_latch = {}    # counter name -> latched upper half
        r_sels = {}      # word index -> its registered read select
        for reg in self._regmap:
            idx = reg.offset >> 2
            name = reg.name.lower()
            # The addresses are held a cycle before the access: decoded into registers, the
            # selects leave one LUT before the writes and an AND-OR for the read data.
            w_sel = Signal(name=f"{name}_w_sel")
            r_sel = Signal(name=f"{name}_r_sel")
            m.d.sync += [w_sel.eq(w_word == idx), r_sel.eq(r_word == idx)]
            r_sels[idx] = r_sel
            hit_w = Signal(name=f"{name}_w_hit")
            hit_r = Signal(name=f"{name}_r_hit")
            m.d.comb += [
                hit_w.eq(bus.w_en & w_sel),
                hit_r.eq(bus.r_en & r_sel),
            ]
            if reg.counter is not None:
                counter = getattr(self, reg.counter.lower())
                if reg.half == 0:
                    hi = Signal(32, name=f"{reg.counter.lower()}_hi_latch")
                    with m.If(hit_r):
                        m.d.sync += hi.eq(counter[32:])
                    hi_latch[reg.counter] = hi
                    read_cases[idx] = counter[:32]
                else:
                    read_cases[idx] = hi_latch[reg.counter]
            elif reg.access is Access.RW:
                value = getattr(self, name)
                store = Signal(32, name=f"{name}_q", init=reg.reset)
                used = sum(f.mask for f in reg.fields)   # reserved bits read 0
                m.d.comb += value.as_value().eq(store)
                with m.If(hit_w):
                    m.d.sync += store.eq(((store & ~strb_mask) | w_bits) & used)
                read_cases[idx] = store
            elif reg.access is Access.WO:
                pulse = getattr(self, name)
                q = Signal(32, name=f"{name}_pulse")
                m.d.sync += q.eq(0)
                with m.If(hit_w):
                    m.d.sync += q.eq(w_bits)
                m.d.comb += pulse.as_value().eq(q)
                read_cases[idx] = Const(0, 32)
            elif reg.access is Access.W1C:
                value = getattr(self, name)
                setter = getattr(self, f"{name}_set")
                store = Signal(32, name=f"{name}_q", init=reg.reset)
                clear = Signal(32, name=f"{name}_clear")
                m.d.comb += [
                    clear.eq(hit_w.replicate(32) & w_bits),
                    value.as_value().eq(store),
                ]
                m.d.sync += store.eq((store & ~clear) | setter.as_value())
                read_cases[idx] = store
            elif reg.hw_driven:
                read_cases[idx] = getattr(self, name).as_value()
            else:
                read_cases[idx] = Const(reg.const_value(self._cfg), 32)

        # Write: OKAY for any mapped register (RO ones ignore the data).
        w_ok = Signal()
        r_ok = Signal()
        m.d.sync += [
            w_ok.eq(Cat(w_word == idx for idx in read_cases).any()),
            r_ok.eq(Cat(r_word == idx for idx in read_cases).any()),
        ]
        m.d.comb += [
            bus.w_ok.eq(w_ok),
            bus.r_ok.eq(r_ok),
            bus.r_data.eq(_or(Mux(r_sels[idx], value, 0) for idx, value in read_cases.items())),
        ]
        return m


def _or(values):
    """The OR of ``values`` (a balanced tree)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]
