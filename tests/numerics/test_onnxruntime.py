"""ONNX Runtime QuantizeLinear / QLinearConv / QLinearMatMul / QLinearAdd (and the contrib
QLinearGlobalAveragePool / QLinearConcat) against the golden model. Tiny graphs are built with
onnx.helper and run on the CPU provider.

uint8 activations with int8 weights stay in 0..127: MLAS's AVX2 (non-VNNI) u8s8 kernel multiplies
pairs with ``vpmaddubsw``, which saturates in int16 above that. uint8 weights use the u8u8 kernel
(no saturation), so those tests use the full 0..255 range.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numerics_helpers import HYP, assert_equal, count, draw_scales, f32, random_scales, rng_from
from onnx import TensorProto, helper, numpy_helper

from zynqnn.numerics import make_requant, ops, quant
from zynqnn.numerics.ops import conv2d_acc, linear_acc

NP2ONNX = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.int32: TensorProto.INT32,
           np.float32: TensorProto.FLOAT}


def _init(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value).astype(dtype), name)


def run_graph(nodes, inputs, outputs, inits, opset=21, ms=False):
    """inputs: list of (name, array); outputs: list of (name, dtype)."""
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, NP2ONNX[a.dtype.type], list(a.shape)) for n, a in inputs],
        [helper.make_tensor_value_info(n, NP2ONNX[d], None) for n, d in outputs], inits)
    ops_ = [helper.make_opsetid("", opset)]
    if ms:
        ops_.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(g, opset_imports=ops_)
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(inputs))


def ort_qlinearconv(qx, s_x, zp_x, qw, s_w, zp_w, s_y, zp_y, bias, stride, pads, dilation, groups,
                    wdtype, ydtype=np.uint8):
    """QLinearConv; activations (x and y) have dtype ``ydtype``."""
    inits = [_init("xs", s_x, f32), _init("xz", zp_x, ydtype), _init("w", qw, wdtype),
             _init("ws", s_w, f32), _init("wz", zp_w, wdtype), _init("ys", s_y, f32),
             _init("yz", zp_y, ydtype)]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias is not None:
        inits.append(_init("b", bias, np.int32))
        names.append("b")
    node = helper.make_node("QLinearConv", names, ["y"], strides=list(stride), pads=list(pads),
                            dilations=list(dilation), group=groups,
                            kernel_shape=list(qw.shape[2:]))
    return run_graph([node], [("x", qx.astype(ydtype))], [("y", ydtype)], inits)[0]


@HYP
@given(data=st.data())
def test_qlinearconv_random(data, record_property):
    rng = rng_from(data)
    wdtype = data.draw(st.sampled_from([np.int8, np.uint8]), label="wdtype")
    kind = data.draw(st.sampled_from(["dense", "grouped", "depthwise"]), label="kind")
    per_channel = data.draw(st.booleans(), label="per_channel")
    dyadic = data.draw(st.booleans(), label="dyadic")
    if kind == "dense":
        groups, cg, kg = 1, data.draw(st.integers(1, 8)), data.draw(st.integers(1, 12))
    elif kind == "grouped":
        groups, cg, kg = data.draw(st.sampled_from([2, 3])), data.draw(st.integers(2, 5)), 3
    else:
        groups, cg, kg = data.draw(st.integers(1, 16)), 1, data.draw(st.sampled_from([1, 2]))
    k, c = groups * kg, groups * cg
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    dil = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))  # t, l, b, r
    h = data.draw(st.integers(dil[0] * (kh - 1) + 1, 12))
    w = data.draw(st.integers(dil[1] * (kw - 1) + 1, 12))
    xmax = 128 if wdtype == np.int8 else 256
    qx = rng.integers(0, xmax, (1, c, h, w))
    if wdtype == np.int8:
        qw = rng.integers(-128, 128, (k, cg, kh, kw))
        zp_w = np.zeros(k if per_channel else (), np.int64)
    else:
        qw = rng.integers(0, 256, (k, cg, kh, kw))
        zp_w = np.full(k if per_channel else (), int(rng.integers(0, 256)), np.int64)
    s_x = float(random_scales(rng, 1, dyadic, 2e-3, 0.05)[0])
    s_y = float(random_scales(rng, 1, dyadic, 5e-3, 0.3)[0])
    s_w = random_scales(rng, k if per_channel else 1, dyadic, 5e-4, 0.02)
    s_w = s_w if per_channel else s_w[0]
    zp_x, zp_y = int(rng.integers(0, xmax)), int(rng.integers(0, 256))
    bias = rng.integers(-20000, 20000, k) if data.draw(st.booleans(), label="bias") else None
    got = ort_qlinearconv(qx, s_x, zp_x, qw, s_w, zp_w, s_y, zp_y, bias, stride, pads, dil, groups,
                          wdtype).astype(np.int64)
    acc = conv2d_acc(qx, qw, zp_x, zp_w, stride, (pads[0], pads[2], pads[1], pads[3]), dil,
                     groups)
    rq = make_requant("onnxruntime", s_x, s_w, s_y, zp_y, bias)
    mine = rq.apply(acc)
    assert_equal(mine, got, f"QLinearConv {kind} {np.dtype(wdtype).name}")
    assert_equal(rq.apply_hw(acc), mine, "onnxruntime hw form")
    count(record_property, "onnxruntime", "QLinearConv (hypothesis)", mine.size, 0)


def test_qlinearconv_volume(record_property):
    rng = np.random.default_rng(99)
    total = 0
    for per_channel, wdtype, c, k, hh, ks, stride, groups, ydtype in [
        (True, np.int8, 16, 32, 40, 3, 1, 1, np.uint8),
        (False, np.uint8, 3, 32, 64, 3, 2, 1, np.uint8),
        (True, np.int8, 32, 32, 32, 3, 1, 32, np.uint8),
        (False, np.int8, 24, 16, 32, 1, 1, 1, np.int8),
    ]:
        xmax = 128 if wdtype == np.int8 else 256
        # int8 activations in -64..-1: whichever operand an s8s8 kernel without VNNI offsets by
        # 128 for vpmaddubsw, pair sums stay inside int16 (2*255*64 and 2*127*128)
        xlo, xspan = (-64, 64) if ydtype == np.int8 else (0, xmax)
        qx = rng.integers(xlo, xlo + xspan, (2, c, hh, hh))
        lo = -128 if wdtype == np.int8 else 0
        qw = rng.integers(lo, lo + 256, (k, c // groups, ks, ks))
        zp_w = (np.zeros(k, np.int64) if per_channel else 0) if wdtype == np.int8 else 131
        s_w = random_scales(rng, k if per_channel else 1, False, 1e-3, 0.01)
        s_w = s_w if per_channel else s_w[0]
        s_x, s_y = float(f32(rng.uniform(0.005, 0.03))), float(f32(rng.uniform(0.02, 0.2)))
        zp_x = int(rng.integers(xlo, xlo + xspan))
        zp_y = int(rng.integers(0, 256)) if ydtype == np.uint8 else int(rng.integers(-128, 128))
        bias = rng.integers(-30000, 30000, k)
        pad = ks // 2
        got = ort_qlinearconv(qx, s_x, zp_x, qw, s_w, zp_w, s_y, zp_y, bias, (stride, stride),
                              (pad,) * 4, (1, 1), groups, wdtype, ydtype).astype(np.int64)
        acc = conv2d_acc(qx, qw, zp_x, zp_w, stride, pad, 1, groups)
        qmin, qmax = quant.qrange(np.dtype(ydtype).name)
        rq = make_requant("onnxruntime", s_x, s_w, s_y, zp_y, bias, qmin=qmin, qmax=qmax)
        mine = rq.apply(acc)
        assert_equal(mine, got, "QLinearConv volume")
        assert_equal(rq.apply_hw(acc), mine, "QLinearConv volume hw")
        total += mine.size
    assert total >= 100_000
    count(record_property, "onnxruntime", "QLinearConv (volume)", total, 0)


def ort_qlinearmatmul(a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y, bdtype):
    inits = [_init("as", s_a, f32), _init("az", zp_a, np.uint8), _init("b", b, bdtype),
             _init("bs", s_b, f32), _init("bz", zp_b, bdtype), _init("ys", s_y, f32),
             _init("yz", zp_y, np.uint8)]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    return run_graph([node], [("a", a.astype(np.uint8))], [("y", np.uint8)], inits)[0]


@pytest.mark.parametrize("bdtype", [np.int8, np.uint8])
@HYP
@given(data=st.data())
def test_qlinearmatmul(bdtype, data, record_property):
    rng = rng_from(data)
    m, kk, n = (data.draw(st.integers(1, 64)) for _ in range(3))
    per_col = data.draw(st.booleans(), label="per_column")
    dyadic = data.draw(st.booleans(), label="dyadic")
    xmax = 128 if bdtype == np.int8 else 256
    a = rng.integers(0, xmax, (m, kk))
    lo = -128 if bdtype == np.int8 else 0
    b = rng.integers(lo, lo + 256, (kk, n))
    zp_b = 0 if bdtype == np.int8 else int(rng.integers(0, 256))
    s_a = float(random_scales(rng, 1, dyadic, 2e-3, 0.05)[0])
    s_y = float(random_scales(rng, 1, dyadic, 5e-3, 0.3)[0])
    s_b = random_scales(rng, n if per_col else 1, dyadic, 5e-4, 0.02)
    s_b = s_b if per_col else s_b[0]
    zp_a, zp_y = int(rng.integers(0, xmax)), int(rng.integers(0, 256))
    zb = np.full(n, zp_b) if per_col else zp_b
    got = ort_qlinearmatmul(a, s_a, zp_a, b, s_b, zb, s_y, zp_y, bdtype).astype(np.int64)
    acc = linear_acc(a, b.T, zp_a, zp_b)
    rq = make_requant("onnxruntime", s_a, s_b, s_y, zp_y)
    mine = rq.apply(acc, axis=-1)
    assert_equal(mine, got, "QLinearMatMul")
    count(record_property, "onnxruntime", "QLinearMatMul (hypothesis)", mine.size, 0)


def test_qlinearmatmul_volume(record_property):
    rng = np.random.default_rng(5)
    total = 0
    for per_col in (False, True):
        a = rng.integers(0, 128, (3000, 40))
        b = rng.integers(-128, 128, (40, 24))
        s_b = random_scales(rng, 24 if per_col else 1, False, 1e-3, 0.01)
        s_b = s_b if per_col else s_b[0]
        zb = np.zeros(24, np.int64) if per_col else 0
        got = ort_qlinearmatmul(a, 0.0173, 9, b, s_b, zb, 0.093, 120, np.int8).astype(np.int64)
        rq = make_requant("onnxruntime", 0.0173, s_b, 0.093, 120)
        mine = rq.apply(linear_acc(a, b.T, 9), axis=-1)
        assert_equal(mine, got, "QLinearMatMul volume")
        total += mine.size
    count(record_property, "onnxruntime", "QLinearMatMul (volume)", total, 0)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantizelinear(dtype, record_property):
    rng = np.random.default_rng(17)
    total = 0
    for _ in range(6):
        s = float(f32(rng.uniform(1e-3, 0.1)))
        lo, hi = quant.qrange(dtype)
        zp = int(rng.integers(lo, hi + 1))
        k = rng.integers(-300, 300, 20000)
        x = np.concatenate([rng.normal(0, 100 * s, 20000), ((k + 0.5) * f32(s)).astype(f32),
                            np.nextafter(((k + 0.5) * s).astype(f32), f32(0))]).astype(f32)
        npdt = np.uint8 if dtype == "uint8" else np.int8
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
        got = run_graph([node], [("x", x)], [("y", npdt)],
                        [_init("s", s, f32), _init("z", zp, npdt)])[0].astype(np.int64)
        mine = quant.quantize_onnxruntime(x, s, zp, dtype)
        assert_equal(mine, got, f"QuantizeLinear {dtype}")
        total += x.size
        node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
        deq = run_graph([node], [("q", got.astype(npdt))], [("y", np.float32)],
                        [_init("s", s, f32), _init("z", zp, npdt)])[0]
        assert np.array_equal(quant.dequantize_onnxruntime(got, s, zp), deq)
    count(record_property, "onnxruntime", f"QuantizeLinear {dtype}", total, 0)


def ort_qlinearadd(a, s_a, zp_a, b, s_b, zp_b, s_c, zp_c):
    inits = [_init("as", s_a, f32), _init("az", zp_a, np.uint8), _init("bs", s_b, f32),
             _init("bz", zp_b, np.uint8), _init("cs", s_c, f32), _init("cz", zp_c, np.uint8)]
    node = helper.make_node("QLinearAdd", ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["c"],
                            domain="com.microsoft")
    return run_graph([node], [("a", a.astype(np.uint8)), ("b", b.astype(np.uint8))],
                     [("c", np.uint8)], inits, ms=True)[0].astype(np.int64)


@HYP
@given(data=st.data())
def test_qlinearadd(data, record_property):
    rng = rng_from(data)
    n = data.draw(st.integers(1, 3000), label="n")
    s_a, s_b, s_c = draw_scales(data, 3, 2e-3, 0.1)
    zp_a, zp_b, zp_c = (int(v) for v in rng.integers(0, 256, 3))
    a, b = rng.integers(0, 256, n), rng.integers(0, 256, n)
    got = ort_qlinearadd(a, s_a, zp_a, b, s_b, zp_b, s_c, zp_c)
    mine = ops.add_onnxruntime(a, s_a, zp_a, b, s_b, zp_b, s_c, zp_c)
    assert_equal(mine, got, "QLinearAdd")
    assert_equal(ops.add_onnxruntime(a, s_a, zp_a, b, s_b, zp_b, s_c, zp_c, hw=True), mine,
                 "QLinearAdd hw form")
    count(record_property, "onnxruntime", "QLinearAdd (hypothesis)", n, 0)


def test_qlinearadd_volume(record_property):
    rng = np.random.default_rng(3)
    total = 0
    for _ in range(5):
        n = 40000
        s_a, s_b, s_c = (float(f32(v)) for v in rng.uniform(0.005, 0.1, 3))
        zp_a, zp_b, zp_c = (int(v) for v in rng.integers(0, 256, 3))
        a, b = rng.integers(0, 256, n), rng.integers(0, 256, n)
        got = ort_qlinearadd(a, s_a, zp_a, b, s_b, zp_b, s_c, zp_c)
        assert_equal(ops.add_onnxruntime(a, s_a, zp_a, b, s_b, zp_b, s_c, zp_c), got,
                     "QLinearAdd volume")
        total += n
    count(record_property, "onnxruntime", "QLinearAdd (volume)", total, 0)


@HYP
@given(data=st.data())
def test_qlinear_global_average_pool(data, record_property):
    rng = rng_from(data)
    c = data.draw(st.integers(1, 40), label="C")
    h, w = data.draw(st.integers(1, 14)), data.draw(st.integers(1, 14))
    s_x, s_y = draw_scales(data, 2, 1e-3, 0.1)
    zp_x, zp_y = (int(v) for v in rng.integers(0, 256, 2))
    x = rng.integers(0, 256, (2, c, h, w))
    inits = [_init("xs", s_x, f32), _init("xz", zp_x, np.uint8), _init("ys", s_y, f32),
             _init("yz", zp_y, np.uint8)]
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain="com.microsoft", channels_last=0)
    got = run_graph([node], [("x", x.astype(np.uint8))], [("y", np.uint8)], inits,
                    ms=True)[0].astype(np.int64)
    mine = ops.global_avg_pool_onnxruntime(x, s_x, zp_x, s_y, zp_y)
    assert_equal(mine, got, "QLinearGlobalAveragePool")
    count(record_property, "onnxruntime", "QLinearGlobalAveragePool", mine.size, 0)


@HYP
@given(data=st.data())
def test_qlinear_average_pool(data, record_property):
    rng = rng_from(data)
    c = data.draw(st.integers(1, 6), label="C")
    k = data.draw(st.integers(1, 4), label="k")
    s = data.draw(st.integers(1, 3), label="stride")
    pads = tuple(data.draw(st.integers(0, k - 1)) for _ in range(4))  # t, l, b, r
    h = data.draw(st.integers(k, 12), label="H")
    cip = data.draw(st.booleans(), label="count_include_pad")
    s_x, s_y = draw_scales(data, 2, 1e-3, 0.1)
    zp_x, zp_y = (int(v) for v in rng.integers(0, 256, 2))
    x = rng.integers(0, 256, (2, c, h, h + 1))
    inits = [_init("xs", s_x, f32), _init("xz", zp_x, np.uint8), _init("ys", s_y, f32),
             _init("yz", zp_y, np.uint8)]
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain="com.microsoft", kernel_shape=[k, k], strides=[s, s],
                            pads=list(pads), count_include_pad=int(cip))
    got = run_graph([node], [("x", x.astype(np.uint8))], [("y", np.uint8)], inits,
                    ms=True)[0].astype(np.int64)
    mine = ops.avg_pool2d_onnxruntime(x, k, s_x, zp_x, s_y, zp_y, s,
                                      (pads[0], pads[2], pads[1], pads[3]), cip)
    assert_equal(mine, got, "QLinearAveragePool")
    count(record_property, "onnxruntime", "QLinearAveragePool", mine.size, 0)


@HYP
@given(data=st.data())
def test_qlinear_concat(data, record_property):
    rng = rng_from(data)
    scales = draw_scales(data, 3, 1e-3, 0.1)
    zps = [int(v) for v in rng.integers(0, 256, 3)]
    if data.draw(st.booleans(), label="first input shares output qparams"):
        scales[0], zps[0] = scales[2], zps[2]
    xs = [rng.integers(0, 256, (2, data.draw(st.integers(1, 6)), 3, 4)) for _ in range(2)]
    inits = [_init("ys", scales[2], f32), _init("yz", zps[2], np.uint8)]
    names = ["ys", "yz"]
    inputs = []
    for i, x in enumerate(xs):
        inits += [_init(f"s{i}", scales[i], f32), _init(f"z{i}", zps[i], np.uint8)]
        names += [f"x{i}", f"s{i}", f"z{i}"]
        inputs.append((f"x{i}", x.astype(np.uint8)))
    node = helper.make_node("QLinearConcat", names, ["y"], domain="com.microsoft", axis=1)
    got = run_graph([node], inputs, [("y", np.uint8)], inits, ms=True)[0].astype(np.int64)
    mine = ops.concat_onnxruntime(xs, scales[:2], zps[:2], scales[2], zps[2])
    assert_equal(mine, got, "QLinearConcat")
    count(record_property, "onnxruntime", "QLinearConcat", mine.size, 0)


def test_onnx_checker_accepts_graphs():
    """The helper graphs are valid ONNX (guards against silently testing a malformed model)."""
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [3])],
                          [_init("s", 0.1, f32), _init("z", 3, np.uint8)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m)


def test_qlinearmatmul_overflow_saturates(record_property):
    """y = acc * 1000 beyond 2^31: MLAS clamps in float (255); see test_torch_conv for torch."""
    a = np.array([[127] * 140, [100] * 140, [60] * 140])
    b = np.tile(np.array([[127, -127]]), (140, 1))
    got = ort_qlinearmatmul(a, 1.0, 0, b, 1.0, 0, 1e-3, 10, np.int8).astype(np.int64)
    rq = make_requant("onnxruntime", 1.0, 1.0, 1e-3, 10)
    acc = linear_acc(a, b.T)
    assert_equal(rq.apply(acc, axis=-1), got, "ORT overflow")
    assert_equal(rq.apply_hw(acc, axis=-1), got, "ORT overflow hw")
    assert got[:, 0].tolist() == [255, 255, 255]
