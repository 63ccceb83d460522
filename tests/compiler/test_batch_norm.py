"""Stand-alone quantized BatchNorm (+ ReLU): torch.ao ``BatchNorm2d`` / ``BNReLU2d`` modules and
ONNX Runtime's ``DequantizeLinear -> BatchNormalization [-> Relu] -> QuantizeLinear``
(DenseNet's pre-activation layers, which follow a concatenation and cannot be folded).

The importers measure the framework's own kernel on every input code of every channel (the
``batch_norm`` op's table, checked to be independent of the position); the lowering finds, per
channel, an 8-bit weight (several input slots when the offset needs a finer step) and a TFLite
single-rounding requantization equal to the table on every code the input can hold. Checked
here end to end: every one of the 256 input codes in every channel through the compiled
program on the golden backend, ``array_equal`` with the framework's output.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import zynqnn
from zynqnn.compiler import HwConv
from zynqnn.compiler.testing import check_graph_on_golden, quantized_graph

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

C = 12


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _bn(c, seed, relu=True):
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    bn.weight.data = (0.5 + torch.rand(c, generator=gen)) * torch.where(
        torch.rand(c, generator=gen) < 0.2, -1.0, 1.0)    # some negative slopes too
    bn.bias.data = 0.3 * torch.randn(c, generator=gen)
    bn.running_mean.data = 0.5 + 0.2 * torch.randn(c, generator=gen)
    bn.running_var.data = 0.05 + 0.3 * torch.rand(c, generator=gen)
    return nn.Sequential(bn, nn.ReLU()) if relu else nn.Sequential(bn)


def _all_codes(s, zp, c=C, hw=16):
    """A float batch of one whose quantization holds every code 0..255 in every channel (each
    channel a different arrangement)."""
    rng = np.random.default_rng(0)
    q = np.stack([rng.permutation(256).reshape(hw, hw) for _ in range(c)])[None]
    return ((q - zp) * np.float32(s)).astype(np.float32), q


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack", "onnxruntime"])
@pytest.mark.parametrize("relu", [True, False])
def test_every_code_of_every_channel(flow, relu, tmp_path):
    """A model of one BatchNorm (+ ReLU): its input quantized to every code of every channel;
    the compiled program equals the framework value for value."""
    import torch

    model = _bn(C, 1 if relu else 2, relu).eval()
    gen = torch.Generator().manual_seed(4)
    calib = 2.0 * torch.rand((8, C, 16, 16), generator=gen) - 0.2
    g, ref = quantized_graph(model, calib, flow, tmp_path)
    assert g.ops().get("batch_norm") == 1
    q = g.tensors[g.quant_inputs[0]]
    x, codes = _all_codes(q.scale, q.zero_point)
    assert np.array_equal(g.quantize_input(x), codes)
    model_c, n = check_graph_on_golden(g, ref, x, "pynq_z2")
    assert n == C * 256
    convs = [la for la in model_c.program.net.layers if isinstance(la, HwConv)]
    assert 1 <= len(convs) <= 2        # the BatchNorm, and a copy when a channel needs 2 slots


def densenet_block():
    """Stem conv, a 1x1 branch, their concatenation (14 channels: padding slots on pynq_z2),
    BatchNorm + ReLU, 1x1 conv, global average pooling, linear: DenseNet's pre-activation."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.b1 = nn.Sequential(nn.Conv2d(8, 6, 1), nn.ReLU())
            self.norm = _bn(14, 3)
            self.conv = nn.Conv2d(14, 10, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(10, 4)

        def forward(self, x):
            y = self.stem(x)
            y = self.conv(self.norm(torch.cat([y, self.b1(y)], 1)))
            return self.fc(torch.flatten(self.pool(y), 1))

    return Block().eval()


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack", "onnxruntime"])
def test_batch_norm_after_a_concat(flow, tmp_path):
    import torch

    gen = torch.Generator().manual_seed(5)
    calib = torch.rand((8, 3, 8, 8), generator=gen)
    x = torch.rand((3, 3, 8, 8), generator=gen).numpy()
    g, ref = quantized_graph(densenet_block(), calib, flow, tmp_path)
    assert g.ops().get("batch_norm") == 1
    check_graph_on_golden(g, ref, x, "pynq_z2")


def test_a_kernel_that_depends_on_the_position_is_refused():
    """The measurement refuses a kernel whose code map depends on the element's position."""
    from zynqnn.frontend.common import measure_channel_map

    table = measure_channel_map(lambda xs: 255 - xs, (1, 3, 4, 4), 0, 255)
    assert np.array_equal(table, np.tile(255 - np.arange(256), (3, 1)))
    with pytest.raises(ValueError, match="different output codes at different positions"):
        measure_channel_map(lambda xs: xs + (np.arange(xs.size).reshape(xs.shape) % 2),
                            (1, 2, 4, 4), 0, 255)


def test_solver_reaches_the_finer_offsets():
    """A channel whose codes need an offset finer than slope / 127 (found in DenseNet under
    qnnpack): two input slots (weight 254) reproduce it, one does not."""
    from zynqnn.compiler.lower import _solve_channel
    from zynqnn.numerics import make_requant

    k = np.arange(256) - 118
    target = np.clip(np.floor(1.984 * k + 0.31 + 0.5), 0, 255).astype(np.int64)
    target = np.array(target)
    for wmax in (127, 254, 381):
        sol = _solve_channel(k, target, 0, 0, 255, wmax=wmax)
        if sol is None:
            continue
        w, b, q, sh = sol
        rq = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, 0, np.array([b]), 0, 255,
                          multiplier=np.array([q]), shift=np.array([sh]))
        assert np.array_equal(rq.apply((w * k)[None, :], axis=0)[0], target)
        break
    else:
        pytest.fail("no solution up to 3 slots")


def test_model_file_round_trip_keeps_the_table(tmp_path):
    """The table is an attribute: a saved graph loads and compiles to the same codes."""
    import torch

    gen = torch.Generator().manual_seed(6)
    calib = torch.rand((4, C, 16, 16), generator=gen)
    g, _ = quantized_graph(_bn(C, 7).eval(), calib, "qnnpack", tmp_path)
    g.save(tmp_path / "bn.zqg")
    g2 = zynqnn.load_graph(tmp_path / "bn.zqg")
    x = calib[:2].numpy()
    assert np.array_equal(g.run(x), g2.run(x))


@pytest.mark.slow
def test_every_code_on_verilator(tmp_path):
    """The BatchNorm + ReLU model (qnnpack; 4 channels, every code in each) compiled for tiny
    and run on zynqnn_top in Verilator: equal to PyTorch (its per-channel shifts, multipliers
    and biases through the RTL's post-processing lanes)."""
    import torch

    model = _bn(4, 1).eval()
    gen = torch.Generator().manual_seed(4)
    calib = 2.0 * torch.rand((8, 4, 16, 16), generator=gen) - 0.2
    g, ref = quantized_graph(model, calib, "qnnpack", tmp_path)
    q = g.tensors[g.quant_inputs[0]]
    x, _ = _all_codes(q.scale, q.zero_point, c=4)
    compiled = zynqnn.compile(g, "tiny")
    y = compiled.run(x, backend="verilator")
    assert np.array_equal(y, ref(x)[0]) and np.array_equal(y, g.run(x))
    print(f"BatchNorm 4x16x16 on tiny (Verilator): {compiled.last_cycles[0]} cycles")
