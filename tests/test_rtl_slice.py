"""The first hardware slice (PE array, TFLite requantizer) on both simulators, bit for bit."""

import pytest

from zynqnn.config import get_config
from zynqnn.rtl.pe_array import PEArray
from zynqnn.rtl.requant import TfliteRequant
from zynqnn.rtl.steprequant import StepRequant
from zynqnn.sim.runner import SIMULATORS, run

CONFIGS = ["tiny", "tiny16"]


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("cfg_name", CONFIGS)
def test_pe_array(sim, cfg_name):
    cfg = get_config(cfg_name)
    tests, failures = run(lambda: PEArray(cfg), "zynqnn_pe_array", "zynqnn.sim.tb_pe_array",
                          sim, cfg)
    assert (tests, failures) == (2, 0)


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("cfg_name", CONFIGS)
def test_requant_tflite(sim, cfg_name):
    cfg = get_config(cfg_name)
    tests, failures = run(lambda: TfliteRequant(cfg), "zynqnn_requant_tflite",
                          "zynqnn.sim.tb_requant", sim, cfg)
    assert (tests, failures) == (1, 0)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_step_requant(sim):
    cfg = get_config("tiny")
    tests, failures = run(lambda: StepRequant(cfg), "zynqnn_step_requant",
                          "zynqnn.sim.tb_steprequant", sim, cfg)
    assert (tests, failures) == (1, 0)
