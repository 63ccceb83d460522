"""Per-layer error report: the API and the ``zynqnn errors`` command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from frontend_helpers import export_onnx, ort_quantize
from torch import nn

import zynqnn
from zynqnn import zoo
from zynqnn.analysis import attach_float_weights, float_shadow
from zynqnn.cli import COMMANDS, main

PNG = b"\x89PNG\r\n\x1a\n"


def test_layer_errors_api(digits_model, digits_data, tmp_path):
    x_tr, _, x_te, _ = digits_data
    q = zoo.quantize_fx(digits_model, x_tr[:1], "qnnpack", x_tr[:256])
    g = zynqnn.from_torch(q, x_te[:2])
    assert attach_float_weights(g, digits_model) == 4  # 3 convs + fc, matched by module name
    rows = zynqnn.layer_errors(g, x_te[:8])
    assert [r.op for r in rows] == ["quantize", "conv2d", "conv2d", "max_pool2d", "conv2d",
                                    "linear"]
    assert [r.name for r in rows][1:3] == ["conv1", "conv2"]
    for r in rows:
        assert 15 < r.sqnr_db < 80 and 0 < r.identical <= 1 and r.max_abs < 1.0
        assert r.values > 0 and not math.isnan(r.max_abs)
    table = rows.table()
    assert "SQNR dB" in table and "conv2" in table
    png = rows.plot(tmp_path / "e.png")
    assert png.read_bytes()[:8] == PNG
    # the float shadow of the graph equals the float model when the weights are the float ones
    ref = float_shadow(g, [x_te[:8].numpy()])
    with torch.no_grad():
        want = digits_model(x_te[:8]).numpy()
    assert np.allclose(ref[g.outputs[0]], want, atol=1e-4)


def test_cli_zoo_model(tmp_path, capsys):
    png = tmp_path / "d.png"
    assert main(["errors", "digits_cnn", "--engine", "pow2", "--calib", "64", "--png",
                 str(png)]) == 0
    out = capsys.readouterr().out
    assert "per-layer quantization error: digits_cnn-pow2" in out and "conv3" in out
    assert png.read_bytes()[:8] == PNG


def test_sensitivity_finds_the_coarse_node(digits_model, digits_data, capsys, tmp_path):
    """Per-node sensitivity: a node whose output grid is made 16x coarser comes first (lowest
    output SQNR when only it is quantized); every conv/linear is listed once, sorted."""
    from zynqnn.analysis import sensitivity

    x_tr, _, x_te, _ = digits_data
    q = zoo.quantize_fx(digits_model, x_tr[:1], "fbgemm", x_tr[:256])
    g = zynqnn.from_torch(q, x_te[:2])
    attach_float_weights(g, digits_model)
    rows = sensitivity(g, x_te[:8])
    assert sorted(r.name for r in rows) == ["conv1", "conv2", "conv3", "fc"]
    assert [r.sqnr_db for r in rows] == sorted(r.sqnr_db for r in rows)
    assert all(10 < r.sqnr_db < 90 for r in rows)
    conv2 = next(n for n in g.nodes if n.name == "conv2")
    t = g.tensors[conv2.outputs[0]]
    t.scale = float(t.scale) * 16
    rows = sensitivity(g, x_te[:8])
    assert rows[0].name == "conv2" and rows[0].sqnr_db < rows[1].sqnr_db - 6
    assert main(["errors", "digits", "--sensitivity", "--png", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "per-node sensitivity: digits_cnn-fbgemm" in out and "output SQNR dB" in out


def test_cli_onnx_files(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.rand(1, 3, 8, 8)
    f = export_onnx(model, x, tmp_path / "small.onnx")
    q = ort_quantize(f, [torch.rand(1, 3, 8, 8).numpy() for _ in range(4)],
                     tmp_path / "small_qdq.onnx")
    for path in (f, q):  # float (quantized here by ONNX Runtime) and already quantized
        png = tmp_path / f"{path.stem}.png"
        assert main(["errors", str(path), "--png", str(png), "--calib", "4"]) == 0
        assert png.read_bytes()[:8] == PNG
    out = capsys.readouterr().out
    assert out.count("conv2d") >= 4


@pytest.mark.parametrize(("argv", "message"), [
    (["errors", "no_such_model"], "unknown model 'no_such_model'"),
    (["errors", "digits_cnn", "--size", "16"], "digits_cnn takes 8x8 inputs"),
    (["errors", "digits_cnn", "--calib", "0"], "--calib and --images must be at least 1"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zynqnn errors: error: ") and message in err[0]


def test_cli_corrupt_onnx(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    assert main(["errors", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.onnx" in err[0]


def test_cli_structure():
    assert "errors" in COMMANDS and COMMANDS["errors"].run is not None
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_float_shadow_transposed_conv_and_tables():
    """A transposed convolution and a lookup table (sigmoid) have float forms: the shadow of a
    torch.ao qnnpack model is its float model within the quantization step of the table's
    grids, and the per-layer report runs."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from zynqnn.analysis import layer_errors

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.t = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)

        def forward(self, x):
            return torch.sigmoid(self.t(torch.relu(self.c(x))))

    torch.manual_seed(0)
    m = Net().eval()
    x = torch.rand(2, 3, 8, 8)
    torch.backends.quantized.engine = "qnnpack"
    p = prepare_fx(m, get_default_qconfig_mapping("qnnpack"), (x,))
    p(x)
    g = zynqnn.from_torch(convert_fx(p), x)
    assert {"conv_transpose2d", "lut"} <= {n.op for n in g.nodes}
    out = float_shadow(g, x.numpy())[g.outputs[0]]
    with torch.no_grad():
        ref = m(x).numpy()
    assert out.shape == ref.shape == (2, 6, 16, 16)
    assert np.abs(out - ref).max() < 2 / 256   # the sigmoid table's output step is 1/256
    rows = layer_errors(g, x.numpy())
    assert {r.op for r in rows} >= {"conv_transpose2d", "lut"}
