#!/usr/bin/env python3
"""Yosys resource estimate of a generated component against the xc7z020 budget (`make synth`).

    python scripts/synth.py [--config pynq_z2] [--target zynqnn_pe_array] [--out build]

Writes build/<config id>/resources.txt and resources.json; exits 1 when the estimate does not
fit the chip (DSP48E1 > 220, BRAM36 > 140, LUT > 53,200, ...), 2 on errors. The logic lives in
zynqnn.synth.
"""

import os
import sys

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

from zynqnn.synth import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
