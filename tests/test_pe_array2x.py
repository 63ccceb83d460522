"""The double-pumped PE array (issue 25) in Amaranth's simulator, with two clocks: every sum
against numpy and against the 1x array, random tiles with the operand extremes, random idle
cycles on both inputs and backpressure on the output."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from zynqnn.hw.config import get_config
from zynqnn.rtl.pe_array import PEArray, act_layout, sum_layout, weight_row_layout
from zynqnn.rtl.pe_array2x import (
    PIXELS,
    PEArray2x,
    act2_layout,
    carry_bits,
    latency2x,
    sum2_layout,
)
from zynqnn.sim.tb_pe_array2x import make_tiles

#: Fabric clock period (ns); the DSP clock has half of it, rising edges on the fabric clock's.
SLOW_NS = 7.0


def simulate(dut, cfg, w_rows, items, n_out, out_layout, *, idle=0.0, stall=0.0, seed=0,
             two_clocks=True):
    """Drive ``weights`` and ``acts`` (random idle cycles), take ``n_out`` transfers from
    ``sums`` (random stalls); returns the transfers and the fabric cycles it took."""
    w_lay = weight_row_layout(cfg)
    a_lay = act2_layout(cfg) if isinstance(dut, PEArray2x) else act_layout(cfg)
    got: list = []
    cycles = [0]
    sim = Simulator(dut)
    sim.add_clock(SLOW_NS * 1e-9, phase=SLOW_NS * 1e-9 / 2, domain="sync")
    if two_clocks:
        sim.add_clock(SLOW_NS * 1e-9 / 2, phase=SLOW_NS * 1e-9 / 2, domain="fast")

    async def source(ctx, port, layout, values, rng):
        for v in values:
            while rng.random() < idle:
                ctx.set(port.valid, 0)
                await ctx.tick()
            ctx.set(port.payload, layout.const(v))
            ctx.set(port.valid, 1)
            await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def weights(ctx):
        await source(ctx, dut.weights, w_lay, w_rows, random.Random(seed + 1))

    async def acts(ctx):
        await source(ctx, dut.acts, a_lay, items, random.Random(seed + 2))

    async def sink(ctx):
        rng = random.Random(seed + 3)
        limit = 60 * len(items) + 500
        while len(got) < n_out:
            ctx.set(dut.sums.ready, int(rng.random() >= stall))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.sums.valid, dut.sums.ready, dut.sums.payload.as_value())
            cycles[0] += 1
            assert cycles[0] < limit, f"{len(got)} of {n_out} results after {limit} cycles"
            if valid and ready:
                got.append(out_layout.from_bits(payload))

    sim.add_testbench(weights, background=True)
    sim.add_testbench(acts, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got, cycles[0]


def run_2x(cfg, tiles, **kw):
    """The 2x array on ``tiles``; returns its sums as an (n, cols) array, pixel order."""
    dut = PEArray2x(cfg)
    rows = [[int(x) for x in row] for w, _ in tiles for row in w]
    items = [{"data": [[int(x) for x in a[2 * i + p]] for p in range(PIXELS)],
              "swap": int(i == 0)} for _, a in tiles for i in range(len(a) // 2)]
    got, cycles = simulate(dut, cfg, rows, items, len(items), sum2_layout(cfg), **kw)
    sums = np.array([[int(x) for x in t[p]] for t in got for p in range(PIXELS)],
                    dtype=np.int64)
    return sums, cycles


def run_1x(cfg, tiles, **kw):
    cfg1 = cfg.replace(dsp_clock_ratio=1)
    dut = PEArray(cfg1)
    rows = [[int(x) for x in row] for w, _ in tiles for row in w]
    items = [{"data": [int(x) for x in v], "swap": int(i == 0)}
             for _, a in tiles for i, v in enumerate(a)]
    got, cycles = simulate(dut, cfg1, rows, items, len(items), sum_layout(cfg1),
                           two_clocks=False, **kw)
    return np.array([[int(x) for x in t] for t in got], dtype=np.int64), cycles


def expected(tiles):
    return np.concatenate([a @ w for w, a in tiles])


CONFIGS = {
    "tiny": get_config("tiny").replace(dsp_clock_ratio=2),        # packed, 4 x 4: g = 2
    "tiny16": get_config("tiny16").replace(dsp_clock_ratio=2),    # int16, unpacked
    "8x8": get_config("tiny").replace(rows=8, cols=8, requant_lanes=2, add_lanes=2,
                                      dsp_clock_ratio=2),          # three side-sum levels
    # 12 DSP columns: the shadow lockout matters (a new tile's row 0 is written while the
    # previous swap still runs along row 0's PEs).
    "2x12": get_config("tiny16").replace(rows=2, cols=12, dsp_clock_ratio=2),
    # The board's array: 8 DSP columns of 16, g = 4 (fewer vectors: a few seconds).
    "pynq_z2": get_config("pynq_z2_2x"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_tiles_bit_exact(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(25)
    tiles = make_tiles(cfg, rng, *((5, 6) if name == "pynq_z2" else (10, 12)))
    sums, _ = run_2x(cfg, tiles, idle=0.3, stall=0.3, seed=7)
    want = expected(tiles)
    assert sums.shape == want.shape
    bad = int(np.sum(sums != want))
    assert bad == 0, f"{bad} of {want.size} sums differ"


def test_same_sums_as_the_1x_array():
    cfg = CONFIGS["tiny"]
    tiles = make_tiles(cfg, np.random.default_rng(3), 6, 8)
    one, _ = run_1x(cfg, tiles, idle=0.2, stall=0.2, seed=11)
    two, _ = run_2x(cfg, tiles, idle=0.2, stall=0.2, seed=11)
    assert np.array_equal(one, expected(tiles))
    assert np.array_equal(two, one)


def test_one_pair_tiles_back_to_back():
    """Each tile one pair: a new tile is loaded while the previous swap still runs through the
    fast grid, so a lockout too short would show here; no stalls."""
    for name in ("8x8", "2x12"):
        cfg = CONFIGS[name]
        rng = np.random.default_rng(9)
        tiles = [(w, a[:2]) for w, a in make_tiles(cfg, rng, 12, 1)]
        sums, _ = run_2x(cfg, tiles)
        assert np.array_equal(sums, expected(tiles)), name


def test_full_rate():
    """Without idle cycles or stalls a pair goes in and a pair comes out every fabric cycle."""
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, size=(cfg.rows, cfg.cols))
    n = 64  # pairs
    a = rng.integers(-255, 256, size=(2 * n, cfg.rows))
    sums, cycles = run_2x(cfg, [(w, a)])
    assert np.array_equal(sums, a @ w)
    # rows cycles of weights, the pipeline, n transfers at one per cycle.
    assert cycles <= cfg.rows + n + latency2x(cfg) + 6, f"{n} pairs took {cycles} cycles"


def test_carry_bits():
    assert carry_bits(get_config("pynq_z2").replace(dsp_clock_ratio=2)) == 4
    assert carry_bits(CONFIGS["tiny"]) == 2
    assert carry_bits(CONFIGS["tiny16"]) == 0


def test_needs_ratio_two():
    with pytest.raises(ValueError, match="dsp_clock_ratio = 2"):
        PEArray2x(get_config("tiny"))


# -- the generated Verilog under cocotb, two clocks from one driver ---------------------------

@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb_two_clocks(sim, quick_cxx):
    from zynqnn.sim.runner import run

    cfg = CONFIGS["tiny"]
    # run() raises unless every cocotb test of the module ran and passed.
    run(lambda: PEArray2x(cfg), "zynqnn_pe_array_2x", "zynqnn.sim.tb_pe_array2x", sim, cfg)


# -- the static timing estimate of the two clock domains (tiny, Yosys netlist) ---------------

#: Every fast-domain path must meet the fast clock (3.5 ns: twice 142.857 MHz) under these
#: net models: measured on tiny 2.49 / 3.20 ns (pynq_z2 the same paths, docs/architecture.md).
FAST_NS = 3.5
MAX_NET_SINKS = 128


@pytest.fixture(scope="module")
def tiny_2x_netlist(tmp_path_factory):
    import json

    from zynqnn.synth import NETLIST_JSON, run_synth, work_dir

    out = tmp_path_factory.mktemp("timing2x")
    cfg = CONFIGS["tiny"]
    r = run_synth(cfg, "zynqnn_pe_array_2x", out, netlist=True)
    assert r.dsp == cfg.rows * cfg.cols // 2
    return json.loads((work_dir(cfg, r.module, out) / NETLIST_JSON).read_text())


def _top(netlist):
    return next(m for m in netlist["modules"].values()
                if int(m.get("attributes", {}).get("top", "0"), 2))


@pytest.mark.parametrize("model", ["typical", "pessimistic"])
def test_both_clocks_meet_their_periods(tiny_2x_netlist, model):
    from zynqnn.timing import NET_MODELS, analyze, load_library

    r = analyze(tiny_2x_netlist, load_library(), NET_MODELS[model],
                {"clk": 2 * FAST_NS, "fast_clk": FAST_NS})
    clocks = {c.name: c for c in r.clocks}
    assert set(clocks) == {"clk", "fast_clk"}
    fast = clocks["fast_clk"]
    assert fast.period == FAST_NS and fast.passed, (
        f"fast clock {fast.worst:.2f} ns: {fast.paths[0].start} -> {fast.paths[0].end}")
    assert clocks["clk"].passed
    # Paths between the domains are there and timed against the fast period.
    crossing = [p for c in r.clocks for p in c.paths if p.launch != p.capture]
    assert crossing and all(p.required == FAST_NS for p in crossing)


def test_fast_domain_rules(tiny_2x_netlist):
    """Every DSP48E1 fully registered (A, B, M, P), the column sums on the PCIN cascade, and no
    fast-domain register or DSP input more than one LUT (the 2:1 mux, a phase copy's enable)
    behind a register."""
    mod = _top(tiny_2x_netlist)
    fast_clk = mod["ports"]["fast_clk"]["bits"][0]
    cfg = CONFIGS["tiny"]
    seq = ("FD", "DSP48E1", "SRL", "RAM")
    driver = {}
    for name, c in mod["cells"].items():
        for pin, bits in c["connections"].items():
            if c["port_directions"].get(pin) == "output":
                for b in bits:
                    driver[b] = (name, c)

    def depth(bit, seen=()):
        if not isinstance(bit, int) or bit not in driver:
            return 0  # a constant or a port
        name, c = driver[bit]
        if c["type"].startswith(seq):
            return 0
        assert name not in seen
        return 1 + max((depth(b, (*seen, name)) for pin, bits in c["connections"].items()
                        if c["port_directions"].get(pin) == "input" for b in bits), default=0)

    dsps = [c for c in mod["cells"].values() if c["type"] == "DSP48E1"]
    for c in dsps:
        regs = {k: int(c["parameters"][k], 2) for k in ("AREG", "BREG", "MREG", "PREG")}
        assert regs["AREG"] == regs["MREG"] == regs["PREG"] == 1 and regs["BREG"] >= 1, regs
    cascaded = [c for c in dsps if any(isinstance(b, int) for b in c["connections"]["PCIN"])]
    assert len(cascaded) == (cfg.rows - 1) * cfg.cols // 2
    worst = {}
    for name, c in mod["cells"].items():
        clk = c["connections"].get("C") or c["connections"].get("CLK")
        if not c["type"].startswith(("FD", "DSP48E1")) or clk != [fast_clk]:
            continue
        for pin, bits in c["connections"].items():
            if c["port_directions"].get(pin) == "input" and pin not in ("C", "CLK"):
                worst[(name, pin)] = max(depth(b) for b in bits)
    assert worst and max(worst.values()) <= 1, {k: v for k, v in worst.items() if v > 1}


def test_no_wide_nets(tiny_2x_netlist):
    from collections import Counter

    mod = _top(tiny_2x_netlist)
    exempt = {b for p in ("clk", "rst", "fast_clk") for b in mod["ports"][p]["bits"]}
    sinks = Counter(b for c in mod["cells"].values() for pin, bits in c["connections"].items()
                    if c["port_directions"].get(pin) == "input"
                    for b in bits if isinstance(b, int) and b not in exempt)
    assert max(sinks.values()) <= MAX_NET_SINKS


def test_needed_period_of_a_slow_clock_counts_crossings_twice():
    """A path from the 2x clock into the fabric clock must fit the fast period: the fabric
    clock's "worst" (the period it needs, its Fmax) counts it at twice its delay."""
    from zynqnn.timing import NET_MODELS, analyze, load_library

    one = "00000000000000000000000000000001"

    def ff(d, q, clk):
        return {"type": "FDRE", "hide_name": 1, "parameters": {},
                "port_directions": {"C": "input", "CE": "input", "D": "input", "Q": "output",
                                    "R": "input"},
                "connections": {"C": [clk], "CE": ["1"], "D": [d], "Q": [q], "R": ["0"]}}

    fast, slow = 1, 2
    cells = {"f": ff("0", 10, fast), "s": ff(10, 11, slow),   # fast -> slow, one net
             "x": ff("0", 12, slow), "y": ff(12, 13, slow)}   # slow -> slow, one net
    names = {"f_reg": [10], "s_reg": [11], "x_reg": [12], "y_reg": [13],
             "fast_clk": [fast], "clk": [slow]}
    d = {"modules": {"top": {
        "attributes": {"top": one},
        "ports": {"fast_clk": {"direction": "input", "bits": [fast]},
                  "clk": {"direction": "input", "bits": [slow]}},
        "cells": cells, "netnames": {n: {"hide_name": 0, "bits": b} for n, b in names.items()}}}}
    r = analyze(d, load_library(), NET_MODELS["typical"], {"clk": 7.0, "fast_clk": 3.5})
    (c,) = r.clocks
    one_net = 0.303 + NET_MODELS["typical"].r
    assert c.name == "clk" and c.worst == pytest.approx(2 * one_net)
    assert c.fmax == pytest.approx(1000 / (2 * one_net))
    assert c.slack == pytest.approx(3.5 - one_net)
