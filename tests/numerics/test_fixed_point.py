"""``pow2`` (Vitis AI DPU style) and ``fixed16`` (Qm.n) schemes.

pow2: the DPU's deployment arithmetic is defined in real numbers (``floor(x * 2^fp + 0.5)`` of
the exact value); the reference here evaluates it with Python ``Fraction`` (exact rationals),
independent of both library forms. fixed16: fxpmath 0.4.10 is the reference.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from fxpmath import Fxp
from numerics_helpers import assert_equal, count

from zynqnn.numerics import make_requant, ops, quant
from zynqnn.numerics.rounding import FXPMATH_ROUNDING, ROUNDING_MODES, shift_round


def frac_round(v: Fraction, mode: str) -> int:
    fl = math.floor(v)
    rem = v - fl
    if mode == "floor":
        return fl
    if mode == "ceil":
        return math.ceil(v)
    if mode == "toward_zero":
        return math.trunc(v)
    if rem != Fraction(1, 2):
        return fl + (rem > Fraction(1, 2))
    return {"half_up": fl + 1, "half_down": fl, "half_even": fl + (fl % 2),
            "half_away": fl + 1 if v > 0 else fl, "half_zero": fl if v > 0 else fl + 1}[mode]


# ---------------------------------------------------------------------------------------- pow2


def test_pow2_vs_exact(record_property):
    """>= 100,000 outputs against the real-number definition evaluated with Fractions."""
    rng = np.random.default_rng(8)
    total = 0
    configs = [  # fp_in, fp_w (per channel), fp_out, fp_bias, leaky, relu
        (6, [7, 7, 7, 7], 4, 9, None, False),
        (7, [6, 8, 5, 7], 5, 10, (26, 8), False),
        (5, [7, 7, 7, 7], 3, 8, None, True),
        (4, [4, 5, 6, 3], 8, 7, (1, 3), False),  # shift 0 / negative: no rounding / left shift
        (7, [7, 7, 7, 7], 2, 12, (26, 8), False),
    ]
    for fp_in, fp_w, fp_out, fp_b, leaky, relu in configs:
        k = len(fp_w)
        bias = rng.integers(-128, 128, k)
        rq = make_requant("pow2", 2.0**-fp_in, 2.0 ** -np.array(fp_w), 2.0**-fp_out, bias=bias,
                          s_bias=2.0**-fp_b, leaky=leaky, relu=relu)
        acc = rng.integers(-(2**16), 2**16, (6000, k))
        acc[:500] = rng.integers(-300, 300, (500, k))  # dense small values: many exact ties
        mine = rq.apply(acc)
        assert_equal(rq.apply_hw(acc), mine, "pow2 hw form")
        want = np.empty_like(mine)
        for c in range(k):
            fa = fp_in + fp_w[c]
            for i, a in enumerate(acc[:, c]):
                v = Fraction(int(a), 2**fa) + Fraction(int(bias[c]), 2**fp_b)  # real value
                if leaky is not None and v < 0:
                    v = v * Fraction(leaky[0], 2 ** leaky[1])
                q = frac_round(v * 2**fp_out, "half_up")
                want[i, c] = min(max(q, 0 if relu else -128), 127)
        assert_equal(mine, want, f"pow2 {fp_in}/{fp_w}/{fp_out}")
        total += mine.size
    assert total >= 100_000
    count(record_property, "pow2", "requant vs exact real-number definition", total, 0)


def test_pow2_hand():
    """shift 1: +-1.5 -> 2 / -1 (ties toward +inf), saturation at -128/127; leaky 26/256:
    v = -100 (shift 0) -> -100*26/256 = -10.156 -> -10; v = -128 -> -13.0 exactly."""
    rq = make_requant("pow2", 2**-4, 2**-4, 2**-7)  # shift = 1
    acc = np.array([[3], [-3], [5], [-5], [1000], [-1000]])
    assert rq.apply(acc).ravel().tolist() == [2, -1, 3, -2, 127, -128]
    lk = make_requant("pow2", 2**-4, 2**-4, 2**-8, leaky=(26, 8))  # shift 0
    assert lk.apply(np.array([[-100], [-128], [50]])).ravel().tolist() == [-10, -13, 50]
    for r in (rq, lk):
        assert_equal(r.apply_hw(acc), r.apply(acc), "pow2 hand hw")


def test_pow2_quantize():
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.49, 200.0, -200.0], dtype=np.float32)
    assert quant.quantize_pow2(x, 0).tolist() == [1, 0, 2, -1, 2, 127, -128]  # half up
    assert quant.quantize_pow2(x, 0, rounding="half_away").tolist() == [1, -1, 2, -2, 2, 127,
                                                                         -128]
    assert quant.quantize_pow2(x, 0, narrow=True).tolist()[-1] == -127
    assert quant.quantize_pow2(np.float32([0.3]), 3).tolist() == [2]  # 2.4 -> 2


def test_leaky_relu_fixed_vs_exact(record_property):
    rng = np.random.default_rng(4)
    total = 0
    for mult, shift in ((1, 3), (26, 8), (3, 4), (205, 11)):
        for mode in ROUNDING_MODES:
            zp = int(rng.integers(-20, 20))
            x = np.arange(-128, 128)
            mine = ops.leaky_relu_fixed(x, zp, mult, shift, mode)
            want = []
            for q in x:
                v = int(q) - zp
                r = v if v >= 0 else frac_round(Fraction(v * mult, 2**shift), mode)
                want.append(min(max(r + zp, -128), 127))
            assert_equal(mine, want, f"leaky {mult}/2^{shift} {mode}")
            total += x.size
    count(record_property, "pow2", "leaky_relu_fixed (slope m/2^k) vs exact", total, 0)


# ------------------------------------------------------------------------------------- fixed16


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_fixed16_vs_fxpmath(mode, record_property):
    """Requantize Q(n_in+n_w) accumulators to Q7.8 and compare with fxpmath's quantizer."""
    rng = np.random.default_rng(ROUNDING_MODES.index(mode))
    total = 0
    for overflow in ("saturate", "wrap"):
        for n_in, n_w, n_out in ((8, 8, 8), (8, 10, 6), (7, 8, 12)):
            rq = make_requant("fixed16", 2.0**-n_in, 2.0**-n_w, 2.0**-n_out, rounding=mode,
                              overflow=overflow)
            acc = rng.integers(-(2**30), 2**30, 4000)
            acc[:1000] = rng.integers(-(2**17), 2**17, 1000)
            acc[:200] = (rng.integers(-(2**12), 2**12, 200) * 2 + 1) << (n_in + n_w - n_out - 1) \
                if n_in + n_w > n_out else acc[:200]  # exact ties
            mine = rq.apply(acc[:, None])[:, 0]
            assert_equal(rq.apply_hw(acc[:, None])[:, 0], mine, "fixed16 hw form")
            real = np.ldexp(acc.astype(np.float64), -(n_in + n_w))  # exact
            ref = Fxp(real, signed=True, n_word=16, n_frac=n_out, rounding=FXPMATH_ROUNDING[mode],
                      overflow=overflow)
            assert_equal(mine, np.asarray(ref.val, dtype=np.int64), f"fixed16 {mode} {overflow}")
            total += acc.size
    count(record_property, "fixed16", f"requant vs fxpmath ({mode})", total, 0)


def test_fixed16_q78_multiply(record_property):
    """Q7.8 x Q7.8 -> Q15.16 product -> Q7.8 (the YOLO fixed-16 flow) vs fxpmath arithmetic."""
    rng = np.random.default_rng(1)
    a = rng.integers(-(2**15), 2**15, 50000)
    b = rng.integers(-(2**15), 2**15, 50000)
    total = 0
    for mode in ("floor", "half_up"):
        rq = make_requant("fixed16", 2**-8, 2**-8, 2**-8, rounding=mode)
        mine = rq.apply((a * b)[:, None])[:, 0]
        fa = Fxp(None, signed=True, n_word=16, n_frac=8)
        x = Fxp(a * 2.0**-8, like=fa)
        y = Fxp(b * 2.0**-8, like=fa)
        prod = x * y  # exact Q15.16 in fxpmath
        ref = Fxp(prod.get_val(), signed=True, n_word=16, n_frac=8,
                  rounding=FXPMATH_ROUNDING[mode], overflow="saturate")
        assert_equal(mine, np.asarray(ref.val, dtype=np.int64), f"Q7.8 multiply {mode}")
        total += a.size
    count(record_property, "fixed16", "Q7.8 x Q7.8 multiply vs fxpmath", total, 0)


@pytest.mark.parametrize("mode", ["floor", "half_up", "half_even", "toward_zero"])
def test_quantize_fixed_vs_fxpmath(mode, record_property):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 40, 20000), (rng.integers(-5000, 5000, 2000) + 0.5) / 256])
    for overflow in ("saturate", "wrap"):
        mine = quant.quantize_fixed(x, 8, 16, mode, overflow)
        ref = Fxp(x, signed=True, n_word=16, n_frac=8, rounding=FXPMATH_ROUNDING[mode],
                  overflow=overflow)
        assert_equal(mine, np.asarray(ref.val, dtype=np.int64), f"quantize_fixed {mode}")
    count(record_property, "fixed16", f"quantize_fixed vs fxpmath ({mode})", 2 * x.size, 0)


def test_fixed16_bias_and_leaky():
    """Bias with its own fraction length is aligned before the shift; leaky slope 1/8."""
    rq = make_requant("fixed16", 2**-8, 2**-8, 2**-8, bias=[3], s_bias=2**-4, leaky=(1, 3),
                      rounding="half_up")
    # acc in Q.16; bias 3 in Q.4 -> 3 << 12 = 12288; v = 0 + 12288 -> 12288/256 = 48
    # v = -8192 (=-0.125) + 12288 = 4096 -> 16;  v = -65536 + 12288 = -53248 -> *1/8 -> -26
    acc = np.array([[0], [-8192], [-65536]])
    assert rq.apply(acc).ravel().tolist() == [48, 16, -26]
    assert rq.apply_hw(acc).ravel().tolist() == [48, 16, -26]


def test_shift_round_modes_small():
    v = np.arange(-16, 17)
    for mode in ROUNDING_MODES:
        want = [frac_round(Fraction(int(x), 4), mode) for x in v]
        assert shift_round(v, 2, mode).tolist() == want, mode
        assert shift_round(v, -3, mode).tolist() == (v * 8).tolist()
