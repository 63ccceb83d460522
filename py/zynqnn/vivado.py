"""The Vivado build's inputs, derived from :class:`~zynqnn.hw.config.HwConfig`.

The Vivado scripts in ``scripts/vivado/`` hold no sizes, names or addresses of their own: they read
a TCL parameter file that this module writes from the hardware configuration and
:mod:`zynqnn.hw.platform`. A *bundle* is everything a machine with Vivado needs besides the scripts:
``build/<config id>/`` with the generated Verilog, the board constraints and ``params.tcl``.

The scripts are linted without Vivado: ``scripts/vivado/lint/vivado_lint.tcl`` runs them under
``tclsh`` with every Vivado command replaced by a stub that checks its arguments and the order of
the flow (see that file). This is a lint, not a Vivado run.

Command line::

    python -m zynqnn.vivado params --config pynq_z2   # writes the bundle, prints params.tcl's path
    python -m zynqnn.vivado lint --config pynq_z2     # bundle + stubbed run of every script
    python -m zynqnn.vivado ip --config pynq_z2       # bundle + packaged IP, C header, .core

``ip`` (``make ip``) adds to the bundle the accelerator packaged as a Vivado IP (``ip/``: an
IP-XACT ``component.xml`` from :mod:`zynqnn.ipxact` and the top level's Verilog), the C header of
the register map (``zynqnn_regs.h``), a FuseSoC core (``zynqnn.core``) and ``params_ip.tcl``: the
parameters with ``zynqnn(accel_source)`` = ``ip``, so that the block design instantiates the
packaged IP instead of the module reference; it then lints that flow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zynqnn.hw.config import XC7Z020, HwConfig, get_config
from zynqnn.hw.platform import (
    BASE_ADDRESS,
    REG_SPACE_BYTES,
    TOP_NAME,
    VLNV,
    Port,
    top_ports,
)

__all__ = [
    "SCRIPTS_DIR",
    "BOARD_XDC",
    "IO_PLL_MHZ",
    "FclkPlan",
    "fclk_plan",
    "output_name",
    "tcl_params",
    "write_tcl_params",
    "port_shell_verilog",
    "prepare_bundle",
    "LintResult",
    "lint",
    "IP_DIR",
    "fusesoc_core",
    "write_ip_bundle",
]

_ROOT = Path(__file__).resolve().parents[2]
#: The Vivado TCL scripts (a source checkout's ``scripts/vivado``).
SCRIPTS_DIR = _ROOT / "scripts" / "vivado"
#: The Pynq-Z2 constraints, copied into every bundle.
BOARD_XDC = _ROOT / "constraints" / "pynq_z2.xdc"
#: Name of the block design inside the Vivado project (its wrapper is ``<name>_wrapper``).
BD_NAME = "system"

#: The Pynq-Z2's PS IO PLL: 50 MHz PS_CLK x 20. PYNQ keeps each FCLK's PLL source as the boot
#: image set it (IO PLL) and only rewrites the two divisors from the .hwh, so the IO PLL is the
#: source the design must be timed for.
IO_PLL_MHZ = 1000.0
_FCLK_DIVISOR_MAX = 63  # two 6-bit divisors per FCLK


@dataclass(frozen=True)
class FclkPlan:
    """How the PS derives FCLK_CLK0 from its PLL: ``source_mhz / (div0 * div1)``."""

    target_mhz: float
    source_mhz: float
    div0: int
    div1: int

    @property
    def actual_mhz(self) -> float:
        return self.source_mhz / (self.div0 * self.div1)


def fclk_plan(target_mhz: float, source_mhz: float = IO_PLL_MHZ) -> FclkPlan:
    """The divisor pair giving the achievable FCLK frequency closest to ``target_mhz``.

    150 MHz from the 1000 MHz IO PLL is not achievable: the nearest is 1000 / 7 = 142.857 MHz.
    """
    best = None
    for div0 in range(1, _FCLK_DIVISOR_MAX + 1):
        for div1 in range(1, _FCLK_DIVISOR_MAX + 1):
            err = abs(source_mhz / (div0 * div1) - target_mhz)
            key = (round(err, 9), div0 * div1, div0)
            if best is None or key < best[0]:
                best = (key, div0, div1)
    return FclkPlan(float(target_mhz), float(source_mhz), best[1], best[2])


def output_name(cfg: HwConfig) -> str:
    """Basename of the bitstream and its .hwh (``zynqnn_<config id>``)."""
    return f"zynqnn_{cfg.config_id}"


def _tcl_word(value) -> str:
    """One TCL word for ``value``: braced unless it is a plain token."""
    text = str(value)
    if text and all(c.isalnum() or c in "._-:/+" for c in text):
        return text
    if "{" in text or "}" in text or "\\" in text:
        raise ValueError(f"cannot brace-quote {text!r} for TCL")
    return "{" + text + "}"


def _tcl_list(items) -> str:
    return "[list " + " ".join(_tcl_word(i) for i in items) + "]" if items else "[list]"


def _range_word(nbytes: int) -> str:
    """Vivado's address-range notation (``4K``, ``64K``, ``1M``)."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    raise ValueError(f"address range {nbytes} is not a multiple of 1K")


def _clock_port(module: str) -> str:
    # The shell names its clock for Vivado's interface inference; inner components keep
    # Amaranth's default domain name.
    return "aclk" if module == TOP_NAME else "clk"


def _components(cfg: HwConfig) -> list[str]:
    from zynqnn.rtl.gen import components

    return list(components(cfg))


def tcl_params(cfg: HwConfig, xdc_files: list[str] | None = None, *,
               accel_source: str = "module_ref") -> str:
    """The text of ``params.tcl`` for ``cfg`` (deterministic; no machine paths).

    ``accel_source`` is how the block design takes the accelerator: ``module_ref`` (the top
    level's Verilog as a module reference) or ``ip`` (the package of :func:`write_ip_bundle`).
    """
    from zynqnn.ipxact import IP_VLNV

    if accel_source not in ("module_ref", "ip"):
        raise ValueError(f"accel_source {accel_source!r}: one of module_ref, ip")
    if xdc_files is None:
        xdc_files = [BOARD_XDC.name]
    plan = fclk_plan(cfg.clock_mhz)
    ooc = set(_components(cfg)) | {TOP_NAME}
    ooc_targets = " ".join(
        f"{m} {{{m}.v {_clock_port(m)}}}" for m in sorted(ooc)
    )
    ports = " ".join(f"{{{p.name} {p.direction} {p.width}}}" for p in top_ports(cfg))
    name = output_name(cfg)
    lines = [
        f"# Vivado build parameters of hardware config {cfg.name!r} ({cfg.config_id}).",
        "# Generated by zynqnn.vivado.write_tcl_params from HwConfig and zynqnn.hw.platform:",
        "# do not edit; regenerate with `python -m zynqnn.vivado params --config <preset>`.",
        "# Paths are relative to this file's directory (zynqnn(build_dir)).",
        "set ::zynqnn(build_dir) [file dirname [file normalize [info script]]]",
        f"set ::zynqnn(config_name) {_tcl_word(cfg.name)}",
        f"set ::zynqnn(config_id) {cfg.config_id}",
        f"set ::zynqnn(config_hash32) 0x{cfg.config_hash32:08X}",
        f"set ::zynqnn(part) {XC7Z020.part}",
        f"set ::zynqnn(top) {TOP_NAME}",
        f"set ::zynqnn(vlnv) {VLNV}",
        "# How the block design takes the accelerator: module_ref, or ip (the package of"
        " `make ip`).",
        f"set ::zynqnn(accel_source) {accel_source}",
        f"set ::zynqnn(ip_vlnv) {IP_VLNV}",
        f"set ::zynqnn(ip_repo) {IP_DIR}",
        f"set ::zynqnn(bd_name) {BD_NAME}",
        f"set ::zynqnn(clock_mhz) {float(cfg.clock_mhz)!r}",
        "set ::zynqnn(fclk0_source) {IO PLL}",
        f"set ::zynqnn(fclk0_source_mhz) {plan.source_mhz!r}",
        f"set ::zynqnn(fclk0_divisors) {{{plan.div0} {plan.div1}}}",
        f"set ::zynqnn(fclk0_actual_mhz) {plan.actual_mhz:.6f}",
        f"set ::zynqnn(clock_period_ns) {1000.0 / plan.actual_mhz:.3f}",
        f"set ::zynqnn(base_address) 0x{BASE_ADDRESS:08X}",
        f"set ::zynqnn(reg_range) {_range_word(REG_SPACE_BYTES)}",
        f"set ::zynqnn(axi_data_bits) {cfg.axi_data_bits}",
        f"set ::zynqnn(output_name) {name}",
        f"set ::zynqnn(bit_file) {name}.bit",
        f"set ::zynqnn(hwh_file) {name}.hwh",
        "set ::zynqnn(project_dir) vivado",
        "set ::zynqnn(report_dir) reports",
        "set ::zynqnn(ooc_dir) ooc",
        f"set ::zynqnn(verilog_sources) {_tcl_list([f'{TOP_NAME}.v'])}",
        f"set ::zynqnn(xdc_files) {_tcl_list(xdc_files)}",
        "# Every port of the top level (name direction width), from zynqnn.hw.platform.top_ports.",
        f"set ::zynqnn(top_ports) {{{ports}}}",
        "# Out-of-context synthesis targets: module -> {verilog file, clock port}.",
        f"set ::zynqnn(ooc_targets) {{{ooc_targets}}}",
        "",
    ]
    return "\n".join(lines)


def write_tcl_params(cfg: HwConfig, path: str | Path | None = None, *,
                     out_dir: str | Path = "build") -> Path:
    """Write ``params.tcl`` for ``cfg`` (default ``<out_dir>/<config id>/params.tcl``)."""
    path = Path(path) if path is not None else Path(out_dir) / cfg.config_id / "params.tcl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = tcl_params(cfg)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def port_shell_verilog(cfg: HwConfig, module: str = TOP_NAME) -> str:
    """A Verilog module with the top level's ports and no logic.

    Only for linting the Vivado scripts before the real top level is generated: it lets the stub
    check every pin the block design uses against :func:`zynqnn.hw.platform.top_ports`.
    """
    ports: list[Port] = top_ports(cfg)
    decls = []
    for p in ports:
        rng = f"[{p.width - 1}:0] " if p.width > 1 else ""
        decls.append(f"  {p.direction} {rng}{p.name};")
    outputs = [f"  assign {p.name} = {p.width}'d0;" for p in ports if p.direction == "output"]
    return "\n".join([
        "/* Port-only shell of the top level, for linting the Vivado scripts. */",
        f"module {module}({', '.join(p.name for p in ports)});",
        *decls,
        *outputs,
        "endmodule",
        "",
    ])


def top_is_generated(cfg: HwConfig) -> bool:
    """Whether ``zynqnn.rtl.gen`` can elaborate the top level yet."""
    return TOP_NAME in _components(cfg)


def prepare_bundle(cfg: HwConfig, out_dir: str | Path = "build", *,
                   shell_top: bool = False, modules: list[str] | None = None) -> Path:
    """Write ``<out_dir>/<config id>/``: generated Verilog, board XDC and ``params.tcl``.

    With ``shell_top`` the top level is a port-only shell from :func:`port_shell_verilog`: enough
    for the lint, not for a bitstream. Without it, a top level that ``zynqnn.rtl.gen`` cannot
    generate yet is simply missing from the bundle (Vivado stops at ``add_files``). ``modules``
    limits the Verilog written to those components (default: all of them).
    """
    from zynqnn.rtl.gen import write_verilog

    target = Path(out_dir) / cfg.config_id
    target.mkdir(parents=True, exist_ok=True)
    if modules is None:
        write_verilog(cfg, out_dir)
    else:
        for name in modules:
            if not (shell_top and name == TOP_NAME):
                write_verilog(cfg, out_dir, only=name)
    if shell_top:
        (target / f"{TOP_NAME}.v").write_text(port_shell_verilog(cfg))
    shutil.copyfile(BOARD_XDC, target / BOARD_XDC.name)
    write_tcl_params(cfg, target / "params.tcl")
    return target


# -- packaged IP, C header, FuseSoC core ---------------------------------------------------------

#: The packaged IP's directory inside a bundle.
IP_DIR = "ip"


def fusesoc_core(cfg: HwConfig, verilog_files: list[str] | None = None) -> str:
    """A FuseSoC CAPI2 core of the bundle (file names relative to the bundle directory)."""
    if verilog_files is None:
        verilog_files = [f"{TOP_NAME}.v"]
    files = "\n".join(f"      - {f}" for f in verilog_files)
    return f"""CAPI=2:
# FuseSoC core of the zynqnn accelerator, hardware config {cfg.name} ({cfg.config_id}).
# Generated by zynqnn.vivado.fusesoc_core (`make ip`); do not edit.
name: zynqnn:accel:{TOP_NAME}:1.0.0
description: zynqnn CNN accelerator for the Zynq-7000 (Pynq-Z2), config {cfg.config_id}

filesets:
  rtl:
    files:
{files}
    file_type: verilogSource
  constraints:
    files:
      - {BOARD_XDC.name}
    file_type: xdc

targets:
  default: &default
    description: The accelerator's generated top-level Verilog
    filesets: [rtl]
    toplevel: {TOP_NAME}
  lint:
    <<: *default
    description: verilator --lint-only of the top level
    default_tool: verilator
    tools:
      verilator:
        mode: lint-only
        verilator_options: [-Wno-fatal]
  synth:
    <<: *default
    description: Vivado synthesis of the top level alone (the bitstream flow is make bitstream)
    filesets: [rtl, constraints]
    default_tool: vivado
    tools:
      vivado:
        part: {XC7Z020.part}
"""


def write_ip_bundle(cfg: HwConfig, out_dir: str | Path = "build", *,
                    shell_top: bool = False) -> Path:
    """The bundle of :func:`prepare_bundle` plus the packaged IP (``ip/``), ``zynqnn_regs.h``,
    ``zynqnn.core`` and ``params_ip.tcl``; returns the bundle directory.

    ``shell_top`` packages the port-only shell instead of the generated top level (for tests).
    """
    from zynqnn.hw.regs import render_c_header
    from zynqnn.ipxact import write_ip

    target = prepare_bundle(cfg, out_dir, shell_top=shell_top,
                            modules=[TOP_NAME] if shell_top else None)
    write_ip(cfg, target / f"{TOP_NAME}.v", target / IP_DIR)
    for name, text in (("zynqnn_regs.h", render_c_header(cfg)),
                       ("zynqnn.core", fusesoc_core(cfg)),
                       ("params_ip.tcl", tcl_params(cfg, accel_source="ip"))):
        path = target / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return target


# -- the stubbed lint ------------------------------------------------------------------------------

LINT_DRIVER = SCRIPTS_DIR / "lint" / "vivado_lint.tcl"


@dataclass
class LintResult:
    returncode: int
    output: str
    calls: list[str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def lint(script: str | Path, tclargs: list[str | Path], *, setup_slack: float | None = None,
         hold_slack: float | None = None, log: str | Path | None = None,
         tclsh: str = "tclsh") -> LintResult:
    """Run a Vivado script under ``tclsh`` with the recording stubs; return what they saw."""
    if shutil.which(tclsh) is None:
        raise FileNotFoundError(f"{tclsh} not found: install Tcl 8.6 (Debian package `tcl`)")
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(log) if log is not None else Path(tmp) / "calls.log"
        cmd = [tclsh, str(LINT_DRIVER), "-log", str(log_path)]
        if setup_slack is not None:
            cmd += ["-setup-slack", str(setup_slack)]
        if hold_slack is not None:
            cmd += ["-hold-slack", str(hold_slack)]
        cmd += [str(script), *map(str, tclargs)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        calls = log_path.read_text().splitlines() if log_path.exists() else []
    return LintResult(proc.returncode, proc.stdout + proc.stderr, calls)


def lint_all(cfg: HwConfig, bundle: Path) -> list[tuple[str, LintResult]]:
    """Lint the bitstream flow and the out-of-context synthesis of every target of a bundle.

    Each run works on a scratch copy of the bundle: the stubs write placeholder outputs (a
    ``.bit``, reports, a project directory) that must never sit beside real ones.
    """
    runs = [("build_bitstream.tcl", SCRIPTS_DIR / "build_bitstream.tcl", []),
            ("package_ip.tcl", SCRIPTS_DIR / "package_ip.tcl", [])]
    for module in sorted(set(_components(cfg)) | {TOP_NAME}):
        runs.append((f"synth_ooc.tcl {module}", SCRIPTS_DIR / "synth_ooc.tcl", [module]))
    results = []
    for what, script, extra in runs:
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp) / bundle.name
            shutil.copytree(bundle, scratch)
            results.append((what, lint(script, [scratch / "params.tcl", *extra])))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["params", "lint", "ip"],
                    help="params: write the bundle; lint: bundle + stubbed run of the scripts; "
                         "ip: bundle + packaged IP, C header, FuseSoC core, lint of the IP flow")
    ap.add_argument("--config", default="pynq_z2", help="hardware config preset")
    ap.add_argument("--out", default="build", help="output directory")
    args = ap.parse_args(argv)
    cfg = get_config(args.config)
    generated = top_is_generated(cfg)
    if args.command == "ip":
        if not generated:
            print(f"error: {TOP_NAME} is not in zynqnn.rtl.gen.components() yet: nothing to "
                  "package", file=sys.stderr)
            return 1
        bundle = write_ip_bundle(cfg, args.out)
        for name in (f"{IP_DIR}/component.xml", f"{IP_DIR}/src/{TOP_NAME}.v", "zynqnn_regs.h",
                     "zynqnn.core", "params_ip.tcl"):
            print(bundle / name)
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp) / bundle.name
            shutil.copytree(bundle, scratch)
            res = lint(SCRIPTS_DIR / "build_bitstream.tcl", [scratch / "params_ip.tcl"])
        status = "ok" if res.ok else "FAIL"
        print(f"tcl-lint {status:4s} build_bitstream.tcl with the packaged IP "
              f"({len(res.calls)} Vivado commands checked; stubbed, not a Vivado run)")
        if not res.ok:
            print(res.output.rstrip())
            return 1
        return 0
    if args.command == "params":
        bundle = prepare_bundle(cfg, args.out)
        if not generated:
            print(f"warning: {TOP_NAME} is not in zynqnn.rtl.gen.components() yet: the bundle "
                  f"lacks {TOP_NAME}.v and cannot make a bitstream", file=sys.stderr)
        print(bundle / "params.tcl")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if generated:
            bundle = prepare_bundle(cfg, args.out)
        else:
            print(f"note: {TOP_NAME} is not generated yet: linting against a port-only shell "
                  f"made from zynqnn.hw.platform.top_ports", file=sys.stderr)
            bundle = prepare_bundle(cfg, tmp, shell_top=True)
        failed = 0
        for what, res in lint_all(cfg, bundle):
            status = "ok" if res.ok else "FAIL"
            print(f"tcl-lint {status:4s} {what} ({len(res.calls)} Vivado commands checked)")
            if not res.ok:
                failed += 1
                print(res.output.rstrip())
        print("tcl-lint: stubbed TCL lint (tclsh), not a Vivado run")
        return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    sys.exit(main())
