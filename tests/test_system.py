"""The whole accelerator (SoC shell + engine) running compiled networks through the driver."""

import pytest

from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.rtl.engine import Engine
from zynqnn.rtl.top import Top
from zynqnn.sim.program_runner import build_lock
from zynqnn.sim.runner import SIMULATORS, default_build_root, run


@pytest.mark.parametrize("sim", SIMULATORS)
def test_compiled_networks_on_top(sim):
    """conv/pool/upsample/concat networks, with and without backpressure, on both simulators;
    on Verilator (the faster one) also the residual (ELTWISE) networks and 100 back-to-back
    runs of one residual network with identical outputs and cycle counts (Icarus runs the
    residual networks in the slow suite; tb_engine's adds run on both in this one). One launch
    per simulator: the tests share the build directory."""
    cfg = get_config("tiny")
    tests = ["compiled_network"]
    if sim == "verilator":
        tests += ["residual_network", "back_to_back_runs"]
    # Not test_soc's build directory (it builds the same top-level name with the test engine):
    # run_program's, under its lock, so tests/test_program_runner.py uses the same build.
    root = default_build_root() / "system"
    with build_lock(cfg, sim, root):
        run(lambda: Top(cfg, Engine(cfg)), TOP_NAME, "zynqnn.sim.tb_system", sim, cfg,
            testcase=tests, build_root=root)


@pytest.mark.slow
def test_residual_networks_on_icarus():
    """The residual (ELTWISE) networks of test_compiled_networks_on_top on Icarus."""
    cfg = get_config("tiny")
    root = default_build_root() / "system"
    with build_lock(cfg, "icarus", root):
        run(lambda: Top(cfg, Engine(cfg)), TOP_NAME, "zynqnn.sim.tb_system", "icarus", cfg,
            testcase=["residual_network"], build_root=root)
