"""Compiled models (zynqnn.compile / zynqnn.load): float and integer runs equal the graph's,
program files (round trip and every way a file can be unusable), the performance report, the
relocation of a program, and the backends: golden, the RTL runner (a stand-in here; the real
simulation is marked slow) and PYNQ (the real driver over a stand-in of the PYNQ API whose
accelerator executes the commands with the machine model)."""

from __future__ import annotations

import json
import os
import sys
import types
import warnings
import zipfile

import numpy as np
import pytest
from test_driver import FakeAccelerator, fake_pynq

import zynqnn
from zynqnn.compiler import CompileError
from zynqnn.driver import Driver, PynqBackend
from zynqnn.hw.config import ConfigError, get_config
from zynqnn.hw.regs import REGMAP
from zynqnn.ir import Graph, Node, Tensor
from zynqnn.machine import Machine, MachineError
from zynqnn.program import (
    BackendError,
    CompiledModel,
    ProgramFileError,
    load,
    relocate,
)

warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")


def _cache_dir(tmp_path_factory):
    """One weight cache for all xdist workers of the run (their base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zynqnn-cache"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(graph, compiled model, held-out images) of the digits CNN, torch.ao FX fbgemm."""
    from zynqnn import zoo
    from zynqnn.zoo import digits as dg
    from zynqnn.zoo.quant import quiet_torch_ao

    with dg.shared_cache(_cache_dir(tmp_path_factory)) as model:
        x_tr, _, x_te, _ = dg.load_data()
        with quiet_torch_ao():
            q = zoo.quantize_fx(model, x_tr[:1], "fbgemm", x_tr[:256])
            g = zynqnn.from_torch(q, x_te[:2], engine="fbgemm")
        yield g, zynqnn.compile(g, "pynq_z2"), x_te.numpy()


def tiny_graph(seed=0) -> Graph:
    """quantize -> conv3x3 (ReLU) -> max pool -> conv3x3 -> dequantize, tflite, 4x8x8: small
    enough for the ``tiny`` config and an RTL simulation."""
    rng = np.random.default_rng(seed)
    g = Graph("tiny")
    g.add_tensor(Tensor("x", (1, 4, 8, 8), "float32"))
    g.add_tensor(Tensor("xq", (1, 4, 8, 8), "int8", 0.02, -3))
    for i, (cin, cout) in enumerate([(4, 8), (8, 4)]):
        w = rng.integers(-100, 101, size=(cout, cin, 3, 3))
        g.add_tensor(Tensor(f"w{i}", w.shape, "int8", rng.uniform(0.002, 0.005, cout),
                            np.zeros(cout, np.int64), axis=0, layout="any", data=w))
        g.add_tensor(Tensor(f"b{i}", (cout,), "int32", 1e-4, 0, layout="any",
                            data=rng.integers(-2000, 2000, cout)))
    g.add_tensor(Tensor("c0", (1, 8, 8, 8), "int8", 0.08, -128))
    g.add_tensor(Tensor("p0", (1, 8, 4, 4), "int8", 0.08, -128))
    g.add_tensor(Tensor("c1", (1, 4, 4, 4), "int8", 0.25, 5))
    g.add_tensor(Tensor("y", (1, 4, 4, 4), "float32"))
    conv = {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1,
            "requant": {"scheme": "tflite"}, "clamp": None}
    g.add_node(Node("q", "quantize", ["x"], ["xq"], "tflite"))
    g.add_node(Node("conv0", "conv2d", ["xq", "w0", "b0"], ["c0"], "tflite",
                    dict(conv, activation="relu")))
    g.add_node(Node("pool", "max_pool2d", ["c0"], ["p0"], "tflite",
                    {"kernel": [2, 2], "stride": [2, 2]}))
    g.add_node(Node("conv1", "conv2d", ["p0", "w1", "b1"], ["c1"], "tflite",
                    dict(conv, activation="none")))
    g.add_node(Node("dq", "dequantize", ["c1"], ["y"], "tflite"))
    g.inputs, g.outputs = ["x"], ["y"]
    return g.validate()


# -------------------------------------------------------------------------------------------------
# running


def test_first_conv_windows_gathered_on_the_host(tmp_path):
    """tiny_graph's first conv (3x3 over 4 channels) on pynq_z2: 36 gathered channels fill 3
    blocks of 16 instead of 9 passes over one, so the host gathers the windows and the layer
    is a 1x1 convolution; the results equal the graph's, also after a save/load round trip.
    On tiny (R = 4) it would save nothing (9 blocks either way) and is left alone."""
    g = tiny_graph(5)
    model = zynqnn.compile(g, "pynq_z2")
    assert model.boundary.input_patches == [3, 1, 1, 1, 1, 1]
    net = model.program.net
    assert net.input.shape == (36, 8, 8) and net.layers[0].weights.shape[1:] == (36, 1, 1)
    x = np.random.default_rng(6).normal(size=(3, 4, 8, 8)).astype(np.float32)
    assert np.array_equal(model.run(x), g.run(x))
    again = load(model.save(tmp_path / "p.zqp"))
    assert again.boundary.input_patches == [3, 1, 1, 1, 1, 1]
    assert np.array_equal(again.run(x), g.run(x))
    small = zynqnn.compile(g, get_config("tiny"))
    assert small.boundary.input_patches is None and small.program.net.input.shape == (4, 8, 8)
    assert np.array_equal(small.run(x), g.run(x))


def test_run_equals_the_graph(digits):
    g, model, x = digits
    y = model.run(x[:32])
    assert y.dtype == np.float32 and y.shape == (32, 10)
    assert np.array_equal(y, g.run(x[:32]))
    codes = g.quantize_input(x[:32])
    out = model.run_int(codes)
    assert out.dtype == np.int64 and np.array_equal(out, g.run_int(codes))
    assert model.last_cycles is None
    assert np.array_equal(model.run(x[5:6]), g.run(x[5:6]))   # batch of one
    assert model.run_int(codes[:0]).shape == (0, 10)
    assert "digits" not in repr(model) and "16x16i8" in repr(model)


def test_run_refuses_bad_inputs(digits):
    _, model, x = digits
    with pytest.raises(ValueError, match=r"must have shape \(N, 1, 8, 8\), got \[1, 8, 8\]"):
        model.run(x[0])
    with pytest.raises(ValueError, match="must be float32, got dtype int64"):
        model.run(np.zeros((1, 1, 8, 8), np.int64))
    with pytest.raises(ValueError, match="must be integer codes, got dtype float32"):
        model.run_int(x[:1])
    with pytest.raises(ValueError, match=r"holds codes outside 0\.\.255"):
        model.run_int(np.full((1, 1, 8, 8), 300))
    with pytest.raises(ValueError, match="unknown backend 'fpga'; use one of golden, verilator"):
        model.run(x[:1], backend="fpga")
    with pytest.raises(ValueError, match="the golden backend takes no options"):
        model.run(x[:1], timeout_s=1)


def test_compile_refuses_what_the_hardware_cannot_run():
    g = tiny_graph()
    g.node("conv1").attrs["groups"] = 1
    g.node("conv1").attrs["dilation"] = [2, 2]
    g.node("conv1").attrs["padding"] = [2, 2, 2, 2]
    with pytest.raises(CompileError, match=r"node 'conv1' \(conv2d\): dilation \[2, 2\]"):
        zynqnn.compile(g, "tiny")
    with pytest.raises(ConfigError, match="unknown hardware config 'nope'"):
        zynqnn.compile(tiny_graph(), "nope")


# -------------------------------------------------------------------------------------------------
# program files


def test_save_and_load(digits, tmp_path):
    g, model, x = digits
    path = model.save(tmp_path / "digits.zqp")
    m2 = load(path)
    m3 = zynqnn.load(str(path), config="pynq_z2")
    assert isinstance(m2, CompiledModel) and m2.config_id == model.config_id
    assert np.array_equal(m2.run(x[:16]), g.run(x[:16]))
    assert np.array_equal(m3.run_int(g.quantize_input(x[:4])), g.run_int(g.quantize_input(x[:4])))
    assert m2.report().table() == model.report().table()
    assert m2.program.commands == model.program.commands
    assert m2.boundary == model.boundary and m2.layers == model.layers
    with zipfile.ZipFile(path) as z:
        header = json.loads(z.read("zynqnn-program.json"))
        assert not any(n.endswith(".pkl") for n in z.namelist())
    assert header["format"] == "zynqnn-program" and header["version"] == 3
    assert header["config_id"] == model.config_id and header["config_name"] == "pynq_z2"
    assert len(header["sha256"]) == 64


def _rewrite(src, dst, edit_header=None, edit_member=None, drop=()):
    with zipfile.ZipFile(src) as z:
        items = {n: z.read(n) for n in z.namelist() if n not in drop}
    if edit_header:
        h = json.loads(items["zynqnn-program.json"])
        edit_header(h)
        items["zynqnn-program.json"] = json.dumps(h).encode()
    if edit_member:
        name, fn = edit_member
        items[name] = fn(items[name])
    with zipfile.ZipFile(dst, "w") as z:
        for n, d in items.items():
            z.writestr(n, d)
    return dst


def _bad_files(src, tmp):
    raw = src.read_bytes()
    (tmp / "random.zqp").write_bytes(bytes(range(256)) * 4)
    (tmp / "truncated.zqp").write_bytes(raw[: len(raw) // 2])
    (tmp / "crc.zqp").write_bytes(raw)

    # flip one byte inside the deflated data of a member (the CRC check catches it)
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("program.json")
    data = bytearray(raw)
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    data[at] ^= 0xFF
    (tmp / "crc.zqp").write_bytes(bytes(data))
    return {
        "missing.zqp": "no such file",
        "random.zqp": r"not a zynqnn program \(not a zip archive, or truncated\)",
        "truncated.zqp": r"not a zynqnn program \(not a zip archive, or truncated\)",
        "crc.zqp": r"damaged \(a member fails its CRC or is truncated\)",
        _rewrite(src, tmp / "v4.zqp", edit_header=lambda h: h.update(version=4)).name:
            r"program format version 4; this zynqnn reads versions 1, 2, 3",
        _rewrite(src, tmp / "fmt.zqp", edit_header=lambda h: h.update(format="other")).name:
            r"not a zynqnn program \(wrong format name\)",
        _rewrite(src, tmp / "nohead.zqp", drop=("zynqnn-program.json",)).name:
            r"not a zynqnn program \(no zynqnn-program.json\)",
        _rewrite(src, tmp / "edited.zqp", edit_member=(
            "segment-1.bin", lambda d: d[:-1] + bytes([d[-1] ^ 1]))).name:
            "checksum mismatch: the file is damaged or was modified",
        _rewrite(src, tmp / "badhead.zqp", edit_member=(
            "zynqnn-program.json", lambda d: d[:10])).name:
            r"damaged \(the header cannot be read\)",
    }


def test_unusable_files_fail_with_one_line(digits, tmp_path):
    _, model, _ = digits
    src = model.save(tmp_path / "ok.zqp")
    cases = _bad_files(src, tmp_path)
    for name, why in cases.items():
        path = tmp_path / name
        with pytest.raises(ProgramFileError, match=why) as info:
            load(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    with pytest.raises(ProgramFileError, match=r"ok.zqp: compiled for config pynq_z2 "
                       r"\(16x16i8-[0-9a-f]+\), not tiny \(4x4i8-[0-9a-f]+\); recompile with "
                       "--config tiny"):
        load(src, config="tiny")


def test_header_and_payload_config_must_agree(digits, tmp_path):
    _, model, _ = digits
    src = model.save(tmp_path / "ok.zqp")
    bad = _rewrite(src, tmp_path / "cfg.zqp",
                   edit_header=lambda h: h.update(config_id="4x4i8-00000000"))
    with pytest.raises(ProgramFileError, match=r"damaged \(config 16x16i8-.* in program.json, "
                                               r"4x4i8-00000000 in the header\)"):
        load(bad)


# -------------------------------------------------------------------------------------------------
# performance report


def test_report(digits):
    _, model, _ = digits
    rep = model.report()
    assert [r["name"] for r in rep.rows] == [la["name"] for la in model.layers]
    t = rep.total
    assert t["cycles"] > max(r["cycles"] for r in rep.rows) > 0
    assert t["latency_ms"] == pytest.approx(t["cycles"] / 150e3)
    assert rep.fps == pytest.approx(1e3 / rep.latency_ms)
    assert 0 < t["utilization"] < 1 and t["macs"] == sum(r["macs"] for r in rep.rows)
    assert {r["bound"] for r in rep.rows} <= {"compute", "post", "memory"}
    text = rep.table()
    assert "frames/s" in text and "conv2" in text and str(rep) == text
    slow = model.report(clock_mhz=100, ddr_gbps=0.2)
    assert slow.total["cycles"] > t["cycles"] and slow.clock_mhz == 100
    with pytest.raises(ConfigError, match="clock_mhz"):
        model.report(clock_mhz=1000)
    with pytest.raises(ValueError, match="ddr_gbps 0: must be > 0"):
        model.report(ddr_gbps=0)


# -------------------------------------------------------------------------------------------------
# relocation and the PYNQ backend


def test_relocated_program_runs_at_another_base(digits):
    g, model, x = digits
    prog = model.program
    base = 0x1F00_0000
    m = Machine(prog.cfg, ddr_bytes=prog.ddr_bytes, ddr_base=base)
    for addr, data in prog.image.items():
        m.write(base + addr, data)
    cmds = relocate(prog.commands, base)
    m.write(base + prog.cmd_addr, cmds)
    codes = model.boundary.to_network(g.quantize_input(x[:1]))[0]
    from zynqnn.compiler.layout import act_bytes, act_codes

    m.write(base + prog.tensor_addr(prog.net.input), act_bytes(prog.cfg, codes, 0))
    m.run(base + prog.cmd_addr, prog.command_count)
    out = prog.net.output
    raw = m.read(base + prog.tensor_addr(out), 16)
    assert np.array_equal(act_codes(prog.cfg, raw, out.shape, out.signed).reshape(10),
                          g.run_int(g.quantize_input(x[:1]))[0])
    # unrelocated, the commands leave the window: the machine reports the hardware's error
    m2 = Machine(prog.cfg, ddr_bytes=prog.ddr_bytes, ddr_base=base)
    m2.write(base, prog.commands)
    with pytest.raises(MachineError, match="DDR_WINDOW"):
        m2.run(base, prog.command_count)
    with pytest.raises(BackendError, match="beyond 32 bits"):
        relocate(prog.commands, 0xFFFF_FF00)


class MachineAccelerator(FakeAccelerator):
    """The PYNQ stand-in's accelerator, executing the commands with the machine model on the
    device copy of the buffer that holds them (so an unrelocated address fails)."""

    def _start(self):
        cmd = self._r("CMD_BASE")["addr"]
        count = self._r("CMD_COUNT")["count"]
        base, data = next((b, d) for b, d in self.mem.items() if b <= cmd < b + len(d))
        m = Machine(self.cfg, ddr_bytes=len(data), ddr_base=base)
        m.ddr[:] = np.frombuffer(bytes(data), np.uint8)
        st = REGMAP["STATUS"]
        try:
            m.run(cmd, count)
        except MachineError as e:
            self.regs[st.offset] = st.encode(error=1, cause=e.cause, cmd_index=e.index)
            self.regs[REGMAP["IRQ_STATUS"].offset] |= 2
        else:
            data[:] = m.ddr.tobytes()
            self.regs[st.offset] = st.encode(done=1)
            self.regs[REGMAP["IRQ_STATUS"].offset] |= 1
        self.runs = getattr(self, "runs", 0) + 1
        self.regs[REGMAP["PERF_CYCLES_BUSY_LO"].offset] = 4321 + self.runs
        self.regs[REGMAP["PERF_CYCLES_BUSY_HI"].offset] = 0
        self._update_irq()


def test_pynq_backend_through_the_driver(digits):
    g, model, x = digits
    model = CompiledModel(model.program, model.boundary, model.layers)  # fresh board state
    dev = MachineAccelerator(model.cfg)
    pq = fake_pynq(dev)
    drv = Driver(PynqBackend(pynq=pq, interrupt=pq.Interrupt("zynqnn/irq")), model.cfg)
    other = drv.alloc(1 << 20)   # another user's buffer: not in the program's runs' window
    y = model.run(x[:3], backend="pynq", driver=drv)
    assert np.array_equal(y, g.run(x[:3]))
    assert model.last_cycles == [4322, 4323, 4324]
    lo, hi = dev._r("WINDOW_BASE")["addr"], dev._r("WINDOW_LIMIT")["addr"]
    assert other.end <= lo or hi <= other.address
    assert hi - lo == model.program.ddr_bytes
    drv.free(other)
    flushes = dev.flushes
    y = model.run(x[3:5], backend="pynq", driver=drv)   # the image is written once
    assert np.array_equal(y, g.run(x[3:5])) and dev.flushes <= flushes + 2 * 2
    assert len(dev.mem) == 1   # the program's buffer (the other one was freed)
    model.release()   # the image's buffer is given back; the next run writes it again
    assert not dev.mem and not drv.buffers
    assert np.array_equal(model.run(x[:1], backend="pynq", driver=drv), g.run(x[:1]))
    dev2 = MachineAccelerator(model.cfg)
    drv2 = Driver(PynqBackend(pynq=fake_pynq(dev2)), model.cfg)
    assert np.array_equal(model.run(x[:1], backend="pynq", driver=drv2), g.run(x[:1]))
    assert not dev.mem and len(dev2.mem) == 1   # the first driver's copy freed on the switch


def test_pynq_backend_opens_the_bitstream(digits, tmp_path, monkeypatch):
    from test_pynq_overlay import pynq_module

    g, model, x = digits
    model = CompiledModel(model.program, model.boundary, model.layers)
    with pytest.raises(BackendError, match=r"backend 'pynq': no bitstream build/16x16i8-\w+/"
                                           r"zynqnn_16x16i8-\w+\.bit"):
        model.run(x[:1], backend="pynq")
    bit = tmp_path / "zynqnn.bit"
    bit.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "pynq", None)
    monkeypatch.delitem(sys.modules, "zynqnn.pynq_overlay", raising=False)
    with pytest.raises(BackendError, match="runs on the board: the Python package 'pynq' is "
                                           "not installed here"):
        model.run(x[:1], backend="pynq", bitfile=bit)
    dev = MachineAccelerator(model.cfg)
    monkeypatch.setitem(sys.modules, "pynq", pynq_module(dev))
    monkeypatch.setenv("ZYNQNN_BITFILE", str(bit))
    try:
        assert np.array_equal(model.run(x[:2], backend="pynq"), g.run(x[:2]))
    finally:
        sys.modules.pop("zynqnn.pynq_overlay", None)


# -------------------------------------------------------------------------------------------------
# the RTL backends


def test_simulation_backend_calls_the_program_runner(digits, monkeypatch):
    g, model, x = digits
    calls = []

    def run_program(program, inputs, sim, **kw):
        calls.append((program, [a.shape for a in inputs], sim, kw))
        return [program.run_golden(a) for a in inputs], [100 + i for i in range(len(inputs))]

    fake = types.ModuleType("zynqnn.sim.program_runner")
    fake.run_program = run_program
    monkeypatch.setitem(sys.modules, "zynqnn.sim.program_runner", fake)
    import zynqnn.sim

    monkeypatch.setattr(zynqnn.sim, "program_runner", fake, raising=False)
    y = model.run(x[:2], backend="icarus", backpressure=0.2)
    assert np.array_equal(y, g.run(x[:2])) and model.last_cycles == [100, 101]
    # the samples are the network's input: the first conv's 3x3 windows gathered (9 channels)
    assert calls == [(model.program, [(9, 8, 8)] * 2, "icarus", {"backpressure": 0.2})]


def test_simulation_backend_missing(digits, monkeypatch):
    _, model, x = digits
    import zynqnn.sim

    monkeypatch.setitem(sys.modules, "zynqnn.sim.program_runner", None)
    monkeypatch.delattr(zynqnn.sim, "program_runner", raising=False)
    with pytest.raises(BackendError, match="backend 'verilator': zynqnn.sim.program_runner is "
                                           "not part of this installation"):
        model.run(x[:1], backend="verilator")


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_rtl_backend_equals_the_graph(sim, tmp_path):
    g = tiny_graph(3)
    model = zynqnn.compile(g, get_config("tiny"))
    x = np.random.default_rng(4).normal(size=(2, 4, 8, 8)).astype(np.float32)
    model = load(model.save(tmp_path / "tiny.zqp"))
    y = model.run(x, backend=sim)
    assert np.array_equal(y, g.run(x))
    assert len(model.last_cycles) == 2 and min(model.last_cycles) > 0
