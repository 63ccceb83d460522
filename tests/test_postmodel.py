"""The word-level post-processing model (the machine's) against ``zynqnn.numerics``.

The model sees only the hardware's inputs (PBUF words, scheme, zero point, clamp, activation
word); the expected codes come from numerics' own Requant objects and activation ops, on the
post-processing testbench's vectors (random and dyadic scales, rounding ties, saturation).
"""

from __future__ import annotations

import numpy as np
import pytest

from zynqnn.hw.config import get_config
from zynqnn.postmodel import apply_post
from zynqnn.sim.tb_postproc import GROUPS, layers

#: fixed16 needs the 16-bit build (as in the RTL testbench).
CASES = [(g, c) for c in ("tiny", "tiny16") for g in GROUPS if (g, c) != ("fixed16", "tiny")]


@pytest.mark.parametrize("group,cfg_name", CASES)
def test_model_matches_numerics(group, cfg_name):
    cfg = get_config(cfg_name)
    rng = np.random.default_rng(11)
    compared = 0
    for case in layers(group, cfg, rng, 96, cfg.cols):
        lay = case.layer
        got = apply_post(cfg, lay.scheme, lay.zp_out, lay.clamp_min, lay.clamp_max, lay.act,
                         lay.words, case.acc)
        assert np.array_equal(got, case.want), f"{group}: {case.name}"
        compared += case.want.size
    assert compared > 0


def test_model_sees_the_words():
    """A changed constant word changes the codes (the model reads the words, nothing else)."""
    cfg = get_config("tiny")
    case = next(c for c in layers("torch-fbgemm", cfg, np.random.default_rng(1), 64, cfg.cols))
    lay = case.layer
    words = list(lay.words)
    words[0] ^= 1 << 30          # a bit of the multiplier's exponent
    got = apply_post(cfg, lay.scheme, lay.zp_out, lay.clamp_min, lay.clamp_max, lay.act, words,
                     case.acc)
    assert not np.array_equal(got[:, 0], case.want[:, 0])
    assert np.array_equal(got[:, 1:], case.want[:, 1:])
