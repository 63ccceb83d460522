"""fbgemm's depthwise kernel: int16 saturation of tap pairs, against PyTorch (fbgemm engine).

PyTorch runs quantized depthwise convs (groups == C, C % 8 == 0, 3x3/5x5/7x7, stride 1 or 2,
"same" padding) in fbgemm's JIT depthwise kernel on every x86 CPU. It multiplies raw uint8
activation codes by raw int8 weight codes with ``vpmaddubsw``, which adds the products of taps
``2m`` and ``2m + 1`` (row-major) with int16 saturation; the zero points are taken out later in
int32. ``conv2d_acc(..., saturate_pairs=True)`` models it. These tests use activation codes over
the full 0..255 range (no ``reduce_range`` calibration), so saturation really happens, and check
that it did: an exact-sum model fails them.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from numerics_helpers import HYP, assert_equal, count, f32, rng_from

from zynqnn.numerics import RangeError, ShapeError, make_requant, ops

SCHEME = "torch-fbgemm"


@contextlib.contextmanager
def fbgemm():
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def has_avx512_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:  # pragma: no cover - not Linux
        return False


def _pair(v):
    return (v, v) if np.ndim(v) == 0 else tuple(v)


def torch_qconv(qx, s_x, zp_x, qw, s_w, zp_w=0, per_channel=False, bias=None, s_out=1.0,
                zp_out=0, stride=1, padding=0, dilation=1, groups=1, relu=False):
    """A ``torch.ao.nn.quantized.Conv2d`` (``ConvReLU2d``) under the fbgemm engine -> codes."""
    k, cg, kh, kw = qw.shape
    with fbgemm():
        t = torch.from_numpy(np.asarray(qw).astype(np.int8))
        if per_channel:
            s = torch.from_numpy(np.broadcast_to(np.asarray(s_w, np.float64), (k,)).copy())
            z = torch.from_numpy(np.broadcast_to(np.asarray(zp_w, np.int64), (k,)).copy())
            w = torch._make_per_channel_quantized_tensor(t, s, z, 0)
        else:
            w = torch._make_per_tensor_quantized_tensor(t, float(s_w), int(zp_w))
        cls = (torch.ao.nn.intrinsic.quantized.ConvReLU2d if relu
               else torch.ao.nn.quantized.Conv2d)
        m = cls(cg * groups, k, (kh, kw), stride=_pair(stride), padding=_pair(padding),
                dilation=_pair(dilation), groups=groups, bias=bias is not None)
        m.set_weight_bias(w, None if bias is None else torch.from_numpy(
            np.asarray(bias, dtype=np.float32)))
        m.scale, m.zero_point = float(s_out), int(zp_out)
        x = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(np.asarray(qx).astype(np.uint8)), float(s_x), int(zp_x))
        with torch.no_grad():
            return m(x).int_repr().numpy().astype(np.int64)


def torch_qlinear(qx, s_x, zp_x, qw, s_w, bias, s_out, zp_out):
    """A ``torch.ao.nn.quantized.Linear`` (per-tensor weights) under the fbgemm engine."""
    with fbgemm():
        w = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(np.asarray(qw).astype(np.int8)), float(s_w), 0)
        m = torch.ao.nn.quantized.Linear(qw.shape[1], qw.shape[0])
        m.set_weight_bias(w, torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        m.scale, m.zero_point = float(s_out), int(zp_out)
        x = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(np.asarray(qx).astype(np.uint8)), float(s_x), int(zp_x))
        with torch.no_grad():
            return m(x).int_repr().numpy().astype(np.int64)


def pairs_reference(qx, qw, zp_x, zp_w, stride, pad):
    """Plain transcription of the kernel: raw codes, padding = zp_x, taps row-major, pairs
    (2m, 2m+1) saturated to int16 and summed in int64, zero points afterwards.
    Returns (accumulators, number of saturated pair sums)."""
    n, c, h, w = qx.shape
    k, _, kh, kw = qw.shape
    sh, sw = _pair(stride)
    xp = np.pad(qx.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                constant_values=zp_x)
    ho, wo = (h + 2 * pad - kh) // sh + 1, (w + 2 * pad - kw) // sw + 1
    a = [np.repeat(xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw],
                   k // c, axis=1) for i in range(kh) for j in range(kw)]
    b = [qw[:, 0, i, j].astype(np.int64).reshape(1, k, 1, 1)
         for i in range(kh) for j in range(kw)]
    acc = np.zeros((n, k, ho, wo), np.int64)
    nsat = 0
    for t in range(0, kh * kw, 2):
        p = sum(a[u] * b[u] for u in range(t, min(t + 2, kh * kw)))
        s = np.clip(p, -32768, 32767)
        nsat += int(np.count_nonzero(s != p))
        acc += s
    zw = np.broadcast_to(np.asarray(zp_w, np.int64), (k,)).reshape(1, k, 1, 1)
    sum_b = qw.reshape(k, -1).astype(np.int64).sum(axis=1).reshape(1, k, 1, 1)
    return acc - zw * sum(a) - zp_x * (sum_b - kh * kw * zw), nsat


# ---------------------------------------------------------------------------------------------
# the pairing rule, tap by tap


@pytest.mark.parametrize("ks", [3, 5, 7])
@pytest.mark.parametrize("wval", [127, -128])
def test_pairing_rule(ks, wval, record_property):
    """One channel per pair of taps (t1, t2), both weights at +127 (or -128), input all 255:
    a pair sum of 64770 (-65280) leaves int16. Exactly the channels of taps (2m, 2m+1) saturate,
    for every kernel size; the last odd tap is alone."""
    taps = ks * ks
    combos = list(itertools.combinations(range(taps), 2))
    c = -(-len(combos) // 8) * 8
    qw = np.zeros((c, 1, ks, ks), np.int64)
    for ch, (t1, t2) in enumerate(combos):
        qw[ch, 0].flat[t1] = qw[ch, 0].flat[t2] = wval
    qx = np.full((1, c, ks + 2, ks + 2), 255)
    s_x, s_w, s_out, zp_out = 1 / 16, 1 / 32, 1.0, 128  # M = 1/512: 126.5 vs 64 (saturated)
    pad = ks // 2
    assert ops.fbgemm_depthwise_path(c, c, c, ks, 1, pad)
    got = torch_qconv(qx, s_x, 0, qw, s_w, s_out=s_out, zp_out=zp_out, padding=pad, groups=c)
    rq = make_requant(SCHEME, s_x, s_w, s_out, zp_out)
    exact = rq.apply(ops.conv2d_acc(qx, qw, 0, 0, 1, pad, 1, c))
    mine = rq.apply(ops.conv2d_acc(qx, qw, 0, 0, 1, pad, 1, c, saturate_pairs=True))
    assert_equal(mine, got, f"{ks}x{ks} pairing, weights {wval}")
    centre = (0, slice(None), ks // 2 + 1, ks // 2 + 1)  # window without padding
    sat = {combos[ch] for ch in np.flatnonzero(got[centre] != exact[centre]) if ch < len(combos)}
    assert sat == {(t, t + 1) for t in range(0, taps - 1, 2)}
    count(record_property, SCHEME, "depthwise pairing rule vs torch", got.size, 0)


def test_pair_sums_widen_to_int32(record_property):
    """All nine taps saturate-prone: acc = 4 * 32767 + 255 * 127 = 163453 (pairs widened and
    added in int32); the exact sum 291465 and an int16 running sum 32767 give other codes."""
    c = 8
    qx = np.full((1, c, 5, 5), 255)
    qw = np.full((c, 1, 3, 3), 127)
    got = torch_qconv(qx, 1 / 32, 0, qw, 1 / 64, s_out=1.0, padding=1, groups=c)  # M = 1/2048
    acc = ops.conv2d_acc(qx, qw, 0, 0, 1, 1, 1, c, saturate_pairs=True)
    assert acc[0, 0, 2, 2] == 4 * 32767 + 255 * 127
    assert got[0, :, 2, 2].tolist() == [80] * c  # rne(163453 / 2048); exact: 142, int16: 16
    assert_equal(make_requant(SCHEME, 1 / 32, 1 / 64, 1.0, 0).apply(acc), got, "int32 widening")
    count(record_property, SCHEME, "depthwise pairing rule vs torch", got.size, 0)


@pytest.mark.parametrize(("interior", "zp_x"), [(0, 255), (255, 0), (255, 255), (200, 77)])
def test_padding_enters_as_raw_zero_point(interior, zp_x, record_property):
    """Padded taps load the raw code zp_x and take part in the pairs: with interior codes 0 and
    zp_x = 255 only border outputs saturate (the interior pairs are 0)."""
    c = 16
    qx = np.full((2, c, 6, 7), interior)
    qw = np.tile(np.array([127, 120, -128, -100, 127, 127, 90, 127, -128]).reshape(1, 1, 3, 3),
                 (c, 1, 1, 1))
    qw[1::2] = np.minimum(-qw[1::2], 127)  # odd channels: the opposite signs
    s_x, s_w, s_out, zp_out = 0.01, 0.002, 0.8, 128
    for stride in (1, 2):
        got = torch_qconv(qx, s_x, zp_x, qw, s_w, s_out=s_out, zp_out=zp_out, stride=stride,
                          padding=1, groups=c)
        rq = make_requant(SCHEME, s_x, s_w, s_out, zp_out)
        acc = ops.conv2d_acc(qx, qw, zp_x, 0, stride, 1, 1, c, saturate_pairs=True)
        ref, nsat = pairs_reference(qx, qw, zp_x, 0, stride, 1)
        assert_equal(acc, ref, "accumulators vs plain reference")
        assert_equal(rq.apply(acc), got, f"padding, interior {interior}, zp_x {zp_x}")
        assert nsat > 0
        if interior == 0:  # only outputs whose window holds padding can saturate
            exact = ops.conv2d_acc(qx, qw, zp_x, 0, stride, 1, 1, c)
            assert np.array_equal(acc[:, :, 1:-1, 1:-1], exact[:, :, 1:-1, 1:-1])
            assert not np.array_equal(acc, exact)
        count(record_property, SCHEME, "depthwise padding vs torch", got.size, 0)


# ---------------------------------------------------------------------------------------------
# random layers, full 0..255 input range


def _layer(rng, c, mult, ks, per_channel, zp_w, bias_kind="random"):
    k = c * mult
    s_x = float(f32(rng.uniform(0.005, 0.03)))
    s_w = (rng.uniform(1e-3, 1e-2, k) if per_channel else float(f32(rng.uniform(1e-3, 1e-2))))
    # output scale: about +-4 standard deviations of the accumulator fill the code range
    s_out = float(f32(s_x * np.max(s_w) * 255 * 128 * ks / 4))
    bias = None if bias_kind == "none" else rng.normal(0, 1.0, k).astype(f32)
    zp = rng.integers(-6, 7, k) if (zp_w == "random" and per_channel) else (
        int(rng.integers(-6, 7)) if zp_w == "random" else 0)
    return s_x, s_w, s_out, bias, zp


VOLUME_LAYERS = [
    # (C, multiplier, kernel, stride, per_channel, weight zero point, relu, N, H, W)
    (32, 1, 3, (1, 1), True, 0, False, 2, 24, 24),
    (32, 1, 3, (2, 2), False, 0, True, 2, 25, 24),
    (24, 1, 5, (1, 1), True, "random", False, 2, 20, 20),
    (24, 1, 5, (2, 2), False, "random", False, 2, 21, 19),
    (16, 1, 7, (1, 1), True, 0, True, 2, 16, 16),
    (8, 1, 7, (2, 2), False, 0, False, 2, 17, 17),
    (16, 2, 3, (1, 1), True, 0, False, 2, 16, 16),
    (16, 2, 5, (2, 1), False, 0, False, 2, 14, 15),
    (40, 1, 3, (1, 2), True, "random", False, 2, 14, 18),
]


def test_depthwise_volume(record_property):
    """Large random depthwise layers on uniform 0..255 codes: every output equals PyTorch's,
    every layer saturates somewhere, and an exact-sum model would differ on each."""
    rng = np.random.default_rng(2024)
    total = saturated = pairs = 0
    for c, mult, ks, stride, per_channel, zp_w, relu, n, h, w in VOLUME_LAYERS:
        s_x, s_w, s_out, bias, zw = _layer(rng, c, mult, ks, per_channel, zp_w)
        qx = rng.integers(0, 256, (n, c, h, w))
        qw = rng.integers(-128, 128, (c * mult, 1, ks, ks))
        zp_x, zp_out = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        pad = ks // 2
        assert ops.fbgemm_depthwise_path(c, c * mult, c, ks, stride, pad)
        got = torch_qconv(qx, s_x, zp_x, qw, s_w, zw, per_channel, bias, s_out, zp_out, stride,
                          pad, 1, c, relu)
        rq = make_requant(SCHEME, s_x, s_w, s_out, zp_out, bias, relu=relu)
        acc = ops.conv2d_acc(qx, qw, zp_x, zw, stride, pad, 1, c, saturate_pairs=True)
        ref, nsat = pairs_reference(qx, qw, zp_x, zw, stride, pad)
        assert_equal(acc, ref, "accumulators vs plain reference")
        what = f"depthwise C{c} x{mult} {ks}x{ks}/{stride}"
        assert_equal(rq.apply(acc), got, what)
        assert_equal(rq.apply_hw(acc), got, what + " hw form")
        exact = rq.apply(ops.conv2d_acc(qx, qw, zp_x, zw, stride, pad, 1, c))
        differ = int(np.count_nonzero(exact != got))
        assert nsat > 0 and differ > 0, (what, nsat, differ)
        total += got.size
        saturated += differ
        pairs += nsat
    assert total >= 50_000
    count(record_property, SCHEME, "depthwise conv2d vs torch (volume, 0..255)", total, 0)
    count(record_property, SCHEME, "depthwise volume: outputs the exact sum misses", saturated, 0)
    count(record_property, SCHEME, "depthwise volume: saturated pair sums", pairs, 0)


@HYP
@given(data=st.data())
def test_depthwise_random(data, record_property):
    """Random fast-path depthwise layers (hypothesis): codes over 0..255, mostly large weights."""
    rng = rng_from(data)
    ks = data.draw(st.sampled_from([3, 5, 7]), label="kernel")
    stride = (data.draw(st.sampled_from([1, 2])), data.draw(st.sampled_from([1, 2])))
    c = data.draw(st.sampled_from([8, 16, 24]), label="C")
    mult = data.draw(st.sampled_from([1, 1, 2]), label="multiplier")
    per_channel = data.draw(st.booleans(), label="per_channel")
    zp_w = data.draw(st.sampled_from([0, 0, "random"]), label="zp_w")
    relu = data.draw(st.booleans(), label="relu")
    s_x, s_w, s_out, bias, zw = _layer(rng, c, mult, ks, per_channel, zp_w,
                                       data.draw(st.sampled_from(["none", "random"])))
    h = data.draw(st.integers(1, 12), label="H")
    w = data.draw(st.integers(1, 12), label="W")
    lo = data.draw(st.sampled_from([0, 128, 200]), label="lowest code")
    qx = rng.integers(lo, 256, (data.draw(st.integers(1, 2)), c, h, w))
    qw = rng.choice(np.r_[-128:-90, 90:128], (c * mult, 1, ks, ks))
    zp_x, zp_out = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    pad = ks // 2
    got = torch_qconv(qx, s_x, zp_x, qw, s_w, zw, per_channel, bias, s_out, zp_out, stride, pad,
                      1, c, relu)
    rq = make_requant(SCHEME, s_x, s_w, s_out, zp_out, bias, relu=relu)
    acc = ops.conv2d_acc(qx, qw, zp_x, zw, stride, pad, 1, c, saturate_pairs=True)
    assert_equal(acc, pairs_reference(qx, qw, zp_x, zw, stride, pad)[0], "vs plain reference")
    assert_equal(rq.apply(acc), got, "depthwise (hypothesis)")
    count(record_property, SCHEME, "depthwise conv2d vs torch (hypothesis, 0..255)", got.size, 0)


# ---------------------------------------------------------------------------------------------
# which convs take the kernel


OTHER_PATHS = [
    # (C, multiplier, kh, kw, stride, padding, dilation): depthwise weights, not fbgemm's kernel
    (12, 1, 3, 3, 1, 1, 1),   # C % 8 != 0
    (16, 1, 3, 3, 1, 0, 1),   # not "same" padding
    (16, 1, 5, 5, 1, 1, 1),
    (16, 1, 3, 3, 3, 1, 1),   # stride 3
    (16, 1, 3, 3, 1, 2, 2),   # dilation
    (16, 1, 5, 3, 1, 1, 1),   # not square
    (16, 3, 3, 3, 1, 1, 1),   # channel multiplier 3
    (16, 1, 1, 1, 1, 0, 1),
    (16, 1, 2, 2, 1, 0, 1),
    (16, 1, 4, 4, 1, 1, 1),
    (16, 1, 9, 9, 1, 4, 1),
]


@pytest.mark.parametrize("case", OTHER_PATHS, ids=[str(c) for c in OTHER_PATHS])
def test_other_depthwise_shapes_are_exact(case, record_property):
    """Depthwise convs outside fbgemm's fast path run its im2col GEMM: exact on this CPU (and
    the pair model would differ, so the data does saturate)."""
    if not has_avx512_vnni():
        pytest.skip("CPU without AVX-512 VNNI: PyTorch's fbgemm GEMM saturates int16 pairs "
                    "there, which the golden model does not model (docs/numerics.md)")
    c, mult, kh, kw, stride, pad, dil = case
    rng = np.random.default_rng(sum(case))
    k = c * mult
    qx = rng.integers(150, 256, (2, c, 12, 12))
    qw = rng.choice([-128, -120, 110, 127], (k, 1, kh, kw))
    s_x, s_w = 0.02, 0.002
    s_out = float(f32(s_x * s_w * 255 * 128 * kh * kw / 120))
    assert not ops.fbgemm_depthwise_path(c, k, c, (kh, kw), stride, pad, dil)
    got = torch_qconv(qx, s_x, 255, qw, s_w, s_out=s_out, zp_out=128, stride=stride,
                      padding=pad, dilation=dil, groups=c)
    rq = make_requant(SCHEME, s_x, s_w, s_out, 128)
    exact = rq.apply(ops.conv2d_acc(qx, qw, 255, 0, stride, pad, dil, c))
    assert_equal(exact, got, f"depthwise-shaped {case}")
    if kh * kw > 1:
        paired = rq.apply(ops.conv2d_acc(qx, qw, 255, 0, stride, pad, dil, c,
                                         saturate_pairs=True))
        assert not np.array_equal(paired, got)
    count(record_property, SCHEME, "depthwise-shaped, other fbgemm paths, exact", got.size, 0)


@pytest.mark.parametrize("case", ["dense 3x3", "dense 1x1", "grouped 4/group", "grouped 16/group",
                                  "grouped 2/group stride 2", "linear"])
def test_gemm_paths_exact_with_vnni(case, record_property):
    """Dense, groupwise and linear layers with codes 200..255 and weights +-127: a pairwise
    int16 sum would saturate in almost every output, yet PyTorch equals the exact sum here:
    fbgemm uses ``vpdpbusd`` (int32) on AVX-512 VNNI CPUs."""
    if not has_avx512_vnni():
        pytest.skip("CPU without AVX-512 VNNI: PyTorch's fbgemm GEMM saturates int16 pairs "
                    "there, which the golden model does not model (docs/numerics.md)")
    rng = np.random.default_rng(len(case))
    s_x, s_w = 0.02, 0.002
    if case == "linear":
        qx = rng.integers(200, 256, (64, 256))
        qw = np.where(rng.random((64, 256)) < 0.5, 127, -128)
        s_out = float(f32(s_x * s_w * 256 * 255 * 128 / 100))
        bias = rng.normal(0, 1, 64).astype(f32)
        got = torch_qlinear(qx, s_x, 255, qw, s_w, bias, s_out, 128)
        want = make_requant(SCHEME, s_x, s_w, s_out, 128, bias).apply(
            ops.linear_acc(qx, qw, 255), axis=-1)
    else:
        c, k, groups, ks, stride = {
            "dense 3x3": (16, 32, 1, 3, 1), "dense 1x1": (32, 32, 1, 1, 1),
            "grouped 4/group": (64, 64, 16, 3, 1), "grouped 16/group": (128, 128, 8, 3, 1),
            "grouped 2/group stride 2": (32, 32, 16, 3, 2)}[case]
        qx = rng.integers(200, 256, (2, c, 12, 12))
        qw = np.where(rng.random((k, c // groups, ks, ks)) < 0.5, 127, -128)
        s_out = float(f32(s_x * s_w * (c // groups) * ks * ks * 255 * 128 / 100))
        bias = rng.normal(0, 1, k).astype(f32)
        got = torch_qconv(qx, s_x, 255, qw, s_w, bias=bias, s_out=s_out, zp_out=128,
                          stride=stride, padding=ks // 2, groups=groups)
        want = make_requant(SCHEME, s_x, s_w, s_out, 128, bias).apply(
            ops.conv2d_acc(qx, qw, 255, 0, stride, ks // 2, 1, groups))
    assert_equal(want, got, case)
    count(record_property, SCHEME, "dense/grouped/linear, codes 200..255, exact", got.size, 0)


def test_fast_path_predicate():
    p = ops.fbgemm_depthwise_path
    assert p(32, 32, 32, 3, 1, 1) and p(32, 64, 32, (5, 5), (2, 1), (2, 2, 2, 2))
    assert p(8, 8, 8, 7, 2, 3, 1)
    assert not p(32, 32, 32, 3, 1, (1, 0, 1, 1))  # asymmetric padding
    assert not p(32, 96, 32, 3, 1, 1)  # multiplier 3
    assert not p(32, 32, 16, 3, 1, 1)  # grouped, not depthwise
    assert not p(32, 32, 32, 3, 1, 1, 2)
    assert not p(4, 4, 4, 3, 1, 1)


def test_saturate_pairs_arguments():
    x = np.full((1, 8, 5, 5), 255)
    w = np.full((8, 1, 3, 3), 127)
    with pytest.raises(ShapeError, match="one input channel per group"):
        ops.conv2d_acc(np.zeros((1, 8, 5, 5), np.int64), np.zeros((8, 2, 3, 3), np.int64),
                       groups=4, saturate_pairs=True)
    with pytest.raises(RangeError, match="uint8"):
        ops.conv2d_acc(x + 1, w, 0, 0, 1, 1, 1, 8, saturate_pairs=True)
    with pytest.raises(RangeError, match="int8 weight"):
        ops.conv2d_acc(x, w + 1, 0, 0, 1, 1, 1, 8, saturate_pairs=True)
    # codes <= 127: no pair can saturate; the result is the exact sum
    small = np.full((1, 8, 5, 5), 127)
    assert np.array_equal(ops.conv2d_acc(small, w, 3, 0, 1, 1, 1, 8, saturate_pairs=True),
                          ops.conv2d_acc(small, w, 3, 0, 1, 1, 1, 8))
    packed = ops.pack_weights(w, 0, 8)  # PackedWeights work too, and conv2d passes it on
    rq = make_requant(SCHEME, 1 / 32, 1 / 64, 1.0)
    assert ops.conv2d(x, packed, rq, 0, None, 1, 1, 1, 8, saturate_pairs=True)[0, 0, 2, 2] == 80
