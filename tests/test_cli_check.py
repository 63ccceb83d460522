"""``zynqnn check`` and compile errors that name every node the accelerator cannot run, not
just the first (issue 20, item 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zynqnn
from zynqnn import cli
from zynqnn.compiler import CompileError, CompileErrors
from zynqnn.zoo.ort import export_onnx, ort_quantize


class _Refused(nn.Module):
    """Two refusals on separate branches (a padded average pooling and a dilated convolution),
    then an add and a 1x1 convolution that read them."""

    def __init__(self, act=None):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.dilated = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.act = act

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = self.pool(a)
        if self.act is not None:
            b = self.act(b)
        return self.c3(b + self.dilated(x))


def _x(n=1):
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    torch.manual_seed(0)
    flt = export_onnx(_Refused().eval(), _x(), d / "refused.onnx")
    q = ort_quantize(flt, [_x().numpy(), (_x() * 0.5).numpy()], d / "refused_qdq.onnx")
    sig = export_onnx(_Refused(nn.ELU()).eval(), _x(), d / "elu.onnx")
    return flt, q, sig


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_names_every_refused_node(onnx_files):
    from zynqnn.frontend import from_onnx

    graph = from_onnx(onnx_files[1])
    with pytest.raises(CompileErrors) as info:
        zynqnn.compile(graph, "pynq_z2")
    errs = info.value.errors
    assert len(errs) == 2 and all(isinstance(e, CompileError) for e in errs)
    text = str(info.value)
    assert "padded average pooling" in text and "dilation [2, 2]" in text
    # the add and the last convolution read refused outputs: op support checked only
    assert len(info.value.unchecked) >= 2 and "checked for op support only" in text
    assert text.splitlines()[0] == f"2 nodes of graph {graph.name!r} cannot run on the accelerator:"


def test_one_refusal_keeps_its_message():
    """A graph with one refused node raises that CompileError as it always did."""
    from zynqnn.frontend import from_torch
    from zynqnn.zoo.quant import quantize_fx

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2)).eval()
    g = from_torch(quantize_fx(m, _x(), engine="fbgemm", calibration=_x(4)), _x())
    with pytest.raises(CompileError, match=r"^node .*dilation \[2, 2\] is not supported") as info:
        zynqnn.compile(g, "pynq_z2")
    assert not isinstance(info.value, CompileErrors)


def test_check_lists_every_refused_node(capsys, onnx_files):
    for path in onnx_files[:2]:   # float (quantized here) and QDQ
        code, out, err = run(capsys, "check", path)
        assert code == 1, err
        assert "2 of " in out and "nodes cannot run on pynq_z2" in out
        assert "padded average pooling" in out and "dilation [2, 2]" in out


def test_check_lists_unsupported_onnx_operators(capsys, onnx_files):
    code, out, _ = run(capsys, "check", onnx_files[2])
    assert code == 1
    assert "(Elu): operator is not supported" in out


def test_check_passes_a_model_that_maps(capsys):
    code, out, err = run(capsys, "check", "digits")
    assert code == 0, err
    assert out.startswith("digits_cnn-fbgemm: all ") and "nodes map onto pynq_z2" in out


def test_compile_cli_prints_every_refused_node(capsys, onnx_files, tmp_path):
    code, out, err = run(capsys, "compile", onnx_files[1], "-o", tmp_path / "r.zqp")
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("zynqnn compile: error: 2 nodes of graph")
    assert any("padded average" in x for x in lines[1:]) and any("dilation" in x for x in lines[1:])


def test_graph_draws_every_node_and_where_it_runs(capsys, tmp_path):
    import xml.etree.ElementTree as ET


    code, out, err = run(capsys, "graph", "digits", "-o", tmp_path / "d.svg")
    assert code == 0, err
    assert out.startswith("wrote ") and "hardware layers on pynq_z2" in out
    root = ET.parse(tmp_path / "d.svg").getroot()   # well-formed SVG
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for node in ("conv1 (conv2d)", "conv2 (conv2d)", "pool (max_pool2d)", "fc (linear)"):
        assert node in texts
    assert any(t.startswith("-> conv 3x3, ") and t.endswith(" cycles") for t in texts)
    lines = list(root.iter("{http://www.w3.org/2000/svg}line"))
    assert len(lines) >= 7   # one edge per producer -> consumer


def test_graph_marks_refused_nodes(capsys, onnx_files, tmp_path):
    code, _, err = run(capsys, "graph", onnx_files[1], "-o", tmp_path / "r.dot")
    assert code == 0, err
    dot = (tmp_path / "r.dot").read_text()
    assert dot.startswith("digraph ") and dot.count("fillcolor=\"#fde0e0\"") == 2
    assert "REFUSED: dilation [2, 2]" in dot and "REFUSED: padded average pooling" in dot
    code, _, err = run(capsys, "graph", onnx_files[1], "-o", tmp_path / "r.png")
    assert code == 1 and "the picture is a .svg, .html or .dot file" in err
