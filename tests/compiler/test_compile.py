"""Compiled programs run on the command-level Machine equal the golden ops, bit for bit."""

import numpy as np
import pytest

from zynqnn.compiler import (
    CompileError,
    HwConcat,
    HwGlobalSumPool,
    HwMaxPool,
    HwUpsample2x,
    Network,
    Tensor,
    compile_network,
    run_reference,
)
from zynqnn.compiler.perf import DmaModel, ProtocolError, simulate
from zynqnn.compiler.testing import (
    SCHEMES_8BIT,
    check_compiled,
    codes,
    conv,
    conv_rq,
    random_requant,
    tensor,
)
from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.numerics import gemmlowp

TINY = get_config("tiny")


def check(net, cfg=TINY, seed=0):
    return check_compiled(net, cfg, seed)


def _convs(prog):
    out = []
    for i in range(prog.command_count):
        raw = prog.commands[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES]
        if isa.decode_opcode(raw) == isa.Opcode.CONV:
            out.append(isa.ConvCommand.from_bits(int.from_bytes(raw, "little")).op)
    return out


@pytest.mark.parametrize("cin, cout, h, w, k, s, pad, signed", [
    (3, 4, 8, 8, 3, 1, 1, False),
    (9, 6, 10, 8, 3, 1, 1, True),
    (8, 8, 9, 6, 1, 1, 0, False),
    (5, 7, 12, 12, 5, 2, 2, False),
    (4, 4, 11, 12, 7, 2, 3, True),
    (6, 5, 7, 8, 3, 2, (0, 1, 0, 1), False),
    (4, 9, 6, 8, 2, 2, 0, False),
])
def test_conv_single_command_geometries(cin, cout, h, w, k, s, pad, signed):
    rng = np.random.default_rng(cin * 100 + k)
    x = tensor(rng, "x", cin, h, w, signed)
    check(Network(x, [conv(rng, "conv", x, cout, k, s, pad, signed_out=not signed)]))


def test_conv_spatial_tiles_with_halo():
    # 36 x 40 output pixels > acc_buffer_depth (256): several row tiles with halos.
    rng = np.random.default_rng(1)
    x = tensor(rng, "x", 4, 36, 40)
    prog = check(Network(x, [conv(rng, "conv", x, 4, 3, 1, 1)]))
    ops = _convs(prog)
    assert len(ops) > 1 and all(op.out_h * op.out_w <= TINY.acc_buffer_depth for op in ops)
    assert ops[0].y_off == -1 and ops[1].y_off == 0


def test_conv_split_reduction_weights():
    # 5x5 x 5 cin blocks x R = 500 weight words > weight_buffer_depth (256): acc_keep parts.
    rng = np.random.default_rng(2)
    x = tensor(rng, "x", 20, 8, 8)
    prog = check(Network(x, [conv(rng, "conv", x, 8, 5, 1, 2)]))
    ops = _convs(prog)
    assert any(op.acc_keep for op in ops) and any(op.acc_cont for op in ops)
    assert all(op.kernel ** 2 * op.cin_blocks * TINY.rows <= TINY.weight_buffer_depth
               for op in ops)


def test_conv_split_reduction_and_spatial_tiles_by_ibuf():
    # 40 channel blocks x 4 rows x 16 words do not fit act_buffer_depth (1024) with 3x3 weights.
    rng = np.random.default_rng(3)
    cfg = TINY.replace(weight_buffer_depth=1024, act_buffer_depth=256)
    x = tensor(rng, "x", 24, 10, 16)
    prog = check(Network(x, [conv(rng, "conv", x, 8, 3, 1, 1)]), cfg)
    ops = _convs(prog)
    assert any(op.acc_keep for op in ops)
    assert all(op.cin_blocks * op.in_h * op.in_w <= cfg.act_buffer_depth for op in ops)


@pytest.mark.parametrize("c, h, w, k, s, pad, pad_min", [
    (4, 8, 8, 2, 2, 0, True),
    (6, 9, 12, 3, 2, 1, True),
    (5, 40, 40, 3, 1, 1, True),
    (4, 7, 8, 2, 1, (0, 1, 0, 1), False),
])
def test_maxpool(c, h, w, k, s, pad, pad_min):
    rng = np.random.default_rng(c + h)
    x = tensor(rng, "x", c, h, w, signed=True)
    from zynqnn.compiler.layers import norm_padding

    pt, pb, pl, pr = norm_padding(pad)
    y = Tensor("y", c, (h + pt + pb - k) // s + 1, (w + pl + pr - k) // s + 1, x.zero_point, True)
    check(Network(x, [HwMaxPool("pool", x, y, k, s, pad, pad_min)]))


@pytest.mark.parametrize("c, h, w", [(4, 4, 4), (7, 5, 6), (4, 24, 30)])
def test_upsample(c, h, w):
    rng = np.random.default_rng(h)
    x = tensor(rng, "x", c, h, w)
    y = Tensor("y", c, 2 * h, 2 * w, x.zero_point + 1 if x.zero_point < 255 else 0)
    check(Network(x, [HwUpsample2x("up", x, y)]))


@pytest.mark.parametrize("c, h, w", [(16, 4, 4), (20, 7, 6)])
def test_global_sum_pool(c, h, w):
    # 1x1 outputs are one word per block: needs words of a whole AXI beat (pynq_z2).
    cfg = get_config("pynq_z2")
    rng = np.random.default_rng(c)
    x = tensor(rng, "x", c, h, 2 * w)
    y = tensor(rng, "y", c, 1, 1)
    mq = [gemmlowp.quantize_multiplier(1 / (h * 2 * w) * rng.uniform(0.5, 2)) for _ in range(c)]
    la = HwGlobalSumPool("gap", x, y, [q for q, _ in mq], [s for _, s in mq],
                         rng.integers(-100, 100, size=c))
    check(Network(x, [la]), cfg)


@pytest.mark.parametrize("scheme", SCHEMES_8BIT)
def test_every_scheme_and_activation(scheme):
    """Conv layers in each requantization scheme, with ReLU/ReLU6 clamps and both leaky ReLUs
    (activation words in PBUF), across channel blocks and a split reduction: the machine's
    word-level post-processing equals numerics' Requant objects."""
    rng = np.random.default_rng(len(scheme))
    for i in range(6):
        x = tensor(rng, "x", int(rng.integers(1, 13)), 6, 8, signed=bool(i % 2))
        la = conv_rq(rng, f"conv{i}", x, int(rng.integers(1, 10)), 3, 1, 1, scheme=scheme)
        check(Network(x, [la]), seed=i)
    # a reduction split over commands (acc_keep / acc_cont) keeps the post-processing
    x = tensor(rng, "x", 20, 8, 8)
    prog = check(Network(x, [conv_rq(rng, "deep", x, 5, 5, 1, 2, scheme=scheme)]))
    assert any(op.acc_keep for op in _convs(prog))


@pytest.mark.parametrize("c, k, s, scheme", [
    (10, 3, 1, "torch-fbgemm"), (8, 3, 2, "torch-qnnpack"), (5, 5, 1, "onnxruntime"),
    (12, 3, 1, "tflite"),
])
def test_depthwise(c, k, s, scheme):
    """Depthwise convs (groups = channels) as diagonal weight tiles: output block j reads
    input block j only."""
    rng = np.random.default_rng(c + k)
    x = tensor(rng, "x", c, 9, 8)
    la = conv_rq(rng, "dw", x, c, k, s, k // 2, scheme=scheme)
    la.weights = la.weights[:, :1]
    la.groups = c
    prog = check(Network(x, [la]))
    ops = _convs(prog)
    assert len(ops) >= -(-c // TINY.cols) and all(op.cin_blocks == 1 for op in ops)


@pytest.mark.parametrize("c, s, pad, h, w, scheme", [
    (20, 1, 1, 9, 8, "torch-qnnpack"), (16, 2, 1, 11, 10, "onnxruntime"),
    (16, 1, 0, 7, 6, "tflite"), (18, 1, 1, 40, 40, "torch-fbgemm"),
])
def test_depthwise_one_pass(c, s, pad, h, w, scheme):
    """3x3 depthwise convs on pynq_z2 run as DW commands (one tile of taps, one walk), across
    channel blocks and output-row tiles (40x40 does not fit one accumulator bank); 5x5 keeps the
    diagonal tiles."""
    cfg = get_config("pynq_z2")
    rng = np.random.default_rng(c + h)
    x = tensor(rng, "x", c, h, w)
    la = conv_rq(rng, "dw", x, c, 3, s, pad, scheme=scheme)
    la.weights = la.weights[:, :1]
    la.groups = c
    prog = check(Network(x, [la]), cfg)
    ops = _convs(prog)
    assert {isa.Mode(int(op.mode)) for op in ops} == {isa.Mode.DW}
    assert len(ops) >= -(-c // cfg.cols) * (2 if h == 40 else 1)
    la5 = conv_rq(rng, "dw5", x, c, 5, 1, 2, scheme=scheme)
    la5.weights = la5.weights[:, :1]
    la5.groups = c
    ops = _convs(check(Network(x, [la5]), cfg))
    assert {isa.Mode(int(op.mode)) for op in ops} == {isa.Mode.CONV}


def test_global_pool_any_scheme():
    rng = np.random.default_rng(5)
    cfg = get_config("pynq_z2")
    for scheme in SCHEMES_8BIT:
        x = tensor(rng, "x", 20, 3, 8)
        rq, act = random_requant(rng, 20, scheme, gain=1 / 24)
        from zynqnn.compiler.testing import out_signed, out_zero_point
        y = Tensor("y", 20, 1, 1, out_zero_point(rq, act), out_signed(rq))
        check(Network(x, [HwGlobalSumPool("gap", x, y, requant=rq, act=act)]), cfg)


def test_post_processing_refusals():
    rng = np.random.default_rng(0)
    x = tensor(rng, "x", 4, 6, 6)
    la = conv_rq(rng, "c", x, 4, 3, 1, 1, scheme="torch-fbgemm")
    la.output.zero_point += 1
    with pytest.raises(CompileError, match="c: output zero point"):
        compile_network(Network(x, [la]), TINY)
    la = conv_rq(rng, "c2", x, 4, 3, 1, 1, scheme="tflite")
    la.clamp = (0, 10)
    with pytest.raises(CompileError, match="c2: clamp"):
        compile_network(Network(x, [la]), TINY)
    with pytest.raises(CompileError, match="c3: needs a requant or TFLite multiplier, shift"):
        from zynqnn.compiler import HwConv
        HwConv("c3", x, la.output, np.zeros((4, 4, 3, 3)), bias=[0] * 4)


@pytest.mark.parametrize("size", [16, 32])
def test_network_conv_pool_conv_upsample_concat_conv(size):
    rng = np.random.default_rng(7)
    h = size // 2
    x = tensor(rng, "x", 3, size, size)
    c1 = conv(rng, "c1", x, 8, 3, 1, 1)
    p1 = Tensor("p1", 8, h, h, c1.output.zero_point)
    pool = HwMaxPool("pool", c1.output, p1, 2, 2)
    c2 = conv(rng, "c2", p1, 6, 3, 1, 1)
    cat = Tensor("cat", 14, size, size, 0)
    up_out = Tensor("up", 6, size, size, 0)
    up = HwUpsample2x("up", c2.output, up_out)
    c1.output.zero_point = 0  # the concat's inputs share its zero point
    p1.zero_point = 0
    concat = HwConcat("concat", [c1.output, up_out], cat)
    c3 = conv(rng, "c3", cat, 5, 3, 1, 1)
    net = Network(x, [c1, pool, c2, up, concat, c3])
    prog = check(net)
    # c1's output lives on (concat); pool's and c2's outputs are dead after their consumers.
    assert prog.stats["bytes_saved"] > 0
    assert prog.stats["activation_bytes"] < prog.stats["activation_bytes_unplanned"]


def test_buffers_reused_in_a_chain():
    rng = np.random.default_rng(8)
    x = tensor(rng, "x", 4, 8, 8)
    layers, t = [], x
    for i in range(4):
        la = conv(rng, f"c{i}", t, 4, 3, 1, 1)
        layers.append(la)
        t = la.output
    prog = check(Network(x, layers))
    one = 8 * 8 * 4  # one 4-channel 8x8 tensor, tiny words of 4 bytes
    assert prog.stats["activation_bytes"] == 2 * one
    assert prog.stats["bytes_saved"] == 3 * one


def test_refused_layers_name_layer_and_limit():
    rng = np.random.default_rng(9)
    wide = tensor(rng, "x", 4, 4, 80)
    with pytest.raises(CompileError, match=r"wide.*max_width = 64"):
        compile_network(Network(wide, [conv(rng, "wide", wide, 4, 1)]), TINY)
    x = tensor(rng, "x", 4, 8, 8)
    big = conv(rng, "big", x, 4, 3, 1, 1)
    big.weights = rng.integers(-3, 3, size=(4, 4, 9, 9))
    big.padding = 0
    big.output = Tensor("y", 4, 0, 0)
    with pytest.raises(CompileError, match=r"big.*(kernel 9 above max_kernel = 7|should be)"):
        compile_network(Network(x, [big]), TINY)
    s3 = conv(rng, "s3", x, 4, 3, 1, 1)
    s3.stride = 3
    s3.output = Tensor("y", 4, 3, 3)
    with pytest.raises(CompileError, match=r"s3: stride 3"):
        compile_network(Network(x, [s3]), get_config("pynq_z2"))
    odd = tensor(rng, "x", 4, 8, 7)
    with pytest.raises(CompileError, match=r"odd.*AXI beat"):
        compile_network(Network(odd, [conv(rng, "odd", odd, 4, 1)]), TINY)
    tall = tensor(rng, "x", 4, 80, 64)
    y = Tensor("y", 4, 1, 1)
    gap = HwGlobalSumPool("gap", tall, y, [1 << 30] * 4, [0] * 4)
    with pytest.raises(CompileError, match=r"gap.*act_buffer_depth = 4096"):
        compile_network(Network(tall, [gap]), get_config("pynq_z2"))
    a, b = tensor(rng, "a", 3, 4, 4), tensor(rng, "b", 4, 4, 4)
    b.zero_point = a.zero_point
    cat = HwConcat("cat", [a, b], Tensor("cat", 7, 4, 4, a.zero_point))
    with pytest.raises(CompileError, match=r"cat: input 'a' has 3 channels.*rows = 4"):
        compile_network(Network(a, [cat, conv(rng, "c", cat.output, 4, 1)]), TINY)
    with pytest.raises(CompileError, match="rows == cols"):
        compile_network(Network(x, [conv(rng, "c", x, 4, 1)]),
                        TINY.replace(cols=8, requant_lanes=2))


def test_protocol_checker_finds_deadlock_and_race():
    rng = np.random.default_rng(10)
    x = tensor(rng, "x", 4, 36, 40)
    prog = compile_network(Network(x, [conv(rng, "conv", x, 8, 3, 1, 1)]), TINY)
    raw = bytearray(prog.commands)
    # Drop every release: the next LOAD into a bank waits forever.
    for i in range(prog.command_count):
        cmd = raw[i * 32:(i + 1) * 32]
        if isa.decode_opcode(bytes(cmd)) == isa.Opcode.CONV:
            bits = int.from_bytes(cmd, "little") & ~(0x3F << 10)
            raw[i * 32:(i + 1) * 32] = bits.to_bytes(32, "little")
    with pytest.raises(ProtocolError, match="deadlock|holds the data of command"):
        simulate(TINY, bytes(raw), scratch=prog.scratch)
    # Two layers without the barrier: the second LOADs a tile before it is stored.
    x = tensor(rng, "x", 4, 8, 8)
    c1 = conv(rng, "c1", x, 8, 3, 1, 1)
    c2 = conv(rng, "c2", c1.output, 4, 3, 1, 1)
    prog = compile_network(Network(x, [c1, c2]), TINY)
    prog.perf()
    keep = []
    for i in range(prog.command_count):
        raw = prog.commands[i * 32:(i + 1) * 32]
        if prog.labels[i] != "barrier":
            keep.append(raw)
    # Without barriers the second layer's loads race with the first layer's stores.
    with pytest.raises(ProtocolError, match="DDR race"):
        simulate(TINY, b"".join(keep), scratch=prog.scratch)


def test_double_buffering_overlaps_loads():
    rng = np.random.default_rng(11)
    x = tensor(rng, "x", 16, 36, 40)
    prog = compile_network(Network(x, [conv(rng, "conv", x, 16, 3, 1, 1)]), TINY)
    r = prog.perf(DmaModel())
    assert r.cycles < r.mac_cycles + r.load_cycles + r.store_cycles
    assert r.cycles >= max(r.mac_cycles, r.load_cycles)


@pytest.mark.parametrize("cfg_name", ["tiny", "pynq_z2"])
def test_a_run_leaves_the_program_image_intact(cfg_name):
    """Commands and constants are written once per program load: a run (dummy barrier
    transfers included) may write only activations and the scratch bytes."""
    from zynqnn.machine import Machine

    cfg = get_config(cfg_name)
    rng = np.random.default_rng(9)
    x = tensor(rng, "x", 3, 8, 8)
    c1 = conv(rng, "c1", x, 8, 3, 1, 1)
    p1 = Tensor("p1", 8, 4, 4, c1.output.zero_point)
    c2 = conv(rng, "c2", p1, 8, 3, 1, 1)
    net = Network(x, [c1, HwMaxPool("pool", c1.output, p1, 2, 2), c2])
    prog = compile_network(net, cfg)
    m = Machine(cfg, ddr_bytes=prog.ddr_bytes)
    for seed in (1, 2):
        xc = codes(np.random.default_rng(seed), x)
        assert np.array_equal(prog.run_golden(xc, m), run_reference(net, xc))
        lo, hi = prog.scratch
        for addr, data in prog.image.items():
            got = m.read(addr, len(data))
            keep = ~((np.arange(addr, addr + len(data)) >= lo)
                     & (np.arange(addr, addr + len(data)) < hi))
            assert np.array_equal(got[keep], np.frombuffer(bytes(data), np.uint8)[keep])
