"""Transposed convolution at import: torch.ao's quantized ``ConvTranspose2d`` becomes the IR's
``conv_transpose2d`` (exact integer sums, requantized as the engine's conv), equal to PyTorch's
converted model; the two framework paths that do not compute a reproducible layer are refused
with the reason: fbgemm's direct transposed-convolution kernel and ONNX Runtime's float
``ConvTranspose``. Each claim about the framework is checked here against the framework."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from frontend_helpers import count, export_onnx, ort_quantize
from torch import nn

import zynqnn
from zynqnn.compiler.testing import quantized_graph
from zynqnn.frontend import FrontendError
from zynqnn.ir.kernels import conv_transpose2d_acc


class UpNet(nn.Module):
    """conv + ReLU, then a ConvTranspose2d, then a 1x1 conv."""

    def __init__(self, cin=8, cout=5, k=2, s=2, p=0, op=0, groups=1):
        super().__init__()
        self.c1 = nn.Conv2d(3, cin, 3, padding=1)
        self.up = nn.ConvTranspose2d(cin, cout, k, s, padding=p, output_padding=op,
                                     groups=groups)
        self.c2 = nn.Conv2d(cout, 4, 1)

    def forward(self, x):
        return self.c2(self.up(torch.relu(self.c1(x))))


#: (in, out channels, kernel, stride, padding, output_padding, groups): the U-Net step, the
#: decoders' 3x3 and 4x4 stride 2 (padding, output_padding), stride 3, a kernel smaller than the
#: stride, grouped, stride 1
CASES = {
    "k2s2": (8, 5, 2, 2, 0, 0, 1),
    "k3s2p1op1": (8, 5, 3, 2, 1, 1, 1),
    "k4s2p1": (16, 7, 4, 2, 1, 0, 1),
    "k3s3p1op2": (6, 5, 3, 3, 1, 2, 1),
    "k1s2op1": (6, 6, 1, 2, 0, 1, 1),
    "k4s2p1g2": (8, 6, 4, 2, 1, 0, 2),
    "k3s1p1": (8, 4, 3, 1, 1, 0, 1),
}


def _data(h=7, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, h, w, generator=g) * 2, torch.randn(2, 3, h, w, generator=g)


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_import_equals_pytorch(case, flow, record_property):
    torch.manual_seed(1)
    calib, x = _data()
    g, reference = quantized_graph(UpNet(*CASES[case]).eval(), calib, flow)
    node = next(n for n in g.nodes if n.op == "conv_transpose2d")
    assert node.flavour == f"torch-{flow}"
    cin, cout, k, s, p, op, groups = CASES[case]
    assert (node.attrs["stride"], node.attrs["padding"], node.attrs["output_padding"]) == (
        [s, s], [p, p, p, p], [op, op])
    y = g.run(x.numpy())
    want = reference(x.numpy())[0]
    assert y.shape == want.shape and np.array_equal(y, want)
    count(record_property, f"ConvTranspose2d {case}", f"torch.ao {flow} run(x)", y.size, 0)


def _direct(cin, cout, stride, weights):
    m = nn.Module()
    q = torch.ao.nn.quantized.ConvTranspose2d(cin, cout, 2, stride)
    wq = torch._make_per_tensor_quantized_tensor(torch.tensor(weights, dtype=torch.int8), 1.0, 0)
    q.set_weight_bias(wq, torch.zeros(cout))
    q.scale, q.zero_point = 1.0, 128     # output code = accumulator + 128
    m.q = q
    return q


def test_fbgemm_direct_kernel_is_what_it_is():
    """What the refusal below says, measured: fbgemm's direct transposed-convolution kernel
    (kernel height 2, channels multiples of 8, no padding) places input row i at output rows
    i, i + 1 whatever the stride (stride 2: rows past H + 1 hold the bias alone), and with
    stride 1 the module's weight() returns other weights than the kernel computes with."""
    torch.backends.quantized.engine = "fbgemm"
    rng = np.random.default_rng(0)
    wi = rng.integers(-3, 4, (8, 8, 2, 2))
    m = _direct(8, 8, 2, wi)
    x = np.zeros((1, 8, 3, 4), np.uint8)
    x[0, 2, 1, 1] = 1                      # one input pixel: row 1
    xq = torch._make_per_tensor_quantized_tensor(torch.tensor(x), 1.0, 0)
    with torch.no_grad():
        acc = m(xq).int_repr().numpy().astype(np.int64) - 128
    want = conv_transpose2d_acc(x, wi, 0, 0, (2, 2))
    assert np.array_equal(want[0, :, 2:4, 2:4], wi[2]) and not want[0, :, 1].any()
    assert np.array_equal(acc[0, :, 1:3, 2:4], wi[2])           # rows 1..2, not 2..3
    assert not np.array_equal(acc, want)
    m1 = _direct(8, 8, 1, wi)
    assert not np.array_equal(m1.weight().int_repr().numpy(), wi)


@pytest.mark.parametrize("stride", [2, 1])
def test_fbgemm_direct_kernel_is_refused(stride):
    torch.manual_seed(1)
    calib, _ = _data()
    with pytest.raises(FrontendError, match=r"torch node 'up' .*fbgemm's direct transposed-"
                                            r"convolution kernel, which (steps the input rows by "
                                            r"1 instead of 2|computes with weights that the "
                                            r"module's weight\(\) does not return).*Quantize with "
                                            r"the qnnpack engine") as e:
        quantized_graph(UpNet(8, 8, 2, stride).eval(), calib, "fbgemm")
    assert e.value.node == "up"
    # qnnpack: the same layer imports, equal to PyTorch
    g, reference = quantized_graph(UpNet(8, 8, 2, stride).eval(), calib, "qnnpack")
    x = calib[:2].numpy()
    assert np.array_equal(g.run(x), reference(x)[0])


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
def test_onnx_conv_transpose_is_refused(fmt, tmp_path):
    """ONNX Runtime runs ConvTranspose in float in both formats (its optimized model keeps a
    float ConvTranspose between DequantizeLinear and QuantizeLinear: no QLinear kernel), so the
    node is refused naming it, with the reason and what to do."""
    import onnxruntime as ort

    torch.manual_seed(1)
    calib, _ = _data()
    f = export_onnx(UpNet().eval(), calib[:1], tmp_path / "up.onnx")
    q = ort_quantize(f, [c[None].numpy() for c in calib], tmp_path / f"up-{fmt}.onnx", fmt=fmt,
                     per_channel=True, reduce_range=True)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
    ran = [(n.op_type, n.domain) for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ("ConvTranspose", "") in ran and not any("ConvTranspose" in t and t != "ConvTranspose"
                                                    for t, _ in ran)
    with pytest.raises(FrontendError, match=r"ONNX node '/up/ConvTranspose' \(ConvTranspose\) "
                                            r"in \S*up-q\w+\.onnx: operator is not supported: "
                                            r"ONNX Runtime's CPU provider has no integer "
                                            r"ConvTranspose.*torch\.ao \(qnnpack\)"):
        zynqnn.from_onnx(q)


def test_graph_file_and_validation(tmp_path):
    """A graph with a conv_transpose2d saves and loads (same outputs); per-channel weights and
    wrong shapes are refused by validation naming the node."""
    from zynqnn import load_graph
    from zynqnn.ir import IRError

    torch.manual_seed(1)
    calib, x = _data()
    g, _ = quantized_graph(UpNet(*CASES["k3s2p1op1"]).eval(), calib, "qnnpack")
    g.save(tmp_path / "g.zqg")
    g2 = load_graph(tmp_path / "g.zqg")
    assert np.array_equal(g2.run(x.numpy()), g.run(x.numpy()))
    node = next(n for n in g2.nodes if n.op == "conv_transpose2d")
    node.attrs["output_padding"] = [-1, 0]
    with pytest.raises(IRError, match=r"'up'.*'output_padding' must be two integers >= 0"):
        g2.validate()
    node.attrs["output_padding"] = [1, 1]
    w = g2.tensors[node.inputs[1]]
    w.scale, w.zero_point, w.axis = np.full(w.shape[0], w.scale), np.zeros(w.shape[0],
                                                                            np.int64), 0
    with pytest.raises(IRError, match=r"'up'.*per-channel; a transposed convolution takes "
                                      r"per-tensor weights"):
        g2.validate()
