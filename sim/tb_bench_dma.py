"""DMA throughput of the SoC shell (run by ``scripts/bench_dma.py``).

Measures a large LOAD (DDR -> the buffer with the widest words, whole bank) and a large STORE
(OBUF -> DDR) on the manager port: bytes moved per cycle from the first address handshake of
the transfer to its last data beat (read) or write response (write), against the bus's
``axi_data_bits / 8`` bytes per cycle.

Knobs: ``TB_PRESSURE`` (probability of a pause per cycle on every AXI channel, and random DDR
latency when non-zero), ``TB_REPORT`` (JSON output file).
"""

import json
import os
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from zynqnn.hw import isa
from zynqnn.hw.geometry import buffer_depth, buffer_word_bits, line_beats
from zynqnn.sim.model import Program
from zynqnn.sim.tb_soc import SocTb

B = isa.Buffer


class _Span:
    """First and last cycle of the manager port's activity in an address range."""

    def __init__(self, dut, lo, hi, write):
        self.dut, self.lo, self.hi, self.write = dut, lo, hi, write
        self.first = self.last = None
        self.beats = 0
        self.cycle = 0
        self.task = cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        open_bursts = 0
        while True:
            await RisingEdge(d.aclk)
            await ReadOnly()
            self.cycle += 1
            if self.write:
                if int(d.m_axi_awvalid.value) and int(d.m_axi_awready.value):
                    if self.lo <= int(d.m_axi_awaddr.value) < self.hi:
                        self.first = self.first if self.first is not None else self.cycle
                        open_bursts += 1
                if int(d.m_axi_wvalid.value) and int(d.m_axi_wready.value):
                    self.beats += 1
                if int(d.m_axi_bvalid.value) and int(d.m_axi_bready.value) and open_bursts:
                    open_bursts -= 1
                    self.last = self.cycle
            else:
                if int(d.m_axi_arvalid.value) and int(d.m_axi_arready.value):
                    if self.lo <= int(d.m_axi_araddr.value) < self.hi:
                        self.first = self.first if self.first is not None else self.cycle
                        open_bursts += 1
                if int(d.m_axi_rvalid.value) and int(d.m_axi_rready.value) and open_bursts:
                    self.beats += 1
                    self.last = self.cycle
                    if int(d.m_axi_rlast.value):
                        open_bursts -= 1

    def result(self, bb):
        self.task.cancel()
        cycles = self.last - self.first + 1
        return {"bytes": self.beats * bb, "cycles": cycles,
                "bytes_per_cycle": self.beats * bb / cycles}


@cocotb.test()
async def bench(dut):
    pressure = float(os.environ.get("TB_PRESSURE", "0"))
    tb = SocTb(dut, latency=(0.05, 8) if pressure else (0.0, 0), seed=11)
    await tb.reset()
    if pressure:
        tb.ddr.set_pause(random.Random(12), pressure)
    cfg, bb = tb.cfg, tb.bb
    report = {"config": cfg.config_id, "pressure": pressure, "peak_bytes_per_cycle": bb}

    # -- read: the widest-word buffer's whole bank, 16 lines ------------------------------------
    buf = max((B.IBUF, B.WBUF, B.PBUF),
              key=lambda b: (min(buffer_word_bits(cfg, b), cfg.axi_data_bits),
                             buffer_depth(cfg, b) * buffer_word_bits(cfg, b)))
    words = buffer_depth(cfg, buf)
    lines = 16
    lw = words // lines
    line_bytes = line_beats(cfg, buf, lw) * bb
    src = tb.drv.alloc(line_bytes * lines)
    tb.fill(src, random.Random(1))
    span = _Span(dut, src.address, src.end, write=False)
    prog = Program().load(buf, 0, 0, lw, lines, src.address, line_bytes).end()
    out, cycles, _ = await tb.run(prog, timeout_s=20e-3, compare=False)
    assert out.status == "done", out
    report["read"] = {"buffer": buf.name, **span.result(bb), "run_cycles": cycles}

    # -- write: a whole OBUF bank -----------------------------------------------------------------
    n = buffer_depth(cfg, B.OBUF)
    in_lb = line_beats(cfg, B.IBUF, n) * bb
    out_lb = line_beats(cfg, B.OBUF, n // lines) * bb
    isrc = tb.drv.alloc(in_lb)
    dst = tb.drv.alloc(out_lb * lines)
    tb.fill(isrc, random.Random(2))
    ib = isa.bank_bit(B.IBUF, 0)
    prog = (Program().load(B.IBUF, 0, 0, n, 1, isrc.address)
            .compute(needs=ib, releases=ib, count=n)
            .store(0, 0, n // lines, lines, dst.address, out_lb).end())
    span = _Span(dut, dst.address, dst.end, write=True)
    out, cycles, _ = await tb.run(prog, timeout_s=20e-3, compare=False)
    assert out.status == "done", out
    report["write"] = {"buffer": "OBUF", **span.result(bb)}
    dut._log.info("%s", report)
    path = os.environ.get("TB_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(report, f)
