"""Channel split (``chunk`` / ``split`` / ``x[:, a:b]``, ONNX ``Split`` / ``Slice``) and
channel shuffle (``view`` / ``transpose`` / ``view``, ONNX ``Reshape`` / ``Transpose`` /
``Reshape``) end to end: torch.ao FX (fbgemm, qnnpack) and ONNX Runtime (QDQ, QOperator) ->
IR -> compile -> the command stream on the golden backend, ``array_equal`` with the framework.

Both are views in the lowering (docs/compiler.md, "Channel slots"): a part of a split and a
shuffled map are the producer's hardware tensor seen through other slots; the consumers'
weights follow them. A copy (a 1x1 0/1 convolution) is made only where a layout forces it: a
part that goes into a concatenation without its other parts, a depthwise layer, an add.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import zynqnn
from zynqnn.compiler import HwConcat, HwConv
from zynqnn.compiler.testing import check_graph_on_golden, quantized_graph
from zynqnn.frontend import FrontendError

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

_GRAPHS: dict = {}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cbr(i, o, k, groups=1, relu=True):
    from torch import nn

    layers = [nn.Conv2d(i, o, k, padding=k // 2, groups=groups), nn.BatchNorm2d(o)]
    return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


def _init(m, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data = 0.5 + torch.rand(mod.weight.shape, generator=gen)
            mod.bias.data = 0.1 * torch.randn(mod.bias.shape, generator=gen)
            mod.running_mean.data = 0.1 * torch.randn(mod.running_mean.shape, generator=gen)
            mod.running_var.data = 0.5 + torch.rand(mod.running_var.shape, generator=gen)
    return m.eval()


def c2f():
    """YOLOv8's C2f with odd widths (cv1: 10 channels, halves of 5), a bottleneck with a
    shortcut on the second half, the concatenation of both halves and the bottleneck's output,
    then ``torch.split`` into 3 + 12 channels and ``x[:, 2:9]`` consumed by convolutions."""
    import torch
    from torch import nn

    class C2f(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _cbr(3, 8, 3)
            self.cv1 = _cbr(8, 10, 1)
            self.m1 = _cbr(5, 5, 3)
            self.m2 = _cbr(5, 5, 3)
            self.cv2 = _cbr(15, 15, 1)
            self.a = _cbr(3, 6, 3)
            self.b = _cbr(7, 6, 1)

        def forward(self, x):
            a, b = self.cv1(self.stem(x)).chunk(2, 1)
            m = b + self.m2(self.m1(b))
            y = self.cv2(torch.cat([a, b, m], 1))
            p, _ = torch.split(y, [3, 12], dim=1)
            return self.a(p) + self.b(y[:, 2:9])

    return _init(C2f(), 1)


def channel_shuffle(x, groups: int):
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = __import__("torch").transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


def shuffle():
    """Two ShuffleNetV2 units (12 channels): ``chunk`` in halves, the second half through 1x1,
    3x3 depthwise and 1x1 convolutions, concatenated with the first, channel shuffle of two
    groups; then a 1x1 convolution, global average pooling and a linear layer."""
    import torch
    from torch import nn

    class Unit(nn.Module):
        def __init__(self, c):
            super().__init__()
            h = c // 2
            self.branch = nn.Sequential(_cbr(h, h, 1), _cbr(h, h, 3, groups=h, relu=False),
                                        _cbr(h, h, 1))

        def forward(self, x):
            x1, x2 = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat((x1, self.branch(x2)), 1), 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _cbr(3, 12, 3)
            self.u1, self.u2 = Unit(12), Unit(12)
            self.head = _cbr(12, 16, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.head(self.u2(self.u1(self.stem(x))))),
                                         1))

    return _init(Net(), 2)


MODELS = {"c2f": c2f, "shuffle": shuffle}
SHAPE = (3, 8, 8)


def _qop_graph(model, calib, workdir):
    from zynqnn.zoo.ort import export_onnx, ort_quantize, ort_session

    fpath = export_onnx(model, calib[:1], workdir / "model.onnx")
    path = ort_quantize(fpath, [c[None] for c in calib.numpy()], workdir / "model-qop.onnx",
                        fmt="qop", per_channel=True, reduce_range=True)
    sess = ort_session(path)

    def reference(x):
        runs = [sess.run(None, {"x": np.ascontiguousarray(s[None], dtype=np.float32)})
                for s in x]
        return [np.concatenate(ys) for ys in zip(*runs, strict=True)]

    return zynqnn.from_onnx(path), reference


def graph_of(name, flow, tmp_path_factory):
    import torch

    key = (name, flow)
    if key not in _GRAPHS:
        gen = torch.Generator().manual_seed(7)
        calib = torch.rand((8, *SHAPE), generator=gen)
        x = torch.rand((3, *SHAPE), generator=gen).numpy()
        work = tmp_path_factory.mktemp(f"{name}-{flow}")
        if flow == "ort-qop":
            g, ref = _qop_graph(MODELS[name](), calib, work)
        else:
            g, ref = quantized_graph(MODELS[name](), calib, flow, work)
        _GRAPHS[key] = (g, ref, x)
    return _GRAPHS[key]


FLOWS = ("fbgemm", "qnnpack", "onnxruntime", "ort-qop")
CASES = [(m, f) for m in MODELS for f in FLOWS]


@pytest.mark.parametrize("name, flow", CASES, ids=["-".join(c) for c in CASES])
def test_models_equal_the_framework(name, flow, tmp_path_factory):
    """Each model in each flow on pynq_z2: the IR has the slices (and the shuffles), the
    compiled program equals graph.run and the framework, value for value."""
    g, ref, x = graph_of(name, flow, tmp_path_factory)
    ops = g.ops()
    assert ops.get("slice", 0) >= 4
    if name == "shuffle":
        assert ops.get("channel_shuffle") == 2 and "transpose" not in ops
    model, n = check_graph_on_golden(g, ref, x, "pynq_z2")
    assert n == x.shape[0] * (6 * 8 * 8 if name == "c2f" else 5)
    net = model.program.net
    convs = [la for la in net.layers if isinstance(la, HwConv)]
    copies = [la.name for la in convs if la.name.split(".")[-2:-1] in (["copy"], ["slots"],
                                                                         ["packed"])]
    # zero cost where the layout allows: a part read by a convolution, a part rescaled on its
    # own (torch.ao quantizes each part of a float chunk), a shuffled map: no layer. A copy
    # (a 1x1 0/1 layer) only where a layout forces it: a part that goes into a concatenation
    # without its other part, an add of a part and a compact map. Never the whole tensor.
    assert len(copies) <= 2, copies
    assert not any(".packed." in c for c in copies)
    assert all(t.channels <= 12 for la in net.layers if isinstance(la, HwConcat)
               for t in la.inputs)


def test_split_on_tiny(tmp_path_factory):
    """R = 4 (tiny): halves of 5 channels cross channel blocks."""
    for flow in ("qnnpack", "onnxruntime"):
        g, ref, x = graph_of("c2f", flow, tmp_path_factory)
        check_graph_on_golden(g, ref, x, "tiny")


def test_unsupported_slices_name_the_node():
    """A slice with a step, of two axes, or of a spatial axis: a message naming the node."""
    import torch
    from torch import nn

    class Strided(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x)[:, ::2]

    class Rows(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x)[:, :, 1:5]

    from zynqnn import zoo
    from zynqnn.zoo.quant import quiet_torch_ao

    gen = torch.Generator().manual_seed(0)
    calib = torch.rand((4, *SHAPE), generator=gen)
    with quiet_torch_ao():
        q = zoo.quantize_fx(Strided().eval(), calib[:1], engine="qnnpack", calibration=calib)
        with pytest.raises(FrontendError, match=r"getitem.*step 1"):
            zynqnn.from_torch(q, calib[:1], engine="qnnpack")
        q = zoo.quantize_fx(Rows().eval(), calib[:1], engine="qnnpack", calibration=calib)
        g = zynqnn.from_torch(q, calib[:1], engine="qnnpack")
    with pytest.raises(zynqnn.CompileError, match=r"slice on axis 2.*splits channels"):
        zynqnn.compile(g, "pynq_z2")


def test_mean_over_the_map_under_qnnpack(tmp_path_factory):
    """ShuffleNetV2's head ``conv(x).mean([2, 3])``: qnnpack's quantized mean is its global
    average pooling (the input's qparams), imported as ``adaptive_avg_pool2d`` + ``flatten``
    and equal to PyTorch on the golden backend; fbgemm's mean (another formula) is refused
    naming the node and the way out."""
    import torch
    from torch import nn

    from zynqnn import zoo
    from zynqnn.zoo.quant import cpu_independent_qconfig_mapping, quiet_torch_ao

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = _cbr(3, 20, 3)
            self.fc = nn.Linear(20, 4)

        def forward(self, x):
            return self.fc(self.conv(x).mean([2, 3]))

    gen = torch.Generator().manual_seed(3)
    calib = torch.rand((8, *SHAPE), generator=gen)
    x = torch.rand((3, *SHAPE), generator=gen).numpy()
    with quiet_torch_ao():
        q = zoo.quantize_fx(_init(Head(), 3), calib[:1], engine="qnnpack", calibration=calib,
                            qconfig_mapping=cpu_independent_qconfig_mapping("qnnpack"))
        g = zynqnn.from_torch(q, calib[:1], engine="qnnpack")
    assert g.ops().get("adaptive_avg_pool2d") == 1

    def reference(v):
        torch.backends.quantized.engine = "qnnpack"
        with torch.no_grad():
            return [q(torch.as_tensor(v)).numpy()]

    check_graph_on_golden(g, reference, x, "pynq_z2")
    with quiet_torch_ao():
        q = zoo.quantize_fx(_init(Head(), 3), calib[:1], engine="fbgemm", calibration=calib,
                            qconfig_mapping=cpu_independent_qconfig_mapping("fbgemm"))
        with pytest.raises(FrontendError, match=r"mean under fbgemm.*AdaptiveAvgPool2d"):
            zynqnn.from_torch(q, calib[:1], engine="fbgemm")


@pytest.mark.slow
def test_split_and_shuffle_on_verilator(tmp_path_factory):
    """The C2f block (ONNX Runtime QDQ: views read by convolutions, an add of a view, rescaled
    parts in a concatenation) compiled for tiny and run on zynqnn_top in Verilator: equal to
    graph.run and to ONNX Runtime."""
    g, ref, x = graph_of("c2f", "onnxruntime", tmp_path_factory)
    model = zynqnn.compile(g, "tiny")
    y = model.run(x[:1], backend="verilator")
    assert np.array_equal(y, g.run(x[:1])) and np.array_equal(y, ref(x[:1])[0])
    print(f"C2f block 8x8 on tiny (Verilator): {model.last_cycles[0]} cycles")
