"""torch.ao FX quantization of every zoo model (fbgemm and qnnpack), QAT, and the graph fixes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from zynqnn import zoo
from zynqnn.zoo.quant import fix_qnnpack_clamp, quiet_torch_ao

# (name, builder kwargs, test input size, minimal cosine similarity quantized vs float)
CASES = [
    ("resnet18", {}, 32, 0.97),
    ("mobilenet_v2", {}, 32, 0.93),
    ("yolov3_tiny", {}, 64, 0.95),
    ("digits_cnn", {}, None, 0.99),
]

# Quantized op types each model must turn into (the front end imports these).
QCONV = "module:torch.ao.nn.quantized.modules.conv.Conv2d"
QCONV_RELU = "module:torch.ao.nn.intrinsic.quantized.modules.conv_relu.ConvReLU2d"
QLINEAR = "module:torch.ao.nn.quantized.modules.linear.Linear"
EXPECTED_OPS = {
    "resnet18": {
        QCONV_RELU: 9,
        QCONV: 11,
        "function:torch.ops.quantized.add_relu": 8,
        "module:torch.nn.modules.pooling.MaxPool2d": 1,
        "module:torch.nn.modules.pooling.AdaptiveAvgPool2d": 1,
        "function:torch.flatten": 1,
        QLINEAR: 1,
    },
    "mobilenet_v2": {
        QCONV: 52,
        "module:torch.nn.modules.activation.ReLU6": 35,
        "function:torch.ops.quantized.add": 10,
        "module:torch.nn.modules.pooling.AdaptiveAvgPool2d": 1,
        "function:torch.flatten": 1,
        QLINEAR: 1,
    },
    "yolov3_tiny": {
        QCONV: 13,
        "module:torch.ao.nn.quantized.modules.activation.LeakyReLU": 11,
        "module:torch.nn.modules.pooling.MaxPool2d": 6,
        "module:torch.nn.modules.padding.ZeroPad2d": 1,
        "function:torch.nn.functional.interpolate": 1,
        "function:torch.cat": 1,
    },
    "digits_cnn": {
        QCONV_RELU: 3,
        "module:torch.nn.modules.pooling.MaxPool2d": 1,
        "function:torch.flatten": 1,
        QLINEAR: 1,
    },
}


def _outputs(y):
    return list(y) if isinstance(y, tuple) else [y]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("engine", zoo.ENGINES)
@pytest.mark.parametrize(("name", "kwargs", "size", "min_cos"), CASES, ids=[c[0] for c in CASES])
def test_quantize_fx(name, kwargs, size, min_cos, engine):
    model = zoo.get(name, **kwargs)
    x = zoo.example_input(name, size, batch=2)
    calib = [x, zoo.example_input(name, size, batch=2, seed=1)]
    q = zoo.quantize_fx(model, x, engine=engine, calibration=calib)
    assert torch.backends.quantized.engine == engine
    with torch.no_grad():
        ref, out = _outputs(model(x)), _outputs(q(x))
    assert len(out) == len(ref)
    for r, o in zip(ref, out, strict=True):
        assert o.shape == r.shape and o.dtype == torch.float32
        assert _cos(o, r) > min_cos
        assert float((o - r).norm() / r.norm()) < 0.4

    ops = zoo.op_summary(q)
    for op, count in EXPECTED_OPS[name].items():
        assert ops.get(op) == count, (op, ops)
    # fully integer: one quantize at the input, one dequantize per output, no float conv/linear
    assert ops["function:torch.quantize_per_tensor"] == 1
    assert ops["method:dequantize"] == len(ref)
    assert not any(
        k in ops
        for k in ("module:torch.nn.modules.conv.Conv2d", "module:torch.nn.modules.linear.Linear")
    )
    # the model passed in is untouched
    assert not any("Quantized" in type(m).__name__ for m in model.modules())


class _PadUp(nn.Module):
    """conv + LeakyReLU, zero-pad + maxpool 2x2/1 (as in YOLOv3-tiny), nn.Upsample, conv."""

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
def test_integer_domain_pad_and_upsample(engine):
    """With the zynqnn backend config ZeroPad2d and nn.Upsample run on the quantized tensor; torch's
    stock config runs them in float between a dequantize and a requantize."""
    torch.manual_seed(0)
    model = _PadUp().eval()
    x = torch.randn(2, 3, 8, 8)
    ours = zoo.quantize_fx(model, x, engine, calibration=[x])
    stock = zoo.quantize_fx(model, x, engine, backend="native")
    # the rewrite is bit-exact: same as the plain convert_fx result with the same backend config
    with quiet_torch_ao(), torch.no_grad():
        prepared = prepare_fx(
            model, get_default_qconfig_mapping(engine), (x,), backend_config=zoo.backend_config()
        )
        prepared(x)
        plain = convert_fx(prepared, backend_config=zoo.backend_config())
        assert zoo.op_summary(plain)["method:dequantize"] == 3
        assert torch.equal(plain(x), ours(x))
    assert zoo.op_summary(ours)["method:dequantize"] == 1
    # stock: float pad/upsample unless their own observers happened to give the input's qparams
    # (then the rewrite is exact and applies too)
    assert zoo.op_summary(stock)["method:dequantize"] >= 1
    with torch.no_grad():
        ref = model(x)
        for q in (ours, stock):
            assert _cos(q(x), ref) > 0.99
        # the pad pads with the quantized zero: the padded border dequantizes to exactly 0
        q_in = torch.quantize_per_tensor(
            x, ours.conv1_input_scale_0, ours.conv1_input_zero_point_0, torch.quint8
        )
        padded = ours.pad(ours.act(ours.conv1(q_in)))
    assert padded.is_quantized and torch.all(padded.dequantize()[:, :, -1, :] == 0)


def test_quantize_fx_random_calibration_default():
    model = zoo.get("digits_cnn")
    x = zoo.example_input("digits_cnn", batch=4)
    q = zoo.quantize_fx(model, x, engine="qnnpack")  # calibration=None: example + random inputs
    with torch.no_grad():
        assert _cos(q(x), model(x)) > 0.99


class _ConvBnRelu6(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()

    def forward(self, x):
        return torch.clamp(self.act(self.bn(self.conv(x))), 0.0, 4.0)


def test_qnnpack_clamp_workaround():
    """qnnpack's quantized clamp scrambles channels-last input; quantize_fx patches the graph."""
    torch.manual_seed(0)
    model = zoo.calibrate_bn(_ConvBnRelu6(), [torch.randn(4, 3, 8, 8)])
    model.bn.bias.data += 1.0
    x = torch.randn(2, 3, 8, 8)
    q = zoo.quantize_fx(model, x, engine="qnnpack")
    assert zoo.op_summary(q)["method:contiguous"] == 2
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert float((out - ref).abs().max()) < 0.1
    assert fix_qnnpack_clamp(q) == []  # idempotent


def test_qat_finetune_with_batchnorm():
    """QAT on a BN network: fused ConvBn QAT modules, BN freeze and observer freeze both run."""
    model = zoo.get("resnet18", width=8, num_classes=4)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            zoo.example_input("resnet18", 32, batch=8, seed=s),
            torch.randint(0, 4, (8,), generator=gen),
        )
        for s in range(3)
    ]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = zoo.qat_finetune(model, batches, engine="qnnpack", epochs=2, lr=1e-3)
    ops = zoo.op_summary(q)
    assert ops.get(QCONV_RELU) == 9 and ops.get("function:torch.ops.quantized.add_relu") == 8
    x = batches[0][0]
    with torch.no_grad():
        assert torch.isfinite(q(x)).all() and q(x).shape == (8, 4)
    # the caller's model is untouched
    assert not model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # with LR 0 only the BN statistics move (then freeze): the result tracks the float model
    q0 = zoo.qat_finetune(model, batches, engine="qnnpack", epochs=2, lr=0.0)
    with torch.no_grad():
        assert _cos(q0(x), model(x)) > 0.9
