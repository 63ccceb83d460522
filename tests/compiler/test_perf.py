"""The performance model against RTL-measured cycles, and its network figures."""

import numpy as np
import pytest

from zynqnn.compiler import Network, compile_network
from zynqnn.compiler.perf import DmaModel, network_report
from zynqnn.compiler.testing import conv, tensor
from zynqnn.hw.config import get_config

PYNQ = get_config("pynq_z2")

#: scripts/bench_engine.py on the pynq_z2 build: four back-to-back CONV commands (64 output
#: channels), data preloaded. (name, kernel, stride, pad, cin, input size, RTL cycles)
RTL = [
    ("conv3x3 c64 16x16", 3, 1, 1, 64, 16, 38185),
    ("conv3x3 c128 14x14", 3, 1, 1, 128, 14, 57529),
    ("conv3x3 s2 c64 28x28", 3, 2, 1, 64, 28, 29305),
    ("conv3x3 c128 7x7", 3, 1, 1, 128, 7, 14605),
    ("conv1x1 c256 14x14", 1, 1, 0, 256, 14, 13625),
    ("conv1x1 c64 28x28", 1, 1, 0, 64, 28, 16052),
    ("conv1x1 c16 28x28", 1, 1, 0, 16, 28, 13700),
    ("stem 7x7/2 c3 32x32", 7, 2, 3, 3, 32, 51497),
]


def model_cycles(k, s, pad, cin, size):
    rng = np.random.default_rng(0)
    x = tensor(rng, "x", cin, size, size)
    prog = compile_network(Network(x, [conv(rng, "conv", x, 64, k, s, pad)]), PYNQ)
    return prog, prog.perf(DmaModel(enabled=False))


@pytest.mark.parametrize("name, k, s, pad, cin, size, rtl", RTL, ids=[r[0] for r in RTL])
def test_compute_model_within_5_percent_of_rtl(name, k, s, pad, cin, size, rtl):
    prog, rep = model_cycles(k, s, pad, cin, size)
    # one input LOAD, 4 x (weights, constants, CONV, STORE), END: no split, one spatial tile
    assert prog.stats["commands"] == 1 + 4 * 4 + 1
    assert abs(rep.cycles - rtl) / rtl < 0.05, (rep.cycles, rtl)


#: scripts/bench_engine.py, the same four commands as depthwise 3x3 layers (16 channels each),
#: as the compiler emits them on pynq_z2: one-pass (DW), and DW_PAIRS for fbgemm's saturating pairs.
#: (name, pairs, stride, input, RTL cycles, mode)
RTL_DEPTHWISE = [
    ("dw3x3 one-pass 28x28", False, 1, 28, 13737, "DW"),
    ("dw3x3 one-pass 14x14", False, 1, 14, 3713, "DW"),
    ("dw3x3 one-pass 7x7", False, 1, 7, 1200, "DW"),
    ("dw3x3 one-pass s2 56x56", False, 2, 56, 16032, "DW"),
    ("dw3x3 fbgemm one-pass 28x28", True, 1, 28, 13797, "DW_PAIRS"),
    ("dw3x3 fbgemm one-pass s2 56x56", True, 2, 56, 16353, "DW_PAIRS"),
    # float-scheme requantization on the step lanes (ConvOp.step)
    ("dw3x3 step 28x28", False, 1, 28, 3517, "DW", "torch-qnnpack"),
    ("dw3x3 step 14x14", False, 1, 14, 1053, "DW", "onnxruntime"),
    ("dw3x3 step 7x7", False, 1, 7, 409, "DW", "torch-qnnpack"),
    ("dw3x3 step s2 56x56", False, 2, 56, 12697, "DW", "torch-qnnpack"),
    ("dw3x3 fbgemm step 28x28", True, 1, 28, 3757, "DW_PAIRS", "torch-fbgemm"),
    ("dw3x3 fbgemm step s2 56x56", True, 2, 56, 13153, "DW_PAIRS", "torch-fbgemm"),
]


@pytest.mark.parametrize("name, pairs, s, size, rtl, mode, step",
                         [r + (None,) * (7 - len(r)) for r in RTL_DEPTHWISE],
                         ids=[r[0] for r in RTL_DEPTHWISE])
def test_depthwise_model_within_5_percent_of_rtl(name, pairs, s, size, rtl, mode, step):
    from zynqnn.compiler import HwConv
    from zynqnn.hw import isa
    from zynqnn.numerics import make_requant

    rng = np.random.default_rng(0)
    x = tensor(rng, "x", 64, size, size)
    c = conv(rng, "dw", x, 64, 3, s, 1)
    w = rng.integers(-127, 128, size=(64, 1, 3, 3))
    if step:
        rq = make_requant(step, 0.02, rng.uniform(0.002, 0.02, 64), 0.5,
                          zp_out=c.output.zero_point, bias=rng.integers(-500, 500, 64),
                          per_channel=True)
        la = HwConv("dw", x, c.output, w, stride=s, padding=1, groups=64,
                    saturate_pairs=pairs, requant=rq)
    else:
        la = HwConv("dw", x, c.output, w, c.bias, c.multiplier, c.shift, stride=s, padding=1,
                    groups=64, saturate_pairs=pairs)
    prog = compile_network(Network(x, [la]), PYNQ)
    assert {st.op["mode"] for st in prog.steps} == {isa.Mode[mode]}
    assert {st.op["step"] for st in prog.steps} == {int(step is not None)}
    rep = prog.perf(DmaModel(enabled=False))
    assert abs(rep.cycles - rtl) / rtl < 0.05, (rep.cycles, rtl)


def test_network_report_bounds_and_overlap():
    rng = np.random.default_rng(1)
    x = tensor(rng, "x", 64, 28, 28)
    c1 = conv(rng, "c1", x, 16, 3, 1, 1)
    c2 = conv(rng, "c2", c1.output, 64, 1, 1, 0)  # 16 input channels: post-stage bound
    prog = compile_network(Network(x, [c1, c2]), PYNQ)
    fast = network_report(prog, DmaModel(ddr_gbps=4.0))
    slow = network_report(prog, DmaModel(ddr_gbps=0.2))
    assert fast["c1"]["bound"] == "compute" and slow["c2"]["bound"] == "memory"
    assert network_report(prog, DmaModel(enabled=False))["c2"]["bound"] == "post"
    assert slow["total"]["cycles"] > fast["total"]["cycles"]
    assert 0.4 < fast["c1"]["utilization"] < network_report(prog, DmaModel(enabled=False))[
        "c1"]["utilization"] <= 1.0
    t = fast["total"]
    assert t["cycles"] < t["mac"] + t["post"] + t["load"] + t["store"]  # units overlap


def test_dma_model_outstanding_bursts_hide_latency():
    """A transfer pays its first burst's latency once while enough bursts are in flight to
    cover it, and becomes latency-bound (reads: READ_OUTSTANDING bursts per latency) beyond."""
    from zynqnn.hw.geometry import MAX_BURST, READ_OUTSTANDING, WRITE_OUTSTANDING

    beat = PYNQ.axi_data_bits // 8
    line = MAX_BURST * beat  # one full burst per line
    full = PYNQ.replace(clock_mhz=150.0)
    rate = beat * 150.0 / 1e3  # GB/s of a beat per cycle
    free = DmaModel(ddr_gbps=rate, latency=0).cycles(full, line, 64)
    assert free == 64 * MAX_BURST
    hidden = READ_OUTSTANDING * MAX_BURST - MAX_BURST  # the most latency 8 bursts cover
    assert DmaModel(ddr_gbps=rate, latency=hidden).cycles(full, line, 64) == free + hidden
    slow = 4 * hidden
    per_burst = (slow + MAX_BURST) / READ_OUTSTANDING
    assert DmaModel(ddr_gbps=rate, latency=slow).cycles(full, line, 64) == int(
        slow + 64 * per_burst + 0.5)
    assert DmaModel(ddr_gbps=rate, latency=slow).cycles(full, line, 64, write=True) == int(
        slow + 64 * max(MAX_BURST, (slow + MAX_BURST) / WRITE_OUTSTANDING) + 0.5)
    # Half the bandwidth: the data takes twice as long; the latency is hidden all the same.
    assert DmaModel(ddr_gbps=rate / 2, latency=hidden).cycles(full, line, 64) == 2 * free + hidden
