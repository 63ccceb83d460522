"""End to end: the digits CNN from PyTorch to the accelerator's RTL, value for value.

    python scripts/demo.py [--images 450] [--sim verilator] [--config pynq_z2] [--checked]

Loads the cached pretrained digits CNN (trained on scikit-learn's 8x8 digits), quantizes it with
torch.ao FX (fbgemm), imports it with ``zynqnn.from_torch``, compiles it with ``zynqnn.compile``
and runs the held-out digits through the generated Verilog of ``zynqnn_top`` (Verilator, the
real driver, simulated DDR). Prints the float, int8 (PyTorch) and RTL accuracy, how many output
codes of the RTL equal PyTorch's quantized model, the graph's golden model and the command-level
model, the busy cycles per image and the frames/s they mean at the config's clock.

Exits 1 when an RTL output differs from PyTorch or from a golden model, 2 when the model cannot
be compiled or simulated.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _now(t0: float) -> str:
    return f"{time.perf_counter() - t0:6.1f} s"


def _fbgemm_comparable(graph, x: np.ndarray) -> bool:
    """Whether PyTorch's fbgemm result is CPU-independent on ``x``: fbgemm's kernels on CPUs
    without AVX-512 VNNI multiply code pairs in int16 and can saturate above code 127 (see
    docs/frontend.md); the golden model computes exact sums."""
    try:
        with open("/proc/cpuinfo") as f:
            if "avx512_vnni" in f.read():
                return True
    except OSError:
        pass
    env = graph.run_all(x)
    return max(int(env[n.inputs[0]].max()) for n in graph.nodes
               if n.op in ("conv2d", "linear")) <= 127


def _torch_codes(qmodel, graph, x) -> np.ndarray:
    """PyTorch's output codes (its ``int_repr``): the FX model dequantizes its output, which
    quantizes back exactly with the output's scale and zero point."""
    import torch

    t = graph.tensors[graph.quant_outputs[0]]
    dtype = {"uint8": torch.quint8, "int8": torch.qint8}[t.dtype]
    with torch.no_grad():
        y = qmodel(x)
    q = torch.quantize_per_tensor(y, float(t.scale), int(t.zero_point), dtype)
    return q.int_repr().numpy().astype(np.int64)


def _compare(label: str, got: np.ndarray, want: np.ndarray) -> int:
    bad = int(np.count_nonzero(got != want))
    images = int(np.count_nonzero((got != want).reshape(len(got), -1).any(axis=1)))
    print(f"  RTL vs {label:<34} {got.size - bad:>6} of {got.size} outputs equal, "
          f"{bad} mismatches ({images} images)")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None,
                        help="held-out images to run (default: all 450)")
    parser.add_argument("--config", default="pynq_z2", help="hardware config preset")
    parser.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    parser.add_argument("--checked", action="store_true",
                        help="the system tests' harness (cocotbext-axi AxiRam, AXI protocol "
                        "checker) instead of the lean DDR model: about half the speed")
    parser.add_argument("--backpressure", type=float, default=0.0,
                        help="random AXI pause probability per cycle (with --checked)")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train split)")
    args = parser.parse_args()
    if args.backpressure and not args.checked:
        parser.error("--backpressure needs --checked (the lean DDR model is always ready)")

    import torch

    import zynqnn
    from zynqnn import zoo
    from zynqnn.hw.config import get_config
    from zynqnn.vivado import fclk_plan
    from zynqnn.zoo import digits
    from zynqnn.zoo.quant import quiet_torch_ao

    # One thread: PyTorch's element-wise kernels split work per thread (docs/frontend.md), and
    # the simulator needs the other core.
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = get_config(args.config)
    x_tr, y_tr, x_te, y_te = digits.load_data()
    n = len(x_te) if args.images is None else max(1, min(args.images, len(x_te)))
    x, y = x_te[:n], y_te[:n]
    model = digits.pretrained()
    print(f"digits CNN, held-out split: {n} images of 1x8x8 ({len(x_tr)} for training)")
    float_acc = digits.accuracy(model, x, y)
    with quiet_torch_ao():
        qmodel = zoo.quantize_fx(model, x_tr[:1], "fbgemm", x_tr[:args.calib])
        graph = zynqnn.from_torch(qmodel, x_te[:2], engine="fbgemm")
    int8_acc = digits.accuracy(qmodel, x, y)
    print(f"[{_now(t0)}] quantized (torch.ao FX, fbgemm) and imported: {len(graph.nodes)} nodes")
    try:
        compiled = zynqnn.compile(graph, config=cfg)
    except (AttributeError, ImportError) as e:
        print(f"demo: zynqnn.compile is not available in this checkout ({e})", file=sys.stderr)
        return 2
    except ValueError as e:   # CompileError, IRError
        print(f"demo: the digits CNN does not compile for {cfg.name}: {e}", file=sys.stderr)
        return 2
    prog = compiled.program
    print(f"[{_now(t0)}] compiled for {cfg.name} ({cfg.config_id}): "
          f"{prog.command_count} commands, {prog.ddr_bytes} bytes of DDR")

    xn = x.numpy()
    codes = graph.quantize_input(xn)
    want_torch = _torch_codes(qmodel, graph, x)
    want_graph = np.asarray(graph.run_int(codes), dtype=np.int64)
    want_machine = np.asarray(compiled.run_int(codes), dtype=np.int64)
    print(f"[{_now(t0)}] golden models done; simulating {n} images on {args.sim} "
          f"(one simulator process; the first run builds it)")
    t_sim = time.perf_counter()
    step = max(1, n // 10)

    def progress(done, total):
        if done % step == 0 or done == total:
            print(f"[{_now(t0)}]   {done:>4}/{total} images", flush=True)

    try:
        got = np.asarray(compiled.run_int(codes, backend=args.sim, progress=progress,
                                          fast=not args.checked,
                                          backpressure=args.backpressure), dtype=np.int64)
    except RuntimeError as e:   # ProgramRunError, BackendError
        print(f"demo: RTL simulation failed: {e}", file=sys.stderr)
        return 2
    sim_s = time.perf_counter() - t_sim
    cycles = np.asarray(compiled.last_cycles, dtype=np.int64)

    labels = y.numpy()
    rtl_acc = 100.0 * float(np.mean(got.reshape(n, -1).argmax(1) == labels))
    print()
    print(f"  {'float32 (PyTorch)':<28} {float_acc:6.2f} %")
    print(f"  {'int8 (PyTorch, fbgemm)':<28} {int8_acc:6.2f} %")
    print(f"  {'int8 (RTL, ' + args.sim + ')':<28} {rtl_acc:6.2f} %")
    print()
    comparable = _fbgemm_comparable(graph, xn)
    bad_torch = _compare("PyTorch quantized model", got, want_torch)
    bad_graph = _compare("golden model (graph)", got, want_graph)
    bad_machine = _compare("golden model (command level)", got, want_machine)
    if not comparable:
        print("  (this CPU lacks AVX-512 VNNI and codes above 127 reach a conv: PyTorch's fbgemm "
              "result depends on the CPU, so the PyTorch comparison is informational)")
    print()
    fclk = fclk_plan(cfg.clock_mhz).actual_mhz
    per = float(cycles.mean())
    spread = "" if cycles.min() == cycles.max() else f" (min {cycles.min()}, max {cycles.max()})"
    ddr = "no-wait-state DDR model" if not args.checked else "cocotbext-axi AxiRam"
    print(f"  RTL busy cycles per image    {per:,.0f}{spread}  ({ddr})")
    print(f"  frames/s at {cfg.clock_mhz:g} MHz          {cfg.clock_mhz * 1e6 / per:,.0f}  "
          f"(latency {per / cfg.clock_mhz:,.1f} us; {fclk * 1e6 / per:,.0f} frames/s at the "
          f"Pynq-Z2's {fclk:.3f} MHz FCLK)")
    try:
        est = prog.perf(check=False)
        print(f"  compiler's estimate with DDR latency (zynqnn.compiler.perf): {est.cycles:,} "
              f"cycles, {cfg.clock_mhz * 1e6 / est.cycles:,.0f} frames/s at "
              f"{cfg.clock_mhz:g} MHz")
    except Exception as e:   # the estimate is informational
        print(f"  (no performance estimate: {e})")
    print(f"  simulation: {n} images in {sim_s:.1f} s ({n / sim_s:.2f} images/s); "
          f"total {_now(t0).strip()}")
    failed = bad_graph or bad_machine or (bad_torch and comparable)
    if failed:
        print("demo: FAILED: the RTL differs from the reference", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
