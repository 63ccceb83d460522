"""The zoo's networks, quantized by each framework, run whole on the simulated RTL and compared
value for value with the framework's own output.

    python scripts/rtl_networks.py [--sim verilator] [--models ...] [--schemes ...]
                                   [--config pynq_z2] [--json FILE]

For every (network, scheme): the zoo model with random weights (ResNet-18 and MobileNetV2 at
32x32, YOLOv3-tiny at 64x64), quantized by

* ``fbgemm`` / ``qnnpack``: torch.ao FX post-training quantization with torch's default qconfig
  of that engine; the reference is the converted PyTorch model's output;
* ``onnxruntime``: the float model exported to ONNX and quantized by ONNX Runtime's
  ``quantize_static`` (QDQ, per-channel, 7-bit weights so MLAS's int16 pairs cannot saturate on
  any CPU); the reference is an ONNX Runtime session's output;

imported (``zynqnn.from_torch`` / ``zynqnn.from_onnx``), compiled with ``zynqnn.compile`` and
run with ``prog.run(x, backend=SIM)``: the RTL top level through the driver, with
cocotbext-axi's ``AxiRam`` and the AXI protocol checker (``--fast``: the lean DDR
model). Each output must be
``array_equal`` to the framework's and to the golden model's (the command-level model of the
same program). Prints the busy cycles of the run beside the performance model's estimate for
the simulation's memory (``DmaModel.simulation()``). Exit status 1 on any mismatch or failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"resnet18": 32, "mobilenet_v2": 32, "yolov3_tiny": 64}
SCHEMES = ("fbgemm", "qnnpack", "onnxruntime")


def _outputs(y) -> list[np.ndarray]:
    import torch

    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    return [t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in ys]


def prepare(name: str, scheme: str, size: int, seed: int = 0, **kwargs):
    """(graph, input, the framework's outputs) of zoo network ``name`` quantized by ``scheme``;
    ``kwargs`` go to ``zoo.get`` (e.g. ``width_mult``)."""
    import torch

    import zynqnn
    from zynqnn import zoo
    from zynqnn.zoo.ort import export_onnx, ort_quantize, ort_session
    from zynqnn.zoo.quant import quiet_torch_ao

    model = zoo.get(name, seed=seed, **kwargs)
    x = zoo.example_input(name, size, batch=1, seed=seed + 100)
    calib = [zoo.example_input(name, size, batch=2, seed=seed + i) for i in range(3)] + [x]
    if scheme in ("fbgemm", "qnnpack"):
        old = torch.backends.quantized.engine
        try:
            with quiet_torch_ao():
                q = zoo.quantize_fx(model, x, engine=scheme, calibration=calib)
                graph = zynqnn.from_torch(q, x, engine=scheme)
                with torch.no_grad():
                    ref = _outputs(q(x))
        finally:
            torch.backends.quantized.engine = old
        return graph, x.numpy(), ref
    with tempfile.TemporaryDirectory() as tmp:
        fpath = export_onnx(model.eval(), x, Path(tmp) / f"{name}.onnx")
        # The export has the example's batch of 1: calibrate image by image.
        qpath = ort_quantize(fpath, [c[i:i + 1].numpy() for c in calib for i in range(len(c))],
                             Path(tmp) / "qdq.onnx", reduce_range=True)
        graph = zynqnn.from_onnx(qpath)
        ref = _outputs(ort_session(qpath).run(None, {"x": x.numpy()}))
    return graph, x.numpy(), ref


def run_one(name: str, scheme: str, cfg: str, sim: str, fast: bool = False,
            size: int | None = None, **kwargs) -> dict:
    import zynqnn
    from zynqnn.compiler.perf import DmaModel

    size = size or SIZES[name]
    t0 = time.time()
    graph, x, ref = prepare(name, scheme, size, **kwargs)
    try:
        prog = zynqnn.compile(graph, config=cfg)
    except zynqnn.CompileError as e:
        return dict(model=name, scheme=scheme, size=size, status="refused", reason=str(e))
    t1 = time.time()
    got = _outputs(prog.run(x, backend=sim, fast=fast))
    t2 = time.time()
    cycles = int(prog.last_cycles[0])
    memory = prog.last_memory   # e.g. "RTL verilator, AXI RAM model"
    golden = _outputs(prog.run(x, backend="golden"))  # (resets last_cycles)
    model = prog.program.perf(DmaModel.simulation()).cycles
    values = sum(r.size for r in ref)
    bad_fw = sum(int(np.count_nonzero(r != g)) if r.shape == g.shape else r.size
                 for r, g in zip(ref, got, strict=True))
    bad_golden = sum(int(np.count_nonzero(r != g)) if r.shape == g.shape else r.size
                     for r, g in zip(golden, got, strict=True))
    ok = bad_fw == 0 and bad_golden == 0 and all(g.dtype == np.float32 for g in got)
    return dict(model=name, scheme=scheme, size=size, status="bit-exact" if ok else "MISMATCH",
                values=values, mismatches_framework=bad_fw, mismatches_golden=bad_golden,
                rtl_cycles=cycles, rtl_memory=memory, model_cycles=model,
                prepare_s=round(t1 - t0, 1), sim_s=round(t2 - t1, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2")
    ap.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    ap.add_argument("--models", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--schemes", nargs="*", default=list(SCHEMES), choices=list(SCHEMES))
    ap.add_argument("--fast", action="store_true",
                    help="lean DDR model without the AXI checker (about twice as fast)")
    ap.add_argument("--size", type=int, help="input height = width (default: 32, YOLO 64)")
    ap.add_argument("--width-mult", type=float,
                    help="MobileNetV2's width multiplier (default 1.0; 0.35 is the smallest "
                         "published variant, for the slow simulator)")
    ap.add_argument("--json", type=Path, help="append each result as a JSON line to this file")
    args = ap.parse_args(argv)

    rows, ok = [], True
    for name in args.models:
        for scheme in args.schemes:
            try:
                extra = ({"width_mult": args.width_mult}
                         if args.width_mult and name == "mobilenet_v2" else {})
                r = run_one(name, scheme, args.config, args.sim, args.fast, args.size, **extra)
                r.update(extra)
            except Exception as e:  # report and go on with the next network
                r = dict(model=name, scheme=scheme, size=args.size or SIZES[name], status="FAILED",
                         reason=f"{type(e).__name__}: {e}")
            r["sim"] = args.sim + (" (fast)" if args.fast else "")
            rows.append(r)
            ok &= r["status"] == "bit-exact"
            print(_line(r), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"\n{args.sim}, config {args.config}")
    for r in rows:
        print(_line(r))
    return 0 if ok else 1


def _line(r: dict) -> str:
    name = r["model"] + (f" x{r['width_mult']}" if "width_mult" in r else "")
    head = f"{name:13s} {r['scheme']:11s} {r['size']:>3d}x{r['size']:<3d}"
    if r["status"] in ("refused", "FAILED"):
        return f"{head} {r['status']}: {r['reason']}"
    dev = (100 * (r["model_cycles"] - r["rtl_cycles"]) / r["rtl_cycles"]
           if r["rtl_cycles"] else float("nan"))
    return (f"{head} {r['status']:9s} {r['values']:>6,d} values "
            f"({r['mismatches_framework']} vs framework, {r['mismatches_golden']} vs golden), "
            f"RTL {r['rtl_cycles']:,d} cycles ({r.get('rtl_memory', 'RTL')}), performance "
            f"model {r['model_cycles']:,d} ({dev:+.1f} %, its model of that memory), "
            f"{r['sim_s']:.0f} s simulated")


if __name__ == "__main__":
    sys.exit(main())
