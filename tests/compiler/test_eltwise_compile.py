"""Residual adds (HwAdd -> ELTWISE commands) run on the command-level Machine equal numerics' add
ops, bit for bit, in every semantics; tiles, padding channels, concat views; a ResNet block."""

import numpy as np
import pytest

from zynqnn.compiler import (
    CompileError,
    HwAdd,
    HwConcat,
    Network,
    Tensor,
    compile_network,
)
from zynqnn.compiler.perf import DmaModel, eltwise_cycles
from zynqnn.compiler.testing import check_compiled, conv, residual_add, resnet_block, tensor
from zynqnn.hw import isa
from zynqnn.hw.config import get_config

TINY = get_config("tiny")

#: (semantics, path, single_rounding, signed tensors)
VARIANTS = [
    ("torch", "vector", False, False),
    ("torch", "scalar", False, False),
    ("qnnpack", "vector", False, False),
    ("onnxruntime", "vector", False, False),
    ("onnxruntime", "vector", False, True),
    ("tflite", "vector", False, True),
    ("tflite", "vector", True, True),
    ("tflite", "vector", False, False),
]


def check(net, cfg=TINY, seed=0):
    return check_compiled(net, cfg, seed)


def eltwise_ops(prog):
    out = []
    for i in range(prog.command_count):
        raw = prog.commands[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES]
        if isa.decode_opcode(raw) == isa.Opcode.ELTWISE:
            out.append(isa.EltwiseCommand.from_bits(int.from_bytes(raw, "little")).op)
    return out


def skip_net(rng, semantics, c, h, w, signed, relu, **kw):
    """x -> conv3x3 -> add(conv, x)."""
    x = tensor(rng, "x", c, h, w, signed)
    cv = conv(rng, "conv", x, c, 3, 1, 1, signed_out=signed)
    add = residual_add(rng, "add", cv.output, x, semantics, relu=relu, **kw)
    return Network(x, [cv, add])


@pytest.mark.parametrize("semantics, path, single, signed", VARIANTS)
def test_every_semantics(semantics, path, single, signed):
    rng = np.random.default_rng(len(semantics) * 10 + signed + 2 * single)
    compared = 0
    for i, (c, h, w) in enumerate([(4, 6, 8), (6, 5, 8), (9, 7, 4), (8, 20, 24)]):
        net = skip_net(rng, semantics, c, h, w, signed, relu=bool(i % 2), path=path,
                       single_rounding=single)
        prog = check(net, seed=i)
        compared += c * h * w
        assert eltwise_ops(prog)
    assert compared > 0


def test_tiles_cover_the_tensor():
    # 3 channel blocks x 24 x 40 = 2880 words > 256 (tiny's OBUF/WBUF depth): 12 tiles.
    rng = np.random.default_rng(5)
    x = tensor(rng, "x", 10, 24, 40)
    cv = conv(rng, "conv", x, 10, 1)
    add = residual_add(rng, "add", x, cv.output, "qnnpack", relu=True)
    prog = check(Network(x, [cv, add]))
    ops = eltwise_ops(prog)
    assert [int(op.pixels) for op in ops] == [256] * 11 + [2880 - 11 * 256]
    assert all(op.pbuf_addr % TINY.requant_lanes == 0 for op in ops)


def test_add_of_concat_views_and_same_input():
    # Both inputs views of a concat; then x + x.
    rng = np.random.default_rng(6)
    x = tensor(rng, "x", 4, 8, 8)
    c1 = conv(rng, "c1", x, 4, 3, 1, 1)
    c2 = conv(rng, "c2", x, 4, 3, 1, 1)
    c2.output.zero_point = c1.output.zero_point
    cat = Tensor("cat", 8, 8, 8, c1.output.zero_point)
    concat = HwConcat("concat", [c1.output, c2.output], cat)
    add = residual_add(rng, "add", c1.output, c2.output, "torch")
    twice = residual_add(rng, "twice", add.output, add.output, "onnxruntime")
    check(Network(x, [c1, c2, concat, add, twice]))


@pytest.mark.parametrize("semantics", ["torch", "qnnpack", "onnxruntime", "tflite"])
def test_resnet_block(semantics):
    """stem -> conv -> conv -> add(skip) -> max pool -> global pool -> 1x1 conv, on tiny (one
    channel block) and on pynq_z2 (two blocks, 16 x 16 maps)."""
    rng = np.random.default_rng(12)
    check(resnet_block(rng, 4, 8, semantics), TINY)
    path = "scalar" if semantics == "torch" else "vector"
    check(resnet_block(rng, 20, 16, semantics, classes=10, path=path), get_config("pynq_z2"))


def test_perf_model_counts_eltwise():
    rng = np.random.default_rng(7)
    net = skip_net(rng, "tflite", 8, 16, 16, True, relu=False)
    prog = check(net)
    rep = prog.perf(DmaModel(enabled=False))
    ops = eltwise_ops(prog)
    busy = sum(eltwise_cycles(TINY, op) for op in ops)
    assert rep.layers["add"]["mac"] == busy
    assert busy >= 2 * 16 * 16 * TINY.cols // TINY.add_lanes
    assert rep.layers["add"]["end"] - rep.layers["add"]["start"] >= busy


def test_refusals():
    rng = np.random.default_rng(8)
    a, b = tensor(rng, "a", 4, 4, 8), tensor(rng, "b", 4, 4, 6)
    with pytest.raises(CompileError, match="add: inputs .* differ in shape"):
        HwAdd("add", a, b, Tensor("y", 4, 4, 8), "torch", 0.1, 0.1, 0.1)
    with pytest.raises(CompileError, match="semantics must be one of"):
        HwAdd("add", a, a, Tensor("y", 4, 4, 8), "tf", 0.1, 0.1, 0.1)
    s = tensor(rng, "s", 4, 4, 8, signed=True)
    la = HwAdd("sadd", s, s, Tensor("y", 4, 4, 8, 0, True), "qnnpack", 0.1, 0.1, 0.1)
    with pytest.raises(CompileError, match="sadd: qnnpack adds uint8"):
        compile_network(Network(s, [la]), TINY)
    # TFLite's output multiplier must be below one: s_out far below the inputs' scales.
    la = HwAdd("tadd", s, s, Tensor("y", 4, 4, 8, 0, True), "tflite", 0.5, 0.5, 1e-9)
    with pytest.raises(CompileError, match="tadd: .*multiplier"):
        compile_network(Network(s, [la]), TINY)
    # qnnpack's scale ratios
    u = tensor(rng, "u", 4, 4, 8)
    la = HwAdd("qadd", u, u, Tensor("y", 4, 4, 8, 3), "qnnpack", 1.0, 1.0, 1e-5)
    with pytest.raises(CompileError, match="qadd: .*qnnpack"):
        compile_network(Network(u, [la]), TINY)
    # an output shape other than the inputs'
    la = HwAdd("wide", u, u, Tensor("y", 4, 4, 16, 3), "torch", 0.1, 0.1, 0.1)
    with pytest.raises(CompileError, match="wide: output"):
        compile_network(Network(u, [la]), TINY)


@pytest.mark.parametrize("semantics", ["tflite", "onnxruntime"])
def test_int16_build(semantics):
    """16-bit operands (TFLite's int16 add: left shift 15)."""
    rng = np.random.default_rng(13)
    cfg = get_config("tiny16")
    net = skip_net(rng, semantics, 6, 6, 8, True, relu=False)
    add = net.layers[-1]
    assert add.out_range(16) == (-(2**15), 2**15 - 1)
    check(net, cfg)


def test_torch_scalar_tail_channels_take_the_scalar_formula():
    """``scalar_from``: channels from there on run as their own ELTWISE commands with the scalar
    constants. Scales where the two formulas differ for one code (180): every pixel holds it,
    so the vector channels and the scalar channels must give different, each exact, codes."""
    cfg = get_config("pynq_z2")
    s_a, s_out, zp_a, zp_out = 0.09743165508780148, 0.07944840637334591, 254, 226
    x = Tensor("x", 48, 1, 1, zp_a)
    la = HwAdd("add", x, x, Tensor("y", 48, 1, 1, zp_out), "torch", s_a, s_a, s_out,
               scalar_from=32)
    prog = compile_network(Network(x, [la]), cfg)
    assert len(eltwise_ops(prog)) == 2
    codes = np.full((48, 1, 1), 180)
    got = prog.run_golden(codes)
    from zynqnn.numerics import ops

    want = [ops.add_torch(np.array([180]), s_a, zp_a, np.array([180]), s_a, zp_a, s_out, zp_out,
                          path=p)[0] for p in ("vector", "scalar")]
    assert want[0] != want[1]
    assert np.array_equal(got[:32].ravel(), np.full(32, want[0]))
    assert np.array_equal(got[32:].ravel(), np.full(16, want[1]))


@pytest.mark.parametrize("scheme", ["pow2", "fixed16"])
def test_zynqnn_quantize_residual_adds(scheme):
    """Residual adds of graphs quantized by zynqnn.quantize with the pow2 (Vitis-AI style) and
    fixed16 schemes add as TFLite does: they compile onto the hardware's TFLite add and run
    equal to graph.run on the golden backend (fixed16 on the int16 build)."""
    import torch
    from torch import nn

    import zynqnn
    from zynqnn.compiler.testing import check_graph_on_golden, config_of

    class Res(nn.Module):
        def __init__(self, c=24):
            super().__init__()
            self.c1 = nn.Conv2d(3, c, 3, padding=1)
            self.c2 = nn.Conv2d(c, c, 3, padding=1)
            self.c3 = nn.Conv2d(c, 8, 1)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            return self.c3(torch.relu(a + self.c2(a)))

    torch.manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    g = zynqnn.quantize(Res().eval(), x, example_input=x[:1], scheme=scheme)
    assert any(n.op == "add" and n.flavour == scheme for n in g.nodes)
    model, n = check_graph_on_golden(g, None, x[:2].numpy(), config_of(scheme, "pynq_z2"))
    assert n == 2 * 8 * 8 * 8
