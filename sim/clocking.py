"""Clock and reset for block-level testbenches (Amaranth's ``clk`` / active-high ``rst``)."""

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
