"""Mutation check of the DDR window: does the short suite catch a broken window check?

    python scripts/mutants.py [--sim icarus] [--only NAME[,NAME]] [--list]

Each mutant is one textual change to the command processor (``rtl/cmdproc.py``) that breaks
the window check in a way a careless edit could (issue 21): the extent computed modulo 2^32,
the last line's bytes left out of the extent, the check against WINDOW_BASE removed, the limit
compare one beat late. The mutant is compiled into the process as ``zynqnn.rtl.cmdproc`` (the
file on disk is not touched), the SoC top (tiny config, test engine) is elaborated from it in
its own build directory, and the window tests of ``make test`` run on it
(``zynqnn.sim.tb_soc``: window_violations, corrupted_programs with the short suite's count). A
mutant is *killed* when a test fails; the script prints one line per mutant and exits 1 if any
survived. The unmutated design runs first and must pass.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "rtl" / "cmdproc.py"

#: name -> (what it breaks, text in rtl/cmdproc.py, replacement). Each text occurs once.
MUTANTS = {
    "extent_mod_2_32": ("the transfer's extent wraps modulo 2^32",
                        "span_end.eq(line_end + rows)", "span_end.eq((line_end + rows)[:32])"),
    "last_line_dropped": ("the extent leaves out the last line's bytes",
                          "line_end.eq(ls.ddr_addr + (lbeats_q << bb_log))",
                          "line_end.eq(ls.ddr_addr)"),
    "base_check_removed": ("no check against WINDOW_BASE",
                           "below.eq(ls.ddr_addr < self.window_base)", "below.eq(0)"),
    "limit_one_beat_late": ("a transfer may end one beat past WINDOW_LIMIT",
                            "above.eq(span_end > self.window_limit)",
                            "above.eq(span_end > self.window_limit + (1 << bb_log))"),
}

TESTS = ["window_violations", "corrupted_programs"]

_CHILD = r"""
import importlib.util, sys
from pathlib import Path
src_text, build = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
import zynqnn.rtl  # the package; its cmdproc module is replaced before anything imports it
spec = importlib.util.spec_from_loader("zynqnn.rtl.cmdproc", loader=None,
                                       origin=sys.argv[3])
mod = importlib.util.module_from_spec(spec)
mod.__file__ = sys.argv[3]
sys.modules["zynqnn.rtl.cmdproc"] = mod
exec(compile(src_text, sys.argv[3], "exec"), mod.__dict__)
from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.rtl.top import Top
from zynqnn.sim.runner import run
from zynqnn.sim.test_engine import TestEngine
cfg = get_config("tiny")
try:
    run(lambda: Top(cfg, TestEngine(cfg)), TOP_NAME, "zynqnn.sim.tb_soc", sys.argv[4], cfg,
        testcase=sys.argv[5].split(","), build_root=build)
except RuntimeError as e:
    print("FAILED:", str(e).splitlines()[0] if str(e) else "", flush=True)
    sys.exit(3)
sys.exit(0)
"""


def run_one(name: str, text: str, sim: str, work: Path) -> tuple[bool, float, str]:
    """(tests passed, seconds, last lines of output) of the design ``text`` as cmdproc."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "cmdproc.py"
    src.write_text(text)
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(work / "build"),
                        str(SOURCE), sim, ",".join(TESTS)], capture_output=True, text=True,
                       env={**os.environ, "ZYNQNN_PROGRESS": "0"})
    tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-3:])
    if p.returncode not in (0, 3):
        raise RuntimeError(f"{name}: the run itself broke (exit {p.returncode}):\n{tail}")
    return p.returncode == 0, time.monotonic() - start, tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", default="icarus", choices=("icarus", "verilator"))
    ap.add_argument("--only", default=None, help="comma-separated mutant names")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "mutants")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, old, new) in MUTANTS.items():
            print(f"{name:22s} {what}: {old!r} -> {new!r}")
        return 0
    names = list(MUTANTS) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        ap.error(f"unknown mutants {unknown}; --list shows them")
    original = SOURCE.read_text()
    ok, secs, tail = run_one("original", original, args.sim, args.work / "original")
    print(f"{'original':22s} {'passes' if ok else 'FAILS'} ({secs:.0f} s)", flush=True)
    if not ok:
        print(tail)
        return 2
    survived = []
    for name in names:
        what, old, new = MUTANTS[name]
        if original.count(old) != 1:
            print(f"{name:22s} cannot apply: {old!r} occurs {original.count(old)} times in "
                  "rtl/cmdproc.py (update the mutant)")
            survived.append(name)
            continue
        passed, secs, tail = run_one(name, original.replace(old, new), args.sim,
                                     args.work / name)
        verdict = "SURVIVED" if passed else "killed"
        print(f"{name:22s} {verdict} ({secs:.0f} s): {what}", flush=True)
        if passed:
            survived.append(name)
        else:
            why = [ln for ln in tail.splitlines() if ln.startswith("FAILED")]
            print("    " + (why or tail.splitlines() or [""])[-1])
    print(f"{len(names) - len(survived)} of {len(names)} mutants killed by "
          f"{', '.join(TESTS)} ({args.sim})")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
