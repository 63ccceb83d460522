"""The PYNQ IP driver against stand-ins for ``pynq.DefaultIP`` / ``Overlay`` (pynq is not
installable here): binding by VLNV, and a program run through the driver it hands out."""

from __future__ import annotations

import importlib
import sys

import pytest
from test_driver import CFG, FakeAccelerator, fake_pynq

from zynqnn.driver import DriverError
from zynqnn.hw import isa, platform
from zynqnn.sim.model import Program

REGISTRY = {}


def pynq_module(dev, vlnv=platform.VLNV, ips=1):
    """``fake_pynq`` plus DefaultIP (registering subclasses by ``bindto`` as PYNQ's metaclass
    does) and an Overlay that instantiates the bound driver of each IP in its .hwh."""
    mod = fake_pynq(dev)

    class DefaultIP:
        def __init_subclass__(cls, **kw):
            super().__init_subclass__(**kw)
            for v in getattr(cls, "bindto", []):
                REGISTRY[v] = cls

        def __init__(self, description):
            self.description = description
            self.mmio = mod.MMIO(description["phys_addr"], description["addr_range"])
            if "irq" in description.get("interrupts", {}):
                self.irq = mod.Interrupt("zynqnn_top_0/irq")

    class Overlay:
        def __init__(self, bitfile):
            self.bitfile = bitfile
            self.ip_dict = {
                f"zynqnn_top_{i}": {"type": vlnv, "phys_addr": platform.BASE_ADDRESS,
                                    "addr_range": platform.REG_SPACE_BYTES,
                                    "interrupts": {"irq": {}}}
                for i in range(ips)}
            for name, d in self.ip_dict.items():
                setattr(self, name, REGISTRY.get(d["type"], DefaultIP)(d))

    mod.DefaultIP = DefaultIP
    mod.Overlay = Overlay
    return mod


@pytest.fixture
def overlay_module(monkeypatch):
    def make(dev, **kw):
        mod = pynq_module(dev, **kw)
        monkeypatch.setitem(sys.modules, "pynq", mod)
        sys.modules.pop("zynqnn.pynq_overlay", None)
        return importlib.import_module("zynqnn.pynq_overlay"), mod
    yield make
    sys.modules.pop("zynqnn.pynq_overlay", None)


def test_ip_driver_binds_to_the_vlnv_and_runs_a_program(overlay_module):
    dev = FakeAccelerator(CFG)
    ov, _ = overlay_module(dev)
    assert REGISTRY[platform.VLNV] is ov.ZynqnnIP
    drv = ov.open_accelerator("zynqnn.bit", CFG)
    src = drv.alloc(64)
    drv.write_mem(src, bytes(range(64)))
    words = 64 // (CFG.act_word_bits // 8)
    prog = Program().load(isa.Buffer.IBUF, 0, 0, words, 1, src.address).end()
    result = drv.run(prog.to_bytes())
    assert result.status["done"] == 1 and result.cycles == (5 << 32) + 1234
    # The program and the data reached the device through flush(); registers through the IP's
    # MMIO (the fake accelerator logged the driver's writes).
    assert dev.flushes >= 2
    assert ("CMD_COUNT", 2) in dev.log


def test_overlay_without_the_accelerator_is_refused(overlay_module):
    ov, _ = overlay_module(FakeAccelerator(CFG), ips=0)
    with pytest.raises(DriverError, match="expected one xilinx.com:module_ref:zynqnn_top:1.0"):
        ov.open_accelerator("other.bit", CFG)
