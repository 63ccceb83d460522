"""The compute engine on both simulators: whole conv layers and residual adds (ELTWISE), bit for
bit against numpy."""

import pytest

from zynqnn.hw.config import get_config
from zynqnn.rtl.engine import Engine
from zynqnn.sim.runner import SIMULATORS, run


@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_conv(sim):
    cfg = get_config("tiny")
    # run() raises unless every cocotb test of the module ran and passed.
    run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.tb_engine", sim, cfg)


@pytest.mark.parametrize("sim", [pytest.param(s, marks=pytest.mark.slow) if s == "icarus" else s
                                 for s in SIMULATORS])
def test_engine_depthwise_mode(sim):
    """The one-pass depthwise mode and the step lanes need a 16x16 array (nine taps per PE
    row): pynq_z2. Icarus takes about 12 CPU minutes for it (Verilator under one after its
    build), so the short suite runs it on Verilator and `make test-slow` on Icarus; the engine
    itself runs on both simulators in the short suite (``test_engine_conv``, tiny)."""
    cfg = get_config("pynq_z2")
    run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.tb_engine", sim, cfg,
        testcase=["depthwise_one_pass", "depthwise_step_lanes"])
