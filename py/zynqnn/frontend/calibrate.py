"""Activation range calibrators for :func:`zynqnn.quantize`.

Each calibrator sees float tensors batch by batch and returns a range ``(lo, hi)``:

``minmax``
    the observed minimum and maximum.
``percentile``
    the ``percentile`` (default 99.99) of ``|x|`` (one-sided for non-negative tensors), from a
    2048-bin histogram; clips rare outliers.
``entropy``
    the clipping threshold minimising the KL divergence between the histogram of ``|x|`` and
    its quantized version (TensorRT's method, 2048 bins, thresholds from 128 bins up).
``mse``
    the clipping threshold minimising the expected squared quantization error over the
    histogram (uniform grid of ``levels`` steps, clipped values saturate).

Histogram calibrators need two passes (ranges first, histograms second); :class:`RangeStats`
holds both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CALIBRATORS", "RangeStats", "threshold"]

CALIBRATORS = ("minmax", "percentile", "entropy", "mse")
BINS = 2048


class RangeStats:
    """Running statistics of one tensor: min, max and (second pass) a histogram of ``|x|``."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self.hist: np.ndarray | None = None
        self.edge = 0.0
        self.count = 0       # values observed
        self.nonfinite = 0   # of them NaN or infinite (a batch with a NaN gives no min/max)

    def observe(self, x: np.ndarray) -> None:
        if x.size:
            lo, hi = float(x.min()), float(x.max())
            self.count += int(x.size)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                self.nonfinite += int(x.size - np.count_nonzero(np.isfinite(x)))
            self.lo = min(self.lo, lo)
            self.hi = max(self.hi, hi)

    def start_histogram(self) -> None:
        self.edge = max(abs(self.lo), abs(self.hi), 1e-12)
        self.hist = np.zeros(BINS, dtype=np.float64)

    def observe_hist(self, x: np.ndarray) -> None:
        h, _ = np.histogram(np.abs(x), bins=BINS, range=(0.0, self.edge))
        self.hist += h

    @property
    def seen(self) -> bool:
        return np.isfinite(self.lo)


def _kl_threshold(hist: np.ndarray, levels: int) -> int:
    """Bin count (threshold index) with the smallest KL divergence (TensorRT's entropy method).

    For each candidate ``i``: P = the first ``i`` bins, the mass beyond folded into the last;
    Q = those bins merged into ``levels + 1`` groups and spread evenly back over the non-empty
    bins of each group; the candidate with the least KL(P || Q) wins.
    """
    n = len(hist)
    hist = hist.copy()
    hist[0] = 0  # exact zeros (ReLU) are represented exactly whatever the threshold
    if hist.sum() == 0:
        return n
    nq = levels + 1
    best, best_i = np.inf, n
    for i in range(nq, n + 1, max(1, n // 128)):
        p = hist[:i].astype(np.float64)
        p[i - 1] += hist[i:].sum()
        nonzero = hist[:i] != 0
        edges = (np.arange(nq + 1) * i) // nq
        q = np.zeros(i)
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            cnt = int(np.count_nonzero(nonzero[a:b]))
            if cnt:
                q[a:b] = np.where(nonzero[a:b], hist[a:b].sum() / cnt, 0.0)
        q[i - 1] = max(q[i - 1], 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = p / ps, q / qs
        mask = pn > 0
        eps = 1e-12
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], eps))))
        if kl < best:
            best, best_i = kl, i
    return best_i


def _mse_threshold(hist: np.ndarray, edge: float, levels: int) -> float:
    centers = (np.arange(len(hist)) + 0.5) * (edge / len(hist))
    best, best_t = np.inf, edge
    for frac in np.linspace(0.05, 1.0, 96):
        t = edge * frac
        step = t / levels
        q = np.minimum(np.round(centers / step), levels) * step
        err = float(np.sum(hist * (centers - q) ** 2))
        if err < best:
            best, best_t = err, t
    return best_t


def threshold(stats: RangeStats, method: str, levels: int = 127, percentile: float = 99.99
              ) -> tuple[float, float]:
    """The calibrated range ``(lo, hi)`` of one tensor (always contains 0)."""
    lo, hi = min(stats.lo, 0.0), max(stats.hi, 0.0)
    if method == "minmax" or stats.hist is None or stats.hist.sum() == 0:
        return lo, hi
    hist, edge = stats.hist, stats.edge
    if method == "percentile":
        c = np.cumsum(hist)
        i = int(np.searchsorted(c, c[-1] * percentile / 100.0))
        t = (i + 1) * edge / len(hist)
    elif method == "entropy":
        t = _kl_threshold(hist, levels) * edge / len(hist)
    elif method == "mse":
        t = _mse_threshold(hist, edge, levels)
    else:
        raise ValueError(f"unknown calibrator {method!r}; use one of {', '.join(CALIBRATORS)}")
    return max(lo, -t), min(hi, t)
