"""DMA efficiency of the SoC shell: bytes per cycle on a large read and a large write, without
and with back-pressure, against the bus peak (8 bytes per cycle on a 64-bit HP port).

    python scripts/bench_dma.py [--config pynq_z2] [--sim verilator] [--pressure 0.3]

Runs ``zynqnn.sim.tb_bench_dma`` on the top level with the test engine (the build is shared
with the pynq_z2 smoke test). The cycles counted run from the transfer's first address handshake
to its last read beat or write response, so they include the DDR model's latency and, with
back-pressure, its random pauses on every channel (probability ``--pressure`` per cycle) and
random response latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.rtl.top import Top
from zynqnn.sim.runner import run
from zynqnn.sim.test_engine import TestEngine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2")
    ap.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    ap.add_argument("--pressure", type=float, default=0.3)
    args = ap.parse_args(argv)
    cfg = get_config(args.config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pressure in (0.0, args.pressure):
            report = Path(tmp) / f"dma-{pressure}.json"
            run(lambda: Top(cfg, TestEngine(cfg)), TOP_NAME, "zynqnn.sim.tb_bench_dma",
                args.sim, cfg, extra_env={"TB_PRESSURE": str(pressure),
                                          "TB_REPORT": str(report)})
            rows.append(json.loads(report.read_text()))
    peak = rows[0]["peak_bytes_per_cycle"]
    print(f"DMA efficiency, {cfg.config_id} ({cfg.name}), {args.sim}; peak {peak} bytes/cycle")
    print(f"{'back-pressure':>13} | {'direction':>9} | {'buffer':>6} | {'bytes':>7} | "
          f"{'cycles':>7} | {'bytes/cycle':>11} | {'of peak':>7}")
    for r in rows:
        for d in ("read", "write"):
            x = r[d]
            print(f"{r['pressure']:>13.2f} | {d:>9} | {x['buffer']:>6} | {x['bytes']:>7} | "
                  f"{x['cycles']:>7} | {x['bytes_per_cycle']:>11.2f} | "
                  f"{x['bytes_per_cycle'] / peak:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
