"""from_torch: torch.ao FX (both engines, both backend configs) and eager models, bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from frontend_helpers import (
    SIZES,
    compare,
    count,
    fbgemm_comparable,
    has_avx512_vnni,
    inputs,
    quantize_fx,
)
from torch import nn
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import zynqnn
from zynqnn import zoo
from zynqnn.zoo import digits
from zynqnn.zoo.quant import cpu_independent_qconfig_mapping as qconfig_mapping
from zynqnn.zoo.quant import quiet_torch_ao

# The "done when": ResNet-18 and MobileNetV2 on both engines, YOLOv3-tiny on fbgemm.
CASES = [
    ("resnet18", "fbgemm"),
    ("resnet18", "qnnpack"),
    ("mobilenet_v2", "fbgemm"),
    ("mobilenet_v2", "qnnpack"),
    ("yolov3_tiny", "fbgemm"),
]

EXPECTED_OPS = {
    "resnet18": {"conv2d": 20, "add": 8, "max_pool2d": 1, "adaptive_avg_pool2d": 1,
                 "linear": 1},
    "mobilenet_v2": {"conv2d": 52, "add": 10, "relu6": 35, "adaptive_avg_pool2d": 1,
                     "linear": 1},
    "yolov3_tiny": {"conv2d": 13, "leaky_relu": 11, "max_pool2d": 6, "pad": 1,
                    "upsample_nearest": 1, "concat": 1, "dequantize": 2},
}


@pytest.mark.parametrize(("name", "engine"), CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_zoo_model_bit_exact(name, engine, record_property, tmp_path):
    _, q, x = quantize_fx(name, engine)
    g = zynqnn.from_torch(q, x)
    flavour = f"torch-{engine}"
    assert g.flavours() == {flavour}
    for op, n in EXPECTED_OPS[name].items():
        assert g.ops().get(op) == n, (op, g.ops())
    # every intermediate tensor of the example run already equals PyTorch's (verify=True)
    assert g.meta["verified"]["mismatched"] == 0
    count(record_property, f"{name} {engine}", "intermediate codes (example)",
          g.meta["verified"]["compared"], 0)
    n = bad = 0
    with torch.no_grad():
        for xr in inputs(name):
            dn, db = compare(q(xr), g.run(xr))
            n, bad = n + dn, bad + db
    count(record_property, f"{name} {engine}", "run(x) outputs, random inputs", n, bad)
    assert bad == 0
    if name == "resnet18":  # the integer interface and the integer-only hardware form
        xr = inputs(name, 1, seed=50)[0]
        ref = torch.quantize_per_tensor(xr, float(q.conv1_input_scale_0),
                                        int(q.conv1_input_zero_point_0), torch.quint8)
        assert np.array_equal(g.quantize_input(xr), ref.int_repr().numpy())
        codes = g.run_int(g.quantize_input(xr))
        hw = g.run_int(g.quantize_input(xr), hw=True)
        count(record_property, f"{name} {engine}", "hardware form vs numpy form", codes.size,
              int(np.count_nonzero(codes != hw)))
        assert np.array_equal(codes, hw)
    # a saved and reloaded graph computes the same values
    path = tmp_path / f"{name}.zqg"
    g.save(path)
    g2 = zynqnn.load_graph(path)
    xr = inputs(name, 1, seed=7)[0]
    assert compare(g.run(xr), g2.run(xr))[1] == 0


def _saturated(g, env) -> tuple[int, int]:
    """(accumulators, output codes) in which fbgemm's depthwise pair saturation changes the
    result, over the graph's fbgemm depthwise convs, given the tensors ``env`` of a run."""
    from zynqnn.ir import execute
    from zynqnn.numerics import ops

    accs = codes = 0
    for n in g.nodes:
        if not execute.fbgemm_saturates(g, n):
            continue
        a, x, w = n.attrs, g.tensors[n.inputs[0]], g.tensors[n.inputs[1]]
        args = (env[x.name], w.data, x.zero_point, w.zero_point, a["stride"], a["padding"],
                a.get("dilation", 1), a["groups"])
        exact, sat = ops.conv2d_acc(*args), ops.conv2d_acc(*args, saturate_pairs=True)
        rq, (lo, hi) = execute.node_requant(g, n), execute.effective_clamp(g, n)
        accs += int(np.count_nonzero(exact != sat))
        codes += int(np.count_nonzero(np.clip(rq.apply(exact), lo, hi)
                                      != np.clip(rq.apply(sat), lo, hi)))
    return accs, codes


def _uncalibrated_inputs_case(qmap, seeds, scales, record_property, what):
    """MobileNetV2 (fbgemm) calibrated on its example input only, then imported (every
    intermediate tensor compared with PyTorch) and run on other random inputs, scaled beyond
    the calibrated range: activation codes above 127 reach the depthwise convs, whose int16
    pair sums saturate in PyTorch; the IR must equal PyTorch anyway."""
    if not has_avx512_vnni():
        pytest.skip("codes above 127 on a CPU without AVX-512 VNNI: fbgemm's GEMM convs "
                    "saturate there too (other pairs), which the golden model does not model")
    name = "mobilenet_v2"
    x = zoo.example_input(name, SIZES[name], batch=2)
    with quiet_torch_ao():
        q = zoo.quantize_fx(zoo.get(name), x, engine="fbgemm", calibration=[x],
                            qconfig_mapping=qmap)
    batch = torch.cat([zoo.example_input(name, SIZES[name], batch=2, seed=s) for s in seeds])
    n = bad = compared = accs = codes = 0
    for scale in scales:
        xt = batch * scale
        g = zynqnn.from_torch(q, xt)  # verify=True: every intermediate tensor equals PyTorch's
        compared += g.meta["verified"]["compared"]
        with torch.no_grad():
            dn, db = compare(q(xt), g.run(xt))
        n, bad = n + dn, bad + db
        da, dc = _saturated(g, g.run_all(xt))
        accs, codes = accs + da, codes + dc
    count(record_property, f"{name} fbgemm", f"{what}: intermediate codes", compared, 0)
    count(record_property, f"{name} fbgemm", f"{what}: run(x) outputs", n, bad)
    count(record_property, f"{name} fbgemm", f"{what}: codes changed by saturation", codes, 0)
    assert bad == 0
    # the comparison covered saturating depthwise pairs: an exact-sum model would have failed
    assert accs > 0 and codes > 0, (accs, codes)


def test_mobilenet_v2_fbgemm_uncalibrated_inputs(record_property):
    """Fast variant: min/max observers, 8 images at 1x and 4x the example's range."""
    _uncalibrated_inputs_case(qconfig_mapping("fbgemm"), range(300, 304), (1, 4),
                              record_property, "uncalibrated inputs")


@pytest.mark.slow
def test_mobilenet_v2_fbgemm_uncalibrated_inputs_histogram(record_property):
    """torch's default fbgemm qconfig (HistogramObserver clips the range), 32 images at 1x, 2x,
    4x and 8x."""
    from torch.ao.quantization import get_default_qconfig_mapping

    _uncalibrated_inputs_case(get_default_qconfig_mapping("fbgemm"), range(400, 416),
                              (1, 2, 4, 8), record_property, "uncalibrated inputs (histogram)")


def _plain_convert(model, x, engine, calib=()):
    """prepare_fx/convert_fx with torch's native backend config and no zoo rewrites."""
    torch.backends.quantized.engine = engine
    with quiet_torch_ao(), torch.no_grad():
        p = prepare_fx(model, qconfig_mapping(engine), (x,))
        for c in (x, *calib):
            p(c)
        return convert_fx(p)


def _randn(s: int) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(s))


class _PadUp(nn.Module):
    """conv + LeakyReLU, zero-pad + maxpool 2x2/1, nn.Upsample (float in torch's native config),
    ReLU6, conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.LeakyReLU(0.125)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.pool = nn.MaxPool2d(2, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.conv2(self.up(self.pool(self.pad(self.act(self.conv1(x))))))


@pytest.mark.parametrize("engine", zoo.ENGINES)
def test_native_backend_float_islands(engine, record_property):
    """Native config: dequantize -> Upsample (float) -> quantize becomes requantize + upsample."""
    torch.manual_seed(0)
    model = _PadUp().eval()
    x = torch.randn(2, 3, 8, 8)
    q = zoo.quantize_fx(model, x, engine, calibration=[x] + [_randn(s) for s in range(3)],
                        backend="native", qconfig_mapping=qconfig_mapping(engine))
    ops = zoo.op_summary(q)
    assert ops["method:dequantize"] == 2  # the float upsample island and the output
    g = zynqnn.from_torch(q, x)
    assert g.ops()["requantize"] == 1 and g.ops()["upsample_nearest"] == 1
    n = bad = 0
    with torch.no_grad():
        for s in range(3):
            dn, db = compare(q(_randn(s)), g.run(_randn(s)))
            n, bad = n + dn, bad + db
    count(record_property, f"pad-upsample {engine}", "native config, float islands", n, bad)
    assert bad == 0


def test_yolo_native_plain_convert(record_property):
    """YOLOv3-tiny converted with stock convert_fx (ZeroPad2d runs in float)."""
    model = zoo.get("yolov3_tiny")
    x = inputs("yolov3_tiny", 1, seed=0)[0]
    q = _plain_convert(model, x, "fbgemm", inputs("yolov3_tiny", 2, seed=30))
    assert zoo.op_summary(q)["module:torch.nn.modules.padding.ZeroPad2d"] == 1
    g = zynqnn.from_torch(q, x)
    n = bad = 0
    with torch.no_grad():
        for xr in inputs("yolov3_tiny", 2, seed=30):
            dn, db = compare(q(xr), g.run(xr))
            n, bad = n + dn, bad + db
    count(record_property, "yolov3_tiny fbgemm", "native config, plain convert_fx", n, bad)
    assert bad == 0


@pytest.mark.parametrize("engine", zoo.ENGINES)
def test_eager_digits(engine, digits_model, digits_data, record_property):
    """Eager mode: QuantStub/DeQuantStub, fused ConvReLU2d, Linear."""
    x_tr, _, x_te, _ = digits_data
    e = digits.quantize_eager(digits_model, x_tr[:256], engine)
    g = zynqnn.from_torch(e, x_te[:2])
    if engine == "fbgemm" and not fbgemm_comparable(g, x_te.numpy()):
        pytest.skip("codes above 127 on a CPU without AVX-512 VNNI: PyTorch's fbgemm GEMM "
                    "saturates int16 pairs there, which the golden model does not model")
    assert g.ops() == {"quantize": 1, "conv2d": 3, "max_pool2d": 1, "flatten": 1, "linear": 1,
                       "dequantize": 1}
    assert [n.attrs["activation"] for n in g.nodes if n.op == "conv2d"] == ["relu"] * 3
    with torch.no_grad():
        n, bad = compare(e(x_te), g.run(x_te))
    count(record_property, f"digits eager {engine}", "run(x) outputs, held-out split", n, bad)
    assert bad == 0


class _Functional(nn.Module):
    """Eager model with FloatFunctional add/cat, avg pooling and a Dropout (convert makes it
    torch.ao.nn.quantized.Dropout, as in torchvision's quantizable MobileNetV2)."""

    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.add = torch.ao.nn.quantized.FloatFunctional()
        self.cat = torch.ao.nn.quantized.FloatFunctional()
        self.pool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        y = self.r1(self.c1(x))
        z = self.add.add_relu(self.c2(y), y)
        z = self.cat.cat([self.pool(z), self.pool(y)], 1)
        return self.dequant(self.drop(self.gap(z)))


@pytest.mark.parametrize("engine", zoo.ENGINES)
def test_eager_functional(engine, record_property):
    from torch.ao import quantization as tq

    torch.manual_seed(0)
    zoo.quant.set_engine(engine)
    m = _Functional().eval()
    data = [torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    with quiet_torch_ao():
        m = tq.fuse_modules(m, [["c1", "r1"]])
        m.qconfig = qconfig_mapping(engine).global_qconfig
        p = tq.prepare(m)
        for xb in data:
            p(xb)
        q = tq.convert(p)
    x = torch.rand(2, 3, 8, 8)
    assert type(q.drop).__module__.startswith("torch.ao.nn.quantized")
    g = zynqnn.from_torch(q, x)
    assert {"add", "concat", "avg_pool2d", "adaptive_avg_pool2d"} <= set(g.ops())
    n = bad = 0
    with torch.no_grad():
        for xr in data[2:]:
            dn, db = compare(q(xr), g.run(xr))
            n, bad = n + dn, bad + db
    count(record_property, f"eager functional {engine}", "run(x) outputs", n, bad)
    assert bad == 0


def test_qnnpack_clamp_bug_is_reported():
    """Without zoo.quant.fix_qnnpack_clamp, torch's qnnpack ReLU6 is wrong: say so."""
    model = zoo.get("mobilenet_v2", width_mult=0.25)
    x = inputs("mobilenet_v2", 1)[0]
    q = _plain_convert(model, x, "qnnpack")
    with pytest.raises(zynqnn.FrontendError, match="fix_qnnpack_clamp"):
        zynqnn.from_torch(q, x)
    zoo.quant.fix_qnnpack_clamp(q)
    g = zynqnn.from_torch(q, x)
    with torch.no_grad():
        assert compare(q(x), g.run(x))[1] == 0


class _Clamps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.ht = nn.Hardtanh(0.5, 3.0)

    def forward(self, x):
        return torch.clamp(self.ht(self.act(self.bn(self.conv(x)))), 0.0, 2.5)


@pytest.mark.parametrize("engine", zoo.ENGINES)
def test_relu6_hardtanh_clamp(engine, record_property):
    torch.manual_seed(0)
    model = zoo.calibrate_bn(_Clamps(), [torch.randn(4, 3, 8, 8)])
    model.bn.bias.data += 1.0
    x = torch.randn(2, 3, 8, 8)
    q = zoo.quantize_fx(model, x, engine=engine, calibration=[x] + [_randn(s) for s in range(3)],
                        qconfig_mapping=qconfig_mapping(engine))
    g = zynqnn.from_torch(q, x)
    assert {"relu6", "hardtanh"} <= set(g.ops())
    n = bad = 0
    with torch.no_grad():
        for s in range(3):
            dn, db = compare(q(_randn(s)), g.run(_randn(s)))
            n, bad = n + dn, bad + db
    count(record_property, f"relu6/hardtanh/clamp {engine}", "run(x) outputs", n, bad)
    assert bad == 0
