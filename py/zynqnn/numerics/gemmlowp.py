"""TFLite / gemmlowp integer requantization (the ``tflite`` and ``tflite-single-rounding`` schemes).

The formulas follow tflite ``kernels/internal/common.h`` (``MultiplyByQuantizedMultiplier``),
``quantization_util.cc`` (``QuantizeMultiplier``) and gemmlowp ``fixedpoint/fixedpoint.h``
(``SaturatingRoundingDoublingHighMul``, ``RoundingDivideByPOT``). All functions are vectorized over
numpy arrays and compute in int64 so that no intermediate overflows; int32 wrap-around happens
exactly where the C++ reference computes in int32 (``x * (1 << left_shift)``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "quantize_multiplier",
    "wrap_int32",
    "srdhm",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_single_rounding",
    "requantize",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(m: float) -> tuple[int, int]:
    """Split a real multiplier ``m >= 0`` into a Q31 multiplier and a power-of-two shift.

    ``m ~= q / 2^31 * 2^shift``; ``shift > 0`` is a left shift. Same result as tflite's
    ``QuantizeMultiplier`` (``std::round`` = ties away from zero, clamp of shift to [-31, 30]).
    """
    m = float(m)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"quantize_multiplier: multiplier must be finite and >= 0, not {m!r}")
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    # std::round: half away from zero (q > 0 here, so floor(x + 0.5) is the same).
    q_fixed = math.floor(q * (1 << 31) + 0.5)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return int(q_fixed), int(shift)


def wrap_int32(x):
    """Two's complement wrap of an int64 array to int32 (what int32 C++ arithmetic does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) & 0xFFFF_FFFF) - 2**31


def srdhm(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values (vectorized)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    t = ab + nudge
    # C++ integer division truncates toward zero.
    hi = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where(overflow, np.int64(INT32_MAX), hi)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: arithmetic shift right, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("rounding_divide_by_pot: exponent must be in 0..31")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def _check_multiplier(q, shift):
    q = np.asarray(q, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any((q < 0) | (q > INT32_MAX)):
        raise ValueError("quantized multiplier must be in 0..2^31-1")
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError("shift must be in -31..30")
    return q, shift


def multiply_by_quantized_multiplier(x, q, shift):
    """tflite ``MultiplyByQuantizedMultiplier`` (default build: double rounding)."""
    q, shift = _check_multiplier(q, shift)
    x = np.asarray(x, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rounding_divide_by_pot(srdhm(wrap_int32(x << left), q), right)


def multiply_by_quantized_multiplier_single_rounding(x, q, shift):
    """tflite ``MultiplyByQuantizedMultiplier`` built with ``TFLITE_SINGLE_ROUNDING``."""
    q, shift = _check_multiplier(q, shift)
    x = np.asarray(x, dtype=np.int64)
    total = 31 - shift
    return (x * q + (np.int64(1) << (total - 1))) >> total


def requantize(acc, bias, q, shift, zero_point, qmin, qmax, single_rounding=False):
    """Conv/FC output stage: ``clamp(MBQM(acc + bias) + zp, qmin, qmax)``.

    ``acc + bias`` is an int32 addition (wraps like the C++ reference); ``q``/``shift`` broadcast
    per output channel.
    """
    x = wrap_int32(np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64))
    if single_rounding:
        y = multiply_by_quantized_multiplier_single_rounding(x, q, shift)
    else:
        y = multiply_by_quantized_multiplier(x, q, shift)
    return np.clip(y + zero_point, qmin, qmax)
