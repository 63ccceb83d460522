"""The accelerator's top level, :data:`zynqnn.hw.platform.TOP_NAME`.

Exactly the ports of :func:`zynqnn.hw.platform.top_ports`, flat and named for Vivado's interface
inference: ``aclk``, active-low ``aresetn`` (synchronous to ``aclk``, as ``proc_sys_reset``
gives it), the register port ``s_axi_*``, the DDR port ``m_axi_*`` and ``irq``.

Inside: the AXI4-Lite subordinate and the register file generated from :mod:`zynqnn.hw.regs`, the
command processor with its DMA (:mod:`zynqnn.rtl.cmdproc`) and the compute engine passed to the
constructor (:mod:`zynqnn.rtl.compute` defines its interface). ``irq`` is registered:
``|(IRQ_STATUS & IRQ_ENABLE)``.
"""

from amaranth import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from zynqnn.hw import platform
from zynqnn.hw.config import HwConfig

from .axi import AxiLiteSubordinate, connect_flat
from .cmdproc import CommandProcessor
from .compute import check_engine
from .regfile import RegFile

__all__ = ["Top"]


class Top(wiring.Component):
    """The accelerator for ``cfg``.

    Parameters
    ----------
    cfg:
        The hardware configuration.
    engine:
        A ``wiring.Component`` with signature ``ComputeSignature(cfg).flip()``, or ``None``: no
        compute unit (LOAD and STORE work, loaded words are dropped, stored words read as zero,
        CONV and ELTWISE stop with BAD_COMPUTE).
    """

    def __init__(self, cfg: HwConfig, engine=None):
        if engine is not None:
            check_engine(engine, cfg)
        self._cfg = cfg
        self._engine = engine
        members = {}
        for port in platform.top_ports(cfg):
            members[port.name] = (In if port.direction == "input" else Out)(port.width)
        super().__init__(members)

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform_):
        m = Module()
        cfg = self._cfg
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.aclk), cd.rst.eq(~self.aresetn)]

        m.submodules.axil = axil = AxiLiteSubordinate(platform.S_AXI_ADDR_BITS,
                                                      platform.S_AXI_DATA_BITS)
        m.submodules.regs = regs = RegFile(cfg)
        m.submodules.core = core = CommandProcessor(cfg, has_engine=self._engine is not None)
        connect_flat(m, "s_axi", self, axil.axi)
        connect_flat(m, "m_axi", self, core.m_axi)
        wiring.connect(m, axil.regs, regs.bus)

        m.d.comb += [
            core.start.eq(regs.control.start),
            core.soft_reset.eq(regs.control.soft_reset),
            core.cmd_base.eq(regs.cmd_base.addr),
            core.cmd_count.eq(regs.cmd_count.count),
            core.window_base.eq(regs.window_base.addr),
            core.window_limit.eq(regs.window_limit.addr),
            core.watchdog.eq(regs.watchdog.cycles),
            regs.status.busy.eq(core.busy),
            regs.status.done.eq(core.done),
            regs.status.error.eq(core.error),
            regs.status.cause.eq(core.cause),
            regs.status.cmd_index.eq(core.cmd_index),
            regs.irq_status_set.done.eq(core.done_event),
            regs.irq_status_set.error.eq(core.error_event),
        ]
        for name in regs.regmap.counters:
            m.d.comb += getattr(regs, name.lower()).eq(getattr(core, name.lower()))
        m.d.sync += self.irq.eq((regs.irq_status.as_value() & regs.irq_enable.as_value()).any())

        if self._engine is not None:
            m.submodules.engine = self._engine
            wiring.connect(m, core.compute, self._engine)
        return m
