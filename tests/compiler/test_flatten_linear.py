"""Linear layers over any flattened map (docs/compiler.md, "Linear over a flattened map").

A map of at most ``max_kernel`` pixels a side keeps the ``k x k`` convolution; a larger one is
read as a 1x1 map of all its ``NHWC<R>`` words (``HwView``, no copy) and the layer is a
convolution over it whose weight columns the compiler permutes from PyTorch's (C, H, W)
flatten order to the words' order. On ``tiny`` (4-byte words, 8-byte AXI beats) a view row and
a linear output of several channel blocks are two words wide; the host gathers the graph's
values. Every case runs the compiled command stream on the golden backend (``zynqnn.machine``)
and compares it with ``graph.run`` and with the framework (the torch.ao model, ONNX Runtime)
with ``array_equal``; batches of several samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_lower import Builder

import zynqnn
from zynqnn.compiler import CompileError, HwConv, HwView, compile_network, run_reference
from zynqnn.compiler.lower import lower_graph
from zynqnn.compiler.testing import check_gathered, check_graph_on_golden, quantized_graph
from zynqnn.hw.config import get_config

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

_GRAPHS: dict = {}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def lenet(size: int):
    """LeNet-5: conv 5x5 (6) -> max pool -> conv 5x5 (16) -> max pool -> flatten -> fc 120 ->
    fc 84 -> fc 10, ReLUs, on a ``size x size`` grey image (32: a 16x5x5 map flattened)."""
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            s = ((size - 4) // 2 - 4) // 2
            self.features = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(16 * s * s, 120), nn.ReLU(),
                                            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    torch.manual_seed(0)
    return LeNet().eval()


def vgg_head():
    """A VGG-style classifier: conv 3x3 (16), conv 3x3 (32), max pool -> flatten of 8x8x32 ->
    fc 64 -> fc 10, on 16x16 RGB."""
    import torch
    from torch import nn

    class VggHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                          nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(32 * 8 * 8, 64), nn.ReLU(),
                                            nn.Linear(64, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    torch.manual_seed(1)
    return VggHead().eval()


def graph_of(name, make, shape, flow, tmp_path_factory):
    """(graph, framework reference, float test batch) of model ``name`` in ``flow``, cached."""
    import torch

    key = (name, flow)
    if key not in _GRAPHS:
        gen = torch.Generator().manual_seed(3)
        calib = torch.rand((16, *shape), generator=gen)
        x = torch.rand((4, *shape), generator=gen).numpy()
        work = tmp_path_factory.mktemp(f"{name}-{flow}") if flow == "onnxruntime" else None
        g, ref = quantized_graph(make(), calib, flow, work)
        _GRAPHS[key] = (g, ref, x)
    return _GRAPHS[key]


# (size, config, flow): 32x32 flattens 16x5x5 (the 5x5 convolution); 44x44 flattens 16x8x8 (a
# view: 8 > max_kernel). tiny needs maps of even width (its 4-byte words are half an AXI beat),
# so it runs the 44x44 LeNet. fixed16 (16-bit codes) runs on pynq_z2_int16.
FLOWS_8 = ("fbgemm", "qnnpack", "onnxruntime")
LENET = [(s, c, f) for s, c in [(32, "pynq_z2"), (44, "pynq_z2"), (44, "tiny")]
         for f in FLOWS_8] + [(32, "pynq_z2_int16", "fixed16"), (44, "pynq_z2_int16", "fixed16")]


@pytest.mark.parametrize("size, cfg, flow", LENET, ids=[f"{s}-{c}-{f}" for s, c, f in LENET])
def test_lenet(size, cfg, flow, tmp_path_factory):
    """LeNet-5 on the golden backend equals graph.run and the framework (fixed16: on
    pynq_z2_int16, against graph.run), a batch of 4 (2 on tiny)."""
    g, ref, x = graph_of(f"lenet{size}", lambda: lenet(size), (1, size, size), flow,
                         tmp_path_factory)
    model, _ = check_graph_on_golden(g, ref, x if cfg != "tiny" else x[:2], cfg)
    layers = model.program.net.layers
    fc1_name = next(n.name for n in g.nodes if n.op == "linear")
    fc1 = next(la for la in layers if la.name == fc1_name)
    if size == 32:
        assert not any(isinstance(la, HwView) for la in layers) and fc1.kernel == 5
    else:
        view = next(la for la in layers if isinstance(la, HwView))
        assert fc1.input is view.output and fc1.macs == 120 * 16 * 8 * 8
    assert model.run(x[:1]).shape == (1, 10)


VGG = [(c, f) for c in ("tiny", "pynq_z2") for f in FLOWS_8] + [("pynq_z2_int16", "fixed16")]


@pytest.mark.parametrize("cfg, flow", VGG, ids=[f"{c}-{f}" for c, f in VGG])
def test_vgg_head(cfg, flow, tmp_path_factory):
    """A flatten of 8x8x32 into fc 64: the map's words as a 1x1 map (pynq_z2: 2,048 channels,
    a 1x1 kernel; int16: 12-channel words, 3 blocks of 12 for 32 channels: 2,304; tiny: rows of
    two words, a 2x2 kernel), fc 64's output 64x1x2 on tiny."""
    g, ref, x = graph_of("vgg", vgg_head, (3, 16, 16), flow, tmp_path_factory)
    model, _ = check_graph_on_golden(g, ref, x if cfg != "tiny" else x[:2], cfg)
    net = model.program.net
    view = next(la for la in net.layers if isinstance(la, HwView))
    fc1 = next(la for la in net.layers if isinstance(la, HwConv) and la.input is view.output)
    want = {"pynq_z2": (64, 2048, 1, 1), "pynq_z2_int16": (64, 2304, 1, 1),
            "tiny": (64, 1024, 2, 2)}[cfg]
    assert fc1.weights.shape == want
    assert fc1.output.shape == ((64, 1, 2) if cfg == "tiny" else (64, 1, 1))
    assert np.count_nonzero(fc1.weights) <= 64 * 2048


# -------------------------------------------------------------------------------------------------
# hand-built graphs: the weight permutation over padding channels and rows


CONFIGS = ["tiny", "pynq_z2", "pynq_z2_int16"]


def _builder(cfg, shape, seed, name):
    return Builder("fixed16" if cfg == "pynq_z2_int16" else "torch-fbgemm", shape, seed=seed,
                   name=name)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_odd_channels_and_a_wide_map(cfg):
    """5 channels (padding lanes in every word) on a 9x10 map: the linear layer's weight of
    feature (c, y, x) goes to its word and lane, 0 in the padding lanes."""
    b = _builder(cfg, (3, 9, 10), 40, f"flat-odd-{cfg}")
    f = b.node("flatten", [b.conv(b.x, 5)], attrs={"start_dim": 1})
    y = b.conv(b.conv(f, 9, op="linear"), 3, op="linear")
    net, _ = check_gathered(cfg, b.finish(y))
    fc = net.layers[2]
    R = get_config(cfg).rows
    assert isinstance(net.layers[1], HwView) and fc.macs == 9 * 5 * 9 * 10
    lanes = fc.weights.reshape(9, -1, R, *fc.weights.shape[2:])
    assert not lanes[:, :, 5:].any()   # the padding channels' lanes


@pytest.mark.parametrize("cfg", CONFIGS)
def test_mlp_over_the_graph_input(cfg):
    """An MLP on the raw 3x10x10 input: the view reads the words the host wrote."""
    b = _builder(cfg, (3, 10, 10), 45, f"mlp-{cfg}")
    f = b.node("flatten", [b.x], attrs={"start_dim": 1})
    net, _ = check_gathered(cfg, b.finish(b.conv(b.conv(f, 20, op="linear"), 5, op="linear")))
    assert isinstance(net.layers[0], HwView) and net.layers[0].input is net.input


@pytest.mark.parametrize("cfg", CONFIGS)
def test_linear_over_a_concatenation(cfg):
    """The flattened map is a concatenation with padding channels between its inputs (7 + 6
    channels): the flatten order counts the graph's 13 channels; 8x8 needs a view, 6x6 keeps
    the 6x6 convolution (but on tiny)."""
    for size in (8, 6):
        b = _builder(cfg, (4, size, size), 41 + size, f"flat-cat-{cfg}-{size}")
        a = b.conv(b.x, 7)
        c = b.conv(b.x, 6, zp_out=b.t(a).zero_point)
        b.t(c).scale = b.t(a).scale
        cat = b.node("concat", [a, c], attrs={"axis": 1})
        f = b.node("flatten", [cat], attrs={"start_dim": 1})
        net, _ = check_gathered(cfg, b.finish(b.conv(f, 6, op="linear")))
        # (tiny: 6 outputs are two blocks, a 1 x 2 output row only the view gives)
        assert any(isinstance(la, HwView) for la in net.layers) == (size == 8 or cfg == "tiny")


def test_linear_chain_on_tiny_rows():
    """tiny: a linear output of more than 4 channels is a 1 x 2 map (the first pixel), the next
    linear a 1x1 convolution over it; a 1x1 map of one block (after global pooling) into 6
    outputs reads its word as a two-word row (the row's second word is the allocation's
    padding); the graph's outputs are gathered on the host (also as a second output)."""
    cfg = get_config("tiny")
    b = Builder("torch-qnnpack", (4, 6, 6), seed=42, name="tiny-rows")
    a = b.conv(b.x, 3, act="relu")
    p = b.node("adaptive_avg_pool2d", [a], attrs={"output_size": [1, 1]})
    f = b.node("flatten", [p], attrs={"start_dim": 1})
    l1 = b.conv(f, 6, op="linear")
    l2 = b.conv(l1, 10, op="linear")
    g = b.finish(l2)
    g.outputs = [*g.outputs, l1]
    g.validate()
    net, bd = check_gathered(cfg, g, samples=3)
    assert [o.shape for o in net.outputs] == [(10, 1, 2), (6, 1, 2)]
    assert bd.outputs[0].size == [1, 1] and bd.outputs[1].size == [1, 1]
    assert [la.weights.shape[2:] for la in net.layers if isinstance(la, HwConv)][-2:] == [
        (2, 2), (1, 1)]


def test_compiled_model_gathers_and_survives_a_program_file(tmp_path):
    """zynqnn.compile on tiny (rows of two words): run / run_int equal the graph, also after
    save and load; the boundary's gather fields are in the file, and checked when loading."""
    from zynqnn.program import ProgramFileError, load

    b = Builder("tflite", (3, 8, 8), seed=43, name="tiny-file")
    f = b.node("flatten", [b.conv(b.x, 8, act="relu")], attrs={"start_dim": 1})
    g = b.finish(b.conv(f, 7, op="linear"))
    model = zynqnn.compile(g, "tiny")
    x = np.random.default_rng(5).normal(size=(3, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(model.run(x), g.run(x))
    rows = {r["name"]: r for r in model.report().rows}   # the view has no commands
    fc = next(n.name for n in g.nodes if n.op == "linear")
    assert rows[fc]["macs"] == 7 * 8 * 8 * 8 and not any("words" in n for n in rows)
    path = model.save(tmp_path / "m.zqp")
    again = load(path)
    assert again.boundary.outputs[0].size == [1, 1]
    assert np.array_equal(again.run(x), g.run(x))
    codes = g.quantize_input(x)
    assert np.array_equal(again.run_int(codes), g.run_int(codes))

    def size(d):
        d["boundary"]["outputs"][0]["size"] = [1, 5]   # beyond the 7x1x2 tensor

    with pytest.raises(ProgramFileError, match=r"boundary\.outputs\[0\]\.size\[1\]"):
        load(craft(path, tmp_path / "bad.zqp", size))

    def slots(d):
        d["boundary"]["outputs"][0]["slots"] = [0, 1, 2]   # 3 x 1 x 1 values for shape [7]

    with pytest.raises(ProgramFileError, match=r"\[7\] \(7 values\) does not fit"):
        load(craft(path, tmp_path / "bad2.zqp", slots))


def craft(src, dst, edit):
    """A program file with ``edit(program_json)`` applied and the checksum recomputed the way
    ``CompiledModel.save`` computes it."""
    import json
    import zipfile

    from zynqnn.program import HEADER, _digest

    with zipfile.ZipFile(src) as z:
        items = {n: z.read(n) for n in z.namelist()}
    header = json.loads(items.pop(HEADER))
    doc = json.loads(items["program.json"])
    edit(doc)
    items["program.json"] = json.dumps(doc).encode()
    header["sha256"] = _digest(items)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(HEADER, json.dumps(header))
        for n, data in items.items():
            z.writestr(n, data)
    return dst


def test_refusals_name_the_node():
    """What remains refused names the node and says what is possible: on tiny a 1x1 map of
    several blocks is a two-word row, which only linear/1x1 layers, adds, concatenations,
    requantizations and the graph output read."""
    b = Builder("torch-fbgemm", (4, 4, 4), seed=44, name="tiny-vector-pool")
    f = b.node("flatten", [b.conv(b.x, 4)], attrs={"start_dim": 1})
    lin = b.conv(f, 8, op="linear")
    r = b.node("reshape", [lin], attrs={"shape": [1, 8, 1, 1]})
    u = b.node("upsample_nearest", [r], attrs={"scale": [2, 2]})
    g = b.finish(u)
    with pytest.raises(CompileError, match=r"node 'n_upsample_nearest\d+' \(upsample_nearest\)"
                                           r": input 'reshape\d+' is a 8x1x1 map that config "
                                           r"tiny stores 1x2"):
        lower_graph(g, "tiny")
    net, b2 = lower_graph(g, "pynq_z2")   # 16-byte words: a 1x1 map of any size
    assert net.output.shape == (8, 2, 2) and b2.outputs[0].size is None


def test_reference_view_is_the_words():
    """HwView's codes are the input's NHWC<R> words in memory order (channel block, row,
    column), padding lanes and the word past the end holding the zero point; compiled, the
    words the machine reads are the same (a 1x1 convolution picking every lane)."""
    from zynqnn.compiler import Network, Tensor
    from zynqnn.numerics import make_requant

    R = 4
    x = Tensor("x", 5, 2, 4, 7)                 # 2 blocks x 8 pixels = 16 words
    view = Tensor("v", 8 * R, 1, 2, 7)          # 8 rows of two words
    codes = np.arange(40).reshape(5, 2, 4) + 20
    got = HwView("view", x, view, R).codes(codes)
    lanes = np.full((2 * R, 2, 4), 7)
    lanes[:5] = codes
    words = lanes.reshape(2, R, 2, 4).transpose(0, 2, 3, 1).reshape(-1, R)   # (cb, y, x)
    assert np.array_equal(got.reshape(8, R, 2).transpose(0, 2, 1).reshape(-1, R), words)
    # an odd number of words (3 channels of a 1x3 map): the last row's second word is past
    # the end (the zero point here; the allocation's padding on the hardware)
    odd = HwView("odd", Tensor("o", 3, 1, 3, 7), Tensor("ov", 2 * R, 1, 2, 7), R)
    row = odd.codes(np.arange(9).reshape(3, 1, 3))
    assert np.array_equal(row[:, 0, 1], [1, 4, 7, 7, 7, 7, 7, 7])
    assert np.array_equal(row[R:, 0, 1], [7] * R)
    # on the machine model: a 1x1 convolution copying the view reads the same words
    rq = make_requant("tflite-single-rounding", 1.0, 1.0, 1.0, 7, np.array([0]), 0, 255,
                      multiplier=1 << 30, shift=1)
    w = np.eye(8 * R, dtype=np.int64).reshape(8 * R, 8 * R, 1, 1)
    y = Tensor("y", 8 * R, 1, 2, 7)
    net = Network(x, [HwView("view", x, view, R), HwConv("copy", view, y, w, requant=rq)])
    prog = compile_network(net, "tiny")
    ref = run_reference(net, codes)
    assert np.array_equal(ref, got)
    # (the input's padding lanes hold the zero point: the host writes it)
    assert np.array_equal(prog.run_golden(codes), ref)
    with pytest.raises(CompileError, match=r"view: the view .* holds 20 words"):
        big = Tensor("b", 10 * R, 1, 2, 7)
        compile_network(Network(x, [HwView("view", x, big, R),
                                    HwConv("copy", big, Tensor("z", 4, 1, 2, 7),
                                           np.zeros((4, 10 * R, 1, 1)), requant=rq)]), "tiny")


# -------------------------------------------------------------------------------------------------
# the RTL


@pytest.mark.slow
def test_lenet_on_verilator(tmp_path_factory):
    """LeNet-5 (44x44, torch.ao FX qnnpack) compiled for tiny on zynqnn_top in Verilator: equal
    to graph.run and to PyTorch; the busy cycles are printed."""
    g, ref, x = graph_of("lenet44", lambda: lenet(44), (1, 44, 44), "qnnpack", tmp_path_factory)
    model = zynqnn.compile(g, "tiny")
    y = model.run(x[:1], backend="verilator")
    assert np.array_equal(y, g.run(x[:1])) and np.array_equal(y, ref(x[:1])[0])
    print(f"LeNet-5 44x44 on tiny (Verilator): {model.last_cycles[0]} cycles")
    assert model.last_cycles[0] > 0
