"""IR graph -> hardware layers (zynqnn.compiler.lower): the lowered network computes what the
graph computes, code for code.

Every check compares ``run_reference(net, codes)`` (the golden ops on the hardware layers) with
``graph.run_int(codes)`` (the IR's golden model) with ``array_equal``, and runs a few samples of
the compiled command stream on the machine model (``Program.run_golden``) too. Cases: the digits
CNN quantized by torch.ao FX (fbgemm, qnnpack); small random models (conv, max pool, upsample,
concat, leaky ReLU, global pooling, linear) quantized by torch.ao FX and by zynqnn.quantize
(tflite, pow2, fixed16 on the 16-bit build); hand-built graphs for each rule of the lowering;
and every refusal (CompileError naming the node, its op and why).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from zynqnn.compiler import CompileError, compile_network, run_reference
from zynqnn.compiler.layers import HwConv, HwGlobalSumPool
from zynqnn.compiler.lower import BoundaryInfo, lower_graph
from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.ir import Graph, Node, Tensor

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

TOTALS: dict = {}


def _record(case, n, bad):
    t = TOTALS.setdefault(case, [0, 0])
    t[0] += n
    t[1] += bad


def check(g, cfg="pynq_z2", samples=4, golden=1, seed=0, codes=None, ref=True):
    """Lower ``g``; compare run_reference (``ref``) and the compiled program on the machine
    model with ``graph.run_int`` on random full-range input codes. Returns (net, boundary)."""
    cfg = get_config(cfg)
    net, b = lower_graph(g, cfg)
    q = g.tensors[g.quant_inputs[0]]
    rng = np.random.default_rng(seed)
    if codes is None:
        codes = rng.integers(q.qmin, q.qmax + 1, size=(samples,) + tuple(q.shape[1:]))
    want = g.run_int(codes)
    codes = b.to_network(np.asarray(codes, dtype=np.int64))  # the network's input codes
    if ref:
        got = np.stack([run_reference(net, c, cfg.operand_bits).reshape(b.output_shape)
                        for c in codes])
        _record(g.name + " run_reference", got.size, int(np.sum(got != want)))
        assert got.shape == want.shape
        assert np.array_equal(got, want), np.argwhere(got != want)[:5]
    if golden:
        prog = compile_network(net, cfg)
        got = np.stack([prog.run_golden(c).reshape(b.output_shape) for c in codes[:golden]])
        _record(g.name + " compiled (machine)", got.size, int(np.sum(got != want[:golden])))
        assert np.array_equal(got, want[:golden])
    return net, b


def kinds(net):
    return [type(la).__name__ for la in net.layers]


# -------------------------------------------------------------------------------------------------
# a small builder of IR graphs


class Builder:
    """quantize -> ... -> dequantize graphs in one flavour with plausible scales."""

    def __init__(self, flavour="torch-fbgemm", shape=(4, 8, 8), seed=0, dtype=None, zp=None,
                 name="g"):
        self.fl = flavour
        self.rng = np.random.default_rng(seed)
        self.g = Graph(name)
        self.signed = flavour in ("tflite", "pow2", "fixed16")
        self.dtype = dtype or ("int16" if flavour == "fixed16" else
                               "int8" if self.signed else "uint8")
        self.pow2 = flavour in ("pow2", "fixed16")
        self.n = 0
        self.g.add_tensor(Tensor("x", (1, *shape), "float32"))
        zp = (0 if self.pow2 else -3 if self.signed else 5) if zp is None else zp
        x = self.act("xq", (1, *shape), 1 / 64 if self.pow2 else 0.02, zp)
        self.g.add_node(Node("quantize", "quantize", ["x"], [x], flavour))
        self.g.inputs = ["x"]
        self.x = x

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def scale(self, s):
        return 2.0 ** np.round(np.log2(s)) if self.pow2 else float(s)

    def act(self, name, shape, scale, zp, dtype=None, layout="nhwc"):
        self.g.add_tensor(Tensor(name, tuple(shape), dtype or self.dtype, self.scale(scale),
                                 0 if self.pow2 else zp, layout=layout if len(shape) == 4
                                 else "nc"))
        return name

    def t(self, name):
        return self.g.tensors[name]

    def node(self, op, inputs, shape=None, attrs=None, scale=None, zp=None, flavour="same",
             dtype=None):
        """A node whose output keeps the first input's qparams unless given."""
        from zynqnn.ir import infer_shape

        x = self.t(inputs[0])
        attrs = dict(attrs or {})
        if shape is None:
            shape = infer_shape(op, attrs, [self.t(i) for i in inputs])
        out = self.act(self.name(op), shape, x.scale if scale is None else scale,
                       x.zero_point if zp is None else zp, dtype or x.dtype)
        self.g.add_node(Node(self.name("n_" + op), op, list(inputs), [out],
                             self.fl if flavour == "same" else flavour, attrs))
        return out

    def _weights(self, k_out, cin, kh, kw):
        w = self.rng.integers(-100, 101, size=(k_out, cin, kh, kw))
        if self.pow2:
            return w, 2.0 ** -8
        return w, self.rng.uniform(0.002, 0.006, size=k_out)

    def conv(self, x, cout, k=3, stride=1, pad=1, act="none", clamp=None, groups=1,
             dilation=1, zp_out=None, bias=True, op="conv2d"):
        xt = self.t(x)
        cin = xt.shape[1]
        kh, kw = (k, k) if np.ndim(k) == 0 else k
        if op == "linear":
            w, sw = self._weights(cout, cin, 1, 1)
            w = w.reshape(cout, cin)
            kh = kw = 1
        else:
            w, sw = self._weights(cout, cin // groups, kh, kw)
        wn = self.name("w")
        self.g.add_tensor(Tensor(wn, w.shape, "int16" if self.fl == "fixed16" else "int8",
                                 sw, np.zeros(cout, np.int64) if np.ndim(sw) else 0,
                                 axis=0 if np.ndim(sw) else None, layout="any", data=w))
        ins = [x, wn]
        sacc = xt.scale * float(np.mean(sw))
        if bias:
            bn = self.name("b")
            if self.fl in ("torch-fbgemm", "torch-qnnpack"):
                self.g.add_tensor(Tensor(bn, (cout,), "float32", layout="any", data=(
                    self.rng.normal(size=cout) * sacc * 500).astype(np.float32)))
            else:
                self.g.add_tensor(Tensor(bn, (cout,), "int32", np.asarray(sacc), 0, layout="any",
                                         data=self.rng.integers(-3000, 3000, size=cout)))
            ins.append(bn)
        spread = np.sqrt(cin // groups * kh * kw) * 60 * 60 * sacc / 40
        if self.fl == "fixed16":
            spread *= 1 / 64
        qlo = -(1 << 15) if self.dtype == "int16" else -128 if self.signed else 0
        zp = (0 if self.pow2 else (-20 if self.signed else 100)) if zp_out is None else zp_out
        if act == "relu" and not self.pow2:
            zp = qlo
        if op == "linear":
            shape = (1, cout)
            attrs = {"requant": {"scheme": self.fl}, "activation": act, "clamp": clamp}
        else:
            pads = [pad] * 4 if np.ndim(pad) == 0 else list(pad)
            attrs = {"stride": [stride, stride] if np.ndim(stride) == 0 else list(stride),
                     "padding": pads, "dilation": [dilation, dilation], "groups": groups,
                     "requant": {"scheme": self.fl}, "activation": act, "clamp": clamp}
            from zynqnn.ir import infer_shape

            shape = infer_shape("conv2d", attrs, [xt, self.t(wn)])
        out = self.act(self.name(op), shape, spread, zp)
        self.g.add_node(Node(self.name("n_" + op), op, ins, [out], self.fl, attrs))
        return out

    def finish(self, y, dequant=True):
        if dequant:
            yt = self.t(y)
            self.g.add_tensor(Tensor("y", yt.shape, "float32", layout=yt.layout))
            self.g.add_node(Node("dequantize", "dequantize", [y], ["y"], self.fl))
            self.g.outputs = ["y"]
        else:
            self.g.outputs = [y]
        return self.g.validate()


FLAVOURS = ("torch-fbgemm", "torch-qnnpack", "onnxruntime", "tflite", "pow2")


# -------------------------------------------------------------------------------------------------
# the digits CNN (torch.ao FX, fbgemm and qnnpack)


def _cache_dir(tmp_path_factory):
    """One weight cache for all xdist workers of the run (their base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zynqnn-cache"


@pytest.fixture(scope="module")
def digits_graphs(tmp_path_factory):
    import zynqnn
    from zynqnn import zoo
    from zynqnn.zoo import digits
    from zynqnn.zoo.quant import quiet_torch_ao

    with digits.shared_cache(_cache_dir(tmp_path_factory)) as model:
        x_tr, _, x_te, _ = digits.load_data()
        graphs = {}
        for eng in ("fbgemm", "qnnpack"):
            with quiet_torch_ao():
                q = zoo.quantize_fx(model, x_tr[:1], eng, x_tr[:256])
                graphs[eng] = zynqnn.from_torch(q, x_te[:2], engine=eng)
        yield graphs, x_te.numpy()


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_digits(digits_graphs, engine):
    graphs, x = digits_graphs
    g = graphs[engine]
    g.name = f"digits-{engine}"
    codes = g.quantize_input(x[:200])
    net, b = check(g, codes=codes, golden=8)
    # conv1, conv2, max pool, conv3 and the linear layer as a 2x2 conv over the 32x2x2 map
    assert kinds(net) == ["HwConv", "HwConv", "HwMaxPool", "HwConv", "HwConv"]
    assert net.layers[-1].kernel == 2 and net.output.shape == (10, 1, 1)
    assert b.output_shape == (10,) and b.input_shape == (1, 8, 8)
    # the float boundary: quantize + lowered network + dequantize == graph.run
    want = g.run(x[:20])
    got = b.dequantize(np.stack([run_reference(net, c).reshape(10) for c in
                                 b.to_network(b.quantize(x[:20]))]))
    assert got.dtype == np.float32 and np.array_equal(got, want)
    b2 = BoundaryInfo.from_dict(b.to_dict())
    assert b2 == b


# -------------------------------------------------------------------------------------------------
# small random models through the real quantizers


def _model(c=16, leaky=False, head=True, seed=0):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, c, 3, padding=1)
            self.a1 = nn.LeakyReLU(0.125) if leaky else nn.ReLU()
            self.p = nn.MaxPool2d(2)
            self.c2 = nn.Conv2d(c, c, 3, padding=1)
            self.a2 = nn.ReLU()
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.c3 = nn.Conv2d(2 * c, 8, 1)
            self.a3 = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            a = self.a1(self.c1(x))
            b = self.a2(self.c2(self.p(a)))
            y = self.a3(self.c3(torch.cat([a, self.up(b)], 1)))
            return self.fc(torch.flatten(self.gap(y), 1)) if head else y

    torch.manual_seed(seed)
    return Net().eval()


@pytest.mark.parametrize("engine, leaky, head", [
    ("fbgemm", False, True), ("fbgemm", True, False), ("qnnpack", True, True),
    ("tflite", False, True), ("tflite", True, False), ("pow2", True, True),
    ("fixed16", True, True),
])
def test_random_models(engine, leaky, head):
    import torch

    import zynqnn
    from zynqnn import zoo
    from zynqnn.zoo.quant import quiet_torch_ao

    cfg = "pynq_z2_int16" if engine == "fixed16" else "pynq_z2"
    m = _model(24 if engine == "fixed16" else 16, leaky, head)
    x = torch.rand(12, 3, 16, 16)
    old = torch.backends.quantized.engine
    try:
        if engine in ("fbgemm", "qnnpack"):
            with quiet_torch_ao():
                q = zoo.quantize_fx(m, x[:1], engine, x)
                g = zynqnn.from_torch(q, x[:2], engine=engine)
        else:
            g = zynqnn.quantize(m, x, example_input=x[:1], scheme=engine)
    finally:
        torch.backends.quantized.engine = old
    g.name = f"random-{engine}{'-leaky' if leaky else ''}{'-head' if head else ''}"
    codes = g.quantize_input(x.numpy()[:3])
    # numerics' Requant.apply takes int32 accumulators; the 16-bit build's are wider, so the
    # fixed16 model is compared through the compiled program on the machine model only.
    net, _ = check(g, cfg, codes=codes, golden=2 if engine != "fixed16" else 3,
                   ref=engine != "fixed16")
    names = kinds(net)
    assert names.count("HwConcat") == 1 and names.count("HwUpsample2x") == 1
    assert ("HwGlobalSumPool" in names) == head
    if leaky and engine in ("pow2", "fixed16"):  # the slope is part of the requantization
        assert getattr(net.layers[0].requant, "leaky_mult", None) is not None
    elif leaky:
        assert net.layers[0].act is not None


# -------------------------------------------------------------------------------------------------
# hand-built graphs: one rule each


@pytest.mark.parametrize("fl", FLAVOURS)
def test_conv_pool_upsample_concat(fl):
    b = Builder(fl, (8, 8, 8), seed=1, name=f"cpuc-{fl}")
    a = b.conv(b.x, 16, act="relu")
    p = b.node("max_pool2d", [a], attrs={"kernel": [2, 2], "stride": [2, 2],
                                         "padding": [0, 0, 0, 0]})
    c = b.conv(p, 16, zp_out=b.t(a).zero_point)
    b.t(c).scale = b.t(a).scale
    u = b.node("upsample_nearest", [c], attrs={"scale": [2, 2]})
    cat = b.node("concat", [a, u], attrs={"axis": 1})
    y = b.conv(cat, 5, k=1, pad=0)
    net, _ = check(b.finish(y))
    assert kinds(net) == ["HwConv", "HwMaxPool", "HwConv", "HwUpsample2x", "HwConcat", "HwConv"]


@pytest.mark.parametrize("fl", ["torch-fbgemm", "tflite"])
def test_non_square_kernels_strides_and_clamp_attribute(fl):
    b = Builder(fl, (5, 9, 10), seed=2, name=f"shapes-{fl}")
    a = b.conv(b.x, 7, k=(1, 3), pad=[0, 0, 1, 1])
    a = b.conv(a, 6, k=(3, 1), stride=2, pad=[1, 1, 0, 0], act="relu6",
               clamp=[-100 if b.signed else 3, 90])
    y = b.conv(a, 5, k=5, stride=2, pad=2)
    net, _ = check(b.finish(y))
    assert [la.kernel for la in net.layers] == [3, 3, 5]
    assert net.layers[1].requant.hi == 90


def test_explicit_pad_merges_into_conv_and_max_pool():
    b = Builder("tflite", (4, 8, 8), seed=3, name="pads")
    p = b.node("pad", [b.x], attrs={"pads": [1, 1, 1, 1]})
    a = b.conv(p, 8, pad=0)
    p2 = b.node("pad", [a], attrs={"pads": [0, 1, 0, 1], "value": b.t(a).zero_point})
    m = b.node("max_pool2d", [p2], attrs={"kernel": [2, 2], "stride": [1, 1],
                                          "padding": [0, 0, 0, 0]})
    net, _ = check(b.finish(m))
    assert net.layers[0].padding == (1, 1, 1, 1)
    assert net.layers[1].padding == (0, 1, 0, 1) and not net.layers[1].pad_min


@pytest.mark.parametrize("pad_value, ceil, pad_min", [
    (None, False, True), (None, True, True), ("zp", False, False), ("low", False, True),
])
def test_max_pool_padding(pad_value, ceil, pad_min):
    b = Builder("torch-fbgemm", (4, 7, 7), seed=4, name="maxpool-pads")
    a = b.conv(b.x, 8)   # codes below the zero point: zero-point padding differs from -inf
    pv = {None: None, "zp": b.t(a).zero_point, "low": 0}[pad_value]
    m = b.node("max_pool2d", [a], attrs={"kernel": [3, 3], "stride": [2, 2],
                                         "padding": [1, 1, 1, 1], "ceil_mode": ceil,
                                         "pad_value": pv})
    net, _ = check(b.finish(m))
    assert net.layers[1].pad_min == pad_min


def test_upsample_by_four_is_two_layers():
    b = Builder("onnxruntime", (4, 4, 4), seed=5, name="up4")
    u = b.node("upsample_nearest", [b.conv(b.x, 4)], attrs={"scale": [4, 4]})
    net, _ = check(b.finish(b.conv(u, 4)))
    assert kinds(net) == ["HwConv", "HwUpsample2x", "HwUpsample2x", "HwConv"]


@pytest.mark.parametrize("fl", ["torch-fbgemm", "tflite"])
def test_standalone_clamps_fold_into_the_producer(fl):
    b = Builder(fl, (4, 8, 8), seed=6, name=f"clamps-{fl}")
    a = b.conv(b.x, 16)
    r = b.node("relu", [a])                      # folds into the conv
    m = b.node("max_pool2d", [r], attrs={"kernel": [2, 2], "stride": [2, 2]})
    hi = b.t(a).zero_point + 60
    h = b.node("clamp", [m], attrs={"lo": None, "hi": hi})   # moves through the pool
    r2 = b.node("relu", [h])                     # a no-op by now: dropped
    f = b.node("flatten", [r2], attrs={"start_dim": 1})
    y = b.conv(f, 6, op="linear")
    net, _ = check(b.finish(y))
    assert kinds(net) == ["HwConv", "HwMaxPool", "HwConv"]
    rq = net.layers[0].requant
    assert (rq.lo, rq.hi) == (b.t(a).zero_point, hi)


@pytest.mark.parametrize("fl", ["torch-fbgemm", "torch-qnnpack", "onnxruntime", "tflite"])
def test_leaky_relu_becomes_the_activation(fl):
    from zynqnn.hw.post import LeakyFixed, LeakyTorch

    b = Builder(fl, (4, 8, 8), seed=7, name=f"leaky-{fl}")
    a = b.conv(b.x, 16)
    at = b.t(a)
    if fl == "tflite":
        lk = b.node("leaky_relu", [a], attrs={"negative_slope": 0.125, "mult": 1, "shift": 3})
    else:
        # ONNX Runtime divides by the output scale where torch multiplies by its reciprocal:
        # equal on every code for a power-of-two scale (the check is exhaustive either way).
        s_out = 2.0 ** np.floor(np.log2(at.scale)) if fl == "onnxruntime" else at.scale * 0.8
        lk = b.node("leaky_relu", [a], attrs={"negative_slope": 0.1}, scale=s_out,
                    zp=at.zero_point + 7)
    if fl != "tflite":  # a clamp after LeakyTorch narrows its output range
        lk = b.node("clamp", [lk], attrs={"lo": None, "hi": b.t(lk).zero_point + 50})
    net, _ = check(b.finish(b.conv(lk, 4)))
    act = net.layers[0].act
    assert isinstance(act, LeakyFixed if fl == "tflite" else LeakyTorch)
    if fl != "tflite":
        assert act.qmax == b.t(lk).zero_point + 50
    assert net.layers[0].output.zero_point == b.t(lk).zero_point


@pytest.mark.parametrize("fl, size", [
    ("torch-fbgemm", 4), ("torch-fbgemm", 5), ("torch-qnnpack", 4), ("onnxruntime", 6),
    ("tflite", 4), ("tflite", 5), ("pow2", 4),
])
def test_global_average_pooling(fl, size):
    b = Builder(fl, (4, size, size), seed=8, name=f"gap-{fl}-{size}")
    a = b.conv(b.x, 20, act="relu")
    at = b.t(a)
    if fl in ("torch-fbgemm", "torch-qnnpack"):
        p = b.node("adaptive_avg_pool2d", [a], attrs={"output_size": [1, 1]})
    elif fl == "onnxruntime":
        p = b.node("global_avg_pool", [a], scale=at.scale * 0.5, zp=17)
    else:
        p = b.node("global_avg_pool", [a])
    f = b.node("flatten", [p], attrs={"start_dim": 1})
    net, _ = check(b.finish(b.conv(f, 3, op="linear")), samples=3)
    assert "HwGlobalSumPool" in kinds(net)


def test_avg_pool_over_the_whole_map_and_identity_pool():
    b = Builder("torch-fbgemm", (4, 4, 4), seed=9, name="avgpool")
    a = b.conv(b.x, 16, act="relu")
    p = b.node("avg_pool2d", [a], attrs={"kernel": [4, 4], "stride": [4, 4]})
    p2 = b.node("adaptive_avg_pool2d", [p], attrs={"output_size": [1, 1]})  # 1x1: identity
    net, _ = check(b.finish(p2))
    assert kinds(net) == ["HwConv", "HwGlobalSumPool"]


@pytest.mark.parametrize("fl", ["torch-fbgemm", "onnxruntime", "tflite", "pow2"])
def test_rescaling_concat_and_requantize(fl):
    b = Builder(fl, (4, 8, 8), seed=10, name=f"rescale-{fl}")
    a = b.conv(b.x, 16, act="relu")
    c = b.conv(b.x, 8)
    at = b.t(a)
    rq = b.node("requantize", [a], scale=at.scale * 1.7, zp=at.zero_point + 3)
    cat = b.node("concat", [rq, c], attrs={"axis": 1}, scale=b.t(c).scale * 1.3,
                 zp=b.t(c).zero_point - 2)
    net, _ = check(b.finish(b.conv(cat, 4, k=1, pad=0)))
    # requantize and the concat's two rescaled inputs: 1x1 identity convolutions
    eyes = [la for la in net.layers if isinstance(la, HwConv) and la.kernel == 1
            and la.weights.shape[0] == la.weights.shape[1]
            and np.array_equal(la.weights[:, :, 0, 0], np.eye(la.weights.shape[0]))]
    assert len(eyes) == (2 if fl == "pow2" else 3)  # pow2: the concat's scales round equal


def test_graph_taking_codes_and_returning_codes():
    b = Builder("tflite", (4, 8, 8), seed=11, name="codes")
    y = b.conv(b.x, 4)
    g = b.g
    g.nodes = [n for n in g.nodes if n.op != "quantize"]
    g.inputs = ["xq"]
    g = b.finish(y, dequant=False)
    net, bd = check(g)
    assert bd.input_flavour is None and bd.output_flavour is None
    with pytest.raises(ValueError, match="integer codes"):
        bd.quantize(np.zeros((1, 4, 8, 8), np.float32))


def test_reshape_to_the_same_map_is_a_view():
    b = Builder("torch-qnnpack", (4, 4, 4), seed=12, name="reshape")
    a = b.conv(b.x, 8)
    r = b.node("reshape", [a], attrs={"shape": [1, 8, 4, 4]})
    f = b.node("reshape", [r], attrs={"shape": [1, -1]})
    y = b.conv(f, 3, op="linear")
    net, bd = check(b.finish(y))
    assert kinds(net) == ["HwConv", "HwConv"] and net.layers[1].kernel == 4
    assert bd.output_shape == (3,)


def test_non_square_map_before_linear():
    b = Builder("torch-fbgemm", (3, 2, 3), seed=13, name="linear-2x3")
    f = b.node("flatten", [b.conv(b.x, 4)], attrs={"start_dim": 1})
    net, _ = check(b.finish(b.conv(f, 5, op="linear")))
    la = net.layers[1]
    assert la.kernel == 3 and la.padding == (0, 1, 0, 0)


# -------------------------------------------------------------------------------------------------
# refusals


def _err(g, match, cfg="pynq_z2"):
    with pytest.raises(CompileError, match=match):
        lower_graph(g, cfg)


@pytest.mark.parametrize("fl", ["torch-fbgemm", "torch-qnnpack", "onnxruntime", "tflite"])
@pytest.mark.parametrize("relu", [False, True])
def test_residual_add(fl, relu):
    """add -> HwAdd (ELTWISE) in the flavour's semantics, own output qparams."""
    b = Builder(fl, seed=20 + relu, name=f"add-{fl}-{relu}")
    a, c = b.conv(b.x, 4), b.conv(b.x, 4)
    s = b.node("add", [a, c], attrs={"relu": relu}, scale=b.t(a).scale * 1.3,
               zp=b.t(a).zero_point + 3)
    net, _ = check(b.finish(s), "tiny", golden=2)
    assert kinds(net)[-1] == "HwAdd" and net.layers[-1].relu == relu


@pytest.mark.parametrize("shape, block, scalar_from", [((160, 1, 1), 128, 128),
                                                      ((48, 1, 1), 32, 32), ((32, 1, 1), 64, 0)])
def test_add_torch_scalar_tail_as_channel_blocks(shape, block, scalar_from):
    """PyTorch's add takes the scalar formulas for the last n % block elements in memory order
    (1x1 maps, as MobileNetV2's 160-channel adds at 32x32): when they are whole channel blocks
    they run as ELTWISE commands of their own with the scalar constants, equal to the graph."""
    b = Builder("torch-fbgemm", shape, seed=24, name=f"add-tail-{shape}-{block}")
    a, c = b.conv(b.x, shape[0], k=1, pad=0), b.conv(b.x, shape[0], k=1, pad=0)
    s = b.node("add", [a, c], attrs={"vector_block": block}, scale=b.t(a).scale * 0.7,
               zp=b.t(a).zero_point + 2)
    net, _ = check(b.finish(s), "pynq_z2", samples=16, golden=4)
    assert net.layers[-1].scalar_from == scalar_from
    prog = compile_network(net, get_config("pynq_z2"))
    elt = [st for st in prog.steps if st.opcode == isa.Opcode.ELTWISE]
    assert len(elt) == (1 if scalar_from == 0 else 2)


@pytest.mark.parametrize("shape, block, tail_words", [((4, 3, 3), 32, 1), ((20, 3, 3), 32, 2),
                                                     ((32, 7, 7), 64, 2), ((24, 7, 7), 64, 2),
                                                     ((16, 9, 9), 64, 1)])
def test_add_torch_scalar_tail_in_nhwc_order(shape, block, tail_words):
    """In NHWC memory order PyTorch's tail is the last pixels' channels: when they are whole
    words (channel blocks of a pixel) those words run as ELTWISE commands of their own with the
    scalar constants (scalar_mask), equal to the graph on the golden backend."""
    b = Builder("torch-fbgemm", shape, seed=25, name=f"add-nhwc-tail-{shape}-{block}")
    a, c = b.conv(b.x, shape[0]), b.conv(b.x, shape[0])
    s = b.node("add", [a, c], attrs={"vector_block": block}, scale=b.t(a).scale * 0.7,
               zp=b.t(a).zero_point + 2)
    net, _ = check(b.finish(s), "pynq_z2", samples=8, golden=4)
    la = net.layers[-1]
    assert la.scalar_mask is not None and la.scalar_from is None
    n = int(np.prod(shape))
    assert int(la.scalar_mask.sum()) == n % block   # no padding channels on these shapes
    prog = compile_network(net, get_config("pynq_z2"))
    elt = [st for st in prog.steps if st.opcode == isa.Opcode.ELTWISE]
    scalar = [st for st in elt if st.loads[isa.Buffer.PBUF].key[2] == "scalar"]
    assert sum(st.op["pixels"] for st in scalar) == tail_words


def test_add_torch_tail_splitting_a_word_is_refused():
    """A tail that starts inside a word (8 of the 16 channels of a pixel's block) is refused."""
    b = Builder("torch-fbgemm", (20, 3, 3), seed=22)
    a, c = b.conv(b.x, 20), b.conv(b.x, 20)
    s = b.node("add", [a, c], attrs={"vector_block": 64})
    _err(b.finish(s), r"180 elements are not a multiple of PyTorch's vector block \(64\)")


@pytest.mark.parametrize("fl", ["torch-qnnpack", "onnxruntime", "tflite"])
def test_depthwise(fl):
    b = Builder(fl, (6, 8, 8), seed=23, name=f"dw-{fl}")
    y = b.conv(b.conv(b.x, 6, act="relu"), 6, groups=6)
    net, _ = check(b.finish(y), "tiny", golden=2)
    assert net.layers[-1].groups == 6


@pytest.mark.parametrize("cfg,stride", [("tiny", 1), ("tiny", 2), ("pynq_z2", 1)])
def test_depthwise_fbgemm_saturating_pairs(cfg, stride):
    """fbgemm's depthwise kernel (8k channels, 3x3, same padding) saturates tap pairs in int16:
    the layer runs as DW_PAIRS commands (pynq_z2) or PAIRS commands (tiny, no DW mode) and
    equals the graph, on inputs where saturation changes accumulators (an exact-sum model would
    fail)."""
    from zynqnn.ir import execute
    from zynqnn.numerics import ops

    b = Builder("torch-fbgemm", (16, 8, 8), seed=21, name=f"dw-fbgemm-pairs-{cfg}-s{stride}")
    g = b.finish(b.conv(b.x, 16, groups=16, stride=stride))
    net, _ = check(g, cfg, samples=8, golden=8)
    assert net.layers[-1].saturate_pairs
    prog = compile_network(net, get_config(cfg))
    mode = isa.Mode.DW_PAIRS if get_config(cfg).dw_pairs else isa.Mode.PAIRS
    assert any(st.op["mode"] == mode for st in prog.steps)
    # check()'s inputs (the conv reads the quantized input) do saturate pairs
    n = next(n for n in g.nodes if n.op == "conv2d")
    assert execute.fbgemm_saturates(g, n)
    q = g.tensors[g.quant_inputs[0]]
    codes = np.random.default_rng(0).integers(q.qmin, q.qmax + 1, size=(8,) + tuple(q.shape[1:]))
    args = (codes, np.asarray(g.tensors[n.inputs[1]].data), q.zero_point)
    kw = dict(stride=stride, padding=1, groups=16)
    assert not np.array_equal(ops.conv2d_acc(*args, **kw),
                              ops.conv2d_acc(*args, **kw, saturate_pairs=True))


def test_depthwise_fbgemm_grouped_refused():
    # 4 channels: torch takes an exact path, so the layer lowers and matches
    b = Builder("torch-fbgemm", (4, 8, 8), seed=21, name="dw-fbgemm-exact-path")
    check(b.finish(b.conv(b.x, 4, groups=4)), "tiny", golden=1)



@pytest.mark.parametrize("fl", ["torch-fbgemm", "onnxruntime"])
def test_grouped_conv_as_block_diagonal(fl):
    """A grouped (not depthwise) convolution runs as one convolution whose weights are zero
    between groups: equal to the graph on the golden backend."""
    b = Builder(fl, (4, 8, 8), seed=21, name=f"grouped-{fl}")
    net, _ = check(b.finish(b.conv(b.x, 8, groups=2)), "tiny", golden=1)
    conv = net.layers[-1]
    assert conv.groups == 1 and conv.weights.shape[:2] == (8, 4)
    assert not conv.weights[:4, 2:].any() and not conv.weights[4:, :2].any()


def test_inverted_residual_block_qnnpack():
    """MobileNetV2's inverted residual (1x1 expand, depthwise 3x3, 1x1 project, skip add)
    quantized by torch.ao on qnnpack: lowered, compiled and equal to the graph."""
    import torch
    from torch import nn

    import zynqnn
    from zynqnn import zoo
    from zynqnn.zoo.quant import quiet_torch_ao

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.expand = nn.Sequential(nn.Conv2d(8, 24, 1), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.ReLU6())
            self.project = nn.Conv2d(24, 8, 1)

        def forward(self, x):
            x = self.stem(x)
            return x + self.project(self.dw(self.expand(x)))

    torch.manual_seed(3)
    m = Block().eval()
    x = torch.rand(6, 3, 8, 8)
    old = torch.backends.quantized.engine
    try:
        with quiet_torch_ao():
            q = zoo.quantize_fx(m, x[:1], "qnnpack", x)
            g = zynqnn.from_torch(q, x[:2], engine="qnnpack")
    finally:
        torch.backends.quantized.engine = old
    g.name = "inverted-residual-qnnpack"
    net, _ = check(g, "tiny", codes=g.quantize_input(x.numpy()[:3]), golden=2)
    names = kinds(net)
    assert "HwAdd" in names and any(getattr(la, "groups", 1) == 24 for la in net.layers)


@pytest.mark.parametrize("make, match", [
    (lambda b: b.conv(b.x, 4, dilation=2, pad=2), r"\(conv2d\): dilation \[2, 2\]"),
    (lambda b: b.conv(b.x, 4, stride=[1, 2]), r"stride \[1, 2\]: the hardware needs equal"),
    (lambda b: b.node("avg_pool2d", [b.conv(b.x, 4)], attrs={"kernel": [2, 2],
                                                             "padding": [1, 1, 1, 1]}),
     r"\(avg_pool2d\): padded average pooling is not supported"),
    (lambda b: b.node("avg_pool2d", [b.conv(b.x, 4)], attrs={"kernel": [2, 3]}),
     r"kernel \[2, 3\] / stride \[2, 3\]: the hardware averages square windows"),
    (lambda b: b.node("adaptive_avg_pool2d", [b.conv(b.x, 4)],
                      attrs={"output_size": [2, 2]}), r"output size \[2, 2\]: only global"),
    (lambda b: b.node("upsample_nearest", [b.conv(b.x, 4)], attrs={"scale": [3, 3]}),
     r"\(upsample_nearest\): scale \[3, 3\]"),
    (lambda b: b.node("max_pool2d", [b.conv(b.x, 4)], attrs={"kernel": [2, 3]}),
     r"kernel \[2, 3\] / stride \[2, 3\]: the hardware pools square windows"),
    (lambda b: b.node("max_pool2d", [b.conv(b.x, 4)], attrs={"kernel": [3, 3], "stride": [1, 1],
                                                             "padding": [1, 1, 1, 1],
                                                             "pad_value": 200}),
     r"padding value 200: the hardware pads max pooling with -infinity or the zero point"),
    (lambda b: b.node("concat", [b.conv(b.x, 4), b.conv(b.x, 4)], attrs={"axis": 2}),
     r"\(concat\): concatenation on axis 2"),
    (lambda b: b.node("leaky_relu", [b.node("max_pool2d", [b.conv(b.x, 4)],
                                            attrs={"kernel": [2, 2]})],
                      attrs={"negative_slope": 0.1}),
     r"\(leaky_relu\): the hardware applies leaky ReLU in the post-processing"),
])
def test_unsupported_nodes_are_named(make, match):
    b = Builder("torch-fbgemm", (4, 8, 8), seed=22)
    _err(b.finish(make(b)), match)


def test_onnxruntime_leaky_relu_is_checked_on_every_code():
    b = Builder("onnxruntime", (4, 8, 8), seed=7)
    a = b.conv(b.x, 16)
    lk = b.node("leaky_relu", [a], attrs={"negative_slope": 0.1}, scale=b.t(a).scale * 0.8,
                zp=b.t(a).zero_point + 7)
    _err(b.finish(lk), r"\(leaky_relu\): no activation of the hardware reproduces the "
                       "onnxruntime leaky ReLU on every code")


def test_clamp_of_a_shared_tensor_is_refused():
    b = Builder("torch-fbgemm", (4, 8, 8), seed=23)
    a = b.conv(b.x, 8)
    r = b.node("clamp", [a], attrs={"lo": 110, "hi": None})
    cat = b.node("concat", [r, a], attrs={"axis": 1})
    _err(b.finish(cat), r"\(clamp\): cannot fold the clamp into HwConv '.*': its input is used "
                        "elsewhere too")


def test_quantize_and_dequantize_inside_the_graph_are_refused():
    b = Builder("torch-fbgemm", (4, 8, 8), seed=24)
    a = b.conv(b.x, 4)
    b.g.add_tensor(Tensor("mid", b.t(a).shape, "float32"))
    b.g.add_node(Node("dq_mid", "dequantize", [a], ["mid"], b.fl))
    b.act("q2", b.t(a).shape, 0.05, 3)
    b.g.add_node(Node("q_mid", "quantize", ["mid"], ["q2"], b.fl))
    _err(b.finish("q2"), r"node 'dq_mid' \(dequantize\): a dequantize inside the graph")


def test_graph_shape_and_config_problems():
    b = Builder("torch-fbgemm", (4, 8, 8), seed=25)
    g = b.finish(b.conv(b.x, 4))
    _err(g, r"tensor 'xq' is uint8, config pynq_z2_int16 \(12x12i16-[0-9a-f]+\) has 16-bit",
         "pynq_z2_int16")
    g.inputs = ["x", "x"]
    _err(g, "runs graphs with one input, this has 2")
    b = Builder("torch-fbgemm", (4, 8, 8), seed=26)
    g = b.finish(b.x)
    _err(g, "nothing to run on the accelerator")


def test_flatten_of_a_large_map_into_linear():
    """A map wider than max_kernel (once refused): the linear layer reads the map's words as a
    1x1 map (HwView) with its weight columns permuted to them (tests/compiler/
    test_flatten_linear.py has more)."""
    b = Builder("torch-fbgemm", (2, 8, 9), seed=27)
    f = b.node("flatten", [b.conv(b.x, 4)], attrs={"start_dim": 1})
    net, _ = check(b.finish(b.conv(f, 3, op="linear")))
    assert kinds(net) == ["HwConv", "HwView", "HwConv"] and net.layers[-1].kernel == 1


def test_reshaped_map_into_a_conv_is_refused():
    b = Builder("torch-fbgemm", (4, 4, 4), seed=28)
    r = b.node("reshape", [b.conv(b.x, 8)], attrs={"shape": [1, 2, 8, 8]})
    _err(b.finish(b.conv(r, 4)), r"\(conv2d\): input 'reshape\d+' is a reshaped view "
                                 r"\[2, 8, 8\] of the 8x4x4 map")


@pytest.mark.parametrize("zp, layers", [(100, 2), (101, 3)])
def test_pooling_with_the_zero_point_inside_the_rounding(zp, layers):
    # torch's vectorized average rounds acc/n + zp: with an odd zero point its ties round to
    # codes no requantization with that zero point gives. The pooling then writes the final
    # codes under zero point 0 and an identity 1x1 convolution relabels them.
    b = Builder("torch-fbgemm", (4, 4, 4), seed=29, name=f"gap-zp{zp}")
    a = b.conv(b.x, 12, zp_out=zp)
    p = b.node("adaptive_avg_pool2d", [a], attrs={"output_size": [1, 1]})
    net, _ = check(b.finish(p))
    assert len(net.layers) == layers and isinstance(net.layers[1], HwGlobalSumPool)
    if layers == 3:
        assert net.layers[1].requant.zp_out == 0 and net.layers[2].output.zero_point == zp


def test_pooling_that_no_scheme_reproduces_is_refused():
    # An average over 36 x 36 pixels: the window sums are too many to check every one, and
    # fbgemm's average has no formula exact by construction: refused, not approximated.
    b = Builder("torch-fbgemm", (4, 36, 36), seed=30)
    p = b.node("adaptive_avg_pool2d", [b.conv(b.x, 12)], attrs={"output_size": [1, 1]})
    _err(b.finish(p), r"\(adaptive_avg_pool2d\): no requantization of the hardware reproduces "
                      r"the torch-fbgemm average over 36x36 pixels exactly")


def test_summary_counts():
    """Values compared in this module and mismatches (printed with -s)."""
    for case, (n, bad) in sorted(TOTALS.items()):
        print(f"{case:50s} {n:>9,d} ({bad})")
    assert all(bad == 0 for _, bad in TOTALS.values())


@pytest.mark.parametrize("fl", ["torch-fbgemm", "torch-qnnpack", "onnxruntime"])
@pytest.mark.parametrize("stride, act", [(1, "none"), (2, "relu")])
def test_depthwise_step_lanes(fl, stride, act):
    """On pynq_z2 a float-scheme 3x3 depthwise layer goes to the step lanes (``ConvOp.step``,
    one PBUF step word per channel) and equals the graph bit for bit; tiny has no step lanes."""
    b = Builder(fl, (16, 12, 12), seed=31, name=f"dw-step-{fl}-s{stride}-{act}")
    g = b.finish(b.conv(b.x, 16, groups=16, stride=stride, act=act))
    net, _ = check(g, "pynq_z2", samples=8, golden=8)
    steps = [st for st in compile_network(net, get_config("pynq_z2")).steps
             if st.opcode == isa.Opcode.CONV]
    assert steps and all(st.op["step"] == 1 and st.op["act"] == 0 for st in steps)
    tiny = compile_network(lower_graph(g, get_config("tiny"))[0], get_config("tiny"))
    assert not any(st.op.get("step") for st in tiny.steps if st.opcode == isa.Opcode.CONV)


def test_lut_lowering_and_the_scalar_tail():
    """A ``lut`` node becomes an HwLut (also on a flattened view after a linear); gathered
    outputs equal ``graph.run_int`` for every flavour. A torch-fbgemm node whose scalar-tail
    table differs on a code its input can hold is refused when the map has a tail (4 x 5 x 5 =
    100 elements, block 32) and lowered with its vector table when it has none (4 x 8 x 8)."""
    from zynqnn.compiler.testing import check_gathered

    rng = np.random.default_rng(3)
    for fl in ("torch-fbgemm", "torch-qnnpack", "onnxruntime"):
        b = Builder(fl, shape=(8, 8, 8))
        c = b.conv(b.x, 8)
        table = np.sort(rng.integers(0, 256, 256)).tolist()
        y = b.node("lut", [c], attrs={"table": table, "function": "t"}, scale=0.01, zp=3)
        f = b.node("flatten", [y], attrs={"start_dim": 1}, flavour=None)
        lin = b.conv(f, 4, op="linear")
        y2 = b.node("lut", [lin], attrs={"table": table[::-1], "function": "u"}, scale=0.02,
                    zp=100)
        net, _ = check_gathered("pynq_z2", b.finish(y2))
        assert [type(la).__name__ for la in net.layers].count("HwLut") == 2
    vec = list(range(256))
    sca = [min(v + 1, 255) for v in vec]
    for shape, ok in (((4, 5, 5), False), ((4, 8, 8), True)):
        b = Builder("torch-fbgemm", shape=shape)
        y = b.node("lut", [b.x], attrs={"table": vec, "scalar_table": sca, "vector_block": 32,
                                        "function": "t"})
        g = b.finish(y)
        if ok:
            check_gathered("pynq_z2", g)
        else:
            with pytest.raises(CompileError, match=r"100 elements .* vector block \(32\): "
                                                   r"its scalar tail .* one table a layer"):
                lower_graph(g, "pynq_z2")
