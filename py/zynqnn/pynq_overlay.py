"""PYNQ overlay support: the accelerator's IP driver, for use on the board.

Importing this module needs ``pynq`` (on the board; tests pass a stand-in). Defining the IP
driver subclass registers it with PYNQ for the accelerator's VLNV, so a loaded overlay's
accelerator is a :class:`ZynqnnIP` whose :meth:`~ZynqnnIP.driver` gives the one
:class:`zynqnn.driver.Driver` the simulations use too::

    import pynq
    import zynqnn.pynq_overlay  # registers the IP driver
    ol = pynq.Overlay("build/<config id>/zynqnn_<config id>.bit")  # .hwh beside it
    drv = ol.zynqnn.driver("pynq_z2")  # the block design's cell is "zynqnn"
    drv.run(program_bytes)

:func:`open_accelerator` does the same in one call.
"""

from __future__ import annotations

import importlib

from zynqnn.driver import Driver, DriverError, PynqBackend
from zynqnn.hw import platform
from zynqnn.hw.config import HwConfig, get_config

__all__ = ["ZynqnnIP", "open_accelerator"]


def _define(pynq):
    class ZynqnnIP(pynq.DefaultIP):
        """PYNQ's driver of ``zynqnn_top``: hands its MMIO and interrupt to the zynqnn driver.

        PYNQ binds this class to every IP of :data:`zynqnn.hw.platform.VLNV` in an overlay.
        """

        bindto = [platform.VLNV]

        def driver(self, cfg: HwConfig | str, asynchronous: bool = False) -> Driver:
            """The :class:`~zynqnn.driver.Driver` of this accelerator, built for ``cfg``; its
            first run checks the hardware's config readback against ``cfg``."""
            irq = getattr(self, "irq", None)  # PYNQ names interrupt attributes by pin
            backend = PynqBackend(mmio=self.mmio, interrupt=irq, pynq=pynq,
                                  asynchronous=asynchronous)
            return Driver(backend, get_config(cfg))

    return ZynqnnIP


ZynqnnIP = _define(importlib.import_module("pynq"))


def open_accelerator(bitfile: str, cfg: HwConfig | str, pynq=None) -> Driver:
    """Load the overlay ``bitfile`` (its ``.hwh`` beside it) and return the driver of the one
    accelerator in it."""
    pynq = importlib.import_module("pynq") if pynq is None else pynq
    overlay = pynq.Overlay(bitfile)
    found = [name for name, ip in overlay.ip_dict.items() if ip.get("type") == platform.VLNV]
    if len(found) != 1:
        raise DriverError(f"{bitfile}: expected one {platform.VLNV} in the overlay, found "
                          f"{found or 'none'}")
    ip = getattr(overlay, found[0])
    if not isinstance(ip, ZynqnnIP):
        raise DriverError(f"{bitfile}: {found[0]} is bound to {type(ip).__name__}, not ZynqnnIP"
                          " (import zynqnn.pynq_overlay before loading the overlay)")
    return ip.driver(cfg)
