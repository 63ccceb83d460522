"""Parameter errors of the numerics library and the checks that raise them.

Every error is a :class:`ValueError` subclass whose message names the operation, the parameter
and the reason, e.g. ``conv2d: weight has 4 input channels per group, input has 3``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "NumericsError",
    "ScaleError",
    "ZeroPointError",
    "ShiftError",
    "ShapeError",
    "RangeError",
    "check_scale",
    "check_zero_point",
    "check_shift",
    "check_int_range",
]


class NumericsError(ValueError):
    """A parameter is outside the range the arithmetic is defined for."""


class ScaleError(NumericsError):
    """A scale is not finite, not positive, or not of the required form (e.g. a power of two)."""


class ZeroPointError(NumericsError):
    """A zero point is outside the integer range of its tensor."""


class ShiftError(NumericsError):
    """A shift, fraction length or fixed-point position is outside the supported range."""


class ShapeError(NumericsError):
    """Array shapes or layer geometry do not fit together."""


class RangeError(NumericsError):
    """An integer operand or option is outside the range of the arithmetic (or an unknown name)."""


def check_scale(op: str, name: str, value, *, allow_array: bool = True) -> np.ndarray:
    """Return ``value`` as a float64 array after checking every entry is finite and > 0."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and not allow_array):
        raise ScaleError(f"{op}: {name} must be a scalar{' or 1-D' if allow_array else ''}, "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise ScaleError(f"{op}: {name} is empty")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if np.any(bad):
        i = int(np.argmax(bad.reshape(-1)))
        v = arr.reshape(-1)[i]
        where = f" (entry {i} of {arr.size}, {int(bad.sum())} bad)" if arr.size > 1 else ""
        raise ScaleError(f"{op}: {name} must be finite and > 0, not {float(v)!r}{where}")
    return arr


def check_zero_point(op: str, name: str, value, qmin: int, qmax: int) -> np.ndarray:
    """Return ``value`` as an int64 array after checking ``qmin <= value <= qmax``."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ZeroPointError(f"{op}: {name} must be an integer, not {arr!r}")
    elif arr.dtype.kind not in "iub":
        raise ZeroPointError(f"{op}: {name} must be an integer, not {arr!r}")
    arr = arr.astype(np.int64)
    bad = (arr < qmin) | (arr > qmax)
    if np.any(bad):
        v = arr.reshape(-1)[np.argmax(bad.reshape(-1))]
        raise ZeroPointError(f"{op}: {name} {int(v)} is outside the quantized range {qmin}..{qmax}")
    return arr


def check_shift(op: str, name: str, value, lo: int, hi: int) -> np.ndarray:
    """Return ``value`` as an int64 array after checking ``lo <= value <= hi``."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ShiftError(f"{op}: {name} must be an integer, not {arr!r}")
    elif arr.dtype.kind not in "iub":
        raise ShiftError(f"{op}: {name} must be an integer, not {arr!r}")
    arr = arr.astype(np.int64)
    bad = (arr < lo) | (arr > hi)
    if np.any(bad):
        v = arr.reshape(-1)[np.argmax(bad.reshape(-1))]
        raise ShiftError(f"{op}: {name} {int(v)} is outside the supported range {lo}..{hi}")
    return arr


def check_int_range(op: str, name: str, value, lo: int, hi: int) -> np.ndarray:
    """Return ``value`` as int64 after checking it holds integers in ``lo..hi``."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise RangeError(f"{op}: {name} must hold integers, got non-integral values")
    elif arr.dtype.kind not in "iub":
        raise RangeError(f"{op}: {name} must be an integer array, not dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        v = arr.min() if arr.min() < lo else arr.max()
        raise RangeError(f"{op}: {name} holds {int(v)}, outside {lo}..{hi}")
    return arr


def is_pow2(x: float) -> bool:
    """True if ``x`` is an exact (positive) power of two."""
    m, _ = math.frexp(float(x))
    return m == 0.5
