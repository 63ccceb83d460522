"""The word-level add model (the machine's) against ``zynqnn.numerics``.

The model sees only the hardware's inputs (the ``add_params_layout`` bits, zero point, clamp);
the expected codes come from numerics' add ops, on the element-wise testbench's vectors (random
and dyadic scales, every semantics and path, ReLU, extremes and zero points).
"""

from __future__ import annotations

import numpy as np
import pytest

from zynqnn.addmodel import apply_add
from zynqnn.hw.config import get_config
from zynqnn.sim.tb_eltwise import GROUPS, add_cases

CASES = [(g, c) for c in ("tiny", "tiny16") for g in GROUPS]


@pytest.mark.parametrize("group,cfg_name", CASES)
def test_model_matches_numerics(group, cfg_name):
    cfg = get_config(cfg_name)
    rng = np.random.default_rng(17)
    compared = 0
    for case in add_cases(group, cfg, rng, 512):
        lay = case.layer
        got = apply_add(cfg, lay.params, lay.zp_out, lay.clamp_min, lay.clamp_max, case.a,
                        case.b)
        assert np.array_equal(got, case.want), case.name
        compared += case.want.size
    assert compared == 6 * 512


def test_model_sees_the_bits():
    """A changed constant bit changes the codes (the model reads the bits, nothing else)."""
    from zynqnn.hw.add import add_params_layout

    cfg = get_config("tiny")
    case = add_cases("qnnpack", cfg, np.random.default_rng(3), 256)[0]
    lay = case.layer
    off = add_params_layout(cfg)["c"].offset
    bad = lay.params ^ (1 << (off + 20))          # a high bit of the multiplier of a
    got = apply_add(cfg, bad, lay.zp_out, lay.clamp_min, lay.clamp_max, case.a, case.b)
    assert not np.array_equal(got, case.want)
