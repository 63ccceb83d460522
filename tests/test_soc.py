"""The SoC shell (registers, command processor, DMA) with the test engine, on both simulators.

One build per simulator and config runs every cocotb test of ``zynqnn.sim.tb_soc``: registers,
DMA under random back-pressure and latency with 4 KB splits, AXI error responses, window
violations, malformed commands, commands refused for a successor that cannot be fetched
(no END, or past WINDOW_LIMIT), the watchdog, soft reset mid-run, loads overlapping compute,
back-to-back runs under backpressure, transfers swept up to a 4 KB boundary and randomized
corrupted programs.
"""

import pytest

from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.rtl.top import Top
from zynqnn.sim.runner import SIMULATORS, default_build_root, run
from zynqnn.sim.test_engine import TestEngine

TB = "zynqnn.sim.tb_soc"


def _top(cfg):
    return lambda: Top(cfg, TestEngine(cfg))


@pytest.mark.parametrize("sim", SIMULATORS)
def test_soc_tiny(sim):
    cfg = get_config("tiny")
    # run() raises unless every cocotb test of the module (or of `testcase`) ran and passed.
    run(_top(cfg), TOP_NAME, TB, sim, cfg)


def test_soc_without_engine():
    """The default build (no engine) in its own build directory. Icarus only: Verilator lints
    this Verilog in test_packaging, the behaviour checked here (compute commands stop with
    BAD_COMPUTE) is the dispatcher's, which test_soc_tiny runs on both simulators, and a second
    Verilator build of the top would cost ~40 s of the test budget."""
    cfg = get_config("tiny")
    run(lambda: Top(cfg), TOP_NAME, "zynqnn.sim.tb_soc_noengine", "icarus", cfg,
        build_root=default_build_root() / "noengine")


def test_soc_pynq_z2_smoke(quick_cxx):
    """The board's configuration (16 x 16, 128-bit words: two beats per word) on Verilator."""
    cfg = get_config("pynq_z2")
    tests = ["registers", "dma_backpressure", "back_to_back", "malformed_commands"]
    run(_top(cfg), TOP_NAME, TB, "verilator", cfg, testcase=tests)


@pytest.mark.slow
def test_soc_corrupted_programs_1000():
    """1,000 corrupted programs on Verilator (its own build directory, so it can run beside
    test_soc_tiny)."""
    cfg = get_config("tiny")
    run(_top(cfg), TOP_NAME, TB, "verilator", cfg, testcase="corrupted_programs",
        extra_env={"TB_CORRUPT_RUNS": "1000", "TB_SEED": "7"},
        build_root=default_build_root() / "slow")


@pytest.mark.slow
def test_soc_offset_sweep_long():
    """LOAD and STORE at every beat offset from 0 to 64 beats before a 4 KB boundary, every
    length from 1 to 40 words, guard bytes checked (tb_soc.offset_sweep), on Verilator."""
    cfg = get_config("tiny")
    run(_top(cfg), TOP_NAME, TB, "verilator", cfg, testcase="offset_sweep",
        extra_env={"TB_SWEEP_BEATS": "64", "TB_SWEEP_WORDS": "all"},
        build_root=default_build_root() / "slow-sweep")
