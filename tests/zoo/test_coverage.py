"""The model-coverage table builder (zynqnn.zoo.coverage, ``make coverage``) on tiny
architectures: each cell's result is what it must be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zynqnn
from zynqnn.zoo import coverage
from zynqnn.zoo.coverage import ARCHS, Arch, arch_size, build_model, build_table, inputs


class _UpNet(nn.Module):
    """conv + BN + ReLU, then a 2x2 stride-2 ConvTranspose2d (a U-Net's up step)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 4, 2, 2)

    def forward(self, x):
        return self.up(self.conv(x))


UPNET = Arch("upnet", "conv + ConvTranspose2d", _UpNet, 16, norm="unit")
FLOWS = ["qnnpack", "ort-qdq"]


@pytest.fixture(scope="module")
def table():
    return build_table(["lenet5", "lenet5_tanh", UPNET], FLOWS)


def test_exact_cells_equal_the_framework(table):
    for flow in FLOWS:
        cell = table.cells[("lenet5", flow)]
        assert (cell.status, cell.text) == ("exact", "exact"), cell.detail
        assert cell.detail == "10 values equal" and cell.seconds > 0
    # the same cell by hand: qnnpack's converted model and the compiled golden run agree
    from zynqnn.zoo.quant import cpu_independent_qconfig_mapping, quantize_fx, quiet_torch_ao

    arch = ARCHS["lenet5"]
    model = build_model(arch)
    calib = inputs(arch, 32, 4, 1000)
    x = inputs(arch, 32, 1, 2000)
    with quiet_torch_ao():
        q = quantize_fx(model, calib[:1], engine="qnnpack", calibration=calib,
                        qconfig_mapping=cpu_independent_qconfig_mapping("qnnpack"))
        g = zynqnn.from_torch(q, calib[:1], engine="qnnpack")
    got = zynqnn.compile(g, "pynq_z2").run(x.numpy())
    with torch.no_grad():
        want = q(x).numpy()
    assert got.shape == want.shape == (1, 10) and np.array_equal(got, want)


def test_refusals_name_the_op(table):
    """The transposed convolution is exact under torch.ao (qnnpack); ONNX Runtime runs it in
    float, refused with that reason."""
    cell = table.cells[("upnet", "qnnpack")]
    assert (cell.status, cell.text) == ("exact", "exact"), cell.detail
    cell = table.cells[("upnet", "ort-qdq")]
    assert cell.status == "import" and cell.text.startswith(
        "refused at import: ConvTranspose: operator is not supported: ONNX Runtime's CPU"), \
        cell.text
    assert "has no integer ConvTranspose" in cell.detail and "/up/ConvTranspose" in cell.detail


def test_tanh_is_a_lookup_table(table):
    """LeNet-5 classic: tanh as an ELTWISE table lookup, exact with torch.ao; ONNX Runtime's QDQ
    quantizer leaves tanh and the average pool after it both in float (no Q between them), which
    is no function of one code."""
    cell = table.cells[("lenet5_tanh", "qnnpack")]
    assert (cell.status, cell.text) == ("exact", "exact"), cell.detail
    cell = table.cells[("lenet5_tanh", "ort-qdq")]
    assert cell.status == "import" and cell.text.startswith(
        "refused at import: AveragePool: input"), cell.text
    assert "is the float output of '/features/features.1/Tanh', not re-quantized" in cell.detail


def test_table_counts_and_markdown(table):
    assert table.counts() == {"exact": 4, "import": 2}
    assert table.summary() == "exact: 4 of 6 cells; refused at import: 2"
    md = table.markdown().splitlines()
    assert md[0] == "| architecture (input) | `qnnpack` | `ort-qdq` |"
    assert md[2].startswith("| LeNet-5 (ReLU, max pool) 32x32 | exact (")
    assert md[4].startswith("| conv + ConvTranspose2d 16x16 | exact (")
    assert md[-1] == "exact: 4 of 6 cells; refused at import: 2."


def test_a_mismatch_is_counted(monkeypatch):
    torch_flow = coverage._torch_flow

    def off_by_one(*args):
        g, reference = torch_flow(*args)

        def wrong(x):
            ys = [y.copy() for y in reference(x)]
            ys[0].flat[3] += 1.0
            return ys

        return g, wrong

    monkeypatch.setattr(coverage, "_torch_flow", off_by_one)
    cell = build_table(["lenet5"], ["qnnpack"]).cells[("lenet5", "qnnpack")]
    assert (cell.status, cell.text) == ("differs", "differs (1 of 10)")


def test_a_crash_is_reported_and_the_table_goes_on(monkeypatch):
    def boom(graph, config):
        raise RuntimeError("boom")

    monkeypatch.setattr(zynqnn, "compile", boom, raising=False)
    t = build_table([UPNET, "lenet5"], ["ort-qdq"])
    assert t.cells[("upnet", "ort-qdq")].status == "import"   # refused before compile
    cell = t.cells[("lenet5", "ort-qdq")]
    assert (cell.status, cell.text) == ("crash", "crash at compile: RuntimeError: boom")
    assert t.problems() == [cell]


def test_sizes_and_names():
    assert arch_size(ARCHS["yolov8n"], 40) == 64 and arch_size(ARCHS["lenet5"], 64) == 32
    with pytest.raises(KeyError, match="unknown architecture"):
        build_table(["vgg99"])
    with pytest.raises(KeyError, match="unknown flow"):
        build_table(["lenet5"], ["tflite"])
