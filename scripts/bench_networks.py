"""Whole-network throughput of the accelerator: the validated performance model at full size,
RTL-simulated cycles at reduced size.

    python scripts/bench_networks.py [--config pynq_z2] [--clock-mhz 150] [--ddr-gbps 1.2]
                                     [--rtl-size 32] [--sim verilator] [--no-rtl] [--models ...]

For each zoo network (random weights, torch.ao FX on the qnnpack engine, imported with
``zynqnn.from_torch`` and compiled with ``zynqnn.compile``):

* full size (ResNet-18 and MobileNetV2 224x224, YOLOv3-tiny 416x416): the performance model's
  cycles, average utilization (useful MACs / (cycles x rows x cols)), latency and frames/s at
  the given clock and DDR bandwidth, and the layers that take most of the time;
* reduced size (``--rtl-size``): the same program run on the RTL top level through the driver
  (``prog.run(x, backend=...)``), its busy cycles against the model's for the simulation's
  memory (``DmaModel.simulation()``), and its outputs against the golden model and
  ``graph.run``.

qnnpack is used because every layer runs at the same rate in it: torch.ao fbgemm's depthwise
layers whose int16 tap pairs can saturate run as ``PAIRS`` commands (about 2.1 times the
cycles), and at 224x224 MobileNetV2's 160-channel adds end in a PyTorch scalar tail inside a
channel block, which the compiler refuses (docs/compiler.md). Otherwise performance does not
depend on the scheme.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

FULL = {"resnet18": 224, "mobilenet_v2": 224, "yolov3_tiny": 416}


def build(name: str, size: int, cfg: str, seed: int = 0):
    import torch

    import zynqnn
    from zynqnn import zoo
    from zynqnn.zoo.quant import quiet_torch_ao

    model = zoo.get(name, seed=seed)
    calib = torch.cat([zoo.example_input(name, size, batch=1, seed=seed + i) for i in range(2)])
    old = torch.backends.quantized.engine
    try:
        with quiet_torch_ao():
            q = zoo.quantize_fx(model, calib[:1], engine="qnnpack", calibration=calib)
            graph = zynqnn.from_torch(q, calib[:1], engine="qnnpack")
    finally:
        torch.backends.quantized.engine = old
    return graph, calib[:1].numpy(), zynqnn.compile(graph, config=cfg)


def main(argv=None) -> int:
    from zynqnn.compiler.perf import BOARD_LATENCY, DmaModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2")
    ap.add_argument("--clock-mhz", type=float, default=150.0)
    ap.add_argument("--ddr-gbps", type=float, default=1.2)
    ap.add_argument("--rtl-size", type=int, default=32)
    ap.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    ap.add_argument("--no-rtl", action="store_true", help="skip the RTL simulations")
    ap.add_argument("--models", nargs="*", default=list(FULL), choices=list(FULL))
    ap.add_argument("--top", type=int, default=3, help="slowest layers listed per network")
    args = ap.parse_args(argv)

    rows = []
    for name in args.models:
        size = FULL[name]
        t0 = time.time()
        _, _, prog = build(name, size, args.config)
        rep = prog.report(clock_mhz=args.clock_mhz, ddr_gbps=args.ddr_gbps)
        t = rep.total
        slow = sorted(rep.rows, key=lambda r: -r["cycles"])[:args.top]
        print(f"{name} {size}x{size}: {t['cycles']:,d} cycles (performance model), utilization "
              f"{100 * t['utilization']:.1f} %, {t['latency_ms']:.2f} ms, {t['fps']:.1f} frames/s"
              f" ({time.time() - t0:.0f} s to quantize, import and compile)", flush=True)
        for r in slow:
            print(f"    {r['name'][:32]:32s} {r['kind'][:14]:14s} {r['cycles']:>10,d} cycles "
                  f"{100 * r['utilization']:5.1f} % {r['bound']}")
        rtl = None
        if not args.no_rtl:
            rs = args.rtl_size if name != "yolov3_tiny" else max(args.rtl_size, 64)
            graph, x, small = build(name, rs, args.config)
            # The model of the simulation's memory (a beat per cycle, no added latency).
            mc = small.program.perf(DmaModel.simulation()).cycles
            t0 = time.time()
            got = small.run(x, backend=args.sim)
            cyc = small.last_cycles[0]
            memory = small.last_memory   # "RTL verilator, AXI RAM model" (golden runs clear it)
            same_golden = all(np.array_equal(a, b) for a, b in
                              zip(_as_list(got), _as_list(small.run(x, backend="golden")),
                                  strict=True))
            same_graph = all(np.array_equal(a, b) for a, b in
                             zip(_as_list(got), _as_list(graph.run(x)), strict=True))
            rtl = (rs, cyc, mc, same_golden and same_graph, memory)
            print(f"    {memory} {rs}x{rs}: {cyc:,d} cycles busy, performance "
                  f"model of that memory {mc:,d} "
                  f"({100 * (mc - cyc) / cyc:+.1f} %), outputs equal to golden and graph: "
                  f"{same_golden and same_graph} ({time.time() - t0:.0f} s)", flush=True)
        rows.append((name, size, t, rtl))

    print(f"\nconfig {args.config}, models quantized with torch.ao qnnpack, "
          f"{args.clock_mhz:g} MHz, DDR {args.ddr_gbps:g} GB/s, "
          f"{BOARD_LATENCY} cycles of DDR latency")
    print(f"{'network':14s} {'input':>8s} {'frames/s':>9s} {'latency':>10s} {'util':>6s}   "
          f"RTL check")
    ok = True
    for name, size, t, rtl in rows:
        chk = "-" if rtl is None else (f"{rtl[0]}x{rtl[0]}: {rtl[1]:,d} cycles ({rtl[4]}), "
                                       f"model "
                                       f"{100 * (rtl[2] - rtl[1]) / rtl[1]:+.1f} %, "
                                       f"{'bit-exact' if rtl[3] else 'MISMATCH'}")
        ok &= rtl is None or rtl[3]
        print(f"{name:14s} {size:>4d}x{size:<3d} {t['fps']:9.1f} {t['latency_ms']:8.2f}ms "
              f"{100 * t['utilization']:5.1f}%   {chk}")
    return 0 if ok else 1


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


if __name__ == "__main__":
    sys.exit(main())
