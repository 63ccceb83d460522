"""Model coverage: real architectures x quantization flows, imported, compiled for the
accelerator and run bit-exact on its golden model (docs/coverage.md).

    python scripts/coverage.py [--only NAME[,NAME]] [--flows FLOW[,FLOW]] [--size N]
                               [--samples N] [--details] [--markdown PATH] [--list]

Prints one line per cell as it finishes, then the table (architecture x flow: "exact",
"differs (k of n)", "refused at import: ...", "refused at compile: <n> nodes: ...", "crash ...")
with each cell's seconds, and the counts. ``--markdown PATH`` also writes the table as markdown.
Exits 1 when a cell crashed (an unexpected exception: a bug), else 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _vnni() -> str:
    """Whether this CPU has AVX-512 VNNI (ONNX Runtime's and fbgemm's u8s8 kernels saturate in
    int16 pairs without it: the framework's own result then depends on the CPU)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "(VNNI unknown)"
    return "with AVX-512 VNNI" if "avx512_vnni" in flags else "without AVX-512 VNNI"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", metavar="NAME[,NAME]", help="architectures to run (default: all)")
    ap.add_argument("--flows", metavar="FLOW[,FLOW]", help="flows to run (default: all)")
    ap.add_argument("--size", type=int, default=None,
                    help="input size for every architecture (rounded up to the multiple a "
                         "detector needs; default: each architecture's own, 32 or 64)")
    ap.add_argument("--config", default="pynq_z2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1,
                    help="images compared per cell (default 1; calibration takes 4 others)")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table as markdown")
    ap.add_argument("--details", action="store_true",
                    help="print the full message of every cell that is not exact")
    ap.add_argument("--list", action="store_true", help="list architectures and flows, exit")
    args = ap.parse_args(argv)

    os.environ.setdefault("ZYNQNN_PROGRESS", "0")   # no compile progress lines between cells
    import torch

    from zynqnn.zoo.coverage import ARCHS, FLOWS, arch_size, build_table
    from zynqnn.zoo.quant import quiet_torch_ao

    if args.list:
        for a in ARCHS.values():
            print(f"{a.name:20s} {a.title} ({arch_size(a, args.size)}x{arch_size(a, args.size)})")
        for f, what in FLOWS.items():
            print(f"{f:20s} {what}")
        return 0
    torch.set_num_threads(1)   # small models; the machine's cores are shared

    def progress(cell) -> None:
        print(f"{cell.arch:24s} {cell.flow:11s} {cell.seconds:6.1f} s  {cell.text}", flush=True)

    t0 = time.time()
    try:
        with quiet_torch_ao():
            table = build_table(_names(args.only), _names(args.flows), args.size,
                                seed=args.seed, samples=args.samples, config=args.config,
                                on_cell=progress)
    except KeyError as e:
        ap.error(str(e.args[0]))
    total = time.time() - t0
    print()
    print(table.text())
    print(f"{total:.0f} s in all")
    shown = [c for c in table.cells.values() if c.status != "exact"] if args.details else \
        table.problems()
    for c in shown:
        print(f"\n{c.status}: {c.arch} x {c.flow}: {c.detail}")
    if args.markdown:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, check=True,
                                    cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
        md = (f"Measured {date.today().isoformat()} at commit `{commit}`, config "
              f"`{args.config}`, on a CPU {_vnni()}, {total / 60:.1f} min for the table."
              f"\n\n{table.markdown()}\n")
        Path(args.markdown).write_text(md)
        print(f"wrote {args.markdown}")
    return 1 if table.counts().get("crash") else 0


if __name__ == "__main__":
    sys.exit(main())
