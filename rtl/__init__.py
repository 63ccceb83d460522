"""Amaranth hardware of the accelerator (installed as ``zynqnn.rtl``)."""
