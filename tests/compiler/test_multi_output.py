"""Networks with several outputs: lowering, compilation, the compiled model and its file.

Every comparison is ``np.array_equal`` per output against the graph's own execution
(``graph.run_int`` for codes, ``graph.run`` for floats): hand-built IR graphs with two and three
outputs of different shapes (one an intermediate map that later layers read, one listed twice),
a two-head torch model quantized by torch.ao FX (qnnpack), and YOLOv3-tiny from the zoo (two
detection heads). Files: a two-output program round trip, and a version-1 (single-output)
program file still loads.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
import zipfile

import numpy as np
import pytest
from test_lower import Builder

import zynqnn
from zynqnn.compiler import CompileError, Network, Tensor, compile_network, run_reference
from zynqnn.compiler.layers import HwConv
from zynqnn.compiler.lower import BoundaryInfo, lower_graph
from zynqnn.ir import Node
from zynqnn.ir import Tensor as IRTensor
from zynqnn.program import BackendError, CompiledModel, load

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")


def _dequant(b: Builder, heads: list[str]):
    """Graph outputs ``y0, y1, ...``: a dequantize of each of ``heads`` (in that order)."""
    g = b.g
    for i, h in enumerate(heads):
        t = g.tensors[h]
        g.add_tensor(IRTensor(f"y{i}", t.shape, "float32", layout=t.layout))
        g.add_node(Node(f"dq{i}", "dequantize", [h], [f"y{i}"], b.fl))
    g.outputs = [f"y{i}" for i in range(len(heads))]
    return g.validate()


def two_heads(flavour="torch-qnnpack", seed=3):
    """conv (ReLU) 16x8x8 -> max pool -> 1x1 conv: head A (6x4x4); the conv's map -> 3x3 conv:
    head B (5x8x8). Head A is produced first, B last; outputs in the order (A, B)."""
    b = Builder(flavour, (4, 8, 8), seed=seed, name=f"two-heads-{flavour}")
    a = b.conv(b.x, 16, act="relu")
    p = b.node("max_pool2d", [a], attrs={"kernel": [2, 2], "stride": [2, 2]})
    h1 = b.conv(p, 6, k=1, pad=0)
    h2 = b.conv(a, 5, k=3)
    return _dequant(b, [h1, h2])


def three_outputs(seed=5):
    """Outputs (last layer's map, an early map that six later layers read or outlive, the last
    map again): without keeping every output alive the planner would reuse the early map's
    buffer."""
    b = Builder("torch-qnnpack", (16, 8, 8), seed=seed, name="three-outputs")
    early = b.conv(b.x, 16, act="relu")
    h = early
    for _ in range(5):
        h = b.conv(h, 16, act="relu")
    last = b.conv(h, 8, k=1, pad=0)
    return _dequant(b, [last, early, last])


def _codes(g, n, seed=0):
    q = g.tensors[g.quant_inputs[0]]
    rng = np.random.default_rng(seed)
    return rng.integers(q.qmin, q.qmax + 1, size=(n,) + tuple(q.shape[1:]))


def _compare_lowered(g, cfg="pynq_z2", samples=3):
    """run_reference (all outputs) and the compiled program on the machine model against
    graph.run_int, per output and sample. Returns (net, boundary, program, codes compared)."""
    net, bd = lower_graph(g, cfg)
    prog = compile_network(net, cfg)
    codes = _codes(g, samples)
    want = g.run_int(codes)
    assert isinstance(want, tuple) and len(want) == len(g.outputs) == len(net.outputs)
    n = 0
    for i, c in enumerate(bd.to_network(codes)):
        ref = run_reference(net, c, prog.cfg.operand_bits, all_outputs=True)
        gold = prog.run_golden_all(c)
        assert isinstance(ref, list) and isinstance(gold, list)
        for k, o in enumerate(bd.outputs):
            w = want[k][i]
            assert np.array_equal(ref[k].reshape(o.shape), w), (k, i)
            assert np.array_equal(gold[k].reshape(o.shape), w), (k, i)
            n += 2 * w.size
        # the single-output entry points keep returning the first output
        assert np.array_equal(run_reference(net, c, prog.cfg.operand_bits), ref[0])
        assert np.array_equal(prog.run_golden(c), gold[0])
    return net, bd, prog, n


@pytest.mark.parametrize("flavour", ["torch-qnnpack", "torch-fbgemm", "tflite"])
def test_two_outputs_lowered_and_compiled(flavour):
    g = two_heads(flavour)
    net, bd, prog, n = _compare_lowered(g)
    assert n > 0
    assert [t.shape for t in net.outputs] == [(6, 4, 4), (5, 8, 8)]
    assert net.output is net.outputs[0]
    assert [o.name for o in bd.outputs] == ["y0", "y1"] and bd.multi
    assert (bd.output_name, bd.output_shape) == ("y0", (6, 4, 4))
    # every output has its own DDR range
    spans = sorted((prog.tensor_addr(t), prog.tensor_addr(t) + prog.tensor_bytes(t))
                   for t in net.outputs)
    assert spans[0][1] <= spans[1][0]


def test_outputs_stay_alive_to_the_end():
    g = three_outputs()
    net, bd, prog, _ = _compare_lowered(g)
    last, early, again = net.outputs
    assert again is last and early is not last
    lo = prog.tensor_addr(early)
    hi = lo + prog.tensor_bytes(early)
    later = net.layers[net.layers.index(next(la for la in net.layers if la.output is early))
                       + 1:]
    assert len(later) == 6
    for la in later:   # nothing produced after the early output overwrites it
        a = prog.tensor_addr(la.output)
        assert a + prog.tensor_bytes(la.output) <= lo or a >= hi, la.name
    # a single-output network of the same layers does reuse that buffer (the check above
    # is not vacuous)
    single = compile_network(Network(net.input, net.layers), prog.cfg)
    a0 = single.tensor_addr(net.layers[0].output)
    assert any(single.tensor_addr(la.output) == a0 for la in later)


def test_network_outputs_argument():
    x = Tensor("x", 4, 4, 4)
    y1, y2 = Tensor("y1", 4, 4, 4), Tensor("y2", 4, 4, 4)
    w = np.zeros((4, 4, 1, 1), np.int64)
    c1 = HwConv("c1", x, y1, w, bias=0, multiplier=1 << 30, shift=0)
    c2 = HwConv("c2", y1, y2, w, bias=0, multiplier=1 << 30, shift=0)
    assert Network(x, [c1, c2]).outputs == [y2]
    net = Network(x, [c1, c2], outputs=[y1, y2])
    assert net.output is y1 and net.outputs == [y1, y2]
    assert Network(x, [c1, c2], y1, [y1, y2]).output is y1
    with pytest.raises(CompileError, match="is not the first of outputs"):
        Network(x, [c1, c2], y2, [y1, y2])
    with pytest.raises(CompileError, match="at least one output"):
        Network(x, [c1, c2], outputs=[])


def test_compiled_model_runs_return_a_tuple():
    g = two_heads()
    model = zynqnn.compile(g, "pynq_z2")
    codes = _codes(g, 3, seed=1)
    got = model.run_int(codes)
    want = g.run_int(codes)
    assert isinstance(got, tuple) and len(got) == 2
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.int64 and a.shape == b.shape and np.array_equal(a, b)
    x = np.random.default_rng(2).uniform(-1, 2, size=(2, 4, 8, 8)).astype(np.float32)
    y, yg = model.run(x), g.run(x)
    assert isinstance(y, tuple) and len(y) == 2
    for a, b in zip(y, yg, strict=True):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    empty = model.run_int(codes[:0])
    assert [e.shape for e in empty] == [(0, 6, 4, 4), (0, 5, 8, 8)]
    assert "outputs [6, 4, 4], [5, 8, 8]" in repr(model)


def test_save_and_load_two_outputs(tmp_path):
    g = two_heads()
    model = zynqnn.compile(g, "pynq_z2")
    path = model.save(tmp_path / "two.zqp")
    m2 = load(path, config="pynq_z2")
    assert m2.boundary == model.boundary and len(m2.boundary.outputs) == 2
    with zipfile.ZipFile(path) as z:
        header = json.loads(z.read("zynqnn-program.json"))
        doc = json.loads(z.read("program.json"))
    assert header["version"] == 3 and len(doc["outputs"]) == 2 and "output" not in doc
    for t, t2 in zip(model.program.net.outputs, m2.program.net.outputs, strict=True):
        assert t.name == t2.name and t.shape == t2.shape
        assert m2.program.tensor_addr(t2) == model.program.tensor_addr(t)
    x = np.random.default_rng(3).uniform(-1, 2, size=(2, 4, 8, 8)).astype(np.float32)
    for a, b in zip(m2.run(x), g.run(x), strict=True):
        assert np.array_equal(a, b)
    codes = _codes(g, 2, seed=4)
    for a, b in zip(m2.run_int(codes), g.run_int(codes), strict=True):
        assert np.array_equal(a, b)


def _as_version_1(src, dst):
    """Rewrite a single-output program file as the format-version-1 writer wrote it: one
    ``output`` tensor, a boundary without ``outputs``, version 1 in the header."""
    from zynqnn.program import _digest

    with zipfile.ZipFile(src) as z:
        items = {n: z.read(n) for n in z.namelist()}
    doc = json.loads(items["program.json"])
    (out,) = doc.pop("outputs")
    doc["output"] = out
    doc["boundary"].pop("outputs")
    items["program.json"] = json.dumps(doc, indent=1).encode()
    header = json.loads(items.pop("zynqnn-program.json"))
    header.update(version=1, sha256=_digest(items))
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("zynqnn-program.json", json.dumps(header))
        for n, d in items.items():
            z.writestr(n, d)
    return dst


def test_version_1_files_still_load(tmp_path):
    b = Builder("torch-qnnpack", (4, 8, 8), seed=9, name="single")
    g = _dequant(b, [b.conv(b.conv(b.x, 8, act="relu"), 4)])
    model = zynqnn.compile(g, "pynq_z2")
    old = _as_version_1(model.save(tmp_path / "new.zqp"), tmp_path / "old.zqp")
    m1 = load(old)
    assert m1.boundary == model.boundary and not m1.boundary.multi
    x = np.random.default_rng(5).uniform(-1, 2, size=(3, 4, 8, 8)).astype(np.float32)
    y = m1.run(x)
    assert isinstance(y, np.ndarray) and np.array_equal(y, g.run(x))
    # a boundary dict without "outputs" (version 1) is one output
    d = model.boundary.to_dict()
    d.pop("outputs")
    assert BoundaryInfo.from_dict(d) == model.boundary


def test_rtl_backend_asks_the_runner_for_every_output(monkeypatch):
    """The RTL backends call run_program(..., all_outputs=True) for several outputs only (the
    runner itself is a stand-in here)."""
    import zynqnn.sim

    g = two_heads()
    model = zynqnn.compile(g, "pynq_z2")
    calls = []

    def run_program(program, inputs, sim, all_outputs=False, **kw):
        calls.append((sim, all_outputs, kw))
        outs = [program.run_golden_all(a) if all_outputs else program.run_golden(a)
                for a in inputs]
        return outs, [7] * len(inputs)

    fake = types.ModuleType("zynqnn.sim.program_runner")
    fake.run_program = run_program
    monkeypatch.setitem(sys.modules, "zynqnn.sim.program_runner", fake)
    monkeypatch.setattr(zynqnn.sim, "program_runner", fake, raising=False)
    codes = _codes(g, 2, seed=6)
    got = model.run_int(codes, backend="verilator", backpressure=0.1)
    for a, b in zip(got, g.run_int(codes), strict=True):
        assert np.array_equal(a, b)
    assert calls == [("verilator", True, {"backpressure": 0.1})]
    assert model.last_cycles == [7, 7]

    def old_runner(program, inputs, sim, **kw):
        if kw:
            raise TypeError(f"run_program() got an unexpected keyword argument "
                            f"{next(iter(kw))!r}")
        return [program.run_golden(a) for a in inputs], [1] * len(inputs)

    fake.run_program = old_runner
    with pytest.raises(BackendError, match="cannot read the 2 outputs of a multi-output "
                                           "network"):
        model.run_int(codes, backend="icarus")
    fake.run_program = lambda program, inputs, sim, **kw: old_runner(program, inputs, sim)
    with pytest.raises(BackendError, match=r"must return a list of 2 code arrays per input"):
        model.run_int(codes, backend="icarus")


def test_pynq_backend_reads_every_output(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from test_driver import fake_pynq
    from test_program import MachineAccelerator

    from zynqnn.driver import Driver, PynqBackend

    g = two_heads()
    model = zynqnn.compile(g, "pynq_z2")
    model = CompiledModel(model.program, model.boundary, model.layers)
    dev = MachineAccelerator(model.cfg)
    pq = fake_pynq(dev)
    drv = Driver(PynqBackend(pynq=pq, interrupt=pq.Interrupt("zynqnn/irq")), model.cfg)
    x = np.random.default_rng(7).uniform(-1, 2, size=(2, 4, 8, 8)).astype(np.float32)
    for a, b in zip(model.run(x, backend="pynq", driver=drv), g.run(x), strict=True):
        assert np.array_equal(a, b)


# -------------------------------------------------------------------------------------------------
# torch models


def _torch_graph(model, x, engine="qnnpack"):
    import torch

    from zynqnn import zoo
    from zynqnn.zoo.quant import quiet_torch_ao

    old = torch.backends.quantized.engine
    try:
        with quiet_torch_ao():
            q = zoo.quantize_fx(model, x[:1], engine=engine, calibration=x)
            return zynqnn.from_torch(q, x[:1], engine=engine)
    finally:
        torch.backends.quantized.engine = old


def _two_head_module():
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
            self.head_a = nn.Conv2d(32, 10, 1)
            self.down = nn.MaxPool2d(2)
            self.head_b = nn.Conv2d(32, 6, 3, padding=1)

        def forward(self, x):
            h = self.body(self.stem(x))
            return self.head_a(h), self.head_b(self.down(h))

    torch.manual_seed(0)
    return TwoHeads().eval()


def test_torch_two_heads_fx_qnnpack():
    import torch

    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    g = _torch_graph(_two_head_module(), x)
    assert len(g.outputs) == 2
    model = zynqnn.compile(g, "pynq_z2")
    xs = x.numpy()
    got, want = model.run(xs, backend="golden"), g.run(xs)
    assert isinstance(got, tuple) and len(got) == len(want) == 2
    assert [a.shape for a in got] == [(8, 10, 8, 8), (8, 6, 4, 4)]
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_yolov3_tiny_two_heads():
    """YOLOv3-tiny (random weights, 64x64, torch.ao FX qnnpack) compiled for pynq_z2: both
    detection heads from the command stream equal graph.run (about 15 s)."""
    import torch

    from zynqnn import zoo

    model = zoo.get("yolov3_tiny", seed=0)
    calib = torch.cat([zoo.example_input("yolov3_tiny", 64, batch=1, seed=i) for i in range(2)])
    g = _torch_graph(model, calib)
    assert len(g.outputs) == 2
    cm = zynqnn.compile(g, "pynq_z2")
    assert len(cm.program.net.outputs) == 2
    x = torch.cat([calib, zoo.example_input("yolov3_tiny", 64, batch=1, seed=7)]).numpy()
    got, want = cm.run(x, backend="golden"), g.run(x)
    assert [a.shape for a in got] == [(3, 75, 2, 2), (3, 75, 4, 4)]
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)
    codes = g.quantize_input(x[:1])
    for a, b in zip(cm.run_int(codes), g.run_int(codes), strict=True):
        assert np.array_equal(a, b)
