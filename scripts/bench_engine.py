"""Utilization of the compute engine on representative layers, measured in RTL simulation.

    python scripts/bench_engine.py [--config pynq_z2] [--sim verilator] [--only TEXT]
                                   [--repeat 4]

Each layer runs as ``--repeat`` (4) back-to-back CONV commands, one per block of ``cols`` output
channels (64 output channels on the 16x16 array), as the compiler emits them. Cycles run from
the first command's acceptance to the last one's final output in OBUF (fill, drain and the last
post-processing included); utilization = useful MACs / (cycles x rows x cols). The difference
of two runs with different ``--repeat`` is the steady-state cost of a command. Outputs are
checked against numpy on the way.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from zynqnn.hw.config import get_config
from zynqnn.rtl.engine import Engine
from zynqnn.sim.runner import run

LAYERS = [
    ("conv3x3 c64 16x16", dict(k=3, stride=1, pad=1, cin=64, h=16, w=16)),
    ("conv3x3 c128 14x14", dict(k=3, stride=1, pad=1, cin=128, h=14, w=14)),
    ("conv3x3 c64 s2 28x28", dict(k=3, stride=2, pad=1, cin=64, h=28, w=28)),
    ("conv3x3 c128 7x7", dict(k=3, stride=1, pad=1, cin=128, h=7, w=7)),
    ("conv1x1 c256 14x14", dict(k=1, stride=1, pad=0, cin=256, h=14, w=14)),
    ("conv1x1 c64 28x28", dict(k=1, stride=1, pad=0, cin=64, h=28, w=28)),
    ("conv1x1 c16 28x28", dict(k=1, stride=1, pad=0, cin=16, h=28, w=28)),
    ("stem7x7 s2 c3 32x32", dict(k=7, stride=2, pad=3, cin=3, h=32, w=32)),
    # depthwise in one pass (isa.Mode.DW, how the compiler runs 3x3 depthwise layers on a
    # 16x16 array), one block of 16 channels per command
    ("dw3x3 one-pass 28x28", dict(k=3, stride=1, pad=1, cin=16, h=28, w=28, dw=True)),
    ("dw3x3 one-pass 14x14", dict(k=3, stride=1, pad=1, cin=16, h=14, w=14, dw=True)),
    ("dw3x3 one-pass 7x7", dict(k=3, stride=1, pad=1, cin=16, h=7, w=7, dw=True)),
    ("dw3x3 one-pass s2 56x56", dict(k=3, stride=2, pad=1, cin=16, h=56, w=56, dw=True)),
    # the same with a float-scheme requantization on the step lanes (ConvOp.step: one output
    # pixel a cycle), as the compiler runs PyTorch / ONNX Runtime depthwise layers
    ("dw3x3 step 28x28", dict(k=3, stride=1, pad=1, cin=16, h=28, w=28, dw=True,
                              step="torch-qnnpack")),
    ("dw3x3 step 14x14", dict(k=3, stride=1, pad=1, cin=16, h=14, w=14, dw=True,
                              step="onnxruntime")),
    ("dw3x3 step 7x7", dict(k=3, stride=1, pad=1, cin=16, h=7, w=7, dw=True,
                            step="torch-qnnpack")),
    ("dw3x3 step s2 56x56", dict(k=3, stride=2, pad=1, cin=16, h=56, w=56, dw=True,
                                 step="torch-qnnpack")),
    ("dw3x3 fbgemm step 28x28", dict(k=3, stride=1, pad=1, cin=16, h=28, w=28, dw_pairs=True,
                                     step="torch-fbgemm")),
    ("dw3x3 fbgemm step s2 56x56", dict(k=3, stride=2, pad=1, cin=16, h=56, w=56,
                                        dw_pairs=True, step="torch-fbgemm")),
    # depthwise with diagonal weight tiles (configs without the DW mode)
    ("dw3x3 diagonal 28x28", dict(k=3, stride=1, pad=1, cin=16, h=28, w=28, depthwise=True)),
    ("dw3x3 diagonal s2 56x56", dict(k=3, stride=2, pad=1, cin=16, h=56, w=56, depthwise=True)),
    # torch.ao fbgemm depthwise whose int16 tap pairs can saturate: one pass (isa.Mode.DW_PAIRS)
    # and the two-reads-per-pair mode of other kernels and configs (isa.Mode.PAIRS)
    ("dw3x3 fbgemm one-pass 28x28",
     dict(k=3, stride=1, pad=1, cin=16, h=28, w=28, dw_pairs=True)),
    ("dw3x3 fbgemm one-pass s2 56x56",
     dict(k=3, stride=2, pad=1, cin=16, h=56, w=56, dw_pairs=True)),
    ("dw3x3 fbgemm PAIRS 28x28", dict(k=3, stride=1, pad=1, cin=16, h=28, w=28, pairs=True)),
    # a bypass layer: no MACs, so cycles per output pixel (one word of R channels) instead
    ("maxpool2x2 s2 56x56", dict(k=2, stride=2, pad=0, cin=16, h=56, w=56, maxpool=True)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2")
    ap.add_argument("--sim", default="verilator")
    ap.add_argument("--only", default="", help="run the layers whose name contains this")
    ap.add_argument("--repeat", type=int, default=4, help="commands per layer")
    args = ap.parse_args()
    cfg = get_config(args.config)
    layers = [(n, s) for n, s in LAYERS if args.only in n]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "bench.json"
        env = {"TB_BENCH": json.dumps([s for _, s in layers]), "TB_REPORT": str(report),
               "TB_REPEAT": str(args.repeat)}
        run(lambda: Engine(cfg), "zynqnn_engine", "zynqnn.sim.bench_engine", args.sim, cfg,
            extra_env=env)
        results = json.loads(report.read_text())
    peak = cfg.rows * cfg.cols
    print(f"config {cfg.config_id}: {cfg.rows}x{cfg.cols} array, {peak} MACs/cycle peak; cycles "
          f"of the engine alone on {args.sim} (the testbench fills its buffers: no DDR, no "
          f"memory model)")
    print(f"{'layer':<26} {'out':>7} {'MACs':>9} {'cycles':>8} {'MAC/cyc':>8} {'util':>6}")
    for (name, _), r in zip(layers, results, strict=True):
        if not r["macs"]:
            per_px = r["cycles"] / (args.repeat * r["oh"] * r["ow"])
            print(f"{name:<26} {r['oh']:>3}x{r['ow']:<3} {'-':>9} {r['cycles']:>8} "
                  f"{per_px:>8.2f} cycles per output pixel")
            continue
        rate = r["macs"] / r["cycles"]
        print(f"{name:<26} {r['oh']:>3}x{r['ow']:<3} {r['macs']:>9} {r['cycles']:>8} "
              f"{rate:>8.1f} {rate / peak:>6.1%}")


if __name__ == "__main__":
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    main()
