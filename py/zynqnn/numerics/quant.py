"""Input quantization and output dequantization exactly as each framework does them.

============================  =========================================================
``quantize_torch``            ``clamp(rne(fma(x, f32(1/s), zp)))`` (fbgemm ``Quantize``:
                              reciprocal, zero point added *before* the single rounding;
                              qint32: ``rne(f32(f32(x * f32(1/s)) + zp))``)
``quantize_onnxruntime``      ``clamp(rne(f32(x / s)) + zp)`` (MLAS: true division)
``quantize_tflite``           ``clamp(rhaz(f32(x / s)) + zp)`` (std::round: ties away)
``quantize_pow2``             ``clamp(floor(x * 2^fp + 0.5))`` (DPU activations, half up;
                              ``rounding="half_away"`` for weights/bias, "std_round")
``quantize_fixed``            ``overflow(round_mode(x * 2^n))`` (fxpmath semantics)
============================  =========================================================

PyTorch rounds to codes in three different ways, all reproduced here and used by :mod:`ops`:

* ``torch_quantize_vec``: fbgemm's array ``Quantize`` (``quantize_per_tensor``, ``quantize_vec``
  in adaptive pooling, the generic ``cat``): ``rne(fma(x, f32(1/s), zp))``;
* ``torch_quantize_val``: scalar ``quantize_val`` (scalar tails, bounds of ``hardtanh``/``relu6``):
  ``rne(f32(f32(x * f32(1/s)) + zp))`` (two roundings, zero point before the integer rounding);
* ``torch_vec_quantize``: ATen's vectorized ``Vectorized<T>::quantize`` (add, leaky_relu,
  channels_last avg_pool2d and cat): ``rne(f32(x * inv)) + zp`` (zero point after rounding).

Inputs are float32 arrays (the framework's own float input); scales are float32 values.
Dequantization: torch ``f32(s * (q - zp))`` (fbgemm ``Dequantize``; the vectorized torch kernels
use ``fma(s, q, f32(-zp*s))`` instead: ``dequantize_torch(..., fma=True)``), ONNX Runtime
``f32(f32(q - zp) * s)``, TFLite ``f32(double(s) * (q - zp))`` (the same value), powers of two
exactly.
"""

from __future__ import annotations

import numpy as np

from .errors import RangeError, ShiftError, check_scale, check_shift, check_zero_point
from .f32int import np_fma32
from .rounding import ROUNDING_MODES, round_float

__all__ = [
    "DTYPE_RANGE",
    "qrange",
    "quantize_torch",
    "torch_quantize_vec",
    "torch_quantize_val",
    "torch_vec_quantize",
    "quantize_onnxruntime",
    "quantize_tflite",
    "quantize_pow2",
    "quantize_fixed",
    "dequantize_torch",
    "dequantize_onnxruntime",
    "dequantize_tflite",
    "dequantize_pow2",
]

f32 = np.float32

#: Code ranges of the integer types the frameworks quantize to.
DTYPE_RANGE = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}


def qrange(dtype: str) -> tuple[int, int]:
    """``(qmin, qmax)`` of a dtype name (``"uint8"``, ``"int8"``, ...)."""
    if dtype not in DTYPE_RANGE:
        raise RangeError(f"qrange: dtype must be one of {', '.join(DTYPE_RANGE)}, not {dtype!r}")
    return DTYPE_RANGE[dtype]


def _x(op, x):
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise RangeError(f"{op}: x must be a float array, not dtype {x.dtype}")
    x = x.astype(f32)
    if not np.all(np.isfinite(x)):
        raise RangeError(f"{op}: x holds NaN or infinity")
    return x


def _scale32(op, s):
    s = check_scale(op, "scale", s, allow_array=False)
    s32 = f32(s)
    if not (np.isfinite(s32) and s32 > 0):
        raise RangeError(f"{op}: scale {float(s)!r} is not representable as a float32 > 0")
    return s32


def _cvt(y):
    """float32 -> int like ``cvtps2dq`` (ties to even, INT32_MIN out of range)."""
    big = ~(np.abs(y) < f32(2.0**31))
    r = np.rint(np.where(big, f32(0), y)).astype(np.int64)
    return np.where(big, -(2**31), r)


def torch_quantize_vec(x, inv, zp, qmin, qmax):
    """fbgemm array ``Quantize`` (legacy form): ``clamp(rne(fma(x, inv, zp)))``, float32 ``x``."""
    y = np.minimum(np_fma32(x, inv, f32(zp)), f32(2147483520.0))
    return np.clip(_cvt(y), qmin, qmax)


def torch_quantize_val(x, inv, zp, qmin, qmax):
    """ATen ``quantize_val`` (fbgemm scalar ``Quantize``): ``clamp(rne(f32(f32(x*inv) + zp)))``."""
    y = ((np.asarray(x, dtype=f32) * f32(inv)).astype(f32) + f32(zp)).astype(f32)
    r = np.rint(y.astype(np.float64))
    return np.clip(r, qmin, qmax).astype(np.int64)


def torch_vec_quantize(x, inv, zp, qmin, qmax):
    """ATen ``Vectorized<T>::quantize``: ``clamp(rne(f32(x * inv)) + zp)`` (zp after rounding)."""
    y = np.minimum((np.asarray(x, dtype=f32) * f32(inv)).astype(f32), f32(2147483520.0))
    return np.clip(_cvt(y) + int(zp), qmin, qmax)


def quantize_torch(x, scale, zero_point, dtype="uint8"):
    """``torch.quantize_per_tensor`` (fbgemm ``Quantize``): ``clamp(rne(fma(x, f32(1/s), zp)))``.

    Measured on torch 2.13: for quint8/qint8 the zero point is added inside one fused
    multiply-add, before the rounding (fbgemm's "legacy" AVX form), in the vector body and the
    tail alike; qint32 goes through the scalar ``quantize_val`` (two roundings).
    """
    op = "quantize_torch"
    qmin, qmax = qrange(dtype)
    x = _x(op, x)
    s = _scale32(op, scale)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    if dtype == "int32":
        return torch_quantize_val(x, f32(1) / s, zp, qmin, qmax)
    return torch_quantize_vec(x, f32(1) / s, zp, qmin, qmax)


def quantize_onnxruntime(x, scale, zero_point, dtype="uint8"):
    """ONNX Runtime ``QuantizeLinear`` (MLAS): true float32 division, ties to even, + zp."""
    op = "quantize_onnxruntime"
    qmin, qmax = qrange(dtype)
    x = _x(op, x)
    s = _scale32(op, scale)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    y = (x / s).astype(f32)
    y = np.clip(y, f32(qmin - zp), f32(qmax - zp))  # MLAS clamps in float before converting
    return _cvt(y) + zp


def quantize_tflite(x, scale, zero_point, dtype="int8"):
    """TFLite ``QUANTIZE`` reference (``AffineQuantize``): ``round(x / s)`` ties away, + zp."""
    op = "quantize_tflite"
    qmin, qmax = qrange(dtype)
    x = _x(op, x)
    s = _scale32(op, scale)
    zp = int(check_zero_point(op, "zero_point", zero_point, qmin, qmax))
    y = (x / s).astype(np.float64)
    r = np.sign(y) * np.floor(np.abs(y) + 0.5)
    return np.clip(r.astype(np.int64) + zp, qmin, qmax)


def quantize_pow2(x, fix_pos, bits=8, rounding="half_up", narrow=False):
    """Power-of-two quantization ``clamp(round(x * 2^fix_pos))`` (signed, symmetric).

    ``half_up`` is the DPU activation rounding; ``half_away`` ("std_round") the weight/bias one.
    ``narrow`` drops the most negative code (-127..127 for int8).
    """
    op = "quantize_pow2"
    x = _x(op, x)
    fp = int(check_shift(op, "fix_pos", fix_pos, -64, 64))
    b = int(check_shift(op, "bits", bits, 2, 32))
    if rounding not in ROUNDING_MODES:
        raise RangeError(f"{op}: rounding must be one of {', '.join(ROUNDING_MODES)}")
    y = np.ldexp(x.astype(np.float64), fp)
    r = round_float(y, rounding)
    lo = -(2 ** (b - 1)) + (1 if narrow else 0)
    return np.clip(r, lo, 2 ** (b - 1) - 1).astype(np.int64)


def quantize_fixed(x, n_frac, bits=16, rounding="floor", overflow="saturate", signed=True):
    """Fixed point Q(bits-n_frac-1).n_frac: ``overflow(round_mode(x * 2^n_frac))``.

    Matches ``fxpmath.Fxp(x, signed, bits, n_frac, rounding=..., overflow=...).val``.
    """
    op = "quantize_fixed"
    x = np.asarray(x, dtype=np.float64)
    n = int(check_shift(op, "n_frac", n_frac, -64, 64))
    b = int(check_shift(op, "bits", bits, 2, 62))
    if rounding not in ROUNDING_MODES:
        raise RangeError(f"{op}: rounding must be one of {', '.join(ROUNDING_MODES)}")
    r = round_float(np.ldexp(x, n), rounding)
    lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if signed else (0, 2**b - 1)
    if overflow == "saturate":
        return np.clip(r, lo, hi).astype(np.int64)
    if overflow != "wrap":
        raise ShiftError(f"{op}: overflow must be 'saturate' or 'wrap', not {overflow!r}")
    r = r.astype(np.int64) - lo
    return (r & ((1 << b) - 1)) + lo


def dequantize_torch(q, scale, zero_point, fma=False):
    """``Tensor.dequantize()``: ``f32(s * (q - zp))``; ``fma=True``: ``fma(s, q, f32(-zp*s))``."""
    op = "dequantize_torch"
    s = _scale32(op, scale)
    q = np.asarray(q, dtype=np.int64)
    if fma:
        premul = f32(s * f32(-int(zero_point)))
        return np_fma32(s, q.astype(f32), premul)
    return (s * (q - int(zero_point)).astype(f32)).astype(f32)


def dequantize_onnxruntime(q, scale, zero_point):
    """``DequantizeLinear``: ``f32(f32(q - zp) * s)``."""
    s = _scale32("dequantize_onnxruntime", scale)
    q = np.asarray(q, dtype=np.int64)
    return ((q - int(zero_point)).astype(f32) * s).astype(f32)


def dequantize_tflite(q, scale, zero_point):
    """TFLite ``DEQUANTIZE``: ``f32(double(s) * (q - zp))``."""
    s = _scale32("dequantize_tflite", scale)
    q = np.asarray(q, dtype=np.int64)
    return (np.float64(s) * (q - int(zero_point))).astype(f32)


def dequantize_pow2(q, fix_pos):
    """``q * 2^-fix_pos`` (exact)."""
    fp = int(check_shift("dequantize_pow2", "fix_pos", fix_pos, -64, 64))
    return np.ldexp(np.asarray(q, dtype=np.float64), -fp).astype(f32)
