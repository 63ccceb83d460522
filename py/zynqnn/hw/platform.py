"""How the accelerator sits in a Zynq-7000: its top-level ports and its place in the PS.

The top-level Verilog module, the Vivado block-design scripts and the PYNQ driver all read this
module, so a port or address written here is written nowhere else.

Port names follow Vivado's interface inference: a clock ``aclk``, an active-low reset
``aresetn``, a flat AXI4-Lite subordinate ``s_axi_*`` (from M_AXI_GP0), a flat AXI4 manager
``m_axi_*`` (to S_AXI_HP0 through an AXI3 converter) and an interrupt ``irq``.
"""

from __future__ import annotations

from dataclasses import dataclass

from zynqnn.hw.config import HwConfig

__all__ = [
    "TOP_NAME",
    "VLNV",
    "BASE_ADDRESS",
    "REG_SPACE_BYTES",
    "S_AXI_ADDR_BITS",
    "S_AXI_DATA_BITS",
    "M_AXI_ID_BITS",
    "Port",
    "top_ports",
]

#: Verilog module name of the accelerator's top level.
TOP_NAME = "zynqnn_top"
#: The VLNV Vivado gives a module reference; the PYNQ driver binds to it.
VLNV = f"xilinx.com:module_ref:{TOP_NAME}:1.0"
#: Where PYNQ conventions put user IP on M_AXI_GP0.
BASE_ADDRESS = 0x43C0_0000
#: Size of the register window (one 4 KB page).
REG_SPACE_BYTES = 0x1000
S_AXI_ADDR_BITS = 12
S_AXI_DATA_BITS = 32
#: One transaction id: the DMA issues reads in order (the HP port returns them in order per id).
M_AXI_ID_BITS = 1


@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "input" | "output"
    width: int


def top_ports(cfg: HwConfig) -> list[Port]:
    """Every port of :data:`TOP_NAME` for ``cfg``, in a stable order."""
    dw, aw, idw = cfg.axi_data_bits, cfg.axi_addr_bits, M_AXI_ID_BITS
    i, o = "input", "output"
    ports = [Port("aclk", i, 1), Port("aresetn", i, 1), Port("irq", o, 1)]
    lite = [
        ("awaddr", i, S_AXI_ADDR_BITS), ("awprot", i, 3), ("awvalid", i, 1), ("awready", o, 1),
        ("wdata", i, S_AXI_DATA_BITS), ("wstrb", i, S_AXI_DATA_BITS // 8), ("wvalid", i, 1),
        ("wready", o, 1), ("bresp", o, 2), ("bvalid", o, 1), ("bready", i, 1),
        ("araddr", i, S_AXI_ADDR_BITS), ("arprot", i, 3), ("arvalid", i, 1), ("arready", o, 1),
        ("rdata", o, S_AXI_DATA_BITS), ("rresp", o, 2), ("rvalid", o, 1), ("rready", i, 1),
    ]
    ports += [Port(f"s_axi_{n}", d, w) for n, d, w in lite]
    full = [
        ("awid", o, idw), ("awaddr", o, aw), ("awlen", o, 8), ("awsize", o, 3),
        ("awburst", o, 2), ("awlock", o, 1), ("awcache", o, 4), ("awprot", o, 3),
        ("awvalid", o, 1), ("awready", i, 1),
        ("wdata", o, dw), ("wstrb", o, dw // 8), ("wlast", o, 1), ("wvalid", o, 1),
        ("wready", i, 1),
        ("bid", i, idw), ("bresp", i, 2), ("bvalid", i, 1), ("bready", o, 1),
        ("arid", o, idw), ("araddr", o, aw), ("arlen", o, 8), ("arsize", o, 3),
        ("arburst", o, 2), ("arlock", o, 1), ("arcache", o, 4), ("arprot", o, 3),
        ("arvalid", o, 1), ("arready", i, 1),
        ("rid", i, idw), ("rdata", i, dw), ("rresp", i, 2), ("rlast", i, 1), ("rvalid", i, 1),
        ("rready", o, 1),
    ]
    ports += [Port(f"m_axi_{n}", d, w) for n, d, w in full]
    return ports
