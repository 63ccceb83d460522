"""cocotb side of :func:`zynqnn.sim.program_runner.run_program`.

Reads the job from the work directory named by ``ZYNQNN_PROGRAM_DIR`` (``job.json``: addresses
and sizes; ``job.npz``: the program image segments and every input's DDR bytes), loads the image
into the simulated DDR once, and for each input: fills the output tensor with a poison pattern,
writes the input, runs the commands through the driver (:class:`zynqnn.driver.Driver` over
:class:`~zynqnn.sim.backend.CocotbBackend`), reads the output bytes back and checks that the run
left the program image alone. Writes ``result.npz`` (raw output bytes and busy cycles per input)
and the number of finished inputs to ``progress``; on a failure writes ``error.json`` (input
index, kind, cause, message) and fails the test.

Two harnesses:

* checked (default): :class:`~zynqnn.sim.tb_soc.SocTb`: cocotbext-axi's ``AxiRam`` as DDR, the
  AXI protocol checkers on the manager and register ports, optional random back-pressure;
* fast (``job["fast"]``): :class:`LeanDdr`, an always-ready AXI4 memory in one coroutine that
  sleeps while the bus is idle, and no checker. cocotbext-axi spends about 150 us of Python per
  read beat; the lean model a few, which halves the time per image of a small network.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer

from zynqnn.driver import AcceleratorError, AcceleratorTimeout, DeviceBuffer, Driver
from zynqnn.hw import isa
from zynqnn.hw.regs import watchdog_default_cycles
from zynqnn.sim.backend import BusError, CocotbBackend
from zynqnn.sim.clocking import CLOCK_NS, quiet_bus_logs, reset_top, start_top
from zynqnn.sim.program_runner import (
    ENV_DIR,
    ERROR_JSON,
    JOB_JSON,
    JOB_NPZ,
    POSITION,
    POSITION_EVERY,
    PROGRESS,
    RESULT_NPZ,
)
from zynqnn.sim.runner import config_from_env

POISON = 0xA5


class LeanDdr:
    """DDR behind ``<prefix>_*`` of ``dut``: ``size`` bytes from address 0.

    Always ready on AR, AW and W (write data may come before its address); read data goes back
    to back in request order, one beat per cycle; one write response per burst, OKAY. An access
    outside the memory is recorded in :attr:`errors` (reads return zeros, writes are dropped).
    Handshakes are sampled right after the rising clock edge and outputs driven then, as
    cocotbext-axi does. ``latency`` delays each burst's first read beat and write response by
    that many cycles (several bursts wait at once, as at a real memory controller).
    :meth:`write` / :meth:`read` give the CPU's view (the backend's DDR).
    """

    def __init__(self, dut, prefix, clock, size, latency=0):
        self.mem = bytearray(size)
        self.clock = clock
        # Extra cycles from a burst's address to its first read beat or to its write response
        # (the board's DDR answers ~100 cycles late; zynqnn.compiler.perf.BOARD_LATENCY).
        self.latency_ns = int(latency) * CLOCK_NS
        self.errors: list[str] = []
        sig = {n: getattr(dut, f"{prefix}_{n}") for n in (
            "arvalid", "arready", "araddr", "arlen", "arid", "rvalid", "rready", "rdata", "rlast",
            "rid", "rresp", "awvalid", "awready", "awaddr", "awlen", "awid", "wvalid", "wready",
            "wdata", "wstrb", "wlast", "bvalid", "bready", "bid", "bresp")}
        self.s = sig
        self.beat = len(sig["rdata"]) // 8
        for n in ("arready", "awready", "wready"):
            sig[n].value = 1
        for n in ("rvalid", "rlast", "rid", "rresp", "rdata", "bvalid", "bid", "bresp"):
            sig[n].value = 0
        self._reads: deque = deque()     # [address, beats left, id] per read burst
        self._aws: deque = deque()       # [address, beats left, id] per write burst
        self._wbeats: deque = deque()    # (data, strobes, last) not yet matched with an AW
        self._bids: deque = deque()      # responses owed
        self._r_busy = self._b_busy = False   # rvalid / bvalid driven high

    def start(self):
        """Serve the bus (after reset: the manager's valids are known then)."""
        cocotb.start_soon(self._run())

    # -- the CPU's view ------------------------------------------------------------------------
    def _range(self, addr, n):
        if addr < 0 or addr + n > len(self.mem):
            raise IndexError(f"DDR access {addr:#x}+{n} outside the simulated "
                             f"{len(self.mem):#x} bytes")

    def write(self, addr, data):
        self._range(addr, len(data))
        self.mem[addr:addr + len(data)] = data

    def read(self, addr, n):
        self._range(addr, n)
        return bytes(self.mem[addr:addr + n])

    @property
    def quiet(self) -> bool:
        return not (self._reads or self._aws or self._wbeats or self._bids or self._r_busy
                    or self._b_busy)

    # -- the bus -------------------------------------------------------------------------------
    def _beat_ok(self, kind, addr):
        if 0 <= addr and addr + self.beat <= len(self.mem):
            return True
        if len(self.errors) < 100:
            self.errors.append(f"{kind} beat at {addr:#x} outside the simulated DDR "
                               f"({len(self.mem):#x} bytes)")
        return False

    def _write_beat(self, data, strobes, addr):
        if not self._beat_ok("write", addr):
            return
        raw = data.to_bytes(self.beat, "little")
        if strobes == (1 << self.beat) - 1:
            self.mem[addr:addr + self.beat] = raw
        else:
            for i in range(self.beat):
                if strobes >> i & 1:
                    self.mem[addr + i] = raw[i]

    async def _run(self):
        s, edge = self.s, RisingEdge(self.clock)
        wake = (RisingEdge(s["arvalid"]), RisingEdge(s["awvalid"]), RisingEdge(s["wvalid"]))
        while True:
            if self.quiet and not (s["arvalid"].value or s["awvalid"].value
                                   or s["wvalid"].value):
                await First(*wake)
            await edge
            # Handshakes of the edge.
            r_was, b_was = self._r_busy, self._b_busy
            if r_was and s["rready"].value:
                self._r_busy = False
            if b_was and s["bready"].value:
                self._b_busy = False
            now = get_sim_time("ns")
            if s["arvalid"].value:
                self._reads.append([int(s["araddr"].value), int(s["arlen"].value) + 1,
                                    int(s["arid"].value), now + self.latency_ns])
            if s["awvalid"].value:
                self._aws.append([int(s["awaddr"].value), int(s["awlen"].value) + 1,
                                  int(s["awid"].value)])
            if s["wvalid"].value:
                self._wbeats.append((int(s["wdata"].value), int(s["wstrb"].value),
                                     int(s["wlast"].value)))
            while self._aws and self._wbeats:
                aw = self._aws[0]
                data, strobes, last = self._wbeats.popleft()
                self._write_beat(data, strobes, aw[0])
                aw[0] += self.beat
                aw[1] -= 1
                if aw[1] == 0 or last:
                    if (aw[1] == 0) != bool(last) and len(self.errors) < 100:
                        self.errors.append(f"write burst at {aw[0]:#x}: wlast does not match "
                                           f"awlen")
                    self._bids.append((aw[2], now + self.latency_ns))
                    self._aws.popleft()
            # Outputs for the next edge.
            if not self._b_busy:
                if self._bids and self._bids[0][1] <= now:
                    s["bid"].value = self._bids.popleft()[0]
                    s["bvalid"].value = 1
                    self._b_busy = True
                elif b_was:
                    s["bvalid"].value = 0
            if not self._r_busy:
                if self._reads and self._reads[0][3] <= now:
                    rd = self._reads[0]
                    addr = rd[0]
                    if self._beat_ok("read", addr):
                        s["rdata"].value = int.from_bytes(self.mem[addr:addr + self.beat],
                                                          "little")
                    else:
                        s["rdata"].value = 0
                    s["rid"].value = rd[2]
                    s["rlast"].value = int(rd[1] == 1)
                    s["rvalid"].value = 1
                    self._r_busy = True
                    rd[0] += self.beat
                    rd[1] -= 1
                    if rd[1] == 0:
                        self._reads.popleft()
                elif r_was:
                    s["rvalid"].value = 0


class FastTb:
    """Clock, reset, CPU (AXI4-Lite master), :class:`LeanDdr` and driver."""

    def __init__(self, dut, ddr_bytes, ddr_latency=0):
        self.dut = dut
        self.cfg = config_from_env()
        self.axil = start_top(dut)
        self.ddr = LeanDdr(dut, "m_axi", dut.aclk, ddr_bytes, ddr_latency)
        self.backend = CocotbBackend(self.axil, self.ddr, dut.irq)
        self.drv = Driver(self.backend, self.cfg)
        self._started = False
        quiet_bus_logs("cocotb.zynqnn_top.s_axi")

    async def reset(self):
        await reset_top(self.dut)
        if not self._started:
            self._started = True
            self.ddr.start()

    async def settle(self, limit=2000):
        for _ in range(limit):
            st = await self.drv.status()
            if not st["busy"] and self.ddr.quiet:
                return
            await ClockCycles(self.dut.aclk, 10)
        raise AssertionError("accelerator or bus did not go idle")

    def bus_errors(self):
        return self.ddr.errors


class _CheckedTb:
    """:class:`~zynqnn.sim.tb_soc.SocTb` with both checkers' findings as :meth:`bus_errors`."""

    def __init__(self, dut, seed):
        from zynqnn.sim.tb_soc import SocTb

        self.soc = SocTb(dut, seed=seed)
        self.cfg, self.ddr, self.drv = self.soc.cfg, self.soc.ddr, self.soc.drv

    async def reset(self):
        await self.soc.reset()

    async def settle(self):
        await self.soc.settle()

    def bus_errors(self):
        return self.soc.bus_errors


class _Failed(Exception):
    def __init__(self, index, kind, message, cause=None):
        super().__init__(message)
        self.info = {"index": index, "kind": kind, "cause": cause, "message": message}


def _write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _report_position(dut, work: Path, every: int) -> None:
    """Every ``every`` cycles, the simulated cycles so far and the command being dispatched
    (``zynqnn_top.cmd_index``; -1 while idle) into ``work/position``, for the run's progress bar
    (a timer, not a per-cycle callback: no cost to the simulation's speed)."""
    while True:
        await Timer(every * CLOCK_NS, unit="ns")
        try:
            index = int(dut.cmd_index.value) if int(dut.busy.value) else -1
        except (AttributeError, ValueError):   # X or Z values, or no such signal
            continue
        _write_atomic(work / POSITION, f"{round(get_sim_time('ns') / CLOCK_NS)} {index}")


def _check_image(tb, job, segments, where, index):
    """The program image (commands, constants) is loaded once, as on the board: a run must not
    write into it, except into the compiler's scratch bytes."""
    lo_s, hi_s = job["scratch"]
    for addr, blob in segments:
        now = tb.ddr.read(addr, len(blob))
        if now == blob:
            continue
        diff = np.flatnonzero(np.frombuffer(now, np.uint8) != np.frombuffer(blob, np.uint8))
        diff = diff[(diff + addr < lo_s) | (diff + addr >= hi_s)]
        if diff.size:
            lo, hi = addr + int(diff[0]), addr + int(diff[-1])
            outside = f", outside the scratch bytes {lo_s:#x}..{hi_s - 1:#x}" if hi_s > lo_s else ""
            raise _Failed(index, "image", f"{where}: the run wrote into the program image "
                          f"(commands and constants) at {lo:#x}..{hi:#x} ({diff.size} bytes"
                          f"{outside}); later runs would use corrupted constants")


async def _run_one(tb, job, segments, index, data, timeout_s):
    """One input through the driver; returns (raw output bytes, busy cycles)."""
    where = f"input {index} (of {len(data)})"
    window = (0, job["ddr_bytes"])
    for addr, nbytes in job["outputs"]:
        tb.ddr.write(addr, bytes([POISON]) * nbytes)
    tb.ddr.write(job["input_addr"], data[index].tobytes())
    try:
        result = await tb.drv.run(DeviceBuffer(job["cmd_addr"],
                                               job["command_count"] * isa.COMMAND_BYTES),
                                  count=job["command_count"], window=window,
                                  timeout_s=timeout_s)
    except AcceleratorError as e:
        raise _Failed(index, "accelerator", f"{where}: accelerator error {e.cause.name} "
                      f"({int(e.cause)}) at command {e.index}", e.cause.name) from e
    except AcceleratorTimeout as e:
        raise _Failed(index, "timeout", f"{where}: no done or error within {timeout_s:.3g} s "
                      f"of simulated time ({e})") from e
    except BusError as e:
        raise _Failed(index, "bus", f"{where}: {e}") from e
    # Every output tensor's bytes, concatenated in the network's output order.
    raw = np.frombuffer(b"".join(bytes(tb.ddr.read(addr, nbytes))
                                 for addr, nbytes in job["outputs"]), dtype=np.uint8)
    try:
        await tb.settle()
    except AssertionError as e:
        raise _Failed(index, "timeout", f"{where}: {e}") from e
    if tb.bus_errors():
        raise _Failed(index, "bus", f"{where}: AXI protocol: "
                      + "; ".join(tb.bus_errors()[:5]))
    _check_image(tb, job, segments, where, index)
    return raw, result.cycles


@cocotb.test()
async def run_program(dut):
    """Every input of the job through the compiled program."""
    work = Path(os.environ[ENV_DIR])
    job = json.loads((work / JOB_JSON).read_text())
    current = None
    try:
        if job["fast"]:
            tb = FastTb(dut, job["ddr_bytes"], job.get("ddr_latency", 0))
        else:
            tb = _CheckedTb(dut, job["seed"])
            tb.soc.checker.window = (0, job["ddr_bytes"])
        if tb.cfg.config_id != job["config_id"]:
            raise _Failed(None, "simulation", f"the program was compiled for "
                          f"{job['config_id']}, the simulated hardware is {tb.cfg.config_id}")
        with np.load(work / JOB_NPZ) as arrays:
            data = arrays["inputs"]
            segments = [(addr, arrays[f"seg{i}"].tobytes())
                        for i, addr in enumerate(job["segments"])]
        for addr, blob in segments:
            tb.ddr.write(addr, blob)
        await tb.reset()
        cocotb.start_soon(_report_position(dut, work, POSITION_EVERY))
        if job["backpressure"] > 0:
            tb.soc.backpressure(job["backpressure"])
        # Bounded by the hardware watchdog (a stuck bus wait ends in WATCHDOG) plus generous room
        # for the run itself (back-pressure included).
        cycles = 2 * watchdog_default_cycles(tb.cfg) + 20 * job["cycle_estimate"] + 20000
        timeout_s = cycles * CLOCK_NS * 1e-9
        raws, busy = [], []
        for index in range(job["count"]):
            current = index
            raw, c = await _run_one(tb, job, segments, index, data, timeout_s)
            raws.append(raw)
            busy.append(c)
            _write_atomic(work / PROGRESS, str(index + 1))
    except _Failed as e:
        _write_atomic(work / ERROR_JSON, json.dumps(e.info))
        raise AssertionError(e.info["message"]) from None
    except Exception as e:
        _write_atomic(work / ERROR_JSON, json.dumps(
            {"index": current, "kind": "simulation", "cause": None,
             "message": (f"input {current}: " if current is not None else "")
             + f"{type(e).__name__}: {e}"}))
        raise
    np.savez(work / RESULT_NPZ, outputs=np.stack(raws), cycles=np.array(busy, np.int64))
