"""cocotb testbench of the TFLite requantizer against ``zynqnn.numerics.gemmlowp``.

Random accumulators and per-channel constants, plus hand-picked rounding ties, saturation and
shifts at their limits, in both rounding modes, with random stream stalls.
Knobs: ``TB_BATCHES`` random batches per layer, ``TB_IDLE``, ``TB_STALL``, ``TB_SEED``.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from zynqnn.numerics import gemmlowp
from zynqnn.rtl.requant import requant_in_layout, requant_out_layout
from zynqnn.sim.clocking import start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource

INT32_MIN, INT32_MAX = gemmlowp.INT32_MIN, gemmlowp.INT32_MAX


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


def edge_cases():
    """(acc, bias, multiplier, shift) rows that exercise every rounding and saturation rule."""
    half = 1 << 30  # 0.5 in Q31: srdhm(x, 2^30) = x / 2 rounded, ties away from zero
    rows = []
    for x in (-5, -3, -1, 1, 3, 5, INT32_MIN, INT32_MAX, INT32_MIN + 1, 0):
        rows.append((x, 0, half, 0))            # tie in the doubling high multiply
    for e in (1, 2, 3, 8, 31):
        for x in (-(3 << (e - 1)), -(1 << (e - 1)), 1 << (e - 1), 3 << (e - 1)):
            x = max(INT32_MIN, min(INT32_MAX, x))
            rows.append((x, 0, INT32_MAX, -e))  # ties of the rounding right shift
    for sh in (-31, -1, 0, 1, 30):
        for q in (0, 1, 1 << 30, INT32_MAX):
            for x in (INT32_MIN, -1, 1, INT32_MAX, 12345, -12345):
                rows.append((x, 0, q, sh))      # shifts and multipliers at their limits
    rows.append((INT32_MAX, 1, INT32_MAX, 0))   # int32 wrap of acc + bias
    rows.append((INT32_MIN, -1, INT32_MAX, 0))
    return rows


def random_rows(rng, n):
    rows = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.7:   # conv-like: real multiplier < 1
            mult = 10 ** rng.uniform(-6, 0)
            acc = int(rng.integers(-(2**20), 2**20))
        else:            # add-like or extreme: multiplier up to 2^10
            mult = 10 ** rng.uniform(-9, 3)
            acc = int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True))
        q, sh = gemmlowp.quantize_multiplier(mult)
        bias = int(rng.integers(-(2**16), 2**16))
        rows.append((acc, bias, q, sh))
    return rows


def expected(rows, zp, qmin, qmax, single):
    a = np.array(rows, dtype=np.int64)
    return gemmlowp.requantize(a[:, 0], a[:, 1], a[:, 2], a[:, 3], zp, qmin, qmax,
                               single_rounding=single)


async def run_layer(dut, cfg, rows, zp, qmin, qmax, single, idle, stall, seed):
    lanes = cfg_lanes(dut)
    while len(rows) % lanes:
        rows.append((0, 0, 0, 0))
    dut.zero_point.value = zp & ((1 << cfg.signed_operand_bits) - 1)
    dut.clamp_min.value = qmin & ((1 << cfg.signed_operand_bits) - 1)
    dut.clamp_max.value = qmax & ((1 << cfg.signed_operand_bits) - 1)
    dut.single_rounding.value = int(single)
    items = []
    for k in range(0, len(rows), lanes):
        chunk = rows[k:k + lanes]
        items.append({
            "acc": [r[0] for r in chunk],
            "params": [{"bias": r[1], "multiplier": r[2], "shift": r[3]} for r in chunk],
        })
    src = StreamSource(dut, "i", dut.clk, requant_in_layout(lanes), idle, random.Random(seed))
    sink = StreamSink(dut, "o", dut.clk, requant_out_layout(cfg, lanes), stall,
                      random.Random(seed + 1))
    cocotb.start_soon(src.send(items))
    got = await sink.recv(len(items), timeout_cycles=50 * len(items) + 200)
    got = np.array([list(v) for v in got], dtype=np.int64).reshape(-1)
    want = expected(rows, zp, qmin, qmax, single)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{bad.size} of {want.size} differ; first: row {rows[bad[0]]} got {got[bad[0]]} "
        f"want {want[bad[0]]} (zp={zp}, clamp=[{qmin},{qmax}], single={single})")
    await ClockCycles(dut.clk, 2)
    return want.size


def cfg_lanes(dut):
    """Lane count of the DUT, from its input payload width."""
    return len(dut.i__payload) // requant_in_layout(1).size


@cocotb.test()
async def edge_and_random(dut):
    """Hand-picked edge cases and random constants, both rounding modes, several layers."""
    cfg = config_from_env()
    rng = np.random.default_rng(_env("TB_SEED", 3, int))
    idle, stall = _env("TB_IDLE", 0.3), _env("TB_STALL", 0.3)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await start(dut)
    umax, smin, smax = 2**cfg.operand_bits - 1, -(2 ** (cfg.operand_bits - 1)), \
        2 ** (cfg.operand_bits - 1) - 1
    # (zero point, clamp min, clamp max): unsigned, ReLU-clamped, signed, narrow
    layers = [(0, 0, umax), (3, 3, umax), (smin + 5, smin, smax), (0, smin, smax), (17, 17, 100)]
    total = 0
    for single in (False, True):
        for i, (zp, qmin, qmax) in enumerate(layers):
            rows = random_rows(rng, _env("TB_BATCHES", 80, int))
            if i == 0:
                rows = edge_cases() + rows
            if single:  # single rounding requires multiplier >= 0 and no int32 overflow
                rows = [r for r in rows if r[2] >= 0]
            total += await run_layer(dut, cfg, rows, zp, qmin, qmax, single, idle, stall,
                                     seed=i + 10 * single)
    dut._log.info("%d requantizations matched", total)
