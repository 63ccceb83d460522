"""The compute engine on both simulators: whole conv layers and residual adds (ELTWISE), bit for
bit against numpy."""

import pytest

from zynqnn.hw.config import HwConfig, get_config
from zynqnn.rtl.engine import Engine
from zynqnn.sim.runner import SIMULATORS, run


@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_conv(sim, quick_cxx):
    cfg = get_config("tiny")
    # run() raises unless every cocotb test of the module ran and passed.
    run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.tb_engine", sim, cfg)


#: The smallest int8 build with the one-pass depthwise mode, its fbgemm pairs and the step lanes
#: (rows == cols >= 9, rows x 8 bits a multiple of the AXI width): 12 x 12 on a 32-bit port.
#: Its Verilator build takes about a minute less than pynq_z2's; `make test-slow` runs pynq_z2.
DW12 = HwConfig(name="dw12", rows=12, cols=12, act_buffer_depth=1024, weight_buffer_depth=512,
                acc_buffer_depth=512, param_buffer_depth=256, max_width=64, axi_data_bits=32)


@pytest.mark.parametrize("cfg, sim", [
    (DW12, "verilator"),
    pytest.param(get_config("pynq_z2"), "verilator", marks=pytest.mark.slow),
    pytest.param(get_config("pynq_z2"), "icarus", marks=pytest.mark.slow),
], ids=["dw12-verilator", "pynq_z2-verilator", "pynq_z2-icarus"])
def test_engine_depthwise_mode(cfg, sim, quick_cxx):
    """The one-pass depthwise mode and the step lanes need rows == cols >= 9 (nine taps per PE
    row). Icarus takes about 12 CPU minutes for pynq_z2 (Verilator under one after its
    build), so the short suite runs a 12 x 12 build on Verilator and `make test-slow` pynq_z2
    on both; the engine itself runs on both simulators in the short suite
    (``test_engine_conv``, tiny)."""
    assert cfg.dw_kernel == 3 and cfg.dw_pairs and cfg.step_lanes == cfg.cols
    run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.tb_engine", sim, cfg,
        testcase=["depthwise_one_pass", "depthwise_step_lanes"])
