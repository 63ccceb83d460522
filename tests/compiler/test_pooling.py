"""Pooling beyond the hardware's own windows (issue 20): max pooling with strides 4 and 8 (a
chain of stride-1/2 poolings), average pooling over windows smaller than the map (a depthwise
convolution with weights 1 and the requantization that reproduces the framework's average, at
stride 1 and subsampled for strides above 2). Each case is compiled, run on the golden backend
(the command stream on zynqnn.machine) and compared with graph.run and with the framework
(PyTorch's quantized model; zynqnn's fixed16 on the int16 build) with array_equal; and the
refusals that remain say why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zynqnn.compiler import CompileError
from zynqnn.compiler.testing import check_graph_on_golden, config_of, quantized_graph

POOLS = {
    "max4": lambda: nn.MaxPool2d(4),
    "max4_ceil": lambda: nn.MaxPool2d(4, ceil_mode=True),
    "max3_s4_pad1": lambda: nn.MaxPool2d(3, 4, 1),
    "max8": lambda: nn.MaxPool2d(8),
    "max5_s4_ceil": lambda: nn.MaxPool2d(5, 4, ceil_mode=True),
    "avg2": lambda: nn.AvgPool2d(2),
    "avg3_s1": lambda: nn.AvgPool2d(3, 1),
    "avg3_s2": lambda: nn.AvgPool2d(3, 2),
    "avg4": lambda: nn.AvgPool2d(4),
}


def _net(pool, channels=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), pool,
                         nn.Conv2d(channels, 16, 1)).eval()


def _x(n, size=17, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread():
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = engine


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack", "fixed16"])
@pytest.mark.parametrize("pool", list(POOLS))
def test_pooling_exact_on_golden(pool, flow, tmp_path):
    size = 16 if pool.startswith("avg") else 17   # odd sizes: windows past the input (ceil)
    g, ref = quantized_graph(_net(POOLS[pool]()), _x(8, size), flow, tmp_path)
    model, n = check_graph_on_golden(g, ref, _x(2, size, seed=1).numpy(),
                                     config_of(flow, "pynq_z2"))
    assert n == 2 * 16 * (g.tensors[g.outputs[0]].shape[2] ** 2)


@pytest.mark.parametrize("pool, why", [
    (lambda: nn.AvgPool2d(3, 1, 1), "padded average pooling is not supported"),
    (lambda: nn.AvgPool2d(2, ceil_mode=True), "ceil_mode: the last windows"),
    (lambda: nn.MaxPool2d(3, 3), "stride 3: the hardware pools with strides 1 and 2"),
    (lambda: nn.AvgPool2d(3, 3), "stride 3: the hardware pools with strides 1 and 2"),
])
def test_pooling_refusals_say_why(pool, why, tmp_path):
    import zynqnn

    g, _ = quantized_graph(_net(pool()), _x(4), "fbgemm", tmp_path)
    with pytest.raises(CompileError, match=why):
        zynqnn.compile(g, "pynq_z2")
