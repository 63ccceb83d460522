"""Fixtures of the front-end tests: one torch thread, a shared weight cache, count summary.

Tests that compare outputs call ``frontend_helpers.count(record_property, case, what, n, bad)``;
the terminal summary adds the counts up (they travel through pytest-xdist), and the digits
accuracies recorded with ``record_property("frontend_accuracy", ...)`` are listed too.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from zynqnn.zoo import digits
from zynqnn.zoo.quant import TORCH_AO_NOISE

_HERE = Path(__file__).parent
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.path).parents:
            for message in TORCH_AO_NOISE:
                item.add_marker(pytest.mark.filterwarnings(f"ignore:{message}"))
            item.add_marker(pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))


@pytest.fixture(scope="session", autouse=True)
def frontend_env(tmp_path_factory: pytest.TempPathFactory):
    """One intra-op torch thread (PyTorch's element-wise kernels split work per thread, and
    xdist workers share 2 cores) and a weight cache shared by all workers of the run."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    cache = base / "zynqnn-cache"
    cache.mkdir(exist_ok=True)
    old = os.environ.get("ZYNQNN_CACHE")
    os.environ["ZYNQNN_CACHE"] = str(cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = torch.backends.quantized.engine
    yield cache
    torch.backends.quantized.engine = engine
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("ZYNQNN_CACHE", None)
    else:
        os.environ["ZYNQNN_CACHE"] = old


@pytest.fixture(autouse=True)
def _restore_engine():
    """Tests here select quantized engines; leave the process's engine as it was (other test
    modules on the same xdist worker rely on the default)."""
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine


@pytest.fixture(scope="session")
def digits_data():
    return digits.load_data()


@pytest.fixture(scope="session")
def digits_model(frontend_env: Path) -> torch.nn.Module:
    """The trained digits model, trained at most once per run (shared with the zoo tests)."""
    with FileLock(str(frontend_env / "digits.lock")):
        return digits.pretrained()


def pytest_terminal_summary(terminalreporter):
    totals = defaultdict(lambda: [0, 0])
    accs = {}
    for key in ("passed", "failed"):
        for rep in terminalreporter.stats.get(key, []):
            if getattr(rep, "when", "call") != "call":
                continue
            for name, value in getattr(rep, "user_properties", []):
                if name == "frontend_count":
                    case, what, n, bad = value
                    totals[(case, what)][0] += n
                    totals[(case, what)][1] += bad
                elif name == "frontend_accuracy":
                    accs[value[0]] = value[1]
    tr = terminalreporter
    if totals:
        tr.write_sep("-", "front end: output values compared with the framework (mismatches)")
        for (case, what), (n, bad) in sorted(totals.items()):
            tr.write_line(f"{case:34s} {what:40s} {n:>10,d} ({bad})")
    if accs:
        tr.write_sep("-", "digits CNN, held-out accuracy through the IR (golden model)")
        for label, acc in accs.items():
            tr.write_line(f"{label:40s} {acc:6.2f} %")
