"""cocotb module of the engine utilization benchmark (``scripts/bench_engine.py``), not a test.

Runs the layers in ``TB_BENCH`` (a JSON list) back to back, checks their outputs against numpy
and writes cycles and MACs per layer to ``TB_REPORT``.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.utils import get_sim_time

from zynqnn.hw import isa
from zynqnn.sim.clocking import CLOCK_NS, start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.tb_engine import (
    BypassLayer,
    DwLayer,
    DwPairsLayer,
    EngineTB,
    Layer,
    PairsLayer,
    StepLayer,
    load,
)


@cocotb.test()
async def bench_layers(dut):
    """Cycles of each layer in ``TB_BENCH``, ``TB_REPEAT`` commands back to back."""
    spec = os.environ["TB_BENCH"]
    repeat = int(os.environ.get("TB_REPEAT", 4))
    cfg = config_from_env()
    rng = np.random.default_rng(0)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    results = []
    for i, s in enumerate(json.loads(spec)):
        if s.get("maxpool"):  # one channel block, no MACs: cycles per output pixel matter
            layer = BypassLayer(cfg, rng, isa.Mode.MAXPOOL, s["k"], s["stride"], s["pad"],
                                s["h"], s["w"])
        elif s.get("pairs"):  # fbgemm's saturating depthwise pairs (isa.Mode.PAIRS)
            layer = PairsLayer(cfg, rng, s["k"], s["stride"], s["pad"], s["h"], s["w"])
        elif s.get("dw_pairs"):  # one-pass depthwise with fbgemm's pairs (isa.Mode.DW_PAIRS)
            layer = DwPairsLayer(cfg, rng, s["stride"], s["pad"], s["h"], s["w"])
        elif s.get("dw"):  # one-pass depthwise (isa.Mode.DW)
            layer = DwLayer(cfg, rng, s["stride"], s["pad"], s["h"], s["w"])
        else:
            layer = Layer(cfg, rng, s["k"], s["stride"], s["pad"], s["cin"], s["h"], s["w"],
                          depthwise=s.get("depthwise", False))
        if s.get("step"):  # post-processed by the step lanes in scheme s["step"]
            # Random scales may need more exceptions than a lane holds (the compiler then
            # refuses or splits the layer); draw again: the cycles do not depend on the values.
            for attempt in range(20):
                try:
                    layer = StepLayer(cfg, rng, layer, s["step"])
                    break
                except ValueError:
                    if attempt == 19:
                        raise
        await load(tb, layer)
        # One command per block of output channels, back to back as the compiler emits them,
        # so each one's post-processing overlaps the next one's MAC stage.
        t0 = get_sim_time("ns")
        for n in range(repeat):
            await tb.send(layer.command(obuf_bank=n % 2))
        await tb.wait_done((i + 1) * repeat, 10_000_000)
        cycles = (get_sim_time("ns") - t0) // CLOCK_NS
        for bank in range(min(repeat, 2)):
            got = tb.decode(await tb.read_obuf(bank, 0, layer.oh * layer.ow))
            assert np.array_equal(got, layer.expected), f"layer {s}: outputs differ"
        # useful MACs: a depthwise output channel reads one input channel, not cin
        per_out = (0 if s.get("maxpool")
                   else 1 if any(s.get(f) for f in ("depthwise", "pairs", "dw", "dw_pairs"))
                   else s["cin"])
        macs = repeat * layer.oh * layer.ow * s["k"] ** 2 * per_out * cfg.cols
        results.append({**s, "oh": int(layer.oh), "ow": int(layer.ow), "cycles": int(cycles),
                        "macs": int(macs)})
    with open(os.environ["TB_REPORT"], "w") as f:
        json.dump(results, f)
