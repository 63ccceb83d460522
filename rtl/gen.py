"""Elaborate the accelerator's components to Verilog.

``python -m zynqnn.rtl.gen --config pynq_z2 --out build`` writes one file per component under
``build/<config id>/``. Names are prefixed ``zynqnn_`` and carry no source paths, so the files are
reproducible and safe to ship.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from amaranth.back import verilog

from zynqnn.hw.config import HwConfig, get_config

# An old Yosys on PATH must never be picked over the pinned, bundled one.
os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")


def components(cfg: HwConfig) -> dict:
    """The top-level components of a build, by Verilog module name."""
    from .accumulate import Accumulator
    from .decode import CommandDecode
    from .depthwise import DepthwiseFIR
    from .eltwise import EltwiseAdd
    from .engine import IBUF_READ_LATENCY, Engine
    from .feeder import WeightFeeder
    from .im2col import WindowWalker
    from .lut import EltwiseLUT
    from .pe_array import PEArray
    from .postproc import PostProc
    from .steprequant import StepRequant
    from .top import Top

    if cfg.dsp_clock_ratio == 2:  # issue 25: the double-pumped array alone, not in the engine yet
        from .pe_array2x import PEArray2x
        return {"zynqnn_pe_array_2x": lambda: PEArray2x(cfg)}
    parts = {
        "zynqnn_pe_array": lambda: PEArray(cfg),
        # The engine's post-processing lanes (requantization, clamp, activation).
        "zynqnn_postproc": lambda: PostProc(cfg),
        # The engine's residual-add lanes.
        "zynqnn_eltwise": lambda: EltwiseAdd(cfg),
        # The engine's table-lookup lanes (ELTWISE with lut: unary activations).
        "zynqnn_lut": lambda: EltwiseLUT(cfg),
        # cols step lanes on their own (the engine's depthwise post stage).
        "zynqnn_step_requant": lambda: StepRequant(cfg),
        # The engine's MAC-stage units: command decode and checks, the weight feeder, the
        # activation feeder (window walker over IBUF), the accumulator into ABUF.
        "zynqnn_decode": lambda: CommandDecode(cfg),
        "zynqnn_weight_feeder": lambda: WeightFeeder(cfg),
        "zynqnn_window_walker": lambda: WindowWalker(cfg, IBUF_READ_LATENCY),
        "zynqnn_accumulator": lambda: Accumulator(cfg),
    }
    if cfg.dw_kernel == 3:
        # The depthwise window adder over the array's per-tap products.
        parts["zynqnn_depthwise"] = lambda: DepthwiseFIR(cfg)
    return {
        **parts,
        # The SoC shell alone (registers, command processor, DMA; no compute unit).
        "zynqnn_shell": lambda: Top(cfg),
        "zynqnn_engine": lambda: Engine(cfg),
        # The accelerator (zynqnn.hw.platform.TOP_NAME): SoC shell with the compute engine.
        "zynqnn_top": lambda: Top(cfg, Engine(cfg)),
    }


def to_verilog(component, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False)


def write_verilog(cfg: HwConfig, out_dir: str | Path, only: str | None = None) -> list[Path]:
    """Write the build's Verilog under ``out_dir/<config id>/``; return the files written."""
    target = Path(out_dir) / cfg.config_id
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in components(cfg).items():
        if only is not None and name != only:
            continue
        path = target / f"{name}.v"
        text = to_verilog(make(), name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2", help="hardware config preset")
    ap.add_argument("--out", default="build", help="output directory")
    args = ap.parse_args(argv)
    for path in write_verilog(get_config(args.config), args.out):
        print(path)


if __name__ == "__main__":
    main()
