"""The cocotb testbenches by name, with the component each drives (`make sim`, `make sim-list`).

    make sim TB=tb_engine SIM=verilator [CONFIG=tiny] [TEST=conv_layer] [WAVES=1] [SEED=7]
    python -m zynqnn.sim.benches tb_engine --sim verilator --waves

Runs one testbench (or the tests named in ``TEST``, comma-separated) through
:func:`zynqnn.sim.runner.run`, in a build directory of its own (``build/make-sim/<tb>/``, so a
waveform build never replaces the test suite's), prints pass or fail and where the waveform went:
FST from both simulators (Icarus through cocotb's dump module, Verilator with ``--trace-fst``),
with the Amaranth signal names. Open it with GTKWave (``gtkwave FILE``) or Surfer (``surfer
FILE``).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from zynqnn.hw.config import HwConfig, get_config
from zynqnn.hw.platform import TOP_NAME

__all__ = ["Bench", "BENCHES", "waveform_path", "main"]


@dataclass(frozen=True)
class Bench:
    toplevel: str
    make: object          # cfg -> the Amaranth component
    config: str           # the config it is usually run on
    about: str


def _pe_array(cfg):
    from zynqnn.rtl.pe_array import PEArray
    return PEArray(cfg)


def _pe_array2x(cfg):
    from zynqnn.rtl.pe_array2x import PEArray2x
    return PEArray2x(cfg)


def _step(cfg):
    from zynqnn.rtl.steprequant import StepRequant
    return StepRequant(cfg)


def _postproc(cfg):
    from zynqnn.rtl.postproc import PostProc
    return PostProc(cfg)


def _eltwise(cfg):
    from zynqnn.rtl.eltwise import EltwiseAdd
    return EltwiseAdd(cfg)


def _lut(cfg):
    from zynqnn.rtl.lut import EltwiseLUT
    return EltwiseLUT(cfg)


def _engine(cfg):
    from zynqnn.rtl.engine import Engine
    return Engine(cfg)


def _shell(cfg):
    from zynqnn.rtl.top import Top
    from zynqnn.sim.test_engine import TestEngine
    return Top(cfg, TestEngine(cfg))


def _shell_alone(cfg):
    from zynqnn.rtl.top import Top
    return Top(cfg)


def _soc(cfg):
    from zynqnn.rtl.top import Top
    return Top(cfg, _engine(cfg))


#: Every standalone testbench of ``sim/`` (``tb_program`` is driven by the program runner:
#: ``prog.run(x, backend="verilator")``).
BENCHES: dict[str, Bench] = {
    "tb_pe_array": Bench("zynqnn_pe_array", _pe_array, "tiny", "the systolic PE array"),
    "tb_pe_array2x": Bench("zynqnn_pe_array_2x", _pe_array2x, "pynq_z2_2x",
                           "the double-pumped PE array (DSPs on a 2x clock)"),
    "tb_steprequant": Bench("zynqnn_step_requant", _step, "tiny", "the step requantizer lanes"),
    "tb_postproc": Bench("zynqnn_postproc", _postproc, "tiny", "the post-processing lanes"),
    "tb_eltwise": Bench("zynqnn_eltwise", _eltwise, "tiny", "the element-wise add lanes"),
    "tb_lut": Bench("zynqnn_lut", _lut, "pynq_z2", "the table-lookup lanes (two per RAMB18)"),
    "tb_engine": Bench("zynqnn_engine", _engine, "tiny", "the compute engine"),
    "tb_soc": Bench(TOP_NAME, _shell, "tiny", "the SoC shell with a test engine, via the driver"),
    "tb_soc_noengine": Bench(TOP_NAME, _shell_alone, "tiny", "the shell built without engine"),
    "tb_system": Bench(TOP_NAME, _soc, "tiny", "compiled networks on the whole accelerator"),
    "tb_bench_dma": Bench(TOP_NAME, _shell, "pynq_z2", "DMA throughput (scripts/bench_dma.py)"),
}


def build_root(tb: str) -> Path:
    from zynqnn.sim.runner import default_build_root
    return default_build_root() / "make-sim" / tb


def waveform_path(tb: str, cfg: HwConfig, sim: str) -> Path:
    """Where :func:`main` leaves the waveform of ``tb`` run on ``sim``."""
    b = BENCHES[tb]
    d = build_root(tb) / "sim" / f"{b.toplevel}-{cfg.config_id}-{sim}"
    return d / (f"{b.toplevel}.fst" if sim == "icarus" else "dump.fst")


def run_bench(tb: str, sim: str, cfg: HwConfig, tests: list[str] | None = None,
              waves: bool = False, seed: int | None = None) -> tuple[int, int]:
    from zynqnn.sim.runner import run

    b = BENCHES[tb]
    return run(lambda: b.make(cfg), b.toplevel, f"zynqnn.sim.{tb}", sim, cfg, testcase=tests,
               seed=seed, build_root=build_root(tb), waves=waves)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make sim", description=__doc__.splitlines()[0])
    ap.add_argument("tb", nargs="?", help="testbench (make sim-list names them)")
    ap.add_argument("--sim", default="icarus", choices=("icarus", "verilator"))
    ap.add_argument("--config", help="hardware config preset (default: the testbench's)")
    ap.add_argument("--test", help="only these cocotb tests (comma-separated)")
    ap.add_argument("--waves", action="store_true", help="write an FST waveform")
    ap.add_argument("--seed", type=int, help="cocotb random seed")
    ap.add_argument("--list", action="store_true", help="list the testbenches")
    args = ap.parse_args(argv)
    if args.list or not args.tb:
        from zynqnn.sim.runner import cocotb_tests
        for name, b in BENCHES.items():
            tests = ", ".join(cocotb_tests(f"zynqnn.sim.{name}"))
            print(f"{name:16} {b.about} ({b.toplevel}, CONFIG={b.config}): {tests}")
        return 0 if args.list else 2
    if args.tb not in BENCHES:
        print(f"make sim: unknown testbench {args.tb!r}; one of {', '.join(BENCHES)}",
              file=sys.stderr)
        return 2
    try:
        cfg = get_config(args.config or BENCHES[args.tb].config)
    except ValueError as e:
        print(f"make sim: {e}", file=sys.stderr)
        return 2
    tests = args.test.split(",") if args.test else None
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    # make exports WAVES=1 from its command line; cocotb's runner would read it and add its own
    # (SystemVerilog) Icarus dump module. --waves is the switch here.
    os.environ.pop("WAVES", None)
    try:
        n, _ = run_bench(args.tb, args.sim, cfg, tests, args.waves, args.seed)
    except RuntimeError as e:
        print(f"FAIL {args.tb} on {args.sim} ({cfg.name}): {e}", file=sys.stderr)
        return 1
    print(f"PASS {args.tb} on {args.sim} ({cfg.name}): {n} cocotb tests")
    if args.waves:
        print(f"waveform: {waveform_path(args.tb, cfg, args.sim)} (gtkwave or surfer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
