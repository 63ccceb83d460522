"""Transposed convolution on the accelerator, without an RTL change: stride ``s`` runs as
``s * s`` stride-1 convolutions, one per output phase ``(oy mod s, ox mod s)``; each command
computes one row of one phase and its STORE writes the row's pixels as one-word DDR lines ``s``
words apart, into the interleaved output (``compile._Compiler.conv_transpose``). Stride 1 is an
ordinary convolution with the kernel flipped.

Checked: torch.ao (fbgemm, qnnpack) nets compiled and run on the golden backend equal to the
converted PyTorch model and to ``graph.run`` (``array_equal``); hand-built layers of every phase
geometry (kernel smaller or larger than the stride, cropped and output-padded borders, several
output-channel blocks, a reduction split over commands) equal to ``run_reference``; the
refusal on configs whose words are shorter than an AXI beat; the command pattern and its cost
from the performance model; on Verilator (slow) a small net on pynq_z2.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import zynqnn
from zynqnn.compiler import (
    CompileError,
    HwConv,
    HwConvTranspose,
    Network,
    Tensor,
    compile_network,
    run_reference,
)
from zynqnn.compiler.testing import check_graph_on_golden, codes, quantized_graph
from zynqnn.hw import isa
from zynqnn.numerics import gemmlowp

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: (in, out channels, kernel, stride, padding, output_padding, groups)
CASES = {
    "k2s2": (8, 5, 2, 2, 0, 0, 1),             # U-Net's up step (5 outputs: not fbgemm's direct)
    "k3s2p1op1": (8, 5, 3, 2, 1, 1, 1),        # decoders' 3x3 stride 2, "same" doubling
    "k4s2p1": (16, 7, 4, 2, 1, 0, 1),          # DCGAN-style 4x4 stride 2
    "k3s3p1op2": (6, 5, 3, 3, 1, 2, 1),
    "k1s2op1": (6, 6, 1, 2, 0, 1, 1),          # phases that no tap reaches: bias only
    "k4s2p1g2": (8, 6, 4, 2, 1, 0, 2),         # grouped: block-diagonal
    "k3s1p1": (8, 4, 3, 1, 1, 0, 1),           # stride 1: a flipped ordinary convolution
    "k2s2c40": (40, 20, 2, 2, 0, 0, 1),        # 3 input and 2 output channel blocks
}


def _net(cin, cout, k, s, p, op, groups, relu=False):
    import torch
    from torch import nn

    class UpNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, cin, 3, padding=1)
            self.up = nn.ConvTranspose2d(cin, cout, k, s, padding=p, output_padding=op,
                                         groups=groups)
            self.c2 = nn.Conv2d(cout, 4, 1)

        def forward(self, x):
            y = self.up(torch.relu(self.c1(x)))
            return self.c2(torch.relu(y) if relu else y)

    return UpNet().eval()


def _data(h=7, w=9, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, h, w, generator=g) * 2, torch.randn(2, 3, h, w, generator=g).numpy()


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_equals_framework(case, flow):
    import torch

    torch.manual_seed(1)
    calib, x = _data()
    s = CASES[case][3]
    g, reference = quantized_graph(_net(*CASES[case], relu=case == "k3s2p1op1"), calib, flow)
    model, n = check_graph_on_golden(g, reference, x, "pynq_z2")
    up = next(la for la in model.program.net.layers if la.name == "up")
    assert type(up) is (HwConvTranspose if s > 1 else HwConv)
    k = CASES[case][2]
    kind = next(r["kind"] for r in model.layers if r["name"] == "up")
    assert kind == (f"convT {k}x{k} /{s}" if s > 1 else f"conv {k}x{k}"), kind
    assert n == x.shape[0] * 4 * g.tensors[g.outputs[0]].shape[2] * g.tensors[
        g.outputs[0]].shape[3]


def test_unet_step_with_odd_channels():
    """A U-Net step where nothing is a multiple of 16 channels: the transposed convolution
    reads a concatenation (its input slots with padding channels between) and writes into
    another one beside the skip, then two convs; qnnpack and fbgemm."""
    import torch
    from torch import nn

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 6, 3, padding=1)
            self.b = nn.Conv2d(3, 5, 3, padding=1)
            self.down = nn.Conv2d(11, 9, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(9, 7, 3, 2, padding=1, output_padding=1)
            self.c = nn.Conv2d(7 + 11, 10, 3, padding=1)

        def forward(self, x):
            skip = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            d = torch.relu(self.down(skip))
            return self.c(torch.cat([skip, self.up(d)], 1))

    for flow in ("qnnpack", "fbgemm"):
        torch.manual_seed(2)
        calib, x = _data(8, 8, seed=3)
        g, reference = quantized_graph(Step().eval(), calib, flow)
        model, _ = check_graph_on_golden(g, reference, x, "pynq_z2")
        assert any(isinstance(la, HwConvTranspose) for la in model.program.net.layers)


def _layer(rng, x, cout, k, s, pad, name="up"):
    """A hand-built transposed convolution with TFLite constants (random weights)."""
    t, b, left, r = pad
    oh = (x.height - 1) * s + k - t - b
    ow = (x.width - 1) * s + k - left - r
    y = Tensor(name + ".out", cout, oh, ow, int(rng.integers(0, 256)), False)
    mq = [gemmlowp.quantize_multiplier(10 ** rng.uniform(-4, -2)) for _ in range(cout)]
    return HwConvTranspose(name, x, y, rng.integers(-127, 128, size=(cout, x.channels, k, k)),
                           rng.integers(-5000, 5000, size=cout), [q for q, _ in mq],
                           [v for _, v in mq], stride=s, padding=pad)


@pytest.mark.parametrize("geom", [
    # (cin, h, w, cout, kernel, stride, (top, bottom, left, right))
    (5, 4, 6, 3, 2, 2, (0, 0, 0, 0)),
    (5, 5, 4, 3, 3, 2, (1, 0, 1, 0)),          # output_padding 1
    (4, 3, 5, 6, 4, 2, (1, 1, 2, 1)),
    (3, 4, 4, 4, 5, 2, (2, 1, 2, 1)),
    (3, 3, 3, 5, 2, 3, (0, -1, 0, -1)),        # kernel < stride, rows only the bias reaches
    (3, 3, 4, 2, 7, 3, (3, 3, 5, 2)),
    (4, 2, 3, 3, 3, 2, (2, 2, 2, 2)),          # cropped more than the kernel's reach
    (20, 4, 4, 18, 3, 2, (1, 0, 1, 0)),        # 2 input and 2 output channel blocks
])
def test_phases_equal_the_reference(geom):
    cin, h, w, cout, k, s, pad = geom
    rng = np.random.default_rng(sum(geom[:6]))
    x = Tensor("x", cin, h, w, int(rng.integers(0, 256)), False)
    net = Network(x, [_layer(rng, x, cout, k, s, pad)])
    prog = compile_network(net, "pynq_z2")
    for seed in range(2):
        xc = codes(np.random.default_rng(seed), x)
        assert np.array_equal(prog.run_golden(xc), run_reference(net, xc))
    prog.perf()


def test_reduction_split_over_commands():
    """160 input channels of a 4x4 stride-2 kernel: the four phases' weights of all ten input
    blocks exceed WBUF, so each phase row is two commands (acc_keep, acc_cont)."""
    rng = np.random.default_rng(7)
    x = Tensor("x", 160, 3, 4, 9, False)
    net = Network(x, [_layer(rng, x, 16, 4, 2, (1, 1, 1, 1))])
    prog = compile_network(net, "pynq_z2")
    keeps = [st for st in prog.steps if st.layer == "up" and st.op["acc_keep"]]
    assert keeps and len(keeps) == len([st for st in prog.steps if st.layer == "up"]) // 2
    xc = codes(rng, x)
    assert np.array_equal(prog.run_golden(xc), run_reference(net, xc))


def test_words_shorter_than_a_beat_are_refused():
    """tiny's 4-byte words are half an AXI beat: a pixel of an odd column cannot start a DDR
    line, so a stride-2 transposed convolution is refused there, naming the layer and the
    config to use; stride 1 (an ordinary convolution) compiles."""
    rng = np.random.default_rng(0)
    x = Tensor("x", 4, 4, 4, 3, False)
    with pytest.raises(CompileError, match=r"^up: a transposed convolution of stride 2 stores "
                                           r"every 2th output pixel.*tiny's 4-byte words are "
                                           r"not whole 8-byte AXI beats.*e\.g\. pynq_z2"):
        compile_network(Network(x, [_layer(rng, x, 4, 2, 2, (0, 0, 0, 0))]), "tiny")


def _store_lines(prog, layer):
    out = []
    for i in range(0, len(prog.commands), isa.COMMAND_BYTES):
        c = prog.commands[i:i + isa.COMMAND_BYTES]
        if isa.decode_opcode(c) == isa.Opcode.STORE and prog.labels[i // isa.COMMAND_BYTES] \
                == layer:
            st = isa.LoadStore.from_bits(int.from_bytes(c, "little"))
            out.append((int(st.line_words), int(st.lines), int(st.ddr_stride)))
    return out


def test_commands_and_cost():
    """The U-Net's 2x2 stride-2 step (32 -> 16 channels, 16x16 -> 32x32): one CONV per
    phase row (4 phases x 16 rows), each STORE 16 one-word lines 2 words apart. Beside an
    ordinary 1x1 convolution of the same MACs on the 32x32 map (the same output, one command
    per tile, whole-row stores), the performance model's cycles at the board's DDR latency."""
    from zynqnn.compiler.perf import network_report

    rng = np.random.default_rng(3)
    x = Tensor("x", 32, 16, 16, 0, False)
    up = _layer(rng, x, 16, 2, 2, (0, 0, 0, 0))
    prog = compile_network(Network(x, [up]), "pynq_z2")
    wb = prog.cfg.rows * prog.cfg.operand_bits // 8
    stores = _store_lines(prog, "up")
    assert len(stores) == 4 * 16 and set(stores) == {(1, 16, 2 * wb)}
    x2 = Tensor("x2", 32, 32, 32, 0, False)
    mq = [gemmlowp.quantize_multiplier(1e-3) for _ in range(16)]
    plain = HwConv("plain", x2, Tensor("y2", 16, 32, 32, 0, False),
                   rng.integers(-127, 128, (16, 32, 1, 1)), np.zeros(16, np.int64),
                   [q for q, _ in mq], [v for _, v in mq])
    ref = compile_network(Network(x2, [plain]), "pynq_z2")
    a, b = network_report(prog)["up"], network_report(ref)["plain"]
    assert up.macs == 16 * 32 * 2 * 2 * 16 * 16 == 16 * 32 * 32 * 32    # the plain conv's
    print(f"\nConvTranspose2d 2x2/2 32->16, 16x16->32x32: {a['cycles']} cycles, "
          f"{prog.command_count} commands; 1x1 conv 32->16 on 32x32 (same MACs): "
          f"{b['cycles']} cycles, {ref.command_count} commands")
    assert a["cycles"] > 0 and b["cycles"] > 0


@pytest.mark.slow
def test_on_verilator():
    """A small qnnpack net (3x3 stride-2 transposed convolution with padding and
    output_padding, 2x2 stride 2 after it) compiled for pynq_z2 and run on zynqnn_top in
    Verilator: equal to PyTorch and to the golden backend (the pynq_z2 build takes about two
    minutes the first time)."""
    import torch
    from torch import nn

    from zynqnn.compiler.perf import DmaModel

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.u1 = nn.ConvTranspose2d(8, 6, 3, 2, padding=1, output_padding=1)
            self.u2 = nn.ConvTranspose2d(6, 5, 2, 2)

        def forward(self, x):
            return self.u2(torch.relu(self.u1(torch.relu(self.c1(x)))))

    torch.manual_seed(4)
    calib, x = _data(4, 4, seed=5)
    g, reference = quantized_graph(Two().eval(), calib, "qnnpack")
    model = zynqnn.compile(g, "pynq_z2")
    y = model.run(x[:1], backend="verilator", fast=True)
    cycles = model.last_cycles[0]
    assert np.array_equal(y, reference(x[:1])[0]) and np.array_equal(y, model.run(x[:1]))
    print(f"two transposed convolutions 4x4 -> 16x16 on pynq_z2 (Verilator): {cycles} cycles, "
          f"performance model {model.program.perf(DmaModel.simulation(0)).cycles}")
