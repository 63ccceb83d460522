"""Integer float32 emulation (the hardware form) against the CPU's IEEE float32 arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numerics_helpers import HYP, assert_equal, count

from zynqnn.numerics import f32int as F
from zynqnn.numerics.errors import RangeError

f32 = np.float32


def rand_f32(rng, n, lo=-40, hi=40):
    m = rng.integers(1 << 23, 1 << 24, n) * rng.choice([-1, 1], n)
    return np.ldexp(m.astype(np.float64), rng.integers(lo, hi, n) - 23).astype(f32)


def edge_pairs(rng, n):
    """Operand pairs that stress alignment: cancellation, far exponents, exact ties."""
    a = rand_f32(rng, n)
    b = rand_f32(rng, n)
    q = n // 6
    b[:q] = -a[:q] * f32(1.0000001)                                   # massive cancellation
    b[q:2 * q] = np.nextafter(-a[q:2 * q], f32(0))                    # cancel to one ulp
    b[2 * q:3 * q] = a[2 * q:3 * q] * f32(2.0**-24)                  # exactly half an ulp
    b[3 * q:4 * q] = a[3 * q:4 * q] * f32(-(2.0**-25))               # below half, sticky
    b[4 * q:5 * q] = a[4 * q:5 * q] * f32(3 * 2.0**-26)              # above a quarter ulp
    return a, b


def test_from_int(record_property):
    rng = np.random.default_rng(1)
    i = np.concatenate([rng.integers(-(2**31), 2**31, 500_000),
                        (rng.integers(-(2**7), 2**7, 10_000) * 2 + 1) << 24,  # exact ties
                        [2**31 - 1, -(2**31), 2**24 + 1, 2**24 + 3, -(2**25) - 2, 0]])
    assert_equal(F.compose(*F.from_int(i)), i.astype(f32), "int32 -> float32")
    count(record_property, "f32int", "int32->float vs CPU", i.size, 0)


def test_add_mul(record_property):
    rng = np.random.default_rng(2)
    a, b = edge_pairs(rng, 600_000)
    A, B = F.decompose(a), F.decompose(b)
    assert_equal(F.compose(*F.add(A, B)), a + b, "add")
    assert_equal(F.compose(*F.mul(A, B)), a * b, "mul")
    count(record_property, "f32int", "add and mul vs CPU", 2 * a.size, 0)


def test_fma_against_exact(record_property):
    rng = np.random.default_rng(3)
    n = 300_000
    a, b, c = rand_f32(rng, n, -20, 20), rand_f32(rng, n, -20, 20), rand_f32(rng, n, -30, 30)
    c[: n // 3] = -(a[: n // 3] * b[: n // 3])  # cancellation against the rounded product
    got = F.compose(*F.fma(F.decompose(a), F.decompose(b), F.decompose(c)))
    assert_equal(got, F.np_fma32(a, b, c), "fma: f32int vs numpy round-to-odd")
    # and both against exact rationals on a sample
    for i in rng.integers(0, n, 300):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        assert got[i] == _round_f32(exact)
    count(record_property, "f32int", "fma vs exact", n, 0)


def _round_f32(x: Fraction):
    f = f32(float(x))  # may be off by one ulp (double rounding); pick the nearest, ties even
    cands = [np.nextafter(f, f32(-np.inf)), f, np.nextafter(f, f32(np.inf))]
    return min(cands, key=lambda v: (abs(Fraction(float(v)) - x),
                                     int(np.array(v).view(np.int32)) & 1))


def test_rne_int(record_property):
    rng = np.random.default_rng(4)
    y = np.concatenate([rand_f32(rng, 300_000, -30, 31), (np.arange(-4000, 4000) + 0.5)
                        .astype(f32), np.float32([0.5, -0.5, 1.5, -2.5, 2.0**30, -(2.0**31)])])
    assert_equal(F.rne_int(F.decompose(y)), np.rint(y.astype(np.float64)).astype(np.int64),
                 "rne to int")
    count(record_property, "f32int", "round to int (ties even) vs CPU", y.size, 0)


@HYP
@given(st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False),
       st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False))
def test_add_mul_hypothesis(x, y):
    a, b = f32(x), f32(y)
    with np.errstate(all="ignore"):
        s, p = a + b, a * b
        if np.isfinite(s) and (s == 0 or abs(s) >= np.finfo(f32).tiny):
            assert F.compose(*F.add(F.decompose(a), F.decompose(b))) == s
        if np.isfinite(p) and (p == 0 or abs(p) >= np.finfo(f32).tiny):
            assert F.compose(*F.mul(F.decompose(a), F.decompose(b))) == p


def test_bits_roundtrip():
    rng = np.random.default_rng(5)
    x = rand_f32(rng, 10_000)
    m, e = F.decompose(x)
    assert np.array_equal(F.to_bits(m, e), x.view(np.uint32))
    m2, e2 = F.from_bits(x.view(np.uint32))
    assert np.array_equal(m, m2) and np.array_equal(e, e2)


@pytest.mark.parametrize("bad", [np.inf, np.nan, 1e-40])
def test_decompose_rejects(bad):
    with pytest.raises(RangeError):
        F.decompose(f32(bad))
