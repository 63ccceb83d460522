"""Integer right shifts with every rounding mode the fixed-point schemes use.

``shift_round(v, s, mode)`` computes ``round_mode(v / 2**s)`` exactly for int64 ``v`` (a negative
``s`` is an exact left shift). :func:`shift_round_float` is the same function written with numpy
float64 (exact while ``|v| < 2**53``): the "numpy form" the integer form is tested against.

Modes (names used by the ``pow2`` and ``fixed16`` schemes; fxpmath name in brackets):

==============  ==========================================  =================
``floor``       toward -inf: drop the low bits              (``floor``)
``ceil``        toward +inf                                 (``ceil``)
``toward_zero`` truncate the magnitude                      (``trunc``)
``half_up``     nearest, ties toward +inf (DPU "half_up")   (``nearest_posinf``)
``half_down``   nearest, ties toward -inf                   (``nearest_neginf``)
``half_even``   nearest, ties to even                       (``around``)
``half_away``   nearest, ties away from zero (std::round)   (``nearest_away``)
``half_zero``   nearest, ties toward zero                   (``nearest_zero``)
==============  ==========================================  =================
"""

from __future__ import annotations

import numpy as np

from .errors import RangeError

__all__ = ["ROUNDING_MODES", "FXPMATH_ROUNDING", "shift_round", "shift_round_float", "round_float"]

ROUNDING_MODES = (
    "floor", "ceil", "toward_zero", "half_up", "half_down", "half_even", "half_away", "half_zero",
)

#: The fxpmath 0.4.10 ``rounding=`` name of each mode.
FXPMATH_ROUNDING = {
    "floor": "floor",
    "ceil": "ceil",
    "toward_zero": "trunc",
    "half_up": "nearest_posinf",
    "half_down": "nearest_neginf",
    "half_even": "around",
    "half_away": "nearest_away",
    "half_zero": "nearest_zero",
}

_I64 = np.int64


def _check_mode(op: str, mode: str) -> None:
    if mode not in ROUNDING_MODES:
        raise RangeError(f"{op}: rounding must be one of {', '.join(ROUNDING_MODES)}, not {mode!r}")


def shift_round(v, s, mode: str = "half_up"):
    """``round_mode(v / 2**s)`` in integers (vectorized; ``s`` may be an array, -62..62)."""
    _check_mode("shift_round", mode)
    v = np.asarray(v, dtype=_I64)
    s = np.asarray(s, dtype=_I64)
    left = np.clip(-s, 0, 62)
    r = np.clip(s, 0, 62)
    one = _I64(1)
    pw = one << r  # 2**s (1 when s <= 0)
    h = np.where(r > 0, one << np.maximum(r - 1, 0), 0)  # half (0 when s <= 0)
    a = np.abs(v)
    if mode == "floor":
        q = v >> r
    elif mode == "ceil":
        q = (v + pw - 1) >> r
    elif mode == "toward_zero":
        q = np.where(v < 0, -(a >> r), v >> r)
    elif mode == "half_up":
        q = (v + h) >> r
    elif mode == "half_down":
        q = (v + h - (r > 0)) >> r
    elif mode == "half_away":
        q = np.where(v < 0, -((a + h) >> r), (v + h) >> r)
    elif mode == "half_zero":
        q = np.where(v < 0, -((a + h - (r > 0)) >> r), (v + h - (r > 0)) >> r)
    else:  # half_even
        fl = v >> r
        rem = v - (fl << r)
        q = fl + ((r > 0) & ((rem > h) | ((rem == h) & ((fl & 1) == 1))))
    return q << left


def round_float(y, mode: str):
    """Round float64 values to integers (as float64) with ``mode``."""
    _check_mode("round_float", mode)
    if mode == "floor":
        return np.floor(y)
    if mode == "ceil":
        return np.ceil(y)
    if mode == "toward_zero":
        return np.trunc(y)
    if mode == "half_up":
        return np.floor(y + 0.5)
    if mode == "half_down":
        return np.ceil(y - 0.5)
    if mode == "half_even":
        return np.rint(y)
    if mode == "half_away":
        return np.sign(y) * np.floor(np.abs(y) + 0.5)
    return np.sign(y) * np.ceil(np.abs(y) - 0.5)  # half_zero


def shift_round_float(v, s, mode: str = "half_up"):
    """Float64 form of :func:`shift_round` (exact while ``|v| < 2**53``)."""
    v = np.asarray(v, dtype=_I64)
    y = np.ldexp(v.astype(np.float64), (-np.asarray(s, dtype=_I64)).astype(np.int32))
    return round_float(y, mode).astype(_I64)
