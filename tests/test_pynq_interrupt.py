"""The driver's interrupt wait against pynq's own ``Interrupt`` and ``UioController``.

pynq needs numpy < 2, so it cannot live in the project's venv: the test builds (once, under
``build/venvs/``, like tests/test_runtime_install.py; about a minute and a half) a venv of the
oldest supported Python here with pynq 3.0.1 (the PYNQ 3.0 image's release for the Pynq-Z2;
its ``interrupt.py`` and ``uio.py`` are the same in 3.1 and 4.0) and the project's runtime, and
runs :data:`SCRIPT` there.

The script stands a FIFO (``os.mkfifo``) in for ``/dev/uioN`` and gives pynq an overlay whose
``zynqnn/irq`` pin goes straight to the PS (``IRQ_F2P``, as in scripts/vivado/block_design.tcl),
so ``pynq.Interrupt`` serves it with a real ``UioController``. Arming a wait writes the UIO
enable word into the FIFO, which reads back at once: the interrupt is pending as soon as it is
enabled, as for the level interrupt of a run that has ended. Behind a register stand-in that ends
every run at its start, each mode runs in a process of its own:

* ``new``: the project's :class:`zynqnn.driver.Driver` and ``PynqBackend``, two runs in a row,
  synchronous and then asynchronous (awaited on the thread's loop, as in a notebook): every
  interrupt wait must return True, each well under the timeout;
* ``old``: the driver's former synchronous wait (``asyncio.run`` around ``Interrupt.wait()``),
  twice: it must fail that check (the first wait runs out the timeout, as its loop is not the
  one pynq watches the FIFO on; the second finds the Interrupt's event bound to a closed loop).
"""

from __future__ import annotations

import json
import subprocess

from test_runtime_install import clean_env, oldest_python, project_venv

PINS = ["pynq==3.0.1", "numpy==1.26.4"]
TIMEOUT_S = 1.0

SCRIPT = r'''
import asyncio, json, os, sys, tempfile, time

import pynq
import pynq.interrupt

mode, timeout = sys.argv[1], float(sys.argv[2])
fifo = os.path.join(tempfile.mkdtemp(), "uio0")
os.mkfifo(fifo)


class PL:
    """The loaded overlay as pynq.interrupt sees it: zynqnn/irq wired to IRQ_F2P[0] (UIO)."""
    interrupt_pins = {"zynqnn/irq": {"controller": "", "parent": "", "index": 0,
                                     "raw_irq": 61, "fullpath": "zynqnn/irq"}}
    interrupt_controllers = {}
    timestamp = "0"


pynq.interrupt.PL = PL
pynq.interrupt.get_uio_irq = lambda irq: fifo   # /proc/interrupts + /sys/class/uio -> the FIFO
irq = pynq.interrupt.Interrupt("zynqnn/irq")
assert type(irq.parent()).__name__ == "UioController"
result = {"python": list(sys.version_info[:3]), "pynq": pynq.__version__}


def outcome(fn):
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as e:
        return {"raised": f"{type(e).__name__}: {e}", "s": time.perf_counter() - t0}
    return {"returned": value, "s": time.perf_counter() - t0}


if mode == "old":
    def old_wait_irq():   # PynqBackend.wait_irq's synchronous path before the fix, verbatim
        try:
            asyncio.run(asyncio.wait_for(irq.wait(), timeout))
        except TimeoutError:
            return False
        return True

    result["waits"] = [outcome(old_wait_irq) for _ in range(2)]
else:
    from zynqnn import pynq_overlay
    from zynqnn.driver import DeviceBuffer, Driver, PynqBackend
    from zynqnn.hw import platform
    from zynqnn.hw.config import get_config
    from zynqnn.hw.regs import REGMAP, Access

    assert pynq_overlay.ZynqnnIP.bindto == [platform.VLNV]   # binds under the real pynq
    cfg = get_config("tiny")

    class Registers:
        """zynqnn_top's registers behind pynq.MMIO: START ends the run, irq high."""

        def __init__(self):
            self.regs = {r.offset: r.reset for r in REGMAP}

        def read(self, off):
            reg = REGMAP.at(off)
            if reg.const is not None:
                return reg.const_value(cfg)
            return 0 if reg.access is Access.WO else self.regs[off]

        def write(self, off, value):
            reg = REGMAP.at(off)
            if reg.access is Access.RW:
                self.regs[off] = value
            elif reg.access is Access.W1C:
                self.regs[off] &= ~value
            elif reg.name == "CONTROL" and REGMAP["CONTROL"].decode(value)["start"]:
                self.regs[REGMAP["STATUS"].offset] = REGMAP["STATUS"].encode(done=1)
                self.regs[REGMAP["IRQ_STATUS"].offset] |= 1

    def driver(interrupt, asynchronous):
        backend = PynqBackend(mmio=Registers(), interrupt=interrupt, pynq=pynq,
                              asynchronous=asynchronous)
        wait_irq, waits = backend.wait_irq, []

        async def recording(timeout_s):
            t0 = time.perf_counter()
            ok = await wait_irq(timeout_s)
            waits.append({"returned": ok, "s": time.perf_counter() - t0})
            return ok

        backend.wait_irq = recording
        return Driver(backend, cfg), waits

    prog = DeviceBuffer(0x1800_0000, 64)
    kw = dict(count=1, window=(0x1800_0000, 0x1800_1000), timeout_s=timeout)
    drv, waits = driver(irq, False)
    result["runs"] = [outcome(lambda: drv.run(prog, **kw).status["done"]) for _ in range(2)]
    result["waits"] = waits

    adrv, awaits = driver(pynq.interrupt.Interrupt("zynqnn/irq"), True)

    async def two_runs():
        return [(await adrv.run(prog, **kw)).status["done"] for _ in range(2)]

    result["async_runs"] = asyncio.get_event_loop().run_until_complete(two_runs())
    result["async_waits"] = awaits
print(json.dumps(result))
'''


def _run(py, mode: str) -> dict:
    out = subprocess.run([str(py), "-c", SCRIPT, mode, str(TIMEOUT_S)], capture_output=True,
                         text=True, timeout=120, env=clean_env(), cwd=py.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_two_runs_each_see_the_interrupt_at_once_and_the_old_wait_did_not():
    python, _ = oldest_python()
    py = project_venv("pynq", python, PINS)
    new = _run(py, "new")
    assert new["pynq"] == "3.0.1"
    assert [r.get("returned") for r in new["runs"]] == [1, 1], new
    for waits in (new["waits"], new["async_waits"]):
        assert [w["returned"] for w in waits] == [True, True], new
        assert all(w["s"] < TIMEOUT_S / 4 for w in waits), new
    assert new["async_runs"] == [1, 1]

    old = _run(py, "old")
    first, second = old["waits"]
    # The same check fails on the old pattern: no wait returns True, the first after the whole
    # timeout (False on Python >= 3.11, asyncio.TimeoutError before), the second at once.
    assert first.get("returned") is not True and first["s"] >= 0.9 * TIMEOUT_S, old
    assert second.get("returned") is not True, old
    assert "bound to a different event loop" in second.get("raised", ""), old
