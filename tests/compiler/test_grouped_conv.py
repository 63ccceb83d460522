"""Grouped convolutions (groups between 1 and the channel count, as ResNeXt, ShuffleNet and
AlexNet-style layers use them; issue 20) run as one convolution with block-diagonal weights:
compiled, run on the golden backend and compared with graph.run and the framework (PyTorch's
quantized model, ONNX Runtime) with array_equal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zynqnn.compiler.testing import check_graph_on_golden, quantized_graph


@pytest.fixture(autouse=True)
def _one_thread():
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = engine


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack", "onnxruntime"])
@pytest.mark.parametrize("cin, cout, groups, k", [(16, 32, 4, 3), (12, 18, 3, 3), (24, 24, 2, 1)])
def test_grouped_conv_exact(flow, cin, cout, groups, k, tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, cin, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.ReLU(),
                      nn.Conv2d(cout, 8, 1)).eval()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    g, ref = quantized_graph(m, x, flow, tmp_path)
    assert any(n.op == "conv2d" and n.attrs.get("groups") == groups for n in g.nodes)
    _, n = check_graph_on_golden(g, ref, x[:2].numpy(), "pynq_z2")
    assert n == 2 * 8 * 8 * 8
