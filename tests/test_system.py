"""The whole accelerator (SoC shell + engine) running compiled networks through the driver."""

import pytest

from zynqnn.config import get_config
from zynqnn.platform import TOP_NAME
from zynqnn.rtl.engine import Engine
from zynqnn.rtl.top import Top
from zynqnn.sim.runner import SIMULATORS, default_build_root, run


@pytest.mark.parametrize("sim", SIMULATORS)
def test_compiled_network_on_top(sim):
    cfg = get_config("tiny")
    # Its own build directory: test_soc builds the same top-level name with the test engine.
    assert run(lambda: Top(cfg, Engine(cfg)), TOP_NAME, "zynqnn.sim.tb_system", sim, cfg,
               build_root=default_build_root() / "system") == (1, 0)
