#!/usr/bin/env python3
"""Static timing estimate of a generated component over its Yosys netlist (`make timing`).

    python scripts/timing.py [--config pynq_z2] [--target zynqnn_pe_array] [--net typical]
                             [--period 7.0] [--paths 5] [--netlist FILE] [--out build]

Writes build/<config id>/timing_<target>_<net model>.txt and prints one line per clock; exits 1
when a path exceeds the period under the net model, 2 on errors. An estimate (Yosys cell delays,
a fanout net model), not a routed result. The logic lives in zynqnn.timing.
"""

import os
import sys

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

from zynqnn.timing import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
