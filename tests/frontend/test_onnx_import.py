"""from_onnx: models quantized by ONNX Runtime (QDQ per-channel/per-tensor, QOperator) and a
Brevitas-style QCDQ graph, compared with ONNX Runtime value for value.

ONNX Runtime quantizes here with ``reduce_range=True`` (7-bit weights): MLAS's u8s8 kernels on
AVX2 CPUs without VNNI multiply in saturating int16 pairs, which 7-bit weights cannot overflow,
so the comparison holds on any x86 CPU (tests/numerics keeps activations in 0..127 instead).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from frontend_helpers import SIZES, count, export_onnx, inputs, ort_quantize, ort_session
from onnx import TensorProto, helper, numpy_helper

import zynqnn
from zynqnn import zoo

_CACHE: dict = {}


def _quantized(tmp_path_factory, name: str, fmt: str = "qdq", per_channel: bool = True):
    """Path of the zoo model ``name`` exported to ONNX and quantized by ONNX Runtime."""
    key = (name, fmt, per_channel)
    if key in _CACHE:
        return _CACHE[key]
    if name not in _CACHE:  # one float export per model and worker
        d = tmp_path_factory.mktemp(f"onnx-{name}")
        model = zoo.get(name, pretrained=name == "digits_cnn")
        x = zoo.example_input(name, SIZES[name], batch=2)
        _CACHE[name] = (d, export_onnx(model, x, d / f"{name}.onnx"), x)
    d, fpath, x = _CACHE[name]
    calib = [x.numpy()] + [t.numpy() for t in inputs(name)]
    out = ort_quantize(fpath, calib, d / f"{name}-{fmt}-{'pc' if per_channel else 'pt'}.onnx",
                       fmt=fmt, per_channel=per_channel, reduce_range=True)
    _CACHE[key] = (out, fpath)
    return _CACHE[key]


def _compare_with_ort(path, g, name, record_property, label):
    sess = ort_session(path)
    n = bad = 0
    for xr in inputs(name, 50 if name == "digits_cnn" else 3):  # digits: 100 held-out images
        x = xr.numpy()
        ref = sess.run(None, {"x": x})
        out = g.run(x)
        out = list(out) if isinstance(out, tuple) else [out]
        assert len(out) == len(ref)
        for r, o in zip(ref, out, strict=True):
            assert r.shape == o.shape and o.dtype == np.float32
            n += o.size
            bad += int(np.count_nonzero(r != o))
    count(record_property, label, "run(x) vs ONNX Runtime, random inputs", n, bad)
    assert bad == 0


ORT_OPS = {
    "resnet18": {"conv2d": 20, "add": 8, "max_pool2d": 1, "global_avg_pool": 1, "linear": 1},
    "mobilenet_v2": {"conv2d": 52, "add": 10, "global_avg_pool": 1, "linear": 1},
    "yolov3_tiny": {"conv2d": 13, "leaky_relu": 11, "max_pool2d": 6, "pad": 1,
                    "upsample_nearest": 1, "concat": 1},
    "digits_cnn": {"conv2d": 3, "max_pool2d": 1, "flatten": 1, "linear": 1},
}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "yolov3_tiny"])
def test_qdq_per_channel(name, tmp_path_factory, record_property):
    path, _ = _quantized(tmp_path_factory, name)
    g = zynqnn.from_onnx(path)
    assert g.flavours() == {"onnxruntime"}
    for op, n in ORT_OPS[name].items():
        assert g.ops().get(op) == n, (op, g.ops())
    w = next(g.tensors[n.inputs[1]] for n in g.nodes if n.op == "conv2d")
    assert w.per_channel and w.axis == 0
    _compare_with_ort(path, g, name, record_property, f"{name} onnxruntime QDQ per-channel")


def test_qdq_per_tensor(tmp_path_factory, record_property, digits_model):
    path, _ = _quantized(tmp_path_factory, "digits_cnn", per_channel=False)
    g = zynqnn.from_onnx(path)
    assert g.ops()["conv2d"] == 3 and g.ops()["linear"] == 1
    assert not any(g.tensors[n.inputs[1]].per_channel for n in g.nodes
                   if n.op in ("conv2d", "linear"))
    _compare_with_ort(path, g, "digits_cnn", record_property,
                      "digits_cnn onnxruntime QDQ per-tensor")


@pytest.mark.parametrize("name", ["digits_cnn", "yolov3_tiny"])
def test_qoperator(name, tmp_path_factory, record_property, digits_model):
    path, _ = _quantized(tmp_path_factory, name, fmt="qop")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QLinearConv" in ops
    g = zynqnn.from_onnx(path)
    for op, n in ORT_OPS[name].items():
        assert g.ops().get(op) == n, (op, g.ops())
    _compare_with_ort(path, g, name, record_property, f"{name} onnxruntime QOperator")


def _qcdq_model() -> onnx.ModelProto:
    """Brevitas-style QCDQ: int8 activations narrowed to 4 bits by a Clip between Q and DQ."""
    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, size=(8, 3, 3, 3)).astype(np.int8)  # 4-bit weights
    ws = (rng.uniform(0.01, 0.05, size=8)).astype(np.float32)
    xs = np.float32(0.25)
    b = rng.integers(-50, 50, size=8).astype(np.int32)
    inits = [
        numpy_helper.from_array(np.array(xs, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(np.array(-8, np.int8), "lo"),
        numpy_helper.from_array(np.array(7, np.int8), "hi"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(ws, "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array((xs * ws).astype(np.float32), "bs"),
        numpy_helper.from_array(np.zeros(8, np.int32), "bz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
        numpy_helper.from_array(np.array(3, np.int8), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant_in"),
        helper.make_node("Clip", ["xq", "lo", "hi"], ["xc"], name="clip_in"),
        helper.make_node("DequantizeLinear", ["xc", "xs", "xz"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dq_w", axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], name="dq_b", axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"], name="quant_out"),
        helper.make_node("Clip", ["cq", "lo", "hi"], ["cc"], name="clip_out"),
        helper.make_node("DequantizeLinear", ["cc", "ys", "yz"], ["y"], name="dq_out"),
    ]
    graph = helper.make_graph(nodes, "qcdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [2, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_qcdq_brevitas_style(tmp_path, record_property):
    m = _qcdq_model()
    path = tmp_path / "qcdq.onnx"
    onnx.save(m, str(path))
    g = zynqnn.from_onnx(path)
    assert g.ops() == {"quantize": 1, "clamp": 2, "conv2d": 1, "dequantize": 1}
    sess = ort_session(path)
    n = bad = 0
    for s in range(4):
        x = np.random.default_rng(s).normal(0, 1.5, size=(2, 3, 8, 8)).astype(np.float32)
        ref = sess.run(None, {"x": x})[0]
        out = g.run(x)
        n += out.size
        bad += int(np.count_nonzero(ref != out))
    count(record_property, "QCDQ conv (4-bit clip)", "run(x) vs ONNX Runtime", n, bad)
    assert bad == 0


def test_verify_option_and_dynamic_batch(tmp_path_factory, digits_model):
    """verify= compares with ORT at import; a dynamic batch needs input_shapes."""
    path, _ = _quantized(tmp_path_factory, "digits_cnn")
    x = inputs("digits_cnn", 1)[0].numpy()
    g = zynqnn.from_onnx(path, verify=x)
    assert g.meta["verified"]["mismatched"] == 0
    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(zynqnn.FrontendError, match="dynamic shape.*input_shapes"):
        zynqnn.from_onnx(m)
    g = zynqnn.from_onnx(m, input_shapes={"x": (1, 1, 8, 8)})
    assert g.tensors[g.inputs[0]].shape == (1, 1, 8, 8)
    assert np.array_equal(g.run(x), zynqnn.from_onnx(path).run(x))
