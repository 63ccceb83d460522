"""cocotb testbench of the double-pumped PE array (issue 25): two clocks, random tiles and pixel
pairs against numpy, random idle cycles on both inputs and backpressure on the output.

Both clocks come from one coroutine that writes their rising edges in the same time step
(``clk`` at :data:`CLOCK_NS`, ``fast_clk`` at half of it), as one MMCM's phase-aligned outputs
would have them; two independent ``Clock`` drivers could put the two writes in different
evaluation steps of the simulator. Knobs (environment): ``TB_TILES``, ``TB_MAX_PAIRS`` (pairs
per tile, at most), ``TB_IDLE`` / ``TB_STALL``, ``TB_SEED``.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge, Timer
from cocotb.utils import get_sim_time

from zynqnn.rtl.pe_array import weight_row_layout
from zynqnn.rtl.pe_array2x import PIXELS, act2_layout, latency2x, sum2_layout
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource

CLOCK_NS = 10


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


async def two_clocks(dut):
    """``clk`` and ``fast_clk`` (twice the frequency), rising edges together."""
    quarter = CLOCK_NS / 4
    while True:
        dut.clk.value = 1
        dut.fast_clk.value = 1
        await Timer(quarter, unit="ns")
        dut.fast_clk.value = 0
        await Timer(quarter, unit="ns")
        dut.clk.value = 0
        dut.fast_clk.value = 1
        await Timer(quarter, unit="ns")
        dut.fast_clk.value = 0
        await Timer(quarter, unit="ns")


async def start(dut, cycles=3):
    dut.clk.value = 0
    dut.fast_clk.value = 0
    dut.fast_rst.value = 0  # the fast domain has no reset; the port is unused
    dut.rst.value = 1
    cocotb.start_soon(two_clocks(dut))
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def make_tiles(cfg, rng, n_tiles: int, max_pairs: int):
    """Random tiles of an even number of vectors; the first ones hold the operand extremes in
    every sign combination (the accumulator's and the packed carry's worst cases)."""
    a_hi = 2 ** cfg.operand_bits - 1
    w_lo, w_hi = -(2 ** (cfg.operand_bits - 1)), 2 ** (cfg.operand_bits - 1) - 1
    tiles = []
    for t in range(n_tiles):
        n = 2 * int(rng.integers(1, max_pairs + 1))
        w = rng.integers(w_lo, w_hi + 1, size=(cfg.rows, cfg.cols), dtype=np.int64)
        a = rng.integers(-a_hi, a_hi + 1, size=(n, cfg.rows), dtype=np.int64)
        if t < 4:
            if t < 2:
                w[:, :] = (w_lo, w_hi)[t]
            w[:, 0], w[:, -1] = w_lo, w_hi
            if cfg.cols > 2:
                w[:, 1], w[:, 2] = w_hi, w_lo
            ext = np.array([[-a_hi] * cfg.rows, [a_hi] * cfg.rows,
                            [a_hi if r % 2 else -a_hi for r in range(cfg.rows)],
                            [0] * cfg.rows])
            a = np.concatenate([ext, a])
        tiles.append((w, a))
    return tiles


def pairs_of(tiles):
    return [{"data": [[int(x) for x in a[2 * i + p]] for p in range(PIXELS)],
             "swap": int(i == 0)} for _, a in tiles for i in range(len(a) // 2)]


@cocotb.test()
async def random_tiles(dut):
    """Back-to-back random tiles under random idle/stall; every sum equals numpy's."""
    cfg = config_from_env()
    rng = np.random.default_rng(_env("TB_SEED", 1, int))
    tiles = make_tiles(cfg, rng, _env("TB_TILES", 12, int), _env("TB_MAX_PAIRS", 30, int))
    w_src = StreamSource(dut, "weights", dut.clk, weight_row_layout(cfg), _env("TB_IDLE", 0.3))
    a_src = StreamSource(dut, "acts", dut.clk, act2_layout(cfg), _env("TB_IDLE", 0.3),
                         rng=__import__("random").Random(2))
    sink = StreamSink(dut, "sums", dut.clk, sum2_layout(cfg), _env("TB_STALL", 0.3))
    await start(dut)

    items = pairs_of(tiles)
    expected = np.concatenate([a @ w for w, a in tiles])
    cocotb.start_soon(w_src.send([[int(x) for x in row] for w, _ in tiles for row in w]))
    cocotb.start_soon(a_src.send(items))
    got = await sink.recv(len(items), timeout_cycles=100 * len(items) + 1000)
    got = np.array([[int(x) for x in t[p]] for t in got for p in range(PIXELS)], dtype=np.int64)
    mismatches = int(np.sum(got != expected))
    dut._log.info("%d pairs (%d vectors), %d sums, %d MACs: %d mismatches", len(items),
                  2 * len(items), expected.size, expected.size * cfg.rows, mismatches)
    assert np.array_equal(got, expected), f"{mismatches} of {expected.size} sums differ"
    await ClockCycles(dut.clk, 2)


@cocotb.test()
async def full_rate(dut):
    """Without idle cycles or stalls, one pair per fabric cycle goes in and comes out."""
    cfg = config_from_env()
    rng = np.random.default_rng(5)
    n = 64
    w = rng.integers(-128, 128, size=(cfg.rows, cfg.cols))
    a = rng.integers(-255, 256, size=(2 * n, cfg.rows))
    w_src = StreamSource(dut, "weights", dut.clk, weight_row_layout(cfg))
    a_src = StreamSource(dut, "acts", dut.clk, act2_layout(cfg))
    sink = StreamSink(dut, "sums", dut.clk, sum2_layout(cfg))
    await start(dut)
    await w_src.send([[int(x) for x in row] for row in w])
    cocotb.start_soon(a_src.send(pairs_of([(w, a)])))
    t0 = get_sim_time("ns")
    got = await sink.recv(n)
    cycles = (get_sim_time("ns") - t0) // CLOCK_NS
    got = np.array([[int(x) for x in t[p]] for t in got for p in range(PIXELS)])
    assert np.array_equal(got, a @ w)
    assert cycles <= n + latency2x(cfg) + 4, f"{n} pairs took {cycles} cycles"
