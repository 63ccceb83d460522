"""Clock and reset for block-level testbenches (Amaranth's ``clk`` / active-high ``rst``) and
for ``zynqnn_top`` (``aclk`` / active-low ``aresetn``, the CPU's AXI4-Lite master on ``s_axi``)."""

import logging

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

CLOCK_NS = 10


async def start(dut, cycles=3):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``cycles`` cycles."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def start_top(dut):
    """Start ``dut.aclk``, hold ``dut.aresetn`` low and return the CPU: an AXI4-Lite master on
    ``s_axi`` (cocotbext-axi)."""
    from cocotbext.axi import AxiLiteBus, AxiLiteMaster

    cocotb.start_soon(Clock(dut.aclk, CLOCK_NS, unit="ns").start())
    dut.aresetn.value = 0
    return AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.aclk, dut.aresetn,
                         reset_active_level=False)


def quiet_bus_logs(*prefixes):
    """cocotbext-axi logs every transfer at INFO: the loggers under ``prefixes`` (created once
    the bus models exist) log warnings only."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(prefixes):
            logging.getLogger(name).setLevel(logging.WARNING)


async def reset_top(dut):
    """Pulse ``dut.aresetn`` low for 5 cycles, then wait 2."""
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 5)
    dut.aresetn.value = 1
    await ClockCycles(dut.aclk, 2)
