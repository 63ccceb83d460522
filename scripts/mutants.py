"""Mutation check of the DDR window: does the short suite catch a broken window check?

    python scripts/mutants.py [--sim icarus] [--only NAME[,NAME]] [--list]

Each mutant is a textual change to the command processor (``rtl/cmdproc.py``) or the DMA
(``rtl/dma.py``) that breaks the window check in a way a careless edit could (issue 21): the
extent computed modulo 2^32, the last line's bytes left out of the extent, the check against
WINDOW_BASE removed, the limit compare one beat late, the dispatcher's check removed, and both
the dispatcher's check and the ports' guard removed. The mutated modules are compiled into the
process as ``zynqnn.rtl.cmdproc`` / ``zynqnn.rtl.dma`` (the files on disk are not touched), the
SoC top (tiny config, test engine) is elaborated from them in its own build directory, and the
window tests of ``make test`` run on it (``zynqnn.sim.tb_soc``: window_violations,
window_edges, corrupted_programs with the short suite's count). A mutant is *killed* when a
test fails; the script prints one line per mutant and exits 1 if any survived. The unmutated
design runs first and must pass.

The ports' guard alone cannot be mutated into a failure while the dispatcher is correct (it is
unreachable then). So the mutant without the dispatcher's check also runs window_edges with
``TB_PORT_GUARD=1``, which must *pass*: every transfer the dispatcher would have refused is
refused by a port with ``PORT_WINDOW``, at the same index, nothing outside the window moves;
and the mutant without both must be killed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"cmdproc": ROOT / "rtl" / "cmdproc.py", "dma": ROOT / "rtl" / "dma.py"}

_NO_DISPATCH_CHECK = ("cmdproc", "with m.If(bad_sram | (~no_lines_q & (below | above))):",
                      "with m.If(bad_sram):")
_NO_PORT_GUARD = ("dma", "ok.eq(~below & (end <= self.window_limit)),", "ok.eq(1),")

#: name -> (what it breaks, [(module, text, replacement)]). Each text occurs once.
MUTANTS = {
    "extent_mod_2_32": ("the transfer's extent wraps modulo 2^32",
                        [("cmdproc", "span_end.eq(line_end + rows)",
                          "span_end.eq((line_end + rows)[:32])")]),
    "last_line_dropped": ("the extent leaves out the last line's bytes",
                          [("cmdproc", "line_end.eq(ls.ddr_addr + (lbeats_q << bb_log))",
                            "line_end.eq(ls.ddr_addr)")]),
    "base_check_removed": ("no check against WINDOW_BASE",
                           [("cmdproc", "below.eq(ls.ddr_addr < self.window_base)",
                             "below.eq(0)")]),
    "limit_one_beat_late": ("a transfer may end one beat past WINDOW_LIMIT",
                            [("cmdproc", "above.eq(span_end > self.window_limit)",
                              "above.eq(span_end > self.window_limit + (1 << bb_log))")]),
    "dispatch_check_removed": ("the dispatcher checks no transfer against the window (the "
                               "ports' guard must refuse them: PORT_WINDOW)",
                               [_NO_DISPATCH_CHECK]),
    "port_guard_removed": ("no dispatcher check and no port guard",
                           [_NO_DISPATCH_CHECK, _NO_PORT_GUARD]),
}
#: Mutants on which the guard test must pass (the guard holds).
GUARDED = {"dispatch_check_removed"}

TESTS = ["window_violations", "window_edges", "corrupted_programs"]
GUARD_TESTS = ["window_edges"]

_CHILD = r"""
import importlib.util, sys
from pathlib import Path
build = Path(sys.argv[1])
import zynqnn.rtl  # the package; its modules are replaced before anything imports them
for name, src, origin in [a.split("=", 2) for a in sys.argv[5:]]:   # dma before cmdproc
    spec = importlib.util.spec_from_loader(f"zynqnn.rtl.{name}", loader=None, origin=origin)
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = origin
    sys.modules[f"zynqnn.rtl.{name}"] = mod
    exec(compile(Path(src).read_text(), origin, "exec"), mod.__dict__)
from zynqnn.hw.config import get_config
from zynqnn.hw.platform import TOP_NAME
from zynqnn.rtl.top import Top
from zynqnn.sim.runner import run
from zynqnn.sim.test_engine import TestEngine
cfg = get_config("tiny")
try:
    run(lambda: Top(cfg, TestEngine(cfg)), TOP_NAME, "zynqnn.sim.tb_soc", sys.argv[2], cfg,
        testcase=sys.argv[3].split(","), build_root=build,
        extra_env={"TB_PORT_GUARD": sys.argv[4]})
except RuntimeError as e:
    print("FAILED:", str(e).splitlines()[0] if str(e) else "", flush=True)
    sys.exit(3)
sys.exit(0)
"""


def run_one(name: str, texts: dict, sim: str, work: Path, tests=TESTS,
            guard=False) -> tuple[bool, float, str]:
    """(tests passed, seconds, last lines of output) of the design with ``texts`` (module ->
    source) as its modules."""
    work.mkdir(parents=True, exist_ok=True)
    mods = []
    for mod in ("dma", "cmdproc"):
        src = work / f"{mod}.py"
        src.write_text(texts[mod])
        mods.append(f"{mod}={src}={SOURCES[mod]}")
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _CHILD, str(work / "build"), sim, ",".join(tests),
                        "1" if guard else "0", *mods], capture_output=True, text=True,
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
        for name, (what, edits) in MUTANTS.items():
            print(f"{name:24s} {what}: " + "; ".join(f"{mod}: {old!r} -> {new!r}"
                                                      for mod, old, new in edits))
        return 0
    names = list(MUTANTS) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        ap.error(f"unknown mutants {unknown}; --list shows them")
    original = {mod: path.read_text() for mod, path in SOURCES.items()}
    ok, secs, tail = run_one("original", original, args.sim, args.work / "original")
    print(f"{'original':24s} {'passes' if ok else 'FAILS'} ({secs:.0f} s)", flush=True)
    if not ok:
        print(tail)
        return 2
    survived = []
    for name in names:
        what, edits = MUTANTS[name]
        texts = dict(original)
        bad = [(mod, old) for mod, old, _ in edits if original[mod].count(old) != 1]
        if bad:
            for mod, old in bad:
                print(f"{name:24s} cannot apply: {old!r} occurs {original[mod].count(old)} "
                      f"times in rtl/{mod}.py (update the mutant)")
            survived.append(name)
            continue
        for mod, old, new in edits:
            texts[mod] = texts[mod].replace(old, new)
        passed, secs, tail = run_one(name, texts, args.sim, args.work / name)
        verdict = "SURVIVED" if passed else "killed"
        print(f"{name:24s} {verdict} ({secs:.0f} s): {what}", flush=True)
        if passed:
            survived.append(name)
        else:
            why = [ln for ln in tail.splitlines() if ln.startswith("FAILED")]
            print("    " + (why or tail.splitlines() or [""])[-1])
        if name in GUARDED:
            held, secs, tail = run_one(name, texts, args.sim, args.work / name,
                                       tests=GUARD_TESTS, guard=True)
            print(f"{'':24s} guard {'holds' if held else 'FAILED'} ({secs:.0f} s): "
                  f"{', '.join(GUARD_TESTS)} with TB_PORT_GUARD=1", flush=True)
            if not held:
                print("    " + (tail.splitlines() or [""])[-1])
                survived.append(f"{name} (guard)")
    print(f"{len(names) - len([s for s in survived if '(' not in s])} of {len(names)} mutants "
          f"killed by {', '.join(TESTS)} ({args.sim})")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
