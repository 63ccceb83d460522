"""The driver's PYNQ backend against a stand-in for the PYNQ API (``pynq`` is not installable
here): ``MMIO`` read/write, ``allocate`` buffers with ``device_address`` / ``flush`` /
``invalidate`` and ``Interrupt.wait``. Behind the stand-in's registers, a fake accelerator runs
programs with the transaction-level model (``zynqnn.sim.model``) on what the CPU flushed, so a
missing flush or invalidate shows up as wrong data."""

from __future__ import annotations

import asyncio
import random
import types

import numpy as np
import pytest

from zynqnn.driver import (
    AcceleratorError,
    AcceleratorTimeout,
    ConfigMismatch,
    Driver,
    DriverError,
    PynqBackend,
)
from zynqnn.hw import isa, platform
from zynqnn.hw.config import get_config
from zynqnn.hw.regs import REGMAP, Access
from zynqnn.sim.model import Program, SocModel

B = isa.Buffer
CFG = get_config("tiny")


class FakeBuffer(np.ndarray):
    """``pynq.allocate``'s buffer: the CPU's view (this array) and the device's copy, kept apart
    until ``flush`` / ``invalidate``."""

    def flush(self):
        self._dev.mem[self.device_address] = bytearray(self.tobytes())
        self._dev.flushes += 1

    def invalidate(self):
        self[...] = np.frombuffer(bytes(self._dev.mem[self.device_address]), dtype=self.dtype)
        self._dev.invalidates += 1

    def freebuffer(self):
        del self._dev.mem[self.device_address]


class FakeAccelerator:
    """Registers of :data:`zynqnn.hw.regs.REGMAP`; START runs the program with the model."""

    def __init__(self, cfg, hang=False):
        self.cfg = cfg
        self.hang = hang
        self.regs = {r.offset: r.reset for r in REGMAP}
        self.mem: dict[int, bytearray] = {}   # device copy of each buffer, by address
        self.next = 0x1800_0000
        self.flushes = self.invalidates = 0
        self.irq = False
        self.log = []

    # DDR as the model sees it: only the device copies.
    def _find(self, addr, n):
        for base, data in self.mem.items():
            if base <= addr and addr + n <= base + len(data):
                return data, addr - base
        raise AssertionError(f"device access {addr:#x}+{n} outside every buffer")

    def read(self, addr, n):
        data, off = self._find(addr, n)
        return bytes(data[off:off + n])

    def write(self, addr, payload):
        data, off = self._find(addr, len(payload))
        data[off:off + len(payload)] = payload

    def reg_read(self, off):
        reg = REGMAP.at(off)
        assert reg is not None, f"read of unmapped offset {off:#x}"
        if reg.const is not None:
            return reg.const_value(self.cfg)
        if reg.access is Access.WO:
            return 0
        return self.regs[off]

    def reg_write(self, off, value):
        reg = REGMAP.at(off)
        assert reg is not None, f"write of unmapped offset {off:#x}"
        self.log.append((reg.name, value))
        if reg.access is Access.RW:
            self.regs[off] = value & sum(f.mask for f in reg.fields)
        elif reg.access is Access.W1C:
            self.regs[off] &= ~value
            self._update_irq()
        elif reg.name == "CONTROL" and REGMAP["CONTROL"].decode(value)["start"]:
            self._start()
        elif reg.name == "CONTROL" and REGMAP["CONTROL"].decode(value)["soft_reset"] and \
                self.hang != "hard":
            self.regs[REGMAP["STATUS"].offset] = 0   # the run is abandoned, the core idle

    def _r(self, name):
        return REGMAP[name].decode(self.regs[REGMAP[name].offset])

    def _start(self):
        if self.hang:
            self.regs[REGMAP["STATUS"].offset] = REGMAP["STATUS"].encode(busy=1)
            return
        out = SocModel(self.cfg).run(self, self._r("CMD_BASE")["addr"],
                                     self._r("CMD_COUNT")["count"],
                                     self._r("WINDOW_BASE")["addr"],
                                     self._r("WINDOW_LIMIT")["addr"])
        st = REGMAP["STATUS"]
        if out.status == "done":
            self.regs[st.offset] = st.encode(done=1)
            self.regs[REGMAP["IRQ_STATUS"].offset] |= 1
        else:
            self.regs[st.offset] = st.encode(error=1, cause=out.cause, cmd_index=out.index)
            self.regs[REGMAP["IRQ_STATUS"].offset] |= 2
        self.regs[REGMAP["PERF_CYCLES_BUSY_LO"].offset] = 1234
        self.regs[REGMAP["PERF_CYCLES_BUSY_HI"].offset] = 5
        self._update_irq()

    def _update_irq(self):
        self.irq = bool(self.regs[REGMAP["IRQ_STATUS"].offset]
                        & self.regs[REGMAP["IRQ_ENABLE"].offset])


def fake_pynq(dev: FakeAccelerator):
    """A module with the PYNQ calls the backend makes."""

    class MMIO:
        def __init__(self, base, length):
            assert (base, length) == (platform.BASE_ADDRESS, platform.REG_SPACE_BYTES)

        def read(self, off):
            return dev.reg_read(off)

        def write(self, off, value):
            dev.reg_write(off, value)

    def allocate(shape, dtype):
        buf = np.zeros(shape, dtype).view(FakeBuffer)
        buf._dev = dev
        buf.device_address = dev.next
        dev.mem[dev.next] = bytearray(buf.nbytes)
        dev.next += -(-buf.nbytes // 4096) * 4096
        return buf

    class Interrupt:
        def __init__(self, name):
            self.name = name

        async def wait(self):
            while not dev.irq:
                await asyncio.sleep(1e-4)

    return types.SimpleNamespace(MMIO=MMIO, allocate=allocate, Interrupt=Interrupt)


def _copy_program(drv, rng, words=20):
    src = drv.alloc(words * 4)
    dst = drv.alloc(words * 4)
    data = bytes(rng.getrandbits(8) for _ in range(words * 4))
    prog = (Program().load(B.IBUF, 0, 0, words, 1, src.address)
            .compute(needs=isa.bank_bit(B.IBUF, 0), releases=isa.bank_bit(B.IBUF, 0),
                     count=words, add=7, xor=0x55)
            .store(0, 0, words, 1, dst.address).end())
    return prog, src, dst, data


def _expected(data, words, add=7, xor=0x55):
    out = b""
    for i in range(words):
        v = int.from_bytes(data[4 * i:4 * i + 4], "little")
        out += (((v + add) & 0xFFFFFFFF) ^ xor).to_bytes(4, "little")
    return out


@pytest.mark.parametrize("use_irq", [True, False])
def test_run_through_pynq_backend(use_irq):
    dev = FakeAccelerator(CFG)
    pynq = fake_pynq(dev)
    backend = PynqBackend(pynq=pynq, interrupt=pynq.Interrupt("zynqnn/irq") if use_irq else None)
    drv = Driver(backend, CFG)
    drv.check_config()
    rng = random.Random(3)
    prog, src, dst, data = _copy_program(drv, rng)
    drv.write_mem(src, data)
    result = drv.run(prog.to_bytes(), timeout_s=0.5, irq=use_irq)
    assert result.status["done"] == 1
    assert result.cycles == (5 << 32) | 1234
    assert drv.read_mem(dst) == _expected(data, 20)
    # The registers the run programmed: the window covers every buffer, the program is where the
    # driver put it, IRQ_STATUS was cleared before start and after the run.
    names = [n for n, _ in dev.log]
    assert names.index("IRQ_STATUS") < names.index("CONTROL")
    regs = dict(dev.log)
    lo, hi = drv.window()
    assert (regs["WINDOW_BASE"], regs["WINDOW_LIMIT"]) == (lo, hi)
    assert lo <= regs["CMD_BASE"] < hi
    assert dev.flushes >= 2 and dev.invalidates >= 1
    assert not dev.irq


def test_error_names_cause_and_index():
    dev = FakeAccelerator(CFG)
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    buf = drv.alloc(4096)
    prog = Program().nop().load(B.OBUF, 0, 0, 4, 1, buf.address).end()
    with pytest.raises(AcceleratorError, match=r"BAD_BUFFER \(2\) at command 1") as e:
        drv.run(prog.to_bytes(), irq=False, timeout_s=0.1)
    assert (e.value.cause, e.value.index) == (isa.ErrorCause.BAD_BUFFER, 1)


def test_config_mismatch_names_the_fields():
    dev = FakeAccelerator(get_config("tiny"))
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), get_config("pynq_z2"))
    with pytest.raises(ConfigMismatch, match=r"CFG_ARRAY.rows = 4 \(expected 16\)"):
        drv.check_config()


def test_timeout_when_the_accelerator_hangs():
    """A timed-out run is soft-reset before the error is raised (its DMA must not outlive the
    caller's buffers): the next start finds the accelerator idle."""
    dev = FakeAccelerator(CFG, hang=True)
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    buf = drv.alloc(64)
    with pytest.raises(AcceleratorTimeout, match=r"within 0.02 s \(soft-reset\)"):
        drv.run(Program().end().to_bytes(), irq=False, timeout_s=0.02)
    assert buf.address in dev.mem
    resets = [v for n, v in dev.log if n == "CONTROL" and REGMAP["CONTROL"].decode(v)["soft_reset"]]
    assert len(resets) == 1
    assert not drv.status()["busy"]
    drv.start(Program().end().to_bytes())   # idle again: no "busy" refusal


def test_timeout_when_even_soft_reset_hangs():
    dev = FakeAccelerator(CFG, hang="hard")
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    drv.alloc(64)
    with pytest.raises(AcceleratorTimeout, match="soft reset did not bring it to idle"):
        drv.run(Program().end().to_bytes(), irq=False, timeout_s=0.02)
    with pytest.raises(DriverError, match="busy"):
        drv.start(Program().end().to_bytes())


def test_free_leaves_the_window_and_the_board_memory():
    dev = FakeAccelerator(CFG)
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    a, b, c = drv.alloc(4096), drv.alloc(4096), drv.alloc(4096)
    assert drv.window() == (a.address, c.end)
    drv.free(c)
    assert drv.window() == (a.address, b.end) and c.address not in dev.mem
    drv.free(a)
    assert drv.window() == (b.address, b.end)
    with pytest.raises(DriverError, match="freed already"):
        drv.free(a)
    drv.free(b)
    with pytest.raises(DriverError, match="no buffer allocated"):
        drv.window()


def test_a_run_with_its_buffers_gets_a_tight_window():
    """``buffers=``: the run's window is the smallest range holding the program and those
    buffers, not every buffer of the driver: another user's buffers allocated before and after
    stay outside it, and a LOAD reaching one of them is refused (DDR_WINDOW)."""
    dev = FakeAccelerator(CFG)
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    before = drv.alloc(4096)
    pbuf = drv.alloc(4096)
    prog, src, dst, data = _copy_program(drv, random.Random(5))
    after = drv.alloc(4096)
    drv.write_mem(src, data)
    drv.write_mem(pbuf, prog.to_bytes())
    drv.run(pbuf, count=len(prog), buffers=[src, dst], irq=False)
    regs = dict(dev.log)
    assert (regs["WINDOW_BASE"], regs["WINDOW_LIMIT"]) == (pbuf.address, dst.end)
    assert drv.read_mem(dst) == _expected(data, 20)
    assert drv.window() == (before.address, after.end)   # the driver's default: every buffer
    words = 64 // (CFG.act_word_bits // 8)
    for other in (before, after):
        drv.write_mem(pbuf, Program().load(B.IBUF, 0, 0, words, 1, other.address).end()
                      .to_bytes())
        with pytest.raises(AcceleratorError, match=r"DDR_WINDOW \(4\) at command 0"):
            drv.run(pbuf, count=2, buffers=[src, dst], irq=False)
        drv.run(pbuf, count=2, irq=False)   # the all-buffers window reaches it
    with pytest.raises(DriverError, match="window or its buffers, not both"):
        drv.run(pbuf, count=2, buffers=[src], window=(pbuf.address, pbuf.end))
    with pytest.raises(DriverError, match="DeviceBuffers .* not int"):
        drv.run(pbuf, count=2, buffers=[src.address])


def test_an_outgrown_program_buffer_is_freed():
    """A bytes program longer than the driver's program buffer gets a new one; the old one is
    freed (it would otherwise stay in every later default window)."""
    dev = FakeAccelerator(CFG)
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    drv.run(Program().end().to_bytes(), irq=False)
    first = drv._program_buf
    long = Program()
    for _ in range(4096 // isa.COMMAND_BYTES):
        long.nop()
    drv.run(long.end().to_bytes(), irq=False)
    assert drv._program_buf is not first and drv._program_buf.nbytes > 4096
    assert first.address not in dev.mem and all(b is not first for b in drv.buffers)
    assert drv.window() == (drv._program_buf.address, drv._program_buf.end)


def test_a_busy_accelerator_keeps_its_program():
    """A start while a run is going is refused before the driver rewrites the program buffer
    the running program is fetched from."""
    dev = FakeAccelerator(CFG, hang="hard")
    drv = Driver(PynqBackend(pynq=fake_pynq(dev)), CFG)
    drv.start(Program().nop().end().to_bytes(), irq=False)
    running = bytes(dev.mem[drv._program_buf.address][:2 * isa.COMMAND_BYTES])
    with pytest.raises(DriverError, match="busy"):
        drv.start(Program().end().end().to_bytes(), irq=False)
    assert bytes(dev.mem[drv._program_buf.address][:2 * isa.COMMAND_BYTES]) == running


def test_from_overlay_finds_the_ip_by_vlnv():
    dev = FakeAccelerator(CFG)
    pynq = fake_pynq(dev)
    overlay = types.SimpleNamespace(ip_dict={
        "axi_gpio_0": {"type": "xilinx.com:ip:axi_gpio:2.0", "phys_addr": 0x4120_0000},
        "zynqnn_top_0": {"type": platform.VLNV, "phys_addr": platform.BASE_ADDRESS,
                         "addr_range": platform.REG_SPACE_BYTES,
                         "interrupts": {"irq": {"controller": "axi_intc_0", "index": 0}}},
    })
    backend = PynqBackend.from_overlay(overlay, pynq=pynq)
    assert backend.interrupt.name == "zynqnn_top_0/irq"
    Driver(backend, CFG).check_config()


def test_driver_imports_without_pynq():
    with pytest.raises(ModuleNotFoundError):
        PynqBackend()


def test_asynchronous_mode_runs_the_same_code():
    """With ``asynchronous=True`` the driver's methods are awaitable (Jupyter)."""
    dev = FakeAccelerator(CFG)
    pynq = fake_pynq(dev)
    drv = Driver(PynqBackend(pynq=pynq, interrupt=pynq.Interrupt("x/irq"), asynchronous=True),
                 CFG)
    rng = random.Random(4)
    prog, src, dst, data = _copy_program(drv, rng)

    async def main():
        await drv.check_config()
        await drv.write_mem(src, data)
        result = await drv.run(prog.to_bytes(), timeout_s=0.5)
        return result, await drv.read_mem(dst)

    result, out = asyncio.run(main())
    assert result.status["done"] == 1
    assert out == _expected(data, 20)


class LoopBoundInterrupt:
    """``pynq.Interrupt`` over ``pynq.uio.UioController``, with a pipe for ``/dev/uioN``: the
    read end is watched on ``asyncio.get_event_loop()`` from construction on (as UioController
    does), arming a wait writes a count into the pipe while the accelerator's ``irq`` is high
    (a level interrupt re-enabled), and the ``asyncio.Event`` binds to the loop of its first
    wait. Unlike ``fake_pynq``'s polling interrupt, a wait run on another loop never ends."""

    def __init__(self, dev):
        import os
        import warnings

        self.dev = dev
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                self.loop = asyncio.get_event_loop()
            except RuntimeError:   # an earlier test's asyncio.run() unset the thread's loop
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
        self.loop.add_reader(self.r, self._callback)
        self.event = asyncio.Event()
        self.waiting = False
        self.results = []

    def _callback(self):
        import os

        os.read(self.r, 4)
        self.event.set()

    async def wait(self):
        import os

        if not self.waiting:
            self.event.clear()
            self.waiting = True
            if self.dev.irq:
                os.write(self.w, (1).to_bytes(4, "little"))
        await self.event.wait()
        self.waiting = False

    def close(self):
        import os

        self.loop.remove_reader(self.r)
        os.close(self.r)
        os.close(self.w)


def test_interrupt_is_waited_for_on_the_threads_event_loop():
    """Two runs in a row each end on the interrupt at once, waited for as PYNQ's own drivers do
    (the thread's event loop, where pynq serves the UIO device). The old ``asyncio.run`` per
    wait timed out on the first run and raised on the second. tests/test_pynq_interrupt.py does
    the same against pynq's own classes."""
    import time

    dev = FakeAccelerator(CFG)
    irq = LoopBoundInterrupt(dev)
    backend = PynqBackend(pynq=fake_pynq(dev), interrupt=irq)
    seen = []
    wait_irq = backend.wait_irq

    async def recording(timeout_s):
        t0 = time.perf_counter()
        seen.append((await wait_irq(timeout_s), time.perf_counter() - t0))
        return seen[-1][0]

    backend.wait_irq = recording
    drv = Driver(backend, CFG)
    prog, src, dst, data = _copy_program(drv, random.Random(5))
    drv.write_mem(src, data)
    try:
        for _ in range(2):
            assert drv.run(prog.to_bytes(), timeout_s=2.0).status["done"] == 1
    finally:
        irq.close()
    assert [ok for ok, _ in seen] == [True, True], seen
    assert all(t < 0.5 for _, t in seen), seen
    assert drv.read_mem(dst) == _expected(data, 20)
