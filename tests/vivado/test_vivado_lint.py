"""The Vivado scripts under tclsh with recording stubs (a lint, not a Vivado run).

The flow for the pynq_z2 config must pass; each kind of mistake the lint exists for must fail
it: a typo'd option, a missing file, a wrong property name or value, a pin or port that does not
exist, a mistake in the order of the flow. Every mutation edits a copy of the scripts (or of the
bundle) in a temp dir and asserts that the text it replaces is there, so a script change cannot
turn a mutation into a no-op.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.vivado import (
    SCRIPTS_DIR,
    lint,
    output_name,
    prepare_bundle,
)

ROOT = Path(__file__).resolve().parents[2]

if shutil.which("tclsh") is None:  # pragma: no cover
    pytest.fail("tclsh not found: the Vivado TCL lint needs Tcl 8.6 (Debian package `tcl`)",
                pytrace=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """pynq_z2's bundle with the top level as its port shell: the stubbed Vivado commands read
    its module and ports, which tests/test_regs.py holds equal to the generated top level's
    (elaborating the real one costs ~40 s per xdist worker and adds nothing to a TCL lint)."""
    cfg = get_config("pynq_z2")
    out = tmp_path_factory.mktemp("bundle")
    return prepare_bundle(cfg, out, modules=[TOP_NAME], shell_top=True)


def _replace(path: Path, old: str, new: str, count: int = 1):
    text = path.read_text()
    assert text.count(old) == count, f"{old!r} occurs {text.count(old)} times in {path.name}"
    path.write_text(text.replace(old, new))


def run(tmp_path, bundle, script="build_bitstream.tcl", edit=None, args=(), **kw):
    """Lint a copy of the scripts on a copy of the bundle; ``edit(scripts, bundle)`` mutates."""
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS_DIR, scripts)
    b = tmp_path / bundle.name
    shutil.copytree(bundle, b)
    if edit is not None:
        edit(scripts, b)
    res = lint(scripts / script, [b / "params.tcl", *args], log=tmp_path / "calls.log", **kw)
    res.bundle = b
    return res


def _index(calls, prefix):
    for i, c in enumerate(calls):
        if c.startswith(prefix):
            return i
    raise AssertionError(f"no call starting with {prefix!r}")


def test_bitstream_flow_passes_for_pynq_z2(tmp_path, bundle):
    cfg = get_config("pynq_z2")
    res = run(tmp_path, bundle)
    assert res.ok, res.output
    calls = res.calls
    # The flow's order, as Vivado needs it.
    order = ["create_project", "add_files", "create_bd_design", "create_bd_cell",
             "connect_bd_intf_net", "assign_bd_address", "validate_bd_design",
             "generate_target", "make_wrapper", "synth_design", "opt_design", "place_design",
             "route_design", "get_timing_paths", "write_bitstream"]
    positions = [_index(calls, c) for c in order]
    assert positions == sorted(positions)
    # What the config and the platform decide.
    text = "\n".join(calls)
    assert f"create_bd_cell -type module -reference {TOP_NAME} zynqnn" in text
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ 150.0" in text
    assert "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH 64" in text
    assert "assign_bd_address -offset 0x43C00000 -range 4K" in text
    assert re.search(r"report_utilization -hierarchical -file \S+impl_utilization_hier.rpt", text)
    assert "report_timing_summary" in text
    # Bitstream and hardware handoff side by side, named by the config id.
    name = output_name(cfg)
    assert name == f"zynqnn_{cfg.config_id}"
    assert (res.bundle / f"{name}.bit").exists() and (res.bundle / f"{name}.hwh").exists()


def test_bitstream_flow_passes_for_tiny_with_port_shell(tmp_path):
    cfg = get_config("tiny")
    b = prepare_bundle(cfg, tmp_path / "b", modules=[], shell_top=True)
    res = lint(SCRIPTS_DIR / "build_bitstream.tcl", [b / "params.tcl"])
    assert res.ok, res.output


@pytest.mark.parametrize("module", [TOP_NAME])
def test_out_of_context_synthesis_passes(tmp_path, bundle, module):
    res = run(tmp_path, bundle, "synth_ooc.tcl", args=[module])
    assert res.ok, res.output
    text = "\n".join(res.calls)
    assert f"synth_design -top {module} -part xc7z020clg400-1 -mode out_of_context" in text
    assert "create_clock -name aclk -period 7.000" in text  # FCLK_CLK0 = 1000 MHz / 7
    assert (res.bundle / "ooc" / f"{module}_utilization_hier.rpt").exists()


def test_negative_slack_fails_the_build_without_a_bitstream(tmp_path, bundle):
    res = run(tmp_path, bundle, setup_slack=-0.125)
    assert not res.ok
    assert "timing not met: WNS = -0.125" in res.output
    assert not any(c.startswith("write_bitstream") for c in res.calls)
    assert not list(res.bundle.glob("*.bit"))
    res = run(tmp_path / "hold", bundle, hold_slack=-0.01)
    assert not res.ok and "hold timing not met" in res.output


def _edit_script(name, old, new, count=1):
    def edit(scripts, bundle):
        _replace(scripts / name, old, new, count)
    return edit


def _edit_bundle(name, old, new):
    def edit(scripts, bundle):
        _replace(bundle / name, old, new)
    return edit


def _delete_bundle_file(name):
    def edit(scripts, bundle):
        (bundle / name).unlink()
    return edit


def _append_bundle(name, text):
    def edit(scripts, bundle):
        with open(bundle / name, "a") as f:
            f.write(text)
    return edit


def _rename_top_port(old, new):
    def edit(scripts, bundle):
        path = bundle / f"{TOP_NAME}.v"
        text, n = re.subn(rf"\b{old}\b", new, path.read_text())
        assert n >= 2
        path.write_text(text)
    return edit


MUTATIONS = {
    # -- a typo'd command option ---------------------------------------------------------------
    "option_typo_create_bd_cell": (
        _edit_script("block_design.tcl", "-vlnv xilinx.com:ip:proc_sys_reset:5.0",
                     "-vlvn xilinx.com:ip:proc_sys_reset:5.0"),
        "create_bd_cell: unknown option -vlvn"),
    "option_typo_report": (
        _edit_script("common.tcl", "report_utilization -hierarchical",
                     "report_utilization -hierarchal"),
        "report_utilization: unknown option -hierarchal"),
    "option_missing_part": (
        _edit_script("build_bitstream.tcl", "synth_design -top ${bd}_wrapper -part $::zynqnn(part)",
                     "synth_design -top ${bd}_wrapper"),
        "synth_design: missing required option -part"),
    # -- a missing file ------------------------------------------------------------------------
    "file_missing_from_bundle": (
        _delete_bundle_file("pynq_z2.xdc"), "bundle file missing"),
    "file_missing_unchecked": (
        _edit_script("build_bitstream.tcl",
                     "[zynqnn::bundle_files $::zynqnn(xdc_files)]", "[zynqnn::path board.xdc]"),
        "add_files: file not found"),
    "reference_module_missing": (
        _edit_script("block_design.tcl", "-reference $::zynqnn(top)", "-reference zynqnn_core"),
        "module zynqnn_core is not defined"),
    # -- a wrong property name or value --------------------------------------------------------
    "ps7_property_typo": (
        _edit_script("ps7_pynq_z2.tcl", "CONFIG.PCW_USE_S_AXI_HP0 {1}",
                     "CONFIG.PCW_USE_S_AXI_HPO {1}"),
        "CONFIG.PCW_USE_S_AXI_HPO is not a processing_system7 property"),
    "ps7_property_value": (
        _edit_script("ps7_pynq_z2.tcl", "{16 Bit}", "{16 Bits}"),
        "CONFIG.PCW_UIPARAM_DDR_BUS_WIDTH = {16 Bits} is not a valid value"),
    "ps7_derived_property_set": (
        _edit_script("ps7_pynq_z2.tcl", "CONFIG.PCW_EN_RST0_PORT {1}",
                     "CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ {150}"),
        "is derived by the IP and cannot be set"),
    "smartconnect_property_typo": (
        _edit_script("block_design.tcl", "CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $mem_ic",
                     "CONFIG.NUM_SLAVES {1} CONFIG.NUM_MI {1}] $mem_ic"),
        "CONFIG.NUM_SLAVES is not a property of xilinx.com:ip:smartconnect:1.0"),
    "file_property_typo": (
        _edit_script("build_bitstream.tcl", "set_property synth_checkpoint_mode None",
                     "set_property synth_checkpoint None"),
        "synth_checkpoint is not a file property"),
    # -- a pin or port that does not exist -----------------------------------------------------
    "accelerator_pin_missing": (
        _edit_script("block_design.tcl", "zynqnn/irq", "zynqnn/interrupt"),
        "cell zynqnn has no pin interrupt"),
    "accelerator_interface_missing": (
        _edit_script("block_design.tcl", "zynqnn/m_axi]", "zynqnn/M_AXI]"),
        "cell zynqnn has no interface pin M_AXI"),
    "ps7_pin_missing": (
        _edit_script("block_design.tcl", "ps7/FCLK_RESET0_N", "ps7/FCLK_RESET_N"),
        "cell ps7 has no pin FCLK_RESET_N"),
    "ps7_port_not_enabled": (
        _edit_script("ps7_pynq_z2.tcl", "CONFIG.PCW_USE_S_AXI_HP0 {1} \\\n", ""),
        "cell ps7 has no interface pin S_AXI_HP0 as configured now"),
    "top_ports_differ_from_platform": (
        _rename_top_port("irq", "intr"),
        "ports differ from zynqnn.hw.platform.top_ports: missing {irq} extra {intr}"),
    "xdc_port_missing": (
        _append_bundle("pynq_z2.xdc",
                       "set_property -dict {PACKAGE_PIN R14 IOSTANDARD LVCMOS33} "
                       "[get_ports {led[0]}]\n"),
        "design system_wrapper has no port led[0]"),
    # -- connectivity --------------------------------------------------------------------------
    "two_drivers": (
        _edit_script("block_design.tcl", "[get_bd_pins rst_fclk0/peripheral_aresetn] ",
                     "[get_bd_pins rst_fclk0/peripheral_aresetn] "
                     "[get_bd_pins rst_fclk0/interconnect_aresetn] "),
        "is already in a net"),
    "base_address_outside_gp0": (
        _edit_bundle("params.tcl", "base_address) 0x43C00000", "base_address) 0x83C00000"),
        "outside /ps7/Data's window"),
    "clock_not_connected": (
        _edit_script("block_design.tcl", "[get_bd_pins ps7/S_AXI_HP0_ACLK] ", ""),
        "/ps7/S_AXI_HP0_ACLK is not connected"),
    # -- the order of the flow -----------------------------------------------------------------
    "connect_before_cells_exist": (
        _edit_script("block_design.tcl", "    # -- cells ---",
                     "    connect_bd_net [get_bd_pins ps7/FCLK_CLK0] [get_bd_pins zynqnn/aclk]\n"
                     "    # -- cells ---"),
        "no cell ps7 in the block design"),
    "generate_target_before_validate": (
        _edit_script("block_design.tcl", "    validate_bd_design\n", ""),
        "generate_target: block design system changed since validate_bd_design"),
    "change_after_validate": (
        _edit_script("block_design.tcl", "    validate_bd_design\n    save_bd_design\n",
                     "    validate_bd_design\n    save_bd_design\n"
                     "    set_property -dict [list CONFIG.NUM_MI {1}] $ctrl_ic\n"),
        "changed since validate_bd_design"),
    "checkpoint_mode_after_generate": (
        _edit_script("build_bitstream.tcl",
                     "set_property synth_checkpoint_mode None $bd_file\n"
                     "generate_target all $bd_file\n",
                     "generate_target all $bd_file\n"
                     "set_property synth_checkpoint_mode None $bd_file\n"),
        "generated with synth_checkpoint_mode Hierarchical"),
    "bitstream_before_route": (
        _edit_script("build_bitstream.tcl", "route_design\n",
                     "write_bitstream -force $bit\nroute_design\n"),
        "write_bitstream needs one of: routed"),
    "route_before_place": (
        _edit_script("build_bitstream.tcl", "place_design\nphys_opt_design\nroute_design\n",
                     "route_design\nplace_design\nphys_opt_design\n"),
        "route_design needs one of: placed"),
    "unknown_vivado_command": (
        _edit_script("build_bitstream.tcl", "\nopt_design\n", "\nopt_design\nlaunch_runs impl_1\n"),
        'invalid command name "launch_runs"'),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mistake_fails_the_lint(tmp_path, bundle, name):
    edit, message = MUTATIONS[name]
    res = run(tmp_path, bundle, edit=edit)
    assert not res.ok, f"{name} passed the lint:\n{res.output}"
    assert message in res.output, res.output


def test_ooc_rejects_a_bitstream(tmp_path, bundle):
    def edit(scripts, b):
        _replace(scripts / "synth_ooc.tcl", "write_checkpoint -force",
                 "write_bitstream -force [file join $out x.bit]\nwrite_checkpoint -force")
    res = run(tmp_path, bundle, "synth_ooc.tcl", edit=edit)
    assert not res.ok and "write_bitstream needs one of: routed" in res.output


def test_make_bitstream_without_vivado_stops_at_once():
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "vivado").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    proc = subprocess.run(["make", "-s", "bitstream"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Vivado is not on PATH" in proc.stdout
    assert "vivado -mode batch -source scripts/vivado/build_bitstream.tcl" in proc.stdout
