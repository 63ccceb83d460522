"""Affine form of a requantization over a bounded accumulator range, with its exceptions.

For one output channel every scheme's requantization ``q = f(acc)`` is a non-decreasing step
function of the accumulator (int32 -> float32, the float add of a bias, the product with a
positive multiplier, each rounding and the clamp are all monotone). Over the range a layer can
reach (``[lo, hi]``: a depthwise 3x3 accumulator is a 20-bit number) it is therefore fully
described by the positions of its steps, ``t_k = min{a : f(a) >= k}`` for each code ``k`` above
the clamp's minimum. An affine function

    g(a) = clamp((a * m + b) >> frac_bits, qmin, qmax)

with the scheme's multiplier as ``m / 2^frac_bits`` has steps ``u_k`` within one accumulator
value of ``t_k`` almost everywhere; :func:`fit_steps` finds ``t_k`` exactly (binary search on the
scheme's own ``Requant.apply``), picks the offset ``b`` that matches the most steps, and lists
the accumulator values where ``f`` and ``g`` still differ as exceptions ``(a, f(a) - g(a))``.
Since both functions are monotone, they agree everywhere else (between two matching steps both
are constant), so ``g`` plus the exceptions is ``f`` bit for bit, whatever the scheme.

That is the arithmetic of a cheap requantization lane: one wide multiply-add, a fixed shift, a
few equality compares and the clamp, in place of the float32 emulation of the general lanes
(``zynqnn.rtl.postproc``). :func:`dw_acc_range` bounds a depthwise channel's accumulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import RangeError, ShapeError

__all__ = ["StepFit", "fit_steps", "dw_acc_range", "slopes"]


def slopes(rq) -> list[float]:
    """The multiplier of each channel of ``rq`` (float64, exact for the float32 schemes):
    ``q ~ acc * slope + offset``."""
    if hasattr(rq, "M"):                       # fbgemm, qnnpack, onnxruntime
        s = np.broadcast_to(np.asarray(rq.M, dtype=np.float64), (rq.channels,))
    elif hasattr(rq, "multiplier"):            # tflite: Q31 multiplier and shift
        s = (np.asarray(rq.multiplier, dtype=np.float64)
             * np.exp2(np.asarray(rq.shift, dtype=np.float64) - 31))
    else:
        raise RangeError(f"{rq.scheme}: no step fit for this scheme (its rounding ties are "
                         "periodic; its shift-and-round form is already cheap)")
    if np.any(s <= 0):
        raise RangeError(f"{rq.scheme}: multiplier must be positive for a step fit")
    return [float(v) for v in s]


def dw_acc_range(weights, x_lo: int, x_hi: int, zp_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(lo, hi)`` of a depthwise accumulator ``sum_t (x_t - zp_x) * w_t`` over
    input codes ``x_lo..x_hi`` (padding contributes ``x = zp_x``). ``weights``: (C, 1, kh, kw)
    or (C, kh, kw) signed codes. fbgemm's saturated tap pairs stay inside the same bounds (a
    clamped pair lies between its exact value and ``-zp_x * (w_2m + w_2m+1)``)."""
    w = np.asarray(weights, dtype=np.int64)
    w = w.reshape(w.shape[0], -1)
    dlo, dhi = x_lo - zp_x, x_hi - zp_x        # dlo <= 0 <= dhi
    if dlo > 0 or dhi < 0:
        raise RangeError(f"zero point {zp_x} outside the input codes {x_lo}..{x_hi}")
    lo = np.where(w > 0, w * dlo, w * dhi).sum(axis=1)
    hi = np.where(w > 0, w * dhi, w * dlo).sum(axis=1)
    return lo, hi


@dataclass
class StepFit:
    """``g(a) + exceptions`` of every channel (see the module docstring).

    ``mult``, ``offset``: per channel Python ints; ``exceptions``: per channel a sorted list of
    ``(acc, delta)``; ``lo``/``hi``: the accumulator range the fit is exact on; ``qmin``/``qmax``:
    the clamp (the Requant's ``lo``/``hi``)."""

    frac_bits: int
    qmin: int
    qmax: int
    mult: list[int]
    offset: list[int]
    lo: list[int]
    hi: list[int]
    exceptions: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return len(self.mult)

    @property
    def max_exceptions(self) -> int:
        return max((len(e) for e in self.exceptions), default=0)

    def mult_bits(self) -> int:
        """Unsigned width of the largest multiplier."""
        return max(m.bit_length() for m in self.mult)

    def offset_bits(self) -> int:
        """Signed width of the offsets."""
        return 1 + max(max(b.bit_length(), (-b - 1).bit_length()) for b in self.offset)

    def apply(self, acc, axis: int = 1) -> np.ndarray:
        """The lane's arithmetic on int64 ``acc`` (channel on ``axis``): exact integers."""
        acc = np.asarray(acc, dtype=np.int64)
        a = np.moveaxis(acc, axis, -1)
        if a.shape[-1] != self.channels:
            raise ShapeError(f"step fit: acc has {a.shape[-1]} channels, the fit "
                             f"{self.channels}")
        out = np.empty(a.shape, dtype=np.int64)
        for c in range(self.channels):
            v = a[..., c]
            if v.size and (v.min() < self.lo[c] or v.max() > self.hi[c]):
                raise RangeError(f"step fit: channel {c}: acc outside the fitted range "
                                 f"{self.lo[c]}..{self.hi[c]}")
            y = (v.astype(object) * self.mult[c] + self.offset[c]) >> self.frac_bits
            q = np.clip(y.astype(np.int64), self.qmin, self.qmax)
            for e, d in self.exceptions[c]:
                q[v == e] += d
            out[..., c] = q
        return np.moveaxis(out, -1, axis)


def _steps(rq, lo: np.ndarray, hi: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``t[k, c] = min{a in [lo_c, hi_c] : f_c(a) >= levels[k]}``, or ``hi_c + 1``."""
    K, C = len(levels), len(lo)
    a_lo = np.broadcast_to(lo, (K, C)).copy()
    a_hi = np.broadcast_to(hi + 1, (K, C)).copy()
    lev = levels[:, None]
    while True:
        open_ = a_lo < a_hi
        if not open_.any():
            return a_lo
        mid = (a_lo + a_hi) // 2
        ge = rq.apply(np.minimum(mid, hi), axis=1) >= lev
        a_hi = np.where(open_ & ge, mid, a_hi)
        a_lo = np.where(open_ & ~ge, mid + 1, a_lo)


def _best_offset(t: list[int], levels: list[int], m: int, F: int, lo: int, hi: int) -> int:
    """The offset ``b`` that puts the most steps of ``a * m + b >> F`` where ``t`` has them."""
    events = []
    for k, tk in zip(levels, t, strict=True):
        # g >= k from a = tk on: tk*m + b >= k*2^F; and not before: (tk-1)*m + b < k*2^F.
        lo_b = k * (1 << F) - tk * m if tk <= hi else None
        hi_b = k * (1 << F) - (tk - 1) * m - 1 if tk - 1 >= lo else None
        if lo_b is None and hi_b is None:
            continue
        events.append((lo_b if lo_b is not None else -(1 << 200), +1))
        events.append(((hi_b if hi_b is not None else 1 << 200) + 1, -1))
    if not events:
        return 0
    events.sort()
    best, best_at, best_end, cur = -1, 0, 0, 0
    for i, (pos, d) in enumerate(events):
        cur += d
        nxt = events[i + 1][0] if i + 1 < len(events) else pos + 1
        if cur > best and nxt > pos:
            best, best_at, best_end = cur, pos, nxt
    # The middle of the best interval (its ends are fenceposts of single steps).
    if best_at <= -(1 << 199):
        return best_end - 1
    if best_end >= 1 << 199:
        return best_at
    return (best_at + best_end - 1) // 2


def _fit_channel(rq, c: int, t: list[int], levels: list[int], m: int, F: int, lo: int,
                 hi: int) -> tuple[int, list[tuple[int, int]]]:
    """Channel ``c`` with multiplier ``m``: the best offset and the exceptions it leaves."""
    b = _best_offset(t, levels, m, F, lo, hi)
    # Accumulator values between a step of f and the same step of g are the only places the
    # two can differ.
    cand = set()
    for k, tk in zip(levels, t, strict=True):
        uk = -((b - k * (1 << F)) // m)          # ceil((k*2^F - b) / m)
        uk = min(max(uk, lo), hi + 1)
        cand.update(range(min(tk, uk), max(tk, uk)))
    pts = sorted(cand)
    ex = []
    if pts:
        a = np.zeros((len(pts), rq.channels), dtype=np.int64)
        a[:, c] = pts
        f = rq.apply(a, axis=1)[:, c]
        for p, fv in zip(pts, f, strict=True):
            gv = min(max((p * m + b) >> F, rq.lo), rq.hi)
            if int(fv) != gv:
                ex.append((p, int(fv) - gv))
    return b, ex


#: Multiplier nudges tried for a channel with too many exceptions (ties of a float32 product
#: recur with the period of the multiplier's low bits; a slightly different slope can dodge
#: them).
_NUDGES = [s * (1 << e) for e in range(0, 16) for s in (1, -1)]


def fit_steps(rq, lo, hi, frac_bits: int = 32, max_exceptions: int | None = None) -> StepFit:
    """Fit ``rq`` (a ``zynqnn.numerics`` Requant) on the per-channel accumulator ranges
    ``[lo, hi]`` (arrays or ints) with a multiplier of ``frac_bits`` fraction bits. A channel
    left with more than ``max_exceptions`` exceptions tries nudged multipliers and keeps the
    best (it may still have more: check :attr:`StepFit.max_exceptions`)."""
    C = rq.channels
    lo = np.broadcast_to(np.asarray(lo, dtype=np.int64), (C,)).copy()
    hi = np.broadcast_to(np.asarray(hi, dtype=np.int64), (C,)).copy()
    if np.any(lo > hi):
        raise RangeError("step fit: empty accumulator range")
    if lo.min() < -(2**31) or hi.max() > 2**31 - 1:
        raise RangeError("step fit: accumulator range beyond int32")
    F = int(frac_bits)
    levels = np.arange(rq.lo + 1, rq.hi + 1, dtype=np.int64)
    t = _steps(rq, lo, hi, levels) if len(levels) else np.zeros((0, C), dtype=np.int64)
    lv = [int(k) for k in levels]
    mult, offset, exc = [], [], []
    for c, mu in enumerate(slopes(rq)):
        m = round(mu * (1 << F))
        if m <= 0:
            raise RangeError(f"step fit: channel {c}: multiplier {mu!r} vanishes with "
                             f"{F} fraction bits")
        tc = [int(v) for v in t[:, c]]
        b, ex = _fit_channel(rq, c, tc, lv, m, F, int(lo[c]), int(hi[c]))
        if max_exceptions is not None and len(ex) > max_exceptions:
            m0 = m
            for d in _NUDGES:
                if m0 + d <= 0:
                    continue
                b2, ex2 = _fit_channel(rq, c, tc, lv, m0 + d, F, int(lo[c]), int(hi[c]))
                if len(ex2) < len(ex):
                    m, b, ex = m0 + d, b2, ex2
                    if len(ex) <= max_exceptions:
                        break
        mult.append(m)
        offset.append(b)
        exc.append(ex)
    return StepFit(F, rq.lo, rq.hi, mult, offset, [int(v) for v in lo], [int(v) for v in hi],
                   exc)
