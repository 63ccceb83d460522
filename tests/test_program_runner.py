"""run_program: a compiled network on zynqnn_top for several inputs in one simulator process.

These tests build in run_program's default ``build/system/``, which tests/test_system.py shares
under run_program's lock (``build_lock``): one build of the tiny top level per simulator.
"""

import dataclasses

import numpy as np
import pytest

from zynqnn.compiler import compile_network
from zynqnn.compiler.testing import codes
from zynqnn.hw import isa
from zynqnn.hw.config import get_config
from zynqnn.sim.program_runner import ProgramRunError, build_dir, run_program
from zynqnn.sim.tb_system import small_network


def _compiled(seed=3):
    rng = np.random.default_rng(seed)
    net = small_network(rng)
    prog = compile_network(net, get_config("tiny"))
    xs = [codes(rng, net.input) for _ in range(3)]
    return prog, xs


# The runner is a harness, not an RTL unit (the top level runs on both simulators in
# tests/test_system.py): Icarus, four times slower here, takes the checked memory model only.
@pytest.mark.parametrize("sim, fast", [("verilator", False), ("verilator", True),
                                       ("icarus", False)],
                         ids=["verilator-checked", "verilator-fast", "icarus-checked"])
def test_three_inputs_equal_golden(sim, fast):
    """Three different inputs and the first one again, with the system tests' harness (AxiRam,
    protocol checker) and with the lean DDR model: every output equals run_golden, the
    identical inputs take identical cycles, progress is reported as inputs finish."""
    prog, xs = _compiled()
    xs = [*xs, xs[0].copy()]
    seen = []
    outputs, cycles = run_program(prog, xs, sim, fast=fast,
                                  progress=lambda d, n: seen.append((d, n)))
    assert len(outputs) == len(cycles) == len(xs)
    for i, (x, y) in enumerate(zip(xs, outputs, strict=True)):
        want = prog.run_golden(x)
        assert y.shape == want.shape and np.array_equal(y, want), f"input {i}"
    assert not np.array_equal(outputs[0], outputs[1])
    assert cycles[0] == cycles[3], cycles
    assert all(c > 0 for c in cycles)
    assert seen and seen[-1] == (len(xs), len(xs))
    assert [d for d, _ in seen] == sorted(set(d for d, _ in seen))


def test_several_outputs():
    """A network with two outputs (an early map the later layers outlive, and the last map):
    every output of every input equals run_golden_all."""
    rng = np.random.default_rng(8)
    net = small_network(rng)
    net = type(net)(net.input, net.layers, outputs=[net.output, net.layers[0].output])
    prog = compile_network(net, get_config("tiny"))
    xs = [codes(rng, net.input) for _ in range(2)]
    outputs, _ = run_program(prog, xs, "verilator", fast=True, all_outputs=True)
    for x, ys in zip(xs, outputs, strict=True):
        want = prog.run_golden_all(x)
        assert len(ys) == 2 and all(np.array_equal(y, w) for y, w in zip(ys, want, strict=True))


def test_backpressure():
    """Random pauses on every AXI channel (checked harness): outputs still equal run_golden."""
    prog, xs = _compiled(seed=5)
    outputs, _ = run_program(prog, xs[:2], "verilator", backpressure=0.3)
    for i, (x, y) in enumerate(zip(xs, outputs, strict=False)):
        assert np.array_equal(y, prog.run_golden(x)), f"input {i}"


def test_ddr_latency_on_tiny():
    """The lean DDR model's latency on the tiny build (the top level the other tests here
    build): a residual block's outputs equal run_golden with the DDR answering 0 and 100 cycles
    late, identical at both, and the latency costs cycles. The performance model's figure is
    checked on pynq_z2, for which it is fitted (test_ddr_latency_and_the_performance_model,
    slow: its top level's Verilator build alone takes over a minute)."""
    from zynqnn.compiler import Network
    from zynqnn.compiler.testing import resnet_block

    rng = np.random.default_rng(0)
    net = resnet_block(rng, channels=8, size=16)
    # stem .. max pool: tiny's 4-byte words leave the 1x1 head's rows shorter than an AXI beat
    net = Network(net.input, net.layers[:5])
    prog = compile_network(net, get_config("tiny"))
    x = codes(np.random.default_rng(1), net.input)
    seen = {}
    for latency in (0, 100):
        outputs, cycles = run_program(prog, [x], "verilator", fast=True, ddr_latency=latency)
        assert np.array_equal(outputs[0], prog.run_golden(x)), latency
        seen[latency] = cycles[0]
    assert seen[100] > seen[0] + 100, seen


@pytest.mark.slow
def test_ddr_latency_and_the_performance_model():
    """A residual network on the pynq_z2 build, its DDR answering 0 and 100 cycles late (the
    board's figure, zynqnn.compiler.perf.BOARD_LATENCY): outputs equal run_golden, and the
    performance model's DMA (outstanding bursts hiding the latency) predicts the busy cycles
    within 5 % at both latencies."""
    from zynqnn.compiler.perf import DmaModel
    from zynqnn.compiler.testing import resnet_block

    rng = np.random.default_rng(0)
    net = resnet_block(rng, channels=32, size=16)
    prog = compile_network(net, get_config("pynq_z2"))
    x = codes(np.random.default_rng(1), net.input)
    seen = {}
    for latency in (0, 100):
        outputs, cycles = run_program(prog, [x], "verilator", fast=True, ddr_latency=latency)
        assert np.array_equal(outputs[0], prog.run_golden(x))
        model = prog.perf(DmaModel.simulation(latency)).cycles
        assert abs(model - cycles[0]) / cycles[0] < 0.05, (latency, model, cycles[0])
        seen[latency] = cycles[0]
    assert seen[100] > seen[0] + 100, seen


def test_accelerator_error_names_input_and_cause():
    """A corrupted command (unknown opcode) surfaces as ProgramRunError with the input index
    and the error cause."""
    prog, xs = _compiled()
    base = next(a for a, b in prog.image.items() if a <= prog.cmd_addr < a + len(b))
    blob = bytearray(prog.image[base])
    at = prog.cmd_addr - base + 2 * isa.COMMAND_BYTES
    blob[at] = (blob[at] & 0xF0) | 7   # opcode 7 is not an instruction
    bad = dataclasses.replace(prog, image={**prog.image, base: bytes(blob)})
    with pytest.raises(ProgramRunError) as err:
        run_program(bad, xs[:2], "verilator")
    e = err.value
    assert (e.index, e.kind, e.cause) == (0, "accelerator", "BAD_OPCODE"), e
    assert "input 0" in str(e) and "BAD_OPCODE" in str(e) and "command 2" in str(e)


def test_bad_inputs_rejected_before_simulating():
    prog, xs = _compiled()
    with pytest.raises(ValueError, match="input 1: shape"):
        run_program(prog, [xs[0], xs[1][:, :4]], "verilator")
    with pytest.raises(ValueError, match="input 0: codes"):
        run_program(prog, [xs[0] + 300], "verilator")
    with pytest.raises(ValueError, match="sim must be"):
        run_program(prog, xs, "questa")
    with pytest.raises(ValueError, match="no back-pressure"):
        run_program(prog, xs, "verilator", fast=True, backpressure=0.2)
    with pytest.raises(ValueError, match="ddr_latency needs fast=True"):
        run_program(prog, xs, "verilator", ddr_latency=50)
    assert run_program(prog, [], "verilator") == ([], [])
    # A relative build root still names one place once the simulator runs elsewhere.
    assert build_dir(prog.cfg, "verilator", "build/x").is_absolute()


def test_run_writing_into_the_image_is_an_error():
    """The image is loaded once (as on the board): a run that writes into it is reported. Here
    a fake image segment covers the upsampling layer's output, which every run writes."""
    prog, xs = _compiled()
    up = next(la for la in prog.net.layers if la.name == "up").output
    lo = prog.tensor_addr(up)
    hi = lo + up.channels * up.height * up.width   # tiny: 4 channels per word, 1 byte each
    for t in (prog.net.input, prog.net.output):
        a = prog.tensor_addr(t)
        assert hi <= a or a + t.channels * t.height * t.width <= lo
    bad = dataclasses.replace(prog, image={**prog.image, lo: bytes(hi - lo)})
    with pytest.raises(ProgramRunError) as err:
        run_program(bad, xs[:1], "verilator")
    assert (err.value.index, err.value.kind) == (0, "image"), err.value
    assert "input 0" in str(err.value) and "wrote into the program image" in str(err.value)
