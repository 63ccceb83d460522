"""System tests: compiled networks through the driver on ``zynqnn_top`` with the real engine.

The compiler's program (commands and constants at their DDR addresses) and the input tensor are
placed in the simulated DDR; the driver runs it over AXI4-Lite like the board's CPU; the output
tensor read back from DDR must equal both the command-level model (``Program.run_golden``) and
the golden ops (``run_reference``). The AXI checkers watch the manager and register ports
throughout.

Networks: conv / max pool / upsample / concat (``compiled_network``); ResNet-style residual
blocks whose skip connection is an ``ELTWISE`` add (``residual_network``, PyTorch and TFLite add
semantics); and 100 back-to-back runs of one residual network (``back_to_back_runs``: identical
outputs and identical cycle counts).
"""

from __future__ import annotations

import cocotb
import numpy as np

from zynqnn.compiler import HwConcat, HwMaxPool, HwUpsample2x, Network, Tensor, compile_network
from zynqnn.compiler.layout import act_bytes, act_codes, cblocks
from zynqnn.compiler.reference import run_reference
from zynqnn.compiler.testing import codes, conv, resnet_block, tensor
from zynqnn.driver import DeviceBuffer
from zynqnn.sim.tb_soc import SocTb


def small_network(rng, size=8):
    """conv3x3 -> maxpool 2x2 -> conv3x3 -> upsample x2 -> concat -> conv3x3."""
    h = size // 2
    x = tensor(rng, "x", 3, size, size)
    c1 = conv(rng, "c1", x, 4, 3, 1, 1)
    c1.output.zero_point = 0  # the concat's inputs share its zero point
    p1 = Tensor("p1", 4, h, h, 0)
    pool = HwMaxPool("pool", c1.output, p1, 2, 2)
    c2 = conv(rng, "c2", p1, 4, 3, 1, 1)
    up_out = Tensor("up", 4, size, size, c2.output.zero_point)
    up = HwUpsample2x("up", c2.output, up_out)
    cat = Tensor("cat", 8, size, size, 0)
    c2.output.zero_point = up_out.zero_point = 0
    concat = HwConcat("concat", [c1.output, up_out], cat)
    c3 = conv(rng, "c3", cat, 4, 3, 1, 1)
    return Network(x, [c1, pool, c2, up, concat, c3])


async def run_compiled(tb: SocTb, prog, x):
    """Place ``prog`` and input ``x`` in DDR, run through the driver, return the output codes."""
    cfg = tb.cfg
    for addr, data in prog.image.items():
        tb.ddr.write(addr, bytes(data))
    tb.ddr.write(prog.tensor_addr(prog.net.input),
                 bytes(act_bytes(cfg, x, prog.net.input.zero_point)))
    window = (0, prog.ddr_bytes)
    tb.checker.window = window
    result = await tb.drv.run(DeviceBuffer(prog.cmd_addr, len(prog.commands)),
                              count=prog.command_count, window=window, timeout_s=0.05)
    out = prog.net.output
    n = cblocks(out.channels, cfg.rows) * out.height * out.width * cfg.rows * cfg.operand_bits // 8
    raw = np.frombuffer(tb.ddr.read(prog.tensor_addr(out), n), dtype=np.uint8)
    await tb.settle()
    tb.assert_clean()
    return act_codes(cfg, raw, out.shape, out.signed), result


@cocotb.test()
async def compiled_network(dut):
    """A six-layer network, with and without backpressure, twice: outputs equal the model and
    the golden ops, and identical runs take identical cycles."""
    tb = SocTb(dut)
    await tb.reset()
    rng = np.random.default_rng(3)
    net = small_network(rng)
    prog = compile_network(net, tb.cfg)
    x = codes(rng, net.input)
    want = run_reference(net, x)
    assert np.array_equal(prog.run_golden(x), want)
    cycles = []
    for pressure in (False, False, True):
        if pressure:
            tb.backpressure(0.3)
        got, result = await run_compiled(tb, prog, x)
        bad = int(np.sum(got != want))
        dut._log.info("backpressure=%s: %d outputs, %d mismatches, %d cycles", pressure,
                      got.size, bad, result.cycles)
        assert bad == 0
        cycles.append(result.cycles)
    assert cycles[0] == cycles[1], cycles


def residual_networks(rng):
    """Two residual networks on one channel block: PyTorch add (uint8), TFLite add (int8)."""
    return [resnet_block(rng, 4, 8, "torch"), resnet_block(rng, 4, 8, "tflite")]


@cocotb.test()
async def residual_network(dut):
    """stem conv -> conv (ReLU) -> conv -> ELTWISE add of the stem (ReLU) -> max pool -> global
    pool -> 1x1 conv, in PyTorch and TFLite add semantics, with and without backpressure:
    outputs equal the model and the golden ops."""
    tb = SocTb(dut)
    await tb.reset()
    rng = np.random.default_rng(17)
    for full in residual_networks(rng):
        add = next(la for la in full.layers if la.name == "add")
        # The whole network, and its first layers up to the add (the add's 256 codes out).
        upto = Network(full.input, full.layers[:full.layers.index(add) + 1])
        for pressure in (False, True):
            if pressure:
                tb.backpressure(0.3)
            for net in (full, upto):
                prog = compile_network(net, tb.cfg)
                x = codes(rng, net.input)
                want = run_reference(net, x)
                assert np.array_equal(prog.run_golden(x), want)
                got, result = await run_compiled(tb, prog, x)
                bad = int(np.sum(got != want))
                dut._log.info("residual %s (%s), backpressure=%s: %d outputs, %d mismatches, "
                              "%d cycles (model %d)", add.semantics, net.output.name, pressure,
                              got.size, bad, result.cycles, prog.perf().cycles)
                assert bad == 0
        tb.backpressure(0.0)


@cocotb.test()
async def back_to_back_runs(dut):
    """The same residual network and input 100 times in a row: identical outputs, equal to the
    model and the golden ops, and identical cycle counts."""
    tb = SocTb(dut)
    await tb.reset()
    rng = np.random.default_rng(23)
    net = resnet_block(rng, 4, 8, "qnnpack")
    prog = compile_network(net, tb.cfg)
    x = codes(rng, net.input)
    want = run_reference(net, x)
    assert np.array_equal(prog.run_golden(x), want)
    cycles = set()
    for i in range(100):
        got, result = await run_compiled(tb, prog, x)
        assert np.array_equal(got, want), f"run {i}: {int(np.sum(got != want))} mismatches"
        cycles.add(result.cycles)
        assert len(cycles) == 1, f"run {i}: cycle counts {sorted(cycles)}"
    dut._log.info("100 back-to-back runs: %d outputs each, 0 mismatches, %d cycles each",
                  want.size, cycles.pop())
