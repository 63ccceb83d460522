"""Bad input: every failure is a FrontendError (or IRError) naming the node or file and why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from frontend_helpers import export_onnx, ort_quantize
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx

import zynqnn
from zynqnn import zoo
from zynqnn.frontend import FrontendError
from zynqnn.zoo.quant import quiet_torch_ao


class _ConvSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv2(torch.sigmoid(self.conv(x)))


class _ConvSwish(nn.Module):
    """conv -> x * sigmoid(x) -> conv: torch.ao keeps the multiply of two quantized tensors,
    which zynqnn has no arithmetic for (ONNX's x * Sigmoid(x) is a table of x's code)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.conv2(y * torch.sigmoid(y))


def _x(shape=(2, 3, 8, 8)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def test_torch_unsupported_op_names_the_node():
    torch.manual_seed(0)
    q = zoo.quantize_fx(_ConvSwish().eval(), _x(), "fbgemm")
    with pytest.raises(FrontendError, match=r"torch node 'mul_1' \(call_function mul\): this "
                                            r"arithmetic is not supported") as e:
        zynqnn.from_torch(q, _x())
    assert e.value.node == "mul_1"


class _ConvGate(nn.Module):
    """conv -> y * sigmoid(another conv) -> conv: a multiply of two tensors, no hardware."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv2(self.conv(x) * torch.sigmoid(self.gate(x)))


def test_onnx_unsupported_op_names_the_node(tmp_path):
    """x * Sigmoid(x) imports (a lookup table of x's code); a multiply of two tensors is refused
    by name, in both forms."""
    torch.manual_seed(0)
    f = export_onnx(_ConvSwish().eval(), _x(), tmp_path / "swish.onnx")
    q = ort_quantize(f, [_x().numpy()], tmp_path / "swish_qdq.onnx")
    assert [n.attrs["function"] for n in zynqnn.from_onnx(q).nodes if n.op == "lut"] == ["silu"]
    from zynqnn.frontend.onnx_import import unsupported_nodes

    assert unsupported_nodes(f) == [] and unsupported_nodes(q) == []   # zynqnn check
    f = export_onnx(_ConvGate().eval(), _x(), tmp_path / "gate.onnx")
    assert unsupported_nodes(f) == [("/Mul", "Mul")]
    q = ort_quantize(f, [_x().numpy()], tmp_path / "gate_qdq.onnx")
    with pytest.raises(FrontendError, match=r"ONNX node '/Mul' \(Mul\) in \S*gate_qdq\.onnx: "
                                            r"element-wise multiply of two activations is "
                                            r"not supported") as e:
        zynqnn.from_onnx(q)
    assert e.value.node == "/Mul"
    q = ort_quantize(f, [_x().numpy()], tmp_path / "gate_qop.onnx", fmt="qop")
    with pytest.raises(FrontendError, match=r"\(QLinearMul\) in \S*gate_qop\.onnx: element-wise "
                                            r"multiply.*not supported"):
        zynqnn.from_onnx(q)


def test_float_onnx_model_is_not_quantized(tmp_path):
    torch.manual_seed(0)
    f = export_onnx(_ConvSigmoid().eval(), _x(), tmp_path / "sig.onnx")
    with pytest.raises(FrontendError, match=r"sig.onnx: the model is not quantized"):
        zynqnn.from_onnx(f)


def test_non_4d_and_dynamic_shapes(tmp_path):
    q = zoo.quantize_fx(zoo.get("digits_cnn"), _x((2, 1, 8, 8)), "fbgemm")
    with pytest.raises(FrontendError, match=r"example_input\[0\]: zynqnn takes 4-D NCHW inputs, "
                                            r"got shape \[2, 64\]"):
        zynqnn.from_torch(q, torch.rand(2, 64))
    mlp = nn.Sequential(nn.Linear(16, 4)).eval()
    f = tmp_path / "mlp.onnx"
    with torch.no_grad():
        torch.onnx.export(mlp, (torch.rand(1, 16),), str(f), dynamo=False, input_names=["x"])
    with pytest.raises(FrontendError, match=r"mlp.onnx: input 'x' has shape \[1, 16\]; zynqnn "
                                            r"takes 4-D NCHW inputs"):
        zynqnn.from_onnx(f)
    g = tmp_path / "dyn.onnx"
    with torch.no_grad():
        torch.onnx.export(_ConvSigmoid().eval(), (_x(),), str(g), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(FrontendError, match=r"dynamic shape \['n', 3, 'h', 'w'\]"):
        zynqnn.from_onnx(g)
    with pytest.raises(FrontendError, match="4-D"):
        zynqnn.quantize(zoo.get("digits_cnn"), torch.rand(8, 64))


@pytest.mark.parametrize("data", [None, torch.empty(0, 1, 8, 8), []],
                         ids=["none", "empty-tensor", "no-batches"])
def test_missing_calibration_data(data, digits_model):
    with pytest.raises(FrontendError, match="calibration data"):
        zynqnn.quantize(digits_model, data)


def test_model_not_quantized(digits_model):
    with pytest.raises(FrontendError, match="DigitsCNN is not quantized"):
        zynqnn.from_torch(digits_model, _x((1, 1, 8, 8)))
    torch.backends.quantized.engine = "fbgemm"
    with quiet_torch_ao():
        p = prepare_fx(digits_model, get_default_qconfig_mapping("fbgemm"), (_x((1, 1, 8, 8)),))
    with pytest.raises(FrontendError, match="prepared but not converted"):
        zynqnn.from_torch(p, _x((1, 1, 8, 8)))


def test_mixed_engines():
    q = zoo.quantize_fx(zoo.get("digits_cnn"), _x((2, 1, 8, 8)), "fbgemm")
    with pytest.raises(FrontendError, match="mixed engines: engine='qnnpack'.*'fbgemm'"):
        zynqnn.from_torch(q, _x((2, 1, 8, 8)), engine="qnnpack")
    torch.backends.quantized.engine = "x86"
    try:
        with pytest.raises(FrontendError, match="engine 'x86' is not supported"):
            zynqnn.from_torch(q, _x((2, 1, 8, 8)))
    finally:
        torch.backends.quantized.engine = "fbgemm"
    # converted (packed) under qnnpack, run under fbgemm: convs and the rest would disagree
    x = _x((2, 1, 8, 8))
    qq = zoo.quantize_fx(zoo.get("digits_cnn"), x, "qnnpack")
    with torch.no_grad():
        before = qq(x)
    torch.backends.quantized.engine = "fbgemm"
    with pytest.raises(FrontendError, match=r"mixed engines: ConvReLU2d 'conv1' was packed "
                                            r"\(converted\) under qnnpack.*'fbgemm'") as e:
        zynqnn.from_torch(qq, x)
    assert e.value.node == "conv1"
    torch.backends.quantized.engine = "qnnpack"
    with torch.no_grad():
        assert torch.equal(qq(x), before)  # the probe left the model as it was
    assert zynqnn.from_torch(qq, x).flavours() == {"torch-qnnpack"}
    torch.backends.quantized.engine = "fbgemm"
    g = zynqnn.from_torch(q, _x((2, 1, 8, 8)))
    g.nodes[2].flavour = "torch-qnnpack"
    with pytest.raises(zynqnn.IRError, match="mixes PyTorch engines"):
        g.validate()


def test_corrupt_and_truncated_onnx(tmp_path):
    torch.manual_seed(0)
    f = export_onnx(_ConvSigmoid().eval(), _x(), tmp_path / "m.onnx")
    q = ort_quantize(f, [_x().numpy()], tmp_path / "m_qdq.onnx")
    raw = q.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(FrontendError, match=r"trunc.onnx: (not a valid|invalid) ONNX model"):
        zynqnn.from_onnx(tmp_path / "trunc.onnx")
    (tmp_path / "junk.onnx").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(FrontendError, match="junk.onnx: (not a valid|invalid) ONNX model"):
        zynqnn.from_onnx(tmp_path / "junk.onnx")
    with pytest.raises(FrontendError, match="missing.onnx: no such ONNX file"):
        zynqnn.from_onnx(tmp_path / "missing.onnx")


def test_untraceable_and_unsupported_float_model():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(FrontendError, match="cannot trace Branchy with torch.fx"):
        zynqnn.quantize(Branchy(), torch.rand(4, 1, 8, 8))
    with pytest.raises(FrontendError, match=r"float node 'sigmoid'.*not supported"):
        zynqnn.quantize(_ConvSigmoid(), torch.rand(4, 3, 8, 8))
    with pytest.raises(FrontendError, match="unknown scheme 'int4'"):
        zynqnn.quantize(_ConvSigmoid(), torch.rand(4, 3, 8, 8), scheme="int4")
    with pytest.raises(FrontendError, match="override 'nope': no conv or linear layer"):
        zynqnn.quantize(zoo.get("digits_cnn"), torch.rand(4, 1, 8, 8),
                        overrides={"nope": {"bits": 16}})


def test_onnx_unsupported_attribute(tmp_path):
    """A QDQ model with a reflect pad names the node and the reason."""
    class ReflectPad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))

    f = export_onnx(ReflectPad().eval(), _x(), tmp_path / "r.onnx")
    q = ort_quantize(f, [_x().numpy()], tmp_path / "r_qdq.onnx")
    with pytest.raises(FrontendError, match=r"\(Pad\).*pad mode 'reflect' is not supported"):
        zynqnn.from_onnx(q)
    m = onnx.load(str(q))
    assert any(n.op_type == "Pad" for n in m.graph.node)
    assert np.isfinite(1.0)


# -------------------------------------------------------------------------------------------------
# messages that say what is wrong: NaN scales, non-finite calibration data, weight scales


class _ConvReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv(x)))


def _with_initializer(src, dst, name, value):
    """A copy of the ONNX file ``src`` with every value of initializer ``name`` set."""
    from onnx import numpy_helper

    m = onnx.load(str(src))
    for init in m.graph.initializer:
        if init.name == name:
            a = numpy_helper.to_array(init).copy()
            a[...] = value
            init.CopyFrom(numpy_helper.from_array(a, name))
            break
    else:
        raise AssertionError(f"no initializer {name!r}")
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("init, value, message", [
    ("x_scale", float("nan"),
     r"ONNX node 'x_QuantizeLinear' \(QuantizeLinear\) in nan\.onnx: scale 'x_scale' is NaN; "
     r"a scale must be finite and > 0"),
    ("/Relu_output_0_scale", float("nan"),
     r"ONNX node '/Relu_output_0_QuantizeLinear' \(QuantizeLinear\) in nan\.onnx: scale "
     r"'/Relu_output_0_scale' is NaN"),
    ("conv.weight_scale", float("nan"),
     r"ONNX node 'conv.weight_DequantizeLinear' \(DequantizeLinear\) in nan\.onnx: scale "
     r"'conv.weight_scale' is NaN \(4 of its 4 values are NaN or infinite\)"),
    ("conv2.weight_scale", float("inf"),
     r"ONNX node 'conv2.weight_DequantizeLinear' \(DequantizeLinear\) in nan\.onnx: scale "
     r"'conv2.weight_scale' is infinite"),
    # zero and negative scales: named like NaN ones (they used to read "ONNX import produced
    # an invalid graph" naming neither the file nor the node)
    ("x_scale", 0.0,
     r"ONNX node 'x_QuantizeLinear' \(QuantizeLinear\) in nan\.onnx: scale 'x_scale' is zero; "
     r"a scale must be finite and > 0"),
    ("conv.weight_scale", -0.5,
     r"ONNX node 'conv.weight_DequantizeLinear' \(DequantizeLinear\) in nan\.onnx: scale "
     r"'conv.weight_scale' is negative \(4 of its 4 values are <= 0\)"),
], ids=["input", "activation", "weight", "weight-inf", "input-zero", "weight-negative"])
def test_onnx_nan_scale_names_node_and_scale(tmp_path, init, value, message):
    """A NaN scale used to read "other qparams (s=nan, ...) than it was quantized with
    (s=nan, ...)" (NaN is unequal to itself); now the Q/DQ node and its scale say so."""
    torch.manual_seed(0)
    f = export_onnx(_ConvReLU().eval(), _x(), tmp_path / "m.onnx")
    q = ort_quantize(f, [_x().numpy()], tmp_path / "m_qdq.onnx")
    zynqnn.from_onnx(q)  # the unedited model imports
    bad = _with_initializer(q, tmp_path / "nan.onnx", init, value)
    with pytest.raises(FrontendError, match=message) as e:
        zynqnn.from_onnx(bad)
    assert "other qparams" not in str(e.value)


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), "some-nan"])
def test_non_finite_calibration_data_says_so(fill):
    """All-NaN (or all-inf, or NaN in every batch) calibration data used to read "no
    calibration statistics"."""
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    data = (torch.where(x > 0.5, x, float("nan")) if fill == "some-nan"
            else torch.full_like(x, fill))
    bad = int((~torch.isfinite(data)).sum())
    with pytest.raises(FrontendError, match=rf"float node 'x': no finite range to calibrate: "
                                            rf"{bad} of the 768 values of the calibration data "
                                            "are NaN or infinite"):
        zynqnn.quantize(_ConvReLU().eval(), data, example_input=x[:1])


@pytest.mark.parametrize("scheme", ["tflite", "pow2"])
def test_nan_weights_name_the_layer(scheme):
    """NaN weights used to surface as the next node's missing calibration statistics (tflite)
    or a bare "cannot convert float NaN to integer" (pow2)."""
    torch.manual_seed(0)
    m = _ConvReLU().eval()
    with torch.no_grad():
        m.conv.weight[1] = float("nan")
    x = _x((4, 3, 8, 8))
    with pytest.raises(FrontendError, match=r"float node 'conv': the weight holds 27 NaN or "
                                            r"infinite values \(of 108\)"):
        zynqnn.quantize(m, x, example_input=x[:1], scheme=scheme)


@pytest.mark.parametrize("value", [0.0, float("nan"), -1.0])
def test_torch_weight_scale_names_the_weight(value):
    """A bad weight scale of a quantized conv names the weight; a zero scale used to read
    "torch-fbgemm: s_in must be finite and > 0, not inf" (the engine probe's input scale,
    derived from the bias)."""
    torch.manual_seed(0)
    x = _x((4, 3, 8, 8))
    q = zoo.quantize_fx(_ConvReLU().eval(), x, "fbgemm")
    w, b = q.conv.weight(), q.conv.bias()
    scales = w.q_per_channel_scales().clone()
    scales[2] = value
    q.conv.set_weight_bias(torch._make_per_channel_quantized_tensor(
        w.int_repr(), scales.double(), w.q_per_channel_zero_points(), 0), b)
    with pytest.raises(FrontendError, match=rf"torch node 'conv' .*: weight 'conv\.weight' has "
                                            rf"scale {value!r} \(channel 2 of 4\); a scale must "
                                            r"be finite and > 0") as e:
        zynqnn.from_torch(q, x)
    assert "s_in" not in str(e.value)
