"""The accelerator packaged as a Vivado IP: an IP-XACT ``component.xml`` written from Python.

Everything in the package comes from :mod:`zynqnn.hw.platform` (ports, register window) and the
:class:`~zynqnn.hw.config.HwConfig` (bus widths, clock): the bus interfaces ``s_axi`` (AXI4-Lite
slave, with the register map as its memory map), ``m_axi`` (AXI4 master, with its address space),
``aclk`` (ASSOCIATED_BUSIF, ASSOCIATED_RESET, FREQ_HZ), ``aresetn`` (active low) and ``irq``
(level-high interrupt), the model's ports and a file set holding the top level's Verilog.

The schema is IEEE 1685-2009 in the SPIRIT namespace, as Vivado's IP packager writes it; the
package is ``<ip dir>/component.xml`` + ``<ip dir>/src/<top>.v``. Vivado reads it from an IP
repository (``set_property ip_repo_paths <ip dir>``, ``update_ip_catalog``); the block design
instantiates it by :data:`IP_VLNV` when ``params.tcl`` sets ``zynqnn(accel_source)`` to ``ip``.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from zynqnn.hw import regs
from zynqnn.hw.config import HwConfig
from zynqnn.hw.platform import REG_SPACE_BYTES, TOP_NAME, top_ports

__all__ = [
    "SPIRIT_NS",
    "XILINX_NS",
    "IP_VENDOR",
    "IP_LIBRARY",
    "IP_VERSION",
    "IP_VLNV",
    "FILESET_SYNTH",
    "FILESET_SIM",
    "component_xml",
    "write_ip",
]

SPIRIT_NS = "http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009"
XILINX_NS = "http://www.xilinx.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
IP_VENDOR = "zynqnn"
IP_LIBRARY = "ip"
IP_VERSION = "1.0"
#: The packaged IP's VLNV (the module reference's is :data:`zynqnn.hw.platform.VLNV`).
IP_VLNV = f"{IP_VENDOR}:{IP_LIBRARY}:{TOP_NAME}:{IP_VERSION}"
FILESET_SYNTH = "xilinx_anylanguagesynthesis_view_fileset"
FILESET_SIM = "xilinx_anylanguagebehavioralsimulation_view_fileset"

_S = f"{{{SPIRIT_NS}}}"
_X = f"{{{XILINX_NS}}}"

_ACCESS = {
    regs.Access.RW: "read-write",
    regs.Access.RO: "read-only",
    regs.Access.W1C: "read-write",
    regs.Access.WO: "write-only",
}


def _el(parent, tag: str, text=None, **attrs):
    ns, _, name = tag.partition(":")
    e = ET.SubElement(parent, f"{{{SPIRIT_NS if ns == 'spirit' else XILINX_NS}}}{name}")
    for k, v in attrs.items():
        kns, _, kname = k.partition("_")
        e.set(f"{{{SPIRIT_NS if kns == 'spirit' else XILINX_NS}}}{kname}", str(v))
    if text is not None:
        e.text = str(text)
    return e


def _vlnv(parent, tag, vendor, library, name, version):
    return _el(parent, tag, spirit_vendor=vendor, spirit_library=library, spirit_name=name,
               spirit_version=version)


def _parameters(parent, params: dict, prefix: str = "BUSIFPARAM_VALUE"):
    ps = _el(parent, "spirit:parameters")
    for name, value in params.items():
        p = _el(ps, "spirit:parameter")
        _el(p, "spirit:name", name)
        _el(p, "spirit:value", value, spirit_id=f"{prefix}.{name.upper()}")
    return ps


def _bus_interface(parent, name, bus, abstraction, mode, port_map, params, ref=None):
    bi = _el(parent, "spirit:busInterface")
    _el(bi, "spirit:name", name)
    _vlnv(bi, "spirit:busType", *bus)
    _vlnv(bi, "spirit:abstractionType", *abstraction)
    m = _el(bi, f"spirit:{mode}")
    if ref is not None:
        tag, attr = ref
        _el(m, tag, **{f"spirit_{tag.split(':')[1]}": attr})
    pms = _el(bi, "spirit:portMaps")
    for logical, physical in port_map:
        pm = _el(pms, "spirit:portMap")
        _el(_el(pm, "spirit:logicalPort"), "spirit:name", logical)
        _el(_el(pm, "spirit:physicalPort"), "spirit:name", physical)
    if params:
        _parameters(bi, params,
                    prefix=f"BUSIFPARAM_VALUE.{name.upper()}")
    return bi


def _register_block(parent):
    """The register map of :mod:`zynqnn.hw.regs` as the address block's registers."""
    for r in regs.REGMAP:
        reg = _el(parent, "spirit:register")
        _el(reg, "spirit:name", r.name)
        _el(reg, "spirit:description", r.doc)
        _el(reg, "spirit:addressOffset", f"0x{r.offset:X}")
        _el(reg, "spirit:size", 32)
        _el(reg, "spirit:access", _ACCESS[r.access])
        reset = _el(reg, "spirit:reset")
        _el(reset, "spirit:value", f"0x{r.reset:08X}")
        for f in r.fields:
            fe = _el(reg, "spirit:field")
            _el(fe, "spirit:name", f.name)
            _el(fe, "spirit:description", f.doc)
            _el(fe, "spirit:bitOffset", f.lsb)
            _el(fe, "spirit:bitWidth", f.width)
            _el(fe, "spirit:access", _ACCESS[r.access])
            if r.access is regs.Access.W1C:
                _el(fe, "spirit:modifiedWriteValue", "oneToClear")


def component_xml(cfg: HwConfig, verilog_files: list[str] | None = None) -> str:
    """The text of ``component.xml`` for ``cfg`` (deterministic; paths relative to the IP dir)."""
    if verilog_files is None:
        verilog_files = [f"src/{TOP_NAME}.v"]
    ET.register_namespace("spirit", SPIRIT_NS)
    ET.register_namespace("xilinx", XILINX_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(f"{_S}component")
    _el(root, "spirit:vendor", IP_VENDOR)
    _el(root, "spirit:library", IP_LIBRARY)
    _el(root, "spirit:name", TOP_NAME)
    _el(root, "spirit:version", IP_VERSION)

    ports = top_ports(cfg)
    names = [p.name for p in ports]
    freq_hz = round(cfg.clock_mhz * 1e6)

    def axi_map(prefix):
        return [(p[len(prefix):].upper(), p) for p in names if p.startswith(prefix)]

    bis = _el(root, "spirit:busInterfaces")
    aximm = ("xilinx.com", "interface", "aximm", "1.0")
    aximm_rtl = ("xilinx.com", "interface", "aximm_rtl", "1.0")
    _bus_interface(bis, "s_axi", aximm, aximm_rtl, "slave", axi_map("s_axi_"),
                   {"PROTOCOL": "AXI4LITE", "DATA_WIDTH": 32, "ADDR_WIDTH": 12},
                   ref=("spirit:memoryMapRef", "s_axi"))
    _bus_interface(bis, "m_axi", aximm, aximm_rtl, "master", axi_map("m_axi_"),
                   {"PROTOCOL": "AXI4", "DATA_WIDTH": cfg.axi_data_bits,
                    "ADDR_WIDTH": cfg.axi_addr_bits},
                   ref=("spirit:addressSpaceRef", "m_axi"))
    _bus_interface(bis, "aresetn", ("xilinx.com", "signal", "reset", "1.0"),
                   ("xilinx.com", "signal", "reset_rtl", "1.0"), "slave", [("RST", "aresetn")],
                   {"POLARITY": "ACTIVE_LOW"})
    _bus_interface(bis, "aclk", ("xilinx.com", "signal", "clock", "1.0"),
                   ("xilinx.com", "signal", "clock_rtl", "1.0"), "slave", [("CLK", "aclk")],
                   {"ASSOCIATED_BUSIF": "s_axi:m_axi", "ASSOCIATED_RESET": "aresetn",
                    "FREQ_HZ": freq_hz})
    _bus_interface(bis, "irq", ("xilinx.com", "signal", "interrupt", "1.0"),
                   ("xilinx.com", "signal", "interrupt_rtl", "1.0"), "master",
                   [("INTERRUPT", "irq")], {"SENSITIVITY": "LEVEL_HIGH"})

    spaces = _el(root, "spirit:addressSpaces")
    space = _el(spaces, "spirit:addressSpace")
    _el(space, "spirit:name", "m_axi")
    _el(space, "spirit:range", f"0x{1 << cfg.axi_addr_bits:X}")
    _el(space, "spirit:width", cfg.axi_data_bits)

    maps = _el(root, "spirit:memoryMaps")
    mm = _el(maps, "spirit:memoryMap")
    _el(mm, "spirit:name", "s_axi")
    block = _el(mm, "spirit:addressBlock")
    _el(block, "spirit:name", "reg0")
    _el(block, "spirit:baseAddress", "0x0", spirit_format="long")
    _el(block, "spirit:range", f"0x{REG_SPACE_BYTES:X}", spirit_format="long")
    _el(block, "spirit:width", 32)
    _el(block, "spirit:usage", "register")
    _register_block(block)

    model = _el(root, "spirit:model")
    views = _el(model, "spirit:views")
    for view, env, fileset in (
        ("xilinx_anylanguagesynthesis", ":vivado.xilinx.com:synthesis", FILESET_SYNTH),
        ("xilinx_anylanguagebehavioralsimulation", ":vivado.xilinx.com:simulation", FILESET_SIM),
    ):
        v = _el(views, "spirit:view")
        _el(v, "spirit:name", view)
        _el(v, "spirit:envIdentifier", env)
        _el(v, "spirit:language", "Verilog")
        _el(v, "spirit:modelName", TOP_NAME)
        _el(_el(v, "spirit:fileSetRef"), "spirit:localName", fileset)
    mports = _el(model, "spirit:ports")
    for p in ports:
        pe = _el(mports, "spirit:port")
        _el(pe, "spirit:name", p.name)
        w = _el(pe, "spirit:wire")
        _el(w, "spirit:direction", "in" if p.direction == "input" else "out")
        if p.width > 1:
            vec = _el(w, "spirit:vector")
            _el(vec, "spirit:left", p.width - 1, spirit_format="long")
            _el(vec, "spirit:right", 0, spirit_format="long")
        defs = _el(_el(w, "spirit:wireTypeDefs"), "spirit:wireTypeDef")
        _el(defs, "spirit:typeName", "wire")
        _el(defs, "spirit:viewNameRef", "xilinx_anylanguagesynthesis")
        _el(defs, "spirit:viewNameRef", "xilinx_anylanguagebehavioralsimulation")

    filesets = _el(root, "spirit:fileSets")
    for name in (FILESET_SYNTH, FILESET_SIM):
        fs = _el(filesets, "spirit:fileSet")
        _el(fs, "spirit:name", name)
        for i, path in enumerate(verilog_files):
            fe = _el(fs, "spirit:file")
            _el(fe, "spirit:name", path)
            _el(fe, "spirit:fileType", "verilogSource")
            if i == len(verilog_files) - 1 and name == FILESET_SYNTH:
                _el(fe, "spirit:userFileType", "CHECKSUM_0")

    _el(root, "spirit:description",
        f"zynqnn CNN accelerator, hardware config {cfg.name} ({cfg.config_id}); generated by "
        "zynqnn.ipxact from zynqnn.hw.platform")
    _parameters(root, {"Component_Name": f"{TOP_NAME}_v1_0"}, prefix="PARAM_VALUE")

    ext = _el(root, "spirit:vendorExtensions")
    core = _el(ext, "xilinx:coreExtensions")
    fams = _el(core, "xilinx:supportedFamilies")
    _el(fams, "xilinx:family", "zynq", xilinx_lifeCycle="Production")
    tax = _el(core, "xilinx:taxonomies")
    _el(tax, "xilinx:taxonomy", "/UserIP")
    _el(core, "xilinx:displayName", f"zynqnn accelerator ({cfg.config_id})")
    _el(core, "xilinx:coreRevision", 1)
    _el(core, "xilinx:configElementInfos")
    pkg = _el(ext, "xilinx:packagingInfo")
    _el(pkg, "xilinx:xilinxVersion", "2022.2")

    ET.indent(root, space="  ")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def write_ip(cfg: HwConfig, verilog: str | Path, ip_dir: str | Path) -> Path:
    """Write the IP package into ``ip_dir``: ``component.xml`` and ``src/<top>.v`` (a copy of
    ``verilog``). Returns the path of ``component.xml``."""
    ip_dir = Path(ip_dir)
    src = ip_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    dest = src / f"{TOP_NAME}.v"
    if Path(verilog).resolve() != dest.resolve():
        shutil.copyfile(verilog, dest)
    path = ip_dir / "component.xml"
    text = component_xml(cfg)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
