"""The IR: construction, validation messages, execution interfaces, graph files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import zynqnn
from zynqnn.ir import Graph, GraphFileError, IRError, Node, Tensor, load


def _tiny(flavour: str = "torch-fbgemm") -> Graph:
    """quantize -> conv(relu) -> maxpool -> flatten -> linear -> dequantize."""
    rng = np.random.default_rng(0)
    g = Graph("tiny")
    g.add_tensor(Tensor("x", (1, 2, 6, 6), "float32"))
    g.add_tensor(Tensor("xq", (1, 2, 6, 6), "uint8", 0.02, 10))
    w = rng.integers(-127, 128, size=(4, 2, 3, 3))
    g.add_tensor(Tensor("w", w.shape, "int8", np.array([0.01, 0.02, 0.015, 0.03]),
                        np.zeros(4, np.int64), axis=0, layout="any", data=w))
    g.add_tensor(Tensor("b", (4,), "float32", layout="any",
                        data=rng.normal(size=4).astype(np.float32)))
    g.add_tensor(Tensor("c", (1, 4, 6, 6), "uint8", 0.05, 3, layout="nhwc"))
    g.add_tensor(Tensor("p", (1, 4, 3, 3), "uint8", 0.05, 3, layout="nhwc"))
    g.add_tensor(Tensor("f", (1, 36), "uint8", 0.05, 3, layout="nc"))
    w2 = rng.integers(-127, 128, size=(5, 36))
    g.add_tensor(Tensor("w2", w2.shape, "int8", 0.01, 0, layout="any", data=w2))
    g.add_tensor(Tensor("y", (1, 5), "uint8", 0.1, 128, layout="nc"))
    g.add_tensor(Tensor("out", (1, 5), "float32", layout="nc"))
    g.add_node(Node("q", "quantize", ["x"], ["xq"], flavour))
    g.add_node(Node("conv", "conv2d", ["xq", "w", "b"], ["c"], flavour,
                    {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
                     "requant": {"scheme": flavour}, "activation": "relu", "clamp": None}))
    g.add_node(Node("pool", "max_pool2d", ["c"], ["p"], None,
                    {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0]}))
    g.add_node(Node("flat", "flatten", ["p"], ["f"], None, {"start_dim": 1}))
    g.add_node(Node("fc", "linear", ["f", "w2"], ["y"], flavour,
                    {"requant": {"scheme": flavour}, "activation": "none", "clamp": None}))
    g.add_node(Node("dq", "dequantize", ["y"], ["out"], flavour))
    g.inputs, g.outputs = ["x"], ["out"]
    return g


def test_build_validate_run(tmp_path):
    g = _tiny().validate()
    x = np.random.default_rng(1).normal(size=(3, 2, 6, 6)).astype(np.float32)
    y = g.run(x)  # another batch size than the graph's is accepted
    assert y.shape == (3, 5) and y.dtype == np.float32
    codes = g.run_int(g.quantize_input(x))
    assert codes.dtype == np.int64 and codes.min() >= 0 and codes.max() <= 255
    assert np.array_equal(g.run(x, hw=True), y)
    env = g.run_all(x)
    assert set(env) >= {"xq", "c", "p", "f", "y", "out"}
    assert env["c"].min() >= 3  # fused ReLU clamps at the zero point
    assert "conv2d" in g.summary() and g.ops()["linear"] == 1
    assert g.producer("c").name == "conv" and [n.name for n in g.consumers("c")] == ["pool"]
    g.save(tmp_path / "t.zqg")
    g2 = load(tmp_path / "t.zqg")
    assert np.array_equal(g2.run(x), y)
    assert g2.tensors["w"].per_channel and g2.tensors["c"].layout == "nhwc"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda g: g.node("conv").attrs.update(groups=3), "node 'conv' (conv2d): input has 2 "),
    (lambda g: setattr(g.node("conv"), "op", "conv3d"), "node 'conv' (conv3d): unknown op"),
    (lambda g: setattr(g.node("pool"), "flavour", "tensorflow"), "flavour 'tensorflow'"),
    (lambda g: g.node("conv").attrs.update(requant={"scheme": "nope"}), "'requant'"),
    (lambda g: setattr(g.tensors["p"], "scale", 0.07), "node 'pool' (max_pool2d): output 'p' "
                                                        "must keep the input's qparams"),
    (lambda g: setattr(g.tensors["c"], "shape", (1, 4, 5, 6)), "output 'c' has shape"),
    (lambda g: setattr(g.tensors["xq"], "scale", -1.0), "tensor 'xq': scale"),
    (lambda g: setattr(g.tensors["xq"], "zero_point", 300), "tensor 'xq': zero point"),
    (lambda g: setattr(g.node("fc"), "inputs", ["p", "w2"]), "node 'fc' (linear): input 'p' "
                                                             "must be 2-D"),
    (lambda g: setattr(g.node("q"), "flavour", "torch-qnnpack"), "mixes PyTorch engines"),
    (lambda g: setattr(g, "outputs", ["nothing"]), "graph output 'nothing'"),
])
def test_validation_names_node_and_reason(edit, message):
    g = _tiny()
    edit(g)
    with pytest.raises(IRError, match=message.replace("(", r"\(").replace(")", r"\)")):
        g.validate()


def test_tensor_of_dynamic_or_non_4d_input():
    g = _tiny()
    g.tensors["x"].shape = (1, 72)
    with pytest.raises(IRError, match="graph input 'x' must be 4-D"):
        g.validate()
    g = _tiny()
    g.tensors["x"].shape = (1, 0, 6, 6)
    with pytest.raises(IRError, match="static and positive"):
        g.validate()


def test_run_input_checks():
    g = _tiny()
    with pytest.raises(IRError, match=r"input 'x' must have shape \(N, 2, 6, 6\)"):
        g.run(np.zeros((1, 3, 6, 6), np.float32))
    with pytest.raises(IRError, match="must be float32"):
        g.run(np.zeros((1, 2, 6, 6), np.int64))
    with pytest.raises(IRError, match="codes outside 0..255"):
        g.run_int(np.full((1, 2, 6, 6), 300))


def test_graph_file_errors(tmp_path):
    g = _tiny()
    good = tmp_path / "g.zqg"
    g.save(good)
    raw = good.read_bytes()
    # truncated
    (tmp_path / "trunc.zqg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GraphFileError, match="trunc.zqg: corrupt or truncated"):
        load(tmp_path / "trunc.zqg")
    # not a zip at all
    (tmp_path / "junk.zqg").write_bytes(b"hello, not a graph")
    with pytest.raises(GraphFileError, match="junk.zqg: corrupt or truncated"):
        load(tmp_path / "junk.zqg")
    # an array altered inside a valid zip: the checksum catches it
    bad = tmp_path / "bad.zqg"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.startswith("arrays/") and len(data) > 200:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            zout.writestr(info.filename, data)
    with pytest.raises(GraphFileError, match="checksum"):
        load(bad)
    # a newer format version
    newer = tmp_path / "newer.zqg"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(newer, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "graph.json":
                data = data.replace(b'"version": 1', b'"version": 99')
            zout.writestr(info.filename, data)
    with pytest.raises(GraphFileError, match="version 99 is not supported"):
        load(newer)
    with pytest.raises(GraphFileError, match="no such file"):
        load(tmp_path / "missing.zqg")


def test_lazy_top_level_api():
    for name in ("from_torch", "from_onnx", "quantize", "qat_finetune", "layer_errors",
                 "load_graph", "Graph", "FrontendError"):
        assert callable(getattr(zynqnn, name)) or isinstance(getattr(zynqnn, name), type)
    assert zynqnn.__version__
    with pytest.raises(AttributeError):
        zynqnn.no_such_thing  # noqa: B018
