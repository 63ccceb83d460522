"""The PE array and the step requantizer on their own, on both simulators, bit for bit."""

import pytest

from zynqnn.hw.config import get_config
from zynqnn.rtl.pe_array import PEArray
from zynqnn.rtl.steprequant import StepRequant
from zynqnn.sim.runner import SIMULATORS, run

CONFIGS = ["tiny", "tiny16"]


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("cfg_name", CONFIGS)
def test_pe_array(sim, cfg_name, quick_cxx):
    cfg = get_config(cfg_name)
    # run() raises unless every cocotb test of the module ran and passed.
    run(lambda: PEArray(cfg), "zynqnn_pe_array", "zynqnn.sim.tb_pe_array", sim, cfg)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_step_requant(sim, quick_cxx):
    cfg = get_config("tiny")
    run(lambda: StepRequant(cfg), "zynqnn_step_requant", "zynqnn.sim.tb_steprequant", sim, cfg)
