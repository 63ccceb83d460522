"""torch quantized elementwise ops, pooling, activations, concat and (de)quantization.

Vectorized torch kernels handle elements in blocks and a scalar tail; tensor sizes here are
multiples of 128 (every element in the vector path on AVX2 and AVX-512 CPUs) or below 64 (every
element in the scalar path on both), so the tests do not depend on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from numerics_helpers import HYP, assert_equal, count, draw_scales, f32, rng_from
from test_torch_conv import engine

from zynqnn.numerics import ops, quant


def qt(q, s, zp, dtype=torch.quint8, channels_last=False):
    np_dt = {torch.quint8: np.uint8, torch.qint8: np.int8, torch.qint32: np.int32}[dtype]
    t = torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.asarray(q).astype(np_dt)),
                                                float(s), int(zp))
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def codes(t):
    return t.int_repr().numpy().astype(np.int64)


# ------------------------------------------------------------------------------ quantize


@pytest.mark.parametrize("eng", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("dtype,name", [(torch.quint8, "uint8"), (torch.qint8, "int8"),
                                        (torch.qint32, "int32")])
def test_quantize_per_tensor(eng, dtype, name, record_property):
    rng = np.random.default_rng(11)
    total = 0
    lo, hi = quant.qrange(name)
    for _ in range(5):
        s = float(f32(rng.uniform(1e-3, 0.1)))
        zp = int(rng.integers(max(lo, -1000), min(hi, 1000) + 1))
        k = rng.integers(-300, 300, 20000)
        x = np.concatenate([
            rng.normal(0, 200 * s, 20000),
            (k + 0.5) * s,  # near ties (exact ties of x*f32(1/s) fall here)
            np.nextafter(((k + 0.5) * s).astype(f32), f32(1)),
        ]).astype(f32)
        with engine(eng):
            got = codes(torch.quantize_per_tensor(torch.from_numpy(x), s, zp, dtype))
        mine = quant.quantize_torch(x, s, zp, name)
        assert_equal(mine, got, f"quantize_per_tensor {name}")
        total += x.size
    count(record_property, f"torch-{eng}", f"quantize_per_tensor {name}", total, 0)


@pytest.mark.parametrize("n", [64 * 128, 48])
def test_dequantize(n, record_property):
    rng = np.random.default_rng(3)
    q = rng.integers(0, 256, n)
    s, zp = 0.0137, 131
    got = qt(q, s, zp).dequantize().numpy()
    plain = quant.dequantize_torch(q, s, zp)
    fused = quant.dequantize_torch(q, s, zp, fma=True)
    assert np.array_equal(got, plain) or np.array_equal(got, fused)
    count(record_property, "torch-fbgemm", "dequantize", n, 0)


# ------------------------------------------------------------------------------ add


def _add_case(data, rng, n):
    s_a, s_b, s_out = draw_scales(data, 3, 2e-3, 0.1)
    zp_a, zp_b, zp_out = (int(rng.integers(0, 256)) for _ in range(3))
    a = rng.integers(0, 256, n)
    b = rng.integers(0, 256, n)
    return a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out


@pytest.mark.parametrize("relu", [False, True])
@HYP
@given(data=st.data())
def test_add_fbgemm(relu, data, record_property):
    rng = rng_from(data)
    vector = data.draw(st.booleans(), label="vector")
    n = 128 * data.draw(st.integers(1, 40)) if vector else data.draw(st.integers(1, 63))
    a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out = _add_case(data, rng, n)
    with engine("fbgemm"):
        fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        got = codes(fn(qt(a, s_a, zp_a), qt(b, s_b, zp_b), s_out, zp_out))
    path = "vector" if vector else "scalar"
    mine = ops.add_torch(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=relu, path=path)
    assert_equal(mine, got, f"fbgemm add ({path})")
    assert_equal(ops.add_torch(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=relu, path=path,
                               hw=True), mine, "add hw form")
    count(record_property, "torch-fbgemm", f"add{'_relu' if relu else ''} ({path} path)", n, 0)


@pytest.mark.parametrize("relu", [False, True])
def test_add_fbgemm_volume(relu, record_property):
    rng = np.random.default_rng(21 + relu)
    total = 0
    for _ in range(6):
        n = 128 * 200
        s_a, s_b, s_out = (float(f32(v)) for v in rng.uniform(0.005, 0.1, 3))
        a, b = rng.integers(0, 256, n), rng.integers(0, 256, n)
        zp_a, zp_b, zp_out = (int(v) for v in rng.integers(0, 256, 3))
        with engine("fbgemm"):
            fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
            got = codes(fn(qt(a, s_a, zp_a), qt(b, s_b, zp_b), s_out, zp_out))
        mine = ops.add_torch(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=relu)
        assert_equal(mine, got, "fbgemm add volume")
        total += n
    count(record_property, "torch-fbgemm", f"add{'_relu' if relu else ''} (volume)", total, 0)


@pytest.mark.parametrize("relu", [False, True])
@HYP
@given(data=st.data())
def test_add_qnnpack(relu, data, record_property):
    rng = rng_from(data)
    n = data.draw(st.integers(1, 5000), label="n")
    a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out = _add_case(data, rng, n)
    zp_out = min(zp_out, 254)  # qnnpack refuses add_relu with an empty range [255, 255]
    ratio = max(s_a, s_b) / s_out
    if not (2.0**-14 <= min(s_a, s_b) / s_out and ratio < 256):
        return
    with engine("qnnpack"):
        fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        got = codes(fn(qt(a, s_a, zp_a), qt(b, s_b, zp_b), s_out, zp_out))
    mine = ops.add_qnnpack(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=relu)
    assert_equal(mine, got, "qnnpack add")
    count(record_property, "torch-qnnpack", f"add{'_relu' if relu else ''}", n, 0)


def test_add_qnnpack_volume(record_property):
    rng = np.random.default_rng(5)
    total = 0
    for relu in (False, True):
        for _ in range(5):
            n = 30000
            s_a, s_b, s_out = (float(f32(v)) for v in rng.uniform(0.005, 0.1, 3))
            a, b = rng.integers(0, 256, n), rng.integers(0, 256, n)
            zp_a, zp_b, zp_out = (int(v) for v in rng.integers(0, 255, 3))
            with engine("qnnpack"):
                fn = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
                got = codes(fn(qt(a, s_a, zp_a), qt(b, s_b, zp_b), s_out, zp_out))
            mine = ops.add_qnnpack(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=relu)
            assert_equal(mine, got, "qnnpack add volume")
            total += n
    count(record_property, "torch-qnnpack", "add[_relu] (volume)", total, 0)


# ------------------------------------------------------------------------------ pooling


@HYP
@given(data=st.data())
def test_avg_pool2d(data, record_property):
    rng = rng_from(data)
    layout = data.draw(st.sampled_from(["nchw", "nhwc"]), label="layout")
    # channels_last: the AVX-512 build vectorizes 16 channels, the AVX2 build 8; C below 8 or a
    # multiple of 16 is computed the same way on both
    c = data.draw(st.sampled_from([1, 2, 3, 5, 7, 16, 32, 48]), label="C")
    k = data.draw(st.integers(1, 4), label="k")
    s = data.draw(st.integers(1, 3), label="stride")
    p = data.draw(st.integers(0, k // 2), label="pad")
    h = data.draw(st.integers(k, 16), label="H")
    ceil_mode = data.draw(st.booleans(), label="ceil")
    cip = data.draw(st.booleans(), label="count_include_pad")
    div = data.draw(st.one_of(st.none(), st.integers(1, 20)), label="divisor")
    zp = int(rng.integers(0, 256))
    x = rng.integers(0, 256, (2, c, h, h + 1))
    with engine("fbgemm"):
        got = codes(torch.nn.functional.avg_pool2d(
            qt(x, 0.05, zp, channels_last=layout == "nhwc"), k, s, p, ceil_mode, cip, div))
    mine = ops.avg_pool2d_torch(x, k, zp, s, p, ceil_mode, cip, div, layout=layout)
    assert_equal(mine, got, f"avg_pool2d {layout}")
    count(record_property, "torch-fbgemm", f"avg_pool2d ({layout})", mine.size, 0)


@HYP
@given(data=st.data())
def test_adaptive_avg_pool2d(data, record_property):
    rng = rng_from(data)
    layout = data.draw(st.sampled_from(["nchw", "nhwc"]), label="layout")
    c = data.draw(st.integers(1, 40), label="C")
    h = data.draw(st.integers(1, 14), label="H")
    w = data.draw(st.integers(1, 14), label="W")
    oh = data.draw(st.integers(1, h), label="oh")
    ow = data.draw(st.integers(1, w), label="ow")
    zp = int(rng.integers(0, 256))
    x = rng.integers(0, 256, (2, c, h, w))
    with engine("fbgemm"):
        got = codes(torch.nn.functional.adaptive_avg_pool2d(
            qt(x, 0.05, zp, channels_last=layout == "nhwc"), (oh, ow)))
    mine = ops.adaptive_avg_pool2d_torch(x, (oh, ow), zp, layout=layout)
    assert_equal(mine, got, f"adaptive_avg_pool2d {layout}")
    count(record_property, "torch-fbgemm", f"adaptive_avg_pool2d ({layout})", mine.size, 0)


def test_global_avg_pool_volume(record_property):
    rng = np.random.default_rng(8)
    total = 0
    for hw in (7, 5, 13, 1, 28):
        x = rng.integers(0, 256, (4, 512, hw, hw))
        zp = int(rng.integers(0, 256))
        with engine("fbgemm"):
            got = codes(torch.nn.functional.adaptive_avg_pool2d(
                qt(x, 0.02, zp, channels_last=True), 1))
        mine = ops.adaptive_avg_pool2d_torch(x, 1, zp)
        assert_equal(mine, got, f"global avg pool {hw}x{hw}")
        total += mine.size
    count(record_property, "torch-fbgemm", "adaptive_avg_pool2d(1) (nhwc)", total, 0)


@HYP
@given(data=st.data())
def test_max_pool2d(data, record_property):
    rng = rng_from(data)
    k = data.draw(st.integers(1, 4), label="k")
    s = data.draw(st.integers(1, 3), label="stride")
    p = data.draw(st.integers(0, k // 2), label="pad")
    d = data.draw(st.integers(1, 2), label="dilation")
    h = data.draw(st.integers(d * (k - 1) + 1, 15), label="H")
    ceil_mode = data.draw(st.booleans(), label="ceil")
    x = rng.integers(0, 256, (2, 5, h, h + 2))
    with engine("fbgemm"):  # qnnpack refuses 1x1 pools; other tests may leave it selected
        got = codes(torch.nn.functional.max_pool2d(qt(x, 0.1, 7), k, s, p, d, ceil_mode))
    mine = ops.max_pool2d(x, k, s, p, d, ceil_mode)
    assert_equal(mine, got, "max_pool2d")
    count(record_property, "torch-fbgemm", "max_pool2d", mine.size, 0)


def test_yolo_zeropad_maxpool(record_property):
    """YOLOv3-tiny: ZeroPad2d((0, 1, 0, 1)) then MaxPool2d(2, 1) on a quantized tensor."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (1, 8, 13, 13))
    zp = 37
    padded = torch.nn.functional.pad(qt(x, 0.1, zp), (0, 1, 0, 1))
    got = codes(torch.nn.functional.max_pool2d(padded, 2, 1))
    mine = ops.max_pool2d(x, 2, 1, padding=(0, 1, 0, 1), pad_value=zp)
    assert_equal(mine, got, "zero pad + max pool")
    count(record_property, "torch-fbgemm", "ZeroPad2d+max_pool2d", mine.size, 0)


# ------------------------------------------------------------------------------ activations


@HYP
@given(data=st.data())
def test_hardtanh_relu6(data, record_property):
    rng = rng_from(data)
    (s,) = draw_scales(data, 1, 1e-3, 0.1)
    zp = int(rng.integers(0, 256))
    x = rng.integers(0, 256, 300)
    lo = data.draw(st.floats(-3, 1), label="min")
    hi = data.draw(st.floats(1, 8), label="max")
    q = qt(x, s, zp)
    assert_equal(ops.hardtanh_torch(x, s, zp, lo, hi),
                 codes(torch.nn.functional.hardtanh(q, lo, hi)), "hardtanh")
    assert_equal(ops.relu6_torch(x, s, zp), codes(torch.nn.functional.relu6(q)), "relu6")
    assert_equal(ops.relu6_torch(x, s, zp), codes(torch.ao.nn.quantized.ReLU6()(q)), "ReLU6")
    assert_equal(ops.relu(x, zp), codes(torch.nn.functional.relu(q)), "relu")
    count(record_property, "torch-fbgemm", "relu / relu6 / hardtanh", 4 * x.size, 0)


@HYP
@given(data=st.data())
def test_leaky_relu(data, record_property):
    rng = rng_from(data)
    vector = data.draw(st.booleans(), label="vector")
    n = 128 * data.draw(st.integers(1, 20)) if vector else data.draw(st.integers(1, 63))
    s_in, s_out = draw_scales(data, 2, 1e-3, 0.1)
    zp_in, zp_out = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    slope = data.draw(st.sampled_from([0.01, 0.1, 0.125, 26 / 256, 0.25, 0.5]), label="slope")
    x = rng.integers(0, 256, n)
    got = codes(torch.ops.quantized.leaky_relu(qt(x, s_in, zp_in), slope, False, s_out, zp_out))
    path = "vector" if vector else "scalar"
    mine = ops.leaky_relu_torch(x, s_in, zp_in, s_out, zp_out, slope, path=path)
    assert_equal(mine, got, f"leaky_relu ({path})")
    # torch.ao's quantized module runs the same op
    mod = torch.ao.nn.quantized.LeakyReLU(s_out, zp_out, slope)
    assert_equal(codes(mod(qt(x, s_in, zp_in))), got, "torch.ao.nn.quantized.LeakyReLU")
    count(record_property, "torch-fbgemm", f"leaky_relu ({path} path)", n, 0)


# ------------------------------------------------------------------------------ resampling, cat


def test_upsample_nearest(record_property):
    x = np.random.default_rng(0).integers(0, 256, (2, 6, 7, 5))
    got = codes(torch.nn.functional.interpolate(qt(x, 0.1, 3), scale_factor=2, mode="nearest"))
    assert_equal(ops.upsample_nearest(x, 2), got, "upsample nearest x2")
    count(record_property, "torch-fbgemm", "upsample_nearest x2", got.size, 0)


@HYP
@given(data=st.data())
def test_cat(data, record_property):
    rng = rng_from(data)
    nhwc = data.draw(st.booleans(), label="nhwc")
    cs = [64 * data.draw(st.integers(1, 2)) if nhwc else data.draw(st.integers(1, 9))
          for _ in range(2)]
    scales = draw_scales(data, 3, 1e-3, 0.1)
    zps = [int(v) for v in rng.integers(0, 256, 3)]
    xs = [rng.integers(0, 256, (2, c, 5, 4)) for c in cs]
    tq = [qt(x, s, z, channels_last=nhwc) for x, s, z in zip(xs, scales, zps, strict=False)]
    got = codes(torch.ops.quantized.cat(tq, 1, scales[2], zps[2]))
    mine = ops.concat_torch(xs, scales[:2], zps[:2], scales[2], zps[2],
                            path="nhwc" if nhwc else "generic")
    assert_equal(mine, got, f"quantized cat ({'nhwc' if nhwc else 'generic'})")
    # shared qparams (what torch.ao's converted models produce): a plain copy
    same = [qt(x, scales[0], zps[0], channels_last=nhwc) for x in xs]
    assert_equal(ops.concat(xs), codes(torch.cat(same, 1)), "torch.cat shared qparams")
    count(record_property, "torch-fbgemm", "cat (requantizing)", mine.size, 0)
