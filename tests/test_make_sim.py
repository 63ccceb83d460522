"""`make sim` and `make sim-list`: one testbench on one simulator, with a readable waveform."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from zynqnn.hw.config import get_config
from zynqnn.sim.benches import BENCHES, waveform_path
from zynqnn.sim.clocking import CLOCK_NS
from zynqnn.sim.runner import SIMULATORS

ROOT = Path(__file__).resolve().parent.parent


def _make(*args: str) -> subprocess.CompletedProcess:
    # `-o setup`: the venv this test runs in is the set-up one; don't reinstall it.
    env = {**os.environ, "AMARANTH_USE_YOSYS": "builtin"}
    return subprocess.run(["make", "--no-print-directory", "-o", "setup", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=900)


def test_sim_list_names_every_testbench():
    out = _make("sim-list")
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    on_disk = {p.stem for p in (ROOT / "sim").glob("tb_*.py")} - {"tb_program"}
    assert listed == on_disk == set(BENCHES)
    assert "conv_layers" in out.stdout or "tb_engine" in out.stdout


@pytest.mark.parametrize("sim", SIMULATORS)
def test_sim_writes_a_waveform_of_the_top_level(sim):
    import pywellen

    cfg = get_config("tiny")
    fst = waveform_path("tb_pe_array", cfg, sim)
    fst.unlink(missing_ok=True)
    out = _make("sim", "TB=tb_pe_array", f"SIM={sim}", "CONFIG=tiny", "WAVES=1", "SEED=3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"PASS tb_pe_array on {sim}" in out.stdout
    assert f"waveform: {fst}" in out.stdout
    wave = pywellen.Waveform(str(fst))
    names = {v.full_name: v for v in wave.all_vars()}
    top = "zynqnn_pe_array"
    # The top level's ports and internal registers, under their Amaranth names.
    for port in ("clk", "rst", "acts__valid", "acts__ready"):
        assert f"{top}.{port}" in names, sorted(names)[:20]
    assert any(n.startswith(f"{top}.") and "pe_r0" in n for n in names)
    # The clock toggles every half period (times in the file's 1 ps unit).
    assert str(wave.timescale) == "1ps"
    clk = names[f"{top}.clk"].signal
    half = int(CLOCK_NS * 1000) // 2
    values = [clk.value_at(t + half // 2) for t in range(0, 20 * half, half)]
    assert values == [values[0], 1 - values[0]] * 10, values


def test_sim_reports_a_failing_testbench_and_unknown_names():
    out = _make("sim", "TB=tb_nonexistent")
    assert out.returncode != 0 and "unknown testbench 'tb_nonexistent'" in out.stderr
    # (Another testbench than above: the two must not share a build directory.)
    out = _make("sim", "TB=tb_steprequant", "CONFIG=tiny", "TEST=no_such_test")
    assert out.returncode != 0 and "FAIL tb_steprequant" in out.stderr
