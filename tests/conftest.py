"""Suite-wide pytest hooks and fixtures."""

import os

import pytest

#: Test files whose tests build or run simulators, longest first (CPU seconds on a 2-core
#: machine: the workers' rusage). Under `pytest -n 2 --dist worksteal` the first half of the
#: sorted items starts on one worker and the other worker steals from the end of its queue, so
#: no long simulation begins while the other worker has nothing left to run.
LONG_FIRST = (
    "test_system.py",
    "test_rtl_engine.py",
    "test_soc.py",
    "test_rtl_postproc.py",
    "test_packaging.py",
    "test_program_runner.py",
    # shares run_program's tiny build and its lock with test_system and test_program_runner:
    # kept on their worker, so that neither waits on the other's build
    "test_lut_system.py",
    "test_pynq_interrupt.py",
    "test_cli_rough_edges.py",
    "test_make_sim.py",
    "test_rtl_slice.py",
    "test_synth_estimate.py",
    "test_vivado_lint.py",
    "test_rtl_lut.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: ties keep order


@pytest.fixture
def quick_cxx(monkeypatch):
    """Compile the Verilator models without C++ optimization, for simulations that are short
    beside their build: wide pipelines compile several times faster at -O0 (the 12 x 12
    depthwise engine: 35 s instead of 64 s) and simulate about five times slower."""
    flags = os.environ.get("MAKEFLAGS", "")
    monkeypatch.setenv("MAKEFLAGS", f"{flags} OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0".strip())


@pytest.fixture
def torch_one_thread():
    """One torch thread (PyTorch splits element-wise work per thread) and the quantized engine
    restored after the test. Modules that compare with torch.ao's kernels use it for every test:
    ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = engine
