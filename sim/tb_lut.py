"""cocotb testbench of the table-lookup lanes (:class:`zynqnn.rtl.lut.EltwiseLUT`).

Each test fills the 256-entry table (``fill`` high, the entries in the ``b`` codes of the lane
groups, in order), then streams input codes (uint8 or int8, every code plus random ones, with
random idle cycles) and compares every output with ``table[code & 0xFF]`` (``array_equal``).
A second table then overwrites the first (a new layer's table). The output has no
backpressure (``o.ready`` stays high, as in the engine).

Knobs: ``TB_CODES`` (random codes per table after the 256 of the sweep, default 256),
``TB_IDLE``, ``TB_SEED``. Each test logs ``compared <group>: <n>``.
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from zynqnn.rtl.eltwise import eltwise_out_layout
from zynqnn.rtl.lut import lut_in_layout
from zynqnn.sim.clocking import start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource

COMPARED_FILE = "compared.txt"


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


async def _run(dut, group, signed):
    cfg = config_from_env()
    lanes = len(dut.o__payload) // eltwise_out_layout(cfg, 1).size
    seed = _env("TB_SEED", 5, int) + int(signed)
    rng = np.random.default_rng(seed)
    idle = _env("TB_IDLE", 0.2)
    extra = _env("TB_CODES", 256, int)
    dut.i__valid.value = 0
    dut.fill.value = 0
    dut.o__ready.value = 1
    await start(dut)
    inl = lut_in_layout(cfg, lanes)
    zero = [0] * lanes
    total = 0
    for k in range(2):
        table = rng.integers(0, 256, 256)
        # the table: entries in order, lanes codes a transfer
        dut.fill.value = 1
        words = [{"a": zero, "b": [int(v) - 256 * (signed and v >= 128) for v in
                                   table[j:j + lanes]]} for j in range(0, 256, lanes)]
        src = StreamSource(dut, "i", dut.clk, inl, idle, random.Random(seed * 10 + k))
        await src.send(words)
        dut.i__valid.value = 0
        await ClockCycles(dut.clk, 1)
        dut.fill.value = 0
        codes = np.concatenate([rng.permutation(256), rng.integers(0, 256, extra)])
        codes = codes[:codes.size - codes.size % lanes]
        if signed:
            codes = np.where(codes >= 128, codes - 256, codes)
        words = [{"a": [int(v) for v in codes[j:j + lanes]], "b": zero}
                 for j in range(0, codes.size, lanes)]
        src = StreamSource(dut, "i", dut.clk, inl, idle, random.Random(seed * 10 + k + 5))
        sink = StreamSink(dut, "o", dut.clk, eltwise_out_layout(cfg, lanes), 0.0,
                          random.Random(seed))
        cocotb.start_soon(src.send(words))
        got = await sink.recv(len(words), timeout_cycles=4 * len(words) + 100)
        got = np.array([list(v) for v in got], dtype=np.int64).reshape(-1) & 0xFF
        want = table[codes & 0xFF]
        if not np.array_equal(got, want):
            bad = np.flatnonzero(got != want)
            j = bad[0]
            raise AssertionError(f"table {k}: {bad.size} of {got.size} differ; first: code "
                                 f"{codes[j]}: got {got[j]}, want {want[j]}")
        total += got.size
        await ClockCycles(dut.clk, 2)
    dut._log.info("compared %s: %d", group, total)
    with open(COMPARED_FILE, "a") as f:
        f.write(f"{group} {total}\n")


@cocotb.test()
async def test_uint8(dut):
    await _run(dut, "uint8", False)


@cocotb.test()
async def test_int8(dut):
    await _run(dut, "int8", True)
