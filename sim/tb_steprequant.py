"""cocotb testbench of the step requantizer against the schemes' own requantization.

Each layer is a real depthwise 3x3 channel set (random int8 weights, per-channel scales, bias)
in one of the float32 schemes (PyTorch fbgemm, qnnpack, ONNX Runtime); the host fits it with
``zynqnn.numerics.stepfit.fit_steps`` and the DUT's results are compared with the scheme's
``Requant.apply`` (the golden model), not with the fit. Accumulators: the channel's range ends,
every step of its output and its neighbours, the exception values and random ones. One layer
is made only of channels the fit needs exceptions for, so the correction path is exercised.
Knobs: ``TB_RANDOM`` random accumulators per lane and layer, ``TB_IDLE``, ``TB_STALL``,
``TB_SEED``.
"""

import os
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.triggers import ClockCycles

from zynqnn.hw.step import step_params, step_params_layout
from zynqnn.numerics import schemes
from zynqnn.numerics.stepfit import dw_acc_range, fit_steps
from zynqnn.sim.clocking import start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource, pack

SCHEMES = ("torch-fbgemm", "torch-qnnpack", "onnxruntime")


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


def make_layer(rng, scheme, channels, relu6=False):
    """(requant, weights, acc lo, acc hi) of a random depthwise layer on uint8 activations."""
    w = rng.integers(-127, 128, size=(channels, 1, 3, 3))
    zp_in = int(rng.integers(0, 256))
    # Multipliers s_in * s_w / s_out of 0.003..0.3, as in trained networks (MobileNetV2's
    # depthwise layers: 0.02..0.17); far smaller ones need more exceptions than a lane holds.
    s_in = float(rng.uniform(0.01, 0.05))
    s_w = rng.uniform(0.002, 0.02, channels)
    s_out = s_in * float(np.mean(s_w)) / float(rng.uniform(0.01, 0.1))
    zp_out = int(rng.integers(0, 64))
    if scheme == "onnxruntime":
        bias = rng.integers(-20000, 20000, channels)
    else:
        bias = rng.normal(0, 0.5, channels)
    qmax = min(255, zp_out + round(6 / s_out)) if relu6 else 255
    rq = schemes.make_requant(scheme, s_in, s_w, s_out, zp_out=zp_out, bias=bias, qmax=qmax,
                              relu=relu6, per_channel=True)
    lo, hi = dw_acc_range(w, 0, 255, zp_in)
    return rq, lo, hi, (s_in, s_w, s_out, zp_out, bias, qmax, relu6)


def subset(scheme, spec, idx):
    """The same layer restricted to channels ``idx``."""
    s_in, s_w, s_out, zp_out, bias, qmax, relu6 = spec
    return schemes.make_requant(scheme, s_in, s_w[idx], s_out, zp_out=zp_out, bias=bias[idx],
                                qmax=qmax, relu=relu6, per_channel=True)


def accumulators(rng, rq, fit, lo, hi, n_random):
    """Per lane, the accumulators to send (equal counts; short lanes repeat their values)."""
    cols = []
    for c in range(rq.channels):
        pts = {int(lo[c]), int(hi[c])}
        for k in range(rq.lo + 1, rq.hi + 1):   # every step of g (and f within one value)
            u = -((fit.offset[c] - k * (1 << fit.frac_bits)) // fit.mult[c])
            pts.update(v for v in (u - 1, u, u + 1) if lo[c] <= v <= hi[c])
        pts.update(a + d for a, _ in fit.exceptions[c] for d in (-1, 0, 1)
                   if lo[c] <= a + d <= hi[c])
        pts.update(int(v) for v in rng.integers(lo[c], hi[c] + 1, n_random))
        cols.append(sorted(pts))
    n = max(len(p) for p in cols)
    acc = np.empty((n, rq.channels), dtype=np.int64)
    for c, p in enumerate(cols):
        acc[:, c] = (p * (n // len(p) + 1))[:n]
    rng.shuffle(acc, axis=0)
    return acc


async def run_layer(dut, cfg, rq, fit, acc, idle, stall, seed):
    lanes = rq.channels
    layout = data.ArrayLayout(step_params_layout(cfg), lanes)
    qmask = (1 << cfg.signed_operand_bits) - 1
    dut.params.value = pack(layout, step_params(fit, cfg))
    dut.clamp_min.value = rq.lo & qmask
    dut.clamp_max.value = rq.hi & qmask
    in_layout = data.ArrayLayout(dut_acc_shape(cfg), lanes)
    out_layout = data.ArrayLayout(dut_code_shape(cfg), lanes)
    src = StreamSource(dut, "i", dut.clk, in_layout, idle, random.Random(seed))
    sink = StreamSink(dut, "o", dut.clk, out_layout, stall, random.Random(seed + 1))
    cocotb.start_soon(src.send([[int(v) for v in row] for row in acc]))
    got = await sink.recv(len(acc), timeout_cycles=20 * len(acc) + 200)
    got = np.array([list(v) for v in got], dtype=np.int64)
    want = rq.apply(acc, axis=1)
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{rq.scheme}: {len(bad)} of {want.size} differ; first: lane {bad[0][1]} acc "
        f"{acc[tuple(bad[0])]} got {got[tuple(bad[0])]} want {want[tuple(bad[0])]}")
    await ClockCycles(dut.clk, 2)
    return want.size


def dut_acc_shape(cfg):
    from amaranth import signed
    return signed(cfg.dw_acc_bits)


def dut_code_shape(cfg):
    from amaranth import signed
    return signed(cfg.signed_operand_bits)


@cocotb.test()
async def schemes_and_exceptions(dut):
    """Every float scheme, with and without ReLU6, and a layer of exception channels."""
    cfg = config_from_env()
    rng = np.random.default_rng(_env("TB_SEED", 5, int))
    idle, stall = _env("TB_IDLE", 0.3), _env("TB_STALL", 0.3)
    n_random = _env("TB_RANDOM", 200, int)
    lanes = len(dut.o__payload) // cfg.signed_operand_bits
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await start(dut)
    total, seed, excepted = 0, 0, 0
    for scheme in SCHEMES:
        for relu6 in (False, True):
            rq, lo, hi, _ = make_layer(rng, scheme, lanes, relu6)
            fit = fit_steps(rq, lo, hi, cfg.step_frac_bits)
            acc = accumulators(rng, rq, fit, lo, hi, n_random)
            total += await run_layer(dut, cfg, rq, fit, acc, idle, stall, seed)
            seed += 2
    # Channels with exceptions are rare (about 1 in 70 in MobileNetV2's ONNX Runtime layers):
    # draw a wide layer and keep those.
    for scheme in ("onnxruntime", "torch-fbgemm"):
        rq, lo, hi, spec = make_layer(rng, scheme, 2000)
        fit = fit_steps(rq, lo, hi, cfg.step_frac_bits)
        idx = [c for c in range(rq.channels) if 0 < len(fit.exceptions[c]) <= cfg.step_exceptions]
        assert idx, f"{scheme}: no channel with exceptions among {rq.channels}"
        idx = np.array((idx * lanes)[:lanes])
        rq = subset(scheme, spec, idx)
        lo, hi = lo[idx], hi[idx]
        fit = fit_steps(rq, lo, hi, cfg.step_frac_bits)
        excepted += sum(len(e) for e in fit.exceptions)
        acc = accumulators(rng, rq, fit, lo, hi, n_random)
        total += await run_layer(dut, cfg, rq, fit, acc, idle, stall, seed)
        seed += 2
    dut._log.info("%d requantizations matched (%d exception values in the lanes)", total,
                  excepted)
