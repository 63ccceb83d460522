"""Per-layer requantization: int32 accumulator -> output code, one object per scheme.

Build one with :func:`make_requant` from the float scales, zero point and bias of a layer; call
``.apply(acc)`` (numpy form) or ``.apply_hw(acc)`` (integer-only hardware form, what the RTL
implements). ``.constants()`` returns the plain integers the hardware is loaded with.

``acc`` is the exact integer sum ``sum((q_x - zp_x) * (q_w - zp_w))`` (int64 array holding int32
values) with the output channel on ``axis`` (default 1: NCHW and (N, K) layouts).

Host-side constants are computed in float32 (``numpy.float32``) in the framework's own operation
order; which order each framework uses is documented on each class and checked against the
framework by ``tests/numerics``.
"""

from __future__ import annotations

import math

import numpy as np

from . import f32int as F
from . import gemmlowp
from .errors import (
    RangeError,
    ScaleError,
    ShapeError,
    check_int_range,
    check_scale,
    check_shift,
    check_zero_point,
    is_pow2,
)
from .rounding import ROUNDING_MODES, shift_round, shift_round_float

__all__ = [
    "SCHEMES",
    "Requant",
    "TorchFbgemmRequant",
    "TorchQnnpackRequant",
    "OnnxRuntimeRequant",
    "TfliteRequant",
    "Pow2Requant",
    "Fixed16Requant",
    "make_requant",
    "x86_cvt",
]

SCHEMES = (
    "torch-fbgemm",
    "torch-qnnpack",
    "onnxruntime",
    "tflite",
    "tflite-single-rounding",
    "pow2",
    "fixed16",
)

f32 = np.float32
f64 = np.float64
_I32_MIN = -(2**31)
_I32_MAX = 2**31 - 1


def x86_cvt(r):
    """Map out-of-range conversions to INT32_MIN, as ``cvtps2dq`` does ("integer indefinite")."""
    r = np.asarray(r, dtype=np.int64)
    return np.where((r < _I32_MIN) | (r > _I32_MAX), _I32_MIN, r)


def _rint_f32(y):
    """``cvtps2dq`` of float32 values: ties-to-even integer, INT32_MIN when out of range."""
    y = np.asarray(y, dtype=f32)
    if y.size == 0 or float(np.abs(y).max()) < 2.0**31:  # the common case: one pass, no masks
        return np.rint(y).astype(np.int64)
    big = ~(np.abs(y) < f32(2.0**31))
    r = np.rint(np.where(big, f32(0), y)).astype(np.int64)
    return np.where(big, _I32_MIN, r)


class Requant:
    """Base class: the common output stage and the channel broadcasting.

    Attributes
    ----------
    scheme: the scheme name (one of :data:`SCHEMES`).
    channels: number of per-channel constants (1 for per-tensor).
    per_channel: whether constants differ per output channel.
    zp_out: output zero point.
    qmin, qmax: output code range.
    relu: fused ReLU (clamp at the output zero point).
    lo, hi: the clamp bounds actually applied (``lo = max(qmin, zp_out)`` with ReLU).
    """

    scheme = ""

    def __init__(self, channels: int, per_channel: bool, zp_out: int, qmin: int, qmax: int,
                 relu: bool):
        if qmin > qmax:
            raise RangeError(f"{self.scheme}: qmin {qmin} > qmax {qmax}")
        self.channels = int(channels)
        self.per_channel = bool(per_channel)
        self.zp_out = int(check_zero_point(self.scheme, "zp_out", zp_out, qmin, qmax))
        self.qmin = int(qmin)
        self.qmax = int(qmax)
        self.relu = bool(relu)
        self.lo = max(self.qmin, self.zp_out) if self.relu else self.qmin
        self.hi = self.qmax

    # -- helpers -------------------------------------------------------------------------------
    def _acc(self, acc, axis: int):
        acc = np.asarray(acc)
        if acc.dtype.kind not in "iu":
            raise RangeError(f"{self.scheme}: acc must be an integer array, not dtype {acc.dtype}")
        acc = np.asarray(acc, dtype=np.int64)
        if acc.size and (acc.min() < _I32_MIN or acc.max() > _I32_MAX):
            raise RangeError(f"{self.scheme}: acc holds values outside int32")
        if self.per_channel:
            if acc.ndim == 0:
                raise ShapeError(f"{self.scheme}: acc needs a channel axis for per-channel "
                                 "constants")
            ax = axis % acc.ndim
            if acc.shape[ax] != self.channels:
                raise ShapeError(f"{self.scheme}: acc has {acc.shape[ax]} channels on axis {axis}, "
                                 f"the constants have {self.channels}")
        return acc

    def _b(self, v, acc, axis: int):
        """Broadcast a per-channel vector along ``axis`` of ``acc``."""
        v = np.asarray(v)
        if not self.per_channel or acc.ndim == 0:
            return v.reshape(()) if v.size == 1 else v
        shape = [1] * acc.ndim
        shape[axis % acc.ndim] = self.channels
        return v.reshape(shape)

    def _out(self, r):
        r = np.array(r, dtype=np.int64, copy=None)
        r += self.zp_out
        return np.clip(r, self.lo, self.hi, out=r)

    # -- interface ------------------------------------------------------------------------------
    def apply(self, acc, axis: int = 1):
        """Numpy form: requantize ``acc`` to output codes (int64 array of the same shape)."""
        raise NotImplementedError

    def apply_hw(self, acc, axis: int = 1):
        """Hardware form: the same result computed with integers only."""
        raise NotImplementedError

    def constants(self) -> dict:
        """The integer constants the hardware is loaded with (numpy int64 arrays and ints)."""
        raise NotImplementedError

    def __repr__(self):
        return (f"<{type(self).__name__} {self.scheme} channels={self.channels} "
                f"zp_out={self.zp_out} range={self.lo}..{self.hi}>")


def _per_channel_scales(op, s_w, per_channel):
    s_w = check_scale(op, "s_w", s_w)
    if per_channel is None:
        per_channel = s_w.ndim == 1
    if not per_channel and s_w.size != 1:
        raise ShapeError(f"{op}: per-tensor weights need one scale, got {s_w.size}")
    return s_w.reshape(-1), bool(per_channel)


def _channels(op, s_w, bias):
    n = s_w.size
    if bias is not None:
        b = np.asarray(bias)
        if b.ndim != 1:
            raise ShapeError(f"{op}: bias must be 1-D, got shape {b.shape}")
        if n != 1 and b.size != n:
            raise ShapeError(f"{op}: bias has {b.size} channels, s_w has {n}")
        n = max(n, b.size)
    return n


def _float_bias(op, bias):
    if bias is None:
        return None
    b = np.asarray(bias)
    if b.dtype.kind not in "fiu":
        raise RangeError(f"{op}: bias must be numeric, not dtype {b.dtype}")
    b = b.astype(f32)
    if not np.all(np.isfinite(b)):
        raise RangeError(f"{op}: bias must be finite")
    return b


def _int_bias(op, bias, bits=32):
    if bias is None:
        return None
    return check_int_range(op, "bias", bias, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


class TorchFbgemmRequant(Requant):
    """PyTorch quantized conv/linear on the fbgemm engine (float bias).

    Host constants (float32)::

        a_c = f32(s_in * s_w[c]);  M_c = f32(a_c / s_out)
        per-channel weights: b_c = f32(bias_c / a_c)
        per-tensor weights:  r = f32(1.0 / double(a));  bias term = fma(bias_c, r, f32(acc))

    Output: ``q = clamp(rne(f32(f32(f32(acc) + b_c) * M_c)) + zp_out, relu ? zp_out : 0, 255)``.
    The per-tensor FMA is how the compiled fbgemm AVX2/AVX512 kernels evaluate
    ``_mm256_add_ps(cvt(acc), _mm256_mul_ps(bias, rcp))``: the compiler contracts the multiply
    and the add into one FMA (measured: torch 2.13 matches only the fused form, also in the
    depthwise kernels). ``bias_mode`` overrides the choice (``"div"``: per-channel formula,
    ``"fma"``: per-tensor formula).

    Hardware constants: ``M_sig``/``M_exp`` (24-bit significand and exponent of M_c) and
    ``bias_sig``/``bias_exp``: the float32 b_c (24 bits) for per-channel weights, the exact 48-bit
    product ``bias_c * r`` for the per-tensor FMA. The datapath is int32->float, one aligned add
    with a single rounding, a 24x24 multiply with its rounding, and a round-to-nearest-even to
    integer.
    """

    scheme = "torch-fbgemm"

    def __init__(self, s_in, s_w, s_out, zp_out=0, bias=None, qmin=0, qmax=255, relu=False,
                 per_channel=None, bias_mode=None):
        op = self.scheme
        s_in = float(check_scale(op, "s_in", s_in, allow_array=False))
        s_out = float(check_scale(op, "s_out", s_out, allow_array=False))
        s_w, per_channel = _per_channel_scales(op, s_w, per_channel)
        bias = _float_bias(op, bias)
        n = _channels(op, s_w, bias)
        # Bias may be per channel even with per-tensor weights: constants are broadcast to n.
        super().__init__(n, n > 1, zp_out, qmin, qmax, relu)
        if bias_mode is None:
            bias_mode = "div" if per_channel else "fma"
        if bias_mode not in ("div", "fma"):
            raise RangeError(f"{op}: bias_mode must be 'div' or 'fma', not {bias_mode!r}")
        self.weights_per_channel = per_channel
        self.bias_mode = bias_mode
        a = f32(s_in) * np.broadcast_to(s_w.astype(f32), (n,))
        self.act_times_w = a.astype(f32)
        self.M = (self.act_times_w / f32(s_out)).astype(f32)
        self.bias = None if bias is None else np.broadcast_to(bias, (n,)).astype(f32)
        self.M_sig, self.M_exp = F.decompose(self.M)
        if self.bias is None:
            self.b = None
            self.bias_sig = self.bias_exp = None
        elif bias_mode == "div":
            self.b = (self.bias / self.act_times_w).astype(f32)
            self.bias_sig, self.bias_exp = F.decompose(self.b)
        else:
            self.rcp = (1.0 / self.act_times_w.astype(f64)).astype(f32)
            self.b = None
            self.bias_sig, self.bias_exp = F.exact_mul(F.decompose(self.bias),
                                                       F.decompose(self.rcp))

    def apply(self, acc, axis=1):
        acc = self._acc(acc, axis)
        t = acc.astype(f32)
        if self.bias is not None:
            if self.bias_mode == "div":
                t += self._b(self.b, acc, axis)  # float32 add, one rounding
            else:
                t = F.np_fma32(self._b(self.bias, acc, axis), self._b(self.rcp, acc, axis), t)
        t *= self._b(self.M, acc, axis)  # float32 multiply, one rounding
        return self._out(_rint_f32(t))

    def apply_hw(self, acc, axis=1):
        acc = self._acc(acc, axis)
        t = F.from_int(acc)
        if self.bias_sig is not None:
            t = F.add(t, (self._b(self.bias_sig, acc, axis), self._b(self.bias_exp, acc, axis)))
        y = F.mul(t, (self._b(self.M_sig, acc, axis), self._b(self.M_exp, acc, axis)))
        return self._out(x86_cvt(F.rne_int(y)))

    def constants(self):
        c = {"M_sig": self.M_sig, "M_exp": self.M_exp, "M_bits": F.to_bits(self.M_sig, self.M_exp),
             "bias_fma": self.bias_mode == "fma", "zp_out": self.zp_out, "lo": self.lo,
             "hi": self.hi}
        if self.bias_sig is not None:
            c["bias_sig"] = self.bias_sig
            c["bias_exp"] = self.bias_exp
            if self.bias_mode == "div":
                c["bias_bits"] = F.to_bits(self.bias_sig, self.bias_exp)
        return c


class _IntBiasFloatRequant(Requant):
    """Shared datapath of qnnpack and ONNX Runtime: ``rne(f32(f32(acc + bias_q) * M_c))``.

    ``_x86_overflow``: values beyond int32 convert to INT32_MIN (``cvtps2dq``, PyTorch) and
    clamp to the low bound; otherwise (ONNX Runtime, which clamps in float first) they saturate.
    """

    _x86_overflow = True

    def _cvt(self, r):
        return x86_cvt(r) if self._x86_overflow else r

    def _setup(self, M, bias_q):
        self.M = np.asarray(M, dtype=f32)
        self.bias_q = bias_q
        self.M_sig, self.M_exp = F.decompose(self.M)

    def _x(self, acc, axis):
        if self.bias_q is None:
            return acc
        return gemmlowp.wrap_int32(acc + self._b(self.bias_q, acc, axis))

    def apply(self, acc, axis=1):
        acc = self._acc(acc, axis)
        y = self._x(acc, axis).astype(f32)
        y *= self._b(self.M, acc, axis)  # float32 multiply, one rounding
        if not self._x86_overflow:
            return self._out(np.rint(y).astype(np.int64))
        return self._out(_rint_f32(y))

    def apply_hw(self, acc, axis=1):
        acc = self._acc(acc, axis)
        y = F.mul(F.from_int(self._x(acc, axis)),
                  (self._b(self.M_sig, acc, axis), self._b(self.M_exp, acc, axis)))
        return self._out(self._cvt(F.rne_int(y)))

    def constants(self):
        c = {"M_sig": self.M_sig, "M_exp": self.M_exp, "M_bits": F.to_bits(self.M_sig, self.M_exp),
             "zp_out": self.zp_out, "lo": self.lo, "hi": self.hi}
        if self.bias_q is not None:
            c["bias_q"] = self.bias_q
        return c


class TorchQnnpackRequant(_IntBiasFloatRequant):
    """PyTorch quantized conv/linear on the qnnpack engine (bias quantized to int32).

    Host constants::

        M_c  = f32(f32(s_w[c] * s_in) * f32(1 / s_out))                 # reciprocal multiply
        bq_c = rne(f32(bias_c * f32(1 / f32(double(s_w[c]) * double(s_in)))))   # int32

    Output: ``clamp(rne(f32(f32(acc + bq_c) * M_c)) + zp_out, relu ? zp_out : 0, 255)``.
    Hardware constants: ``M_sig``/``M_exp``, ``bias_q``.
    """

    scheme = "torch-qnnpack"

    def __init__(self, s_in, s_w, s_out, zp_out=0, bias=None, qmin=0, qmax=255, relu=False,
                 per_channel=None):
        op = self.scheme
        s_in = float(check_scale(op, "s_in", s_in, allow_array=False))
        s_out = float(check_scale(op, "s_out", s_out, allow_array=False))
        s_w, per_channel = _per_channel_scales(op, s_w, per_channel)
        bias = _float_bias(op, bias)
        n = _channels(op, s_w, bias)
        super().__init__(n, n > 1, zp_out, qmin, qmax, relu)
        if self.lo >= self.hi:  # qnnpack's operator creation refuses an empty output range
            raise RangeError(f"{op}: output range {self.lo}..{self.hi} is empty "
                             "(qnnpack refuses it)")
        self.weights_per_channel = per_channel
        sw = np.broadcast_to(s_w, (n,))
        M = (sw.astype(f32) * f32(s_in)).astype(f32) * (f32(1) / f32(s_out))
        bq = None
        if bias is not None:
            bscale = (sw.astype(f64) * f64(s_in)).astype(f32)
            inv = (f32(1) / bscale).astype(f32)
            t = (np.broadcast_to(bias, (n,)) * inv).astype(f32)
            bq = np.clip(np.rint(t.astype(f64)), _I32_MIN, _I32_MAX).astype(np.int64)
        self._setup(M, bq)


class OnnxRuntimeRequant(_IntBiasFloatRequant):
    """ONNX Runtime QLinearConv / QLinearMatMul (MLAS requantization).

    ``M_c = f32(f32(s_x * s_w[c]) / s_y)``; ``q = clamp(rne(f32(f32(acc + bias) * M_c)) + zp_y)``.
    The bias is the int32 input ``B`` of QLinearConv (scale ``s_x*s_w``, zero point 0). MLAS
    clamps in float before converting, so results beyond int32 saturate (PyTorch's kernels
    produce the low bound there instead).
    Hardware constants: ``M_sig``/``M_exp``, ``bias_q``.
    """

    scheme = "onnxruntime"
    _x86_overflow = False

    def __init__(self, s_in, s_w, s_out, zp_out=0, bias=None, qmin=0, qmax=255, relu=False,
                 per_channel=None):
        op = self.scheme
        s_in = float(check_scale(op, "s_in", s_in, allow_array=False))
        s_out = float(check_scale(op, "s_out", s_out, allow_array=False))
        s_w, per_channel = _per_channel_scales(op, s_w, per_channel)
        bq = _int_bias(op, bias)
        n = _channels(op, s_w, bq)
        super().__init__(n, n > 1, zp_out, qmin, qmax, relu)
        self.weights_per_channel = per_channel
        sw = np.broadcast_to(s_w.astype(f32), (n,))
        M = ((f32(s_in) * sw).astype(f32) / f32(s_out)).astype(f32)
        self._setup(M, None if bq is None else np.broadcast_to(bq, (n,)).copy())


def tflite_multiplier(s_in, s_w, s_out, legacy_uint8=False):
    """Real multipliers of a TFLite conv/FC per channel (float64 array).

    int8 (per-channel path): ``double(s_in) * double(s_w[c]) / double(s_out)``; the legacy uint8
    path multiplies the float32 scales first: ``double(f32(s_in * s_w)) / double(s_out)``.
    """
    sw = np.asarray(s_w, dtype=f32).reshape(-1)
    if legacy_uint8:
        return (f32(s_in) * sw).astype(f32).astype(f64) / f64(f32(s_out))
    return f64(f32(s_in)) * sw.astype(f64) / f64(f32(s_out))


class TfliteRequant(Requant):
    """TFLite / gemmlowp integer requantization (``tflite`` and ``tflite-single-rounding``).

    ``(Q_c, shift_c) = QuantizeMultiplier(m_c)`` (see :func:`tflite_multiplier`), then
    ``q = clamp(MultiplyByQuantizedMultiplier(acc + bias, Q_c, shift_c) + zp_out)`` with the
    default double rounding (SRDHM then RoundingDivideByPOT, ties away from zero) or, for
    ``tflite-single-rounding``, ``(x*Q + 2^(30-shift)) >> (31-shift)``.
    Hardware constants: ``multiplier`` (Q31 int32), ``shift``, ``bias_q``.
    The numpy form is :mod:`gemmlowp`; the hardware form is an independent formulation with a
    floor shift plus explicit corrections (what the RTL does).
    """

    def __init__(self, s_in, s_w, s_out, zp_out=0, bias=None, qmin=-128, qmax=127, relu=False,
                 per_channel=None, single_rounding=False, legacy_uint8=False, multiplier=None,
                 shift=None):
        self.scheme = "tflite-single-rounding" if single_rounding else "tflite"
        op = self.scheme
        bq = _int_bias(op, bias)
        if multiplier is not None or shift is not None:
            if multiplier is None or shift is None:
                raise RangeError(f"{op}: give both multiplier and shift, or scales")
            q = check_int_range(op, "multiplier", multiplier, 0, 2**31 - 1).reshape(-1)
            sh = check_shift(op, "shift", shift, -31, 30).reshape(-1)
            n = max(q.size, sh.size, 1 if bq is None else bq.size)
            per_channel = n > 1
        else:
            s_in = float(check_scale(op, "s_in", s_in, allow_array=False))
            s_out = float(check_scale(op, "s_out", s_out, allow_array=False))
            s_w, per_channel = _per_channel_scales(op, s_w, per_channel)
            n = _channels(op, s_w, bq)
            m = tflite_multiplier(s_in, s_w, s_out, legacy_uint8)
            pairs = [gemmlowp.quantize_multiplier(v) for v in m]
            q = np.array([p[0] for p in pairs], dtype=np.int64)
            sh = np.array([p[1] for p in pairs], dtype=np.int64)
        super().__init__(n, n > 1, zp_out, qmin, qmax, relu)
        self.weights_per_channel = per_channel
        self.single_rounding = bool(single_rounding)
        self.multiplier = np.broadcast_to(q, (n,)).copy()
        self.shift = np.broadcast_to(sh, (n,)).copy()
        self.bias_q = None if bq is None else np.broadcast_to(bq, (n,)).copy()

    def _bias(self, acc, axis):
        return 0 if self.bias_q is None else self._b(self.bias_q, acc, axis)

    def apply(self, acc, axis=1):
        acc = self._acc(acc, axis)
        return gemmlowp.requantize(acc, self._bias(acc, axis), self._b(self.multiplier, acc, axis),
                                   self._b(self.shift, acc, axis), self.zp_out, self.lo, self.hi,
                                   single_rounding=self.single_rounding)

    def apply_hw(self, acc, axis=1):
        acc = self._acc(acc, axis)
        x = gemmlowp.wrap_int32(acc + self._bias(acc, axis))
        q = self._b(self.multiplier, acc, axis)
        sh = self._b(self.shift, acc, axis)
        if self.single_rounding:
            t = 31 - sh
            p = x * q
            # floor((p + 2^(t-1)) / 2^t) == (floor(p / 2^(t-1)) + 1) >> 1: keep one extra bit.
            y = ((p >> (t - 1)) + 1) >> 1
        else:
            left = np.maximum(sh, 0)
            right = np.maximum(-sh, 0)
            xs = gemmlowp.wrap_int32(x << left)
            p = xs * q
            t = p + np.where(p >= 0, 1 << 30, 1 - (1 << 30))
            hi = (t >> 31) + ((t < 0) & ((t & (2**31 - 1)) != 0))  # C division truncates
            # q >= 0 never equals INT32_MIN, so SRDHM cannot saturate here.
            h = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
            y = (hi + h - ((hi < 0) & (right > 0))) >> right  # ties away from zero
        return self._out(y)

    def constants(self):
        c = {"multiplier": self.multiplier, "shift": self.shift, "zp_out": self.zp_out,
             "lo": self.lo, "hi": self.hi}
        if self.bias_q is not None:
            c["bias_q"] = self.bias_q
        return c


def _fix_pos(op, name, s):
    s = check_scale(op, name, s)
    out = []
    for v in s.reshape(-1):
        if not is_pow2(v):
            raise ScaleError(f"{op}: {name} must be a power of two, not {float(v)!r}")
        out.append(-(math.frexp(float(v))[1] - 1))
    return np.array(out, dtype=np.int64).reshape(s.shape)


class _ShiftRequant(Requant):
    """Shared datapath of ``pow2`` and ``fixed16``: align bias, shift with rounding, activation."""

    def _setup_shift(self, s_in, s_w, s_out, bias, s_bias, leaky, rounding, max_shift):
        op = self.scheme
        fp_in = _fix_pos(op, "s_in", s_in).reshape(())
        fp_w = _fix_pos(op, "s_w", s_w).reshape(-1)
        fp_out = _fix_pos(op, "s_out", s_out).reshape(())
        bq = _int_bias(op, bias)
        n = max(fp_w.size, 1 if bq is None else bq.size)
        if bq is not None and fp_w.size not in (1, n):
            raise ShapeError(f"{op}: bias has {bq.size} channels, s_w has {fp_w.size}")
        fp_acc = fp_in + np.broadcast_to(fp_w, (n,))
        self.shift = check_shift(op, "shift (fp_in + fp_w - fp_out)", fp_acc - fp_out,
                                 -max_shift, max_shift)
        if bq is not None:
            fp_b = _fix_pos(op, "s_bias", s_bias).reshape(-1) if s_bias is not None else fp_acc
            self.bias_shift = check_shift(op, "bias shift (fp_in + fp_w - fp_b)",
                                          fp_acc - np.broadcast_to(fp_b, (n,)), 0, 31)
            self.bias_q = np.broadcast_to(bq, (n,)).copy()
        else:
            self.bias_shift = None
            self.bias_q = None
        if rounding not in ROUNDING_MODES:
            raise RangeError(f"{op}: rounding must be one of {', '.join(ROUNDING_MODES)}, "
                             f"not {rounding!r}")
        self.rounding = rounding
        if leaky is not None:
            lm, lk = leaky
            check_int_range(op, "leaky multiplier", lm, 0, 2**16)
            check_shift(op, "leaky shift", lk, 0, 16)
            self.leaky_mult, self.leaky_shift = int(lm), int(lk)
        else:
            self.leaky_mult = self.leaky_shift = None
        self.fp_in, self.fp_w, self.fp_out = int(fp_in), fp_w, int(fp_out)
        return n

    def _v(self, acc, axis):
        if self.bias_q is None:
            return acc
        return acc + (self._b(self.bias_q, acc, axis) << self._b(self.bias_shift, acc, axis))

    def _shifted(self, v, s, rounder):
        if self.leaky_mult is None:
            return rounder(v, s, self.rounding)
        pos = rounder(v, s, self.rounding)
        neg = rounder(v * self.leaky_mult, s + self.leaky_shift, self.rounding)
        return np.where(v < 0, neg, pos)

    def _finish(self, r):
        raise NotImplementedError

    def apply(self, acc, axis=1):
        acc = self._acc(acc, axis)
        v = self._v(acc, axis)
        return self._finish(self._shifted(v, self._b(self.shift, acc, axis), shift_round_float))

    def apply_hw(self, acc, axis=1):
        acc = self._acc(acc, axis)
        v = self._v(acc, axis)
        return self._finish(self._shifted(v, self._b(self.shift, acc, axis), shift_round))

    def constants(self):
        c = {"shift": self.shift, "rounding": self.rounding, "lo": self.lo, "hi": self.hi,
             "zp_out": self.zp_out}
        if self.bias_q is not None:
            c["bias_q"] = self.bias_q
            c["bias_shift"] = self.bias_shift
        if self.leaky_mult is not None:
            c["leaky_mult"] = self.leaky_mult
            c["leaky_shift"] = self.leaky_shift
        return c


class Pow2Requant(_ShiftRequant):
    """Power-of-two scales (Vitis AI DPU style): shift with round-half-up and saturation.

    Scales are ``2**-fp``. ``shift = fp_in + fp_w - fp_out``, bias codes (fix position
    ``fp_b``, from ``s_bias``, default ``s_in*s_w``) are aligned by ``fp_in + fp_w - fp_b >= 0``::

        v = acc + (bias_q << bias_shift)
        q = sat((v + 2^(shift-1)) >> shift)                       # ties toward +inf
        LeakyReLU (v < 0): sat((v*m + 2^(shift+k-1)) >> (shift+k))  # slope m/2^k, e.g. 26/256

    The numpy form evaluates ``floor(v * 2^-shift + 0.5)`` in float64 (exact here). ``zp_out``
    is 0 for the DPU (symmetric); ``rounding`` may select another mode of :mod:`rounding`.
    Hardware constants: ``shift``, ``bias_q``, ``bias_shift``, ``leaky_mult``, ``leaky_shift``.
    """

    scheme = "pow2"

    def __init__(self, s_in, s_w, s_out, zp_out=0, bias=None, qmin=-128, qmax=127, relu=False,
                 per_channel=None, s_bias=None, leaky=None, rounding="half_up"):
        n = self._setup_shift(s_in, s_w, s_out, bias, s_bias, leaky, rounding, 31)
        super().__init__(n, n > 1, zp_out, qmin, qmax, relu)
        self.weights_per_channel = bool(self.fp_w.size > 1)

    def _finish(self, r):
        return self._out(r)


class Fixed16Requant(_ShiftRequant):
    """16-bit fixed point Qm.n: shift to the output format with a chosen rounding and overflow.

    Scales are ``2**-n`` (n = fraction bits; Q7.8 is ``2**-8``). The accumulator has
    ``n_in + n_w`` fraction bits; ``shift = n_in + n_w - n_out``; bias codes with ``n_b``
    fraction bits (``s_bias``) are aligned by ``n_in + n_w - n_b``. Rounding: any mode of
    :mod:`rounding` (``floor`` = plain truncation of the low bits, ``half_up``...), overflow
    ``"saturate"`` or ``"wrap"`` to ``bits`` bits. The result matches fxpmath's
    ``Fxp(value, True, bits, n_out, rounding=..., overflow=...)``.
    Hardware constants: ``shift``, ``bias_q``, ``bias_shift``, ``leaky_mult``, ``leaky_shift``.
    """

    scheme = "fixed16"

    def __init__(self, s_in, s_w, s_out, zp_out=0, bias=None, qmin=None, qmax=None, relu=False,
                 per_channel=None, s_bias=None, leaky=None, rounding="floor",
                 overflow="saturate", bits=16):
        op = self.scheme
        check_shift(op, "bits", bits, 2, 32)
        self.bits = int(bits)
        qmin = -(2 ** (self.bits - 1)) if qmin is None else qmin
        qmax = 2 ** (self.bits - 1) - 1 if qmax is None else qmax
        if overflow not in ("saturate", "wrap"):
            raise RangeError(f"{op}: overflow must be 'saturate' or 'wrap', not {overflow!r}")
        self.overflow = overflow
        n = self._setup_shift(s_in, s_w, s_out, bias, s_bias, leaky, rounding, 62)
        super().__init__(n, n > 1, zp_out, qmin, qmax, relu)
        self.weights_per_channel = bool(self.fp_w.size > 1)

    def _finish(self, r):
        r = np.asarray(r, dtype=np.int64) + self.zp_out
        if self.overflow == "wrap":
            m = 1 << self.bits
            r = ((r + (m >> 1)) & (m - 1)) - (m >> 1)
            if self.relu:
                r = np.maximum(r, max(self.qmin, self.zp_out))
            return r
        return np.clip(r, self.lo, self.hi)

    def constants(self):
        c = super().constants()
        c["overflow"] = self.overflow
        c["bits"] = self.bits
        return c


_DEFAULT_RANGE = {
    "torch-fbgemm": (0, 255),
    "torch-qnnpack": (0, 255),
    "onnxruntime": (0, 255),
    "tflite": (-128, 127),
    "tflite-single-rounding": (-128, 127),
    "pow2": (-128, 127),
    "fixed16": (None, None),
}


_OPTIONS = {
    "torch-fbgemm": {"per_channel", "bias_mode"},
    "torch-qnnpack": {"per_channel"},
    "onnxruntime": {"per_channel"},
    "tflite": {"per_channel", "legacy_uint8", "multiplier", "shift"},
    "tflite-single-rounding": {"per_channel", "legacy_uint8", "multiplier", "shift"},
    "pow2": {"per_channel", "s_bias", "leaky", "rounding"},
    "fixed16": {"per_channel", "s_bias", "leaky", "rounding", "overflow", "bits"},
}


def make_requant(scheme: str, s_in, s_w, s_out, zp_out: int = 0, bias=None, qmin=None, qmax=None,
                 relu: bool = False, **options) -> Requant:
    """Build the requantization of one layer.

    Parameters
    ----------
    scheme: one of :data:`SCHEMES`.
    s_in, s_out: input and output scales (float; powers of two for ``pow2``/``fixed16``).
    s_w: weight scale (scalar: per-tensor) or 1-D array (per output channel).
    zp_out: output zero point.
    bias: float bias for the torch schemes (as stored in the PyTorch model), int32 codes for
        ``onnxruntime``/``tflite*`` (scale ``s_in*s_w``) and ``pow2``/``fixed16`` (scale
        ``s_bias`` option, default ``s_in*s_w``), or None.
    qmin, qmax: output range (defaults: 0..255 torch/onnxruntime, -128..127 tflite/pow2,
        signed ``bits`` for fixed16). A ReLU6 is expressed as ``qmax = zp + round(6/s_out)``.
    relu: fused ReLU: outputs clamp at ``max(qmin, zp_out)``.
    options: scheme options: ``per_channel`` (all), ``bias_mode`` (torch-fbgemm),
        ``legacy_uint8``/``multiplier``/``shift`` (tflite), ``s_bias``/``leaky=(m, k)``/
        ``rounding`` (pow2, fixed16), ``overflow``/``bits`` (fixed16).
    """
    if scheme not in SCHEMES:
        raise RangeError(f"make_requant: scheme must be one of {', '.join(SCHEMES)}, "
                         f"not {scheme!r}")
    dlo, dhi = _DEFAULT_RANGE[scheme]
    qmin = dlo if qmin is None else int(qmin)
    qmax = dhi if qmax is None else int(qmax)
    unknown = set(options) - _OPTIONS[scheme]
    if unknown:
        raise RangeError(f"make_requant({scheme!r}): unknown option(s) {', '.join(sorted(unknown))}"
                         f"; valid: {', '.join(sorted(_OPTIONS[scheme]))}")
    kw = dict(zp_out=zp_out, bias=bias, qmin=qmin, qmax=qmax, relu=relu, **options)
    if scheme == "torch-fbgemm":
        return TorchFbgemmRequant(s_in, s_w, s_out, **kw)
    if scheme == "torch-qnnpack":
        return TorchQnnpackRequant(s_in, s_w, s_out, **kw)
    if scheme == "onnxruntime":
        return OnnxRuntimeRequant(s_in, s_w, s_out, **kw)
    if scheme == "tflite":
        return TfliteRequant(s_in, s_w, s_out, **kw)
    if scheme == "tflite-single-rounding":
        return TfliteRequant(s_in, s_w, s_out, single_rounding=True, **kw)
    if scheme == "pow2":
        return Pow2Requant(s_in, s_w, s_out, **kw)
    return Fixed16Requant(s_in, s_w, s_out, **kw)
