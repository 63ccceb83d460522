"""The Yosys estimate: stat parsing, the xc7z020 fit gate, and a real run on a small array."""

from __future__ import annotations

import json

import pytest

from zynqnn.hw.config import XC7Z020, get_config
from zynqnn.synth import (
    Resources,
    format_report,
    gate,
    parse_ltp,
    parse_stat,
    resources_from_counts,
    run_synth,
    write_outputs,
)

# The text table as Yosys 0.70 prints it after synth_xilinx (blackbox primitives are listed
# after the "submodules" total), followed by the hierarchy section that must not be counted.
STAT_TEXT = """
=== zynqnn_pe_array ===

        +----------Local Count, excluding submodules.
        |
    16377 wires
    35597 wire bits
       11 ports
    17024 cells
        2   $scopeinfo
       11   INV
     4651   LUT2
        7   LUT3
        8   LUT4
        3   LUT5
        3   LUT6
    12337 submodules
     1268   CARRY4
      256   DSP48E1
    10856   FDRE
        4   FDSE
       86   RAM32M
        3   RAMB36E1
        5   RAMB18E1
        2   SRLC32E

   Estimated number of LCs:       4672

=== design hierarchy ===

        +----------Count including submodules.
        |
    17024 zynqnn_pe_array
      256   DSP48E1
"""

STAT_JSON = {
    "creator": "Yosys",
    "modules": {"\\zynqnn_pe_array": {"num_cells_by_type": {"LUT2": 10, "DSP48E1": 3}}},
    "design": {"num_cells_by_type": {"LUT2": 10, "LUT6": 2, "DSP48E1": 3, "FDRE": 7,
                                     "RAMB18E1": 1}},
}

LTP_TEXT = """
3. Executing LTP pass (find longest path).

Longest topological path in zynqnn_pe_array (length=6):
    0: \\pe_r3_j1_m [19]
    1: $abc$36511$aiger$o562 (via $abc$36511$lut$aiger$o562)
    6: $abc$36511$aiger$i2321 (via $auto$maccmap.cc:240:synth$3129.genblk1.slice[4].carry4)
"""


def test_parse_stat_text_counts_only_the_module_section():
    counts = parse_stat(STAT_TEXT)
    assert counts["DSP48E1"] == 256 and counts["LUT2"] == 4651 and counts["FDRE"] == 10856
    assert "submodules" not in counts and "wires" not in counts
    r = resources_from_counts("zynqnn_pe_array", counts)
    assert r.lut == 4651 + 7 + 8 + 3 + 3  # LUT1..LUT6; INV is listed apart
    assert r.other["INV"] == 11
    assert r.ff == 10856 + 4
    assert r.carry4 == 1268
    assert r.dsp == 256
    assert (r.ramb36, r.ramb18, r.bram36) == (3, 5, 5.5)
    assert r.lut_memory == 86 * 4 and r.lut_srl == 2
    assert r.slice_luts == r.lut + 344 + 2
    assert "$scopeinfo" not in r.other


def test_parse_stat_json_uses_the_design_total():
    counts = parse_stat(json.dumps(STAT_JSON))
    r = resources_from_counts("m", counts)
    assert (r.lut, r.dsp, r.ff, r.ramb18, r.bram36) == (12, 3, 7, 1, 0.5)


def test_parse_ltp():
    assert parse_ltp(LTP_TEXT) == 6
    assert parse_ltp("Longest topological path in m (length=-1):") == 0
    assert parse_ltp("no path here") is None


@pytest.mark.parametrize(("fields", "failure"), [
    ({}, None),
    ({"dsp": 220, "ramb36": 140, "lut": 53_200, "ff": 106_400}, None),  # exactly full fits
    ({"dsp": 256}, "DSP48E1 256 > 220"),
    ({"ramb36": 100, "ramb18": 82}, "BRAM36 141 > 140"),
    ({"ramb18": 281}, "BRAM36 140.5 > 140"),
    ({"lut": 53_201}, "LUT 53,201 > 53,200"),
    ({"lut": 50_000, "lut_memory": 3_201}, "LUT + LUT as memory/SRL 53,201 > 53,200"),
    ({"lut_memory": 17_000, "lut_srl": 401}, "LUT as memory/SRL 17,401 > 17,400"),
    ({"ff": 106_401}, "FF 106,401 > 106,400"),
])
def test_gate(fields, failure):
    r = Resources(module="m", **fields)
    fails = gate(r, XC7Z020)
    if failure is None:
        assert fails == []
        assert "fit: PASS" in format_report(r)
    else:
        assert failure in fails
        assert "fit: FAIL: " + failure in format_report(r)


def test_step_lanes_synthesize_despite_the_abc_assert(tmp_path):
    """Yosys 0.70 aborts in ABC on the step lanes (ABC_REINTEGRATE_ASSERT); run_synth retries
    with split nets and gets two DSP48E1 per lane."""
    cfg = get_config("tiny")
    r = run_synth(cfg, "zynqnn_step_requant", tmp_path)
    assert r.dsp == 2 * cfg.cols
    assert r.lut > 0 and not gate(r)


def test_tiny_pe_array_synthesizes_and_parses(tmp_path):
    """A real Yosys run (~10 s): DSPs inferred, the text and JSON stat agree, depth found."""
    cfg = get_config("tiny")
    r = run_synth(cfg, "zynqnn_pe_array", tmp_path)
    work = tmp_path / cfg.config_id / "yosys_zynqnn_pe_array"
    log = (work / "yosys.log").read_text()
    # synth_xilinx's own closing `stat` (text) counts what our `stat -json` counted.
    text_counts = parse_stat(log[log.rindex("Printing statistics"):], "zynqnn_pe_array")
    assert resources_from_counts(r.module, text_counts).dsp == r.dsp
    assert resources_from_counts(r.module, text_counts).lut == r.lut
    assert r.dsp > 0, "no DSP48E1 inferred for the PE array's multipliers"
    assert r.lut > 0 and r.ff > 0
    assert not gate(r)
    assert r.logic_depth is not None and r.logic_depth >= 1
    assert sum(r.path_cells.values()) == r.logic_depth
    assert r.seconds is not None and r.config_id == cfg.config_id
    txt, js = write_outputs(r, tmp_path)
    assert txt == tmp_path / cfg.config_id / "resources.txt"
    data = json.loads(js.read_text())
    assert data["dsp"] == r.dsp and data["fit_failures"] == []
    assert "fit: PASS" in txt.read_text()


@pytest.mark.slow
def test_pynq_z2_pe_array_estimate(tmp_path):
    """The board build's PE array (~45 s here); it must fit the xc7z020."""
    r = run_synth(get_config("pynq_z2"), "zynqnn_pe_array", tmp_path)
    print(format_report(r))
    assert not gate(r), gate(r)
