"""cocotb tests of the SoC shell (``zynqnn_top`` with the test engine), through the real driver.

Every test drives :class:`zynqnn.driver.Driver` over :class:`~zynqnn.sim.backend.CocotbBackend`
(cocotbext-axi's AXI4-Lite master as the CPU, :class:`~zynqnn.sim.ddr.SimDdr` as DDR) and checks
the manager port with :class:`~zynqnn.sim.axi_checker.AxiChecker` and the register port with
:class:`~zynqnn.sim.axi_checker.AxiLiteChecker`; results are compared with
:class:`~zynqnn.sim.model.SocModel`.

Knobs (environment): ``TB_CORRUPT_RUNS`` (randomized corrupted programs, default 50),
``TB_SEED``.
"""

from __future__ import annotations

import os
import random
from itertools import repeat

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi.constants import AxiResp
from cocotbext.axi.sparse_memory import SparseMemory

from zynqnn.driver import AcceleratorError, Driver
from zynqnn.hw import isa
from zynqnn.hw.geometry import QUEUE_DEPTH, buffer_depth, buffer_word_bits, line_beats
from zynqnn.hw.regs import REGMAP, VERSION
from zynqnn.sim.axi_checker import AxiChecker, AxiLiteChecker
from zynqnn.sim.backend import BusError, CocotbBackend
from zynqnn.sim.clocking import CLOCK_NS, quiet_bus_logs, reset_top, start_top
from zynqnn.sim.corrupt import corrupted_program, machine_run
from zynqnn.sim.ddr import SimDdr, pause_pattern
from zynqnn.sim.model import Outcome, Program, SocModel
from zynqnn.sim.runner import config_from_env

E = isa.ErrorCause
B = isa.Buffer
SEED = int(os.environ.get("TB_SEED", "1"))


def cycles_now():
    return get_sim_time("ns") // CLOCK_NS


class SocTb:
    """Clock, reset, CPU, DDR, checker, model and driver of one test."""

    def __init__(self, dut, latency=(0.0, 0), seed=SEED):
        self.dut = dut
        self.cfg = config_from_env()
        self.bb = self.cfg.axi_data_bits // 8
        self.rng = random.Random(seed)
        self.axil = start_top(dut)
        self.ddr = SimDdr(dut, "m_axi", dut.aclk, dut.aresetn, latency=latency, seed=seed)
        self.checker = AxiChecker(dut, "m_axi", dut.aclk, dut.aresetn, self.cfg.axi_data_bits)
        self.lite_checker = AxiLiteChecker(dut, "s_axi", dut.aclk, dut.aresetn,
                                           sample_with=self.checker)
        self.backend = CocotbBackend(self.axil, self.ddr, dut.irq)
        self.drv = Driver(self.backend, self.cfg)
        self.model = SocModel(self.cfg)
        self._programs = {}
        quiet_bus_logs("cocotb.zynqnn_top.s_axi", "cocotb.zynqnn_top.m_axi")

    async def reset(self):
        await reset_top(self.dut)

    def assert_clean(self):
        """Both ports' protocol checkers found nothing."""
        self.checker.assert_clean()
        self.lite_checker.assert_clean()

    @property
    def bus_errors(self) -> list[str]:
        return self.checker.errors + self.lite_checker.errors

    def backpressure(self, prob=0.3):
        """Random pauses on every channel of both buses."""
        self.ddr.set_pause(self.rng, prob)
        for ch in (self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                   self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                   self.axil.read_if.r_channel):
            ch.set_pause_generator(pause_pattern(self.rng, prob))

    # -- memory helpers --------------------------------------------------------------------------

    def snapshot(self) -> SparseMemory:
        copy = SparseMemory(self.ddr.mem.size)
        copy.segs = {k: bytearray(v) for k, v in self.ddr.mem.segs.items()}
        return copy

    def assert_same_outside(self, before: SparseMemory, lo: int, hi: int):
        """Every byte outside [lo, hi) equals ``before``."""
        pages = set(before.segs) | set(self.ddr.mem.segs)
        for page in sorted(pages):
            a = before.read(page, 4096)
            b = self.ddr.mem.read(page, 4096)
            if a == b:
                continue
            for off in range(4096):
                addr = page + off
                if a[off] != b[off] and not lo <= addr < hi:
                    raise AssertionError(f"DDR byte {addr:#x} outside the window "
                                         f"[{lo:#x}, {hi:#x}) changed")

    def assert_equal_memory(self, expected: SparseMemory):
        pages = set(expected.segs) | set(self.ddr.mem.segs)
        for page in sorted(pages):
            a = expected.read(page, 4096)
            b = self.ddr.mem.read(page, 4096)
            if a != b:
                off = next(i for i in range(4096) if a[i] != b[i])
                raise AssertionError(f"DDR {page + off:#x}: {b[off]:#04x}, expected "
                                     f"{a[off]:#04x}")

    def fill(self, buf, rng=None):
        rng = rng or self.rng
        data = bytes(rng.getrandbits(8) for _ in range(buf.nbytes))
        self.ddr.write(buf.address, data)
        return data

    # -- runs -------------------------------------------------------------------------------------

    def place(self, prog: Program, buf=None):
        """The buffer ``prog`` runs from (``buf``, or one allocated for it the first time);
        writes the commands into it."""
        data = prog.to_bytes()
        if buf is not None:
            self._programs[data] = buf
        elif data not in self._programs:
            self._programs[data] = self.drv.alloc(max(len(data), self.bb))
        buf = self._programs[data]
        self.ddr.write(buf.address, data)
        return buf

    async def run(self, prog: Program, window=None, watchdog=0, timeout_s=2e-3,
                  expect: Outcome | None = None, compare=True, alternatives=(), rewrite=True):
        """Run ``prog`` (from :meth:`place`; rewritten there unless not ``rewrite``), check the
        outcome against the model (or ``expect``, or one of ``alternatives``), the interrupt,
        DDR against the model (``compare``), DDR outside the window and the bus rules; return
        ``(outcome, cycles, counters)``."""
        if rewrite:
            pbuf = self.place(prog)
        else:
            pbuf = self._programs[prog.to_bytes()]
            assert bytes(self.ddr.read(pbuf.address, len(prog) * isa.COMMAND_BYTES)) == \
                prog.to_bytes(), "the program in DDR changed"
        lo, hi = self.drv.window() if window is None else window
        self.checker.window = (lo, hi)
        before = self.snapshot()
        model_mem = self.snapshot()
        model_out = self.model.run(model_mem, pbuf.address, len(prog), lo, hi)
        want = model_out if expect is None else expect
        irq = []
        watcher = cocotb.start_soon(_watch(self.dut.irq, irq))
        t0 = cycles_now()
        try:
            result = await self.drv.run(pbuf, count=len(prog), window=(lo, hi),
                                        watchdog=watchdog, timeout_s=timeout_s)
            got, counters = Outcome("done"), result.counters
        except AcceleratorError as e:
            got, counters = Outcome("error", e.cause, e.index), await self.drv.counters()
        cycles = cycles_now() - t0
        watcher.cancel()
        assert got == want or got in alternatives, f"got {got}, expected {want}"
        assert irq, f"no interrupt for {got}"
        if expect is not None and expect != model_out and got == want:
            self.dut._log.info("model said %s", model_out)
        await self.settle()
        self.assert_clean()
        self.assert_same_outside(before, lo, hi)
        if compare and got.status == "done" and got == model_out:
            self.assert_equal_memory(model_mem)
        return got, cycles, counters

    async def settle(self, limit=2000):
        """Wait until the accelerator is idle and the bus quiet."""
        for _ in range(limit):
            st = await self.drv.status()
            if not st["busy"] and self.checker.quiet:
                return
            await ClockCycles(self.dut.aclk, 10)
        raise AssertionError("accelerator or bus did not go idle")


# -- program generators -------------------------------------------------------------------------


def _ls_bytes(cfg, buf, line_words, bb):
    """DDR bytes (whole beats) of one line of ``line_words`` words of ``buf``."""
    return line_beats(cfg, buf, line_words) * bb


def tile_program(tb: SocTb, tiles: int, rng: random.Random, stall=0, near_page=True,
                 max_words=None):
    """Double-buffered tiles: LOAD IBUF/WBUF/PBUF bank t%2, CONV, STORE; each tile's DDR lines
    have random shapes and strides, some across 4 KB boundaries. Inputs are filled randomly."""
    cfg, drv, bb = tb.cfg, tb.drv, tb.bb
    prog = Program()
    max_words = max_words or min(buffer_depth(cfg, B.OBUF), 96)
    wbytes_out = buffer_word_bits(cfg, B.OBUF) // 8
    for t in range(tiles):
        bank = t % 2
        lines = rng.randint(1, 4)
        line_words = rng.randint(1, max(1, max_words // lines))
        count = lines * line_words
        # IBUF: lines of line_words words, stride >= the line's bytes.
        in_line = _ls_bytes(cfg, B.IBUF, line_words, bb)
        in_stride = in_line + bb * rng.randint(0, 3)
        in_buf = drv.alloc(in_stride * lines + 4096 + 64)
        off = 0
        if near_page and rng.random() < 0.7:
            # Put the transfer across the next 4 KB boundary.
            page_end = (in_buf.address // 4096 + 1) * 4096
            off = page_end - in_buf.address - bb * rng.randint(1, min(20, max(1, in_line // bb)))
            off = max(0, off)
        tb.fill(in_buf, rng)
        src = rng.randint(0, 8)
        prog.load(B.IBUF, bank, src, line_words, lines, in_buf.address + off, in_stride)
        # WBUF: count words, one line; PBUF: two words.
        use_w = rng.random() < 0.6
        use_p = rng.random() < 0.6
        wsrc = rng.randint(0, 4)
        w_buf = drv.alloc(_ls_bytes(cfg, B.WBUF, count, bb) + 64)
        tb.fill(w_buf, rng)
        p_buf = drv.alloc(2 * buffer_word_bits(cfg, B.PBUF) // 8 + 64)
        tb.fill(p_buf, rng)
        needs = isa.bank_bit(B.IBUF, bank)
        if use_w:
            prog.load(B.WBUF, bank, wsrc, count, 1, w_buf.address)
            needs |= isa.bank_bit(B.WBUF, bank)
        if use_p:
            prog.load(B.PBUF, bank, 0, 2, 1, p_buf.address)
            needs |= isa.bank_bit(B.PBUF, bank)
        dst = rng.randint(0, 8)
        prog.compute(needs=needs, releases=needs, obuf_bank=bank,
                     opcode=rng.choice([isa.Opcode.CONV, isa.Opcode.ELTWISE]),
                     src_bank=bank, wbuf_bank=bank, pbuf_bank=bank, use_wbuf=int(use_w),
                     use_pbuf=int(use_p), count=count, src_addr=src, dst_addr=dst,
                     wbuf_addr=wsrc, pbuf_addr=rng.randint(0, 1), add=rng.getrandbits(32),
                     xor=rng.getrandbits(32), stall=stall)
        # STORE: split the count differently.
        divs = [d for d in range(1, count + 1) if count % d == 0]
        s_lines = rng.choice(divs)
        s_words = count // s_lines
        out_line = s_words * wbytes_out
        out_stride = -(-out_line // bb) * bb + bb * rng.randint(0, 2)
        out_buf = drv.alloc(out_stride * s_lines + 4096 + 64)
        o_off = 0
        if near_page and rng.random() < 0.7:
            page_end = (out_buf.address // 4096 + 1) * 4096
            o_off = max(0, page_end - out_buf.address - bb * rng.randint(1, 12))
        prog.store(bank, dst, s_words, s_lines, out_buf.address + o_off, out_stride)
    prog.end()
    return prog


# -- tests ------------------------------------------------------------------------------------


@cocotb.test()
async def registers(dut):
    """Config readback, RW with byte strobes, RO, WO, W1C + irq, SLVERR for unmapped offsets,
    AW and W in either order."""
    tb = SocTb(dut)
    await tb.reset()
    drv, axil = tb.drv, tb.axil
    await drv.check_config()
    assert await drv.read_reg("ID") == 0x5A594E4E
    assert await drv.fields("VERSION") == {"major": VERSION[0], "minor": VERSION[1]}
    # RW registers hold what is written; byte strobes.
    for name in ("CMD_BASE", "WINDOW_BASE", "WINDOW_LIMIT", "WATCHDOG"):
        await drv.write_reg(name, 0xDEADBEEF)
        assert await drv.read_reg(name) == 0xDEADBEEF, name
    await axil.write(REGMAP["CMD_BASE"].offset + 1, b"\x55")
    assert await drv.read_reg("CMD_BASE") == 0xDEAD55EF
    await axil.write(REGMAP["CMD_BASE"].offset + 2, b"\x11\x22")
    assert await drv.read_reg("CMD_BASE") == 0x221155EF
    await drv.write_reg("CMD_COUNT", 0xFFFFFFFF)
    assert await drv.read_reg("CMD_COUNT") == 0xFFFFF   # only the field's bits exist
    # WO reads 0, RO ignores writes (OKAY).
    assert await drv.read_reg("CONTROL") == 0
    resp = await axil.write(REGMAP["STATUS"].offset, b"\xff\xff\xff\xff")
    assert resp.resp == AxiResp.OKAY
    assert await drv.read_reg("STATUS") == 0
    resp = await axil.write(REGMAP["CFG_HASH"].offset, b"\x00\x00\x00\x00")
    assert await drv.read_reg("CFG_HASH") == tb.cfg.config_hash32
    # Unmapped offsets answer SLVERR, reads and writes.
    mapped = {r.offset for r in REGMAP}
    holes = [0x02C, 0x030, 0x03C, 0x064, 0x07C, 0x0A8, 0x100, 0xFFC]
    assert not mapped & set(holes)
    for off in holes:
        r = await axil.read(off, 4)
        assert r.resp == AxiResp.SLVERR, hex(off)
        w = await axil.write(off, b"\x01\x02\x03\x04")
        assert w.resp == AxiResp.SLVERR, hex(off)
    try:
        await tb.backend.read32(0x100)
        raise AssertionError("no BusError")
    except BusError:
        pass
    # W1C and the interrupt: a run sets IRQ_STATUS.done; irq follows IRQ_ENABLE.
    prog = Program().end()
    await tb.run(prog, watchdog=1000)
    assert int(dut.irq.value) == 0          # the driver cleared IRQ_STATUS
    await drv.write_reg("IRQ_ENABLE", 0)
    tb.checker.window = None     # the driver allocates the program buffer and its window
    await drv.start(Program().end().to_bytes(), irq=False)
    await tb.settle()
    assert await drv.fields("IRQ_STATUS") == {"done": 1, "error": 0}
    assert int(dut.irq.value) == 0
    await drv.write_reg("IRQ_ENABLE", done=1)
    await ClockCycles(dut.aclk, 2)
    assert int(dut.irq.value) == 1
    await drv.write_reg("IRQ_STATUS", error=1)    # writing 0 to done keeps it
    assert await drv.fields("IRQ_STATUS") == {"done": 1, "error": 0}
    await drv.write_reg("IRQ_STATUS", done=1)
    assert await drv.fields("IRQ_STATUS") == {"done": 0, "error": 0}
    await ClockCycles(dut.aclk, 2)
    assert int(dut.irq.value) == 0
    # W well before AW, and AW well before W.
    aw, w = axil.write_if.aw_channel, axil.write_if.w_channel
    for held, value in ((aw, 0x12345678), (w, 0x9ABCDEF0)):
        held.pause = True
        event = axil.init_write(REGMAP["WATCHDOG"].offset, value.to_bytes(4, "little"))
        await ClockCycles(dut.aclk, 6)
        held.pause = False
        await event.wait()
        assert await drv.read_reg("WATCHDOG") == value
    # AW and W in random order: random pauses on the CPU's channels.
    tb.backpressure(0.5)
    for i in range(24):
        v = tb.rng.getrandbits(32)
        await drv.write_reg("WATCHDOG", v)
        assert await drv.read_reg("WATCHDOG") == v, i
    tb.assert_clean()


@cocotb.test()
async def dma_backpressure(dut):
    """LOAD (IBUF, WBUF, PBUF) / CONV / STORE tiles with 4 KB-crossing lines under random
    pauses on every channel and random DDR latency; DDR equals the model byte for byte."""
    tb = SocTb(dut, latency=(0.2, 6))
    await tb.reset()
    tb.backpressure(0.3)
    rng = random.Random(SEED + 10)
    crossings = 0
    for _ in range(3):
        prog = tile_program(tb, 4, rng)
        n_reads = len(tb.checker.read_bursts)
        out, cycles, counters = await tb.run(prog, timeout_s=5e-3)
        assert out.status == "done"
        bursts = tb.checker.read_bursts[n_reads:]
        crossings += sum(1 for a, n in bursts if (a + n * tb.bb) % 4096 == 0 and n < 16)
        assert counters["PERF_DMA_STALL"] > 0
    assert crossings > 0, "no transfer was split at a 4 KB boundary"
    assert tb.checker.max_reads_in_flight >= 2
    dut._log.info("max read bursts in flight: %d; 4 KB splits: %d",
                  tb.checker.max_reads_in_flight, crossings)


@cocotb.test()
async def back_to_back(dut):
    """One program and its inputs written to DDR once, then run TB_B2B_RUNS times (default 3)
    under random pauses on every channel of both buses (a new pattern each run) and random DDR
    latency: two tiles, each storing 256 OBUF words (a whole bank on tiny) in four lines across
    a 4 KB boundary into outputs poisoned with new random bytes before the run; every output
    byte equals the model's and the first run's; the program and inputs are never rewritten
    and never change; the byte and compute counters are equal every run."""
    runs = int(os.environ.get("TB_B2B_RUNS", "3"))
    tb = SocTb(dut, latency=(0.2, 4))
    await tb.reset()
    cfg, bb, rng = tb.cfg, tb.bb, random.Random(SEED + 20)
    n = min(buffer_depth(cfg, B.IBUF), buffer_depth(cfg, B.OBUF), 256)
    prog = Program()
    outs, inputs = [], []
    for bank in range(isa.BANKS):
        lines = 4
        words = n // lines
        in_buf = tb.drv.alloc(_ls_bytes(cfg, B.IBUF, n, bb))
        w_buf = tb.drv.alloc(_ls_bytes(cfg, B.WBUF, n, bb))
        p_buf = tb.drv.alloc(2 * buffer_word_bits(cfg, B.PBUF) // 8)
        for buf in (in_buf, w_buf, p_buf):
            tb.fill(buf, rng)
            inputs.append(buf)
        out_line = _ls_bytes(cfg, B.OBUF, words, bb)
        stride = out_line + 2 * bb                         # gaps between lines stay poisoned
        out_buf = tb.drv.alloc(stride * lines + 4096)
        page_end = (out_buf.address // 4096 + 1) * 4096    # the lines cross a 4 KB boundary
        out_addr = max(out_buf.address, page_end - stride - 3 * bb)
        outs.append((out_buf, [(out_addr + i * stride, out_line) for i in range(lines)]))
        need = (isa.bank_bit(B.IBUF, bank) | isa.bank_bit(B.WBUF, bank)
                | isa.bank_bit(B.PBUF, bank))
        prog.load(B.IBUF, bank, 0, n, 1, in_buf.address)
        prog.load(B.WBUF, bank, 0, n, 1, w_buf.address)
        prog.load(B.PBUF, bank, 0, 2, 1, p_buf.address)
        prog.compute(needs=need, releases=need, obuf_bank=bank, src_bank=bank, wbuf_bank=bank,
                     pbuf_bank=bank, use_wbuf=1, use_pbuf=1, count=n, wbuf_addr=0,
                     pbuf_addr=1, add=rng.getrandbits(32), xor=rng.getrandbits(32))
        prog.store(bank, 0, words, lines, out_addr, stride)
    prog.end()
    inputs.append(tb.place(prog))                           # the image, written once
    image = {b: bytes(tb.ddr.read(b.address, b.nbytes)) for b in inputs}
    n_out = sum(size for _, lines in outs for _, size in lines)
    results = []
    for run in range(runs):
        tb.backpressure(0.3)
        for buf, _ in outs:
            tb.fill(buf, rng)                               # poison: a skipped write shows
        out, cycles, counters = await tb.run(prog, rewrite=False, timeout_s=5e-3)
        assert out.status == "done"
        data = [bytes(tb.ddr.read(a, size)) for _, lines in outs for a, size in lines]
        same = {k: counters[k] for k in ("PERF_DMA_RD_BYTES", "PERF_DMA_WR_BYTES",
                                         "PERF_CYCLES_COMPUTE")}
        results.append((data, same))
        assert data == results[0][0], f"run {run}: output differs from run 0"
        assert same == results[0][1], f"run {run}: {same} != {results[0][1]}"
        for buf, want in image.items():
            assert bytes(tb.ddr.read(buf.address, buf.nbytes)) == want, "the image changed"
        dut._log.info("run %d: %d output bytes equal, %d cycles, %s", run, n_out, cycles, same)
    assert same["PERF_DMA_WR_BYTES"] >= isa.BANKS * n * buffer_word_bits(cfg, B.OBUF) // 8
    assert counters["PERF_CYCLES_COMPUTE"] > 0
    assert counters["PERF_CYCLES_BUSY"] > counters["PERF_CYCLES_COMPUTE"]


def copy_program(tb: SocTb, words: int, lines=1, stall=0):
    """One tile: LOAD IBUF bank 0, CONV (copy), STORE; returns (program, input, output)."""
    cfg, bb = tb.cfg, tb.bb
    line_words = words // lines
    in_line = _ls_bytes(cfg, B.IBUF, line_words, bb)
    out_line = _ls_bytes(cfg, B.OBUF, line_words, bb)
    src = tb.drv.alloc(in_line * lines)
    dst = tb.drv.alloc(out_line * lines)
    tb.fill(src)
    prog = (Program()
            .load(B.IBUF, 0, 0, line_words, lines, src.address, in_line)
            .compute(needs=isa.bank_bit(B.IBUF, 0), releases=isa.bank_bit(B.IBUF, 0),
                     obuf_bank=0, count=words, stall=stall)
            .store(0, 0, line_words, lines, dst.address, out_line)
            .end())
    return prog, src, dst


async def wait_cycles_until(dut, cond, limit):
    for _ in range(limit):
        await RisingEdge(dut.aclk)
        await ReadOnly()
        if cond():
            return
    raise AssertionError("condition not reached")


@cocotb.test()
async def axi_errors(dut):
    """SLVERR / DECERR on read data (load, command fetch) and on write responses: error status
    with the failing command's index and the interrupt; the bus drains; the next run works."""
    tb = SocTb(dut)
    await tb.reset()
    tb.backpressure(0.2)
    cases = [
        ("load", AxiResp.SLVERR, E.AXI_SLVERR, 0),
        ("load", AxiResp.DECERR, E.AXI_DECERR, 0),
        ("store", AxiResp.SLVERR, E.AXI_SLVERR, 2),
        ("store", AxiResp.DECERR, E.AXI_DECERR, 2),
        ("fetch", AxiResp.DECERR, E.AXI_DECERR, 2),
        ("fetch", AxiResp.SLVERR, E.AXI_SLVERR, 3),
    ]
    for where, resp, cause, index in cases:
        prog, src, dst = copy_program(tb, 40, lines=2)
        pbuf = tb.place(prog)
        if where == "load":
            tb.ddr.inject(src.address + 8, src.address + 16, resp)
        elif where == "store":
            tb.ddr.inject(dst.address + dst.nbytes - 8, dst.address + dst.nbytes, resp)
        else:
            at = pbuf.address + index * isa.COMMAND_BYTES + 8
            tb.ddr.inject(at, at + 8, resp)
        await tb.run(prog, expect=Outcome("error", cause, index), timeout_s=1e-3)
        tb.ddr.clear_faults()
        out, _, _ = await tb.run(prog)
        assert out.status == "done"


async def _watch(sig, seen):
    """Append to ``seen`` when ``sig`` rises."""
    while not seen:
        await RisingEdge(sig)
        seen.append(1)


@cocotb.test()
async def window_violations(dut):
    """LOAD / STORE / program outside the DDR window stop with DDR_WINDOW and the index before
    anything is issued; DDR outside the window is never touched."""
    tb = SocTb(dut)
    await tb.reset()
    pbuf = tb.drv.alloc(4 * isa.COMMAND_BYTES)   # below the data, so windows can cut the data
    prog, src, dst = copy_program(tb, 24)
    tb.place(prog, pbuf)
    lo, hi = tb.drv.window()
    full = (lo, hi)
    # The input starts below the window.
    n_r, n_w = len(tb.checker.read_bursts), len(tb.checker.write_bursts)
    await tb.run(prog, window=(src.address + 8, hi), expect=Outcome("error", E.DDR_WINDOW, 0))
    # The output ends beyond the window: the load and compute run, the store is refused.
    await tb.run(prog, window=(lo, dst.end - 8), expect=Outcome("error", E.DDR_WINDOW, 2))
    assert len(tb.checker.write_bursts) == n_w, "a refused store wrote"
    # The program itself outside the window.
    await tb.run(prog, window=(pbuf.address + 32, hi), expect=Outcome("error", E.DDR_WINDOW, 0))
    await tb.run(prog, window=(lo, pbuf.address + 64), expect=Outcome("error", E.DDR_WINDOW, 0))
    assert len(tb.checker.read_bursts) - n_r <= 2 * 2 + 4   # program fetches and the one load
    # The window ends inside the program: the commands before run, the first one outside
    # fails.
    nops = Program().nop().nop().nop().end()
    nbuf = tb.place(nops, tb.drv.alloc(4 * isa.COMMAND_BYTES))
    await tb.run(nops, window=(nbuf.address, nbuf.address + 2 * isa.COMMAND_BYTES + 8),
                 expect=Outcome("error", E.DDR_WINDOW, 2))
    # An empty window (reset value of WINDOW_LIMIT).
    await tb.run(prog, window=(0, 0), expect=Outcome("error", E.DDR_WINDOW, 0))
    out, _, _ = await tb.run(prog, window=full)
    assert out.status == "done"
    # Each bound on its own (issue 21: scripts/mutants.py): a program inside the window whose
    # LOAD starts one beat below WINDOW_BASE ...
    bb, in_line = tb.bb, _ls_bytes(tb.cfg, B.IBUF, 24, tb.bb)
    below = Program().load(B.IBUF, 0, 0, 24, 1, src.address, in_line).end()
    high = tb.place(below, tb.drv.alloc(4 * isa.COMMAND_BYTES))    # above the data
    n_r = len(tb.checker.read_bursts)
    await tb.run(below, window=(src.address + bb, high.end),
                 expect=Outcome("error", E.DDR_WINDOW, 0))
    # ... and a LOAD whose extent passes 2^32, so that it would wrap to a small address inside
    # the window if the extent were computed modulo 2^32 (WINDOW_LIMIT at its largest).
    top = 1 << tb.cfg.axi_addr_bits
    wrap = Program().load(B.IBUF, 0, 0, 24, 4, top - 2 * in_line, in_line).end()
    await tb.run(wrap, window=(high.address, top - bb),
                 expect=Outcome("error", E.DDR_WINDOW, 0))
    assert len(tb.checker.read_bursts) - n_r <= 2 * 2, "a refused load read"


#: Set by scripts/mutants.py for a design whose dispatcher does not check the window: the ports'
#: guard must then refuse every transfer the dispatcher would have (PORT_WINDOW, same index).
PORT_GUARD = os.environ.get("TB_PORT_GUARD") == "1"


@cocotb.test()
async def window_edges(dut):
    """Directed DDR window edge cases (issue 21, item 2), each checked against the model, the
    AXI checker's window and DDR outside the window: a transfer ending exactly at the limit and
    one beat past it, one beat below the base, unaligned limits, a limit cutting a transfer in
    half, strides of 2^31 and 2^32 - beat, lines * stride = 2^32, a window at the top of the
    4 GB space, inverted windows, zero lines and zero words at wild addresses."""
    tb = SocTb(dut)
    await tb.reset()
    cfg, bb = tb.cfg, tb.bb
    top = 1 << cfg.axi_addr_bits
    p_lo = tb.drv.alloc(8 * isa.COMMAND_BYTES)          # programs below the data ...
    arena = tb.drv.alloc(4 * 4096)
    p_hi = tb.drv.alloc(8 * isa.COMMAND_BYTES)          # ... and above it
    tb.fill(arena)
    a = arena.address + 2 * 4096                          # a page boundary inside the arena
    words = 16                                            # IBUF / OBUF words of 64 bytes
    nbytes = _ls_bytes(cfg, B.IBUF, words, bb)
    ib = isa.bank_bit(B.IBUF, 0)
    done = Outcome("done")

    def refused(i):
        return Outcome("error", E.PORT_WINDOW if PORT_GUARD else E.DDR_WINDOW, i)

    def load(addr, lines=1, stride=0, n=words):
        return Program().load(B.IBUF, 0, 0, n, lines, addr, stride).end()

    def store(addr, lines=1, stride=0, n=words, src=arena.address):
        return (Program().load(B.IBUF, 0, 0, max(1, n * lines), 1, src)
                .compute(needs=ib, releases=ib, count=n * lines)
                .store(0, 0, n, lines, addr, stride).end())

    async def case(name, prog, window, want, at=p_lo, alternatives=()):
        tb.place(prog, at)
        if PORT_GUARD:
            out, _, _ = await tb.run(prog, window=window, expect=want, compare=False,
                                     alternatives=alternatives)
        else:
            out, _, _ = await tb.run(prog, window=window)   # the model's outcome ...
            assert out == want, f"{name}: {out}, expected {want}"   # ... is the expected one
        dut._log.info("%s: %s", name, out)

    up = p_lo.address   # windows with the program at their bottom
    cases = [
        ("load ends at the limit", load(a - nbytes), (up, a), done),
        ("load one beat past", load(a - nbytes + bb), (up, a), refused(0)),
        ("load, limit unaligned below", load(a - nbytes), (up, a - 4), refused(0)),
        ("load, limit unaligned above", load(a - nbytes), (up, a + 4), done),
        ("store ends at the limit", store(a - nbytes), (up, a), done),
        ("store one beat past", store(a - nbytes + bb), (up, a), refused(2)),
        ("limit cuts lines", load(a - 1024, 4, 256), (up, a - 512), refused(0)),
        ("limit cuts a line", load(a - 64, 1, 0, 2 * words), (up, a), refused(0)),
        ("stride 2^31, inside", load(a, 2, 1 << 31), (up, top - 1), done),
        ("stride 2^31, cut", load(a, 2, 1 << 31), (up, a + (1 << 31) + 8), refused(0)),
        # The port sees line 1 at a - beat (the DMA's addresses wrap): inside, so only the
        # dispatcher refuses it.
        ("stride 2^32 - beat", load(a, 2, top - bb), (up, a + 4096), refused(0), [done]),
        ("lines * stride = 2^32", load(a, 16, 1 << 28, 4), (up, a + 4096), refused(0)),
        ("lines * stride = 2^32, past 2^32", load(a, 16, 1 << 28, 4), (up, top - 1),
         refused(0)),
        ("lines * stride = 2^32, inside", load(0x100, 16, 1 << 28, 4), (0, top - 1), done),
    ]
    for name, prog, window, want, *alts in cases:
        await case(name, prog, window, want, alternatives=alts[0] if alts else ())
    # One beat below the base (the program above the data).
    await case("load at the base", load(a), (a, p_hi.end), done, at=p_hi)
    await case("load one beat below", load(a - bb), (a, p_hi.end), refused(0), at=p_hi)
    await case("store one beat below", store(a - bb, src=a), (arena.address, p_hi.end), done,
               at=p_hi)
    await case("store one beat below the base", store(a - bb, src=a), (a, p_hi.end),
               refused(2), at=p_hi)
    # A window at the top of the 4 GB space (WINDOW_LIMIT at its largest, 2^32 - 1).
    t_prog = type(p_lo)(top - 0x8000, 8 * isa.COMMAND_BYTES)
    t_win = (top - 0x10000, top - 1)
    await case("top: inside", load(top - 0x100), t_win, done, at=t_prog)
    await case("top: last beat", load(top - bb, 1, 0, 2), t_win, refused(0), at=t_prog)
    await case("top: beat before it", load(top - 2 * bb, 1, 0, 2), t_win, done, at=t_prog)
    await case("top: wraps past 2^32", load(top - 0x40, 2, 0x40), t_win, refused(0),
               at=t_prog)
    # Inverted windows: nothing is inside, not even the program.
    await case("inverted", load(a), (p_hi.end, up), Outcome("error", E.DDR_WINDOW, 0))
    await case("inverted by a beat", load(a), (up + bb, up), Outcome("error", E.DDR_WINDOW, 0))
    # Zero lines and zero words at wild addresses: a LOAD is refused, a STORE of no lines moves
    # nothing and is not checked against the window, one of no words is checked over its lines.
    win = (up, arena.end)
    for addr in (top - bb, 0, 1 << 31):
        await case(f"load of no lines at {addr:#x}", load(addr, 0, top - bb),
                   win, Outcome("error", E.EMPTY_LOAD, 0))
        await case(f"load of no words at {addr:#x}", load(addr, 3, 1 << 31, 0), win,
                   Outcome("error", E.EMPTY_LOAD, 0))
        await case(f"store of no lines at {addr:#x}", store(addr, 0, top - bb), win, done)
        await case(f"store of no words at {addr:#x}", store(addr, 3, 1 << 31, 0), win,
                   refused(2), alternatives=[done])   # no bytes: the ports see no burst


@cocotb.test()
async def registers_while_busy(dut):
    """CMD_BASE, CMD_COUNT, WINDOW_BASE and WINDOW_LIMIT written while a program runs (a window
    that excludes all of its data, another program): the run uses the values of its START,
    finishes with the model's result and touches nothing outside its own window; the new
    values read back and are the next START's."""
    tb = SocTb(dut)
    await tb.reset()
    rng = random.Random(SEED + 60)
    prog = tile_program(tb, 3, rng, stall=2)
    pbuf = tb.place(prog)
    lo, hi = tb.drv.window()
    decoy = tb.drv.alloc(4096)                     # beyond every buffer of the run
    decoy_prog = Program().nop().end()
    tb.ddr.write(decoy.address, decoy_prog.to_bytes())
    tb.checker.window = (lo, hi)
    before = tb.snapshot()
    model_mem = tb.snapshot()
    want = tb.model.run(model_mem, pbuf.address, len(prog), lo, hi)
    assert want.status == "done"
    await tb.drv.start(pbuf, count=len(prog), window=(lo, hi))
    new = {"CMD_BASE": decoy.address, "CMD_COUNT": len(decoy_prog),
           "WINDOW_BASE": decoy.address, "WINDOW_LIMIT": decoy.end}
    for name, value in new.items():
        await tb.drv.write_reg(name, value)
    assert (await tb.drv.status())["busy"] == 1, "the run ended before the writes"
    result = await tb.drv.wait(timeout_s=5e-3)
    assert result.status["done"] == 1
    await tb.settle()
    tb.assert_clean()
    tb.assert_same_outside(before, lo, hi)
    tb.assert_equal_memory(model_mem)
    for name, value in new.items():
        assert await tb.drv.read_reg(name) == value, name
    # The next START runs the program and window written during the run.
    reads = len(tb.checker.read_bursts)
    tb.checker.window = (decoy.address, decoy.end)
    await tb.drv.write_reg("CONTROL", start=1)
    await tb.drv.wait(timeout_s=1e-3)
    assert all(decoy.address <= a < decoy.end for a, _ in tb.checker.read_bursts[reads:])
    out, _, _ = await tb.run(prog)
    assert out.status == "done"


@cocotb.test()
async def malformed_commands(dut):
    """Every dispatcher check, with the failing command's index."""
    tb = SocTb(dut)
    await tb.reset()
    cfg, bb = tb.cfg, tb.bb
    buf = tb.drv.alloc(8192)
    a = buf.address
    ib = isa.bank_bit(B.IBUF, 0)
    dib = buffer_depth(cfg, B.IBUF)
    dob = buffer_depth(cfg, B.OBUF)

    def good():
        return Program().nop().load(B.IBUF, 0, 0, 4, 1, a)

    cases = [
        ("bad opcode", good().raw(7).end(), E.BAD_OPCODE, 2),
        ("load into OBUF", good().load(B.OBUF, 0, 0, 4, 1, a).end(), E.BAD_BUFFER, 2),
        ("store from WBUF", good().store(0, 0, 4, 1, a, buffer=B.WBUF).end(), E.BAD_BUFFER, 2),
        ("misaligned address", good().load(B.WBUF, 1, 0, 4, 1, a + 4).end(), E.BAD_ALIGN, 2),
        ("misaligned stride", good().load(B.WBUF, 1, 0, 4, 2, a, bb + 4).end(), E.BAD_ALIGN, 2),
        ("beyond IBUF", good().load(B.IBUF, 1, dib - 3, 2, 2, a, 64).end(), E.SRAM_RANGE, 2),
        ("beyond OBUF", good().store(1, dob - 3, 7, 1, a).end(), E.SRAM_RANGE, 2),
        ("sram_addr beyond", good().store(0, 0xFFFF, 0, 0, a).end(), E.SRAM_RANGE, 2),
        ("load of no lines", good().load(B.PBUF, 0, 0, 4, 0, a).end(), E.EMPTY_LOAD, 2),
        ("load of no words", good().load(B.WBUF, 1, 0, 0, 3, a, 64).end(), E.EMPTY_LOAD, 2),
        ("empty load before range", good().load(B.IBUF, 1, 0xFFFF, 0, 0, 1 << 31).end(),
         E.EMPTY_LOAD, 2),
        ("no END", good().nop(), E.EMPTY_PROGRAM, 2),
        ("stride ignored for one line", good().load(B.WBUF, 1, 0, 4, 1, a, 3).raw(7).end(),
         E.BAD_OPCODE, 3),
        ("engine rejects", good().compute(needs=ib, releases=ib, count=3, fail=1).end(),
         E.BAD_COMPUTE, 2),
        ("engine range", good().compute(needs=ib, releases=ib, count=dib + 1).end(),
         E.BAD_COMPUTE, 2),
    ]
    for name, prog, cause, index in cases:
        out, _, _ = await tb.run(prog, expect=Outcome("error", cause, index))
        dut._log.info("%s: %s", name, out)
    # An empty program, and a misaligned CMD_BASE.
    await tb.drv.write_reg("CMD_COUNT", 0)
    await tb.drv.write_reg("CONTROL", start=1)
    await tb.settle()
    st = await tb.drv.status()
    assert (st["error"], st["cause"], st["cmd_index"]) == (1, E.EMPTY_PROGRAM, 0), st
    pbuf = tb.drv.alloc(64)
    tb.ddr.write(pbuf.address, Program().end().to_bytes())
    try:
        await tb.drv.run(type(pbuf)(pbuf.address + 4, 32), count=1)
        raise AssertionError("misaligned CMD_BASE ran")
    except AcceleratorError as e:
        assert (e.cause, e.index) == (E.BAD_ALIGN, 0)
    # Empty stores and computes are legal: they move nothing and still clear and set flags.
    prog = (Program().load(B.IBUF, 0, 0, 1, 1, a).compute(needs=ib, releases=ib, count=0)
            .store(0, 0, 5, 0, a + 4096).end())
    out, _, _ = await tb.run(prog)
    assert out.status == "done"
    tb.assert_clean()


@cocotb.test()
async def watchdog(dut):
    """A program whose flags can never be satisfied, and a bus that stops answering, both end
    with WATCHDOG within the bound; the bus drains once it answers again."""
    tb = SocTb(dut)
    await tb.reset()
    ib0, ib1 = isa.bank_bit(B.IBUF, 0), isa.bank_bit(B.IBUF, 1)
    prog, src, dst = copy_program(tb, 16)
    # CONV needs IBUF bank 1, never loaded: the compute unit waits forever.
    stuck = (Program().load(B.IBUF, 0, 0, 4, 1, src.address)
             .compute(needs=ib0 | ib1, releases=ib0, count=4).store(0, 0, 4, 1, dst.address)
             .end())
    bound = 300
    _, cycles, _ = await tb.run(stuck, watchdog=bound, expect=Outcome("error", E.WATCHDOG, 1))
    assert cycles < bound + 400, f"watchdog took {cycles} cycles"
    # A STORE whose bank is never filled, after END: the oldest command is the store.
    stuck2 = Program().nop().store(1, 0, 4, 1, dst.address).end()
    await tb.run(stuck2, watchdog=bound, expect=Outcome("error", E.WATCHDOG, 1))
    # The read data channel stops: the bus wait ends with WATCHDOG; busy stays until the
    # outstanding reads are answered.
    r = tb.ddr.read_if.r_channel
    r.set_pause_generator(repeat(True))
    tb.checker.window = None
    await tb.drv.start(prog.to_bytes(), watchdog=bound)
    t0 = cycles_now()
    await wait_cycles_until(dut, lambda: int(dut.irq.value) == 1, 5 * bound)
    assert cycles_now() - t0 < bound + 200
    st = await tb.drv.status()
    assert (st["error"], st["cause"], st["busy"]) == (1, E.WATCHDOG, 1), st
    r.set_pause_generator(None)
    r.pause = False
    await tb.settle()
    assert (await tb.drv.status())["busy"] == 0
    out, _, _ = await tb.run(prog)
    assert out.status == "done"


@cocotb.test()
async def engine_watchdog(dut):
    """An engine busy on one command for longer than the bound (nothing else moving) ends the
    run with WATCHDOG at that command and the interrupt; array_busy is not progress. With a
    bound above the command's time the same program finishes."""
    tb = SocTb(dut)
    await tb.reset()
    bound = 300
    prog, src, dst = copy_program(tb, 8, stall=100)   # 8 x 103 busy cycles
    _, cycles, _ = await tb.run(prog, watchdog=bound, expect=Outcome("error", E.WATCHDOG, 1))
    assert cycles < bound + 400, f"watchdog took {cycles} cycles"
    out, _, _ = await tb.run(prog, watchdog=2000)
    assert out.status == "done"


@cocotb.test()
async def stale_banks(dut):
    """Bank flags never outlive a run: after END, an error or a soft reset, a compute command
    whose banks no LOAD of its own run filled waits (WATCHDOG) instead of reading the earlier
    run's data; a LOAD of zero lines or words is refused (EMPTY_LOAD) instead of marking its
    bank full."""
    tb = SocTb(dut)
    await tb.reset()
    bound = 200
    src = tb.drv.alloc(256)
    dst = tb.drv.alloc(256)
    tb.fill(src)
    ib = isa.bank_bit(B.IBUF, 0)
    # Reads IBUF bank 0 without loading it.
    orphan = (Program().compute(needs=ib, releases=ib, count=4)
              .store(0, 0, 4, 1, dst.address).end())
    stuck = Outcome("error", E.WATCHDOG, 0)
    before = bytes(tb.ddr.read(dst.address, dst.nbytes))
    # END: the loaded bank is full when the run ends.
    out, _, _ = await tb.run(Program().load(B.IBUF, 0, 0, 4, 1, src.address).end())
    assert out.status == "done"
    await tb.run(orphan, watchdog=bound, expect=stuck)
    # An error after the load.
    await tb.run(Program().load(B.IBUF, 0, 0, 4, 1, src.address).nop().raw(7).end(),
                 expect=Outcome("error", E.BAD_OPCODE, 2))
    await tb.run(orphan, watchdog=bound, expect=stuck)
    # A soft reset while a compute waits for a bank never loaded, IBUF bank 0 full.
    waiting = (Program().load(B.IBUF, 0, 0, 4, 1, src.address)
               .compute(needs=ib | isa.bank_bit(B.IBUF, 1), releases=ib, count=4).end())
    pbuf = tb.place(waiting)
    tb.checker.window = tb.drv.window()
    await tb.drv.start(pbuf, count=len(waiting), window=tb.drv.window())
    await ClockCycles(dut.aclk, 150)
    assert (await tb.drv.status())["busy"] == 1
    await tb.drv.soft_reset(timeout_s=1e-3)
    await tb.run(orphan, watchdog=bound, expect=stuck)
    # Zero lines, zero words: refused at dispatch, before anything moves.
    for lines, words in ((0, 4), (1, 0)):
        empty = (Program().load(B.IBUF, 0, 0, 4, 1, src.address)
                 .load(B.IBUF, 1, 0, words, lines, src.address).end())
        await tb.run(empty, expect=Outcome("error", E.EMPTY_LOAD, 1))
    assert bytes(tb.ddr.read(dst.address, dst.nbytes)) == before, "stale data was stored"


async def _engine_starts(dut, seen):
    """Count the commands the engine takes (``compute.cmd`` handshakes)."""
    while True:
        await RisingEdge(dut.aclk)
        await ReadOnly()
        if int(dut.compute__cmd__valid.value) and int(dut.compute__cmd__ready.value):
            seen.append(cycles_now())


@cocotb.test()
async def no_successor(dut):
    """A command whose successor cannot be fetched (the last of a program without END, or the
    last before WINDOW_LIMIT) is refused before it is queued (rtl/cmdproc.py PUSH,
    PUSH_COMPUTE): the error's cause and index (EMPTY_PROGRAM at the command, DDR_WINDOW at
    its successor), the interrupt, no hang, and nothing of the command moves, even where its
    unit could have run it at once: a STORE whose OBUF bank is full writes nothing (its poisoned
    destination stays), a LOAD reads nothing, a compute command never reaches the engine, a
    STORE behind a full queue is refused without waiting. The SoC model and zynqnn.machine
    report the same outcome."""
    tb = SocTb(dut)
    await tb.reset()
    cfg, bb = tb.cfg, tb.bb
    n = 8
    src = tb.drv.alloc(4096)
    tb.fill(src)
    src2 = tb.drv.alloc(4096)       # only the refused LOAD's
    tb.fill(src2)
    dst = tb.drv.alloc(4096)
    pslot = tb.drv.alloc(16 * isa.COMMAND_BYTES)   # above the data: windows can end in it
    assert src.address < src2.address < dst.address < pslot.address
    window = (src.address, pslot.end)
    nbytes = n * buffer_word_bits(cfg, B.OBUF) // 8
    ib0 = isa.bank_bit(B.IBUF, 0)
    starts = []
    watcher = cocotb.start_soon(_engine_starts(dut, starts))

    def other_loads(prog):
        """Five LOADs into other banks: with the load unit busy, the dispatcher waits at the
        fifth for room in the load queue (QUEUE_DEPTH entries + the unit's)."""
        for buf, bank, words in ((B.IBUF, 1, n), (B.WBUF, 0, n), (B.WBUF, 1, n),
                                 (B.PBUF, 0, 2), (B.PBUF, 1, 2)):
            prog.load(buf, bank, 0, words, 1, src.address)
        return prog

    async def case(name, prog, want, win=window, watchdog=0):
        tb.place(prog, pslot)
        image = bytes(tb.ddr.read(win[0], win[1] - win[0]))
        poison = tb.rng.randbytes(nbytes + 64)
        tb.ddr.write(dst.address, poison)
        n_w, n_r, n_e = len(tb.checker.write_bursts), len(tb.checker.read_bursts), len(starts)
        out, cycles, counters = await tb.run(prog, window=win, watchdog=watchdog)  # the model's
        assert out == want, f"{name}: {out}, expected {want}"
        machine, _ = machine_run(cfg, prog, pslot.address, win, image)
        assert machine == want, f"{name}: zynqnn.machine {machine}, expected {want}"
        assert bytes(tb.ddr.read(dst.address, len(poison))) == poison, \
            f"{name}: the refused STORE wrote"
        assert len(tb.checker.write_bursts) == n_w, f"{name}: a write burst"
        dut._log.info("%s: %s after %d cycles", name, out, cycles)
        return tb.checker.read_bursts[n_r:], starts[n_e:], counters

    # A STORE last, its OBUF bank full: the dispatcher reaches it only after the LOAD (index
    # 2) that waits for the compute command to release IBUF bank 0 has run.
    store_last = (Program().load(B.IBUF, 0, 0, n, 1, src.address)
                  .compute(needs=ib0, releases=ib0, obuf_bank=0, count=n)
                  .load(B.IBUF, 0, 0, n, 1, src.address))
    other_loads(store_last).store(0, 0, n, 1, dst.address)
    last = len(store_last) - 1
    _, engine, _ = await case("STORE last, bank full", store_last,
                              Outcome("error", E.EMPTY_PROGRAM, last))
    assert len(engine) == 1, "the compute command before the STORE did not run"
    # The same program with END, WINDOW_LIMIT at the END: the STORE is refused for it.
    at_limit = Program()
    for c in store_last.commands:
        at_limit.raw(c)
    at_limit.end()
    limit = pslot.address + last * isa.COMMAND_BYTES + isa.COMMAND_BYTES
    for lim in (limit, limit + bb):
        await case(f"STORE before the limit (+{lim - limit})", at_limit,
                   Outcome("error", E.DDR_WINDOW, last + 1), win=(window[0], lim))
    # With the END inside, it runs and stores (the control).
    before = bytes(tb.ddr.read(dst.address, nbytes))
    out, _, _ = await tb.run(at_limit, window=(window[0], limit + isa.COMMAND_BYTES))
    assert out.status == "done"
    assert bytes(tb.ddr.read(dst.address, nbytes)) != before
    # A LOAD last, its bank empty and the load unit idle: nothing read from its source.
    reads, _, _ = await case("LOAD last", Program().nop().load(B.IBUF, 1, 0, n, 1,
                                                                src2.address),
                             Outcome("error", E.EMPTY_PROGRAM, 1))
    assert not any(src2.address <= a < src2.end for a, _ in reads), "the refused LOAD read"
    # (Its bank is not full in the next run anyway: flags are cleared at an error,
    # stale_banks.) A compute command last, its bank loaded before the dispatcher reaches it:
    # the engine never sees it.
    conv_last = other_loads(Program().load(B.IBUF, 0, 0, n, 1, src.address)) \
        .compute(needs=ib0, releases=ib0, obuf_bank=0, count=n)
    _, engine, counters = await case("compute last", conv_last,
                                     Outcome("error", E.EMPTY_PROGRAM, len(conv_last) - 1))
    assert not engine and counters["PERF_CYCLES_COMPUTE"] == 0, "the engine ran"
    # A STORE last behind a full store queue (STOREs of a bank nothing fills): refused at once,
    # not after the watchdog.
    stuck = Program()
    for _ in range(QUEUE_DEPTH + 1):
        stuck.store(1, 0, n, 1, src2.address)
    stuck.store(1, 0, n, 1, dst.address)
    _, _, counters = await case("STORE last, store queue full", stuck,
                                Outcome("error", E.EMPTY_PROGRAM, QUEUE_DEPTH + 1),
                                watchdog=2000)
    assert counters["PERF_CYCLES_BUSY"] < 500, counters["PERF_CYCLES_BUSY"]
    watcher.cancel()


@cocotb.test()
async def soft_reset(dut):
    """Soft reset while reads, compute and writes are in flight: every accepted AXI transaction
    completes, the accelerator goes idle with done and error clear, and the next run is
    correct."""
    tb = SocTb(dut, latency=(0.3, 8))
    await tb.reset()
    tb.backpressure(0.3)
    rng = random.Random(SEED + 30)
    for phase in ("read", "write", "compute"):
        prog = tile_program(tb, 4, rng, stall=2)
        pbuf = tb.place(prog)
        tb.checker.window = tb.drv.window()
        await tb.drv.start(pbuf, count=len(prog), window=tb.drv.window())
        if phase == "read":
            cond = lambda: len(tb.checker._reads) >= 2   # noqa: E731
        elif phase == "write":
            cond = lambda: tb.checker._b_owed >= 1 or tb.checker._w_beats   # noqa: E731
        else:
            cond = lambda: int(dut.compute__array_busy.value) == 1   # noqa: E731
        await wait_cycles_until(dut, cond, 20000)
        await RisingEdge(dut.aclk)
        await tb.drv.soft_reset(timeout_s=1e-3)
        st = await tb.drv.status()
        assert (st["busy"], st["done"], st["error"]) == (0, 0, 0), st
        await tb.settle()
        assert tb.checker.quiet
        tb.assert_clean()
        out, _, _ = await tb.run(prog, timeout_s=5e-3)
        assert out.status == "done", f"after a soft reset in {phase}: {out}"


@cocotb.test()
async def loads_overlap_compute(dut):
    """A double-buffered multi-tile program: the next tile's loads run while the engine
    computes (read data arrives in cycles the array is busy)."""
    tb = SocTb(dut)
    await tb.reset()
    rng = random.Random(SEED + 40)
    prog = tile_program(tb, 6, rng, stall=3, near_page=False, max_words=64)
    overlap = [0, 0]

    async def count():
        while True:
            await RisingEdge(dut.aclk)
            await ReadOnly()
            if int(dut.compute__array_busy.value):
                overlap[1] += 1
                if int(dut.m_axi_rvalid.value) and int(dut.m_axi_rready.value):
                    overlap[0] += 1

    task = cocotb.start_soon(count())
    out, cycles, counters = await tb.run(prog, timeout_s=5e-3)
    task.cancel()
    assert out.status == "done"
    dut._log.info("%d cycles, %d with the array busy, %d of them moving read data", cycles,
                  overlap[1], overlap[0])
    assert overlap[0] > 50, f"only {overlap[0]} read beats while computing"


@cocotb.test()
async def offset_sweep(dut):
    """LOAD and STORE at every beat offset up to a 4 KB boundary (as alexforencich/verilog-axi's
    DMA tests sweep offsets): for offsets of 0 to TB_SWEEP_BEATS beats (default 8) before a
    page boundary and lines of 1 word, the words up to the boundary, one word past it and 33
    words (a partial last beat when the words are narrower than the beat), a LOAD from
    there and a STORE of the same words to the same offset of another page; 64 guard bytes
    around every source and destination are unchanged, every destination equals its source,
    no burst crosses 4 KB (the AXI checker) and DDR equals the model. TB_SWEEP_WORDS=all
    sweeps every length from 1 to 40 words instead (the slow suite)."""
    tb = SocTb(dut, latency=(0.1, 3))
    await tb.reset()
    tb.backpressure(0.2)
    cfg, bb, rng = tb.cfg, tb.bb, random.Random(SEED + 70)
    wb_in = buffer_word_bits(cfg, B.IBUF) // 8
    assert wb_in == buffer_word_bits(cfg, B.OBUF) // 8      # the test engine copies words
    beats = int(os.environ.get("TB_SWEEP_BEATS", "8"))
    every = os.environ.get("TB_SWEEP_WORDS") == "all"
    cases = []
    for k in range(beats + 1):
        up_to = k * bb // wb_in
        lengths = range(1, 41) if every else sorted({1, max(1, up_to), up_to + 1, 33})
        cases += [(k * bb, n) for n in lengths]
    guard = 64
    per_prog = 96
    done = 0
    arena = tb.drv.alloc(8192 * (min(per_prog, len(cases)) + 1))    # every batch's
    base = (arena.address + 4095) // 4096 * 4096
    for first in range(0, len(cases), per_prog):
        batch = cases[first:first + per_prog]
        prog = Program()
        checks = []
        for i, (off, n) in enumerate(batch):
            nbytes = n * wb_in
            src = base + 8192 * i + 4096 - off
            dst = base + 8192 * i + 8192 - off
            src_data = rng.randbytes(nbytes + line_beats(cfg, B.IBUF, n) * bb - nbytes)
            tb.ddr.write(src - guard, rng.randbytes(guard))
            tb.ddr.write(src, src_data)
            tb.ddr.write(src + len(src_data), rng.randbytes(guard))
            tb.ddr.write(dst - guard, rng.randbytes(2 * guard + nbytes + bb))
            bank = i % 2
            ib = isa.bank_bit(B.IBUF, bank)
            prog.load(B.IBUF, bank, 0, n, 1, src)
            prog.compute(needs=ib, releases=ib, obuf_bank=bank, src_bank=bank, count=n)
            prog.store(bank, 0, n, 1, dst)
            checks.append((src - guard, len(src_data) + 2 * guard, dst, nbytes,
                           src_data[:nbytes]))
        prog.end()
        before = {a: bytes(tb.ddr.read(a, n)) for a, n, *_ in checks}
        before.update({d - guard: bytes(tb.ddr.read(d - guard, 2 * guard + n + bb))
                       for _, _, d, n, _ in checks})
        out, _, _ = await tb.run(prog, timeout_s=20e-3)
        assert out.status == "done", out
        for (a, n, d, nbytes, data), (off, words) in zip(checks, batch, strict=True):
            what = f"{words} words {off} bytes before a 4 KB boundary"
            assert bytes(tb.ddr.read(a, n)) == before[a], f"{what}: the source or its guard"
            got = bytes(tb.ddr.read(d - guard, 2 * guard + nbytes + bb))
            want = before[d - guard]
            assert got[:guard] == want[:guard], f"{what}: the guard below the destination"
            assert got[guard:guard + nbytes] == data, f"{what}: the destination"
            assert got[guard + nbytes:] == want[guard + nbytes:], \
                f"{what}: the guard above the destination"
        done += len(batch)
    dut._log.info("%d transfers at %d offsets before a 4 KB boundary (LOAD and STORE each), "
                  "guards intact", done, beats + 1)


@cocotb.test()
async def corrupted_programs(dut):
    """Randomly corrupted programs (TB_CORRUPT_RUNS of them): each ends in done or error within
    the watchdog bound, with the model's outcome, and never touches DDR outside the window;
    where the outcome is not the engine's or the watchdog's, it is ``zynqnn.machine``'s too."""
    runs = int(os.environ.get("TB_CORRUPT_RUNS", "50"))
    tb = SocTb(dut)
    await tb.reset()
    rng = random.Random(SEED + 50)
    cfg = tb.cfg
    bound = 400
    pslot = tb.drv.alloc(1024)                 # every program, below the data
    arena = tb.drv.alloc(3 * 4096)
    lo, hi = arena.address + 512, arena.end - 512
    # The window holds the programs and the arena's middle; its base is the programs' (a
    # corrupted STORE near the base could rewrite the program being fetched: only LOADs are
    # moved there).
    window = (pslot.address, hi)
    stats = {}
    edges = machine = 0
    for run in range(runs):
        bad, n_edges = corrupted_program(cfg, rng, window, lo, hi)
        edges += n_edges
        pbuf = tb.place(bad, pslot)
        alts = SocModel(cfg).engine_failures(tb.ddr.mem, pbuf.address, len(bad), window,
                                             watchdog=bound)
        image = bytes(tb.ddr.read(window[0], window[1] - window[0]))
        out, cycles, _ = await tb.run(bad, window=window, watchdog=bound, timeout_s=1e-3,
                                      alternatives=alts, compare=False)
        assert cycles < 6000, f"run {run} took {cycles} cycles"
        key = str(out).split(" at ")[0]
        stats[key] = stats.get(key, 0) + 1
        # The command-level model, where the two overlap: data movement (compute commands as
        # NOPs) and every outcome but the engine's and the flags' (BAD_COMPUTE, WATCHDOG).
        if out.cause not in (E.WATCHDOG, E.BAD_COMPUTE):
            want, _ = machine_run(cfg, bad, pbuf.address, window, image)
            assert want is None or out == want, f"run {run}: RTL {out}, zynqnn.machine {want}"
            machine += want is not None
    dut._log.info("%d corrupted programs (%d edge corruptions): %s; %d of them compared with "
                  "zynqnn.machine, 0 disagreements; no run beyond the watchdog bound, no DDR "
                  "byte outside the window changed", runs, edges, stats, machine)
