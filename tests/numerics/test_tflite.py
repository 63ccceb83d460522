"""TFLite / gemmlowp requantization (``tflite``, ``tflite-single-rounding``) and TFLite ops.

TFLite itself is not installable here. The reference is a literal scalar transcription of the
C++ reference kernels (``quantization_util.cc``, ``common.h``, gemmlowp ``fixedpoint.h``,
``reference_ops``) in Python integers with explicit int32 semantics, plus hand-worked vectors
(negative ties, saturation, shifts at their limits) whose expected values are derived in the
comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numerics_helpers import assert_equal, count

from zynqnn.numerics import gemmlowp, make_requant, ops, quant

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------- scalar reference


def c_div(a, b):
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def i32(x):
    """Two's complement wrap to int32."""
    return (x + 2**31) % 2**32 - 2**31


def ref_quantize_multiplier(m):
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # TfLiteRound, q > 0
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return q_fixed, shift


def ref_srdhm(a, b):
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbp(x, e):
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def ref_mbqm(x, q, shift):
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    return ref_rdbp(ref_srdhm(i32(x * (1 << left)), q), right)


def ref_mbqm_single(x, q, shift):
    total = 31 - shift
    return (x * q + (1 << (total - 1))) >> total


def ref_conv_output(acc, bias, q, shift, zp, lo, hi, single):
    x = i32(acc + bias)
    y = ref_mbqm_single(x, q, shift) if single else ref_mbqm(x, q, shift)
    return min(max(y + zp, lo), hi)


# ---------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("scheme", ["tflite", "tflite-single-rounding"])
def test_requant_vs_reference(scheme, record_property):
    """>= 100,000 requantizations against the scalar transcription, all shift ranges."""
    rng = np.random.default_rng(31 if scheme == "tflite" else 32)
    single = scheme == "tflite-single-rounding"
    total = 0
    for _ in range(10):
        k = 16
        s_in = float(np.float32(rng.uniform(1e-3, 0.1)))
        s_out = float(np.float32(10 ** rng.uniform(-3, 1)))
        s_w = (10 ** rng.uniform(-6, 0, k)).astype(np.float32)
        s_w[:2] = 2.0 ** -rng.integers(1, 30, 2)  # exact powers of two: exact ties
        bias = rng.integers(-(2**20), 2**20, k)
        zp = int(rng.integers(-128, 128))
        rq = make_requant(scheme, s_in, s_w, s_out, zp, bias)
        acc = rng.integers(-(2**24), 2**24, (640, k))
        acc[:64] = rng.integers(-(2**31) + 2**21, 2**31 - 2**21, (64, k))
        mine = rq.apply(acc)
        assert_equal(rq.apply_hw(acc), mine, f"{scheme} hw form")
        m = gemmlowp_ref_multipliers(s_in, s_w, s_out)
        for c in range(k):
            q, sh = m[c]
            assert (q, sh) == (int(rq.multiplier[c]), int(rq.shift[c]))
            want = [ref_conv_output(int(a), int(bias[c]), q, sh, zp, -128, 127, single)
                    for a in acc[:, c]]
            assert_equal(mine[:, c], np.array(want), f"{scheme} channel {c}")
        total += acc.size
    assert total >= 100_000
    count(record_property, scheme, "requant vs C++ reference transcription", total, 0)


def gemmlowp_ref_multipliers(s_in, s_w, s_out):
    return [ref_quantize_multiplier(float(np.float64(np.float32(s_in)) * np.float64(w)
                                          / np.float64(np.float32(s_out)))) for w in s_w]


def test_primitives_vs_reference(record_property):
    rng = np.random.default_rng(3)
    a = rng.integers(I32_MIN, I32_MAX, 20000, endpoint=True)
    b = rng.integers(0, I32_MAX, 20000, endpoint=True)
    a[:4] = [I32_MIN, I32_MIN, I32_MAX, 0]
    b[:4] = [I32_MAX, 2**30, I32_MAX, 5]
    assert_equal(gemmlowp.srdhm(a, b), [ref_srdhm(int(x), int(y)) for x, y in zip(a, b,
                                                                                     strict=True)],
                 "SRDHM")
    e = rng.integers(0, 32, 20000)
    assert_equal(gemmlowp.rounding_divide_by_pot(a, e),
                 [ref_rdbp(int(x), int(y)) for x, y in zip(a, e, strict=True)], "RDBP")
    ms = np.concatenate([10 ** rng.uniform(-12, 9, 5000), [0.5, 1.0, 2.0**-31, 2.0**-32]])
    for m in ms:
        assert gemmlowp.quantize_multiplier(m) == ref_quantize_multiplier(float(m))
    count(record_property, "tflite", "gemmlowp primitives vs reference", 45004, 0)


# ---------------------------------------------------------------------------- hand-worked


HAND_SRDHM = [
    # (a, b, expected): a*b/2^31 rounded to nearest, ties toward +inf (nudge 2^30 / 1-2^30)
    (3, 2**30, 2),          # 1.5 -> 2
    (-3, 2**30, -1),        # -1.5 -> -1 (negative tie rounds up)
    (-5, 2**30, -2),        # -2.5 -> -2
    (1, 2**30, 1),          # 0.5 -> 1
    (-1, 2**30, 0),         # -0.5 -> 0
    (I32_MIN, I32_MIN, I32_MAX),  # the only overflow: saturates
    (I32_MIN, I32_MAX, -(2**31) + 1),  # -2^31 * (2^31-1) / 2^31 = -(2^31-1) exactly
    (I32_MAX, I32_MAX, 2**31 - 2),  # (2^31-1)^2/2^31 = 2^31 - 2 + 2^-31 -> 2^31 - 2
]

HAND_RDBP = [
    # (x, exponent, expected): x / 2^e rounded to nearest, ties away from zero
    (3, 1, 2), (-3, 1, -2), (5, 1, 3), (-5, 1, -3),   # +-1.5, +-2.5 -> away
    (-5, 2, -1), (-6, 2, -2), (6, 2, 2), (-7, 2, -2),  # -1.25, -1.5, 1.5, -1.75
    (123, 0, 123), (-123, 0, -123),                    # exponent 0: identity
    (I32_MIN, 31, -1), (-(2**30), 31, -1), (2**30, 31, 1), (2**30 - 1, 31, 0),  # limit 31
    (I32_MAX, 31, 1), (-1, 31, 0),
]

HAND_QM = [
    # (real multiplier, (Q31, shift))
    (0.5, (2**30, 0)),
    (1.0, (2**30, 1)),                 # frexp(1) = 0.5 * 2^1
    (0.75, (1610612736, 0)),           # 0.75 * 2^31
    (2.0**-31, (2**30, -30)),          # 0.5 * 2^-30
    (2.0**-40, (0, 0)),                # shift -39 < -31: flushed to zero
    (1 - 2.0**-40, (2**30, 1)),        # rounds to 2^31 -> halved, shift + 1
    (0.0, (0, 0)),
]


@pytest.mark.parametrize("a,b,want", HAND_SRDHM)
def test_hand_srdhm(a, b, want):
    assert int(gemmlowp.srdhm(a, b)) == want == ref_srdhm(a, b)


@pytest.mark.parametrize("x,e,want", HAND_RDBP)
def test_hand_rdbp(x, e, want):
    assert int(gemmlowp.rounding_divide_by_pot(x, e)) == want == ref_rdbp(x, e)


@pytest.mark.parametrize("m,want", HAND_QM)
def test_hand_quantize_multiplier(m, want):
    assert gemmlowp.quantize_multiplier(m) == want


def test_hand_double_vs_single_rounding():
    """M = 0.25 as (2^30, -1): x = 5 -> 1.25. Double rounding: SRDHM(5, 2^30) = 2.5 -> 3, then
    RDBP(3, 1) = 1.5 -> 2. Single rounding: (5*2^30 + 2^31) >> 32 = 1. x = -5: double
    SRDHM = -2.5 -> -2, RDBP(-2, 1) = -1; single: floor(-1.25 + 0.5) = -1."""
    d = make_requant("tflite", None, None, None, multiplier=2**30, shift=-1)
    s = make_requant("tflite-single-rounding", None, None, None, multiplier=2**30, shift=-1)
    acc = np.array([[5], [-5], [6], [-6]])
    assert d.apply(acc).ravel().tolist() == [2, -1, 2, -2]  # 1.5 -> 2, -1.5 -> -2 (away)
    assert s.apply(acc).ravel().tolist() == [1, -1, 2, -1]  # 1.5 -> 2, -1.5 -> -1 (up)
    for r in (d, s):
        assert_equal(r.apply_hw(acc), r.apply(acc), "hand hw form")


def test_hand_saturation_and_clamp():
    """Output clamps to act_min/act_max; int32 wrap of acc + bias like the C++ int32 add."""
    r = make_requant("tflite", None, None, None, zp_out=10, multiplier=2**30, shift=0,
                     bias=[2**31 - 1])
    acc = np.array([[1], [0], [-(2**31) + 5]])
    # 1 + (2^31-1) wraps to -2^31 -> *0.5 = -2^30 -> clamp -128; 0 + bias -> 2^30 -> 127;
    # -2^31 + 5 + 2^31 - 1 = 4 -> 2 + 10 = 12
    assert r.apply(acc).ravel().tolist() == [-128, 127, 12]
    assert r.apply_hw(acc).ravel().tolist() == [-128, 127, 12]


def test_hand_shift_limits():
    """shift = 30 (largest left shift) and -31 (largest right shift)."""
    big = make_requant("tflite", None, None, None, multiplier=2**30, shift=30, qmin=-(2**31),
                       qmax=2**31 - 1)
    # x << 30 wraps in int32 like the C++ (x * (1 << 30)); x = 1: 2^30 * 0.5 = 2^29
    assert big.apply(np.array([[1]])).item() == 2**29
    assert big.apply(np.array([[2]])).item() == -(2**30)  # 2 << 30 = 2^31 wraps to -2^31
    small = make_requant("tflite", None, None, None, multiplier=2**30, shift=-31, qmin=-(2**31),
                         qmax=2**31 - 1)
    # x * 0.5 * 2^-31: x = 2^31-1 -> 0.49999.. -> SRDHM 2^30 -> RDBP(2^30, 31) = 0.5 -> 1
    assert small.apply(np.array([[I32_MAX]])).item() == 1
    assert small.apply(np.array([[I32_MIN]])).item() == -1


# ---------------------------------------------------------------------------- TFLite ops


def ref_add(a, sa, za, b, sb, zb, so, zo, lo=-128, hi=127, left_shift=20):
    twice_max = 2 * float(max(np.float32(sa), np.float32(sb)))
    m1 = ref_quantize_multiplier(float(np.float32(sa)) / twice_max)
    m2 = ref_quantize_multiplier(float(np.float32(sb)) / twice_max)
    mo = ref_quantize_multiplier(twice_max / float(np.float32(np.float32(2**left_shift)
                                                              * np.float32(so))))
    x1 = ref_mbqm(i32((a - za) * (1 << left_shift)), *m1)
    x2 = ref_mbqm(i32((b - zb) * (1 << left_shift)), *m2)
    return min(max(ref_mbqm(i32(x1 + x2), *mo) + zo, lo), hi)


def test_add_vs_reference(record_property):
    rng = np.random.default_rng(12)
    total = 0
    for _ in range(20):
        sa, sb, so = (float(np.float32(v)) for v in rng.uniform(0.005, 0.1, 3))
        za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
        a, b = rng.integers(-128, 128, 1000), rng.integers(-128, 128, 1000)
        mine = ops.add_tflite(a, sa, za, b, sb, zb, so, zo)
        want = [ref_add(int(x), sa, za, int(y), sb, zb, so, zo) for x, y in zip(a, b,
                                                                               strict=True)]
        assert_equal(mine, want, "tflite ADD")
        total += a.size
    count(record_property, "tflite", "ADD vs reference transcription", total, 0)


def test_add_hand():
    """s_a = s_b = s_out = 1: input multipliers 0.5 = (2^30, 0), output 2/2^20 = (2^30, -18);
    3 + 4: SRDHM(3<<20, 2^30) = 1572864, 4 -> 2097152, sum 3670016 -> SRDHM 1835008 ->
    RDBP(., 18) = 7."""
    assert ops.add_tflite(np.array([3]), 1.0, 0, np.array([4]), 1.0, 0, 1.0, 0).item() == 7


def test_avg_pool_hand():
    x = np.array([1, 2, -1, -2, 1, 2, 3, 3]).reshape(1, 1, 1, 8)
    # windows of 2: (1+2)=3 -> (3+1)/2 = 2; (-3-1)/2 = -2 (away); (1+2+3+3) in a 4-window below
    assert ops.avg_pool2d_tflite(x[..., :4], (1, 2)).ravel().tolist() == [2, -2]
    assert ops.avg_pool2d_tflite(x[..., 4:], (1, 4)).ravel().tolist() == [2]  # 9/4=2.25 -> 2
    # padding counts only valid positions: [5] padded left with one pad -> 5/1
    assert ops.avg_pool2d_tflite(np.array([[[[5, 6]]]]), (1, 2), 1, (0, 0, 1, 0)).ravel().tolist() \
        == [5, 6]  # (5)/1, (5+6+1)/2 = 6 (5.5 -> 6)


def test_quantize_ties_away():
    s = 0.25
    x = np.array([2.5, -2.5, 0.5, -0.5, 1.5, -1.5], dtype=np.float32) * s
    assert quant.quantize_tflite(x, s, 0).tolist() == [3, -3, 1, -1, 2, -2]
    assert quant.quantize_onnxruntime(x, s, 128).tolist() == [130, 126, 128, 128, 130, 126]


def test_concat_tflite_hand():
    """s_in = 0.5, s_out = 0.25: scale = 2, bias = -2*zp; q = 3, zp = 1 -> 3*2 - 2 = 4 (+0)."""
    out = ops.concat_tflite([np.array([[3, -3]]), np.array([[7]])], [0.5, 0.25], [1, 0], 0.25, 0)
    assert out.tolist() == [[4, -8, 7]]
