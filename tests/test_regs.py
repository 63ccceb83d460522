"""The register map (zynqnn.hw.regs), its generated documentation and the top level's ports."""

import re
from pathlib import Path

import pytest

from zynqnn.hw import isa, platform
from zynqnn.hw.config import PRESETS, get_config
from zynqnn.hw.regs import REGMAP, Access, Field, Register, render_markdown, watchdog_default_cycles

ROOT = Path(__file__).resolve().parent.parent


def test_docs_registers_md_is_current():
    """docs/registers.md is generated: `python -m zynqnn.hw.regs --write docs/registers.md`."""
    assert (ROOT / "docs" / "registers.md").read_text() == render_markdown()


def test_map_is_consistent():
    offsets = [r.offset for r in REGMAP]
    assert len(set(offsets)) == len(offsets)
    assert all(0 <= o < platform.REG_SPACE_BYTES and o % 4 == 0 for o in offsets)
    for name in ("ID", "VERSION", "CONTROL", "STATUS", "IRQ_ENABLE", "IRQ_STATUS", "CMD_BASE",
                 "CMD_COUNT", "WINDOW_BASE", "WINDOW_LIMIT", "WATCHDOG", "CFG_HASH"):
        assert name in {r.name for r in REGMAP}
    assert REGMAP["CONTROL"].access is Access.WO
    assert REGMAP["IRQ_STATUS"].access is Access.W1C
    assert REGMAP["STATUS"].field("cause").width == isa.ErrorCause.as_shape().width
    # Counters are LO/HI pairs, LO first.
    for c in REGMAP.counters:
        lo, hi = REGMAP[f"{c}_LO"], REGMAP[f"{c}_HI"]
        assert hi.offset == lo.offset + 4 and (lo.half, hi.half) == (0, 1)
    assert REGMAP.counters == ["PERF_CYCLES_BUSY", "PERF_CYCLES_COMPUTE", "PERF_DMA_RD_BYTES",
                               "PERF_DMA_WR_BYTES", "PERF_DMA_STALL"]


def test_encode_decode_round_trip():
    st = REGMAP["STATUS"]
    v = st.encode(busy=1, error=1, cause=isa.ErrorCause.WATCHDOG, cmd_index=12345)
    assert st.decode(v) == {"busy": 1, "done": 0, "error": 1, "cause": 8, "cmd_index": 12345}
    with pytest.raises(ValueError, match="does not fit"):
        st.encode(cause=256)
    with pytest.raises(KeyError, match="no field 'nope'"):
        st.encode(nope=1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_readback_encodes_every_preset(name):
    cfg = get_config(name)
    for reg in REGMAP:
        if reg.const is not None:
            want = reg.const(cfg)
            got = reg.decode(reg.const_value(cfg))
            assert {k: got[k] for k in want} == want, reg.name
    assert REGMAP["CFG_HASH"].const_value(cfg) == cfg.config_hash32
    assert watchdog_default_cycles(cfg) == round(1000 * cfg.clock_mhz)


def test_declarations_are_validated():
    with pytest.raises(ValueError, match="overlap"):
        Register("X", 0x0, Access.RW, "x", (Field("a", 0, 4, ""), Field("b", 3, 2, "")))
    with pytest.raises(ValueError, match="not a word"):
        Register("X", 0x2, Access.RW, "x", (Field("a", 0, 4, ""),))
    with pytest.raises(ValueError, match="only RO"):
        Register("X", 0x0, Access.RW, "x", (Field("a", 0, 4, ""),), const=lambda c: {"a": 1})


def _verilog_ports(text: str, module: str):
    """(name, direction, width) of each port of ``module``, in declaration order."""
    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    header = body[body.index("(") + 1:body.index(");")]
    order = [p.strip() for p in header.split(",")]
    decl = {}
    for m in re.finditer(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?(\w+);",
                         body, re.M):
        decl[m.group(3)] = (m.group(1), int(m.group(2) or 0) + 1)
    return [(n, *decl[n]) for n in order]


@pytest.mark.parametrize("cfg_name", ["tiny", "pynq_z2"])
def test_top_ports_are_platform_ports(cfg_name):
    """The top level's Verilog ports; on pynq_z2 the shell's (zynqnn_shell: the same Top
    without its engine, which has no ports of its own), 30 s less elaboration."""
    from zynqnn.rtl.gen import components, to_verilog

    cfg = get_config(cfg_name)
    name = platform.TOP_NAME if cfg_name == "tiny" else "zynqnn_shell"
    text = to_verilog(components(cfg)[name](), platform.TOP_NAME)
    got = sorted(_verilog_ports(text, platform.TOP_NAME))
    want = sorted((p.name, p.direction, p.width) for p in platform.top_ports(cfg))
    assert got == want
