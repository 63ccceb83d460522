"""A small CNN for scikit-learn's bundled 8x8 handwritten digits, with real training data.

The data (1797 images, 10 classes, pixel values 0..16) ships inside scikit-learn; nothing is
downloaded. Images are scaled to 0..1 and split 75/25, stratified and seeded.

Network (input ``N x 1 x 8 x 8``)::

    conv3x3 1->16 pad 1 + ReLU      8x8
    conv3x3 16->32 pad 1 + ReLU     8x8
    maxpool 2x2                     4x4
    conv3x3 32->32 pad 0 + ReLU     2x2
    flatten (C, H, W order)         128
    linear 128->10

:func:`pretrained` trains once and caches the state dict under ``$ZYNQNN_CACHE`` (default
``~/.cache/zynqnn``); a missing, stale or unreadable cache file is replaced by retraining.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .quant import quiet_torch_ao, set_engine

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_EPOCHS",
    "DigitsCNN",
    "DigitsCNNEager",
    "accuracy",
    "cache_dir",
    "cache_path",
    "digits_cnn",
    "load_data",
    "pretrained",
    "shared_cache",
    "quantize_eager",
    "train",
]

#: Bump when the network, the data preparation or the training recipe changes.
CACHE_VERSION = 1
DEFAULT_EPOCHS = 25
_BATCH = 128
_LR = 1e-2


class DigitsCNN(nn.Module):
    """The float digits network (FX-quantizable as is)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(32 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.pool(self.relu2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        return self.fc(torch.flatten(x, 1))


class DigitsCNNEager(DigitsCNN):
    """The same network for torch.ao eager mode: QuantStub in, DeQuantStub out.

    Its state dict is the float model's (the stubs hold no state), so
    ``DigitsCNNEager().load_state_dict(float_model.state_dict())`` works.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.quant = torch.ao.quantization.QuantStub()
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(super().forward(self.quant(x)))

    #: Conv + ReLU pairs fused by :func:`torch.ao.quantization.fuse_modules`.
    FUSE = (["conv1", "relu1"], ["conv2", "relu2"], ["conv3", "relu3"])


def digits_cnn(num_classes: int = 10) -> DigitsCNN:
    """The digits CNN with fresh (torch default) random weights."""
    return DigitsCNN(num_classes)


@functools.lru_cache(maxsize=8)
def _split(seed: int, test_size: float) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = data.target.astype(np.int64)
    parts = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    x_tr, x_te, y_tr, y_te = (np.ascontiguousarray(p) for p in parts)
    for p in (x_tr, y_tr, x_te, y_te):
        p.setflags(write=False)
    return x_tr, y_tr, x_te, y_te


def load_data(
    seed: int = 0, test_size: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: float32 ``N x 1 x 8 x 8`` in 0..1, int64 labels.

    The split is stratified and fixed by ``seed`` (default: 1347 train / 450 test). Each call
    returns fresh tensors.
    """
    return tuple(torch.from_numpy(p.copy()) for p in _split(seed, test_size))  # type: ignore[return-value]


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train(
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    data: tuple[torch.Tensor, ...] | None = None,
) -> DigitsCNN:
    """Train a fresh :class:`DigitsCNN` deterministically on one CPU thread.

    ``data`` defaults to the fixed split of :func:`load_data` (its first two items are used);
    ``seed`` picks the initial weights and the batch order, not the split.
    Adam (LR 0.01, cosine-decayed to 0), batch 128. Returns the model in eval mode.
    """
    x_tr, y_tr = (data if data is not None else load_data())[:2]
    gen = torch.Generator().manual_seed(seed)
    with _single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=_LR)
        steps = epochs * ((len(x_tr) + _BATCH - 1) // _BATCH)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            for idx in torch.split(torch.randperm(len(x_tr), generator=gen), _BATCH):
                opt.zero_grad()
                loss_fn(model(x_tr[idx]), y_tr[idx]).backward()
                opt.step()
                sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent (float or quantized model)."""
    model.eval()
    correct = 0
    for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size), strict=True):
        correct += int((model(xb).argmax(1) == yb).sum())
    return 100.0 * correct / len(y)


def cache_dir() -> Path:
    """``$ZYNQNN_CACHE`` if set, else ``~/.cache/zynqnn``."""
    env = os.environ.get("ZYNQNN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "zynqnn"


def cache_path(epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> Path:
    """Where :func:`pretrained` keeps the weights for this training configuration."""
    return cache_dir() / f"digits_cnn-v{CACHE_VERSION}-e{epochs}-s{seed}.pt"


def _meta(epochs: int, seed: int) -> dict[str, int]:
    return {"version": CACHE_VERSION, "epochs": epochs, "seed": seed}


def _load_cached(path: Path, epochs: int, seed: int) -> DigitsCNN | None:
    """The cached model, or None if the file is missing, unreadable, stale or inconsistent."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("meta") != _meta(epochs, seed):
            return None
        state = blob["state_dict"]
        model = DigitsCNN()
        reference = model.state_dict()
        if set(state) != set(reference) or any(
            state[k].shape != reference[k].shape or not torch.isfinite(state[k]).all()
            for k in reference
        ):
            return None
        model.load_state_dict(state)
    except Exception:  # any unreadable/corrupt file means "retrain"
        return None
    return model.eval()


def _save(model: nn.Module, path: Path, epochs: int, seed: int) -> None:
    """Write atomically (temp file + rename) so concurrent readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"meta": _meta(epochs, seed), "state_dict": model.state_dict()}, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def shared_cache(cache: Path) -> Iterator[nn.Module]:
    """Use ``cache`` as ``$ZYNQNN_CACHE`` inside the block and yield the pretrained model.

    Parallel processes (pytest-xdist workers) pointing at one folder train once: the first takes
    a file lock, the others wait and load its weights. ``$ZYNQNN_CACHE`` and torch's quantized
    engine are restored on exit.
    """
    from filelock import FileLock

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("ZYNQNN_CACHE")
    engine = torch.backends.quantized.engine
    os.environ["ZYNQNN_CACHE"] = str(cache)
    try:
        with FileLock(str(cache / "digits.lock")):
            model = pretrained()
        yield model
    finally:
        torch.backends.quantized.engine = engine
        if old is None:
            os.environ.pop("ZYNQNN_CACHE", None)
        else:
            os.environ["ZYNQNN_CACHE"] = old


def pretrained(epochs: int = DEFAULT_EPOCHS, seed: int = 0, retrain: bool = False) -> DigitsCNN:
    """The trained digits model (eval mode), from the cache or trained and cached on a miss."""
    path = cache_path(epochs, seed)
    if not retrain:
        model = _load_cached(path, epochs, seed)
        if model is not None:
            return model
    model = train(epochs=epochs, seed=seed)
    try:
        _save(model, path, epochs, seed)
    except OSError:
        pass  # an unwritable cache only costs time
    return model


def quantize_eager(
    model: nn.Module, calib_x: torch.Tensor, engine: str = "fbgemm", batch_size: int = 256
) -> nn.Module:
    """torch.ao eager-mode PTQ of a trained :class:`DigitsCNN`.

    Copies the weights into a :class:`DigitsCNNEager`, fuses Conv+ReLU with ``fuse_modules``,
    ``prepare`` with ``get_default_qconfig(engine)``, calibrates on ``calib_x`` and ``convert``s.
    Sets ``torch.backends.quantized.engine``. The result holds ``QuantStub``-derived
    ``Quantize``, ``ConvReLU2d``, ``MaxPool2d``, ``Linear`` and ``DeQuantize`` modules.
    """
    from torch.ao import quantization as tq

    set_engine(engine)
    eager = DigitsCNNEager()
    eager.load_state_dict(copy.deepcopy(model.state_dict()))
    eager.eval()
    with quiet_torch_ao(), torch.no_grad():
        fused = tq.fuse_modules(eager, [list(p) for p in DigitsCNNEager.FUSE])
        fused.qconfig = tq.get_default_qconfig(engine)
        prepared = tq.prepare(fused)
        for xb in torch.split(calib_x, batch_size):
            prepared(xb)
        quantized = tq.convert(prepared)
    return quantized.eval()
