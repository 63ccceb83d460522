"""``verilator --lint-only -Wall`` on the generated Verilog of a build.

Every waived warning class is listed with the reason it is expected in Amaranth's output; any
other warning fails the lint.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

from zynqnn.hw.config import get_config
from zynqnn.rtl.gen import write_verilog
from zynqnn.sim.runner import setup_verilator_env

#: Warning classes Amaranth's generated Verilog raises by construction.
LINT_WAIVERS = {
    # Amaranth sizes every expression by its own (Python-level) rules and emits the operands at
    # their natural width; Verilog's context-determined extension gives the same values (the
    # cocotb tests prove it bit for bit on both simulators).
    "WIDTHEXPAND": "operand widths follow Amaranth's expression rules",
    "WIDTHTRUNC": "assignments truncate to the declared register width on purpose",
    # Stream FIFOs expose level/ready outputs and structs have fields a block does not read.
    "UNUSEDSIGNAL": "unused FIFO status outputs and unread bits of flattened structs",
    # Amaranth declares registers with their power-up value (`reg x = init;`), which the FPGA
    # loads with the bitstream, and then assigns them in processes.
    "PROCASSINIT": "register power-up values are intended (FPGA init)",
    # An FSM's state register is wider than its state count; Amaranth assigns every output a
    # default before the `case`, so unreachable encodings keep the defaults.
    "CASEINCOMPLETE": "FSM cases list the reachable states; outputs have defaults",
    # A component's submodules are emitted into the same file as the component.
    "DECLFILENAME": "one file per top-level component, submodules inside it",
}


def lint_file(path, top: str) -> tuple[int, str]:
    cmd = ["verilator", "--lint-only", "-Wall", "--top-module", top]
    cmd += [f"-Wno-{w}" for w in LINT_WAIVERS]
    cmd.append(str(path))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pynq_z2")
    ap.add_argument("--out", default=None, help="directory for the Verilog (default: a temp dir)")
    args = ap.parse_args(argv)
    setup_verilator_env()
    cfg = get_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        failed = 0
        for path in write_verilog(cfg, args.out or tmp):
            rc, out = lint_file(path, path.stem)
            status = "ok" if rc == 0 and "%Warning" not in out else "FAILED"
            print(f"verilator --lint-only -Wall {path.name}: {status}")
            if status != "ok":
                print(out)
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
