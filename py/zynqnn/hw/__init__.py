"""The hardware/software contract: everything both sides of the accelerator must agree on.

* :mod:`~zynqnn.hw.config`: ``HwConfig``, the single source of truth for sizes and widths;
* :mod:`~zynqnn.hw.isa`: the command layouts (encoder and RTL decoder);
* :mod:`~zynqnn.hw.regs`: the AXI4-Lite register map; :mod:`~zynqnn.hw.platform`: top-level ports;
* :mod:`~zynqnn.hw.post`, :mod:`~zynqnn.hw.add`, :mod:`~zynqnn.hw.step`: the PBUF and per-layer
  words of the post-processing, add and step lanes, with their host-side encoders;
* :mod:`~zynqnn.hw.geometry`: buffer word widths and depths, queue and burst limits,
  the byte order of buffer words in DDR.

This package imports nothing from ``zynqnn.rtl``, ``zynqnn.sim``, the compiler or the models;
they all import it (``tests/test_architecture.py`` keeps that direction).
"""
