"""torch.ops.quantized conv2d / conv2d_relu / linear against the golden ops, fbgemm and qnnpack.

fbgemm activations stay in 0..127 (reduce_range): CPUs without AVX-512 VNNI multiply uint8 pairs
with ``vpmaddubsw``, which saturates pair sums in int16 for larger values; with 0..127 the result
is the same on every CPU. qnnpack has no such limit (full 0..255).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from numerics_helpers import HYP, assert_equal, count, f32, random_scales, rng_from

from zynqnn.numerics import make_requant
from zynqnn.numerics.ops import conv2d_acc, linear_acc

ENGINES = {"torch-fbgemm": "fbgemm", "torch-qnnpack": "qnnpack"}


@contextlib.contextmanager
def engine(name):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def _qx(qx, s, zp):
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(qx.astype(np.uint8)),
                                                   float(s), int(zp))


def _qw(qw, s_w, zp_w, per_channel):
    t = torch.from_numpy(qw.astype(np.int8))
    if per_channel:
        s_w = np.asarray(s_w, dtype=np.float64).reshape(-1)
        zp = np.broadcast_to(np.asarray(zp_w, dtype=np.int64), s_w.shape).copy()
        return torch._make_per_channel_quantized_tensor(
            t, torch.from_numpy(s_w), torch.from_numpy(zp), 0)
    return torch._make_per_tensor_quantized_tensor(t, float(s_w), int(zp_w))


def torch_conv(scheme, qx, s_x, zp_x, qw, s_w, zp_w, per_channel, bias, s_out, zp_out, stride,
               padding, dilation, groups, relu):
    with engine(ENGINES[scheme]):
        w = _qw(qw, s_w, zp_w, per_channel)
        b = None if bias is None else torch.from_numpy(np.asarray(bias, dtype=np.float32))
        packed = torch.ops.quantized.conv2d_prepack(w, b, list(stride), list(padding),
                                                    list(dilation), groups)
        fn = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        y = fn(_qx(qx, s_x, zp_x), packed, float(s_out), int(zp_out))
        return y.int_repr().numpy().astype(np.int64)


def torch_linear(scheme, qx, s_x, zp_x, qw, s_w, zp_w, per_channel, bias, s_out, zp_out, relu):
    with engine(ENGINES[scheme]):
        w = _qw(qw, s_w, zp_w, per_channel)
        b = None if bias is None else torch.from_numpy(np.asarray(bias, dtype=np.float32))
        packed = torch.ops.quantized.linear_prepack(w, b)
        fn = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        y = fn(_qx(qx, s_x, zp_x), packed, float(s_out), int(zp_out))
        return y.int_repr().numpy().astype(np.int64)


def draw_layer(data, rng, scheme, *, linear=False):
    """Random layer parameters; dyadic scales and bias multiples make rounding ties common."""
    dyadic = data.draw(st.booleans(), label="dyadic")
    per_channel = data.draw(st.booleans(), label="per_channel")
    k = data.draw(st.integers(1, 24), label="K")
    s_x = float(random_scales(rng, 1, dyadic, 2e-3, 0.05)[0])
    s_out = float(random_scales(rng, 1, dyadic, 5e-3, 0.3)[0])
    s_w = random_scales(rng, k if per_channel else 1, dyadic, 5e-4, 0.02).astype(np.float64)
    zp_x = int(rng.integers(0, 128 if scheme == "torch-fbgemm" else 256))
    zp_out = int(rng.integers(0, 256))
    # nonzero weight zero points only per tensor (torch quantizes weights symmetrically per channel)
    zp_w = 0 if per_channel or not data.draw(st.booleans(), label="zp_w") else int(
        rng.integers(-8, 9))
    bias_kind = data.draw(st.sampled_from(["none", "random", "ties"]), label="bias")
    if bias_kind == "none":
        bias = None
    elif bias_kind == "random":
        bias = rng.normal(0, 2.0, k).astype(f32)
    else:  # multiples of s_x*s_w: the float bias/acc sum is exact, ties stay ties
        a = (f32(s_x) * np.broadcast_to(s_w.astype(f32), (k,))).astype(f32)
        bias = (rng.integers(-300, 300, k) * a / 2).astype(f32)
    relu = data.draw(st.booleans(), label="relu")
    if relu and scheme == "torch-qnnpack":
        zp_out = min(zp_out, 254)  # qnnpack refuses the empty output range [255, 255]
    sw = s_w if per_channel else s_w[0]
    return dict(k=k, s_x=s_x, s_out=s_out, s_w=sw, zp_x=zp_x, zp_out=zp_out, zp_w=zp_w,
                bias=bias, relu=relu, per_channel=per_channel)


@pytest.mark.parametrize("scheme", ["torch-fbgemm", "torch-qnnpack"])
@HYP
@given(data=st.data())
def test_conv2d_random(scheme, data, record_property):
    rng = rng_from(data)
    p = draw_layer(data, rng, scheme)
    k = p["k"]
    kind = data.draw(st.sampled_from(["dense", "grouped", "depthwise"]), label="kind")
    if kind == "dense":
        groups, cg = 1, data.draw(st.integers(1, 8), label="C")
    elif kind == "grouped":
        groups, cg = data.draw(st.sampled_from([2, 4])), data.draw(st.sampled_from([2, 4, 8]))
    else:
        groups, cg = data.draw(st.integers(1, 24), label="C"), 1
    k = groups * max(1, k // groups) if kind != "depthwise" else groups * data.draw(
        st.sampled_from([1, 1, 2]), label="mult")
    if p["per_channel"]:
        p["s_w"] = random_scales(rng, k, False, 5e-4, 0.02).astype(np.float64)
    if p["bias"] is not None:
        p["bias"] = rng.normal(0, 2.0, k).astype(f32)
    kh = data.draw(st.integers(1, 5), label="kh")
    kw = data.draw(st.integers(1, 5), label="kw")
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h = data.draw(st.integers(dilation[0] * (kh - 1) + 1, 14), label="H")
    w = data.draw(st.integers(dilation[1] * (kw - 1) + 1, 14), label="W")
    n = data.draw(st.integers(1, 2), label="N")
    c = groups * cg
    xmax = 128 if scheme == "torch-fbgemm" else 256
    qx = rng.integers(0, xmax, (n, c, h, w))
    qw = rng.integers(-128, 128, (k, cg, kh, kw))
    got_torch = torch_conv(scheme, qx, p["s_x"], p["zp_x"], qw, p["s_w"], p["zp_w"],
                           p["per_channel"], p["bias"], p["s_out"], p["zp_out"], stride, padding,
                           dilation, groups, p["relu"])
    acc = conv2d_acc(qx, qw, p["zp_x"], p["zp_w"], stride, padding, dilation, groups)
    rq = make_requant(scheme, p["s_x"], p["s_w"], p["s_out"], p["zp_out"], p["bias"],
                      relu=p["relu"])
    mine = rq.apply(acc)
    assert_equal(mine, got_torch, f"{scheme} conv2d {kind}")
    assert_equal(rq.apply_hw(acc), mine, f"{scheme} conv2d hw form")
    count(record_property, scheme, "conv2d[_relu] vs torch (hypothesis)", mine.size, 0)


@pytest.mark.parametrize("scheme", ["torch-fbgemm", "torch-qnnpack"])
@HYP
@given(data=st.data())
def test_linear_random(scheme, data, record_property):
    rng = rng_from(data)
    p = draw_layer(data, rng, scheme, linear=True)
    n = data.draw(st.integers(1, 64), label="N")
    c = data.draw(st.integers(1, 64), label="C")
    xmax = 128 if scheme == "torch-fbgemm" else 256
    qx = rng.integers(0, xmax, (n, c))
    qw = rng.integers(-128, 128, (p["k"], c))
    got = torch_linear(scheme, qx, p["s_x"], p["zp_x"], qw, p["s_w"], p["zp_w"], p["per_channel"],
                       p["bias"], p["s_out"], p["zp_out"], p["relu"])
    acc = linear_acc(qx, qw, p["zp_x"], p["zp_w"])
    rq = make_requant(scheme, p["s_x"], p["s_w"], p["s_out"], p["zp_out"], p["bias"],
                      relu=p["relu"])
    mine = rq.apply(acc, axis=-1)
    assert_equal(mine, got, f"{scheme} linear")
    assert_equal(rq.apply_hw(acc, axis=-1), mine, f"{scheme} linear hw form")
    count(record_property, scheme, "linear[_relu] vs torch (hypothesis)", mine.size, 0)


VOLUME_LAYERS = [
    # (per_channel, relu, C, K, H, kernel, stride, pad, groups, bias)
    (True, False, 16, 32, 36, 3, 1, 1, 1, "random"),
    (True, True, 3, 32, 64, 3, 2, 1, 1, "random"),
    (False, False, 8, 24, 32, 1, 1, 0, 1, "random"),
    (False, True, 16, 16, 32, 3, 1, 1, 16, "random"),
    (True, False, 32, 32, 24, 3, 1, 1, 32, "ties"),
    (False, False, 16, 32, 24, 3, 2, 1, 1, "none"),
]


@pytest.mark.parametrize("scheme", ["torch-fbgemm", "torch-qnnpack"])
def test_conv2d_volume(scheme, record_property):
    """Large layers with random scales: >= 100,000 outputs per scheme, 0 mismatches."""
    rng = np.random.default_rng(1234 if scheme == "torch-fbgemm" else 4321)
    total = 0
    for per_channel, relu, c, k, h, ks, stride, pad, groups, bias_kind in VOLUME_LAYERS:
        n = 2
        xmax = 128 if scheme == "torch-fbgemm" else 256
        qx = rng.integers(0, xmax, (n, c, h, h))
        qw = rng.integers(-128, 128, (k, c // groups, ks, ks))
        s_x = float(f32(rng.uniform(0.005, 0.03)))
        s_out = float(f32(rng.uniform(0.02, 0.2)))
        s_w = random_scales(rng, k if per_channel else 1, bias_kind == "ties", 1e-3, 0.01)
        s_w = s_w.astype(np.float64) if per_channel else float(s_w[0])
        zp_x, zp_out = int(rng.integers(0, xmax)), int(rng.integers(0, 256))
        if bias_kind == "none":
            bias = None
        elif bias_kind == "random":
            bias = rng.normal(0, 1.5, k).astype(f32)
        else:
            a = (f32(s_x) * np.broadcast_to(np.asarray(s_w, dtype=f32), (k,))).astype(f32)
            bias = (rng.integers(-400, 400, k) * a / 2).astype(f32)
        got = torch_conv(scheme, qx, s_x, zp_x, qw, s_w, 0, per_channel, bias, s_out, zp_out,
                         (stride, stride), (pad, pad), (1, 1), groups, relu)
        acc = conv2d_acc(qx, qw, zp_x, 0, stride, pad, 1, groups)
        rq = make_requant(scheme, s_x, s_w, s_out, zp_out, bias, relu=relu)
        mine = rq.apply(acc)
        assert_equal(mine, got, f"{scheme} volume conv C{c} K{k} g{groups}")
        assert_equal(rq.apply_hw(acc), mine, f"{scheme} volume conv hw")
        total += mine.size
    # linear layers on top
    for per_channel in (True, False):
        qx = rng.integers(0, 128, (2000, 48))
        qw = rng.integers(-128, 128, (32, 48))
        s_w = random_scales(rng, 32 if per_channel else 1, False, 1e-3, 0.01).astype(np.float64)
        s_w = s_w if per_channel else float(s_w[0])
        bias = rng.normal(0, 1.0, 32).astype(f32)
        got = torch_linear(scheme, qx, 0.0123, 17, qw, s_w, 0, per_channel, bias, 0.071, 100,
                           False)
        rq = make_requant(scheme, 0.0123, s_w, 0.071, 100, bias)
        mine = rq.apply(linear_acc(qx, qw, 17), axis=-1)
        assert_equal(mine, got, f"{scheme} volume linear")
        total += mine.size
    assert total >= 100_000
    count(record_property, scheme, "conv2d/linear vs torch (volume)", total, 0)


@pytest.mark.parametrize("scheme", ["torch-fbgemm", "torch-qnnpack"])
def test_weight_scale_not_float32(scheme, record_property):
    """Per-channel weight scales given as float64 values torch keeps in double precision."""
    rng = np.random.default_rng(7)
    k = 16
    s_w = rng.uniform(1e-3, 1e-2, k)  # not float32-representable
    qx = rng.integers(0, 128, (2, 8, 20, 20))
    qw = rng.integers(-128, 128, (k, 8, 3, 3))
    bias = rng.normal(0, 1, k).astype(f32)
    got = torch_conv(scheme, qx, 0.02, 5, qw, s_w, np.zeros(k, np.int64), True, bias, 0.05, 90,
                     (1, 1), (1, 1), (1, 1), 1, False)
    rq = make_requant(scheme, 0.02, s_w, 0.05, 90, bias)
    mine = rq.apply(conv2d_acc(qx, qw, 5, 0, 1, 1))
    assert_equal(mine, got, f"{scheme} float64 weight scales")
    count(record_property, scheme, "conv2d float64 weight scales vs torch", mine.size, 0)


@pytest.mark.parametrize("scheme", ["torch-fbgemm", "torch-qnnpack"])
def test_linear_overflow_int32_indefinite(scheme):
    """y = acc * 1000 >= 2^31 converts to INT32_MIN (cvtps2dq) and clamps to 0, not 255."""
    a = np.array([[127] * 140, [100] * 140, [60] * 140])
    w = np.tile(np.array([[127], [-127]]), (1, 140))
    got = torch_linear(scheme, a, 1.0, 0, w, 1.0, 0, False, None, 1e-3, 10, False)
    rq = make_requant(scheme, 1.0, 1.0, 1e-3, 10)
    acc = linear_acc(a, w)
    assert_equal(rq.apply(acc, axis=-1), got, "torch overflow")
    assert_equal(rq.apply_hw(acc, axis=-1), got, "torch overflow hw")
    assert got[:, 0].tolist() == [0, 255, 255]
