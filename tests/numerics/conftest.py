"""Shared setup of the numerics tests: deterministic threads, warnings, count summary.

Every test that compares outputs calls ``count(record_property, scheme, what, n, mismatches)``
(from ``numerics_helpers``); the terminal summary adds the counts up per scheme and check so
that the totals can be quoted (they also travel through pytest-xdist).
"""

from __future__ import annotations

import warnings
from collections import defaultdict

warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")

try:  # one intra-op thread: elementwise kernels split work per thread, keep that fixed
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def pytest_terminal_summary(terminalreporter):
    totals = defaultdict(lambda: [0, 0])
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", "call") != "call":
                continue
            for name, value in getattr(rep, "user_properties", []):
                if name == "numerics_count":
                    scheme, what, n, bad = value
                    totals[(scheme, what)][0] += n
                    totals[(scheme, what)][1] += bad
    if not totals:
        return
    tr = terminalreporter
    tr.write_sep("-", "numerics: outputs compared (mismatches)")
    for (scheme, what), (n, bad) in sorted(totals.items()):
        tr.write_line(f"{scheme:24s} {what:44s} {n:>11,d} ({bad})")


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:.*quantized tensor creation functions")
    config.addinivalue_line("filterwarnings", "ignore:.*torch.ao.quantization:DeprecationWarning")
