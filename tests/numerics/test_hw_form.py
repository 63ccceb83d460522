"""numpy form == hardware (integer-only) form, >= 1,000,000 random requantizations per scheme.

Random layers: per-channel scales (random and dyadic, so rounding ties occur), random biases, and
accumulators drawn over the whole int32 range (|acc| >= 2^24 exercises the int->float rounding)
plus small values near the clamp range.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from numerics_helpers import assert_equal, count

from zynqnn.numerics import f32int as F
from zynqnn.numerics import make_requant, ops

f32 = np.float32
N_PER_SCHEME = 1_048_576


def _acc(rng, rows, k):
    mag = rng.integers(0, 31, (rows, k))  # log-uniform magnitudes up to 2^31
    acc = rng.integers(-(2**31), 2**31, (rows, k)) >> (31 - mag)
    acc[: rows // 8] = rng.integers(-5000, 5000, (rows // 8, k))
    return acc


def _layer(rng, scheme, k, dyadic):
    if scheme in ("pow2", "fixed16"):
        fp_in, fp_out = int(rng.integers(2, 10)), int(rng.integers(0, 10))
        fp_w = rng.integers(2, 10, k)
        opts = {"rounding": str(rng.choice(["half_up", "half_even", "floor", "half_away"]))}
        if rng.random() < 0.5:
            opts["leaky"] = (26, 8) if rng.random() < 0.5 else (1, 3)
        if scheme == "fixed16":
            opts["overflow"] = str(rng.choice(["saturate", "wrap"]))
        return make_requant(scheme, 2.0**-fp_in, 2.0**-fp_w, 2.0**-fp_out, relu=rng.random() < 0.3,
                            bias=rng.integers(-1000, 1000, k), s_bias=2.0**-(fp_in + 2), **opts)
    s_in = f32(2.0 ** -rng.integers(4, 9)) if dyadic else f32(rng.uniform(1e-3, 0.05))
    s_out = f32(2.0 ** -rng.integers(1, 6)) if dyadic else f32(10 ** rng.uniform(-3, 0))
    s_w = ((2 * rng.integers(1, 8, k) - 1) * 2.0 ** -rng.integers(6, 12, k)).astype(f32) if dyadic \
        else (10 ** rng.uniform(-4, -1, k)).astype(f32)
    relu = rng.random() < 0.3
    zp = int(rng.integers(0, 256))
    if scheme.startswith("torch"):
        per_channel = rng.random() < 0.6
        a = (s_in * s_w).astype(f32)
        bias = rng.normal(0, 3, k).astype(f32) if not dyadic else (
            rng.integers(-5000, 5000, k) * a / 2).astype(f32)
        return make_requant(scheme, s_in, s_w if per_channel else s_w[0], s_out, zp, bias,
                            relu=relu)
    if scheme == "onnxruntime":
        return make_requant(scheme, s_in, s_w, s_out, zp, rng.integers(-(2**20), 2**20, k),
                            relu=relu)
    return make_requant(scheme, s_in, s_w, s_out, zp - 128, rng.integers(-(2**20), 2**20, k),
                        relu=relu)


@pytest.mark.parametrize("scheme", ["torch-fbgemm", "torch-qnnpack", "onnxruntime", "tflite",
                                    "tflite-single-rounding", "pow2", "fixed16"])
def test_numpy_equals_hw(scheme, record_property):
    rng = np.random.default_rng(zlib.crc32(scheme.encode()))
    total = 0
    k = 64
    rows = 2048
    while total < N_PER_SCHEME:
        rq = _layer(rng, scheme, k, dyadic=(total // (rows * k)) % 2 == 1)
        acc = _acc(rng, rows, k)
        if scheme in ("pow2", "fixed16"):
            acc >>= 8  # keep |acc << bias_shift| and leaky products far from int64 limits
        assert_equal(rq.apply_hw(acc), rq.apply(acc), f"{scheme} numpy vs hw")
        total += acc.size
    count(record_property, scheme, "numpy form vs hardware form", total, 0)


@pytest.mark.parametrize("path", ["vector", "scalar"])
@pytest.mark.parametrize("relu", [False, True])
def test_add_torch_numpy_equals_hw(path, relu, record_property):
    rng = np.random.default_rng(7 + relu)
    total = 0
    for i in range(16):
        if i % 2:
            sa, sb, so = (f32(2.0 ** -rng.integers(2, 8)) for _ in range(3))
        else:
            sa, sb, so = (f32(v) for v in rng.uniform(0.002, 0.2, 3))
        zpa, zpb, zpo = (int(v) for v in rng.integers(0, 256, 3))
        a, b = rng.integers(0, 256, 65536), rng.integers(0, 256, 65536)
        args = (a, sa, zpa, b, sb, zpb, so, zpo)
        assert_equal(ops.add_torch(*args, relu=relu, path=path, hw=True),
                     ops.add_torch(*args, relu=relu, path=path), "torch add numpy vs hw")
        total += a.size
    count(record_property, "torch-fbgemm", f"add numpy vs hw ({path}{', relu' if relu else ''})",
          total, 0)


def test_add_onnxruntime_numpy_equals_hw(record_property):
    rng = np.random.default_rng(9)
    total = 0
    for i in range(16):
        if i % 2:
            sa, sb, so = (f32(2.0 ** -rng.integers(2, 8)) for _ in range(3))
        else:
            sa, sb, so = (f32(v) for v in rng.uniform(0.002, 0.2, 3))
        zpa, zpb, zpo = (int(v) for v in rng.integers(0, 256, 3))
        a, b = rng.integers(0, 256, 65536), rng.integers(0, 256, 65536)
        args = (a, sa, zpa, b, sb, zpb, so, zpo)
        assert_equal(ops.add_onnxruntime(*args, hw=True), ops.add_onnxruntime(*args),
                     "QLinearAdd numpy vs hw")
        total += a.size
    count(record_property, "onnxruntime", "QLinearAdd numpy vs hw", total, 0)


def test_constants_are_plain_integers():
    for scheme in ("torch-fbgemm", "torch-qnnpack", "onnxruntime", "tflite", "pow2", "fixed16"):
        if scheme in ("pow2", "fixed16"):
            rq = make_requant(scheme, 2**-6, [2**-7, 2**-8], 2**-4, bias=[1, 2])
        elif scheme.startswith("torch"):
            rq = make_requant(scheme, 0.02, [0.001, 0.002], 0.1, 3, bias=[0.5, -0.25])
        else:
            rq = make_requant(scheme, 0.02, [0.001, 0.002], 0.1, 3, bias=[5, -7])
        for name, v in rq.constants().items():
            if isinstance(v, str):
                continue
            arr = np.asarray(v)
            assert arr.dtype.kind in "iub", (scheme, name, arr.dtype)
    # the float32 constants round-trip through their (significand, exponent) form
    rq = make_requant("torch-fbgemm", 0.02, [0.001, 0.002], 0.1, 3, bias=[0.5, -0.25])
    c = rq.constants()
    assert np.array_equal(F.compose(c["M_sig"], c["M_exp"]), rq.M)
    assert np.array_equal(c["M_bits"].view(f32), rq.M)
    assert np.all((np.abs(c["M_sig"]) >> 23) == 1)  # 24-bit significands
