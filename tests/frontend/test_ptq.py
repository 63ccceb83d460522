"""zynqnn.quantize: schemes, calibrators, per-layer overrides, BN folding, fused activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from frontend_helpers import count
from torch import nn

import zynqnn
from zynqnn import zoo
from zynqnn.ir import effective_clamp, node_requant


def _acc(graph, x, y) -> float:
    return 100.0 * float(np.mean(graph.run(x).argmax(1) == y.numpy()))


OPTIONS = [
    {},
    {"calibrator": "percentile"},
    {"calibrator": "entropy"},
    {"calibrator": "mse"},
    {"per_channel": False},
    {"symmetric": True},
    {"scheme": "pow2"},
    {"scheme": "fixed16"},
    {"scheme": "fixed16", "rounding": "floor"},
    {"scheme": "pow2", "overrides": {"first": {"bits": 16}, "last": {"bits": 16}}},
    {"overrides": {"first": {"bits": 16}, "last": {"bits": 16}}},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(
    f"{k}={v if not isinstance(v, dict) else 'first,last16'}" for k, v in o.items()) or "default")
def test_digits_schemes(options, digits_model, digits_data, record_property):
    x_tr, _, x_te, y_te = digits_data
    g = zynqnn.quantize(digits_model, x_tr[:512], **options)
    scheme = options.get("scheme", "tflite")
    float_acc = zoo.digits.accuracy(digits_model, x_te, y_te)
    assert _acc(g, x_te, y_te) >= float_acc - 1.5
    acts = [t for t in g.tensors.values() if t.is_quantized and not t.is_const]
    if scheme != "tflite":
        for t in acts:  # power-of-two scales, symmetric
            assert t.zero_point == 0 and math.frexp(t.scale)[0] == 0.5, t.describe()
    if options.get("symmetric"):
        assert all(t.zero_point == 0 for t in acts)
    if "overrides" in options:
        first = next(n for n in g.nodes if n.op == "conv2d")
        last = [n for n in g.nodes if n.op == "linear"][-1]
        assert g.tensors[first.inputs[0]].dtype == "int16"
        assert g.tensors[last.inputs[0]].dtype == "int16"
        assert g.tensors[last.outputs[0]].dtype == "int16"
        assert g.tensors[first.outputs[0]].dtype == ("int16" if scheme == "fixed16" else "int8")
        if scheme == "pow2":
            assert first.attrs["requant"]["scheme"] == "fixed16"
            assert g.tensors[first.inputs[1]].dtype == "int16"
    # the integer-only hardware form gives the same codes
    codes = g.run_int(g.quantize_input(x_te[:64]))
    hw = g.run_int(g.quantize_input(x_te[:64]), hw=True)
    count(record_property, f"digits zynqnn.quantize {scheme}", "hardware form vs numpy form",
          codes.size, int(np.count_nonzero(codes != hw)))
    assert np.array_equal(codes, hw)


class _Block(nn.Module):
    """Conv+BN+LeakyReLU, zero-pad + maxpool 2/1, branch with upsample and concat, a residual
    add + ReLU, ReLU6, global average pooling, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act = nn.LeakyReLU(0.125)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.pool = nn.MaxPool2d(2, 1)
        self.c2 = nn.Conv2d(16, 8, 1, stride=2)
        self.c3 = nn.Conv2d(24, 16, 3, padding=1)
        self.c4 = nn.Conv2d(16, 16, 3, padding=1)
        self.r6 = nn.ReLU6()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool(self.pad(self.act(self.bn1(self.c1(x)))))
        y = F.interpolate(self.c2(x), scale_factor=2, mode="nearest")
        z = self.c3(torch.cat([x, y], 1))
        z = F.relu(self.c4(z) + z)
        return self.fc(torch.flatten(self.gap(self.r6(z)), 1))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    m = _Block()
    zoo.calibrate_bn(m, [torch.rand(8, 3, 16, 16) for _ in range(2)])
    m.bn1.weight.data.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("scheme", ["tflite", "pow2", "fixed16"])
def test_block_model(block, scheme, tmp_path):
    calib = torch.rand(16, 3, 16, 16)
    g = zynqnn.quantize(block, calib, scheme=scheme)
    ops = g.ops()
    assert ops["conv2d"] == 4 and ops["linear"] == 1 and ops["concat"] == 1
    assert ops["add"] == 1 and ops["global_avg_pool"] == 1 and ops["pad"] == 1
    assert "batch_norm" not in str(ops)
    c1 = next(n for n in g.nodes if n.source == "c1")
    if scheme == "tflite":  # LeakyReLU stays a separate integer node with the conv's qparams
        assert ops["leaky_relu"] == 1 and c1.attrs["activation"] == "none"
    else:  # folded into the shift requantization: slope 0.125 = 1/2^3
        assert "leaky_relu" not in ops and c1.attrs["requant"]["leaky"] == [1, 3]
    add = next(n for n in g.nodes if n.op == "add")
    assert add.attrs["relu"]
    r6 = next(n for n in g.nodes if n.op == "clamp")
    t = g.tensors[r6.inputs[0]]
    assert r6.attrs["hi"] < t.qmax or t.scale * (t.qmax - t.zero_point) < 6.5
    lo, hi = effective_clamp(g, c1)
    assert lo <= hi and node_requant(g, c1).scheme == c1.attrs["requant"]["scheme"]
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        ref = block(x).numpy()
    out = g.run(x)
    cos = float((out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref))
    assert cos > 0.97, cos
    assert np.array_equal(g.run(x, hw=True), out)
    path = tmp_path / "block.zqg"
    g.save(path)
    assert np.array_equal(zynqnn.load_graph(path).run(x), out)
    rows = zynqnn.layer_errors(g, x)
    assert len(rows) >= 10 and all(r.sqnr_db > 5 for r in rows)


def test_resnet_ptq_folds_bn(record_property):
    model = zoo.get("resnet18", width=8, num_classes=10)
    calib = torch.cat([zoo.example_input("resnet18", 32, batch=4, seed=s) for s in range(2)])
    g = zynqnn.quantize(model, calib, calibrator="percentile")
    assert g.ops()["conv2d"] == 20 and g.ops()["add"] == 8
    assert sum(n.attrs.get("relu", False) for n in g.nodes if n.op == "add") == 8
    x = zoo.example_input("resnet18", 32, batch=2, seed=9)
    with torch.no_grad():
        ref = model(x).numpy()
    out = g.run(x)
    cos = float((out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref))
    assert cos > 0.95, cos


def test_fixed16_wide_accumulators():
    """int16 x int16 convolutions exceed int32: the requantization still follows the fixed16
    datapath (48-bit accumulators in the int16 build)."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    with torch.no_grad():
        m[0].weight.mul_(20.0)
    calib = torch.rand(4, 8, 6, 6) * 100
    g = zynqnn.quantize(m, calib, scheme="fixed16")
    conv = g.nodes[1]
    x = calib[:2].numpy()
    env = g.run_all(x)
    xq = env[conv.inputs[0]]
    w = g.tensors[conv.inputs[1]].data
    from zynqnn.numerics import ops

    acc = ops.conv2d_acc(xq, w, 0, None, 1, 1)
    assert np.abs(acc).max() > 2**31  # wide accumulators happen
    rq = node_requant(g, conv)
    v = acc + (g.tensors[conv.inputs[2]].data << rq.bias_shift)[None, :, None, None]
    shift = rq.shift.reshape(1, -1, 1, 1)
    want = np.clip(np.floor(v / 2.0**shift + 0.5), rq.lo, rq.hi)  # half up, exact in float64
    assert np.array_equal(env[conv.outputs[0]], want.astype(np.int64))
    assert np.array_equal(g.run(x, hw=True), g.run(x))


@pytest.mark.parametrize("scheme, q_format, cfg", [("fixed16", "Q7.8", "pynq_z2_int16"),
                                                   ("pow2", "Q3.4", "pynq_z2")])
def test_global_q_format(scheme, q_format, cfg):
    """``q_format``: one fixed-point format for every tensor of its width (activations and
    weights: scale 2^-n), compiled and equal to graph.run on the golden backend."""
    from zynqnn.compiler.testing import check_graph_on_golden

    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1),
                      nn.LeakyReLU(0.125), nn.Conv2d(12, 4, 1)).eval()
    calib = torch.randn(8, 3, 8, 8)
    g = zynqnn.quantize(m, calib, scheme=scheme, q_format=q_format)
    n = int(q_format.split(".")[1])
    width = 16 if scheme == "fixed16" else 8
    quantized = [t for t in g.tensors.values() if t.is_quantized and t.dtype == f"int{width}"]
    assert quantized and {float(np.max(t.scale)) for t in quantized} == {2.0 ** -n}
    check_graph_on_golden(g, None, calib[:2].numpy(), cfg)
    with pytest.raises(zynqnn.FrontendError, match=r"'Q7.9': 'Qm.n' with 1 \+ m \+ n = 8"):
        zynqnn.quantize(m, calib, scheme=scheme, q_format="Q7.9")
    with pytest.raises(zynqnn.FrontendError, match="not tflite"):
        zynqnn.quantize(m, calib, scheme="tflite", q_format=q_format)


def test_cross_layer_equalization():
    """equalize=True: the float function is unchanged (ReLU and LeakyReLU pass a positive
    scale; the ReLU6 pair and the residual branch are left alone), each equalized pair's
    channel ranges end equal, and the quantized graph compiles and runs exactly."""
    from zynqnn.compiler.testing import check_graph_on_golden
    from zynqnn.frontend.equalize import _pairs, _ranges, equalize
    from zynqnn.frontend.ptq import capture

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 16, 3, padding=1, groups=16)   # depthwise
            self.c = nn.Conv2d(16, 16, 1)
            self.d = nn.Conv2d(16, 8, 3, padding=1)                # after a ReLU6: left alone
            self.e = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.c(torch.relu(self.b(F.leaky_relu(self.a(x), 0.125))))
            y = self.d(F.relu6(y))
            return self.e(y) + y                                    # d's output: two users

    torch.manual_seed(4)
    m = Net().eval()
    with torch.no_grad():
        m.a.weight[::3] *= 40.0    # channels of very different ranges
    x = torch.randn(4, 3, 8, 8)
    gm = capture(m)
    pairs = _pairs(gm)
    assert [(a.kernel_size, b.groups) for a, b in pairs] == [((3, 3), 16), ((3, 3), 1)]
    spread = [np.ptp(np.log2(_ranges(a, b)[0])) for a, b in pairs]
    assert equalize(gm) == 2
    for a, b in pairs:
        ra, rb = _ranges(a, b)
        np.testing.assert_allclose(ra, rb, rtol=0.05)   # a chain converges over the sweeps
    # the first layer's 40x channels are spread over both layers: half the range in log2
    assert np.ptp(np.log2(_ranges(*pairs[0])[0])) < 0.6 * spread[0]
    with torch.no_grad():
        ref, got = m(x), gm(x)
    assert torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    g = zynqnn.quantize(m, x, scheme="pow2", per_channel=False, equalize=True)
    assert g.meta["equalized_pairs"] == 2
    check_graph_on_golden(g, None, x[:2].numpy(), "pynq_z2")


def test_bias_correction_cancels_the_mean_shift():
    """bias_correction=True: on inputs with a large mean, the per-channel mean error that
    per-tensor pow2 weight rounding gives drops (the bias absorbs (W - Wq) . E[x])."""
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv2d(16, 8, 1), nn.Flatten(), nn.Linear(8 * 16, 4)).eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.rand_like(m[0].weight) * 0.02 + 0.01)   # small, one sign
        m[0].weight[0, 0] = 1.0                                        # sets the pow2 scale
    calib = torch.randn(32, 16, 4, 4) * 0.5 + 4.0
    x = torch.randn(16, 16, 4, 4) * 0.5 + 4.0
    with torch.no_grad():
        ref = m[0](x).numpy()

    def mean_error(bc):
        g = zynqnn.quantize(m, calib, scheme="pow2", per_channel=False, bias_correction=bc)
        env = g.run_all(x.numpy())
        conv = next(n for n in g.nodes if n.op == "conv2d")
        t = g.tensors[conv.outputs[0]]
        y = (env[conv.outputs[0]] - t.zero_point) * t.scale
        return np.abs((y - ref).mean(axis=(0, 2, 3))).mean(), g

    before, _ = mean_error(False)
    after, g = mean_error(True)
    assert g.meta["bias_correction"] is True
    assert after < 0.5 * before, (before, after)


def test_overrides_per_channel_and_calibrator(digits_model, digits_data):
    x_tr = digits_data[0]
    g = zynqnn.quantize(digits_model, x_tr[:128],
                        overrides={"conv2": {"per_channel": False, "calibrator": "mse"}})
    conv2 = next(n for n in g.nodes if n.source == "conv2")
    conv1 = next(n for n in g.nodes if n.source == "conv1")
    assert not g.tensors[conv2.inputs[1]].per_channel
    assert g.tensors[conv1.inputs[1]].per_channel
