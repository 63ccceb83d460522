"""The packaged IP (``make ip``): IP-XACT ``component.xml`` from :mod:`zynqnn.ipxact`.

The XML is parsed with ``xml.etree`` and checked against :mod:`zynqnn.hw.platform` (every port of
``top_ports`` in the model and in exactly one bus interface's port map), the config (widths,
FREQ_HZ), the register map and the file sets; the block design's IP path (``params_ip.tcl``) is
run through the stubbed TCL lint, and a component.xml that lacks its Verilog fails it.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from zynqnn.hw import regs
from zynqnn.hw.config import get_config
from zynqnn.hw.platform import REG_SPACE_BYTES, TOP_NAME, top_ports
from zynqnn.ipxact import IP_VLNV, SPIRIT_NS, XILINX_NS
from zynqnn.vivado import SCRIPTS_DIR, lint, write_ip_bundle

NS = {"spirit": SPIRIT_NS, "xilinx": XILINX_NS}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    # The port shell stands in for the generated top level: the package is the same but for the
    # Verilog's body, and elaborating the top level is not this test's business.
    return write_ip_bundle(get_config("pynq_z2"), tmp_path_factory.mktemp("ip"), shell_top=True)


def _text(e, path):
    found = e.find(path, NS)
    assert found is not None, path
    return found.text


def _vlnv(e):
    return ":".join(e.get(f"{{{SPIRIT_NS}}}{k}") for k in ("vendor", "library", "name", "version"))


def _params(e):
    return {_text(p, "spirit:name"): _text(p, "spirit:value")
            for p in e.findall("spirit:parameters/spirit:parameter", NS)}


def test_component_identity_and_files(bundle):
    root = ET.parse(bundle / "ip" / "component.xml").getroot()
    assert root.tag == f"{{{SPIRIT_NS}}}component"
    vlnv = ":".join(_text(root, f"spirit:{k}") for k in ("vendor", "library", "name", "version"))
    assert vlnv == IP_VLNV
    filesets = {_text(fs, "spirit:name"): [_text(f, "spirit:name")
                                          for f in fs.findall("spirit:file", NS)]
                for fs in root.findall("spirit:fileSets/spirit:fileSet", NS)}
    assert set(filesets) == {"xilinx_anylanguagesynthesis_view_fileset",
                             "xilinx_anylanguagebehavioralsimulation_view_fileset"}
    for files in filesets.values():
        assert files == [f"src/{TOP_NAME}.v"]
        assert (bundle / "ip" / files[0]).read_text() == (bundle / f"{TOP_NAME}.v").read_text()
    for view in root.findall("spirit:model/spirit:views/spirit:view", NS):
        assert _text(view, "spirit:modelName") == TOP_NAME
        assert _text(view, "spirit:fileSetRef/spirit:localName") in filesets
    assert root.find("xilinx:coreExtensions", NS) is None  # lives under vendorExtensions
    fam = root.find("spirit:vendorExtensions/xilinx:coreExtensions/xilinx:supportedFamilies/"
                    "xilinx:family", NS)
    assert fam.text == "zynq"


def test_model_ports_are_top_ports(bundle):
    cfg = get_config("pynq_z2")
    root = ET.parse(bundle / "ip" / "component.xml").getroot()
    model = {}
    for p in root.findall("spirit:model/spirit:ports/spirit:port", NS):
        direction = _text(p, "spirit:wire/spirit:direction")
        left = p.find("spirit:wire/spirit:vector/spirit:left", NS)
        right = p.find("spirit:wire/spirit:vector/spirit:right", NS)
        width = 1 if left is None else int(left.text) - int(right.text) + 1
        model[_text(p, "spirit:name")] = ({"in": "input", "out": "output"}[direction], width)
    assert model == {p.name: (p.direction, p.width) for p in top_ports(cfg)}


def test_bus_interfaces(bundle):
    cfg = get_config("pynq_z2")
    root = ET.parse(bundle / "ip" / "component.xml").getroot()
    bis = {_text(b, "spirit:name"): b
           for b in root.findall("spirit:busInterfaces/spirit:busInterface", NS)}
    assert set(bis) == {"s_axi", "m_axi", "aclk", "aresetn", "irq"}
    kinds = {"s_axi": ("xilinx.com:interface:aximm:1.0", "slave"),
             "m_axi": ("xilinx.com:interface:aximm:1.0", "master"),
             "aclk": ("xilinx.com:signal:clock:1.0", "slave"),
             "aresetn": ("xilinx.com:signal:reset:1.0", "slave"),
             "irq": ("xilinx.com:signal:interrupt:1.0", "master")}
    mapped = {}
    for name, (bus, mode) in kinds.items():
        b = bis[name]
        assert _vlnv(b.find("spirit:busType", NS)) == bus
        assert _vlnv(b.find("spirit:abstractionType", NS)) == bus.replace(":1.0", "_rtl:1.0")
        assert b.find(f"spirit:{mode}", NS) is not None, (name, mode)
        for pm in b.findall("spirit:portMaps/spirit:portMap", NS):
            phys = _text(pm, "spirit:physicalPort/spirit:name")
            assert phys not in mapped, f"{phys} in {mapped.get(phys)} and {name}"
            mapped[phys] = (name, _text(pm, "spirit:logicalPort/spirit:name"))
    # Every top-level port in exactly one interface, under the AXI/signal logical name.
    ports = top_ports(cfg)
    assert set(mapped) == {p.name for p in ports}
    for p in ports:
        bus, logical = mapped[p.name]
        if bus in ("s_axi", "m_axi"):
            assert p.name == f"{bus}_{logical.lower()}"
    assert mapped["aclk"] == ("aclk", "CLK")
    assert mapped["aresetn"] == ("aresetn", "RST")
    assert mapped["irq"] == ("irq", "INTERRUPT")
    clk = _params(bis["aclk"])
    assert clk["ASSOCIATED_BUSIF"] == "s_axi:m_axi"
    assert clk["ASSOCIATED_RESET"] == "aresetn"
    assert int(clk["FREQ_HZ"]) == round(cfg.clock_mhz * 1e6)
    assert _params(bis["aresetn"])["POLARITY"] == "ACTIVE_LOW"
    assert _params(bis["irq"])["SENSITIVITY"] == "LEVEL_HIGH"
    assert _params(bis["s_axi"])["PROTOCOL"] == "AXI4LITE"
    m = _params(bis["m_axi"])
    assert (m["PROTOCOL"], int(m["DATA_WIDTH"])) == ("AXI4", cfg.axi_data_bits)
    ref = bis["s_axi"].find("spirit:slave/spirit:memoryMapRef", NS)
    assert ref.get(f"{{{SPIRIT_NS}}}memoryMapRef") == "s_axi"
    ref = bis["m_axi"].find("spirit:master/spirit:addressSpaceRef", NS)
    assert ref.get(f"{{{SPIRIT_NS}}}addressSpaceRef") == "m_axi"


def test_memory_map_is_the_register_map(bundle):
    root = ET.parse(bundle / "ip" / "component.xml").getroot()
    (mm,) = root.findall("spirit:memoryMaps/spirit:memoryMap", NS)
    assert _text(mm, "spirit:name") == "s_axi"
    (block,) = mm.findall("spirit:addressBlock", NS)
    assert int(_text(block, "spirit:range"), 0) == REG_SPACE_BYTES
    assert int(_text(block, "spirit:width")) == 32
    assert _text(block, "spirit:usage") == "register"
    got = {_text(r, "spirit:name"): int(_text(r, "spirit:addressOffset"), 0)
           for r in block.findall("spirit:register", NS)}
    assert got == {r.name: r.offset for r in regs.REGMAP}
    status = next(r for r in block.findall("spirit:register", NS)
                  if _text(r, "spirit:name") == "STATUS")
    cause = next(f for f in status.findall("spirit:field", NS)
                 if _text(f, "spirit:name") == "cause")
    field = regs.REGMAP["STATUS"].field("cause")
    assert (int(_text(cause, "spirit:bitOffset")), int(_text(cause, "spirit:bitWidth"))) == \
        (field.lsb, field.width)


def test_block_design_with_the_ip_passes_the_lint(tmp_path, bundle):
    b = tmp_path / bundle.name
    shutil.copytree(bundle, b)
    res = lint(SCRIPTS_DIR / "build_bitstream.tcl", [b / "params_ip.tcl"],
               log=tmp_path / "calls.log")
    assert res.ok, res.output
    calls = (tmp_path / "calls.log").read_text()
    assert f"create_bd_cell -type ip -vlnv {IP_VLNV} zynqnn" in calls
    assert "update_ip_catalog" in calls
    assert "-type module" not in calls


def test_ip_lint_catches_a_broken_package(tmp_path, bundle):
    b = tmp_path / bundle.name
    shutil.copytree(bundle, b)
    (b / "ip" / "src" / f"{TOP_NAME}.v").unlink()
    res = lint(SCRIPTS_DIR / "build_bitstream.tcl", [b / "params_ip.tcl"])
    assert not res.ok and "names a missing file" in res.output


def test_ip_lint_catches_ports_differing_from_platform(tmp_path, bundle):
    b = tmp_path / bundle.name
    shutil.copytree(bundle, b)
    v = b / "ip" / "src" / f"{TOP_NAME}.v"
    text = v.read_text()
    assert text.count("  output irq;") == 1
    v.write_text(text.replace("  output irq;", "  output [1:0] irq;"))
    res = lint(SCRIPTS_DIR / "build_bitstream.tcl", [b / "params_ip.tcl"])
    assert not res.ok and "differ from zynqnn.hw.platform.top_ports" in res.output


def _lint_package_ip(tmp_path, bundle, edit=None):
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS_DIR, scripts)
    if edit is not None:
        old, new = edit
        path = scripts / "package_ip.tcl"
        text = path.read_text()
        assert text.count(old) == 1, old
        path.write_text(text.replace(old, new))
    b = tmp_path / bundle.name
    shutil.copytree(bundle, b)
    return lint(scripts / "package_ip.tcl", [b / "params.tcl"], log=tmp_path / "calls.log")


def test_package_ip_script_passes_the_lint(tmp_path, bundle):
    res = _lint_package_ip(tmp_path, bundle)
    assert res.ok, res.output
    calls = (tmp_path / "calls.log").read_text()
    assert "ipx::package_project -root_dir " in calls
    assert "ipx::save_core ipcore" in calls


@pytest.mark.parametrize("edit,message", [
    (("zynqnn::ip_bus_param $rst POLARITY ACTIVE_LOW", "zynqnn::ip_bus_param $rst POLARITY LOW"),
     "POLARITY LOW"),
    (("$clk ASSOCIATED_BUSIF s_axi:m_axi", "$clk ASSOCIATED_BUSIF s_axi"),
     "m_axi is not in aclk's ASSOCIATED_BUSIF"),
    (("ipx::check_integrity $core\n", ""), "check_integrity not run"),
    (("-vendor $vendor", "-vendor xilinx.com"), "params.tcl says"),
])
def test_package_ip_mistakes_fail_the_lint(tmp_path, bundle, edit, message):
    res = _lint_package_ip(tmp_path, bundle, edit)
    assert not res.ok and message in res.output, res.output
