"""The host driver: one :class:`Driver` for the board and for simulation.

The driver speaks the register protocol of :mod:`zynqnn.hw.regs` through a small *backend*:

* :class:`PynqBackend`: ``pynq.MMIO`` for the registers, ``pynq.allocate`` buffers (physical
  ``device_address``, ``flush()`` before the accelerator reads, ``invalidate()`` after it writes)
  and the interrupt (or polling). ``pynq`` is imported when the backend is created.
* ``zynqnn.sim.backend.CocotbBackend``: cocotbext-axi's ``AxiLiteMaster`` as the CPU, an
  ``AxiRam`` as DDR, the ``irq`` pin, in simulated time.

Every driver operation is written once, as a coroutine over the backend's (async) methods. With
an asynchronous backend (``backend.is_async``, cocotb) a driver method returns that coroutine to
be awaited; with a synchronous one (PYNQ) it runs it to completion and returns the result, so the
board and the simulation run the same code path::

    drv = Driver(PynqBackend.from_overlay(overlay), cfg)      # board
    drv.check_config()
    buf = drv.alloc(4096)
    drv.write_mem(buf, data)
    result = drv.run(program, buffers=[buf], timeout_s=1.0)   # the window: buf and the program
    out = drv.read_mem(buf)
    drv.free(buf)

    drv = Driver(CocotbBackend(...), cfg)                     # cocotb test
    await drv.check_config()
    result = await drv.run(program, timeout_s=1e-3)

A run stops on the interrupt (or by polling STATUS) within ``timeout_s``; an error status raises
:class:`AcceleratorError` naming the cause and the command index; a timeout soft-resets the
accelerator before :class:`AcceleratorTimeout` is raised.

The DDR window of a run (WINDOW_BASE, WINDOW_LIMIT) is the one range the accelerator may read or
write. The Zynq's HP ports have no IOMMU, so everything inside it is reachable, other users'
memory between two buffers included: give each run its own buffers (``buffers=``, the window is
then the smallest range holding them and the program) or an explicit ``window=``, and
:meth:`Driver.free` buffers that are done with. Without either, a run's window holds every
buffer of the driver not freed (:meth:`Driver.window`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

from zynqnn.hw import isa, platform
from zynqnn.hw.config import HwConfig
from zynqnn.hw.regs import ID_MAGIC, REGMAP, VERSION, Access, RegisterMap

__all__ = [
    "Driver",
    "DeviceBuffer",
    "RunResult",
    "Backend",
    "PynqBackend",
    "DriverError",
    "AcceleratorError",
    "ConfigMismatch",
    "AcceleratorTimeout",
]


class DriverError(RuntimeError):
    """Base class of the driver's errors."""


class AcceleratorError(DriverError):
    """The accelerator stopped with an error.

    Attributes: ``cause`` (:class:`zynqnn.hw.isa.ErrorCause`), ``index`` (the failing command),
    ``status`` (STATUS fields).
    """

    def __init__(self, cause: isa.ErrorCause, index: int, status: dict):
        self.cause = cause
        self.index = index
        self.status = status
        super().__init__(f"accelerator error {cause.name} ({int(cause)}) at command {index}")


class ConfigMismatch(DriverError):
    """The hardware's config readback differs from the HwConfig the driver was given."""


class AcceleratorTimeout(DriverError, TimeoutError):
    """The accelerator did not finish in time."""


@dataclass(frozen=True)
class DeviceBuffer:
    """Memory the accelerator can reach: ``nbytes`` at physical ``address``; ``handle`` is the
    backend's object (a ``pynq`` buffer, a simulated region)."""

    address: int
    nbytes: int
    handle: Any = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> int:
        return self.address + self.nbytes


@dataclass
class RunResult:
    status: dict
    counters: dict[str, int]

    @property
    def cycles(self) -> int:
        return self.counters["PERF_CYCLES_BUSY"]


class Backend(Protocol):
    """What the driver needs from a platform. Methods are coroutines; a synchronous backend
    (``is_async = False``) never suspends in them."""

    is_async: bool

    async def read32(self, offset: int) -> int: ...

    async def write32(self, offset: int, value: int) -> None: ...

    def alloc(self, nbytes: int) -> DeviceBuffer: ...

    async def write_buffer(self, buf: DeviceBuffer, offset: int, data: bytes) -> None: ...

    async def read_buffer(self, buf: DeviceBuffer, offset: int, nbytes: int) -> bytes: ...

    async def flush(self, buf: DeviceBuffer) -> None: ...

    async def invalidate(self, buf: DeviceBuffer) -> None: ...

    async def wait_irq(self, timeout_s: float) -> bool:
        """Wait until ``irq`` is high; ``False`` on timeout or without an interrupt line."""

    async def sleep(self, seconds: float) -> None: ...

    #: First polling interval when waiting for STATUS (optional; default 100 us).
    poll_s: float


def _drive(coro):
    """Run a coroutine that never suspends (a synchronous backend's) to completion."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a synchronous backend suspended the driver")


def _api(method):
    """Awaitable with an asynchronous backend, immediate with a synchronous one."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        coro = method(self, *args, **kwargs)
        return coro if self.backend.is_async else _drive(coro)

    return wrapper


class Driver:
    """Runs programs on one accelerator.

    Parameters
    ----------
    backend:
        The platform (:class:`PynqBackend`, ``zynqnn.sim.backend.CocotbBackend``).
    cfg:
        The hardware configuration the accelerator must have been built with.
    regmap:
        The register map (default :data:`zynqnn.hw.regs.REGMAP`).
    """

    def __init__(self, backend: Backend, cfg: HwConfig, regmap: RegisterMap = REGMAP):
        self.backend = backend
        self.cfg = cfg
        self.regmap = regmap
        self.buffers: list[DeviceBuffer] = []
        self._program_buf: DeviceBuffer | None = None
        self._checked = False

    # -- registers ---------------------------------------------------------------------------

    async def _read(self, name: str) -> int:
        return await self.backend.read32(self.regmap[name].offset)

    async def _write(self, name: str, value: int | None = None, **fields) -> None:
        reg = self.regmap[name]
        if reg.access in (Access.RO,):
            raise DriverError(f"{name} is read-only")
        if value is None:
            value = reg.encode(**fields)
        elif fields:
            raise DriverError("give a value or fields, not both")
        if not 0 <= value < 1 << 32:
            raise DriverError(f"{name} = {value:#x} does not fit in 32 bits")
        await self.backend.write32(reg.offset, value)

    async def _fields(self, name: str) -> dict[str, int]:
        return self.regmap[name].decode(await self._read(name))

    read_reg = _api(_read)
    write_reg = _api(_write)
    fields = _api(_fields)

    async def _status(self) -> dict:
        st = await self._fields("STATUS")
        st["cause"] = isa.ErrorCause(st["cause"])
        return st

    status = _api(_status)

    async def _counters(self) -> dict[str, int]:
        out = {}
        for name in self.regmap.counters:
            lo = await self._read(f"{name}_LO")   # latches _HI
            hi = await self._read(f"{name}_HI")
            out[name] = hi << 32 | lo
        return out

    counters = _api(_counters)

    async def _check_config(self) -> None:
        """Raise :class:`ConfigMismatch` unless the hardware is this driver's build."""
        magic = await self._read("ID")
        if magic != ID_MAGIC:
            raise ConfigMismatch(f"ID reads {magic:#010x}, expected {ID_MAGIC:#010x}: no "
                                 f"zynqnn accelerator at this address")
        version = await self._fields("VERSION")
        if version["major"] != VERSION[0]:
            raise ConfigMismatch(f"register map version {version['major']}.{version['minor']}, "
                                 f"the driver speaks {VERSION[0]}.x")
        problems = []
        for reg in self.regmap:
            if reg.const is None or reg.name in ("ID", "VERSION"):
                continue
            got = reg.decode(await self._read(reg.name))
            want = reg.decode(reg.const_value(self.cfg))
            for fname, value in want.items():
                if got[fname] != value:
                    problems.append(f"{reg.name}.{fname} = {got[fname]} (expected {value})")
        if problems:
            raise ConfigMismatch(f"hardware is not {self.cfg.config_id} ({self.cfg.name}): "
                                 + "; ".join(problems))
        self._checked = True

    check_config = _api(_check_config)

    # -- memory ------------------------------------------------------------------------------

    def alloc(self, nbytes: int) -> DeviceBuffer:
        """A buffer the accelerator can reach. A run without its own ``window`` may touch every
        buffer allocated here and not freed (:meth:`window`); give runs a tight window."""
        buf = self.backend.alloc(nbytes)
        self.buffers.append(buf)
        return buf

    def free(self, buf: DeviceBuffer) -> None:
        """Give ``buf`` back: it leaves :meth:`window`, and the backend frees its memory (on the
        board ``pynq``'s ``freebuffer()``). Never free a buffer a running program uses."""
        if not any(b is buf for b in self.buffers):
            raise DriverError(f"buffer at {buf.address:#x} was not allocated by this driver "
                              "(or was freed already)")
        self.buffers = [b for b in self.buffers if b is not buf]
        if self._program_buf is buf:
            self._program_buf = None
        release = getattr(self.backend, "free", None)
        if release is not None:
            release(buf)

    async def _write_mem(self, buf: DeviceBuffer, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > buf.nbytes:
            raise DriverError(f"{len(data)} bytes at offset {offset} overrun a "
                              f"{buf.nbytes}-byte buffer")
        await self.backend.write_buffer(buf, offset, bytes(data))
        await self.backend.flush(buf)

    async def _read_mem(self, buf: DeviceBuffer, nbytes: int | None = None,
                        offset: int = 0) -> bytes:
        nbytes = buf.nbytes - offset if nbytes is None else nbytes
        if offset < 0 or offset + nbytes > buf.nbytes:
            raise DriverError(f"{nbytes} bytes at offset {offset} overrun a "
                              f"{buf.nbytes}-byte buffer")
        await self.backend.invalidate(buf)
        return await self.backend.read_buffer(buf, offset, nbytes)

    write_mem = _api(_write_mem)
    read_mem = _api(_read_mem)

    def window(self, buffers=None) -> tuple[int, int]:
        """The smallest DDR window holding ``buffers`` (default: every buffer allocated through
        this driver and not freed). The HP ports have no IOMMU: memory between those buffers is
        inside it too."""
        bufs = self.buffers if buffers is None else list(buffers)
        if not bufs:
            raise DriverError("no buffer allocated: nothing for the accelerator to access"
                              if buffers is None else "an empty list of buffers")
        for b in bufs:
            if not isinstance(b, DeviceBuffer):
                raise DriverError(f"a run's buffers are DeviceBuffers (from alloc()), not "
                                  f"{type(b).__name__}")
            if b.nbytes <= 0 or b.address < 0 or b.end > 1 << 32:
                raise DriverError(f"buffer [{b.address:#x}, {b.end:#x}) is not a range of the "
                                  "32-bit address space")
        return min(b.address for b in bufs), max(b.end for b in bufs)

    # -- runs --------------------------------------------------------------------------------

    async def _soft_reset(self, timeout_s: float = 0.01) -> None:
        await self._write("CONTROL", soft_reset=1)
        await self._wait_idle(timeout_s)

    soft_reset = _api(_soft_reset)

    async def _wait_idle(self, timeout_s: float) -> dict:
        deadline = _Deadline(self.backend, timeout_s)
        while True:
            st = await self._status()
            if not st["busy"]:
                return st
            if await deadline.expired():
                raise AcceleratorTimeout(f"accelerator still busy after {timeout_s} s: {st}")

    async def _start(self, program: bytes | DeviceBuffer, count: int | None = None,
                     window: tuple[int, int] | None = None, watchdog: int = 0,
                     irq: bool = True, buffers=None) -> None:
        """Write ``program`` (bytes, or a buffer holding ``count`` commands), program the
        registers and start. The window: ``window`` if given, else the smallest range holding
        ``buffers`` (the buffers this run reads and writes) and the program, else every buffer
        of this driver not freed. The first start checks the config readback."""
        if window is not None and buffers is not None:
            raise DriverError("give a run's window or its buffers, not both")
        if not self._checked:
            await self._check_config()
        st = await self._status()
        if st["busy"]:   # before the program buffer is rewritten (or freed) under a run
            raise DriverError("accelerator busy: wait for the previous run or soft_reset()")
        if isinstance(program, DeviceBuffer):
            if count is None:
                raise DriverError("give the command count of a program buffer")
            prog = program
        else:
            program = bytes(program)
            if len(program) % isa.COMMAND_BYTES:
                raise DriverError(f"a program is a multiple of {isa.COMMAND_BYTES} bytes, not "
                                  f"{len(program)}")
            count = len(program) // isa.COMMAND_BYTES if count is None else count
            if self._program_buf is None or self._program_buf.nbytes < len(program):
                if self._program_buf is not None:   # outgrown: it leaves the window
                    self.free(self._program_buf)
                self._program_buf = self.alloc(max(len(program), 4096))
            prog = self._program_buf
            await self._write_mem(prog, program)
        if window is not None:
            lo, hi = window
        else:
            lo, hi = self.window(None if buffers is None else [prog, *buffers])
        await self._write("CMD_BASE", prog.address)
        await self._write("CMD_COUNT", count=count)
        await self._write("WINDOW_BASE", lo)
        await self._write("WINDOW_LIMIT", hi)
        await self._write("WATCHDOG", watchdog)
        await self._write("IRQ_ENABLE", done=int(irq), error=int(irq))
        await self._write("IRQ_STATUS", done=1, error=1)
        await self._write("CONTROL", start=1)

    start = _api(_start)

    async def _wait(self, timeout_s: float = 1.0, irq: bool = True) -> RunResult:
        """Wait for the run to end; raise on error or timeout; clear the interrupt. On a timeout
        the accelerator is soft-reset first, so that no DMA of the abandoned run outlives the
        caller's buffers."""
        deadline = _Deadline(self.backend, timeout_s)
        if irq:
            await self.backend.wait_irq(timeout_s)
        while True:
            st = await self._status()
            if st["done"] or st["error"]:
                break
            if await deadline.expired():
                try:
                    await self._soft_reset()
                    stopped = "soft-reset"
                except AcceleratorTimeout:
                    stopped = "soft reset did not bring it to idle either"
                raise AcceleratorTimeout(f"no done or error within {timeout_s} s ({stopped}): "
                                         f"{st}")
        await self._write("IRQ_STATUS", done=1, error=1)
        if st["error"]:
            raise AcceleratorError(st["cause"], st["cmd_index"], st)
        return RunResult(st, await self._counters())

    wait = _api(_wait)

    async def _run(self, program: bytes | DeviceBuffer, count: int | None = None,
                   window: tuple[int, int] | None = None, watchdog: int = 0,
                   timeout_s: float = 1.0, irq: bool = True, buffers=None) -> RunResult:
        """Start ``program`` and wait for it (see :meth:`start` and :meth:`wait`)."""
        await self._start(program, count, window, watchdog, irq, buffers)
        return await self._wait(timeout_s, irq)

    run = _api(_run)


class _Deadline:
    """Polls in steps that grow to a tenth of the timeout."""

    def __init__(self, backend, timeout_s):
        self.backend = backend
        self.left = timeout_s
        self.step = min(timeout_s / 100, getattr(backend, "poll_s", 1e-4))

    async def expired(self) -> bool:
        if self.left <= 0:
            return True
        step = min(self.step, self.left)
        await self.backend.sleep(step)
        self.left -= step
        self.step = min(self.step * 2, max(self.left / 10, 1e-7))
        return False


def _event_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, the one ``pynq.Interrupt`` is served on.

    ``pynq.uio.UioController`` (the interrupt's UIO device) registers its file with
    ``asyncio.get_event_loop()`` when the first ``Interrupt`` on it is made; the wait must run
    on that same loop. A thread without a usable loop gets a new one, set as its loop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # no current loop: 3.12+ warn
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:   # none set in this thread (asyncio.run() unsets it)
            loop = None
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class PynqBackend:
    """The board: registers through ``pynq.MMIO``, DDR through ``pynq.allocate``.

    Parameters
    ----------
    mmio:
        A ``pynq.MMIO`` (or an IP's ``.mmio``); default: one at ``base_address``.
    interrupt:
        A ``pynq.Interrupt`` for ``irq``, or ``None`` to poll STATUS. The synchronous driver
        waits for it as PYNQ's own drivers do, on this thread's event loop
        (``asyncio.get_event_loop().run_until_complete``), the loop pynq serves the UIO
        device on; with an event loop already running in the thread it polls STATUS instead.
    pynq:
        The ``pynq`` module (tests pass a stand-in); default: imported now.
    asynchronous:
        Make the driver's methods awaitable (for code already inside an event loop, e.g. a
        Jupyter notebook): the interrupt is then awaited instead of polled for (create the
        ``Interrupt`` in the thread of that loop: pynq binds it to ``get_event_loop()``).
    """

    def __init__(self, mmio=None, interrupt=None, base_address: int = platform.BASE_ADDRESS,
                 pynq=None, asynchronous: bool = False):
        self.is_async = asynchronous
        self.pynq = importlib.import_module("pynq") if pynq is None else pynq
        self.mmio = mmio if mmio is not None else self.pynq.MMIO(base_address,
                                                                 platform.REG_SPACE_BYTES)
        self.interrupt = interrupt

    @classmethod
    def from_overlay(cls, overlay, name: str | None = None, pynq=None, asynchronous=False):
        """The accelerator of a loaded ``pynq.Overlay`` (found by its VLNV, or ``name``)."""
        pynq = importlib.import_module("pynq") if pynq is None else pynq
        if name is None:
            found = [k for k, v in overlay.ip_dict.items() if v.get("type") == platform.VLNV]
            if len(found) != 1:
                raise DriverError(f"expected one {platform.VLNV} in the overlay, found "
                                  f"{found or 'none'}")
            name = found[0]
        ip = overlay.ip_dict[name]
        mmio = pynq.MMIO(ip["phys_addr"], ip.get("addr_range", platform.REG_SPACE_BYTES))
        interrupt = pynq.Interrupt(f"{name}/irq") if "irq" in ip.get("interrupts", {}) else None
        return cls(mmio=mmio, interrupt=interrupt, pynq=pynq, asynchronous=asynchronous)

    async def read32(self, offset):
        return int(self.mmio.read(offset)) & 0xFFFF_FFFF

    async def write32(self, offset, value):
        self.mmio.write(offset, int(value) & 0xFFFF_FFFF)

    def alloc(self, nbytes):
        import numpy as np

        buf = self.pynq.allocate(shape=(nbytes,), dtype=np.uint8)
        return DeviceBuffer(int(buf.device_address), nbytes, buf)

    async def write_buffer(self, buf, offset, data):
        import numpy as np

        buf.handle[offset:offset + len(data)] = np.frombuffer(data, dtype=np.uint8)

    async def read_buffer(self, buf, offset, nbytes):
        return bytes(buf.handle[offset:offset + nbytes])

    def free(self, buf):
        buf.handle.freebuffer()

    async def flush(self, buf):
        buf.handle.flush()

    async def invalidate(self, buf):
        buf.handle.invalidate()

    async def wait_irq(self, timeout_s):
        if self.interrupt is None:
            return False
        try:
            if self.is_async:
                await asyncio.wait_for(self.interrupt.wait(), timeout_s)
            elif _loop_running():
                return False   # an event loop runs in this thread (Jupyter): poll
            else:
                # PYNQ's own drivers' pattern (AxiGPIO.wait_for_value, the video DMA): the
                # thread's one event loop runs the wait. Never asyncio.run(): its new loop is
                # not the one pynq's UioController watches the UIO file on, and it binds the
                # Interrupt's asyncio.Event to a loop that is closed after one wait.
                _event_loop().run_until_complete(
                    asyncio.wait_for(self.interrupt.wait(), timeout_s))
        except asyncio.TimeoutError:  # noqa: UP041 - not the builtin TimeoutError before 3.11
            return False
        return True

    async def sleep(self, seconds):
        if self.is_async:
            await asyncio.sleep(seconds)
        else:
            time.sleep(seconds)
