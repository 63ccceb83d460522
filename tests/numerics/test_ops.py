"""Golden ops: exact accumulation and geometry against torch (float64, exact here) and naive
loops."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from numerics_helpers import HYP, assert_equal, count, rng_from

from zynqnn.numerics import make_requant, ops


def torch_acc(xv, wv, stride, pads, dilation, groups):
    """(x - zp) and (w - zp_w) as float64 tensors: sums are exact below 2^53."""
    t, b, l, r = pads
    x = torch.nn.functional.pad(torch.from_numpy(xv.astype(np.float64)), (l, r, t, b))
    y = torch.nn.functional.conv2d(x, torch.from_numpy(wv.astype(np.float64)), stride=stride,
                                   dilation=dilation, groups=groups)
    return y.numpy().astype(np.int64)


@HYP
@given(data=st.data())
def test_conv2d_acc_geometry(data, record_property):
    rng = rng_from(data)
    groups = data.draw(st.sampled_from([1, 2, 3]), label="groups")
    depthwise = data.draw(st.booleans(), label="depthwise")
    cg = 1 if depthwise else data.draw(st.integers(1, 5))
    c = groups * cg if not depthwise else data.draw(st.integers(1, 6))
    groups = c if depthwise else groups
    k = groups * data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dil = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    pads = tuple(data.draw(st.integers(0, 3)) for _ in range(4))
    h = data.draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[1]), 12))
    w = data.draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - pads[2] - pads[3]), 12))
    zp_x = int(rng.integers(0, 256))
    zp_w = rng.integers(-5, 6, k) if data.draw(st.booleans()) else int(rng.integers(-5, 6))
    x = rng.integers(0, 256, (2, c, h, w))
    wt = rng.integers(-128, 128, (k, c // groups, kh, kw))
    got = ops.conv2d_acc(x, wt, zp_x, zp_w, stride, pads, dil, groups)
    zw = np.asarray(zp_w).reshape(-1, 1, 1, 1) if np.ndim(zp_w) else zp_w
    want = torch_acc(x - zp_x, wt - zw, stride, pads, dil, groups)
    assert_equal(got, want, "conv2d accumulators")
    count(record_property, "golden ops", "conv2d_acc vs torch float64", got.size, 0)


def naive_conv(x, w, zp_x, stride, pad, groups):
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=zp_x)
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, k, ho, wo), dtype=object)
    kg = k // groups
    for b in range(n):
        for o in range(k):
            g = o // kg
            for i in range(ho):
                for j in range(wo):
                    s = 0
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                s += (int(xp[b, g * cg + ci, i * stride + u, j * stride + v])
                                      - zp_x) * int(w[o, ci, u, v])
                    out[b, o, i, j] = s
    return out


def test_conv2d_acc_int64_path():
    """Operands too large for an exact float64 GEMM take the int64 path (16/32-bit codes)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**28), 2**28, (1, 4, 5, 5))
    w = rng.integers(-(2**24), 2**24, (4, 2, 3, 3))
    got = ops.conv2d_acc(x, w, 7, 0, 2, 1, 1, 2)
    assert_equal(got, naive_conv(x, w, 7, 2, 1, 2).astype(np.int64), "int64 conv")
    xs = rng.integers(-(2**28), 2**28, (3, 9))
    ws = rng.integers(-(2**24), 2**24, (2, 9))
    assert_equal(ops.linear_acc(xs, ws, 3), (xs - 3) @ ws.T, "int64 linear")


def test_conv2d_end_to_end_hw_flag():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (1, 3, 9, 9))
    w = rng.integers(-128, 128, (8, 3, 3, 3))
    rq = make_requant("torch-qnnpack", 0.02, np.full(8, 0.003), 0.05, 120, np.ones(8))
    a = ops.conv2d(x, w, rq, 17, 0, 2, 1)
    assert_equal(ops.conv2d(x, w, rq, 17, 0, 2, 1, hw=True), a, "conv2d hw flag")
    xl = rng.integers(0, 256, (5, 16))
    wl = rng.integers(-128, 128, (8, 16))
    assert_equal(ops.linear(xl, wl, rq, 3, hw=True), ops.linear(xl, wl, rq, 3), "linear hw")


def test_max_pool_pad_value_and_ceil():
    x = np.arange(16).reshape(1, 1, 4, 4)
    # ZeroPad2d((0,1,0,1)) with zp=20 + 2x2/1: the padded column/row are 20
    out = ops.max_pool2d(x, 2, 1, padding=(0, 1, 0, 1), pad_value=20)
    assert out.shape == (1, 1, 4, 4) and out[0, 0, 3, 3] == 20 and out[0, 0, 0, 0] == 5
    # ignore-padding semantics: the same windows without the pad value
    out2 = ops.max_pool2d(x, 2, 1, padding=(0, 1, 0, 1))
    assert out2[0, 0, 3, 3] == 15 and out2[0, 0, 3, 0] == 13


def test_upsample_and_concat():
    x = np.arange(6).reshape(1, 1, 2, 3)
    up = ops.upsample_nearest(x, 2)
    assert up.shape == (1, 1, 4, 6) and up[0, 0, 3, 5] == 5 and up[0, 0, 1, 1] == 0
    assert ops.concat([x, x + 10]).shape == (1, 2, 2, 3)


def test_conv2d_acc_exactness_bounds():
    """Long reductions: float32 when the data bound allows it, float64 for a worst-case window."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 40, (1, 600, 6, 6))
    w = rng.integers(-128, 128, (8, 600, 3, 3))
    got = ops.conv2d_acc(x, w, 0, 0, 1, 1)  # 5400 terms: data bound < 2^24, float32 GEMM
    assert_equal(got, torch_acc(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1), "float32 conv")
    x[0, :, 2:4, 2:4] = 255  # a worst-case window: every product 255 * -128
    w[0] = -128
    got = ops.conv2d_acc(x, w, 0, 0, 1, 1)
    assert_equal(got, torch_acc(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1), "float64 conv")
    assert got.min() < -(2**24)  # the sum itself is beyond float32's exact range
    xs = np.full((2, 3000), 255)
    ws = np.full((3, 3000), -128)
    assert_equal(ops.linear_acc(xs, ws), xs @ ws.T, "float64 linear")
