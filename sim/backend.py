"""The driver's simulation backend: cocotbext-axi as the CPU and the DDR.

:class:`CocotbBackend` gives :class:`zynqnn.driver.Driver` the top level's registers through an
``AxiLiteMaster`` on ``s_axi``, DDR through a :class:`~zynqnn.sim.ddr.SimDdr` (an ``AxiRam``) on
``m_axi`` with buffers from a bump allocator, and the ``irq`` pin, all in simulated time.
"""

from __future__ import annotations

from cocotb.triggers import First, RisingEdge, Timer
from cocotbext.axi.constants import AxiResp

from zynqnn.driver import DeviceBuffer, DriverError

__all__ = ["CocotbBackend", "BusError"]


class BusError(DriverError):
    """A register access answered SLVERR or DECERR."""


class CocotbBackend:
    """Parameters: the ``AxiLiteMaster``, the ``SimDdr``, the ``irq`` signal, and the DDR region
    ``[heap_base, heap_base + heap_bytes)`` to allocate buffers from."""

    is_async = True
    #: Poll STATUS every microsecond of simulated time at first (100 cycles at 100 MHz).
    poll_s = 1e-6

    def __init__(self, axil, ddr, irq, heap_base=0x1000_0000, heap_bytes=0x0100_0000):
        self.axil = axil
        self.ddr = ddr
        self.irq = irq
        self.heap_base = heap_base
        self.heap_end = heap_base + heap_bytes
        self._next = heap_base

    def alloc(self, nbytes, align=64):
        addr = -(-self._next // align) * align
        if addr + nbytes > self.heap_end:
            raise DriverError(f"simulated DDR heap exhausted ({nbytes} bytes)")
        self._next = addr + nbytes
        return DeviceBuffer(addr, nbytes, addr)

    async def read32(self, offset):
        resp = await self.axil.read(offset, 4)
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"register read at {offset:#x} answered {resp.resp.name}")
        return int.from_bytes(resp.data, "little")

    async def write32(self, offset, value):
        resp = await self.axil.write(offset, int(value).to_bytes(4, "little"))
        if resp.resp != AxiResp.OKAY:
            raise BusError(f"register write at {offset:#x} answered {resp.resp.name}")

    async def write_buffer(self, buf, offset, data):
        self.ddr.write(buf.address + offset, data)

    async def read_buffer(self, buf, offset, nbytes):
        return bytes(self.ddr.read(buf.address + offset, nbytes))

    async def flush(self, buf):
        pass

    async def invalidate(self, buf):
        pass

    async def wait_irq(self, timeout_s):
        if int(self.irq.value):
            return True
        timer = Timer(round(timeout_s * 1e9), unit="ns")
        fired = await First(RisingEdge(self.irq), timer)
        return fired is not timer

    async def sleep(self, seconds):
        await Timer(max(1, round(seconds * 1e9)), unit="ns")
