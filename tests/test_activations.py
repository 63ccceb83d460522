"""Unary activations as table lookups (``lut`` -> ELTWISE with ``lut``), bit-exact with the
frameworks: for each activation and flow a small net (conv -> act -> depthwise conv -> 1x1
conv) quantized by the real framework, compiled, run on the golden backend and compared with
``numpy.array_equal`` against torch.ao's converted model / the ONNX Runtime session (and
``graph.run``, and the integer interface).

The conv after the activation is depthwise: on CPUs without AVX-512 VNNI fbgemm's GEMM convs
add products in saturating int16 pairs, which zynqnn does not model, and torch gives sigmoid,
hardsigmoid and tanh fixed output qparams with codes up to 255; fbgemm's depthwise pairs are
modelled (docs/numerics.md), so the comparison holds on every CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zynqnn
from zynqnn.compiler.testing import check_graph_on_golden, quantized_graph
from zynqnn.frontend import FrontendError

ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid,
        "hardswish": nn.Hardswish, "silu": nn.SiLU}


class _ActNet(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = act
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(self.dw(self.act(self.c1(x))))


def _data(size=8):
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(4, 3, size, size, generator=g) * 2
    return calib, (torch.randn(2, 3, size, size, generator=g) * 3).numpy()


def _torch_model(name, flow, size=8):
    torch.manual_seed(0)
    calib, x = _data(size)
    return quantized_graph(_ActNet(ACTS[name]()).eval(), calib, flow), x


@pytest.mark.parametrize("flow", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("name", list(ACTS))
def test_torch(name, flow):
    (g, reference), x = _torch_model(name, flow)
    luts = [n for n in g.nodes if n.op == "lut"]
    assert len(luts) == 1 and luts[0].attrs["function"] == name
    model, n = check_graph_on_golden(g, reference, x, "tiny")
    assert n == x.shape[0] * 4 * 8 * 8
    assert any(la["kind"] == f"lut {name}" for la in model.layers)


def test_torch_scalar_tail():
    """200 elements (8 x 5 x 5): fbgemm's kernels take the last 200 % 32 in their scalar
    code; the compiled program still equals torch on pynq_z2 for every activation."""
    for name in ACTS:
        (g, reference), x = _torch_model(name, "fbgemm", size=5)
        check_graph_on_golden(g, reference, x, "pynq_z2")


def _ort(name, fmt, tmp_path):
    from zynqnn.zoo.ort import export_onnx, ort_quantize, ort_session

    torch.manual_seed(0)
    calib, x = _data()
    f = export_onnx(_ActNet(ACTS[name]()).eval(), calib[:1], tmp_path / "m.onnx")
    path = ort_quantize(f, [c[None] for c in calib.numpy()], tmp_path / f"m-{fmt}.onnx",
                        fmt=fmt, per_channel=True, reduce_range=True)
    sess = ort_session(path)

    def reference(xs):
        runs = [sess.run(None, {"x": np.ascontiguousarray(s[None], dtype=np.float32)})
                for s in xs]
        return [np.concatenate(ys) for ys in zip(*runs, strict=True)]

    return path, reference, x


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
@pytest.mark.parametrize("name", list(ACTS))
def test_onnxruntime(name, fmt, tmp_path):
    """ONNX exports SiLU as ``Mul(x, Sigmoid(x))``: one table of x's code too."""
    path, reference, x = _ort(name, fmt, tmp_path)
    g = zynqnn.from_onnx(path)
    assert [n.attrs["function"] for n in g.nodes if n.op == "lut"] == [name]
    check_graph_on_golden(g, reference, x, "tiny")


class _Swish(nn.Module):
    """``sigmoid(y) * y`` (the sigmoid first) and ``y * sigmoid(y)`` on two branches."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        y = self.c1(x)
        z = self.c2(torch.sigmoid(y) * y)
        return self.dw(z * torch.sigmoid(z))


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
def test_onnx_swish_either_operand_order(fmt, tmp_path):
    """x * Sigmoid(x) with the sigmoid as the first and as the second operand: two tables,
    equal to ONNX Runtime on the golden backend; what ONNX Runtime runs for the pair is
    QLinearSigmoid and QLinearMul (its optimized model), in both formats."""
    import onnx
    import onnxruntime as ort

    from zynqnn.zoo.ort import export_onnx, ort_quantize, ort_session

    torch.manual_seed(0)
    calib, x = _data()
    f = export_onnx(_Swish().eval(), calib[:1], tmp_path / "m.onnx")
    path = ort_quantize(f, [c[None] for c in calib.numpy()], tmp_path / f"m-{fmt}.onnx",
                        fmt=fmt, per_channel=True, reduce_range=True)
    m = onnx.load(str(path))
    sig = {o for n in m.graph.node if "Sigmoid" in n.op_type for o in n.output}
    muls = [n for n in m.graph.node if n.op_type in ("Mul", "QLinearMul")]
    firsts = []
    for n in muls:   # the multiply's operands as Q/DQ pairs: is the sigmoid first?
        a = n.input[0]
        prod = {o: p for p in m.graph.node for o in p.output}
        while a in prod and prod[a].op_type in ("QuantizeLinear", "DequantizeLinear"):
            a = prod[a].input[0]
        firsts.append(a in sig)
    assert sorted(firsts) == [False, True]
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ran.count("QLinearSigmoid") == 2 and ran.count("QLinearMul") == 2, ran
    assert "Sigmoid" not in ran and "Mul" not in ran
    sess = ort_session(path)

    def reference(xs):
        return [np.concatenate([sess.run(None, {"x": s[None].astype(np.float32)})[0]
                                for s in xs])]

    g = zynqnn.from_onnx(path)
    assert [n.attrs["function"] for n in g.nodes if n.op == "lut"] == ["silu", "silu"]
    assert not [n for n in g.nodes if n.attrs.get("function") == "sigmoid"]
    check_graph_on_golden(g, reference, x, "tiny")


class _Gates(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(3, 8, 1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.c1(x)
        if self.kind == "two":        # two tensors (x * sigmoid(other)): no function of one code
            g = torch.sigmoid(self.c2(x))
        else:                         # a squeeze-and-excitation gate over channels
            g = torch.sigmoid(nn.functional.adaptive_avg_pool2d(y, 1))
        return self.c3(y * g)


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
@pytest.mark.parametrize("kind", ["two", "se"])
def test_onnx_other_multiplies_are_refused(kind, fmt, tmp_path):
    """A multiply of two activations that is not x * Sigmoid(x) of one tensor is refused naming
    the node, saying why and what to do; the same for a channel-broadcast (SE) gate."""
    from zynqnn.zoo.ort import export_onnx, ort_quantize

    torch.manual_seed(0)
    calib, _ = _data()
    f = export_onnx(_Gates(kind).eval(), calib[:1], tmp_path / "m.onnx")
    path = ort_quantize(f, [c[None] for c in calib.numpy()], tmp_path / f"m-{fmt}.onnx",
                        fmt=fmt, per_channel=True, reduce_range=True)
    op = "Mul" if fmt == "qdq" else "QLinearMul"
    what = ("element-wise multiply of two activations" if kind == "two"
            else r"a broadcast multiply \[1, 8, 8, 8\] x \[1, 8, 1, 1\] \(a squeeze-and-excit")
    with pytest.raises(FrontendError, match=rf"ONNX node '[^']*Mul[^']*' \({op}\) in "
                                            rf"\S*m-{fmt}\.onnx: {what}.*no multiplier for two "
                                            r"activations.*run the"):
        zynqnn.from_onnx(path)


def test_lookup_commands_and_machine_errors():
    """The compiled lookups are ELTWISE commands with lut; the golden machine refuses a lookup
    whose table runs past WBUF and any lookup on a 16-bit build (BAD_COMPUTE)."""
    from zynqnn.compiler import HwLut, Network, Tensor, compile_network
    from zynqnn.hw import isa
    from zynqnn.machine import Machine, MachineError

    rng = np.random.default_rng(0)
    x = Tensor("x", 8, 4, 4, 3, False)
    y = Tensor("y", 8, 4, 4, -5, True)
    table = rng.integers(-128, 128, 256)
    prog = compile_network(Network(x, [HwLut("act", x, y, table, "test")]), "tiny")
    codes = rng.integers(0, 256, (8, 4, 4))
    assert np.array_equal(prog.run_golden(codes), table[codes])
    cmds = [prog.commands[i:i + isa.COMMAND_BYTES]
            for i in range(0, len(prog.commands), isa.COMMAND_BYTES)]
    elt = [isa.EltwiseCommand.from_bits(int.from_bytes(c, "little")) for c in cmds
           if isa.decode_opcode(c) == isa.Opcode.ELTWISE]
    assert elt and all(int(c.op.lut) == 1 for c in elt)
    cfg = prog.cfg
    bad = isa.encode(isa.EltwiseCommand, opcode=isa.Opcode.ELTWISE, op={
        "pixels": 1, "lut": 1,
        "wbuf_addr": cfg.weight_buffer_depth - isa.lut_table_words(cfg.cols) + 1})
    m = Machine(cfg, 1 << 16)
    end = isa.encode(isa.Header, opcode=isa.Opcode.END)   # the last command must be END
    m.ddr[:2 * isa.COMMAND_BYTES] = np.frombuffer(bad + end, np.uint8)
    with pytest.raises(MachineError) as e:
        m.run(0, 2)
    assert e.value.cause == isa.ErrorCause.BAD_COMPUTE and "table" in str(e.value)
    m16 = Machine(zynqnn.hw.config.get_config("tiny16"), 1 << 16)
    ok16 = isa.encode(isa.EltwiseCommand, opcode=isa.Opcode.ELTWISE, op={"pixels": 1, "lut": 1})
    m16.ddr[:2 * isa.COMMAND_BYTES] = np.frombuffer(ok16 + end, np.uint8)
    with pytest.raises(MachineError) as e:
        m16.run(0, 2)
    assert e.value.cause == isa.ErrorCause.BAD_COMPUTE and "8-bit" in str(e.value)
