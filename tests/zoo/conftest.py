"""Fixtures for the model-zoo tests: a private weight cache, one digits training per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from zynqnn.zoo import digits
from zynqnn.zoo.quant import TORCH_AO_NOISE

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """torch.ao warns on every use that it is deprecated; keep that out of the zoo test report."""
    for item in items:
        if _HERE in Path(item.path).parents:
            for message in TORCH_AO_NOISE:
                item.add_marker(pytest.mark.filterwarnings(f"ignore:{message}"))


@pytest.fixture(scope="session", autouse=True)
def zoo_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point ZYNQNN_CACHE at a temporary directory shared by all xdist workers of this run."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's common temp dir
    cache = base / "zynqnn-cache"
    cache.mkdir(exist_ok=True)
    old = os.environ.get("ZYNQNN_CACHE")
    os.environ["ZYNQNN_CACHE"] = str(cache)
    # The models are small at test sizes: one intra-op thread is fastest, and a multi-threaded
    # torch slows down many-fold as soon as another process (an xdist worker) holds a core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield cache
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("ZYNQNN_CACHE", None)
    else:
        os.environ["ZYNQNN_CACHE"] = old


@pytest.fixture(scope="session")
def digits_data():
    return digits.load_data()


@pytest.fixture(scope="session")
def digits_model(zoo_cache: Path) -> torch.nn.Module:
    """The default trained digits model; trained at most once per run across xdist workers."""
    with FileLock(str(zoo_cache / "digits.lock")):
        return digits.pretrained()
