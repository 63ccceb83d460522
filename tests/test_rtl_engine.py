"""The compute engine on both simulators: whole conv layers and residual adds (ELTWISE), bit for
bit against numpy."""

import pytest

from zynqnn.config import get_config
from zynqnn.rtl.engine import Engine
from zynqnn.sim.runner import SIMULATORS, run


@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_conv(sim):
    cfg = get_config("tiny")
    tests, failures = run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.tb_engine", sim, cfg)
    assert (tests, failures) == (12, 0)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_depthwise_mode(sim):
    """The one-pass depthwise mode and the step lanes need a 16x16 array (nine taps per PE
    row): pynq_z2."""
    cfg = get_config("pynq_z2")
    tests, failures = run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.tb_engine", sim, cfg,
                          testcase=["depthwise_one_pass", "depthwise_step_lanes"])
    assert (tests, failures) == (2, 0)
