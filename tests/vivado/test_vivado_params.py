"""params.tcl: generated from HwConfig and zynqnn.hw.platform, deterministic, machine-free."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from zynqnn.hw.config import PRESETS, XC7Z020, get_config
from zynqnn.hw.platform import BASE_ADDRESS, TOP_NAME, top_ports
from zynqnn.vivado import fclk_plan, output_name, tcl_params, write_tcl_params


@pytest.mark.parametrize(("target", "div", "actual"), [
    (150.0, 7, 142.857143),  # 150 MHz is not reachable from the 1000 MHz IO PLL
    (100.0, 10, 100.0),
    (142.857, 7, 142.857143),
    (200.0, 5, 200.0),
    (50.0, 20, 50.0),
])
def test_fclk_plan_picks_the_nearest_divisors(target, div, actual):
    plan = fclk_plan(target)
    assert plan.div0 * plan.div1 == div
    assert 1 <= plan.div0 <= 63 and 1 <= plan.div1 <= 63
    assert plan.actual_mhz == pytest.approx(actual, abs=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_params_follow_the_config(tmp_path, name):
    cfg = get_config(name)
    path = write_tcl_params(cfg, out_dir=tmp_path)
    assert path == tmp_path / cfg.config_id / "params.tcl"
    text = path.read_text()
    assert text == tcl_params(cfg)  # deterministic
    assert write_tcl_params(cfg, out_dir=tmp_path).read_text() == text
    assert not re.search(r"/(home|root|tmp|work|usr)/", text), "a machine path in params.tcl"
    for needle in [f"config_id) {cfg.config_id}", f"part) {XC7Z020.part}", f"top) {TOP_NAME}",
                   f"clock_mhz) {float(cfg.clock_mhz)!r}", f"base_address) 0x{BASE_ADDRESS:08X}",
                   f"axi_data_bits) {cfg.axi_data_bits}", f"output_name) {output_name(cfg)}",
                   f"verilog_sources) [list {TOP_NAME}.v]"]:
        assert needle in text


def test_params_are_valid_tcl_with_every_top_port(tmp_path):
    if shutil.which("tclsh") is None:  # pragma: no cover
        pytest.fail("tclsh not found (Debian package `tcl`)")
    cfg = get_config("pynq_z2")
    path = write_tcl_params(cfg, out_dir=tmp_path)
    script = (f"source {path}\n"
              "puts [llength $::zynqnn(top_ports)]\n"
              "puts $::zynqnn(build_dir)\n"
              "puts [dict get $::zynqnn(ooc_targets) zynqnn_top]\n")
    out = subprocess.run(["tclsh"], input=script, capture_output=True, text=True, check=True)
    n, build_dir, ooc = out.stdout.splitlines()
    assert int(n) == len(top_ports(cfg))
    assert build_dir == str(path.parent.resolve())  # resolved where the file is, at run time
    assert ooc == "zynqnn_top.v aclk"
