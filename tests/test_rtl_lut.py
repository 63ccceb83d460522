"""The table-lookup lanes (``zynqnn.rtl.lut.EltwiseLUT``) on both simulators: two random tables
filled in turn, every uint8 and int8 code looked up, ``array_equal`` with ``table[code & 0xFF]``
(``zynqnn.sim.tb_lut``). The pynq_z2 build: two lanes sharing one block RAM's two ports."""

from __future__ import annotations

import pytest

from zynqnn.hw.config import get_config
from zynqnn.rtl.lut import EltwiseLUT
from zynqnn.sim.runner import SIMULATORS, cocotb_tests, default_build_root, run


@pytest.mark.parametrize("sim", SIMULATORS)
def test_lut(sim, record_property, quick_cxx):
    cfg = get_config("pynq_z2")
    assert cfg.add_lanes == 2
    path = default_build_root() / "sim" / f"zynqnn_lut-{cfg.config_id}-{sim}" / "compared.txt"
    path.unlink(missing_ok=True)
    run(lambda: EltwiseLUT(cfg), "zynqnn_lut", "zynqnn.sim.tb_lut", sim, cfg)
    counts = {}
    for line in path.read_text().splitlines():
        group, n = line.split()
        counts[group] = counts.get(group, 0) + int(n)
    record_property("compared", counts)
    assert set(counts) == {"uint8", "int8"} == {
        t.removeprefix("test_") for t in cocotb_tests("zynqnn.sim.tb_lut")}
    assert all(n == 2 * 512 for n in counts.values())
