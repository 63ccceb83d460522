"""Helpers shared by the numerics tests: hypothesis settings, scale strategies, counting."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

f32 = np.float32

#: Modest example counts: the volume comes from big vectorized batches, not from examples.
HYP = settings(max_examples=25, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])


def count(record_property, scheme, what, n, bad):
    """Record ``n`` outputs compared with ``bad`` mismatches for the terminal summary."""
    record_property("numerics_count", (scheme, what, int(n), int(bad)))


def assert_equal(got, want, what=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = got != want
    if bad.any():
        idx = np.argwhere(bad)[:5]
        detail = ", ".join(f"{tuple(i)}: {got[tuple(i)]} vs {want[tuple(i)]}" for i in idx)
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} differ ({detail})")


def scale_strategy(lo=1e-3, hi=0.2):
    """A float32 scale in [lo, hi]: random, or dyadic (odd * 2^-k) / a power of two for ties."""
    import math

    def dyadic(t):
        m, u = 2 * t[0] - 1, t[1]
        e_lo, e_hi = math.ceil(math.log2(m / hi)), math.floor(math.log2(m / lo))
        if e_lo > e_hi:
            return float(f32(lo))
        return float(f32(m * 2.0 ** -(e_lo + int(u * (e_hi - e_lo + 1)) % (e_hi - e_lo + 1))))

    rnd = st.floats(lo, hi).map(lambda v: float(f32(v)))
    dy = st.tuples(st.integers(1, 8), st.floats(0, 1)).map(dyadic)
    return st.one_of(rnd, dy, st.tuples(st.just(1), st.floats(0, 1)).map(dyadic))


def rng_from(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def random_scales(rng, n, dyadic=False, lo=1e-3, hi=0.05):
    if dyadic:
        return ((2 * rng.integers(1, 8, n) - 1) * 2.0 ** -rng.integers(4, 12, n)).astype(f32)
    return rng.uniform(lo, hi, n).astype(f32)


def draw_scales(data, n, lo=1e-3, hi=0.2):
    """``n`` scales; half of the examples use powers of two only, so results hit exact ties."""
    if data.draw(st.booleans(), label="pow2 scales (ties)"):
        import math

        k_lo, k_hi = math.ceil(-math.log2(hi)), math.floor(-math.log2(lo))
        return [2.0 ** -data.draw(st.integers(k_lo, k_hi)) for _ in range(n)]
    return [data.draw(scale_strategy(lo, hi)) for _ in range(n)]
