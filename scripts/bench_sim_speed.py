"""Simulation speed of the PE array testbench: clock cycles per wall-clock second.

    python scripts/bench_sim_speed.py [--config tiny pynq_z2] [--sims icarus verilator]

Runs ``zynqnn.sim.tb_pe_array`` (random tiles, random stalls, checked against numpy) and prints
cycles, seconds and cycles/s of the streaming part (not the build) for each simulator.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from zynqnn.hw.config import get_config
from zynqnn.rtl.pe_array import PEArray
from zynqnn.sim.runner import SIMULATORS, run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["tiny", "pynq_z2"])
    ap.add_argument("--sims", nargs="+", default=list(SIMULATORS))
    ap.add_argument("--tiles", type=int, default=20)
    args = ap.parse_args()
    print(f"{'config':>10} {'sim':>10} {'cycles':>8} {'seconds':>8} {'cycles/s':>9}")
    for name in args.config:
        cfg = get_config(name)
        for sim in args.sims:
            with tempfile.TemporaryDirectory() as tmp:
                report = Path(tmp) / "r.json"
                env = {"TB_REPORT": str(report), "TB_TILES": str(args.tiles),
                       "TB_MAX_VECTORS": "200", "TB_IDLE": "0.1", "TB_STALL": "0.1"}
                run(lambda cfg=cfg: PEArray(cfg), "zynqnn_pe_array", "zynqnn.sim.tb_pe_array",
                    sim, cfg, extra_env=env, testcase="random_tiles")
                r = json.loads(report.read_text())
            print(f"{name:>10} {sim:>10} {r['cycles']:>8} {r['seconds']:>8.2f} "
                  f"{r['cycles'] / r['seconds']:>9.0f}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    main()
