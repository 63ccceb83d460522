"""Any channel count for concatenation inputs and graph outputs (docs/compiler.md, "Channel
slots").

A concatenation input of ``C`` channels takes ``ceil(C / R)`` whole channel blocks of the
concatenated tensor (``HwConcat.offsets``); the rest of its last block are padding channels.
The lowering tracks, for every IR map, the hardware channel of each of its channels
(``_Val.slots``): convolutions and linear layers give the padding channels zero weights, pools,
upsampling, adds and requantizations pass them along, depthwise layers take a packed copy, and
the host gathers a graph output's channels (``OutputInfo.slots``). Every case runs the compiled
command stream on the golden backend (``zynqnn.machine``) and compares it with ``graph.run``
and the framework (torch.ao FX fbgemm/qnnpack, ONNX Runtime QDQ; fixed16 on pynq_z2_int16 with
``graph.run``) with ``array_equal``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_lower import Builder

import zynqnn
from zynqnn.compiler import (
    CompileError,
    HwConcat,
    HwConv,
    Network,
    Tensor,
    compile_network,
    run_reference,
)
from zynqnn.compiler.testing import (
    check_gathered,
    check_graph_on_golden,
    codes,
    config_of,
    conv_rq,
    quantized_graph,
    tensor,
)
from zynqnn.hw.config import get_config

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

_GRAPHS: dict = {}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _cbr(i, o, k):
    from torch import nn

    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2), nn.ReLU())


def inception():
    """An Inception-style block: stem conv 3x3 (8), branches 1x1 (10), 1x1 (6) -> 3x3 (7),
    1x1 (5) -> 5x5 (13), concatenated (30 channels), then a 1x1 conv (12)."""
    import torch
    from torch import nn

    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _cbr(3, 8, 3)
            self.b1 = _cbr(8, 10, 1)
            self.b2 = nn.Sequential(_cbr(8, 6, 1), _cbr(6, 7, 3))
            self.b3 = nn.Sequential(_cbr(8, 5, 1), _cbr(5, 13, 5))
            self.mix = _cbr(30, 12, 1)

        def forward(self, x):
            x = self.stem(x)
            return self.mix(torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1))

    torch.manual_seed(2)
    return Inception().eval()


def fire():
    """A SqueezeNet fire module (squeeze 1x1 to 6, expand 1x1 10 + expand 3x3 10,
    concatenated) after a stem, then SqueezeNet's tail: max pool 3/2 (ceil mode), conv 1x1 to 4
    classes, ReLU, global average pooling, flatten."""
    import torch
    from torch import nn

    class Fire(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _cbr(3, 16, 3)
            self.squeeze = _cbr(16, 6, 1)
            self.e1 = _cbr(6, 10, 1)
            self.e3 = _cbr(6, 10, 3)
            self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.head = nn.Sequential(nn.Conv2d(20, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

        def forward(self, x):
            s = self.squeeze(self.stem(x))
            y = self.pool(torch.cat([self.e1(s), self.e3(s)], 1))
            return torch.flatten(self.head(y), 1)

    torch.manual_seed(3)
    return Fire().eval()


def concat_output():
    """Two heads (10 and 7 channels) concatenated as the graph's output."""
    import torch
    from torch import nn

    class CatOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 10, 1)
            self.b = nn.Conv2d(3, 7, 3, padding=1)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    torch.manual_seed(4)
    return CatOut().eval()


MODELS = {"inception": (inception, (3, 12, 12)), "fire": (fire, (3, 12, 12)),
          "concat_output": (concat_output, (3, 8, 8))}


def graph_of(name, flow, tmp_path_factory):
    """(graph, framework reference, float test batch of 3) of model ``name`` in ``flow``."""
    import torch

    key = (name, flow)
    if key not in _GRAPHS:
        make, shape = MODELS[name]
        gen = torch.Generator().manual_seed(5)
        calib = torch.rand((16, *shape), generator=gen)
        x = torch.rand((3, *shape), generator=gen).numpy()
        work = tmp_path_factory.mktemp(f"{name}-{flow}") if flow == "onnxruntime" else None
        g, ref = quantized_graph(make(), calib, flow, work)
        _GRAPHS[key] = (g, ref, x)
    return _GRAPHS[key]


CASES = [(m, f, c) for m in MODELS for f in ("fbgemm", "qnnpack", "onnxruntime")
         for c in ("tiny", "pynq_z2")] + [(m, "fixed16", "pynq_z2_int16") for m in MODELS]


def _concat(net) -> HwConcat:
    return next(la for la in net.layers if isinstance(la, HwConcat))


@pytest.mark.parametrize("name, flow, cfg", CASES, ids=["-".join(c) for c in CASES])
def test_models(name, flow, cfg, tmp_path_factory):
    """The three blocks in every flow on tiny (R = 4), pynq_z2 (R = 16) and pynq_z2_int16
    (R = 12): the concatenation's inputs start at channel blocks, outputs equal graph.run and
    the framework."""
    g, ref, x = graph_of(name, flow, tmp_path_factory)
    model, _ = check_graph_on_golden(g, ref, x, config_of(flow, cfg))
    R = get_config(cfg).rows
    cat = _concat(model.program.net)
    widths = {"inception": [10, 7, 13], "fire": [10, 10], "concat_output": [10, 7]}[name]
    starts = np.concatenate([[0], np.cumsum([-(-c // R) * R for c in widths])[:-1]])
    assert cat.starts() == list(starts) and [t.channels for t in cat.inputs] == widths
    assert cat.output.channels == starts[-1] + widths[-1]
    if name == "concat_output":   # the host gathers the graph's 17 channels
        info = model.boundary.outputs[0]
        assert info.slots == [*range(10), *range(starts[1], starts[1] + 7)]


def test_yolov3_tiny_on_the_int16_build():
    """YOLOv3-tiny (64x64, fixed16) on pynq_z2_int16: its concatenation of 128 + 256 channels
    (128 is not a multiple of 12) puts the 256 at channel 132; both heads equal graph.run."""
    import torch

    from zynqnn import zoo

    model = zoo.get("yolov3_tiny", seed=0)
    calib = torch.cat([zoo.example_input("yolov3_tiny", 64, batch=1, seed=i) for i in range(2)])
    g = zynqnn.quantize(model, calib, example_input=calib[:1], scheme="fixed16")
    cm = zynqnn.compile(g, "pynq_z2_int16")
    assert _concat(cm.program.net).offsets == [0, 132]
    got, want = cm.run(calib[:1].numpy()), g.run(calib[:1].numpy())
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)


# -------------------------------------------------------------------------------------------------
# hand-built graphs: every layer over padding channels


CONFIGS = ["tiny", "pynq_z2", "pynq_z2_int16"]


def _builder(cfg, shape, seed, name, flavour="torch-fbgemm"):
    return Builder("fixed16" if cfg == "pynq_z2_int16" else flavour, shape, seed=seed,
                   name=name)


def _branches(b, widths, k=3):
    """Convolutions of ``b.x`` with the qparams of the first (a concat without rescaling)."""
    first = b.conv(b.x, widths[0], k=k, pad=k // 2)
    out = [first]
    for n in widths[1:]:
        c = b.conv(b.x, n, k=k, pad=k // 2, zp_out=b.t(first).zero_point)
        b.t(c).scale = b.t(first).scale
        out.append(c)
    return out


@pytest.mark.parametrize("cfg", CONFIGS)
def test_layers_over_padding_channels(cfg):
    """concat (5 + 6 + 3) -> max pool (ceil mode) -> upsample -> requantize -> add with a conv
    in the packed layout (its channels move to the concat's slots; not in fixed16, whose adds
    are not supported) -> conv 3x3; a nested concat of the result with a 2-channel map; global
    average pooling of it (pynq_z2; tiny's 1x1 maps hold one channel block: a max pool) and a
    linear head over it."""
    fl = "tflite" if cfg == "tiny" else "torch-fbgemm"
    b = _builder(cfg, (4, 8, 8), 60, f"slots-{cfg}", fl)
    cat = b.node("concat", _branches(b, [5, 6, 3]), attrs={"axis": 1})
    m = b.node("max_pool2d", [cat], attrs={"kernel": [3, 3], "stride": [2, 2],
                                           "ceil_mode": True})
    u = b.node("upsample_nearest", [m], attrs={"scale": [2, 2]})
    ct = b.t(cat)
    r = b.node("requantize", [u], scale=ct.scale * 1.5, zp=ct.zero_point + 3)
    if not b.pow2:
        c = b.conv(b.x, 14, zp_out=b.t(r).zero_point)
        r = b.node("add", [r, c], scale=b.t(r).scale * 2, zp=b.t(r).zero_point)
    d = b.conv(r, 5)
    e = b.conv(b.x, 2, zp_out=b.t(d).zero_point)
    b.t(e).scale = b.t(d).scale
    cat2 = b.node("concat", [d, e], attrs={"axis": 1})
    if cfg == "pynq_z2":
        p = b.node("adaptive_avg_pool2d", [cat2], attrs={"output_size": [1, 1]})
    else:   # (fixed16's 16-bit averages take long to check; the fire module has one)
        p = b.node("max_pool2d", [cat2], attrs={"kernel": [2, 2], "stride": [2, 2]})
    f = b.node("flatten", [p], attrs={"start_dim": 1})
    g = b.finish(b.conv(f, 3, op="linear"))
    net, _ = check_gathered(cfg, g)
    cats = [la for la in net.layers if isinstance(la, HwConcat)]
    R = get_config(cfg).rows
    assert [la.starts() for la in cats] == [[0, -(-5 // R) * R, -(-5 // R) * R + -(-6 // R) * R],
                                            [0, -(-5 // R) * R]]
    moved = [la for la in net.layers if isinstance(la, HwConv) and ".slots" in la.name]
    if not b.pow2:   # the add's second input, into the first one's 3 blocks of slots
        assert len(moved) == 1 and moved[0].output.channels == cats[0].output.channels


@pytest.mark.parametrize("cfg", CONFIGS)
def test_depthwise_after_a_concat_and_a_tensor_in_two_concats(cfg):
    """A depthwise conv over a padded concatenation (its channels packed first by a 0/1 1x1
    conv, the explicit pad merged into the depthwise layer), a
    tensor that two concatenations take and one that a concatenation takes twice (copies), a
    concatenation of concatenations, and the first concatenation as a second graph output
    (gathered on the host)."""
    b = _builder(cfg, (4, 8, 8), 61, f"slots2-{cfg}", "torch-qnnpack")
    a, c = _branches(b, [6, 5])
    cat = b.node("concat", [a, c], attrs={"axis": 1})
    padded = b.node("pad", [cat], attrs={"pads": [1, 1, 1, 1]})   # stays pending when packed
    dw = b.conv(padded, 11, groups=11, pad=0)
    cat2 = b.node("concat", [a, dw], attrs={"axis": 1})       # dw rescaled, a copied
    cat3 = b.node("concat", [cat2, c, c], attrs={"axis": 1})  # c copied twice
    g = b.finish(b.conv(cat3, 4, k=1, pad=0))
    g.outputs = [*g.outputs, cat]
    g.validate()
    net, bd = check_gathered(cfg, g)
    names = [la.name for la in net.layers]
    assert sum(".packed" in n for n in names) == 1
    assert sum(".copy" in n for n in names) == 3
    R = get_config(cfg).rows
    assert bd.outputs[1].slots == [*range(6), *range(-(-6 // R) * R, -(-6 // R) * R + 5)]


def test_hand_built_concat_offsets():
    """HwConcat with offsets on the compiler's own layers: inputs of 3 and 5 channels at
    channel blocks 0 and 1 of a 9-channel tensor (tiny, R = 4); a consumer with zero weights
    on the padding channel equals the golden ops; packed inputs of 3 channels are refused and
    the message says what to do; offsets inside a block are refused."""
    from zynqnn.compiler.testing import conv

    rng = np.random.default_rng(70)
    x = tensor(rng, "x", 4, 8, 8)
    a = conv(rng, "a", x, 3, 3, 1, 1)
    b = conv(rng, "b", x, 5, 3, 1, 1)
    b.output.zero_point = a.output.zero_point
    cat = Tensor("cat", 9, 8, 8, a.output.zero_point)
    c = conv_rq(rng, "c", cat, 4, 1, scheme="tflite")
    c.weights[:, 3] = 0                         # the padding channel
    net = Network(x, [a, b, HwConcat("cat", [a.output, b.output], cat, [0, 4]), c])
    prog = compile_network(net, "tiny")
    xs = codes(rng, x)
    assert np.array_equal(prog.run_golden(xs), run_reference(net, xs))
    packed = HwConcat("cat", [a.output, b.output], Tensor("p", 8, 8, 8, cat.zero_point))
    with pytest.raises(CompileError, match=r"cat: input 'a.out' has 3 channels, not a multiple "
                                           r"of rows = 4; give the concat offsets"):
        compile_network(Network(x, [a, b, packed]), "tiny")
    inside = HwConcat("cat", [a.output, b.output], Tensor("q", 7, 8, 8, cat.zero_point),
                      [0, 2])
    with pytest.raises(CompileError, match=r"starts at channel 2, not a multiple of rows"):
        compile_network(Network(x, [a, b, inside]), "tiny")


def test_concat_of_maps_stored_at_other_widths_is_refused_with_the_node():
    """tiny: a linear output of 8 channels is a 1 x 2 row, a global pool's 4-channel output a
    1 x 1 map: a concatenation of the two (reshaped to maps) names the node and the sizes."""
    b = Builder("torch-qnnpack", (4, 4, 4), seed=62, name="tiny-mixed")
    a = b.conv(b.x, 4, act="relu")
    p = b.node("adaptive_avg_pool2d", [a], attrs={"output_size": [1, 1]})
    f = b.node("flatten", [p], attrs={"start_dim": 1})
    lin = b.conv(f, 8, op="linear")
    r = b.node("reshape", [lin], attrs={"shape": [1, 8, 1, 1]})
    cat = b.node("concat", [p, r], attrs={"axis": 1})   # r rescaled to p's qparams
    g = b.finish(cat)
    with pytest.raises(CompileError, match=r"node 'n_concat\d+' \(concat\): its inputs are "
                                           r"stored as maps of different sizes \(1x1, 1x2"):
        zynqnn.compile(g, "tiny")
    model = zynqnn.compile(g, "pynq_z2")
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 4)).astype(np.float32)
    assert np.array_equal(model.run(x), g.run(x))


# -------------------------------------------------------------------------------------------------
# the RTL


@pytest.mark.slow
def test_inception_on_verilator(tmp_path_factory):
    """The Inception-style block (12x12, torch.ao FX qnnpack) compiled for tiny (inputs of 10,
    7 and 13 channels at blocks 0, 3 and 5) on zynqnn_top in Verilator: equal to graph.run and
    to PyTorch; the busy cycles are printed."""
    g, ref, x = graph_of("inception", "qnnpack", tmp_path_factory)
    model = zynqnn.compile(g, "tiny")
    assert _concat(model.program.net).offsets == [0, 12, 20]
    y = model.run(x[:1], backend="verilator")
    assert np.array_equal(y, g.run(x[:1])) and np.array_equal(y, ref(x[:1])[0])
    print(f"Inception block 12x12 on tiny (Verilator): {model.last_cycles[0]} cycles")
    assert model.last_cycles[0] > 0
