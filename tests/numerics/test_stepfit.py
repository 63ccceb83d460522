"""The affine-plus-exceptions form of a requantization (numerics.stepfit), the step lanes'
arithmetic: exhaustive over every accumulator a depthwise channel can reach, and against
PyTorch's own fbgemm depthwise kernel."""

from __future__ import annotations

import numpy as np
import pytest
from numerics_helpers import assert_equal
from test_fbgemm_depthwise import torch_qconv

from zynqnn.hw.config import get_config
from zynqnn.hw.step import step_params
from zynqnn.numerics import RangeError, make_requant, ops
from zynqnn.numerics.stepfit import dw_acc_range, fit_steps

CFG = get_config("pynq_z2")
FLOAT_SCHEMES = ("torch-fbgemm", "torch-qnnpack", "onnxruntime")


def _layer(rng, scheme, channels, relu6=False, m_range=(0.003, 0.3)):
    w = rng.integers(-127, 128, size=(channels, 1, 3, 3))
    s_in = float(rng.uniform(0.01, 0.05))
    s_w = rng.uniform(0.002, 0.02, channels)
    s_out = s_in * float(np.mean(s_w)) / float(rng.uniform(*m_range))
    zp_out = int(rng.integers(0, 64))
    bias = (rng.integers(-20000, 20000, channels) if scheme == "onnxruntime"
            else rng.normal(0, 0.5, channels))
    qmax = min(255, zp_out + round(6 / s_out)) if relu6 else 255
    rq = make_requant(scheme, s_in, s_w, s_out, zp_out=zp_out, bias=bias, qmax=qmax,
                      relu=relu6, per_channel=True)
    return rq, w, (s_in, s_w, s_out, zp_out, bias)


@pytest.mark.parametrize("relu6", [False, True])
@pytest.mark.parametrize("scheme", FLOAT_SCHEMES)
def test_exhaustive(scheme, relu6):
    """Every accumulator of every channel's range: the fit equals the scheme bit for bit."""
    rng = np.random.default_rng(11 + 2 * relu6 + 7 * FLOAT_SCHEMES.index(scheme))
    rq, w, _ = _layer(rng, scheme, 6, relu6)
    lo, hi = dw_acc_range(w, 0, 255, int(rng.integers(0, 256)))
    fit = fit_steps(rq, lo, hi, CFG.step_frac_bits)
    # Column c walks channel c's whole range (shorter ranges repeat their last value).
    n = int((hi - lo).max()) + 1
    acc = np.minimum(lo[None, :] + np.arange(n)[:, None], hi[None, :])
    assert_equal(fit.apply(acc), rq.apply(acc), f"{scheme}, {n} accumulators per channel")
    step_params(fit, CFG)   # fits the lane


def test_exceptions_are_needed_and_exact():
    """Channels whose steps no single offset matches: their exceptions make them exact, and
    without the exceptions they would be wrong (so the correction is not dead weight)."""
    rng = np.random.default_rng(3)
    rq, w, (s_in, s_w, s_out, zp_out, bias) = _layer(rng, "onnxruntime", 600)
    lo, hi = dw_acc_range(w, 0, 255, 128)
    fit = fit_steps(rq, lo, hi, CFG.step_frac_bits)
    idx = np.array([c for c in range(rq.channels) if fit.exceptions[c]][:4])
    assert idx.size
    # The same channels alone (constants are per channel), checked over their whole ranges.
    rq = make_requant("onnxruntime", s_in, s_w[idx], s_out, zp_out=zp_out, bias=bias[idx],
                      per_channel=True)
    lo, hi = lo[idx], hi[idx]
    fit = fit_steps(rq, lo, hi, CFG.step_frac_bits)
    n = int((hi - lo).max()) + 1
    acc = np.minimum(lo[None, :] + np.arange(n)[:, None], hi[None, :])
    want = rq.apply(acc)
    assert_equal(fit.apply(acc), want, "exception channels")
    for c in range(idx.size):
        saved, fit.exceptions[c] = fit.exceptions[c], []
        assert saved and np.count_nonzero(fit.apply(acc)[:, c] != want[:, c]) >= len(saved)
        fit.exceptions[c] = saved


@pytest.mark.parametrize("relu", [False, True])
def test_torch_fbgemm_depthwise(relu):
    """PyTorch's quantized depthwise conv (fbgemm engine, saturating tap pairs, full-range
    activations) equals the step form of its accumulators."""
    rng = np.random.default_rng(21 + relu)
    c, zp_x, zp_out = 32, 97, 40
    qx = rng.integers(0, 256, size=(1, c, 12, 12))
    qw = rng.integers(-127, 128, size=(c, 1, 3, 3))
    s_x, s_out = 0.02, 0.15
    s_w = rng.uniform(0.003, 0.02, c)
    bias = rng.normal(0, 0.3, c).astype(np.float32)
    got = torch_qconv(qx, s_x, zp_x, qw, s_w, per_channel=True, bias=bias, s_out=s_out,
                      zp_out=zp_out, padding=1, groups=c, relu=relu)
    rq = make_requant("torch-fbgemm", s_x, s_w, s_out, zp_out, bias, relu=relu,
                      per_channel=True)
    acc = ops.conv2d_acc(qx, qw, zp_x, 0, 1, 1, 1, c, saturate_pairs=True)
    lo, hi = dw_acc_range(qw, 0, 255, zp_x)
    assert acc.min() >= lo.min() and acc.max() <= hi.max()
    fit = fit_steps(rq, lo, hi, CFG.step_frac_bits)
    assert_equal(fit.apply(acc), got, "fbgemm depthwise, step form")


def test_dw_acc_range_is_tight():
    """The bounds are reached by the extreme input of each channel, and hold for any input."""
    rng = np.random.default_rng(5)
    qw = rng.integers(-128, 128, size=(8, 1, 3, 3))
    zp = 77
    lo, hi = dw_acc_range(qw, 0, 255, zp)
    for c in range(8):
        wc = qw[c, 0].reshape(-1)
        assert hi[c] == int(np.sum(np.where(wc > 0, 255 - zp, -zp) * wc))
        assert lo[c] == int(np.sum(np.where(wc > 0, -zp, 255 - zp) * wc))
    acc = ops.conv2d_acc(rng.integers(0, 256, size=(2, 8, 9, 9)), qw, zp, 0, 1, 1, 1, 8)
    assert np.all((acc >= lo.reshape(1, 8, 1, 1)) & (acc <= hi.reshape(1, 8, 1, 1)))


def test_errors_name_the_problem():
    with pytest.raises(RangeError, match="no step fit"):
        fit_steps(make_requant("pow2", 2**-4, 2**-6, 2**-3, per_channel=False), -100, 100)
    with pytest.raises(RangeError, match="empty accumulator range"):
        fit_steps(make_requant("torch-qnnpack", 0.02, 0.01, 0.1), 5, 4)
    # A dyadic multiplier (2^-9) puts exact ties on every step; round-half-to-even moves every
    # other one, which no affine function follows: about half the steps are exceptions.
    rq = make_requant("torch-qnnpack", 1 / 16, 1 / 32, 1.0, zp_out=128)
    fit = fit_steps(rq, -(2**17), 2**17, CFG.step_frac_bits)
    assert fit.max_exceptions > 100
    with pytest.raises(ValueError, match=r"dw3: channel 0: \d+ exceptions, the lane holds 2"):
        step_params(fit, CFG, "dw3")
    # A multiplier of 4 or more does not fit the two 17-bit pieces.
    big = make_requant("torch-qnnpack", 1.0, 1.0, 0.2)
    fit = fit_steps(big, -1000, 1000, CFG.step_frac_bits)
    with pytest.raises(ValueError, match="channel 0: mult .* more than 34 bits"):
        step_params(fit, CFG)
