"""cocotb testbench of the systolic PE array: random weight tiles and activations against numpy.

Knobs (environment): ``TB_TILES`` tiles, ``TB_MAX_VECTORS`` vectors per tile (at most),
``TB_IDLE`` / ``TB_STALL`` probabilities of source idle cycles and sink stalls, ``TB_SEED``,
``TB_REPORT`` a JSON file to write cycles and wall time to (simulation speed benchmark).
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time

from zynqnn.rtl.pe_array import act_layout, sum_layout, weight_row_layout
from zynqnn.sim.clocking import CLOCK_NS, start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import StreamSink, StreamSource


def _env(name, default, kind=float):
    return kind(os.environ.get(name, default))


def make_tiles(cfg, rng, n_tiles, max_vectors):
    """Random tiles, with the operand extremes forced into the first one."""
    a_hi = 2 ** cfg.operand_bits - 1  # the operand contract: |a| <= 2^B - 1 (see act_layout)
    a_lo = -a_hi
    w_lo, w_hi = -(2 ** (cfg.operand_bits - 1)), 2 ** (cfg.operand_bits - 1) - 1
    tiles = []
    for t in range(n_tiles):
        n = int(rng.integers(1, max_vectors + 1))
        w = rng.integers(w_lo, w_hi + 1, size=(cfg.rows, cfg.cols), dtype=np.int64)
        a = rng.integers(a_lo, a_hi + 1, size=(n, cfg.rows), dtype=np.int64)
        if t == 0:
            # Largest magnitudes of both signs: the accumulator's worst case.
            w[:, 0], w[:, -1] = w_lo, w_hi
            a = np.concatenate([np.full((1, cfg.rows), a_lo), np.full((1, cfg.rows), a_hi), a])
        tiles.append((w, a))
    return tiles


@cocotb.test()
async def random_tiles(dut):
    """Back-to-back random tiles under random idle/stall; every sum equals numpy's."""
    cfg = config_from_env()
    rng = np.random.default_rng(_env("TB_SEED", 1, int))
    tiles = make_tiles(cfg, rng, _env("TB_TILES", 12, int), _env("TB_MAX_VECTORS", 60, int))

    w_src = StreamSource(dut, "weights", dut.clk, weight_row_layout(cfg), _env("TB_IDLE", 0.3))
    a_src = StreamSource(dut, "acts", dut.clk, act_layout(cfg), _env("TB_IDLE", 0.3),
                         rng=__import__("random").Random(2))
    sink = StreamSink(dut, "sums", dut.clk, sum_layout(cfg), _env("TB_STALL", 0.3))
    await start(dut)

    rows = [list(map(int, row)) for w, _ in tiles for row in w]
    vectors = [{"data": list(map(int, v)), "swap": int(i == 0)}
               for _, a in tiles for i, v in enumerate(a)]
    expected = np.concatenate([a @ w for w, a in tiles])

    t0, sim0 = time.perf_counter(), get_sim_time("ns")
    cocotb.start_soon(w_src.send(rows))
    cocotb.start_soon(a_src.send(vectors))
    got = await sink.recv(len(vectors), timeout_cycles=100 * len(vectors) + 1000)
    elapsed, cycles = time.perf_counter() - t0, (get_sim_time("ns") - sim0) // CLOCK_NS
    got = np.array([list(v) for v in got], dtype=np.int64)

    mismatches = int(np.sum(got != expected))
    dut._log.info("%d vectors, %d sums, %d MACs: %d mismatches", len(vectors), expected.size,
                  expected.size * cfg.rows, mismatches)
    assert np.array_equal(got, expected), f"{mismatches} of {expected.size} sums differ"
    await ClockCycles(dut.clk, 2)

    report = os.environ.get("TB_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"cycles": int(cycles), "seconds": elapsed, "sums": int(expected.size)}, f)


@cocotb.test()
async def full_rate(dut):
    """Without idle cycles or stalls, one vector per cycle goes in and comes out."""
    cfg = config_from_env()
    rng = np.random.default_rng(5)
    w, a = make_tiles(cfg, rng, 1, 64)[0]
    n = 64
    a = np.concatenate([a, rng.integers(-100, 100, size=(n, cfg.rows))])[:n]
    w_src = StreamSource(dut, "weights", dut.clk, weight_row_layout(cfg))
    a_src = StreamSource(dut, "acts", dut.clk, act_layout(cfg))
    sink = StreamSink(dut, "sums", dut.clk, sum_layout(cfg))
    await start(dut)
    await w_src.send([list(map(int, row)) for row in w])
    cocotb.start_soon(a_src.send([{"data": list(map(int, v)), "swap": int(i == 0)}
                                  for i, v in enumerate(a)]))
    t0 = get_sim_time("ns")
    got = await sink.recv(n)
    cycles = (get_sim_time("ns") - t0) // CLOCK_NS
    assert np.array_equal(np.array([list(v) for v in got]), a @ w)
    latency = cfg.rows + cfg.cols // (2 if cfg.dsp_packing else 1) + 2
    # n transfers at one per cycle, after the pipeline and output buffer latency.
    assert cycles <= n + latency + 4, f"{n} vectors took {cycles} cycles"
