"""The DDR of the SoC tests: cocotbext-axi's ``AxiRam`` with random latency and error injection.

:class:`SimDdr` is an ``AxiRam`` (a sparse 4 GB memory behind an AXI4 subordinate) whose read
and write halves

* wait a random number of cycles before a beat (``latency``: probability per beat and largest
  delay), on top of the random pauses a test sets on each channel with ``set_pause``;
* answer SLVERR or DECERR for beats inside the regions registered with :meth:`inject`;
* count the bursts and beats they served.

cocotbext-axi answers a failing beat with SLVERR; for a DECERR region the response of that beat
(read) or burst (write) is rewritten to DECERR on its way to the channel.
"""

from __future__ import annotations

import random
from itertools import cycle

from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiBus, AxiRam
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.constants import AxiResp

__all__ = ["SimDdr", "pause_pattern"]


class _Injected(Exception):
    pass


class _Faults:
    def __init__(self, ddr: SimDdr):
        self.ddr = ddr
        self.pending = None

    async def before(self, address, length):
        ddr = self.ddr
        prob, most = ddr.latency
        if most and ddr.rng.random() < prob:
            await ClockCycles(ddr.clock, ddr.rng.randint(1, most))
        for lo, hi, resp in ddr.regions:
            if address < hi and lo < address + length:
                self.pending = resp
                raise _Injected(f"{resp.name} injected at {address:#x}")


class _Read(AxiRamRead):
    def __init__(self, ddr, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = _Faults(ddr)
        send = self.r_channel.send

        async def send_with_resp(r):
            if self.faults.pending is not None:
                r.rresp = self.faults.pending
                self.faults.pending = None
            if r.rlast:
                ddr.read_bursts += 1
            ddr.read_beats += 1
            await send(r)

        self.r_channel.send = send_with_resp

    async def _read(self, address, length):
        await self.faults.before(address, length)
        return await super()._read(address, length)


class _Write(AxiRamWrite):
    def __init__(self, ddr, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = _Faults(ddr)
        self.burst_resp = None
        send = self.b_channel.send

        async def send_with_resp(b):
            if self.burst_resp is not None:
                b.bresp = self.burst_resp
                self.burst_resp = None
            ddr.write_bursts += 1
            await send(b)

        self.b_channel.send = send_with_resp

    async def _write(self, address, data):
        self.faults.pending = None
        try:
            await self.faults.before(address, len(data))
        except _Injected:
            self.burst_resp = self.faults.pending
            raise
        self.faults.ddr.write_beats += 1
        return await super()._write(address, data)


class SimDdr(AxiRam):
    """DDR for ``dut``'s manager port ``prefix`` (``m_axi``).

    Parameters
    ----------
    latency:
        ``(probability, most)``: before a beat, with this probability, wait 1..``most`` cycles.
    seed:
        Seed of the latency draws.
    """

    def __init__(self, dut, prefix, clock, reset, size=2**32, latency=(0.0, 0), seed=0):
        self.rng = random.Random(seed)
        self.latency = latency
        self.regions: list[tuple[int, int, AxiResp]] = []
        self.read_bursts = self.read_beats = self.write_bursts = self.write_beats = 0
        self.clock = clock
        bus = AxiBus.from_prefix(dut, prefix)
        # AxiRam's constructor would build plain halves: initialise its memory part directly
        # and build ours on that memory.
        self.write_if = self.read_if = None
        super(AxiRam, self).__init__(size=size)
        self.write_if = _Write(self, bus.write, clock, reset, False, mem=self.mem)
        self.read_if = _Read(self, bus.read, clock, reset, False, mem=self.mem)

    def inject(self, lo: int, hi: int, resp: AxiResp):
        """Answer ``resp`` for every beat touching ``[lo, hi)``."""
        self.regions.append((lo, hi, AxiResp(resp)))

    def clear_faults(self):
        self.regions.clear()

    def channels(self):
        """The five channel models (AR, R, AW, W, B), for pause generators."""
        return {
            "ar": self.read_if.ar_channel, "r": self.read_if.r_channel,
            "aw": self.write_if.aw_channel, "w": self.write_if.w_channel,
            "b": self.write_if.b_channel,
        }

    def set_pause(self, rng: random.Random | None, prob: float = 0.3):
        """Random pauses (probability ``prob`` per cycle) on every channel, or none."""
        for ch in self.channels().values():
            ch.set_pause_generator(None if rng is None else pause_pattern(rng, prob))
            if rng is None:
                ch.pause = False


def pause_pattern(rng: random.Random, prob: float, length: int = 4093):
    """An endless pause pattern: True (pause) with probability ``prob``."""
    return cycle([rng.random() < prob for _ in range(length)])
